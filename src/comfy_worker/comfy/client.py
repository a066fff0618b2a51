"""HTTP calls to ComfyUI's API (protocols.md Part A), each with a timeout and a typed failure.

Built on urllib3's connection pool rather than requests: every job makes several calls to the local
ComfyUI, and requests' per-call machinery (environment scan, hooks, cookies) costs twice the CPU of the
call itself, CPU that on a small machine is taken from ComfyUI while it runs the job."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import urllib3
from urllib3.util.retry import Retry

log = logging.getLogger("comfy_worker.comfy.client")

# Like requests' default: a connection that cannot be opened is not retried, and neither is a request
# that may have reached ComfyUI (a second POST /prompt would queue the prompt twice).
_NO_RETRY = Retry(total=0, read=False, redirect=0, raise_on_status=False)


class ComfyUnavailable(Exception):
    """ComfyUI could not be reached or answered with a server error."""


class PromptRejected(Exception):
    """ComfyUI answered POST /prompt with HTTP 400 (the body holds `error` and `node_errors`)."""

    def __init__(self, body: dict[str, Any]) -> None:
        super().__init__(body.get("error", {}).get("message", "prompt rejected"))
        self.body = body


@dataclass(frozen=True)
class Response:
    status_code: int
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.content)


class ComfyClient:
    """A thin, typed client of one ComfyUI server."""

    def __init__(self, base_url: str, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        # Jobs, cleanup and model listing call ComfyUI from several threads at once: keep a connection each.
        # No proxy from the environment: a proxy set for the worker's downloads must never carry these calls.
        self.pool = urllib3.PoolManager(num_pools=2, maxsize=32, retries=_NO_RETRY)

    @property
    def ws_url(self) -> str:
        scheme = "wss" if self.base_url.startswith("https") else "ws"
        return f"{scheme}://{self.base_url.split('://', 1)[1]}/ws"

    # --- plumbing -------------------------------------------------------------------------------
    def _request(self, method: str, path: str, *, timeout: float | None = None, json: Any = None,
                 fields: dict[str, Any] | None = None, params: dict[str, str] | None = None) -> Response:
        """`json` goes as a JSON body, `fields` as a multipart form (urllib3 takes one or the other)."""
        url = self.base_url + path + (f"?{urlencode(params)}" if params else "")
        if fields is not None:
            payload: dict[str, Any] = {"fields": fields}
        elif json is not None:
            payload = {"body": _dumps(json), "headers": {"Content-Type": "application/json"}}
        else:
            payload = {}
        seconds = timeout or self.timeout
        try:
            resp = self.pool.request(method, url, timeout=urllib3.Timeout(connect=seconds, read=seconds), **payload)
        except urllib3.exceptions.HTTPError as exc:
            reason = getattr(exc, "reason", None) or exc
            raise ComfyUnavailable(f"{method} {path}: {type(reason).__name__}: {reason}") from exc
        out = Response(resp.status, resp.data)
        if out.status_code >= 500:
            raise ComfyUnavailable(f"{method} {path}: HTTP {out.status_code}: {out.text[:300]}")
        return out

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        resp = self._request(method, path, **kwargs)
        if resp.status_code != 200:
            raise ComfyUnavailable(f"{method} {path}: HTTP {resp.status_code}: {resp.text[:300]}")
        if not resp.content:
            return None
        return resp.json()

    # --- API ------------------------------------------------------------------------------------
    def system_stats(self, timeout: float | None = None) -> dict[str, Any]:
        return self._json("GET", "/system_stats", timeout=timeout)

    def object_info(self) -> dict[str, Any]:
        return self._json("GET", "/object_info", timeout=max(self.timeout, 60))

    def queue_prompt(self, prompt: dict[str, Any], *, client_id: str, prompt_id: str,
                     partial_execution_targets: list[str] | None = None,
                     extra_data: dict[str, Any] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"prompt": prompt, "client_id": client_id, "prompt_id": prompt_id}
        if partial_execution_targets:
            body["partial_execution_targets"] = partial_execution_targets
        if extra_data:
            body["extra_data"] = extra_data
        resp = self._request("POST", "/prompt", json=body)
        if resp.status_code == 400:
            try:
                payload = resp.json()
            except ValueError:
                payload = {"error": {"type": "bad_request", "message": resp.text[:500], "details": "",
                                     "extra_info": {}}, "node_errors": {}}
            raise PromptRejected(payload)
        if resp.status_code != 200:
            raise ComfyUnavailable(f"POST /prompt: HTTP {resp.status_code}: {resp.text[:300]}")
        return resp.json()

    def history(self, prompt_id: str) -> dict[str, Any] | None:
        """The finished history entry of a prompt, or None while it is queued, running or unknown."""
        data = self._json("GET", f"/history/{prompt_id}")
        if isinstance(data, dict) and prompt_id in data:
            return data[prompt_id]
        return None

    def delete_history(self, prompt_ids: list[str]) -> None:
        self._request("POST", "/history", json={"delete": prompt_ids})

    def queue(self) -> dict[str, Any]:
        return self._json("GET", "/queue")

    def delete_from_queue(self, prompt_ids: list[str]) -> None:
        self._request("POST", "/queue", json={"delete": prompt_ids})

    def interrupt(self, prompt_id: str | None = None) -> None:
        """Interrupt `prompt_id` only if it is the one running (never someone else's prompt)."""
        self._request("POST", "/interrupt", json={"prompt_id": prompt_id} if prompt_id else None)

    def free(self, *, unload_models: bool = True, free_memory: bool = False) -> None:
        self._request("POST", "/free", json={"unload_models": unload_models, "free_memory": free_memory})

    def upload_image(self, name: str, data: bytes, *, subfolder: str = "", overwrite: bool = False,
                     folder_type: str = "input", mime: str = "application/octet-stream") -> dict[str, Any]:
        fields = {"image": (name, data, mime), "type": folder_type, "subfolder": subfolder,
                  "overwrite": "true" if overwrite else "false"}
        resp = self._request("POST", "/upload/image", fields=fields, timeout=max(self.timeout, 120))
        if resp.status_code != 200:
            raise ComfyUnavailable(f"POST /upload/image: HTTP {resp.status_code}: {resp.text[:300]}")
        return resp.json()

    def view(self, filename: str, subfolder: str, folder_type: str) -> bytes:
        resp = self._request("GET", "/view", params={"filename": filename, "subfolder": subfolder,
                                                     "type": folder_type}, timeout=max(self.timeout, 120))
        if resp.status_code != 200:
            raise FileNotFoundError(f"/view {folder_type}/{subfolder}/{filename}: HTTP {resp.status_code}")
        return resp.content

    def view_to(self, filename: str, subfolder: str, folder_type: str, target: Path) -> int:
        """Stream a file from `/view` into `target` (never all in memory); returns its size."""
        url = self.base_url + "/view?" + urlencode({"filename": filename, "subfolder": subfolder,
                                                    "type": folder_type})
        try:
            resp = self.pool.request("GET", url, preload_content=False,
                                     timeout=urllib3.Timeout(connect=self.timeout, read=max(self.timeout, 120)))
        except urllib3.exceptions.HTTPError as exc:
            raise ComfyUnavailable(f"GET /view: {exc}") from exc
        try:
            if resp.status != 200:
                raise FileNotFoundError(f"/view {folder_type}/{subfolder}/{filename}: HTTP {resp.status}")
            size = 0
            with target.open("wb") as out:
                for chunk in resp.stream(1 << 20):
                    out.write(chunk)
                    size += len(chunk)
            return size
        except urllib3.exceptions.HTTPError as exc:
            raise ComfyUnavailable(f"GET /view: {exc}") from exc
        finally:
            resp.release_conn()

    def models_folders(self) -> list[str]:
        return self._json("GET", "/models")

    def models(self, folder: str) -> list[str]:
        return self._json("GET", f"/models/{folder}")

    def close(self) -> None:
        self.pool.clear()


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()
