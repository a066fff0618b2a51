"""Models a request names by URL, through the job pipeline (FakeComfy) against a model host on loopback: fetched
once into the cache and used, resumed after a cut, refused with MODEL_FETCH_FAILED and nothing left behind when the
operator's rules or the file say no, evicted least recently used first but never while a job uses them, and a
token only ever sent to its own host."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from comfy_worker.comfy.fake import FakeComfy
from comfy_worker.job import run_job
from comfy_worker.models.cache import ModelCache
from comfy_worker.models.requested import JobModels
from comfy_worker.settings import Settings
from comfy_worker.storage import urlsafety
from comfy_worker.workflow.model_urls import UrlModelRef
from comfy_worker_dev import apispec

from .captures import capture
from .modelserver import Served, model_server, public_names_policy, safetensors_bytes, sha256

CATALOGUE = capture("object_info.json")
TOKEN = "hf_test_token_must_stay_home"


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(urlsafety, "url_policy", lambda settings: public_names_policy())
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with model_server() as server:
        server.files["style.safetensors"] = safetensors_bytes(1)
        yield server


def settings_for(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"model_cache_dir": tmp_path / "cache", "model_url_hosts": "models.public.test",
                              "model_url_tokens": "models.public.test=HF_TOKEN", "model_download_retries": 2}
    values.update(overrides)
    return Settings(**values)


def lora_workflow(lora_name: str = "style.safetensors") -> dict[str, Any]:
    """A LoRA loaded without any checkpoint (CreateHookLora) and shown as text: runs on the real ComfyUI too."""
    return {"1": {"class_type": "CreateHookLora", "inputs": {"lora_name": lora_name, "strength_model": 1.0,
                                                             "strength_clip": 1.0}},
            "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}


def run(tmp_path: Path, settings: Settings, job_input: dict[str, Any], *, job_id: str = "job-1",
        progress: list[dict[str, Any]] | None = None) -> tuple[dict[str, Any], FakeComfy]:
    comfy = FakeComfy(CATALOGUE, root=tmp_path / "comfyui", models={"loras": []})
    sink = progress.append if progress is not None else (lambda p: None)
    return asyncio.run(run_job({"id": job_id, "input": job_input}, comfy, settings, sink)), comfy


def error_of(result: dict[str, Any]) -> dict[str, Any]:
    assert "error" in result, f"expected a failure, got {json.dumps(result)[:400]}"
    return json.loads(result["error"])


def cache_files(settings: Settings) -> list[Path]:
    """Everything in the cache but its lock files."""
    root = settings.model_cache_dir
    assert root is not None
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix != ".lock") if root.exists() else []


def submitted_lora(comfy: FakeComfy) -> str:
    [(_, graph, _)] = comfy.submitted
    return graph["1"]["inputs"]["lora_name"]


# ------------------------------------------------------------------------------------------------ fetched once


def test_a_lora_named_by_url_is_fetched_verified_and_used(tmp_path: Path, served: Served) -> None:
    body = served.files["style.safetensors"]
    settings = settings_for(tmp_path)
    progress: list[dict[str, Any]] = []
    job = {"workflow": lora_workflow(), "models": [{"url": served.url("files/style.safetensors"),
                                                    "folder": "loras", "sha256": sha256(body)}]}
    result, comfy = run(tmp_path, settings, job, progress=progress)
    assert "error" not in result, result
    name = submitted_lora(comfy)
    key, _, filename = name.partition("/")
    assert filename == "style.safetensors" and len(key) == 16
    assert (settings.model_cache_dir / "loras" / key / filename).read_bytes() == body
    assert "fetch_models" in result["timings"]
    fetching = [p for p in progress if p.get("stage") == "fetching_models"]
    assert fetching and fetching[-1]["percent"] == 100.0 and fetching[-1]["bytes_done"] == len(body)
    schema = json.loads(apispec.schema_path("progress").read_text())
    for payload in fetching:
        jsonschema.validate(payload, schema)
    # The second job finds it in the cache: the host sees no second download.
    again, comfy2 = run(tmp_path, settings, job, job_id="job-2")
    assert "error" not in again and submitted_lora(comfy2) == name
    assert served.bodies("style.safetensors") == 1


def test_in_stream_mode_the_fetch_progress_is_a_progress_chunk(tmp_path: Path, served: Served) -> None:
    from comfy_worker.app import WorkerApp, _job_handler

    settings = settings_for(tmp_path, stream_mode=True)
    comfy = FakeComfy(CATALOGUE, root=tmp_path / "comfyui", models={"loras": []})
    handler = _job_handler(WorkerApp(None, settings, comfy), settings, comfy)
    job = {"workflow": lora_workflow(), "models": [{"url": served.url("files/style.safetensors"), "folder": "loras"}]}

    async def collect() -> list[dict[str, Any]]:
        return [chunk async for chunk in handler({"id": "job-s", "input": job})]

    chunks = asyncio.run(collect())
    assert "error" not in chunks[-1], chunks[-1]
    fetching = [c for c in chunks if c.get("event") == "progress" and c["progress"]["stage"] == "fetching_models"]
    assert fetching and fetching[-1]["progress"]["percent"] == 100.0
    schema = json.loads(apispec.schema_path("stream-chunk").read_text())
    for chunk in chunks:
        jsonschema.validate(chunk, schema)


def test_a_url_as_a_loaders_value_is_fetched_not_staged(tmp_path: Path, served: Served) -> None:
    settings = settings_for(tmp_path)
    url = served.url("files/style.safetensors")
    result, comfy = run(tmp_path, settings, {"workflow": lora_workflow(), "inputs": {"1.lora_name": url}})
    assert "error" not in result, result
    assert submitted_lora(comfy).endswith("/style.safetensors") and not comfy.uploads
    # Written into the workflow itself, the same; and the same file.
    result, comfy = run(tmp_path, settings, {"workflow": lora_workflow(url)}, job_id="job-2")
    assert "error" not in result and submitted_lora(comfy).endswith("/style.safetensors")
    assert served.bodies("style.safetensors") == 1


def test_a_models_entry_finds_its_folder_and_the_server_names_the_file(tmp_path: Path, served: Served) -> None:
    settings = settings_for(tmp_path)
    # No folder: the loader input that names the file says it. No name in the URL: the server's
    # Content-Disposition gives it (Civitai's download URLs), and the loader input is pointed at it.
    job = {"workflow": lora_workflow(), "models": [{"url": served.url("files/style.safetensors")}]}
    result, comfy = run(tmp_path, settings, job)
    assert "error" not in result, result
    inline = {"workflow": lora_workflow(served.url("download/style.safetensors"))}
    result, comfy = run(tmp_path, settings, inline, job_id="job-2")
    assert "error" not in result, result
    assert submitted_lora(comfy).endswith("/style.safetensors")
    err = error_of(run(tmp_path, settings, {"workflow": lora_workflow("other.safetensors"),
                                           "models": [{"url": served.url("files/style.safetensors")}]})[0])
    assert err["code"] == "INVALID_INPUT" and err["details"]["errors"][0]["field"] == "models[0].folder"


def test_a_cut_download_resumes_where_it_stopped(tmp_path: Path, served: Served) -> None:
    body = safetensors_bytes(2, size=160_000)  # 5 MB: whole 1 MiB pieces reach the disk before the cut
    served.files["big.safetensors"] = body
    served.cut_first["big.safetensors"] = 1
    settings = settings_for(tmp_path, model_download_retries=2)
    job = {"workflow": lora_workflow("big.safetensors"),
           "models": [{"url": served.url("files/big.safetensors"), "folder": "loras", "sha256": sha256(body)}]}
    result, _ = run(tmp_path, settings, job)
    assert "error" not in result, result
    ranges = [h.get("Range") for _, p, h in served.requests if p == "/files/big.safetensors"]
    assert ranges[0] is None and ranges[1].startswith("bytes=") and ranges[1] != "bytes=0-"
    [stored] = [p for p in cache_files(settings) if p.name == "big.safetensors"]
    assert stored.read_bytes() == body


def test_a_dry_run_says_what_would_be_fetched_and_fetches_nothing(tmp_path: Path, served: Served) -> None:
    body = served.files["style.safetensors"]
    settings = settings_for(tmp_path)
    job = {"workflow": lora_workflow(), "models": [{"url": served.url("files/style.safetensors"), "folder": "loras"}],
           "execution_config": {"dry_run": True}}
    result, _ = run(tmp_path, settings, job)
    assert result["dry_run"] is True and result["preflight"]["ok"], result
    [plan] = result["models"]
    assert plan["cached"] is False and plan["size"] == len(body) and plan["field"] == "models[0]"
    assert result["workflow"]["1"]["inputs"]["lora_name"] == plan["name"]
    assert served.bodies("style.safetensors") == 0 and not cache_files(settings)
    jsonschema.validate(result, json.loads(apispec.schema_path("dry-run-result").read_text()))
    run(tmp_path, settings, {**job, "execution_config": {}}, job_id="job-2")
    result, _ = run(tmp_path, settings, job, job_id="job-3")
    assert result["models"][0]["cached"] is True and result["models"][0]["name"] == plan["name"]


# ------------------------------------------------------------------------------------------------ refused


def refused_cases(served: Served) -> list[tuple[str, dict[str, Any], dict[str, Any], str]]:
    served.files["pickled.ckpt"] = b"\x80\x04\x95" + b"\0" * 64
    served.files["big.safetensors"] = safetensors_bytes(3, size=4096)
    served.files["page.safetensors"] = b"<html>Sign in to download</html>"
    served.linked_etag["style.safetensors"] = "0" * 64
    return [
        ("checksum_mismatch", {"url": served.url("files/style.safetensors"), "sha256": "1" * 64}, {}, "sha256"),
        ("refused_format", {"url": served.url("files/pickled.ckpt")}, {}, "MODEL_URL_ALLOW_PICKLE"),
        ("host_not_allowed", {"url": served.url("files/style.safetensors", "other.public.test")}, {},
         "MODEL_URL_HOSTS"),
        ("url_refused", {"url": served.url("redirect/127.0.0.1/style.safetensors")}, {}, "non-public"),
        ("too_large", {"url": served.url("files/big.safetensors")}, {"model_url_max_bytes": 4096}, "limit"),
        ("invalid_file", {"url": served.url("files/page.safetensors")}, {}, "safetensors"),
        ("checksum_mismatch", {"url": served.url("hf/style.safetensors"), "filename": "style.safetensors"}, {},
         "publishes"),
        ("http_status", {"url": served.url("files/absent.safetensors")}, {}, "HTTP 404"),
    ]


def test_refusals_name_their_reason_and_leave_nothing_behind(tmp_path: Path, served: Served) -> None:
    schema = json.loads(apispec.schema_path("error-payload").read_text())
    for index, (reason, source, overrides, words) in enumerate(refused_cases(served)):
        settings = settings_for(tmp_path / str(index), **overrides)
        job = {"workflow": lora_workflow(source.get("filename") or source["url"].rsplit("/", 1)[1]),
               "models": [{"folder": "loras", **source}]}
        result, comfy = run(tmp_path / str(index), settings, job)
        err = error_of(result)
        jsonschema.validate(err, schema)
        [failure] = err["details"]["failures"]
        assert (err["code"], failure["reason"]) == ("MODEL_FETCH_FAILED", reason), err
        assert words in failure["message"], failure
        assert err["retryable"] is False and failure["field"] == "models[0]"
        assert not comfy.submitted, "refused before any GPU time"
        assert cache_files(settings) == [], (reason, cache_files(settings))
    assert served.bodies("pickled.ckpt") == 0, "a refused format is never downloaded"


def test_pickled_files_when_the_operator_allows_them(tmp_path: Path, served: Served) -> None:
    served.files["old.ckpt"] = b"\x80\x04\x95" + b"\0" * 64
    settings = settings_for(tmp_path, model_url_allow_pickle=True)
    job = {"workflow": lora_workflow("old.ckpt"), "models": [{"url": served.url("files/old.ckpt"), "folder": "loras"}]}
    result, comfy = run(tmp_path, settings, job)
    assert "error" not in result and submitted_lora(comfy).endswith("/old.ckpt"), result


def test_a_passing_server_error_is_retryable_a_missing_file_is_not(tmp_path: Path, served: Served) -> None:
    served.status["busy.safetensors"] = 503
    settings = settings_for(tmp_path, model_download_retries=0)
    failures = {}
    for name in ("busy.safetensors", "absent.safetensors"):
        job = {"workflow": lora_workflow(name), "models": [{"url": served.url(f"files/{name}"), "folder": "loras"}]}
        err = error_of(run(tmp_path, settings, job)[0])
        failures[name] = (err["retryable"], err["details"]["failures"][0]["status"])
    assert failures == {"busy.safetensors": (True, 503), "absent.safetensors": (False, 404)}


def test_hugging_faces_published_hash_is_checked(tmp_path: Path, served: Served) -> None:
    served.linked_etag["style.safetensors"] = sha256(served.files["style.safetensors"])
    job = {"workflow": lora_workflow(), "models": [{"url": served.url("hf/style.safetensors"), "folder": "loras"}]}
    result, _ = run(tmp_path, settings_for(tmp_path), job)
    assert "error" not in result, result  # the wrong hash: test_refusals_name_their_reason_and_leave_nothing_behind


# ------------------------------------------------------------------------------------------------ tokens


def test_the_token_goes_to_its_host_only_and_nowhere_else(tmp_path: Path, served: Served,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    settings = settings_for(tmp_path)
    job = {"workflow": lora_workflow(),
           "models": [{"url": served.url("redirect/cdn.public.test/style.safetensors"), "folder": "loras",
                       "filename": "style.safetensors"}]}
    result, _ = run(tmp_path, settings, job)
    assert "error" not in result, result
    sent = {(host, path): headers.get("Authorization") for host, path, headers in served.requests}
    assert sent[("models.public.test", "/redirect/cdn.public.test/style.safetensors")] == f"Bearer {TOKEN}"
    assert sent[("cdn.public.test", "/files/style.safetensors")] is None  # another host: no token
    # A failure names the URL, never the token; neither does any log line.
    err = run(tmp_path, settings, {"workflow": lora_workflow("absent.safetensors"),
                                   "models": [{"url": served.url("files/absent.safetensors"), "folder": "loras"}]},
              job_id="job-2")[0]
    assert TOKEN not in json.dumps(result) + json.dumps(err) + caplog.text


# ------------------------------------------------------------------------------------------------ the cache


def ref(served: Served, name: str) -> UrlModelRef:
    return UrlModelRef("models[0]", served.url(f"files/{name}"), "loras", name)


def test_eviction_removes_the_least_recently_used_file_no_job_uses(tmp_path: Path, served: Served) -> None:
    for name, seed in (("a.safetensors", 11), ("b.safetensors", 12), ("c.safetensors", 13)):
        served.files[name] = safetensors_bytes(seed, size=256)
    size = len(served.files["a.safetensors"])
    settings = settings_for(tmp_path, model_cache_max_bytes=2 * size + size // 2)
    running = JobModels()  # a job still running with a.safetensors
    running.fetch([ref(served, "a.safetensors")], settings)
    done = JobModels()
    done.fetch([ref(served, "b.safetensors")], settings)
    done.release()
    # A models.yaml file in the same root is the operator's: never a candidate.
    operator = settings.model_cache_dir / "loras" / "operator.safetensors"
    operator.write_bytes(served.files["a.safetensors"])
    later = JobModels()
    later.fetch([ref(served, "c.safetensors")], settings)
    later.release()
    kept = sorted(p.name for p in cache_files(settings) if not p.name.endswith(".json"))
    assert kept == ["a.safetensors", "c.safetensors", "operator.safetensors"]  # b: least recently used, unused
    # Once its job ends, a.safetensors is the least recently used and goes first.
    running.release()
    ModelCache(settings.model_cache_dir, size).make_room()
    assert sorted(p.name for p in cache_files(settings) if not p.name.endswith(".json")) == \
        ["c.safetensors", "operator.safetensors"]


def test_a_file_over_the_cache_cap_is_refused(tmp_path: Path, served: Served) -> None:
    settings = settings_for(tmp_path, model_cache_max_bytes=100)
    job = {"workflow": lora_workflow(), "models": [{"url": served.url("files/style.safetensors"), "folder": "loras"}]}
    err = error_of(run(tmp_path, settings, job)[0])
    assert err["details"]["failures"][0]["reason"] == "too_large" and not cache_files(settings)


# ------------------------------------------------------------------------------------------------ the plan (pure)


def test_the_plan_of_a_batch_fetches_each_url_once_and_names_where_it_came_from() -> None:
    from comfy_worker.schema import ModelSource
    from comfy_worker.workflow.model_urls import plan_model_urls

    url = "https://huggingface.co/o/r/resolve/main/style.safetensors"
    # The graphs as the request's inputs made them; a URL in a text input stays text.
    graph = {**lora_workflow(url), "3": {"class_type": "CLIPTextEncode", "inputs": {"text": url, "clip": ["9", 1]}}}
    refs = plan_model_urls([], [graph, graph], [{"1.lora_name": url}, {"1.lora_name": url}], CATALOGUE, None)
    assert [(r.field, r.url, r.folder, r.uses) for r in refs] == [("inputs[0].1.lora_name", url, "loras",
                                                                    [(0, "1", "lora_name"), (1, "1", "lora_name")])]
    # Listed too (with its sha256): one file, used by every input that names it, in the list's entry.
    listed = [ModelSource(url=url, sha256="A" * 64)]
    [ref] = plan_model_urls(listed, [lora_workflow(url), lora_workflow()], [{}, {}], CATALOGUE, None)
    assert (ref.field, ref.folder, ref.sha256) == ("models[0]", "loras", "a" * 64)
    assert ref.uses == [(1, "1", "lora_name"), (0, "1", "lora_name")]


def test_the_cache_lives_where_comfyui_already_looks_unless_the_operator_moves_it(tmp_path: Path) -> None:
    from comfy_worker.models.cache import cache_model_paths_args, cache_root

    assert cache_root(Settings(comfyui_dir=tmp_path / "comfyui")) == tmp_path / "comfyui" / "models"
    (tmp_path / "volume").mkdir()
    on_volume = Settings(comfyui_dir=tmp_path / "comfyui", network_volume_path=tmp_path / "volume")
    assert cache_root(on_volume) == tmp_path / "volume" / "models" and cache_model_paths_args(on_volume) == []
    moved = Settings(model_cache_dir=tmp_path / "cache")
    flag, path = cache_model_paths_args(moved, tmp_path / "paths.yaml")
    assert flag == "--extra-model-paths-config" and f"base_path: {tmp_path / 'cache'}" in Path(path).read_text()


def test_a_workflow_that_would_fail_anyway_fails_before_the_download(tmp_path: Path, served: Served) -> None:
    settings = settings_for(tmp_path, node_denylist="CreateHookLora")
    job = {"workflow": lora_workflow(), "models": [{"url": served.url("files/style.safetensors"), "folder": "loras"}]}
    err = error_of(run(tmp_path, settings, job)[0])
    assert err["code"] == "POLICY_VIOLATION", err
    assert served.requests == [] and not cache_files(settings)
