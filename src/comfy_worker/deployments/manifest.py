"""The manifest of a deployed workflow: its parameters (name, type, the node inputs each one sets, default,
limits or choices, description), and the JSON Schema of a request's `params` generated from it.

A manifest is YAML (`<id>.yaml` beside the workflow `<id>.json`)::

    description: Invert an image and scale it.
    params:
      width:
        type: integer          # string, integer, number, boolean, image, video, audio, mask
        sets: Upscale Image.width      # "<node id or title>.<input>", or a list of them
        default: 128
        minimum: 16
        maximum: 2048
        description: Width of the result, in pixels.

The JSON Schema depends on the manifest alone (no ComfyUI catalogue), so it is the same on every worker that
deploys the same files.
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..workflow.overrides import looks_like_media

ParamType = Literal["string", "integer", "number", "boolean", "image", "video", "audio", "mask"]
MEDIA_TYPES = frozenset({"image", "video", "audio", "mask"})
NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
# What a media parameter's value may be: the forms `images` and media in `inputs` take.
MEDIA_FORMS = "base64, a data URI (`data:image/png;base64,...`), an `https://` URL or an `s3://bucket/key`"
_CONTENT = {"image": "image/*", "mask": "image/*", "video": "video/*", "audio": "audio/*"}


class Param(BaseModel):
    """One parameter of a deployed workflow."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: ParamType = Field(description="`string`, `integer`, `number`, `boolean`, or a media kind (`image`, "
                            "`video`, `audio`, `mask`: staged like `images`).")
    sets: list[str] = Field(min_length=1, description="The node input(s) it sets: `<node id>.<input>` or "
                            "`<node title>.<input>`, as in `inputs`; a list sets each to the same value.")
    description: str = Field("", description="What it does, for the people who build forms from the schema.")
    default: Any = Field(None, description="Value used when a request leaves it out. Unset: the graph's own "
                         "value stays.")
    required: bool = Field(False, description="A request must give it (then it has no default).")
    minimum: int | float | None = Field(None, description="Smallest value (integer, number).")
    maximum: int | float | None = Field(None, description="Largest value (integer, number).")
    choices: list[str | int | float] | None = Field(None, min_length=1, description="The only values allowed "
                                                    "(string, integer, number).")
    min_length: int | None = Field(None, ge=0, description="Shortest text (string).")
    max_length: int | None = Field(None, ge=1, description="Longest text (string).")

    @field_validator("sets", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _consistent(self) -> Param:
        numeric = self.type in {"integer", "number"}
        if not numeric and (self.minimum is not None or self.maximum is not None):
            raise ValueError(f"minimum and maximum apply to integer and number parameters, not {self.type}")
        if self.type != "string" and (self.min_length is not None or self.max_length is not None):
            raise ValueError(f"min_length and max_length apply to string parameters, not {self.type}")
        if self.choices is not None and self.type not in {"string", "integer", "number"}:
            raise ValueError(f"choices apply to string, integer and number parameters, not {self.type}")
        if self.minimum is not None and self.maximum is not None and self.minimum > self.maximum:
            raise ValueError(f"minimum {self.minimum:g} is above maximum {self.maximum:g}")
        for choice in self.choices or []:
            _, problem = check_value(self, choice, limits=False)
            if problem:
                raise ValueError(f"choice {choice!r} {problem}")
        if self.required and self.default is not None:
            raise ValueError("a required parameter takes no default")
        if self.default is not None:
            _, problem = check_value(self, self.default)
            if problem:
                raise ValueError(f"default {_short(self.default)} {problem}")
        return self


class Manifest(BaseModel):
    """The file beside a deployed workflow that makes it callable by name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = Field("", description="What the workflow does.")
    workflow: str | None = Field(None, description="The workflow file beside the manifest. Default: `<id>.json`.",
                                 pattern=r"^[^/\\]+\.json$")
    params: dict[str, Param] = Field(default_factory=dict)

    @field_validator("params")
    @classmethod
    def _names(cls, params: dict[str, Param]) -> dict[str, Param]:
        for name in params:
            if not re.match(NAME_PATTERN, name):
                raise ValueError(f"parameter name {name!r}: letters, digits and '_', not starting with a digit")
        return params


def json_type(value: Any) -> str:
    """The JSON name of a value's type, as a caller would call it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_value(param: Param, value: Any, *, limits: bool = True,
                max_text: int | None = None) -> tuple[Any, str | None]:
    """(the value the graph gets, None), or (None, what is wrong with it) in words a caller can act on."""
    kind = param.type
    if kind == "boolean":
        return (value, None) if isinstance(value, bool) else (None, f"must be true or false, got {json_type(value)}")
    if kind == "integer":
        if isinstance(value, float) and not isinstance(value, bool) and math.isfinite(value) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            return None, f"must be an integer, got {json_type(value)}"
    elif kind == "number":
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            return None, f"must be a number, got {json_type(value)}"
        value = float(value)
    elif not isinstance(value, str):
        return None, f"must be {'a string' if kind == 'string' else MEDIA_FORMS}, got {json_type(value)}"
    elif kind in MEDIA_TYPES and not looks_like_media(value):
        return None, f"must be {kind} data: {MEDIA_FORMS}"
    return (value, _limit_problem(param, value, max_text) if limits else None)


def _limit_problem(param: Param, value: Any, max_text: int | None) -> str | None:
    if param.choices is not None and value not in param.choices:
        return f"must be one of {', '.join(repr(c) for c in param.choices)}; got {_short(value)}"
    if param.minimum is not None and value < param.minimum:
        return f"must be at least {param.minimum:g}, got {value:g}"
    if param.maximum is not None and value > param.maximum:
        return f"must be at most {param.maximum:g}, got {value:g}"
    if param.type == "string":
        longest = [n for n in (param.max_length, max_text) if n is not None]
        if longest and len(value) > min(longest):
            return f"must be at most {min(longest)} characters, got {len(value)}"
        if param.min_length is not None and len(value) < param.min_length:
            return f"must be at least {param.min_length} characters, got {len(value)}"
    return None


def param_schema(param: Param) -> dict[str, Any]:
    """The JSON Schema of one parameter's value."""
    schema: dict[str, Any] = {}
    if param.type in MEDIA_TYPES:
        schema = {"type": "string", "contentMediaType": _CONTENT[param.type], "x-media": param.type}
    else:
        schema = {"type": param.type}
    if param.description:
        schema["description"] = param.description
    for key, value in (("enum", param.choices), ("minimum", param.minimum), ("maximum", param.maximum),
                       ("minLength", param.min_length), ("maxLength", param.max_length)):
        if value is not None:
            schema[key] = int(value) if param.type == "integer" and isinstance(value, float) else value
    if param.default is not None:
        schema["default"] = float(param.default) if param.type == "number" else param.default
    return schema


def params_schema(workflow_id: str, manifest: Manifest, version: str) -> dict[str, Any]:
    """The JSON Schema a request's `params` must match (draft 2020-12): one property per parameter, the
    required ones listed, nothing else allowed."""
    schema: dict[str, Any] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": workflow_id,
        "type": "object",
        "properties": {name: param_schema(param) for name, param in manifest.params.items()},
        "required": [name for name, param in manifest.params.items() if param.required],
        "additionalProperties": False,
        "x-workflow-version": version,
    }
    if manifest.description:
        schema["description"] = manifest.description
    return schema
