"""Reading ComfyUI's node catalogue (``GET /object_info``): input specs, widgets, outputs.

Everything here is a pure function of the catalogue dict, so conversion, overrides and pre-flight share one
reading of it and tests need no server.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Types the web app draws as widgets (a value stored in ``widgets_values``) rather than as sockets.
WIDGET_TYPES = frozenset({
    "INT", "FLOAT", "STRING", "BOOLEAN", "COMBO", "COLOR", "MARKDOWN", "IMAGEUPLOAD", "IMAGECOMPARE",
    "CURVE", "WEBCAM", "LOAD_3D", "LOAD_3D_ANIMATION", "AUDIO_RECORD", "BOUNDING_BOX", "HISTOGRAM",
    "COMFY_DYNAMICCOMBO_V3", "BOUNDING_BOXES", "COLORS",
})
SCALAR_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN"})
DYNAMIC_COMBO = "COMFY_DYNAMICCOMBO_V3"
AUTOGROW = "COMFY_AUTOGROW_V3"
DYNAMIC_SLOT = "COMFY_DYNAMICSLOT_V3"
MATCH_TYPE = "COMFY_MATCHTYPE_V3"
# Upload buttons the web app adds after a file widget; saved in widgets_values, never sent.
UPLOAD_KEYS = ("image_upload", "video_upload", "animated_image_upload", "audio_upload", "file_upload")
# How many companion values each kind saves after the file widget (audio: player + button; 3D files:
# upload, extra resources and clear buttons).
UPLOAD_SLOTS = {"image_upload": 1, "video_upload": 1, "animated_image_upload": 1, "audio_upload": 2,
                "file_upload": 3}
SEED_NAMES = frozenset({"seed", "noise_seed"})
# Widgets the web app keeps out of saved workflows (``widget.serialize = false``) yet sends in the prompt
# (``options.serialize`` stays true): they take no place in ``widgets_values`` and a loaded workflow gives
# them their initial value, whatever an older web app saved there. Type -> that initial value.
UNSAVED_WIDGETS: dict[str, list[Any]] = {"IMAGECOMPARE": ["", ""]}


@dataclass(frozen=True)
class InputSpec:
    """One declared input of a node class, after ComfyUI's expansion of dynamic (V3) inputs."""

    name: str
    type: Any  # a type string, or a list of allowed values (legacy combo)
    options: dict[str, Any]
    required: bool
    raw: list[Any] = field(compare=False, default_factory=list)

    @property
    def is_combo(self) -> bool:
        return isinstance(self.type, list) or self.type == "COMBO"

    @property
    def combo_options(self) -> list[Any] | None:
        if isinstance(self.type, list):
            return self.type
        if self.type == "COMBO":
            opts = self.options.get("options")
            return opts if isinstance(opts, list) else None
        return None

    @property
    def is_widget(self) -> bool:
        if self.options.get("forceInput") or self.options.get("defaultInput"):
            return False
        if self.options.get("widgetType") or "socketless" in self.options:
            return True  # V3 widget inputs say so themselves
        return self.is_combo or (isinstance(self.type, str) and self.type in WIDGET_TYPES)

    @property
    def is_unsaved(self) -> bool:
        """A widget the web app sends but never saves (see UNSAVED_WIDGETS)."""
        return isinstance(self.type, str) and self.type in UNSAVED_WIDGETS

    @property
    def upload_kind(self) -> str | None:
        # Only file combos get the upload button; custom widgets (e.g. a painter) store their own value.
        if not self.is_combo or self.options.get("widgetType"):
            return None
        for key in UPLOAD_KEYS:
            if self.options.get(key):
                return key
        return None


def class_info(object_info: dict[str, Any], class_type: str) -> dict[str, Any] | None:
    info = object_info.get(class_type)
    return info if isinstance(info, dict) else None


def _spec(name: str, raw: Any, required: bool) -> InputSpec:
    if not isinstance(raw, (list, tuple)) or not raw:
        return InputSpec(name, "*", {}, required, [raw])
    options = raw[1] if len(raw) > 1 and isinstance(raw[1], dict) else {}
    return InputSpec(name, raw[0], options, required, list(raw))


def declared_inputs(info: dict[str, Any]) -> list[InputSpec]:
    """The declared inputs in declaration order (``input_order``), required first, hidden never."""
    inputs = info.get("input") or {}
    order = info.get("input_order") or {}
    out: list[InputSpec] = []
    for section in ("required", "optional"):
        specs = inputs.get(section) or {}
        names = order.get(section) or list(specs)
        for name in names:
            if name in specs:
                out.append(_spec(name, specs[name], section == "required"))
    return out


def expand_inputs(info: dict[str, Any], live: dict[str, Any]) -> list[InputSpec]:
    """Inputs as ComfyUI validates them for these live input values: dynamic combos add the inputs of
    the selected option (``combo.sub``), autogrow inputs become ``name.<item>``."""
    out: list[InputSpec] = []
    for spec in declared_inputs(info):
        _expand(spec, live, "", out)
    return out


def _expand(spec: InputSpec, live: dict[str, Any], prefix: str, out: list[InputSpec]) -> None:
    full = prefix + spec.name
    if spec.type == DYNAMIC_COMBO:
        key = live.get(full)
        for option in spec.options.get("options") or []:
            if isinstance(option, dict) and option.get("key") == key:
                out.append(InputSpec(full, spec.type, spec.options, spec.required, spec.raw))
                for sub in _option_specs(option):
                    _expand(sub, live, full + ".", out)
                return
        if spec.required and full not in live:
            out.append(InputSpec(full, spec.type, spec.options, True, spec.raw))
        return
    if spec.type == AUTOGROW:
        template = spec.options.get("template") or {}
        names = template.get("names")
        if names is None and "prefix" in template:
            names = [f"{template['prefix']}{i}" for i in range(int(template.get("max", 0)))]
        minimum = int(template.get("min", 0) or 0)
        tmpl_required = True
        tmpl_raw: Any = None
        for section, entries in (template.get("input") or {}).items():
            if entries:
                tmpl_raw = next(iter(entries.values()))
                tmpl_required = section == "required"
                break
        if tmpl_raw is None:
            return
        for i, item in enumerate(names or []):
            item_spec = _spec(item, tmpl_raw, tmpl_required and i < minimum)
            _expand(item_spec, live, full + ".", out)
        return
    if spec.type == DYNAMIC_SLOT:
        out.append(InputSpec(full, spec.options.get("slotType", "*"), spec.options, spec.required, spec.raw))
        if full in live:
            for section in ("required", "optional"):
                for name, raw in ((spec.options.get("inputs") or {}).get(section) or {}).items():
                    _expand(_spec(name, raw, section == "required"), live, full + ".", out)
        return
    out.append(InputSpec(full, spec.type, spec.options, spec.required, spec.raw))


def _option_specs(option: dict[str, Any]) -> list[InputSpec]:
    inputs = option.get("inputs") or {}
    return [_spec(name, raw, section == "required")
            for section in ("required", "optional") for name, raw in (inputs.get(section) or {}).items()]


def outputs(info: dict[str, Any]) -> list[Any]:
    out = info.get("output")
    return list(out) if isinstance(out, list) else []


def is_output_node(info: dict[str, Any]) -> bool:
    return bool(info.get("output_node"))


def has_seed_control(spec: InputSpec, nested: bool = False) -> bool:
    """Whether the web app adds a control_after_generate widget after this INT/COMBO widget.

    An INT named ``seed``/``noise_seed`` gets one unasked, but not inside a dynamic combo (``nested``):
    the web app tests the prefixed name there (``sampling_mode.seed``).
    """
    cag = spec.options.get("control_after_generate")
    if spec.type == "INT":
        return bool(cag) or (cag is None and not nested and spec.name.rsplit(".", 1)[-1] in SEED_NAMES)
    return spec.is_combo and bool(cag)


def default_value(spec: InputSpec) -> Any:
    """The value the web app gives a widget that the saved workflow has no value for."""
    if spec.is_unsaved:
        return list(UNSAVED_WIDGETS[spec.type])
    if "default" in spec.options:
        return spec.options["default"]
    options = spec.combo_options
    if options is not None:
        return options[0] if options else None
    if spec.type == DYNAMIC_COMBO:
        opts = spec.options.get("options") or []
        return opts[0].get("key") if opts and isinstance(opts[0], dict) else None
    if spec.type in ("INT", "FLOAT"):
        minimum = spec.options.get("min")
        return minimum if isinstance(minimum, (int, float)) and minimum > 0 else 0
    if spec.type == "STRING":
        return ""
    if spec.type == "BOOLEAN":
        return False
    return None


@dataclass
class WidgetSlot:
    """One entry of a node's ``widgets_values``: a value widget, or a companion the server never sees."""

    name: str
    kind: str  # "value" | "control" | "filter" | "upload"
    spec: InputSpec | None = None


def widget_values(info: dict[str, Any], saved: Any,
                  value_of: dict[str, Any] | None = None) -> tuple[dict[str, Any], list[WidgetSlot]]:
    """Map a node's saved ``widgets_values`` onto input names, in the web app's widget order.

    Returns the values of the value widgets, by input name, and the slots walked (for error messages).
    ``value_of`` gives values that win over the saved ones (a PrimitiveNode's value); it also decides
    which option of a dynamic combo is selected.
    """
    values: dict[str, Any] = {}
    slots: list[WidgetSlot] = []
    named = saved if isinstance(saved, dict) else None
    seq = saved if isinstance(saved, list) else []
    pos = 0

    def take(slot: WidgetSlot) -> Any:
        nonlocal pos
        slots.append(slot)
        if named is not None:
            return named.get(slot.name, _MISSING) if slot.kind == "value" else _MISSING
        value = seq[pos] if pos < len(seq) else _MISSING
        pos += 1
        return value

    def walk(spec: InputSpec, prefix: str) -> None:
        name = prefix + spec.name
        if not spec.is_widget:
            return
        value = _MISSING if spec.is_unsaved else take(WidgetSlot(name, "value", spec))
        if value is _MISSING:
            value = default_value(spec)
        if value_of and name in value_of:
            value = value_of[name]
        values[name] = value
        if has_seed_control(spec, nested=bool(prefix)):
            take(WidgetSlot(name, "control"))
            if spec.is_combo:
                take(WidgetSlot(name, "filter"))
        if spec.upload_kind:
            for _ in range(UPLOAD_SLOTS[spec.upload_kind]):
                take(WidgetSlot(name, "upload"))
        if spec.type == DYNAMIC_COMBO:
            for option in spec.options.get("options") or []:
                if isinstance(option, dict) and option.get("key") == value:
                    for sub in _option_specs(option):
                        walk(sub, name + ".")
                    break

    for spec in declared_inputs(info):
        walk(spec, "")
    return values, slots


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING: Any = _Missing()
