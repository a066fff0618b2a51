"""A model host on loopback for the models-by-URL tests: files by path, HTTP Range, redirects to other host names,
Hugging Face's published hash, Civitai's Content-Disposition, cut connections and slow bodies; it counts every
request with its host and headers. Small safetensors files are written with numpy (no torch)."""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler

from comfy_worker.storage.urlsafety import UrlPolicy

from .httpserve import serve_http

# Test host names: each resolves to loopback and counts as public, as a real model host would be.
PUBLIC_NAMES = ("models.public.test", "cdn.public.test", "other.public.test")


def safetensors_bytes(seed: int = 0, size: int = 16) -> bytes:
    """A LoRA-shaped safetensors file (its keys match no model: ComfyUI still loads it)."""
    import numpy as np
    from safetensors.numpy import save

    rng = np.random.default_rng(seed)
    return save({"lora_unet_x.lora_down.weight": rng.standard_normal((size, 4)).astype(np.float32),
                 "lora_unet_x.lora_up.weight": rng.standard_normal((4, size)).astype(np.float32)},
                metadata={"seed": str(seed)})


def public_names_policy() -> UrlPolicy:
    """The SSRF policy with the test names public and on loopback; every other loopback address stays refused."""
    def resolver(host: str, port: int) -> list[str]:
        if host in PUBLIC_NAMES:
            return ["127.0.0.1"]
        raise OSError("unknown test name")

    return UrlPolicy(allow_private=False, allow_http=True, resolver=resolver,
                     treat_as_public=lambda host, ip: host in PUBLIC_NAMES and ip == ipaddress.ip_address("127.0.0.1"))


@dataclass
class Served:
    files: dict[str, bytes] = field(default_factory=dict)
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)  # (host, path, headers)
    cut_first: dict[str, int] = field(default_factory=dict)  # name -> how many bodies to cut halfway
    slow: float = 0.0  # seconds between 64 KiB pieces of a body
    linked_etag: dict[str, str] = field(default_factory=dict)  # name -> the hash /hf/ publishes
    status: dict[str, int] = field(default_factory=dict)  # name -> an error status to answer with
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0

    def url(self, path: str, host: str = "models.public.test") -> str:
        return f"http://{host}:{self.port}/{path}"

    def bodies(self, name: str) -> int:
        """Requests for the file's body (not a one-byte probe)."""
        return sum(1 for _, path, headers in self.requests
                   if path == f"/files/{name}" and headers.get("Range") != "bytes=0-0")


def _handler(served: Served) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _empty(self, status: int, **headers: str) -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name.replace("_", "-"), value)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self) -> None:
            host = self.headers.get("Host", "").split(":")[0]
            with served.lock:
                served.requests.append((host, self.path, dict(self.headers.items())))
            parts = self.path.split("?")[0].strip("/").split("/")
            kind, name = parts[0], parts[-1]
            if kind == "redirect":  # /redirect/<host>/<name>: the same file on another host name
                return self._empty(302, Location=served.url(f"files/{name}", parts[1]))
            if kind == "hf":  # /hf/<name>: Hugging Face's resolve answer, its hash published, body on a CDN
                return self._empty(302, Location=served.url(f"files/{name}", "cdn.public.test"),
                                   X_Linked_Etag=f'"{served.linked_etag.get(name, "")}"')
            if kind == "download":  # /download/<id>: no name in the URL, the server names it (Civitai)
                name = parts[1]
            elif kind != "files":
                return self._empty(404)
            if name in served.status:
                return self._empty(served.status[name])
            if name not in served.files:
                return self._empty(404)
            extra = {"Content-Disposition": f'attachment; filename="{name}"'} if kind == "download" else {}
            self._send(name, served.files[name], extra)

        def _send(self, name: str, body: bytes, extra: dict[str, str]) -> None:
            start, end = 0, len(body) - 1
            ranged = self.headers.get("Range")
            if ranged:
                first, _, last = ranged.removeprefix("bytes=").partition("-")
                start, end = int(first), int(last) if last else len(body) - 1
                if start >= len(body):
                    return self._empty(416, Content_Range=f"bytes */{len(body)}")
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{end}/{len(body)}")
            else:
                self.send_response(200)
            chunk = body[start:end + 1]
            self.send_header("Content-Length", str(len(chunk)))
            self.send_header("Accept-Ranges", "bytes")
            for key, value in extra.items():
                self.send_header(key, value)
            self.end_headers()
            with served.lock:
                cut = served.cut_first.get(name, 0) and len(chunk) > 1
                if cut:
                    served.cut_first[name] -= 1
            if cut:  # half the promised bytes, then the connection drops
                self.wfile.write(chunk[: len(chunk) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            for offset in range(0, len(chunk), 1 << 16):
                self.wfile.write(chunk[offset:offset + (1 << 16)])
                if served.slow:
                    time.sleep(served.slow)

    return Handler


@contextlib.contextmanager
def model_server() -> Iterator[Served]:
    served = Served()
    with serve_http(_handler(served)) as httpd:
        served.port = httpd.server_port
        yield served


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
