"""The schema of ``models.yaml``: which model files the worker needs, where they come from, and when.

```yaml
models:
  - url: https://huggingface.co/<org>/<repo>/resolve/<revision>/<file>.safetensors
    folder: checkpoints        # ComfyUI model folder key (GET /models lists them)
    filename: sd15.safetensors # path inside that folder; "/" makes sub-folders
    sha256: <64 hex digits>    # checked after every download
    size: 2132625894           # optional, bytes; checked before hashing
    token_env: HF_TOKEN        # optional: environment variable holding a token for the URL's host
    fetch: build               # build (baked into the image) | start (worker start) | on_demand
```

An empty file, ``models: []`` or ``models:`` with nothing under it are all a valid, empty manifest.
"""

from __future__ import annotations

import re
from enum import Enum
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

# ComfyUI accepts these legacy names wherever it maps folder names (``folder_paths.map_legacy``).
LEGACY_FOLDER_ALIASES: dict[str, str] = {"unet": "diffusion_models", "clip": "text_encoders"}

_FOLDER_KEY = re.compile(r"^[a-z0-9_]{1,64}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class FetchWhen(str, Enum):
    """When a model file is fetched."""

    BUILD = "build"          # during `docker build`; baked into the image
    START = "start"          # when the worker starts, before it takes jobs
    ON_DEMAND = "on_demand"  # when a job's workflow names it and it is missing


class ManifestError(ValueError):
    """models.yaml cannot be used; the message names the entry and field."""


class ModelEntry(BaseModel):
    """One model file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(description="http(s) URL of the file. Redirects are followed.")
    folder: str = Field(description="ComfyUI model folder key, for example `checkpoints`, `loras`, `vae`.")
    filename: str = Field(description="Path of the file inside the folder; `/` separates sub-folders.")
    sha256: str = Field(description="SHA-256 of the file, 64 hex digits.")
    size: int | None = Field(default=None, ge=0, description="Size in bytes (optional).")
    token_env: str | None = Field(default=None, description="Environment variable holding a bearer token "
                                  "sent only to the URL's own host (for example `HF_TOKEN`, `CIVITAI_TOKEN`).")
    fetch: FetchWhen = Field(default=FetchWhen.BUILD, description="When the file is fetched.")
    name: str | None = Field(default=None, description="Label used in logs and errors. Default: "
                             "`<folder>/<filename>`.")

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        return value

    @field_validator("folder")
    @classmethod
    def _folder_key(cls, value: str) -> str:
        value = LEGACY_FOLDER_ALIASES.get(value, value)
        if not _FOLDER_KEY.match(value):
            raise ValueError("must be a ComfyUI model folder key such as `checkpoints` (lower case, digits, `_`)")
        return value

    @field_validator("filename")
    @classmethod
    def _relative_path(cls, value: str) -> str:
        if "\\" in value or not value.strip():
            raise ValueError("must be a non-empty path with `/` separators")
        path = PurePosixPath(value)
        if path.is_absolute() or any(part in {"", ".", ".."} for part in value.split("/")):
            raise ValueError("must stay inside the model folder (no absolute path, `.` or `..`)")
        if any(part.startswith(".") for part in path.parts):
            raise ValueError("must not name hidden files or folders")
        return value

    @field_validator("sha256", mode="before")
    @classmethod
    def _quoted_digest(cls, value: Any) -> Any:
        # An all-digit digest is a YAML integer; it would lose leading zeros if converted back.
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            raise ValueError("YAML read this digest as a number; put it in quotes")
        return value

    @field_validator("sha256")
    @classmethod
    def _hex_digest(cls, value: str) -> str:
        value = value.strip().lower()
        if not _SHA256.match(value):
            raise ValueError("must be 64 hexadecimal digits")
        return value

    @field_validator("token_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME.match(value):
            raise ValueError("must be an environment variable name such as HF_TOKEN")
        return value

    @property
    def label(self) -> str:
        return self.name or f"{self.folder}/{self.filename}"

    @property
    def host(self) -> str:
        return (urlsplit(self.url).hostname or "").lower()

    def path_under(self, models_root: Path) -> Path:
        """Where this file lives below a models root (`<root>/<folder>/<filename>`)."""
        return models_root / self.folder / Path(*PurePosixPath(self.filename).parts)


class Manifest(BaseModel):
    """The whole models.yaml."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    models: list[ModelEntry] = Field(default_factory=list)

    @field_validator("models", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return [] if value is None else value

    @model_validator(mode="after")
    def _unique_targets(self) -> Manifest:
        seen: dict[tuple[str, str], int] = {}
        for index, entry in enumerate(self.models):
            key = (entry.folder, entry.filename)
            if key in seen:
                raise ValueError(f"models[{index}] ({entry.label}) has the same folder and filename as "
                                 f"models[{seen[key]}]")
            seen[key] = index
        return self

    def select(self, *when: FetchWhen) -> list[ModelEntry]:
        """Entries fetched at any of the given moments (all entries when none is given)."""
        return [entry for entry in self.models if not when or entry.fetch in when]

    def lookup(self, folder: str, filename: str) -> ModelEntry | None:
        """The entry for a model value a workflow names (ComfyUI's `/`-separated relative path)."""
        folder = LEGACY_FOLDER_ALIASES.get(folder, folder)
        filename = filename.replace("\\", "/")
        for entry in self.models:
            if entry.folder == folder and entry.filename == filename:
                return entry
        return None


def parse_manifest(data: Any, source: str = "models.yaml") -> Manifest:
    """Validate already-parsed YAML/JSON data; errors name the entry and the field."""
    if data is None:
        return Manifest()
    if isinstance(data, list):
        data = {"models": data}
    if not isinstance(data, dict):
        raise ManifestError(f"{source}: the top level must be a mapping with a `models` list")
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        raise ManifestError(f"{source}: " + "; ".join(_describe(err, data) for err in exc.errors())) from None


def load_manifest(path: Path, *, missing_ok: bool = False) -> Manifest:
    """Read and validate a models.yaml file."""
    if not path.is_file():
        if missing_ok:
            return Manifest()
        raise ManifestError(f"{path}: no such manifest file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ManifestError(f"{path}: not valid YAML: {exc}") from None
    return parse_manifest(data, str(path))


def _describe(err: Any, data: dict[str, Any]) -> str:
    loc = list(err["loc"])
    where = ".".join(str(part) for part in loc) or "(top level)"
    if len(loc) >= 2 and loc[0] == "models" and isinstance(loc[1], int):
        where = f"models[{loc[1]}]" + "".join(f".{part}" for part in loc[2:])
        entries = data.get("models") or []
        entry = entries[loc[1]] if loc[1] < len(entries) else None
        if isinstance(entry, dict) and entry.get("filename"):
            where += f" ({entry.get('folder', '?')}/{entry['filename']})"
    message = str(err["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}"
