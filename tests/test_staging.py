import base64

import pytest

from comfy_worker.errors import ErrorCode, WorkerError
from comfy_worker.media.staging import StagedFile, decode_base64_media, decode_images, rewrite_references
from comfy_worker.schema import InputImage

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")


def test_plain_base64_and_data_uri_decode_to_the_same_bytes():
    b64 = base64.b64encode(PNG).decode()
    assert decode_base64_media(b64, field="f", max_bytes=1000) == PNG
    assert decode_base64_media(f"data:image/png;base64,{b64}", field="f", max_bytes=1000) == PNG
    assert decode_base64_media(f"data:image/png;name=x.png;base64,{b64}", field="f", max_bytes=1000) == PNG


def test_whitespace_and_missing_padding_are_tolerated():
    b64 = base64.b64encode(PNG).decode().rstrip("=")
    wrapped = "\n".join(b64[i:i + 20] for i in range(0, len(b64), 20))
    assert decode_base64_media(wrapped, field="f", max_bytes=1000) == PNG


@pytest.mark.parametrize("value", ["not base64 at all!", "data:image/png;base64,@@@@", "===="])
def test_invalid_base64_names_the_field(value):
    with pytest.raises(WorkerError) as info:
        decode_base64_media(value, field="images[2].image", max_bytes=1000)
    assert info.value.code is ErrorCode.INVALID_INPUT
    assert info.value.details["errors"][0]["field"] == "images[2].image"


def test_oversized_payload_refused_before_decoding():
    big = base64.b64encode(b"x" * 5000).decode()
    with pytest.raises(WorkerError) as info:
        decode_base64_media(big, field="images[0].image", max_bytes=1000)
    assert "1000" in info.value.message


def test_limits_on_count_total_and_duplicates():
    b64 = base64.b64encode(PNG).decode()
    imgs = [InputImage(name=f"{i}.png", image=b64) for i in range(3)]
    with pytest.raises(WorkerError, match="at most 2"):
        decode_images(imgs, max_count=2, max_bytes=1000, max_total=10_000)
    with pytest.raises(WorkerError, match="together exceed"):
        decode_images(imgs, max_count=10, max_bytes=1000, max_total=len(PNG) * 2)
    dup = [InputImage(name="a.png", image=b64), InputImage(name="a.png", image=b64)]
    with pytest.raises(WorkerError, match="duplicate"):
        decode_images(dup, max_count=10, max_bytes=1000, max_total=10_000)
    assert [n for n, _ in decode_images(imgs, max_count=3, max_bytes=1000, max_total=10_000)] == [
        "0.png", "1.png", "2.png"]


def test_references_rewritten_to_staged_names_only():
    wf = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "in.png"}},
        "2": {"class_type": "LoadImage", "inputs": {"image": "in.png [input]"}},
        "3": {"class_type": "LoadImage", "inputs": {"image": "other.png"}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "a photo of in.png"}},
    }
    n = rewrite_references(wf, [StagedFile("in.png", "worker-jobs/t1/in (1).png", 10)])
    assert n == 2
    assert wf["1"]["inputs"]["image"] == "worker-jobs/t1/in (1).png"
    assert wf["2"]["inputs"]["image"] == "worker-jobs/t1/in (1).png"
    assert wf["3"]["inputs"]["image"] == "other.png"
    assert wf["4"]["inputs"]["text"] == "a photo of in.png"
