"""Live events on the in-process FakeComfy: stream mode's chunks, throttled previews, outputs announced as
delivered, the default mode unchanged, and events POSTed to the caller's URL, signed, in order, bounded."""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import hmac
import io
import json
import struct
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from PIL import Image

from comfy_run.webhook import verify
from comfy_worker import webhooks
from comfy_worker.app import WorkerApp, _job_handler
from comfy_worker.comfy.fake import FakeComfy
from comfy_worker.settings import Settings
from comfy_worker.storage.urlsafety import UrlPolicy
from comfy_worker_dev import apispec

from .captures import capture
from .eventreceiver import SECRET, event_receiver

CATALOGUE = capture("object_info.json")


def sd_workflow(steps: int = 8) -> dict[str, Any]:
    """The captured tiny SD 1.5 text-to-image graph (KSampler, VAEDecode, SaveImage)."""
    graph = copy.deepcopy(capture("sd_txt2img_with_previews_request.json")["prompt"])
    graph["3"]["inputs"]["steps"] = steps
    return graph


@pytest.fixture
def comfy(tmp_path: Path) -> FakeComfy:
    return FakeComfy(CATALOGUE, root=tmp_path / "comfyui", models={"checkpoints": ["tiny-sd15.safetensors"]},
                     step_seconds=0.01)


def stream_job(comfy: FakeComfy, job_input: dict[str, Any], settings: Settings | None = None,
               job_id: str = "job-1") -> list[dict[str, Any]]:
    """Every chunk the stream-mode handler yields, as the runpod SDK would take them."""
    settings = settings or Settings(stream_mode=True)
    handler = _job_handler(WorkerApp(None, settings, comfy), settings, comfy)

    async def collect() -> list[dict[str, Any]]:
        return [chunk async for chunk in handler({"id": job_id, "input": job_input})]

    return asyncio.run(collect())


def plain_job(comfy: FakeComfy, job_input: dict[str, Any], settings: Settings | None = None,
              job_id: str = "job-1") -> dict[str, Any]:
    settings = settings or Settings()
    handler = _job_handler(WorkerApp(None, settings, comfy), settings, comfy)
    return asyncio.run(handler({"id": job_id, "input": job_input}))


def schema(name: str) -> jsonschema.protocols.Validator:
    loaded = json.loads(apispec.schema_path(name).read_text())
    return jsonschema.validators.validator_for(loaded)(loaded)


def comparable(result: dict[str, Any]) -> dict[str, Any]:
    """A result without what differs between two runs of one job (ids, times)."""
    out = json.loads(json.dumps(result))
    out.pop("prompt_id")
    out["timings"] = sorted(out["timings"])
    for entry in out["outputs"] + out["images"]:  # the fake's pixels follow the job's folder name
        entry.pop("sha256", None)
        entry.pop("data", None)
    return out


def test_stream_mode_yields_progress_previews_the_output_then_the_result(comfy: FakeComfy):
    chunks = stream_job(comfy, {"workflow": sd_workflow(), "output_config": {"previews": {"max_per_second": 10}}})
    kinds = [c.get("event", "result") for c in chunks]
    assert kinds[-1] == "result" and kinds.count("result") == 1
    assert kinds[0] == "progress" and "preview" in kinds
    # The output is announced after the sampler's previews, and the result comes last.
    assert kinds.index("output") > max(i for i, k in enumerate(kinds) if k == "preview")
    assert [c["seq"] for c in chunks[:-1]] == list(range(1, len(chunks)))
    preview = next(c for c in chunks if c.get("event") == "preview")
    assert preview["node"] == "3" and preview["class_type"] == "KSampler" and 1 <= preview["step"] <= 8
    assert preview["max_steps"] == 8
    header, _, data = preview["image"].partition(",")
    assert header == "data:image/jpeg;base64"
    with Image.open(io.BytesIO(base64.b64decode(data))) as image:
        assert image.format == "JPEG" and max(image.size) <= 256
    [output] = [c for c in chunks if c.get("event") == "output"]
    result = chunks[-1]
    # The output event carries the entry as delivered (its base64 inline); the result shares it with `images`.
    assert output["output"]["filename"] == result["outputs"][0]["filename"]
    assert output["output"]["data"] == result["images"][0]["data"]
    for chunk in chunks:
        schema("stream-chunk").validate(chunk)
    # ComfyUI was asked for previews for this prompt only.
    assert comfy.extra_data == [{"preview_method": "auto"}]


def test_the_default_mode_result_is_unchanged(comfy: FakeComfy):
    """The same job through the default handler and as stream mode's last chunk: one shape, one content."""
    workflow = sd_workflow(steps=3)
    plain = plain_job(comfy, {"workflow": workflow}, job_id="job-a")
    streamed = stream_job(comfy, {"workflow": workflow}, job_id="job-a")[-1]
    assert "event" not in streamed
    a, b = comparable(plain), comparable(streamed)
    # ComfyUI numbers files in a folder; each job has its own folder, so the names are equal too.
    assert a == b
    schema("job-result").validate(plain)
    # A plain job asks ComfyUI for no previews and sends no event anywhere.
    assert comfy.extra_data == [{}, {}]


def test_previews_are_throttled_and_the_latest_wins(tmp_path: Path):
    comfy = FakeComfy(CATALOGUE, root=tmp_path / "c", models={"checkpoints": ["tiny-sd15.safetensors"]},
                      step_seconds=0.02)
    started = time.monotonic()
    chunks = stream_job(comfy, {"workflow": sd_workflow(steps=40),
                                "output_config": {"previews": {"max_per_second": 4, "format": "webp",
                                                               "max_size": 32}}})
    elapsed = time.monotonic() - started
    previews = [c for c in chunks if c.get("event") == "preview"]
    # 40 frames came; at most 4 a second went out (one at once, then one per 0.25 s).
    assert 2 <= len(previews) <= 1 + elapsed * 4
    steps = [p["step"] for p in previews]
    assert steps == sorted(steps) and steps[-1] > 10  # a waiting frame is replaced by newer ones
    assert all(p["image"].startswith("data:image/webp;base64,") and p["width"] <= 32 for p in previews)


def test_previews_without_any_listener_cost_nothing(comfy: FakeComfy):
    result = plain_job(comfy, {"workflow": sd_workflow(steps=3), "output_config": {"previews": True}})
    assert "error" not in result
    assert any("previews travel as live events" in w for w in result["warnings"])
    assert comfy.extra_data == [{}]  # ComfyUI was not asked for previews


def test_a_failed_job_ends_the_stream_with_its_error(comfy: FakeComfy):
    comfy.rule = lambda index, node_id, node: "error" if node_id == "8" else None
    chunks = stream_job(comfy, {"workflow": sd_workflow(steps=2)})
    last = chunks[-1]
    assert set(last) == {"error"}  # the runpod SDK fails the job with this error string
    assert json.loads(last["error"])["code"] == "EXECUTION_ERROR"
    assert not any(c.get("event") == "output" for c in chunks)


def test_a_stream_mode_dry_run_ends_with_the_dry_run_result(comfy: FakeComfy):
    chunks = stream_job(comfy, {"workflow": sd_workflow(), "execution_config": {"dry_run": True}})
    assert chunks[-1]["dry_run"] is True and len(chunks) == 1


def test_a_stream_mode_catalogue_request_ends_with_the_catalogue(comfy: FakeComfy):
    chunks = stream_job(comfy, {"list_workflows": True})
    assert len(chunks) == 1 and chunks[0]["workflows"] == [] and chunks[0]["unavailable"] == []
    schema("stream-chunk").validate(chunks[0])


# --- events to the caller's URL ----------------------------------------------------------------------------

def hook_settings(**extra: Any) -> Settings:
    return Settings(events_secret=SECRET, allow_private_urls=True, allow_http_urls=True, **extra)


def test_events_reach_the_callers_url_signed_and_in_order(comfy: FakeComfy):
    with event_receiver() as receiver:
        result = plain_job(comfy, {"workflow": sd_workflow(), "events": {"url": receiver.url},
                                   "output_config": {"previews": {"max_per_second": 10}}}, hook_settings())
        # The job returned after its events were drained: the final one is there already.
        events = receiver.accepted
    assert "error" not in result
    assert receiver.verdicts() == ["accepted"] * len(events)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "progress" and "preview" in kinds and kinds[-2:] == ["output", "final"]
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
    final = events[-1]
    assert final["status"] == "COMPLETED" and final["output"] == result
    for event in events:
        schema("event").validate(event)
    headers = receiver.received[-1].headers
    assert headers["X-Comfy-Worker-Event"] == "final" and headers["X-Comfy-Worker-Event-Id"] == "job-1:" + str(
        final["seq"])


def test_the_signature_is_hmac_sha256_of_timestamp_and_body():
    body = b'{"event":"final"}'
    header = webhooks.sign(b"k", body, 1700000000)
    digest = hmac.new(b"k", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={digest}"
    assert verify("k", body, header, now=1700000100)
    assert not verify("k", body + b" ", header, now=1700000100)          # altered
    assert not verify("other", body, header, now=1700000100)             # another endpoint's key
    assert not verify("k", body, header, now=1700000000 + 301)            # replayed after the tolerance
    assert not verify("k", body, "t=1700000000", now=1700000000)          # no signature
    assert not verify("k", body, None)


def test_a_receiver_refuses_replayed_and_altered_events(comfy: FakeComfy):
    import urllib.error
    import urllib.request

    with event_receiver() as receiver:
        plain_job(comfy, {"workflow": sd_workflow(steps=2), "events": {"url": receiver.url,
                                                                      "types": ["output", "final"]}},
                  hook_settings())
        assert [e["event"] for e in receiver.accepted] == ["output", "final"]
        original = receiver.received[-1]

        def post(body: bytes, headers: dict[str, str]) -> int:
            request = urllib.request.Request(receiver.url, data=body, method="POST", headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=5) as answer:
                    return answer.status
            except urllib.error.HTTPError as exc:
                return exc.code

        kept = {k: v for k, v in original.headers.items() if k.startswith("X-Comfy")}
        assert post(original.body, kept) == 409                                  # the same event again
        altered = original.body.replace(b'"COMPLETED"', b'"FAILED"')
        assert post(altered, {**kept, "X-Comfy-Worker-Event-Id": "job-1:999"}) == 400  # its body changed
    assert receiver.verdicts()[-2:] == ["replay", "bad signature"]


def test_a_failing_receiver_is_retried_with_backoff(comfy: FakeComfy):
    with event_receiver(fail_first=2) as receiver:
        plain_job(comfy, {"workflow": sd_workflow(steps=2), "events": {"url": receiver.url, "types": ["final"]}},
                  hook_settings())
    assert receiver.verdicts() == ["unavailable", "unavailable", "accepted"]
    times = [r.t for r in receiver.received]
    assert times[2] - times[1] >= times[1] - times[0]  # the pause doubles


def test_a_slow_or_down_receiver_delays_the_job_by_at_most_the_drain_bound(comfy: FakeComfy):
    settings = hook_settings(events_drain_timeout=1.0, events_timeout=2.0)
    job = {"workflow": sd_workflow(steps=2)}
    with event_receiver(delay=30.0) as receiver:
        started = time.monotonic()
        result = plain_job(comfy, {**job, "events": {"url": receiver.url}}, settings)
        slow = time.monotonic() - started
    assert "error" not in result
    # A receiver that never answers in time: the job waited for it EVENTS_DRAIN_TIMEOUT, not 30 s per event.
    assert slow < 1.0 + 5.0
    started = time.monotonic()
    down = plain_job(comfy, {**job, "events": {"url": "http://127.0.0.1:9/hook"}}, settings)
    assert "error" not in down and time.monotonic() - started < 1.0 + 5.0


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8080/hook", "https://localhost/hook", "https://169.254.169.254/latest/meta-data",
    "https://10.0.0.5/hook", "https://[::1]/hook", "https://2130706433/hook", "http://example.com/hook",
    "ftp://example.com/hook",
])
def test_hostile_event_urls_are_refused_before_anything_runs(comfy: FakeComfy, url: str):
    result = plain_job(comfy, {"workflow": sd_workflow(), "events": {"url": url}},
                       Settings(events_secret=SECRET))
    error = json.loads(result["error"])
    assert error["code"] == "INVALID_INPUT" and error["details"]["errors"][0]["field"] == "events.url"
    assert comfy.submitted == []


def test_events_need_the_endpoints_secret(comfy: FakeComfy):
    result = plain_job(comfy, {"workflow": sd_workflow(), "events": {"url": "https://example.com/hook"}})
    error = json.loads(result["error"])
    assert error["code"] == "INVALID_INPUT" and "EVENTS_SECRET" in error["message"]


def test_a_redirect_to_a_private_address_is_not_followed(comfy: FakeComfy, monkeypatch: pytest.MonkeyPatch):
    """The first hop is a public name (a resolver maps it to loopback for the test); it redirects to a
    loopback address, which is refused: the receiver behind the redirect hears nothing."""
    with event_receiver() as inner, event_receiver(redirect_to=None) as outer:
        outer.redirect_to = inner.url
        port = outer.url.split(":")[2].split("/")[0]
        policy = UrlPolicy(allow_http=True, resolver=lambda host, p: ["127.0.0.1"],
                           treat_as_public=lambda host, ip: host == "hooks.example")
        monkeypatch.setattr(webhooks, "url_policy", lambda settings: policy)
        result = plain_job(comfy, {"workflow": sd_workflow(steps=2),
                                   "events": {"url": f"http://hooks.example:{port}/hook", "types": ["final"]}},
                           Settings(events_secret=SECRET, allow_http_urls=True))
    assert "error" not in result
    assert len(outer.received) == 0 or all(r.verdict != "accepted" for r in outer.received)
    assert inner.received == []


def test_a_batch_announces_each_output_with_its_item(comfy: FakeComfy):
    chunks = stream_job(comfy, {"workflow": sd_workflow(steps=2), "inputs": [{"3.seed": 1}, {"3.seed": 2}]})
    outputs = [c["output"] for c in chunks if c.get("event") == "output"]
    assert sorted(o["item"] for o in outputs) == [0, 1]
    result = chunks[-1]
    assert [o["item"] for o in result["outputs"]] == [0, 1]


def test_a_captured_preview_frame_becomes_a_small_data_uri():
    from comfy_worker.comfy.events import parse_binary_frame, preview_image
    from comfy_worker.media.previews import encode_preview

    from .captures import CAPTURES

    frame = (CAPTURES / "sd_txt2img_with_previews_binary" / "frame_0011.bin").read_bytes()
    event = parse_binary_frame(frame)
    assert event is not None and event.type == "preview" and event.data == {"bytes": len(frame) - 8}
    mime, image = preview_image(event)
    assert mime == "image/jpeg" and image == frame[8:]
    preview = encode_preview(mime, image, fmt="jpeg", max_size=128, quality=60)
    assert preview is not None and (preview.width, preview.height) == (128, 128) and preview.bytes < len(image)
    # Type 4 (metadata first) gives the image after its metadata; a frame that is no image gives nothing.
    meta = json.dumps({"node_id": "3", "prompt_id": "p", "image_type": "image/jpeg"}).encode()
    typed = parse_binary_frame(struct.pack(">II", 4, len(meta)) + meta + image)
    assert typed is not None and typed.data["node_id"] == "3" and preview_image(typed) == ("image/jpeg", image)
    assert encode_preview("image/jpeg", b"not an image", fmt="webp", max_size=64, quality=50) is None


@pytest.mark.parametrize(("template", "provider", "early"), [
    (None, "s3", True), (None, "gdrive", True), ("{job_id}/{uuid}.png", "s3", True),
    ("{job_id}/{index}-{filename}", "s3", False), ("{prompt_id}/{filename}", "gdrive", False),
    ("{job_id}/out.png", "s3", False),  # one key for every output: S3 would overwrite the first
    ("{job_id}/out.png", "gdrive", True),  # Drive keeps files of the same name apart
])
def test_which_key_templates_allow_delivery_as_nodes_finish(template: str | None, provider: str, early: bool):
    from comfy_worker.incremental import early_keys_allowed
    from comfy_worker.schema import parse_job_input

    request = parse_job_input({"workflow": {"1": {}}, "output_config": {"storage": {"key_template": template}}})
    assert early_keys_allowed(request, Settings(), provider) is early
