"""Where jobs go: a RunPod endpoint (through the runpod SDK's endpoint client) or the runpod SDK's local test
server. Both expose submit / status / cancel with RunPod's status responses."""

from __future__ import annotations

import logging
import os
from typing import Any, Protocol

import requests

log = logging.getLogger("comfy_run")

FINAL = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"})  # the SDK's FINAL_STATES lacks CANCELLED


class BackendError(RuntimeError):
    """The endpoint could not be reached or refused the call (not a failed job)."""


class Backend(Protocol):
    label: str
    #: False when progress is not reported while a job runs (the local server runs it inside /status).
    live_progress: bool

    def submit(self, body: dict[str, Any]) -> str: ...

    def status(self, job_id: str) -> dict[str, Any]: ...

    def stream(self, job_id: str) -> dict[str, Any]: ...

    def cancel(self, job_id: str) -> None: ...


class RunPodBackend:
    """A RunPod endpoint; the API key comes from `RUNPOD_API_KEY`."""

    live_progress = True

    def __init__(self, endpoint_id: str, api_key: str | None = None, *, timeout: float = 30.0) -> None:
        import runpod

        key = api_key or os.environ.get("RUNPOD_API_KEY")
        if not key:
            raise BackendError("RUNPOD_API_KEY is not set: export your RunPod API key first")
        self.endpoint = runpod.Endpoint(endpoint_id, api_key=key)
        self.endpoint_id = endpoint_id
        self.timeout = timeout
        self.label = f"endpoint {endpoint_id}"

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        client = self.endpoint.rp_client
        try:
            if method == "GET":
                return client.get(f"{self.endpoint_id}/{path}", timeout=int(self.timeout))
            return client.post(f"{self.endpoint_id}/{path}", body or {}, timeout=int(self.timeout))
        except (requests.RequestException, RuntimeError, ValueError) as exc:
            raise BackendError(f"{method} /{path} failed: {exc}") from None

    def submit(self, body: dict[str, Any]) -> str:
        answer = self._call("POST", "run", body)
        if "id" not in answer:
            raise BackendError(f"/run answered without a job id: {answer}")
        return str(answer["id"])

    def status(self, job_id: str) -> dict[str, Any]:
        return self._call("GET", f"status/{job_id}")

    def stream(self, job_id: str) -> dict[str, Any]:
        """The chunks the job produced since the last call (`{"status", "stream": [{"output": ...}]}`)."""
        return self._call("GET", f"stream/{job_id}")

    def cancel(self, job_id: str) -> None:
        self._call("POST", f"cancel/{job_id}")


class LocalBackend:
    """`handler.py --rp_serve_api`: /run only stores the job; the POST /status call runs it and answers at the end."""

    live_progress = False

    def __init__(self, url: str, *, timeout: float = 3600.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.label = f"local server {self.url}"

    def _post(self, path: str, body: dict[str, Any] | None = None, timeout: float = 30.0) -> dict[str, Any]:
        try:
            resp = requests.post(f"{self.url}/{path}", json=body, timeout=timeout)
            resp.raise_for_status()
            return resp.json()
        except (requests.RequestException, ValueError) as exc:
            raise BackendError(f"POST {self.url}/{path} failed: {exc}") from None

    def submit(self, body: dict[str, Any]) -> str:
        # The local server knows only `input` (and `webhook`).
        answer = self._post("run", {"input": body["input"]})
        return str(answer["id"])

    def status(self, job_id: str) -> dict[str, Any]:
        return self._post(f"status/{job_id}", timeout=self.timeout)

    def stream(self, job_id: str) -> dict[str, Any]:
        """The local server runs the job inside this call and answers every chunk at the end."""
        return self._post(f"stream/{job_id}", timeout=self.timeout)

    def cancel(self, job_id: str) -> None:
        log.info("the local test server cannot cancel a job (it has no /cancel); it finishes on its own")
