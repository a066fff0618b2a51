"""What a caller may see of a failure: its own job, never the worker's secrets, files or other jobs.

Every error payload passes through `for_caller` on its way out. It removes the worker's secret values
(tokens and keys from the environment), credentials and query strings inside URLs (signed URLs, `?token=`),
absolute paths (the checkout, the volume, another job's scratch folder: only the file name stays) and the
per-job folder names ComfyUI's messages carry, whose tokens belong to other jobs. All patterns are linear
(no nested quantifier can backtrack), so a long message costs time in proportion to its length.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

# The folder under ComfyUI's input, output and temp folders that holds one job's files.
JOBS_SUBFOLDER = "worker-jobs"

# Environment variables whose values are secrets, by name; values shorter than this are not worth a
# substitution (and would replace ordinary words).
_SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|API_KEY|ACCESS_KEY|PRIVATE_KEY|_KEY$|^KEY$")
_MIN_SECRET = 8
_URL = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]{1,15})://([^\s'\"<>/?#]*)([^\s'\"<>?#]*)([?#][^\s'\"<>]*)?")
# A POSIX absolute path of two or more segments, not the path part of a URL (preceded by a host name).
_ABS_PATH = re.compile(r"(?<![\w.:/~\\-])/(?:[^\s'\"/<>:,;()\[\]]+/)+([^\s'\"/<>:,;()\[\]]*)")
_WINDOWS_PATH = re.compile(r"\b[A-Za-z]:\\(?:[^\s'\"\\<>:,;]+\\)+([^\s'\"\\<>:,;]*)")
_JOB_FOLDER = re.compile(re.escape(JOBS_SUBFOLDER) + r"[/\\][A-Za-z0-9_.-]+[/\\]?")
# A credential-like query parameter wherever it appears (libraries quote relative URLs too: "url: /x?token=").
_SECRET_PARAM = re.compile(r"([?&](?:[\w-]*token|[\w-]*key|sig|signature|x-amz-[\w-]+|auth|password|secret|"
                           r"credential|code)=)[^&\s'\"<>]*", re.IGNORECASE)
REDACTED = "<redacted>"
_MAX_TEXT = 8000


def secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """The values of the environment's secret-looking variables, longest first (so a secret that contains
    another is replaced whole)."""
    env = os.environ if environ is None else environ
    values = {value for name, value in env.items()
              if _SECRET_NAME.search(name.upper()) and len(value) >= _MIN_SECRET}
    return sorted(values, key=len, reverse=True)


def strip_url_secrets(text: str) -> str:
    """URLs keep scheme, host and path; user:password and query strings (signatures, tokens) go."""
    def clean(match: re.Match[str]) -> str:
        scheme, authority, path, query = match.groups()
        host = authority.rsplit("@", 1)[-1]
        return f"{scheme}://{host}{path}" + ("?" + REDACTED if query and query.startswith("?") else "")
    return _SECRET_PARAM.sub(lambda m: m.group(1) + REDACTED, _URL.sub(clean, text))


def scrub_text(text: str, secrets: Iterable[str] = ()) -> str:
    """One message as a caller may read it."""
    if len(text) > _MAX_TEXT:
        text = f"{text[:_MAX_TEXT]} <{len(text) - _MAX_TEXT} more characters>"
    text = strip_url_secrets(text)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    # Paths before job folders: a path's file name stays, its folders (including the job's) go.
    text = _ABS_PATH.sub(lambda m: m.group(1) or "<path>", text)
    text = _WINDOWS_PATH.sub(lambda m: m.group(1) or "<path>", text)
    return _JOB_FOLDER.sub("", text)


def for_caller(value: Any, secrets: Iterable[str] | None = None) -> Any:
    """A JSON-like value with every string scrubbed; list items naming a job folder (ComfyUI's list of the
    files a combo accepts includes every job's staged inputs) are dropped rather than renamed."""
    found = secret_values() if secrets is None else list(secrets)
    return _walk(value, found)


def _walk(value: Any, secrets: list[str]) -> Any:
    if isinstance(value, str):
        return scrub_text(value, secrets)
    if isinstance(value, Mapping):
        return {key: _walk(item, secrets) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_walk(item, secrets) for item in value
                if not (isinstance(item, str) and (item == JOBS_SUBFOLDER or _JOB_FOLDER.search(item)))]
    return value
