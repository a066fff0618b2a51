"""The emulator's HTTP + websocket server and its command line (ComfyUI's flags; unknown ones ignored)."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import mimetypes
import os
import re
import shutil
import struct
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from .catalogue import Catalogue, Folders, load_extra_model_paths
from .executor import Executor
from .faults import Faults, faults_from_env
from .validation import PromptValidator

log = logging.getLogger("comfyui_emulator")

_PREVIEW = "__preview__"  # a binary preview frame queued among the text messages

# The device a test says this host has ("cuda"); the emulator reports the CPU otherwise, as with --cpu.
DEVICE_ENV = "COMFY_EMULATOR_DEVICE"
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
SENSITIVE_EXTRA_DATA_KEYS = ("auth_token_comfy_org", "api_key_comfy_org")
SERVER_FEATURES = {"supports_preview_metadata": True, "supports_model_type_tags": True,
                   "max_upload_size": 104857600, "extension": {"manager": {"supports_v4": True}},
                   "node_replacements": True, "assets": False}


class EmulatorServer:
    def __init__(self, folders: Folders, faults: Faults, argv: list[str], disable_metadata: bool,
                 cache_enabled: bool, preview_method: str = "none") -> None:
        self.folders = folders
        self.faults = faults
        self.argv = argv
        self.catalogue = Catalogue(folders)
        self.validator = PromptValidator(self.catalogue)
        self.sockets: dict[str, web.WebSocketResponse] = {}
        self.sockets_metadata: dict[str, dict[str, Any]] = {}
        self.frame_budget: dict[int, int] = {}
        # The extra_data of every accepted prompt, as sent (secrets included): tests read back what reached
        # ComfyUI, which ComfyUI itself keeps out of /queue and /history.
        self.received_extra_data: list[dict[str, Any]] = []
        self.loop: asyncio.AbstractEventLoop | None = None
        self.messages: asyncio.Queue[tuple[str, Any, str | None]] | None = None
        self.executor = Executor(self.catalogue, self.send_sync, lambda: self.faults, disable_metadata,
                                 cache_enabled, send_preview=self.send_preview_sync, preview_method=preview_method)

    # --- messaging (thread-safe entry, one publisher keeps the order) --------------------------------
    def send_sync(self, event: str, data: Any, sid: str | None) -> None:
        assert self.loop is not None and self.messages is not None
        self.loop.call_soon_threadsafe(self.messages.put_nowait, (event, data, sid))

    def send_preview_sync(self, image: bytes, metadata: dict[str, Any], sid: str | None) -> None:
        """A preview frame, in the order of the other messages (server.py's send_image / send_image_with_metadata)."""
        self.send_sync(_PREVIEW, (image, metadata), sid)

    async def _publish_loop(self) -> None:
        assert self.messages is not None
        while True:
            event, data, sid = await self.messages.get()
            if event == _PREVIEW:
                await self._send_preview(data, sid)
            else:
                await self.send(event, data, sid)

    async def _send_preview(self, data: tuple[bytes, dict[str, Any]], sid: str | None) -> None:
        image, metadata = data
        ws = self.sockets.get(sid) if sid is not None else None
        if ws is None or ws.closed:
            return
        if self.sockets_metadata.get(sid, {}).get("feature_flags", {}).get("supports_preview_metadata"):
            meta = json.dumps({**metadata, "image_type": "image/jpeg"}).encode()
            frame = struct.pack(">II", 4, len(meta)) + meta + image
        else:
            frame = struct.pack(">II", 1, 1) + image  # PREVIEW_IMAGE, format 1 (JPEG)
        try:
            await ws.send_bytes(frame)
        except (ConnectionError, RuntimeError):
            return

    async def send(self, event: str, data: Any, sid: str | None) -> None:
        text = json.dumps({"type": event, "data": data})
        targets = list(self.sockets.values()) if sid is None else (
            [self.sockets[sid]] if sid in self.sockets else [])
        for ws in targets:
            await self._send_frame(ws, text)

    async def _send_frame(self, ws: web.WebSocketResponse, text: str) -> None:
        if ws.closed:
            return
        try:
            await ws.send_str(text)
        except (ConnectionError, RuntimeError):
            return
        if self.faults.drop_ws_after is not None:
            left = self.frame_budget.get(id(ws), self.faults.drop_ws_after) - 1
            self.frame_budget[id(ws)] = left
            if left <= 0:
                await ws.close()

    def set_faults(self, faults: Faults) -> None:
        self.faults = faults
        self.frame_budget.clear()
        if faults.drop_ws_after == 0:
            for ws in list(self.sockets.values()):
                asyncio.ensure_future(ws.close())

    # --- app ---------------------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(client_max_size=100 * 1024 * 1024)
        routes = [
            ("GET", "/ws", self.ws),
            ("GET", "/prompt", self.get_prompt),
            ("POST", "/prompt", self.post_prompt),
            ("GET", "/queue", self.get_queue),
            ("POST", "/queue", self.post_queue),
            ("POST", "/interrupt", self.post_interrupt),
            ("POST", "/free", self.post_free),
            ("GET", "/history", self.get_history),
            ("GET", "/history/{prompt_id}", self.get_history_one),
            ("POST", "/history", self.post_history),
            ("GET", "/view", self.view),
            ("POST", "/upload/image", self.upload_image),
            ("GET", "/object_info", self.object_info),
            ("GET", "/object_info/{node_class}", self.object_info_one),
            ("GET", "/system_stats", self.system_stats),
            ("GET", "/features", self.features),
            ("GET", "/embeddings", self.embeddings),
            ("GET", "/models", self.models),
            ("GET", "/models/{folder}", self.models_folder),
        ]
        for method, path, handler in routes:
            app.router.add_route(method, path, handler)
            app.router.add_route(method, "/api" + path, handler)
        app.router.add_get("/", self.index)
        app.router.add_get("/__emulator__/faults", self.get_faults)
        app.router.add_post("/__emulator__/faults", self.post_faults)
        app.router.add_post("/__emulator__/reset", self.post_reset)
        app.router.add_get("/__emulator__/free_calls", self.get_free_calls)
        app.router.add_get("/__emulator__/extra_data", self.get_extra_data)
        app.on_startup.append(self._on_startup)
        return app

    async def _on_startup(self, app: web.Application) -> None:
        self.loop = asyncio.get_running_loop()
        self.messages = asyncio.Queue()
        app["publisher"] = asyncio.ensure_future(self._publish_loop())
        self.executor.start()

    # --- routes ------------------------------------------------------------------------------------
    async def index(self, request: web.Request) -> web.Response:
        return web.Response(text="<html><body>ComfyUI emulator</body></html>", content_type="text/html")

    async def ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sid = request.rel_url.query.get("clientId", "")
        if sid:
            # Like ComfyUI: the old socket is dropped from routing but not closed.
            self.sockets.pop(sid, None)
        else:
            sid = uuid.uuid4().hex
        self.sockets[sid] = ws
        self.sockets_metadata[sid] = {"feature_flags": {}}
        try:
            info = {"exec_info": {"queue_remaining": self.executor.queue_remaining()}}
            await self._send_frame(ws, json.dumps({"type": "status", "data": {"status": info, "sid": sid}}))
            if self.executor.client_id == sid and self.executor.last_node_id is not None:
                await self._send_frame(ws, json.dumps({"type": "executing",
                                                       "data": {"node": self.executor.last_node_id}}))
            first = True
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    try:
                        data = json.loads(msg.data)
                        if first and isinstance(data, dict) and data.get("type") == "feature_flags":
                            self.sockets_metadata[sid]["feature_flags"] = data.get("data", {})
                            await self._send_frame(ws, json.dumps({"type": "feature_flags",
                                                                   "data": SERVER_FEATURES}))
                        first = False
                    except json.JSONDecodeError:
                        log.warning("Invalid JSON received from client %s", sid)
        finally:
            # The same quirk as ComfyUI: this may remove a newer socket registered under the same id.
            self.sockets.pop(sid, None)
            self.sockets_metadata.pop(sid, None)
            self.frame_budget.pop(id(ws), None)
        return ws

    async def get_prompt(self, request: web.Request) -> web.Response:
        return web.json_response({"exec_info": {"queue_remaining": self.executor.queue_remaining()}})

    async def post_prompt(self, request: web.Request) -> web.Response:
        log.info("got prompt")
        body = await request.json()
        ex = self.executor
        if "number" in body:
            number: Any = float(body["number"])
        else:
            number = ex.number
            if body.get("front"):
                number = -number
            ex.number += 1
        if "prompt" not in body:
            return web.json_response({"error": {"type": "no_prompt", "message": "No prompt provided",
                                                "details": "No prompt provided", "extra_info": {}},
                                      "node_errors": {}}, status=400)
        prompt = body["prompt"]
        client_prompt_id = body.get("prompt_id")
        if client_prompt_id is None:
            prompt_id = str(uuid.uuid4())
        elif isinstance(client_prompt_id, str) and UUID_RE.match(client_prompt_id):
            prompt_id = client_prompt_id
        else:
            return web.json_response({"error": {
                "type": "invalid_prompt_id", "message": "prompt_id must be a valid UUID",
                "details": "prompt_id must be a UUID string in canonical lowercase hyphenated form; omit it "
                           "to let the server generate one", "extra_info": {}}, "node_errors": {}}, status=400)
        targets = body.get("partial_execution_targets")
        ok, error, outputs, node_errors = self.validator.validate_prompt(prompt, targets)
        extra_data = body.get("extra_data", {})
        if "client_id" in body:
            extra_data["client_id"] = body["client_id"]
        if not ok:
            log.warning("invalid prompt: %s", error)
            return web.json_response({"error": error, "node_errors": node_errors}, status=400)
        self.received_extra_data.append({"prompt_id": prompt_id, **extra_data})
        sensitive = {k: extra_data.pop(k) for k in SENSITIVE_EXTRA_DATA_KEYS if k in extra_data}
        extra_data["create_time"] = int(time.time() * 1000)
        ex.put((number, prompt_id, prompt, extra_data, outputs, sensitive))
        return web.json_response({"prompt_id": prompt_id, "number": number, "node_errors": node_errors})

    async def get_queue(self, request: web.Request) -> web.Response:
        running, pending = self.executor.current_queue()
        return web.json_response({"queue_running": running, "queue_pending": pending})

    async def post_queue(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("clear"):
            self.executor.wipe_queue()
        for prompt_id in body.get("delete", []) if "delete" in body else []:
            self.executor.delete_queue_item(prompt_id)
        return web.Response(status=200)

    async def post_interrupt(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except json.JSONDecodeError:
            body = {}
        prompt_id = body.get("prompt_id") if isinstance(body, dict) else None
        self.executor.interrupt(prompt_id or None)
        return web.Response(status=200)

    async def post_free(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.executor.free(bool(body.get("unload_models", False)), bool(body.get("free_memory", False)))
        return web.Response(status=200)

    async def get_history(self, request: web.Request) -> web.Response:
        q = request.rel_url.query
        max_items = int(q["max_items"]) if "max_items" in q else None
        offset = int(q.get("offset", -1))
        return web.json_response(self.executor.get_history(max_items=max_items, offset=offset))

    async def get_history_one(self, request: web.Request) -> web.Response:
        return web.json_response(self.executor.get_history(request.match_info["prompt_id"]))

    async def post_history(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("clear"):
            self.executor.delete_history()
        for prompt_id in body.get("delete", []) if "delete" in body else []:
            self.executor.delete_history(prompt_id)
        return web.Response(status=200)

    async def view(self, request: web.Request) -> web.StreamResponse:
        q = request.rel_url.query
        if "filename" not in q:
            return web.Response(status=404)
        filename = q["filename"]
        base: Path | None = None
        for suffix, folder in (("[output]", self.folders.output), ("[input]", self.folders.input),
                               ("[temp]", self.folders.temp)):
            if filename.endswith(suffix):
                filename, base = filename[: -(len(suffix) + 1)], folder
                break
        if not filename or filename[0] == "/" or ".." in filename:
            return web.Response(status=400)
        if base is None:
            base = self.folders.by_type(q.get("type", "output"))
        if base is None:
            return web.Response(status=400)
        out_dir = os.path.abspath(base)
        if "subfolder" in q:
            full = os.path.join(out_dir, q["subfolder"])
            if os.path.commonpath((os.path.abspath(full), out_dir)) != out_dir:
                return web.Response(status=403)
            out_dir = full
        filename = os.path.basename(filename)
        path = os.path.join(out_dir, filename)
        if not os.path.isfile(path):
            return web.Response(status=404)
        ctype = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        if ctype in ("text/html", "text/html-sandboxed", "application/xhtml+xml", "text/javascript",
                     "text/css", "image/svg+xml", "application/xml", "text/xml"):
            ctype = "application/octet-stream"
        with open(path, "rb") as f:
            data = f.read()
        return web.Response(body=data, content_type=ctype,
                            headers={"Content-Disposition": f'filename="{filename}"'})

    async def upload_image(self, request: web.Request) -> web.Response:
        if self.faults.fail_upload:
            return web.Response(status=500, text="500 Internal Server Error\n\nServer got itself in trouble")
        post = await request.post()
        image = post.get("image")
        kind = post.get("type") or "input"
        upload_dir = self.folders.by_type(str(kind)) if kind in ("input", "temp", "output") else None
        if upload_dir is None:
            raise web.HTTPInternalServerError(text="Server got itself in trouble")
        if not isinstance(image, web.FileField):
            return web.Response(status=400)
        filename = image.filename
        if not filename:
            return web.Response(status=400)
        content = image.file.read()
        subfolder = str(post.get("subfolder", ""))
        base = os.path.abspath(upload_dir)
        folder = os.path.join(base, os.path.normpath(subfolder))
        path = os.path.abspath(os.path.join(folder, filename))
        if os.path.commonpath((base, path)) != base:
            return web.Response(status=400)
        os.makedirs(folder, exist_ok=True)
        stem, ext = os.path.splitext(filename)
        overwrite = post.get("overwrite")
        duplicate = False
        if overwrite not in ("true", "1"):
            i = 1
            while os.path.exists(path):
                with open(path, "rb") as f:
                    if hashlib.sha256(f.read()).digest() == hashlib.sha256(content).digest():
                        duplicate = True
                        break
                filename = f"{stem} ({i}){ext}"
                path = os.path.join(folder, filename)
                i += 1
        if not duplicate:
            with open(path, "wb") as f:
                f.write(content)
        return web.json_response({"name": filename, "subfolder": subfolder, "type": kind})

    async def object_info(self, request: web.Request) -> web.Response:
        return web.json_response(self.catalogue.object_info())

    async def object_info_one(self, request: web.Request) -> web.Response:
        return web.json_response(self.catalogue.object_info(request.match_info["node_class"]))

    async def system_stats(self, request: web.Request) -> web.Response:
        return web.json_response({
            "system": {"os": sys.platform, "ram_total": 0, "ram_free": 0, "comfyui_version": "0.33.0",
                       "python_version": sys.version, "pytorch_version": "emulated", "embedded_python": False,
                       "argv": self.argv},
            "devices": [self._device()],
        })

    def _device(self) -> dict[str, Any]:
        """What a real ComfyUI reports: the CPU with --cpu, else the GPU a test says this host has."""
        if "--cpu" in self.argv or os.environ.get(DEVICE_ENV, "cpu") != "cuda":
            return {"name": "cpu", "type": "cpu", "index": None, "vram_total": 0, "vram_free": 0,
                    "torch_vram_total": 0, "torch_vram_free": 0}
        return {"name": "cuda:0 NVIDIA H200 : cudaMallocAsync", "type": "cuda", "index": 0,
                "vram_total": 150_000_000_000, "vram_free": 149_000_000_000, "torch_vram_total": 0,
                "torch_vram_free": 0}

    async def features(self, request: web.Request) -> web.Response:
        return web.json_response(SERVER_FEATURES)

    async def embeddings(self, request: web.Request) -> web.Response:
        names = self.folders.list_models("embeddings") or []
        return web.json_response([os.path.splitext(n)[0] for n in names])

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response(self.folders.model_keys())

    async def models_folder(self, request: web.Request) -> web.Response:
        files = self.folders.list_models(request.match_info["folder"])
        if files is None:
            return web.Response(status=404)
        return web.json_response(files)

    async def get_faults(self, request: web.Request) -> web.Response:
        return web.json_response(self.faults.model_dump())

    async def post_faults(self, request: web.Request) -> web.Response:
        body = await request.json()
        try:
            faults = Faults.model_validate({**self.faults.model_dump(), **body})
        except ValueError as err:
            return web.json_response({"error": str(err)}, status=400)
        self.set_faults(faults)
        return web.json_response(faults.model_dump())

    async def get_free_calls(self, request: web.Request) -> web.Response:
        return web.json_response(self.executor.free_calls)

    async def get_extra_data(self, request: web.Request) -> web.Response:
        return web.json_response(self.received_extra_data)

    async def post_reset(self, request: web.Request) -> web.Response:
        self.set_faults(Faults())
        self.executor.reset()
        return web.json_response(self.faults.model_dump())


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="comfyui-emulator", add_help=True)
    parser.add_argument("--listen", nargs="?", const="0.0.0.0", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8188)
    parser.add_argument("--base-directory")
    parser.add_argument("--input-directory")
    parser.add_argument("--output-directory")
    parser.add_argument("--temp-directory")
    parser.add_argument("--extra-model-paths-config", nargs="+", action="append", default=[])
    parser.add_argument("--disable-metadata", action="store_true")
    parser.add_argument("--dont-print-server", action="store_true")
    parser.add_argument("--cache-none", action="store_true")
    parser.add_argument("--preview-method", default="none", choices=["none", "auto", "latent2rgb", "taesd"])
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        log.debug("ignoring flags %s", unknown)
    return args


def main(argv: list[str] | None = None, base_dir: Path | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(message)s", force=True)
    args = parse_args(argv)
    faults = faults_from_env()
    if faults.exit_at_start is not None:
        log.error("Emulated start-up failure: exiting with code %d", faults.exit_at_start)
        logging.shutdown()
        sys.exit(faults.exit_at_start)
    base = Path(os.path.abspath(args.base_directory or base_dir or os.getcwd()))
    folders = Folders(
        base=base,
        input=Path(os.path.abspath(args.input_directory or base / "input")),
        output=Path(os.path.abspath(args.output_directory or base / "output")),
        temp=Path(os.path.abspath(args.temp_directory or base)) / "temp",
    )
    extra_cfgs = [Path(p) for group in args.extra_model_paths_config for p in group]
    default_cfg = base / "extra_model_paths.yaml"
    if default_cfg.is_file():
        extra_cfgs.insert(0, default_cfg)
    folders.extra_model_paths = load_extra_model_paths(extra_cfgs)
    shutil.rmtree(folders.temp, ignore_errors=True)
    folders.input.mkdir(parents=True, exist_ok=True)
    folders.output.mkdir(parents=True, exist_ok=True)
    folders.temp.mkdir(parents=True, exist_ok=True)
    load_custom_nodes(folders.model_dirs("custom_nodes"))
    if faults.start_delay:
        time.sleep(faults.start_delay)
    server = EmulatorServer(folders, faults, ["main.py", *argv], args.disable_metadata, not args.cache_none,
                            args.preview_method)
    asyncio.run(_serve(server, args))


def load_custom_nodes(dirs: list[Path]) -> None:
    """Import every custom node module (a `.py` file or a package) as ComfyUI does at start, so its import-time
    code runs inside this process with this process's environment and user. Their node classes are not
    added to the catalogue: the emulator runs only the nodes it emulates."""
    import importlib.util

    for root in dirs:
        if not root.is_dir():
            continue
        for entry in sorted(root.iterdir()):
            init = entry / "__init__.py" if entry.is_dir() else entry
            if init.suffix != ".py" or not init.is_file() or entry.name.startswith((".", "__")):
                continue
            spec = importlib.util.spec_from_file_location(f"custom_nodes.{entry.stem}", init)
            if spec is None or spec.loader is None:
                continue
            try:
                spec.loader.exec_module(importlib.util.module_from_spec(spec))
                log.info("Imported custom node %s", entry)
            except Exception:  # ComfyUI logs a broken custom node and goes on
                log.exception("Cannot import %s module for custom nodes", entry)


async def _serve(server: EmulatorServer, args: argparse.Namespace) -> None:
    runner = web.AppRunner(server.app(), access_log=None)
    await runner.setup()
    host = args.listen.split(",")[0]
    site = web.TCPSite(runner, host, args.port)
    log.info("Starting server\n")
    await site.start()
    port = site._server.sockets[0].getsockname()[1] if site._server and site._server.sockets else args.port
    if not args.dont_print_server:
        log.info("To see the GUI go to: http://%s:%d", host, port)
    sys.stdout.flush()
    await asyncio.Event().wait()
