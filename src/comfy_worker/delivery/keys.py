"""Object keys (S3) and file names (Drive) from a template such as ``{job_id}/{filename}``."""

from __future__ import annotations

import re
import string
import uuid
from datetime import datetime, timezone
from pathlib import PurePosixPath

from ..errors import invalid_input
from ..media.outputs import ProducedOutput
from .base import DeliveryContext

PLACEHOLDERS = ("job_id", "prompt_id", "node_id", "filename", "stem", "ext", "index", "date", "uuid")
_UNSAFE = re.compile(r"[^A-Za-z0-9._\-() +=,@]")


def _clean(value: str) -> str:
    """One path segment: no separators, no control characters, never '.' or '..'."""
    value = _UNSAFE.sub("_", value).strip()
    return "_" if value in {"", ".", ".."} else value


def validate_template(template: str, field: str) -> None:
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise invalid_input(field, str(exc), message=f"{field}: {exc}") from None
    unknown = sorted({n for n in names if n not in PLACEHOLDERS})
    if unknown:
        problem = f"unknown placeholder(s) {unknown}; allowed: {list(PLACEHOLDERS)}"
        raise invalid_input(field, problem, message=f"{field}: {problem}")


def render_keys(template: str, prefix: str, ctx: DeliveryContext, outputs: list[ProducedOutput], *,
                field: str) -> list[str]:
    """One key per output, all different; a template that maps two outputs to one key is refused."""
    validate_template(template, field)
    now = datetime.now(timezone.utc)
    keys: list[str] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(outputs):
        name = PurePosixPath(item.filename or f"{item.node_id}_{index}.txt").name
        values = {
            "job_id": _clean(ctx.job_id), "prompt_id": _clean(ctx.prompt_id), "node_id": _clean(item.node_id),
            "filename": _clean(name), "stem": _clean(PurePosixPath(name).stem),
            "ext": _clean(PurePosixPath(name).suffix.lstrip(".")) if PurePosixPath(name).suffix else "",
            "index": str(index), "date": now.strftime("%Y-%m-%d"), "uuid": uuid.uuid4().hex,
        }
        rendered = template.format(**values)
        parts = [p for p in f"{prefix}/{rendered}".split("/") if p not in {"", "."}]
        if not parts or any(p == ".." for p in parts):
            raise invalid_input(field, "empty or unsafe key", message=f"{field}: gives an empty or unsafe key")
        key = "/".join(parts)
        if len(key.encode()) > 1024:
            raise invalid_input(field, "key longer than 1024 bytes", message=f"{field}: key longer than 1024 bytes")
        if key in seen:
            problem = (f"gives the same key '{key}' to outputs {seen[key]} and {index}; "
                       "include {filename}, {index} or {uuid}")
            raise invalid_input(field, problem, message=f"{field}: {problem}")
        seen[key] = index
        keys.append(key)
    return keys
