"""models.yaml schema: the shipped file, validation messages naming the entry, lookups."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from comfy_worker.models.manifest import FetchWhen, ManifestError, ModelEntry, load_manifest, parse_manifest

REPO = Path(__file__).resolve().parents[1]
SHA = "a" * 64


def _entry(**over: object) -> dict[str, object]:
    return {"url": "https://huggingface.co/o/r/resolve/main/m.safetensors", "folder": "checkpoints",
            "filename": "m.safetensors", "sha256": SHA, **over}


def test_shipped_manifest_is_valid_and_its_examples_parse() -> None:
    assert load_manifest(REPO / "models.yaml").models == []
    text = (REPO / "models.yaml").read_text()
    after = text.split("# Examples", 1)[1]
    examples = "\n".join(line[1:] for line in after.splitlines() if line.startswith("#  "))
    entries = yaml.safe_load(examples)
    assert len(entries) == 3
    for entry in entries:  # the examples only lack a real digest
        parse_manifest([{**entry, "sha256": SHA}])


def test_entries_and_selection() -> None:
    manifest = parse_manifest({"models": [
        _entry(), _entry(folder="unet", filename="sub/d.sft", fetch="on_demand", size=5, token_env="HF_TOKEN"),
        _entry(filename="s.ckpt", fetch="start", sha256=SHA.upper()),
    ]})
    assert [e.fetch for e in manifest.models] == [FetchWhen.BUILD, FetchWhen.ON_DEMAND, FetchWhen.START]
    assert manifest.models[1].folder == "diffusion_models"  # ComfyUI's legacy name is mapped
    assert manifest.models[2].sha256 == SHA
    assert [e.filename for e in manifest.select(FetchWhen.START, FetchWhen.ON_DEMAND)] == ["sub/d.sft", "s.ckpt"]
    assert manifest.lookup("unet", "sub/d.sft") is manifest.models[1]
    assert manifest.lookup("checkpoints", "absent.ckpt") is None
    assert manifest.models[1].path_under(Path("/m")) == Path("/m/diffusion_models/sub/d.sft")
    assert manifest.models[0].label == "checkpoints/m.safetensors"
    assert parse_manifest(None).models == [] and parse_manifest({"models": None}).models == []


@pytest.mark.parametrize(("entry", "fragment"), [
    (_entry(url="file:///etc/passwd"), "models[0].url (checkpoints/m.safetensors): must be an http"),
    (_entry(filename="../../etc/x"), "models[0].filename"),
    (_entry(filename="/abs.ckpt"), "must stay inside the model folder"),
    (_entry(filename=".hidden/x.ckpt"), "hidden"),
    (_entry(folder="Check Points"), "models[0].folder"),
    (_entry(sha256="abc"), "64 hexadecimal digits"),
    (_entry(sha256=1234), "put it in quotes"),
    (_entry(token_env="HF-TOKEN"), "environment variable name"),
    (_entry(fetch="sometimes"), "models[0].fetch"),
    (_entry(colour="red"), "models[0].colour"),
])
def test_bad_entries_are_named(entry: dict[str, object], fragment: str) -> None:
    with pytest.raises(ManifestError) as caught:
        parse_manifest({"models": [entry]}, "m.yaml")
    assert fragment in str(caught.value) and str(caught.value).startswith("m.yaml: ")


def test_duplicates_and_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"models\[1\] \(checkpoints/m.safetensors\) has the same"):
        parse_manifest([_entry(), _entry()])
    with pytest.raises(ManifestError, match="no such manifest"):
        load_manifest(tmp_path / "none.yaml")
    assert load_manifest(tmp_path / "none.yaml", missing_ok=True).models == []
    (tmp_path / "bad.yaml").write_text("models: [unclosed")
    with pytest.raises(ManifestError, match="not valid YAML"):
        load_manifest(tmp_path / "bad.yaml")
    (tmp_path / "scalar.yaml").write_text("42")
    with pytest.raises(ManifestError, match="top level"):
        load_manifest(tmp_path / "scalar.yaml")
    assert ModelEntry.model_json_schema()["properties"]["fetch"]
