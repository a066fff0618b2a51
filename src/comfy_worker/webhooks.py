"""A job's live events POSTed to the caller's own URL (`events.url`): signed, in order, never in the job's way.

Signing follows Stripe's and GitHub's webhooks: `X-Comfy-Worker-Signature: t=<unix seconds>,v1=<hex>` where
the hex is HMAC-SHA256, keyed with the endpoint's EVENTS_SECRET, of `"<t>." + body`. A receiver recomputes
it over the raw body, compares in constant time, refuses a `t` older than its tolerance (5 minutes is usual)
and ignores an event id (`X-Comfy-Worker-Event-Id`, `<job id>:<seq>`) it has seen: an altered body fails
the signature, a replay fails the age check or the id. Each retry is signed afresh.

Events wait in a queue that the job never waits on: one POST at a time in `seq` order, a progress or
preview not yet sent replaced by a newer one of its kind, failures retried with backoff. Before the job's
result goes out, `aclose` waits for the queue, at most EVENTS_DRAIN_TIMEOUT; what is left is dropped.

The URL is a request's choice: it must be public (storage.urlsafety), every redirect (307/308 only: a POST
stays a POST) is checked again, and the connection goes to the address that was checked.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

from .errors import invalid_input
from .schema import EventsConfig
from .settings import Settings
from .storage.urlsafety import UrlPolicy, UrlRefused, check_url, display_url, request_pinned, url_policy

log = logging.getLogger("comfy_worker.webhooks")

SIGNATURE_HEADER = "X-Comfy-Worker-Signature"
EVENT_HEADER = "X-Comfy-Worker-Event"
ID_HEADER = "X-Comfy-Worker-Event-Id"
_REPLACEABLE = {"progress", "preview"}  # the latest of these says everything the older ones did
_MAX_QUEUED = 512
_MAX_REDIRECTS = 3


def sign(secret: bytes, body: bytes, timestamp: int) -> str:
    """The signature header's value for `body` sent at `timestamp` (Unix seconds)."""
    digest = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def check_events(config: EventsConfig, settings: Settings) -> None:
    """Refuse `events` when it cannot be honoured safely: no signing key, or a URL the worker may not reach."""
    if settings.events_secret is None:
        raise invalid_input("events", "this endpoint signs no events (EVENTS_SECRET is not set)")
    try:
        check_url(config.url, url_policy(settings))
    except UrlRefused as exc:
        raise invalid_input("events.url", str(exc), message=f"events.url refused: {exc}") from None


class _GiveUp(Exception):
    """The receiver refused the event for good (4xx, a redirect elsewhere, a refused address)."""


@dataclass
class _Queued:
    kind: str
    event_id: str
    body: bytes


class EventSender:
    """One job's events to one URL. `send` is called on the job's event loop and never blocks."""

    def __init__(self, url: str, secret: bytes, settings: Settings, *, policy: UrlPolicy | None = None,
                 clock: Callable[[], float] = time.time, backoff: float = 0.5) -> None:
        self.url = url
        self._secret = secret
        self.timeout = settings.events_timeout
        self.retries = settings.events_retries
        self.drain_timeout = settings.events_drain_timeout
        self.policy = policy or url_policy(settings)
        self._clock = clock
        self._backoff = backoff
        self._queue: deque[_Queued] = deque()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.delivered = 0
        self.dropped = 0

    def send(self, event: dict[str, Any]) -> None:
        if self._closed:
            return
        kind = str(event.get("event"))
        item = _Queued(kind, f"{event.get('job_id')}:{event.get('seq')}",
                       json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode())
        # The item at the head may be in flight: only a waiting one is replaced.
        if kind in _REPLACEABLE and len(self._queue) > 1 and self._queue[-1].kind == kind:
            self._queue[-1] = item
            self.dropped += 1
        else:
            self._queue.append(item)
        while len(self._queue) > _MAX_QUEUED:  # a receiver far behind: shed what a later event repeats
            stale = next((q for q in list(self._queue)[1:] if q.kind in _REPLACEABLE), None)
            if stale is None:
                break
            self._queue.remove(stale)
            self.dropped += 1
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._pump())

    async def _pump(self) -> None:
        while self._queue:
            item = self._queue[0]
            try:
                await self._deliver(item)
                self.delivered += 1
            except _GiveUp as exc:
                self.dropped += 1
                log.warning("event %s (%s) not delivered to %s: %s", item.event_id, item.kind,
                            display_url(self.url), exc)
            if self._queue and self._queue[0] is item:
                self._queue.popleft()

    async def _deliver(self, item: _Queued) -> None:
        for attempt in range(1, self.retries + 1):
            try:
                status = await asyncio.to_thread(self._post, item)
            except _GiveUp:
                raise
            except Exception as exc:  # noqa: BLE001 - the connection failed: worth another try
                reason = str(exc) or type(exc).__name__
            else:
                if 200 <= status < 300:
                    return
                if status not in (408, 425, 429) and status < 500:
                    raise _GiveUp(f"HTTP {status}")
                reason = f"HTTP {status}"
            if attempt == self.retries:
                raise _GiveUp(f"{reason} after {attempt} tries")
            await asyncio.sleep(min(self._backoff * 2 ** (attempt - 1), 8.0))

    def _post(self, item: _Queued) -> int:
        """One attempt, on a thread: every hop checked, the connection pinned to the checked address."""
        headers = {"Content-Type": "application/json", EVENT_HEADER: item.kind, ID_HEADER: item.event_id,
                   SIGNATURE_HEADER: sign(self._secret, item.body, int(self._clock()))}
        url = self.url
        for _ in range(_MAX_REDIRECTS + 1):
            try:
                target = check_url(url, self.policy)
            except UrlRefused as exc:
                raise _GiveUp(str(exc)) from None
            response = request_pinned(target, self.timeout, method="POST", body=item.body, headers=headers)
            try:
                if response.status not in (307, 308):
                    return int(response.status)
                location = response.headers.get("Location")
                if not location:
                    raise _GiveUp(f"HTTP {response.status} without a Location header")
                url = urljoin(url, location)
            finally:
                with contextlib.suppress(Exception):
                    response.drain_conn()
                response.release_conn()
        raise _GiveUp(f"more than {_MAX_REDIRECTS} redirects")

    async def aclose(self, timeout: float | None = None) -> None:
        """Take no more events; wait for the queue at most `timeout` (EVENTS_DRAIN_TIMEOUT), drop the rest."""
        self._closed = True
        task = self._task
        if task is None or task.done():
            return
        limit = self.drain_timeout if timeout is None else timeout
        try:
            await asyncio.wait_for(asyncio.shield(task), limit)
        except asyncio.TimeoutError:
            left = len(self._queue)
            self.dropped += left
            self._queue.clear()
            task.cancel()
            log.warning("%d event(s) for %s dropped: not delivered within %.1f s (EVENTS_DRAIN_TIMEOUT)", left,
                        display_url(self.url), limit)
