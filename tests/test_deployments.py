"""Deployed workflows on the in-process FakeComfy: loading and checking a deployment folder, parameters of every
type applied to the graph ComfyUI receives, parameter errors naming the parameter, broken deployments refused
with their reason, the deployed-only rule, versions, the catalogue, drafts and pages."""

from __future__ import annotations

import asyncio
import base64
import copy
import io
import json
import shutil
import struct
import wave
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from comfy_worker.comfy.fake import FakeComfy
from comfy_worker.deployments import Deployments, load_deployments, read_folder, version_of
from comfy_worker.deployments.docs import page_path, render_page
from comfy_worker.deployments.draft import draft_manifest, render_draft
from comfy_worker.deployments.files import Source
from comfy_worker.job import run_job
from comfy_worker.settings import Settings
from comfy_worker_dev.emulator.media import mp4_placeholder

from .captures import capture, capture_path
from .workerkit import empty_image_workflow, png_b64

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures"
EVERY_TYPE = FIXTURES / "deployments"
TEMPLATE = FIXTURES / "workflow" / "basic_mask_operations_and_compositing.json"
CATALOGUE = capture("object_info.json")
PNG = png_b64((16, 16), (250, 10, 10))


def wav_b64(seconds: float = 0.25, rate: int = 8000) -> str:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(struct.pack(f"<{int(seconds * rate)}h", *(((i * 37) % 2000) - 1000
                                                                   for i in range(int(seconds * rate)))))
    return base64.b64encode(buf.getvalue()).decode()


WAV = wav_b64()
MP4 = base64.b64encode(mp4_placeholder(16, 16, 4, 4.0)).decode()


def settings_for(folder: Path, **env: str) -> Settings:
    return Settings.from_env({"DEPLOYED_WORKFLOWS_DIR": str(folder),
                              "DEPLOYED_WORKFLOWS_VOLUME_DIR": str(folder / "no-volume"), **env})


def deploy(tmp_path: Path, *sources: Path, **env: str) -> tuple[FakeComfy, Settings, Deployments]:
    folder = tmp_path / "workflows"
    folder.mkdir(exist_ok=True)
    for source in sources:
        shutil.copy(source, folder / source.name)
    comfy = FakeComfy(CATALOGUE, root=tmp_path / "comfyui")
    settings = settings_for(folder, **env)
    return comfy, settings, load_deployments(settings, comfy)


def run(comfy: FakeComfy, settings: Settings, deployments: Deployments | None, job_input: Any) -> dict[str, Any]:
    return asyncio.run(run_job({"id": "job-1", "input": job_input}, comfy, settings, lambda p: None, deployments=deployments))


def error_of(result: dict[str, Any]) -> dict[str, Any]:
    assert "error" in result, f"expected a failure, got {json.dumps(result)[:300]}"
    return json.loads(result["error"])


EVERY_PARAM = {"picture": PNG, "width": 40, "height": 24, "method": "bilinear", "zoom": 0.5,
               "caption": "a red square", "flag": True, "mask": f"data:image/png;base64,{PNG}", "sound": WAV,
               "clip": "https://example.com/clip.mp4"}


@pytest.fixture
def every_type(tmp_path: Path) -> tuple[FakeComfy, Settings, Deployments]:
    return deploy(tmp_path, EVERY_TYPE / "every_type.json", EVERY_TYPE / "every_type.yaml")


# --- parameters applied -------------------------------------------------------------------------------------------

def test_a_parameter_of_every_type_reaches_the_graph_comfyui_receives(every_type):
    comfy, settings, deployments = every_type
    assert list(deployments.ready) == ["every_type"], {k: e.message for k, e in deployments.unavailable.items()}
    params = {**EVERY_PARAM, "clip": MP4}
    result = run(comfy, settings, deployments, {"workflow_id": "every_type", "params": params})
    assert "error" not in result, result
    [(_, graph, _)] = comfy.submitted
    assert graph["2"]["inputs"]["width"] == 40 and graph["2"]["inputs"]["height"] == 24
    assert graph["2"]["inputs"]["upscale_method"] == "bilinear"
    assert graph["3"]["inputs"]["scale_by"] == 0.5 and isinstance(graph["3"]["inputs"]["scale_by"], float)
    assert graph["5"]["inputs"]["value"] == "a red square"
    assert graph["7"]["inputs"]["value"] is True
    # Media parameters are staged in the job's folder, as `images` are, and their inputs name the staged files.
    staged = {graph[n]["inputs"][i]: comfy.uploads[graph[n]["inputs"][i]]
              for n, i in (("1", "image"), ("9", "image"), ("12", "audio"), ("14", "file"))}
    assert all(name.startswith("worker-jobs/job-1-") for name in staged)
    assert staged[graph["1"]["inputs"]["image"]] == base64.b64decode(PNG)
    assert staged[graph["9"]["inputs"]["image"]] == base64.b64decode(PNG)
    assert graph["12"]["inputs"]["audio"].endswith(".wav") and graph["14"]["inputs"]["file"].endswith(".mp4")
    assert result["workflow_id"] == "every_type" and result["workflow_version"] == deployments.get("every_type").version


def test_defaults_apply_and_a_parameter_without_one_keeps_the_graphs_value(tmp_path):
    comfy, settings, deployments = deploy(tmp_path, ROOT / "workflows" / "invert.json",
                                          ROOT / "workflows" / "invert.yaml")
    result = run(comfy, settings, deployments, {"workflow_id": "invert", "params": {"height": 64}})
    assert "error" not in result, result
    [(_, graph, _)] = comfy.submitted
    assert graph["3"]["inputs"] | {"image": None} == {"image": None, "upscale_method": "nearest-exact", "width": 128,
                                                        "height": 64, "crop": "disabled"}
    # The image's default is a data URI in the manifest: staged like any other.
    [(reference, data)] = comfy.uploads.items()
    assert graph["1"]["inputs"]["image"] == reference and data[:8] == b"\x89PNG\r\n\x1a\n"


def test_batches_and_dry_runs_work_as_for_a_graph(every_type):
    comfy, settings, deployments = every_type
    base = {"picture": PNG, "mask": PNG, "sound": WAV, "clip": MP4}
    dry = run(comfy, settings, deployments, {"workflow_id": "every_type", "params": [{**base, "width": 10},
              {**base, "width": 20}], "execution_config": {"dry_run": True}})
    assert "error" not in dry, dry
    assert [i["workflow"]["2"]["inputs"]["width"] for i in dry["items"]] == [10, 20]
    assert dry["workflow_id"] == "every_type" and comfy.submitted == [] and comfy.uploads == {}
    done = run(comfy, settings, deployments, {"workflow_id": "every_type", "params": [{**base, "width": 10},
               {**base, "width": 20}]})
    assert "error" not in done, done
    assert [g["2"]["inputs"]["width"] for _, g, _ in comfy.submitted] == [10, 20]
    assert [i["status"] for i in done["items"]] == ["COMPLETED", "COMPLETED"]


def test_the_deployed_graph_is_never_changed_by_a_job(every_type):
    comfy, settings, deployments = every_type
    before = copy.deepcopy(deployments.get("every_type").source.workflow)
    run(comfy, settings, deployments, {"workflow_id": "every_type", "params": {**EVERY_PARAM, "clip": MP4}})
    assert deployments.get("every_type").source.workflow == before


# --- parameter errors ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("params, field, problem", [
    ({"width": "40"}, "params.width", "must be an integer, got string"),
    ({"width": 40.5}, "params.width", "must be an integer, got number"),
    ({"zoom": "big"}, "params.zoom", "must be a number, got string"),
    ({"flag": 1}, "params.flag", "must be true or false, got integer"),
    ({"caption": 7}, "params.caption", "must be a string, got integer"),
    ({"picture": "cat.png"}, "params.picture", "must be image data"),
    ({"width": 4000}, "params.width", "must be at most 256, got 4000"),
    ({"zoom": 0.1}, "params.zoom", "must be at least 0.25, got 0.1"),
    ({"method": "cubic"}, "params.method", "must be one of 'nearest-exact', 'bilinear', 'area'"),
    ({"caption": "x" * 201}, "params.caption", "must be at most 200 characters"),
    ({"widht": 40}, "params.widht", "unknown parameter; did you mean 'width'?"),
])
def test_a_bad_parameter_is_invalid_input_naming_it(every_type, params, field, problem):
    comfy, settings, deployments = every_type
    err = error_of(run(comfy, settings, deployments, {"workflow_id": "every_type",
                                                       "params": {**EVERY_PARAM, **params}}))
    assert err["code"] == "INVALID_INPUT" and field in err["message"]
    [entry] = err["details"]["errors"]
    assert entry["field"] == field and entry["problem"].startswith(problem), entry
    if field == "params.widht":
        assert entry["suggestion"] == "params.width"
    assert comfy.submitted == [] and comfy.uploads == {}


def test_missing_required_parameters_are_each_named(every_type):
    comfy, settings, deployments = every_type
    err = error_of(run(comfy, settings, deployments, {"workflow_id": "every_type", "params": {"width": 40}}))
    assert err["code"] == "INVALID_INPUT"
    assert {e["field"]: e["problem"] for e in err["details"]["errors"]} == {
        f"params.{name}": "required parameter is missing" for name in ("picture", "mask", "sound", "clip")}


def test_every_problem_of_a_batch_names_its_item(every_type):
    comfy, settings, deployments = every_type
    err = error_of(run(comfy, settings, deployments, {"workflow_id": "every_type", "params": [
        EVERY_PARAM, {**EVERY_PARAM, "width": 1}, "x"]}))
    assert [e["field"] for e in err["details"]["errors"]] == ["params[1].width", "params[2]"]


def test_an_unknown_workflow_id_suggests_the_closest(every_type):
    comfy, settings, deployments = every_type
    err = error_of(run(comfy, settings, deployments, {"workflow_id": "every-type"}))
    assert err["code"] == "INVALID_INPUT" and err["details"]["errors"][0]["field"] == "workflow_id"
    assert "did you mean 'every_type'?" in err["message"]


@pytest.mark.parametrize("job_input, field", [
    ({"workflow_id": "every_type", "params": EVERY_PARAM, "inputs": {"2.width": 3}}, "inputs"),
    ({"workflow_id": "every_type", "params": EVERY_PARAM, "images": [{"name": "a.png", "image": PNG}]}, "images"),
    ({"workflow": empty_image_workflow(), "params": {"width": 3}}, "params"),
    ({"workflow": empty_image_workflow(), "workflow_id": "every_type"}, "workflow_id"),
    ({"list_workflows": True, "workflow_id": "every_type"}, "list_workflows"),
    ({"params": {"width": 3}}, "workflow"),
])
def test_fields_that_do_not_go_together_are_refused(every_type, job_input, field):
    comfy, settings, deployments = every_type
    err = error_of(run(comfy, settings, deployments, job_input))
    assert err["code"] == "INVALID_INPUT" and field in [e["field"] for e in err["details"]["errors"]]


# --- the JSON Schema ------------------------------------------------------------------------------------------------

def test_the_json_schema_says_what_the_manifest_says(every_type):
    comfy, settings, deployments = every_type
    deployed = deployments.get("every_type")
    manifest = yaml.safe_load((EVERY_TYPE / "every_type.yaml").read_text())["params"]
    schema = deployed.params_schema
    jsonschema.Draft202012Validator.check_schema(schema)
    assert list(schema["properties"]) == list(manifest) and schema["additionalProperties"] is False
    assert set(schema["required"]) == {n for n, p in manifest.items() if p.get("required")}
    kinds = {"image": "string", "mask": "string", "audio": "string", "video": "string"}
    for name, param in manifest.items():
        prop = schema["properties"][name]
        assert prop["type"] == kinds.get(param["type"], param["type"])
        for ours, theirs in (("minimum", "minimum"), ("maximum", "maximum"), ("choices", "enum"),
                             ("max_length", "maxLength"), ("default", "default")):
            assert prop.get(theirs) == param.get(ours), (name, ours)
        if param["type"] in kinds:
            assert prop["x-media"] == param["type"]


@pytest.mark.parametrize("change", [{}, {"width": "40"}, {"width": 4000}, {"method": "cubic"}, {"extra": 1},
                                    {"flag": "yes"}, {"zoom": 2}, {"caption": ""}])
def test_the_worker_accepts_what_the_schema_accepts(every_type, change):
    comfy, settings, deployments = every_type
    params = {**EVERY_PARAM, "clip": MP4, **change}
    schema_ok = jsonschema.Draft202012Validator(deployments.get("every_type").params_schema).is_valid(params)
    result = run(comfy, settings, deployments, {"workflow_id": "every_type", "params": params,
                                                "execution_config": {"dry_run": True}})
    assert ("error" not in result) == schema_ok, result


# --- start-up checks: a broken deployment is refused with its reason, the rest serve ------------------------------

def _write(folder: Path, name: str, workflow: dict[str, Any] | None, manifest: str | None) -> None:
    if workflow is not None:
        (folder / f"{name}.json").write_text(json.dumps(workflow))
    if manifest is not None:
        (folder / f"{name}.yaml").write_text(manifest)


BROKEN = {
    "unknown_node": ({"1": {"class_type": "FancyUpscaler", "inputs": {}},
                      "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}}},
                     "params: {}\n", "INVALID_WORKFLOW", "FancyUpscaler"),
    "no_such_input": (empty_image_workflow(), "params:\n  w: {type: integer, sets: 1.wdth}\n", "INVALID_WORKFLOW",
                      "has no input 'wdth'"),
    "wrong_type": (empty_image_workflow(), "params:\n  w: {type: string, sets: 1.width}\n", "INVALID_WORKFLOW",
                   "a string parameter cannot set a INT input"),
    "beyond_node": (empty_image_workflow(), "params:\n  w: {type: integer, sets: 1.width, maximum: 99999}\n",
                    "INVALID_WORKFLOW", "above the input's maximum"),
    "bad_yaml": (empty_image_workflow(), "params: [\n", "INVALID_WORKFLOW", "cannot be read"),
    "bad_default": (empty_image_workflow(), "params:\n  w: {type: integer, sets: 1.width, maximum: 9, default: 10}\n",
                    "INVALID_WORKFLOW", "default 10 must be at most 9"),
    "no_manifest": (empty_image_workflow(), None, "INVALID_WORKFLOW", "has no manifest"),
    "needs_model": ({"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "absent.safetensors"}},
                     "2": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
                     "3": {"class_type": "VAEDecode", "inputs": {"samples": ["2", 0], "vae": ["1", 2]}},
                     "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "x"}}},
                    "params: {}\n", "MISSING_MODELS", "absent.safetensors"),
    "over_policy": (empty_image_workflow(width=600, height=600), "params: {}\n", "POLICY_VIOLATION", "pixels"),
}


def test_broken_deployments_are_reported_at_start_and_refused_with_their_reason(tmp_path, caplog):
    folder = tmp_path / "workflows"
    folder.mkdir()
    for name, (workflow, manifest, _, _) in BROKEN.items():
        _write(folder, name, workflow, manifest)
    _write(folder, "fine", empty_image_workflow(), "params:\n  width: {type: integer, sets: 1.width, default: 8}\n")
    comfy = FakeComfy(CATALOGUE, root=tmp_path / "comfyui")
    settings = settings_for(folder, MAX_PIXELS="100000")
    with caplog.at_level("ERROR", logger="comfy_worker.deployments"):
        deployments = load_deployments(settings, comfy)
    assert list(deployments.ready) == ["fine"] and set(deployments.unavailable) == set(BROKEN)
    for name, (_, _, code, reason) in BROKEN.items():
        assert any(name in r.getMessage() and reason in r.getMessage() for r in caplog.records), name
        err = error_of(run(comfy, settings, deployments, {"workflow_id": name}))
        assert err["code"] == code and reason in err["message"], (name, err["message"])
        assert err["message"].startswith(f"the deployed workflow {name!r} is unavailable on this worker")
        assert err["details"]["workflow_id"] == name and err["details"]["problems"], err
    assert comfy.submitted == []
    assert "error" not in run(comfy, settings, deployments, {"workflow_id": "fine"})
    listed = run(comfy, settings, deployments, {"list_workflows": True})
    assert [w["id"] for w in listed["workflows"]] == ["fine"]
    assert {u["id"]: u["code"] for u in listed["unavailable"]} == {n: b[2] for n, b in BROKEN.items()}


def test_a_model_fetched_on_demand_does_not_keep_a_deployment_from_serving(tmp_path):
    folder = tmp_path / "workflows"
    folder.mkdir()
    workflow, manifest, _, _ = BROKEN["needs_model"]
    _write(folder, "needs_model", workflow, manifest)
    (tmp_path / "models.yaml").write_text(yaml.safe_dump({"models": [{
        "url": "https://example.com/absent.safetensors", "folder": "checkpoints", "filename": "absent.safetensors",
        "sha256": "0" * 64, "fetch": "on_demand"}]}))
    deployments = load_deployments(settings_for(folder, MODELS_MANIFEST=str(tmp_path / "models.yaml")),
                                   FakeComfy(CATALOGUE, root=tmp_path / "comfyui"))
    assert list(deployments.ready) == ["needs_model"], {k: e.message for k, e in deployments.unavailable.items()}
    assert "fetched on first use" in deployments.ready["needs_model"].notes[0]


def test_the_volumes_workflows_replace_the_images(tmp_path):
    image, volume = tmp_path / "image", tmp_path / "volume"
    for folder, width in ((image, 8), (volume, 16)):
        folder.mkdir()
        _write(folder, "same", empty_image_workflow(width=width), "params: {}\n")
    _write(image, "only_image", empty_image_workflow(), "params: {}\n")
    settings = Settings.from_env({"DEPLOYED_WORKFLOWS_DIR": str(image), "NETWORK_VOLUME_PATH": str(tmp_path),
                                  "DEPLOYED_WORKFLOWS_VOLUME_DIR": ""})
    assert settings.deployed_workflows_volume_dir is None  # default: <volume>/workflows
    (tmp_path / "workflows").symlink_to(volume)
    deployments = load_deployments(settings, FakeComfy(CATALOGUE, root=tmp_path / "comfyui"))
    assert sorted(deployments.ready) == ["only_image", "same"]
    assert deployments.ready["same"].source.workflow["1"]["inputs"]["width"] == 16


# --- deployed-only -------------------------------------------------------------------------------------------------

def test_deployed_only_refuses_a_raw_graph_and_serves_the_rest(tmp_path):
    comfy, settings, deployments = deploy(tmp_path, EVERY_TYPE / "every_type.json", EVERY_TYPE / "every_type.yaml",
                                          DEPLOYED_WORKFLOWS_ONLY="true")
    err = error_of(run(comfy, settings, deployments, {"workflow": empty_image_workflow()}))
    assert err["code"] == "POLICY_VIOLATION" and "DEPLOYED_WORKFLOWS_ONLY" in err["message"]
    assert err["details"]["source"] == "deployment" and err["details"]["problems"][0]["details"] == \
        "DEPLOYED_WORKFLOWS_ONLY"
    assert comfy.submitted == []
    # No registry passed (a job run outside the handler): the operator's rule still holds.
    assert error_of(run(comfy, settings, None, {"workflow": empty_image_workflow()}))["code"] == "POLICY_VIOLATION"
    assert "error" not in run(comfy, settings, deployments, {"workflow_id": "every_type",
                                                             "params": {**EVERY_PARAM, "clip": MP4}})
    assert run(comfy, settings, deployments, {"list_workflows": True})["deployed_only"] is True
    # The operator's own jobs (the warm-up) may still send a graph.
    assert "error" not in run(comfy, settings, deployments.trusted(), {"workflow": empty_image_workflow()})


# --- versions -------------------------------------------------------------------------------------------------------

def test_the_version_changes_with_the_graph_or_the_manifest_and_not_otherwise(tmp_path):
    folder = tmp_path / "w"
    folder.mkdir()
    workflow = json.loads((EVERY_TYPE / "every_type.json").read_text())
    manifest = (EVERY_TYPE / "every_type.yaml").read_text()

    def version(graph: dict[str, Any], text: str, indent: int | None = None) -> str:
        (folder / "x.json").write_text(json.dumps(graph, indent=indent))
        (folder / "x.yaml").write_text(text)
        [source] = read_folder(folder)
        assert isinstance(source, Source)
        return source.version

    first = version(workflow, manifest)
    assert version(workflow, manifest) == first
    assert version(workflow, "# a comment\n" + manifest.replace("    ", "      "), indent=4) == first
    reordered = dict(reversed(list(workflow.items())))
    assert version(reordered, manifest) == first
    changed = copy.deepcopy(workflow)
    changed["2"]["inputs"]["crop"] = "center"
    assert version(changed, manifest) != first
    assert version(workflow, manifest.replace("maximum: 256", "maximum: 255", 1)) != first
    assert version(workflow, manifest.replace("Scaled and saved.", "Scaled, saved.")) != first
    assert first == version_of(workflow, yaml.safe_load(manifest))


# --- an official template, deployed: requests of a few hundred bytes -------------------------------------------------

def test_an_official_template_deployed_is_called_with_a_few_hundred_bytes(tmp_path, capsys):
    folder = tmp_path / "workflows"
    folder.mkdir()
    template = json.loads(TEMPLATE.read_text())
    drafted = draft_manifest(template, CATALOGUE)
    shutil.copy(TEMPLATE, folder / "masks.json")
    (folder / "masks.yaml").write_text(render_draft(drafted, TEMPLATE.name))
    comfy = FakeComfy(CATALOGUE, root=tmp_path / "comfyui")
    deployments = load_deployments(settings_for(folder), comfy)
    assert list(deployments.ready) == ["masks"], {k: e.message for k, e in deployments.unavailable.items()}
    assert "image" in drafted["params"] and drafted["params"]["image"]["type"] == "image"
    job_input = {"workflow_id": "masks", "params": {"image": png_b64((8, 8), (0, 90, 200))},
                 "output_config": {"include_temp": True}}
    request = json.dumps({"input": job_input}, separators=(",", ":"))
    graph_request = json.dumps({"input": {"workflow": template, "images": [{"name": "example.png",
                                "image": job_input["params"]["image"]}]}}, separators=(",", ":"))
    with capsys.disabled():
        print(f"\n[sizes] template {TEMPLATE.name}: file {TEMPLATE.stat().st_size} B, request with the graph "
              f"{len(graph_request)} B, request by name {len(request)} B")
    assert len(request) < 400 and len(graph_request) > 20_000
    result = run(comfy, settings_for(folder), deployments, job_input)
    assert "error" not in result, result
    assert result["workflow_id"] == "masks" and len(result["outputs"]) > 5
    [(_, graph, _)] = comfy.submitted
    [reference] = comfy.uploads
    assert [n for n, node in graph.items() if node["class_type"] == "LoadImage"
            and node["inputs"]["image"] == reference] == ["374"]


# --- pages per workflow ----------------------------------------------------------------------------------------------

def test_each_deployed_workflow_has_its_page_and_it_is_current():
    sources = [s for s in read_folder(ROOT / "workflows") if isinstance(s, Source)]
    assert sources, "the repository deploys an example"
    for source in sources:
        assert page_path(source).read_text() == render_page(source), \
            f"{page_path(source)} is stale: python -m comfy_worker.deployments docs workflows"
    page = page_path(sources[0]).read_text()
    assert json.dumps(sources[0].manifest.params["width"].default) in page and sources[0].version in page


# --- the operator's tools -----------------------------------------------------------------------------------------

def test_a_draft_offers_titled_nodes_widgets_and_loaders_and_deploys_as_it_is(tmp_path):
    from comfy_worker.deployments.__main__ import main

    out = tmp_path / "every.yaml"
    with open(out, "w") as sink:
        import contextlib

        with contextlib.redirect_stdout(sink):
            assert main(["draft", str(EVERY_TYPE / "every_type.json"), "--object-info",
                         str(capture_path("object_info.json"))]) == 0
    drafted = yaml.safe_load(out.read_text())["params"]
    assert {name: (p["type"], p["sets"]) for name, p in drafted.items()} == {
        "picture_image": ("image", "Picture.image"), "resize_upscale_method": ("string", "Resize.upscale_method"),
        "width": ("integer", "Resize.width"), "height": ("integer", "Resize.height"), "crop": ("string", "Resize.crop"),
        "zoom_upscale_method": ("string", "Zoom.upscale_method"), "scale_by": ("number", "Zoom.scale_by"),
        "caption_value": ("string", "Caption.value"), "flag_value": ("boolean", "Flag.value"),
        "mask_image": ("mask", "Mask.image"), "channel": ("string", "Mask.channel"),
        "audio": ("audio", "Sound.audio"), "file": ("video", "Clip.file")}
    assert drafted["width"] | {"description": None} == {"type": "integer", "sets": "Resize.width", "minimum": 0,
                                                         "maximum": 16384, "default": 64, "description": None}
    assert drafted["picture_image"]["required"] is True and "default" not in drafted["picture_image"]
    # Output nodes' file names are the job's business, not the caller's.
    assert not any("filename_prefix" in p["sets"] for p in drafted.values())
    shutil.copy(EVERY_TYPE / "every_type.json", tmp_path / "every.json")
    assert main(["check", str(tmp_path), "--object-info", str(capture_path("object_info.json"))]) == 0
    assert main(["docs", str(tmp_path)]) == 0 and (tmp_path / "every.md").is_file()
    assert main(["docs", str(tmp_path), "--check"]) == 0
    (tmp_path / "every.yaml").write_text(out.read_text().replace("default: 64", "default: 65", 1))
    assert main(["docs", str(tmp_path), "--check"]) == 1  # the version changed: the page is stale
    (tmp_path / "every.yaml").write_text(out.read_text().replace("Resize.width", "Resize.wdth"))
    assert main(["check", str(tmp_path), "--object-info", str(capture_path("object_info.json"))]) == 1


def test_a_draft_names_prompts_and_seeds():
    graph = {"4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd15.safetensors"}},
             "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["4", 1]},
                   "_meta": {"title": "Positive"}},
             "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]},
                   "_meta": {"title": "Negative"}},
             "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}},
             "3": {"class_type": "KSampler", "inputs": {"seed": 5, "steps": 20, "cfg": 7.0, "sampler_name": "euler",
                                                        "scheduler": "normal", "denoise": 1.0, "model": ["4", 0],
                                                        "positive": ["6", 0], "negative": ["7", 0],
                                                        "latent_image": ["5", 0]}}}
    drafted = draft_manifest(graph, CATALOGUE)["params"]
    assert {name: (p["type"], p["sets"], p.get("default")) for name, p in drafted.items()} == {
        "seed": ("integer", "3.seed", None),  # no default: the graph's, or a random one on request
        "positive_text": ("string", "Positive.text", "a cat"), "negative_text": ("string", "Negative.text", "blurry")}
