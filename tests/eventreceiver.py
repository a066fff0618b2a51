"""A receiver of a job's live events (`events.url`) for tests: it checks every POST's signature the way a
caller's receiver would (comfy_run.webhook.verify over the raw body), refuses an event id it has seen, and
keeps what it accepted and refused, in arrival order. It can be told to answer slowly, to fail the first
tries, or to redirect."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from comfy_run.webhook import ID_HEADER, SIGNATURE_HEADER, verify
from tests.httpserve import serve_http

SECRET = "test-events-secret"


@dataclass
class Received:
    body: bytes
    headers: dict[str, str]
    t: float
    verdict: str  # "accepted", "bad signature", "replay"

    @property
    def event(self) -> dict[str, Any]:
        return json.loads(self.body)


@dataclass
class Receiver:
    url: str = ""
    secret: str = SECRET
    delay: float = 0.0            # seconds before each answer
    fail_first: int = 0           # answer 503 to this many POSTs first
    status: int = 200
    redirect_to: str | None = None
    received: list[Received] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def accepted(self) -> list[dict[str, Any]]:
        with self.lock:
            return [r.event for r in self.received if r.verdict == "accepted"]

    def verdicts(self) -> list[str]:
        with self.lock:
            return [r.verdict for r in self.received]

    def take(self, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
        """What a careful receiver does with one POST: (status, verdict)."""
        if not verify(self.secret, body, headers.get(SIGNATURE_HEADER)):
            return 400, "bad signature"
        event_id = headers.get(ID_HEADER, "")
        with self.lock:
            if event_id in self.seen:
                return 409, "replay"
            self.seen.add(event_id)
        return self.status, "accepted"

    def wait_for(self, predicate, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.accepted):
                return
            time.sleep(0.02)
        raise AssertionError(f"receiver: condition not met; got {[e.get('event') for e in self.accepted]}")


@contextlib.contextmanager
def event_receiver(**options: Any) -> Iterator[Receiver]:
    receiver = Receiver(**options)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            headers = {k: v for k, v in self.headers.items()}
            if receiver.delay:
                time.sleep(receiver.delay)
            if receiver.redirect_to:
                self.send_response(307)
                self.send_header("Location", receiver.redirect_to)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            with receiver.lock:
                failing = receiver.fail_first > 0
                receiver.fail_first -= 1 if failing else 0
            status, verdict = (503, "unavailable") if failing else receiver.take(body, headers)
            with receiver.lock:
                receiver.received.append(Received(body, headers, time.monotonic(), verdict))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

    with serve_http(Handler) as server:
        receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        yield receiver
