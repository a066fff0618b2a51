"""Custom node snapshots: loading, the restore plan, its execution, registry nodes."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from comfy_worker_build.snapshot import (
    SnapshotError,
    build_plan,
    fetch_cnr_node,
    find_snapshot,
    load_snapshot,
    main,
    parse_snapshot,
    run_plan,
    write_constraints,
)
from tests.httpserve import serve_http

REPO = Path(__file__).resolve().parents[1]
HASH = "0123456789abcdef0123456789abcdef01234567"
SNAPSHOT = {
    "comfyui": "aaaaaaa",
    "git_custom_nodes": {
        "https://github.com/example/ComfyUI-Nice-Nodes.git": {"hash": HASH, "disabled": False},
        "https://github.com/example/comfy-off": {"hash": HASH, "disabled": True},
        "https://github.com/example/unpinned": {"disabled": False},
    },
    "cnr_custom_nodes": {"comfyui-kjnodes": "1.0.5"},
    "file_custom_nodes": [{"filename": "single.py", "disabled": False}],
    "pips": {"numpy==1.26.4": "", "torch==2.1.0+cu118": "", "opencv-python-headless>=4.8": ""},
}


def test_shipped_snapshot_is_valid_and_empty() -> None:
    snapshot = load_snapshot(REPO / "snapshot")
    plan = build_plan(snapshot, Path("/comfyui"), "/py")
    assert plan.node_names == []
    assert [s.description for s in plan.steps] == ["pin the installed torch stack for every later pip install"]


def test_plan_for_every_kind_of_node(tmp_path: Path) -> None:
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "single.py").write_text("NODE_CLASS_MAPPINGS = {}\n")
    plan = build_plan(parse_snapshot(SNAPSHOT, "s.json"), Path("/comfyui"), "/venv/bin/python",
                      snapshot_dir=tmp_path, pinned_comfyui="bbbbbbbbbb", constraints=Path("/tmp/c.txt"))
    argvs = [step.argv for step in plan.steps]
    pip = ["/venv/bin/python", "-m", "pip", "install", "--disable-pip-version-check", "-c", "/tmp/c.txt"]
    nice = "/comfyui/custom_nodes/ComfyUI-Nice-Nodes"
    assert argvs[0][:3] == ["/venv/bin/python", "-m", "comfy_worker_build.snapshot"]
    assert ["git", "clone", "--quiet", "--recursive", "https://github.com/example/ComfyUI-Nice-Nodes.git",
            nice] in argvs
    assert ["git", "-C", nice, "checkout", "--quiet", HASH] in argvs
    requirements = next(s for s in plan.steps if s.argv == [*pip, "-r", f"{nice}/requirements.txt"])
    assert requirements.only_if_exists == f"{nice}/requirements.txt"
    install = next(s for s in plan.steps if s.cwd == nice and s.argv == ["/venv/bin/python", "install.py"])
    assert install.only_if_exists == f"{nice}/install.py"
    assert not any("comfy-off" in " ".join(a) for a in argvs)  # disabled nodes are not installed
    cnr = next(s for s in plan.steps if "fetch-cnr" in s.argv)
    assert cnr.argv[cnr.argv.index("--dest") + 1] == "/comfyui/custom_nodes/comfyui-kjnodes"
    assert ["cp", str(tmp_path / "files" / "single.py"), "/comfyui/custom_nodes/single.py"] in argvs
    # The torch stack stays the image's; everything else is installed with the same constraints.
    assert argvs[-1] == [*pip, "numpy==1.26.4", "opencv-python-headless>=4.8"]
    assert plan.node_names == ["ComfyUI-Nice-Nodes", "unpinned", "comfyui-kjnodes", "single"]
    warnings = "\n".join(plan.warnings)
    assert "torch==2.1.0+cu118" in warnings and "comfy-off" in warnings and "unpinned" in warnings
    assert "aaaaaaa" in warnings and "bbbbbbbbbb" in warnings


@pytest.mark.parametrize(("data", "fragment"), [
    ({"git_custom_nodes": {"ftp://x/y": {"hash": HASH}}}, "ftp://x/y: not a git URL"),
    ({"git_custom_nodes": {"https://github.com/a/n": {"hash": "main"}}}, "hash"),
    ({"git_custom_nodes": {"https://github.com/a/N": {}, "https://gitlab.com/b/n.git": {}}}, "both be cloned"),
    ({"cnr_custom_nodes": {"../evil": "1.0"}}, "'../evil' is not a registry node id"),
    ({"cnr_custom_nodes": {"ok": "1.0; rm -rf /"}}, "ok: version"),
    ({"pips": {"--index-url=http://evil": ""}}, "pip options are not allowed"),
    ({"file_custom_nodes": [{"filename": "../x.py"}]}, "file_custom_nodes[0]['filename']"),
    ({"git_custom_nodes": ["https://github.com/a/b"]}, "git_custom_nodes"),
    (["not", "a", "mapping"], "a snapshot is a mapping"),
])
def test_bad_snapshots_name_the_key(data: Any, fragment: str) -> None:
    with pytest.raises(SnapshotError) as caught:
        parse_snapshot(data, "snap.json")
    assert fragment in str(caught.value) and str(caught.value).startswith("snap.json: ")


def test_missing_single_file_node_is_reported(tmp_path: Path) -> None:
    snapshot = parse_snapshot({"file_custom_nodes": [{"filename": "gone.py"}]}, "s")
    with pytest.raises(SnapshotError, match=r"file_custom_nodes\[0\]\.filename: gone.py"):
        build_plan(snapshot, Path("/c"), "/py", snapshot_dir=tmp_path)


def test_yaml_snapshot_and_folder_lookup(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text("comfyui: abc1234\ngit_custom_nodes:\n  https://github.com/a/b:\n"
                                     f"    hash: {HASH}\n    disabled: false\ncnr_custom_nodes:\npips:\n")
    assert load_snapshot(tmp_path).enabled_node_names() == ["b"]
    (tmp_path / "t.json").write_text("{}")
    with pytest.raises(SnapshotError, match="exactly one snapshot file"):
        find_snapshot(tmp_path)
    (tmp_path / "t.json").write_text("{not json")
    with pytest.raises(SnapshotError, match="cannot be parsed"):
        load_snapshot(tmp_path / "t.json")


def test_run_plan_skips_absent_files_and_stops_at_a_failure(tmp_path: Path) -> None:
    node = tmp_path / "custom_nodes" / "b"
    snapshot = parse_snapshot({"git_custom_nodes": {"https://github.com/a/b": {"hash": HASH}}}, "s")
    plan = build_plan(snapshot, tmp_path, "/py")
    calls: list[list[str]] = []

    class Done:
        def __init__(self, code: int) -> None:
            self.returncode = code

    def runner(argv: list[str], **kwargs: Any) -> Done:
        calls.append(argv)
        if argv[:2] == ["git", "clone"]:
            node.mkdir(parents=True)
            (node / "requirements.txt").write_text("x\n")
        return Done(0)

    run_plan(plan, runner=runner)
    assert any(a[-2:] == ["-r", str(node / "requirements.txt")] for a in calls)
    assert not any(a[-1:] == ["install.py"] for a in calls)  # no install.py in this node

    with pytest.raises(SnapshotError, match="step 2 failed .*b: clone"):
        run_plan(plan, runner=lambda argv, **kw: Done(0 if "constraints" in argv else 1))


def test_plan_cli_and_constraints(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--snapshot", str(REPO / "snapshot" / "snapshot.json"), "--comfyui-dir", "/c"]) == 0
    assert json.loads(capsys.readouterr().out)["node_names"] == []
    pins = write_constraints(tmp_path / "c.txt", packages=("pydantic", "not-installed-package"))
    assert len(pins) == 1 and pins[0].startswith("pydantic==")
    assert (tmp_path / "c.txt").read_text() == pins[0] + "\n"
    (tmp_path / "bad.json").write_text(json.dumps({"pips": {"-e .": ""}}))
    assert main(["restore", "--snapshot", str(tmp_path / "bad.json"), "--comfyui-dir", "/c"]) == 1


@pytest.fixture
def registry() -> Iterator[tuple[dict[str, bytes], int]]:
    blobs: dict[str, bytes] = {}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            port = self.server.server_port
            if self.path.startswith("/nodes/"):
                node_id = self.path.split("/")[2]
                body = json.dumps({"downloadUrl": f"http://127.0.0.1:{port}/zip/{node_id}"}).encode()
                status = 200 if node_id in blobs else 404
            else:
                body = blobs.get(self.path.split("/")[-1], b"")
                status = 200
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    with serve_http(Handler) as httpd:
        yield blobs, httpd.server_port


def _zip(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return buffer.getvalue()


def test_registry_node_is_unpacked(registry: tuple[dict[str, bytes], int], tmp_path: Path) -> None:
    blobs, port = registry
    blobs["good"] = _zip({"__init__.py": "NODE_CLASS_MAPPINGS = {}\n", "requirements.txt": "x\n"})
    blobs["evil"] = _zip({"../../escape.py": "boom"})
    blobs["notzip"] = b"<html>"
    dest = tmp_path / "custom_nodes" / "good"
    fetch_cnr_node("good", "1.0.0", dest, f"http://127.0.0.1:{port}")
    assert (dest / "__init__.py").is_file() and (dest / "requirements.txt").is_file()
    with pytest.raises(SnapshotError, match="outside the node folder"):
        fetch_cnr_node("evil", "1.0.0", tmp_path / "custom_nodes" / "evil", f"http://127.0.0.1:{port}")
    assert not (tmp_path / "escape.py").exists()
    with pytest.raises(SnapshotError, match="not a zip"):
        fetch_cnr_node("notzip", "1.0.0", tmp_path / "custom_nodes" / "nz", f"http://127.0.0.1:{port}")
    with pytest.raises(SnapshotError, match=r"cnr_custom_nodes\['absent'\]: the registry answered HTTP 404"):
        fetch_cnr_node("absent", "1.0.0", tmp_path / "custom_nodes" / "absent", f"http://127.0.0.1:{port}")
