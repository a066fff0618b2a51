import base64

import pytest

from comfy_worker.errors import ErrorCode, WorkerError
from comfy_worker.media.staging import MediaRequest, check_images, fetch_media, plan_staging
from comfy_worker.workflow import MediaSlot
from comfy_worker.schema import InputImage
from comfy_worker.settings import Settings

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")
B64 = base64.b64encode(PNG).decode()


def test_count_and_duplicate_names_checked_before_fetching():
    imgs = [InputImage(name=f"{i}.png", image=B64) for i in range(3)]
    with pytest.raises(WorkerError, match="at most 2"):
        check_images(imgs, max_count=2)
    with pytest.raises(WorkerError, match="duplicate") as info:
        check_images([InputImage(name="a.png", image=B64), InputImage(name="a.png", image=B64)], max_count=5)
    assert info.value.details["errors"][0]["field"] == "images[1].name"
    check_images(imgs, max_count=3)


def req(field, value, name="x.png"):
    return MediaRequest(field, value, name, f"worker-jobs/t/{name}")


def test_fetch_decodes_every_planned_input():
    settings = Settings.from_env({})
    files = fetch_media([req("images[0].image", B64, "a.png"),
                         req("inputs.5.image", f"data:image/png;base64,{B64}", "input-0-0.png")],
                        settings=settings, s3_defaults=None, max_total=10_000)
    assert files == [PNG, PNG]


def test_total_budget_across_inputs():
    settings = Settings.from_env({})
    with pytest.raises(WorkerError) as info:
        fetch_media([req("images[0].image", B64, "a.png"), req("images[1].image", B64, "b.png")],
                     settings=settings, s3_defaults=None, max_total=len(PNG) + 10)
    assert info.value.code is ErrorCode.INVALID_INPUT
    assert info.value.details["errors"][0]["field"] == "images[1].image"


def test_bad_base64_names_the_field():
    with pytest.raises(WorkerError) as info:
        fetch_media([req("images[2].image", "!!!", "x.png")], settings=Settings.from_env({}),
                    s3_defaults=None, max_total=1000)
    assert info.value.code is ErrorCode.INVALID_INPUT
    assert info.value.details["errors"][0]["field"] == "images[2].image"


def test_plan_names_every_input_and_points_the_graphs_at_them_without_changing_the_originals():
    wf = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "in.png"}},
        "2": {"class_type": "LoadImage", "inputs": {"image": "in.png [input]"}},
        "3": {"class_type": "LoadImage", "inputs": {"image": "other.png"}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "a photo of in.png"}},
        "5": {"class_type": "LoadAudio", "inputs": {"audio": "https://example.com/a.flac"}},
    }
    original = {k: {**v, "inputs": dict(v["inputs"])} for k, v in wf.items()}
    slot = MediaSlot("5", "audio", "https://example.com/a.flac", "5.audio", "audio")
    plan = plan_staging([InputImage(name="in.png", image=B64)], [wf], [[slot]], "worker-jobs/t1")
    [graph] = plan.graphs
    assert graph["1"]["inputs"]["image"] == graph["2"]["inputs"]["image"] == "worker-jobs/t1/in.png"
    assert graph["3"]["inputs"]["image"] == "other.png"
    assert graph["4"]["inputs"]["text"] == "a photo of in.png"
    assert graph["5"]["inputs"]["audio"] == "worker-jobs/t1/input-0-0.wav"
    assert [(r.field, r.name, r.reference, r.slot) for r in plan.requests] == [
        ("images[0].image", "in.png", "worker-jobs/t1/in.png", "image"),
        ("inputs.5.audio", "input-0-0.wav", "worker-jobs/t1/input-0-0.wav", "audio")]
    assert wf == original


def test_decompression_bomb_refused_by_header_pixels():
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("1", (9000, 9000)).save(buf, "PNG")  # a few kB on the wire, 81 M pixels decoded
    bomb = base64.b64encode(buf.getvalue()).decode()
    settings = Settings.from_env({"MAX_INPUT_PIXELS": str(4096 * 4096)})
    with pytest.raises(WorkerError) as info:
        fetch_media([req("images[0].image", bomb, "bomb.png")], settings=settings, s3_defaults=None,
                    max_total=10**9)
    assert info.value.details["errors"][0]["field"] == "images[0].image"
    assert "9000x9000" in info.value.message
    huge = io.BytesIO()
    Image.new("1", (20000, 20000)).save(huge, "PNG")  # beyond Pillow's own bomb threshold
    with pytest.raises(WorkerError, match="larger than the limit"):
        fetch_media([req("images[0].image", base64.b64encode(huge.getvalue()).decode(), "b.png")],
                    settings=settings, s3_defaults=None, max_total=10**9)
