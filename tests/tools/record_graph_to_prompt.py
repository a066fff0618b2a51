"""Record the web app's own UI→API conversion of workflow templates as test fixtures.

Loads each template into ComfyUI's web app in headless Chromium (Chrome DevTools Protocol), calls
``app.loadGraphData(workflow)`` and saves ``(await app.graphToPrompt()).output`` — the graph the web app
would queue — to ``tests/fixtures/graph_to_prompt/<template>.json``. tests/test_workflow_graph_to_prompt.py
compares our converter against these files.

This is a maintenance tool, not run in CI. It needs a ComfyUI (its web app is the frontend package in
ComfyUI's environment), Chromium, and the ``comfyui-workflow-templates-json`` package::

    python tests/tools/record_graph_to_prompt.py --comfyui-dir /opt/comfyui \\
        --comfyui-python /opt/comfyui-venv/bin/python            # the templates listed in TEMPLATES
    python tests/tools/record_graph_to_prompt.py --url http://127.0.0.1:8188 --eligible --out /tmp/all
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import logging
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests
import websocket

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
from comfy_worker_build.processes import stop_process

log = logging.getLogger("record_graph_to_prompt")

REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO / "tests" / "fixtures" / "graph_to_prompt"
VIRTUAL = {"PrimitiveNode", "Reroute", "Note", "MarkdownNote"}

# The recorded templates: each uses only node types ComfyUI 0.33.0 knows. Chosen to cover subgraphs
# (nested, promoted widgets, bypassed instances, inner ids that clash with outer ones), PrimitiveNode, Reroute,
# bypassed and muted nodes, seeds inside dynamic combos, ImageCompare's unsaved widget, and plain graphs.
TEMPLATES: list[str] = [
    'sdxl_simple_example',
    'sdxl_refiner_prompt_example',
    'flux_redux_model_example',
    'audio_ace_step_1_5_split',
    'video_wan_vace_14B_ref2v',
    'hidream_e1_1',
    'hidream_e1_full',
    'template_contact_sheet-step_3.app',
    'template_sirolim_image_script_video',
    'templates-character_sheet',
    'image_qwen_Image_2512_controlnet',
    'video_wanmove_480p',
    'hunyuan_video_text_to_video',
    'image_netayume_lumina_t2i',
    'video_wan_vace_flf2v',
    'video_wan_vace_inpainting',
    'templates-all_in_one-image_edit_models',
    'flux_depth_lora_example',
    'utility_void_video_inpainting',
    'basic_switch_node',
    'video_humo',
    'image_omnigen2_image_edit',
    'api_recraft_image_gen_with_color_control',
    'video_wan_animate2_distilled',
    'image_qwen_image_layered',
    'image_z_image_turbo_fun_union_controlnet',
    'flux1_dev_uso_reference_image_gen',
    'image_flux.1_fill_dev_OneReward',
    'image_flux2_klein_image_edit_4b_distilled',
    'image_newbieimage_exp0_1-t2i',
    'templates-photo_to_product_vid',
    'video_kandinsky5_i2v',
    'api_google_nano_banana2_image_edit_continuation',
    'video_wan2_2_14B_s2v',
    'image_ernie_image_turbo',
    'image_ming_image_01_design_t2i',
    'video_ltx2_3_t2v',
    'utility_interpolation_image_upscale',
]


def _templates_dir() -> Path:
    import comfyui_workflow_templates_json as pkg

    return Path(pkg.__file__).parent / "templates"


def _node_types(workflow: dict[str, Any]) -> set[str]:
    graphs = [workflow, *((workflow.get("definitions") or {}).get("subgraphs") or [])]
    subgraph_ids = {str(g.get("id")) for g in graphs[1:]}
    return {str(n.get("type")) for g in graphs for n in g.get("nodes") or []} - subgraph_ids - VIRTUAL


def eligible(object_info: dict[str, Any]) -> list[str]:
    """UI templates whose every node type the running ComfyUI knows."""
    names = []
    for path in sorted(_templates_dir().glob("*.json")):
        data = json.loads(path.read_text())
        if (isinstance(data, dict) and isinstance(data.get("nodes"), list) and "links" in data
                and _node_types(data) <= set(object_info)):
            names.append(path.stem)
    return names


# ------------------------------------------------------------------------------------------------
# ComfyUI and Chromium


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def comfyui(comfy_dir: Path, python: str) -> Iterator[str]:
    """A ComfyUI on a free loopback port with its input/output/temp folders in a temporary directory."""
    with tempfile.TemporaryDirectory() as tmp:
        dirs = [Path(tmp, n) for n in ("input", "output", "temp")]
        for d in dirs:
            d.mkdir()
        port = _free_port()
        with open(Path(tmp, "comfyui.log"), "wb") as out:
            proc = subprocess.Popen([python, str(comfy_dir / "main.py"), "--cpu", "--listen", "127.0.0.1",
                                     "--port", str(port), "--disable-auto-launch",
                                     "--input-directory", str(dirs[0]), "--output-directory", str(dirs[1]),
                                     "--temp-directory", str(dirs[2])], stdout=out, stderr=subprocess.STDOUT)
            url = f"http://127.0.0.1:{port}"
            try:
                deadline = time.monotonic() + 180
                while True:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("ComfyUI did not start:\n" + Path(tmp, "comfyui.log").read_text()[-3000:])
                    try:
                        if requests.get(url + "/system_stats", timeout=2).ok:
                            break
                    except requests.RequestException:
                        time.sleep(0.3)
                yield url
            finally:
                stop_process(proc, timeout=15)


class Page:
    """One Chromium tab driven over the DevTools Protocol."""

    def __init__(self, ws_url: str) -> None:
        self.ws = websocket.create_connection(ws_url, timeout=120, suppress_origin=True)
        self.ids = itertools.count(1)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        msg_id = next(self.ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return dict(msg.get("result") or {})

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True,
                           timeout=120000)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = (details.get("exception") or {}).get("description") or details.get("text")
            raise RuntimeError(f"page error: {text}")
        return result["result"].get("value")

    def close(self) -> None:
        self.ws.close()


@contextlib.contextmanager
def chromium(executable: str, url: str) -> Iterator[Page]:
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.Popen([executable, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                                 "--disable-background-networking", "--disable-component-update",
                                 "--disable-sync", f"--user-data-dir={profile}", "--remote-debugging-port=0",
                                 "--window-size=1600,1000", "about:blank"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            port_file = Path(profile, "DevToolsActivePort")
            deadline = time.monotonic() + 60
            while not (port_file.exists() and port_file.read_text().strip()):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("Chromium did not start")
                time.sleep(0.1)
            port = port_file.read_text().split()[0]
            targets = requests.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
            page = Page(next(t for t in targets if t.get("type") == "page")["webSocketDebuggerUrl"])
            page.call("Runtime.enable")
            page.call("Page.navigate", url=url)
            deadline = time.monotonic() + 120
            while not page.evaluate("!!(window.app && window.app.graph && window.app.vueAppReady !== false"
                                    " && document.querySelector('.graph-canvas-container, canvas'))"):
                if time.monotonic() > deadline:
                    raise RuntimeError("the web app did not load")
                time.sleep(0.5)
            time.sleep(2)  # extensions register after the app object exists
            try:
                yield page
            finally:
                page.close()
        finally:
            stop_process(proc, timeout=10)


_CONVERT = """(async (wf, name) => {
  await window.app.loadGraphData(wf, true, true, name);
  const prompt = await window.app.graphToPrompt();
  return JSON.stringify(prompt.output);
})(%s, %s)"""


def record(page: Page, name: str) -> dict[str, Any]:
    workflow = json.loads((_templates_dir() / f"{name}.json").read_text())
    output = page.evaluate(_CONVERT % (json.dumps(workflow), json.dumps(name)))
    return dict(json.loads(output))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", help="a running ComfyUI")
    where.add_argument("--comfyui-dir", type=Path, help="start this ComfyUI checkout")
    parser.add_argument("--comfyui-python", default=sys.executable)
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--eligible", action="store_true", help="every template whose node types ComfyUI knows")
    parser.add_argument("names", nargs="*", help="template names (default: TEMPLATES)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    with contextlib.ExitStack() as stack:
        url = args.url or stack.enter_context(comfyui(args.comfyui_dir, args.comfyui_python))
        stats = requests.get(url + "/system_stats", timeout=10).json()["system"]
        frontend = next((p["installed"] for p in stats.get("comfy_package_versions", [])
                         if p.get("name") == "comfyui-frontend-package"), stats.get("required_frontend_version"))
        object_info = requests.get(url + "/object_info", timeout=60).json()
        names = args.names or (eligible(object_info) if args.eligible else TEMPLATES)
        page = stack.enter_context(chromium(args.chromium, url))
        version = page.evaluate("window.__COMFYUI_FRONTEND_VERSION__ || null") or frontend
        args.out.mkdir(parents=True, exist_ok=True)
        failed = []
        for name in names:
            try:
                output = record(page, name)
            except Exception as exc:  # noqa: BLE001 - a tool: report and go on with the others
                log.warning("%s: %s", name, exc)
                failed.append(name)
                continue
            fixture = {"template": name, "frontend_version": version, "comfyui_version": stats.get("comfyui_version"),
                       "output": output}
            (args.out / f"{name}.json").write_text(json.dumps(fixture, indent=1, sort_keys=True) + "\n")
            log.info("%s: %d nodes", name, len(output))
        if failed:
            log.warning("failed: %s", " ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
