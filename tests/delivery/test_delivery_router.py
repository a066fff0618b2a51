"""Choosing the target, inline size limits, re-encoding, metadata stripping and output descriptions."""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib
from pathlib import Path

import pytest
from delivery_helpers import ctx, mp4, output, png, text_output, wav
from PIL import Image

from comfy_worker import __version__
from comfy_worker.delivery import DeliveryResult, deliver_outputs, describe
from comfy_worker.errors import ErrorCode, WorkerError
from comfy_worker.media.encode import is_animated, png_text, strip_png_text
from comfy_worker.schema import JobResult, OutputConfig, StorageConfig
from comfy_worker.settings import Settings

FIXTURE_PNG = Path(__file__).parents[1] / "fixtures" / "comfyui" / "cache_changed_color_view_2_cap_cache_00002_.png"


def _inline(**kwargs: object) -> OutputConfig:
    return OutputConfig(storage=StorageConfig(provider="inline"), **kwargs)


def inline_bytes(result: DeliveryResult, index: int = 0) -> bytes:
    """An inline output's bytes, wherever the result keeps its base64 (an image's: in `images` only)."""
    entry = result.entries[index]
    if entry.data_in is not None:
        assert entry.data is None
        return base64.b64decode(result.images[int(entry.data_in.removeprefix("images[").rstrip("]"))].data)
    return base64.b64decode(entry.data)


def test_inline_delivery_carries_each_image_once():
    data, audio = png(10, 7), wav(0.2)
    result = deliver_outputs(ctx(), [output("a.png", data), text_output("hello"), output("a.wav", audio, key="audio")],
                             _inline(), None, Settings())
    image, text, sound = result.entries
    # The image's base64 is in the compatible `images` list only; its `outputs` entry says where.
    assert image.data is None and image.data_in == "images[0]" and image.url is None
    assert [(i.filename, i.type, base64.b64decode(i.data)) for i in result.images] == [("a.png", "base64", data)]
    assert (image.width, image.height, image.mime_type, image.size) == (10, 7, "image/png", len(data))
    assert text.text == "hello" and text.kind == "text"
    # Other kinds are not in `images`: their base64 stays in `outputs`.
    assert base64.b64decode(sound.data) == audio and sound.data_in is None


def test_original_format_keeps_comfyui_metadata_by_default():
    data = FIXTURE_PNG.read_bytes()
    assert "prompt" in png_text(data)
    assert inline_bytes(deliver_outputs(ctx(), [output("x.png", data)], _inline(), None, Settings())) == data


def test_strip_metadata_in_original_format_keeps_pixels_and_drops_text_chunks():
    data = FIXTURE_PNG.read_bytes()
    result = deliver_outputs(ctx(), [output("x.png", data)], _inline(strip_metadata=True), None, Settings())
    entry, stripped = result.entries[0], inline_bytes(result)
    assert png_text(stripped) == {} and b"tEXt" not in stripped
    assert Image.open(io.BytesIO(stripped)).tobytes() == Image.open(io.BytesIO(data)).tobytes()
    assert entry.filename == "x.png" and entry.source_filename is None


@pytest.mark.parametrize("fmt,mime,suffix,pil", [("jpeg", "image/jpeg", ".jpg", "JPEG"),
                                                 ("webp", "image/webp", ".webp", "WEBP"),
                                                 ("png", "image/png", ".png", "PNG")])
def test_reencoding_changes_format_and_strips_metadata(fmt, mime, suffix, pil):
    data = png(40, 30, workflow=json.dumps({"3": {"class_type": "KSampler"}}), mode="RGBA")
    result = deliver_outputs(ctx(), [output("ComfyUI_0001_.png", data)], _inline(format=fmt, quality=80), None,
                             Settings())
    entry, encoded = result.entries[0], inline_bytes(result)
    image = Image.open(io.BytesIO(encoded))
    assert image.format == pil and image.size == (40, 30)
    assert entry.mime_type == mime and entry.filename == "ComfyUI_0001_" + suffix
    assert entry.source_filename == ("ComfyUI_0001_.png" if fmt != "png" else None)
    assert b"KSampler" not in encoded and png_text(encoded) == {}
    assert result.images[0].filename == entry.filename


def test_reencoding_to_png_can_keep_metadata_on_request():
    data = png(8, 8, workflow='{"a": 1}')
    result = deliver_outputs(ctx(), [output("x.png", data)], _inline(format="png", strip_metadata=False), None,
                             Settings())
    assert png_text(inline_bytes(result))["workflow"] == '{"a": 1}'


def test_jpeg_quality_changes_size():
    noisy = Image.effect_noise((128, 128), 80).convert("RGB")
    buf = io.BytesIO()
    noisy.save(buf, "PNG")
    low = deliver_outputs(ctx(), [output("n.png", buf.getvalue())], _inline(format="jpeg", quality=10), None,
                          Settings()).entries[0]
    high = deliver_outputs(ctx(), [output("n.png", buf.getvalue())], _inline(format="jpeg", quality=95), None,
                           Settings()).entries[0]
    assert low.size < high.size


def test_only_still_images_are_reencoded():
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 255, 0))]
    buf = io.BytesIO()
    frames[0].save(buf, "WEBP", save_all=True, append_images=frames[1:], duration=100)
    anim = buf.getvalue()
    assert is_animated(anim)
    audio = wav(0.5)
    result = deliver_outputs(ctx(), [output("anim.webp", anim), output("a.wav", audio, key="audio")],
                             _inline(format="jpeg"), None, Settings())
    assert inline_bytes(result, 0) == anim
    assert inline_bytes(result, 1) == audio
    assert any("animated" in w for w in result.warnings)


def test_decompression_bomb_is_not_decoded():
    # A valid PNG header claiming 100000 x 100000 pixels with a tiny IDAT.
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    chunk = lambda kind, body: struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))  # noqa: E731
    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b"")
    result = deliver_outputs(ctx(), [output("bomb.png", bomb)], _inline(format="jpeg"), None,
                             Settings(max_reencode_pixels=10_000_000))
    assert inline_bytes(result) == bomb
    assert any("not re-encoded" in w and "pixels" in w for w in result.warnings)


def test_kinds_sizes_and_durations_are_described():
    video = mp4(2.5, 640, 360)
    audio = wav(1.25)
    outs = [output("v.mp4", video, key="video"), output("a.wav", audio, key="audio"),
            output("g.gif", _gif(), key="gifs"), output("m.glb", b"glTF" + bytes(20), key="3d"),
            output("x.bin", b"\x00\x01", key="files"), text_output("t")]
    entries = [describe(o) for o in outs]
    assert [e.kind for e in entries] == ["video", "audio", "animation", "3d", "file", "text"]
    assert (entries[0].duration, entries[0].width, entries[0].height) == (2.5, 640, 360)
    assert entries[1].duration == 1.25 and entries[1].mime_type == "audio/wav"
    assert (entries[2].width, entries[2].height) == (5, 3)
    assert entries[3].mime_type == "model/gltf-binary"
    assert all(e.sha256 and e.size for e in entries)


def _gif() -> bytes:
    buf = io.BytesIO()
    Image.new("P", (5, 3)).save(buf, "GIF")
    return buf.getvalue()


def test_flac_duration_from_streaminfo():
    from comfy_worker.media.probe import probe
    rate, samples = 44100, 44100 * 3
    info = bytearray(34)
    info[10] = (rate >> 12) & 0xFF
    info[11] = (rate >> 4) & 0xFF
    info[12] = (rate & 0x0F) << 4
    info[13] = (samples >> 32) & 0x0F
    info[14:18] = struct.pack(">I", samples & 0xFFFFFFFF)
    flac = b"fLaC" + b"\x80\x00\x00\x22" + bytes(info)
    assert probe(flac).duration == 3.0


def test_inline_requested_but_too_large_is_refused_with_sizes():
    big = output("big.mp4", b"\0" * 200_000, key="video")
    with pytest.raises(WorkerError) as caught:
        deliver_outputs(ctx(), [big], _inline(), None, Settings(inline_max_bytes=100_000))
    err = caught.value
    assert err.code is ErrorCode.OUTPUT_TOO_LARGE
    assert err.details["limit_bytes"] == 100_000 and err.details["inline_bytes"] > 266_000
    assert err.details["outputs"][0]["size"] == 200_000


def test_auto_without_storage_and_too_large_is_refused():
    with pytest.raises(WorkerError) as caught:
        deliver_outputs(ctx(), [output("big.mp4", b"\0" * 200_000, key="video")], OutputConfig(), None,
                        Settings(inline_max_bytes=100_000))
    assert caught.value.code is ErrorCode.OUTPUT_TOO_LARGE and "no storage" in caught.value.message


def test_auto_stays_inline_while_small(s3):
    result = deliver_outputs(ctx(), [output("a.png", png())], OutputConfig(), None, s3.settings())
    assert result.provider == "inline" and result.entries[0].data_in and result.images[0].data and s3.keys() == []


def test_auto_switches_to_s3_when_over_the_limit(s3):
    data = b"\1" * 300_000
    result = deliver_outputs(ctx(), [output("v.mp4", data, key="video")], OutputConfig(), None,
                             s3.settings(inline_max_bytes=100_000))
    assert result.provider == "s3" and result.entries[0].url and result.entries[0].data is None
    assert any("INLINE_MAX_BYTES" in w for w in result.warnings)
    assert s3.keys() == ["job-123/v.mp4"]


def test_inline_limit_counts_the_whole_result():
    # Just under the limit as raw bytes, but over it once base64-encoded.
    data = png(300, 300)
    limit = len(data) + 1024
    with pytest.raises(WorkerError):
        deliver_outputs(ctx(), [output("a.png", data)], _inline(), None, Settings(inline_max_bytes=limit))
    # The image's base64 is counted once, as it travels once: a limit of 1.5 times its size lets it through.
    enough = max(limit * 3 // 2, 4096)
    result = deliver_outputs(ctx(), [output("a.png", data)], _inline(), None, Settings(inline_max_bytes=enough))
    job = JobResult(prompt_id="p", outputs=result.entries, images=result.images, timings={},
                    worker_version=__version__)
    assert len(job.model_dump_json()) < enough
    assert job.model_dump_json().count(result.images[0].data) == 1


def test_s3_requested_without_any_configuration_is_invalid_input():
    with pytest.raises(WorkerError) as caught:
        deliver_outputs(ctx(), [output("a.png", png())], OutputConfig(storage=StorageConfig(provider="s3")), None,
                        Settings())
    assert caught.value.code is ErrorCode.INVALID_INPUT


def test_strip_png_text_leaves_other_files_alone():
    assert strip_png_text(b"GIF89a...") == b"GIF89a..."
