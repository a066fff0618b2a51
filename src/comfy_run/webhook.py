"""Checking the events a worker POSTs to your `events.url` (the receiver's side; docs/api.md, "Live events").

    from comfy_run.webhook import verify
    if not verify(secret, raw_body, request.headers["X-Comfy-Worker-Signature"]):
        return 400          # altered, replayed later than the tolerance, or not from your endpoint

`secret` is the endpoint's EVENTS_SECRET. Verify the raw body, before any JSON parsing. An event id
(`X-Comfy-Worker-Event-Id`, also `job_id:seq` of the body) seen before is a replay within the tolerance or a
retry of an event you already took: ignore it.
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "X-Comfy-Worker-Signature"
ID_HEADER = "X-Comfy-Worker-Event-Id"
TOLERANCE = 300.0


def verify(secret: str | bytes, body: bytes, header: str | None, *, tolerance: float = TOLERANCE,
           now: float | None = None) -> bool:
    """Whether `header` (`t=<unix seconds>,v1=<hex>`) signs `body` with `secret`, within `tolerance` seconds."""
    if not header:
        return False
    key = secret.encode() if isinstance(secret, str) else secret
    fields: dict[str, list[str]] = {}
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        fields.setdefault(name, []).append(value)
    try:
        timestamp = int(fields["t"][0])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = hmac.new(key, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(expected, candidate) for candidate in fields.get("v1", []))
