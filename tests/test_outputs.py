import io

import pytest
from PIL import Image

from comfy_worker.comfy import FileRef
from comfy_worker.comfy.http import local_path
from comfy_worker.media.outputs import collect_outputs, guess_mime, image_size

from .captures import capture


def loader_from(files: dict[str, bytes], folder=None):
    """A locate function serving these files from a folder (written on first use)."""
    def locate(ref: FileRef):
        import tempfile
        from pathlib import Path
        base = Path(folder or tempfile.mkdtemp(prefix="outputs-test-"))
        path = base / ref.filename
        path.write_bytes(files[ref.filename])
        return path
    return locate


def test_every_file_key_and_text_is_collected():
    outputs = {
        "9": {"images": [{"filename": "a_00001_.png", "subfolder": "s", "type": "output"}]},
        "10": {"gifs": [{"filename": "clip.mp4", "subfolder": "", "type": "output", "format": "video/h264-mp4"}]},
        "11": {"audio": [{"filename": "song.flac", "subfolder": "", "type": "output"}]},
        "12": {"text": ["hello", "world"]},
        "13": {"images": [{"filename": "anim.webp", "subfolder": "", "type": "output"}], "animated": [True]},
        "14": {"3d": [{"filename": "mesh.glb", "subfolder": "", "type": "output"}]},
        "15": {"custom_files": [{"filename": "data.bin", "subfolder": "", "type": "output"}]},
    }
    got = collect_outputs(outputs, include_temp=False, locate=loader_from({}))
    kinds = [(o.node_id, o.kind, o.mime_type) for o in got.outputs]
    assert kinds == [
        ("9", "image", "image/png"),
        ("10", "animation", "video/mp4"),
        ("11", "audio", "audio/flac"),
        ("12", "text", "text/plain; charset=utf-8"),
        ("12", "text", "text/plain; charset=utf-8"),
        ("13", "image", "image/webp"),
        ("14", "3d", "model/gltf-binary"),
        ("15", "file", "application/octet-stream"),
    ]
    assert got.warnings == []


def test_temp_outputs_only_on_request():
    history = capture("flow_preview_image_temp_history.json")
    entry = next(iter(history.values()))
    skipped = collect_outputs(entry["outputs"], include_temp=False, locate=loader_from({}))
    assert skipped.outputs == [] and skipped.skipped_temp == 2
    assert [r.type for r in skipped.temp_files] == ["temp", "temp"]  # still removed after the job
    kept = collect_outputs(entry["outputs"], include_temp=True, locate=loader_from({}))
    assert [o.ref.type for o in kept.outputs] == ["temp", "temp"]


def test_unknown_shapes_become_warnings_not_silence():
    got = collect_outputs({"5": {"weird": "x", "list": [{"no": "file"}]}}, include_temp=False,
                          locate=loader_from({}))
    assert got.outputs == []
    assert len(got.warnings) == 2


def test_content_is_loaded_lazily_and_hashed():
    got = collect_outputs({"1": {"images": [{"filename": "x.png", "subfolder": "", "type": "output"}]}},
                          include_temp=False, locate=loader_from({"x.png": b"abc"}))
    item = got.outputs[0]
    assert item.content() == b"abc"
    assert item.sha256() == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_local_path_refuses_escape(tmp_path):
    folders = {"output": tmp_path / "out", "temp": tmp_path / "tmp", "input": tmp_path / "in"}
    assert local_path(FileRef("a.png", "sub", "output"), folders) == (tmp_path / "out" / "sub" / "a.png").resolve()
    with pytest.raises(ValueError):
        local_path(FileRef("a.png", "../../etc", "output"), folders)


@pytest.mark.parametrize("fmt", ["PNG", "GIF", "WEBP", "JPEG"])
def test_image_size_from_headers(fmt):
    buf = io.BytesIO()
    Image.new("RGB", (37, 21), (1, 2, 3)).save(buf, fmt)
    assert image_size(buf.getvalue()) == (37, 21)


def test_mime_guess():
    assert guess_mime("a.webm") == "video/webm"
    assert guess_mime("a.unknownext") == "application/octet-stream"
