from comfy_worker.comfy.events import Event, parse_binary_frame, parse_text_frame
from comfy_worker.progress import ProgressTracker

from .captures import capture, ws_transcript


def replay(name: str):
    req = capture(f"{name}_request.json")
    sent = []
    tracker = ProgressTracker(req["prompt"], "pid", sent.append, min_interval=0)
    for frame in ws_transcript(f"{name}_ws.jsonl"):
        event = parse_text_frame(__import__("json").dumps(frame))
        tracker.on_event(event)
    return tracker, sent


def test_sampler_steps_and_nodes_reported_and_percent_never_drops():
    tracker, sent = replay("sd_txt2img_run1")
    assert sent, "no progress sent"
    percents = [p["percent"] for p in sent]
    assert percents == sorted(percents)
    steps = [p for p in sent if p["class_type"] == "KSampler" and p["step"] is not None]
    assert steps and steps[-1]["step"] == steps[-1]["max_steps"]
    assert {"node", "class_type", "step", "max_steps", "nodes_done", "nodes_total", "percent"} <= set(sent[-1])
    assert sent[-1]["nodes_done"] == sent[-1]["nodes_total"]


def test_cached_nodes_do_not_count():
    tracker, sent = replay("cache_identical_run2")
    assert tracker.cached
    assert all(p["nodes_total"] >= 1 for p in sent)


def test_binary_frames():
    import json
    import struct
    meta = json.dumps({"node_id": "3", "prompt_id": "p1", "image_type": "image/jpeg"}).encode()
    frame = struct.pack(">II", 4, len(meta)) + meta + b"\xff\xd8jpeg"
    ev = parse_binary_frame(frame)
    assert ev.type == "preview" and ev.prompt_id == "p1" and ev.data["bytes"] == 6
    text = struct.pack(">II", 3, 1) + b"7" + "héllo".encode()
    ev = parse_binary_frame(text)
    assert ev.type == "progress_text" and ev.data == {"node": "7", "text": "héllo"}
    assert parse_binary_frame(b"\x00") is None
    assert isinstance(parse_text_frame('{"type": "status", "data": {}}'), Event)
    assert parse_text_frame("not json") is None
