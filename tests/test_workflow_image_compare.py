"""`ImageCompare.compare_view` in UI→API conversion, as ComfyUI's web app does it.

Read in the web app that ComfyUI 0.33.0 serves, ComfyUI_frontend 1.49.6 (the `comfyui-frontend-package`
1.49.6 wheel; its source maps carry the TypeScript sources), and the same code in Comfy-Org/ComfyUI_frontend
at commit 6067deec0c6e96b42dc90f509b21f394344afc08:

- src/renderer/extensions/vueNodes/widgets/composables/useImageCompareWidget.ts: the `imagecompare` widget is
  created with the value `['', '']` and `options.serialize: true` (sent in the prompt), then
  `widget.serialize = false` (kept out of saved workflows). Older versions (e.g. at commit
  d0a2959e0ba4cca251e487e2012ef46f1801f194) did not set `widget.serialize`, so older web apps saved its value.
- src/extensions/core/imageCompare.ts: after a run, `onExecuted` sets the value to
  `{beforeImages: [/view URLs], afterImages: [...]}`.
- src/lib/litegraph/src/LGraphNode.ts: `configure` gives no saved value to a widget whose `serialize` is
  false (it takes no place in `widgets_values`), and `serialize` leaves it out.
- src/utils/executionUtil.ts, `graphToPrompt`: every widget whose `options.serialize` is not false is sent,
  an array value wrapped as `{"__value__": [...]}`.

So a saved workflow never holds the value (an older web app's saved value is not read back), and the prompt
of a loaded workflow carries `"compare_view": {"__value__": ["", ""]}`; only within the browser session of a
run does the web app send the `{beforeImages, afterImages}` object, which no saved workflow can give.
fixtures/workflow/image_compare.json was recorded from that web app (its `about` says how); the recorded
corpus of tests/test_workflow_graph_to_prompt.py has a template with the node
(utility_interpolation_image_upscale, whose saved value is the older `{before, after}`).
"""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path

from comfy_worker.workflow import convert_ui_workflow, preflight
from comfy_worker.workflow import catalogue as cat
from comfy_worker_dev.emulator.catalogue import OBJECT_INFO_PATH

OBJECT_INFO = json.loads(OBJECT_INFO_PATH.read_text())
FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "workflow" / "image_compare.json").read_text())
INITIAL = {"__value__": ["", ""]}


def _convert(ui: dict) -> dict:
    return convert_ui_workflow(copy.deepcopy(ui), OBJECT_INFO, rng=random.Random(0))


def test_a_saved_workflow_converts_to_the_web_apps_prompt() -> None:
    saved = FIXTURE["ui_saved"]
    node = next(n for n in saved["nodes"] if n["type"] == "ImageCompare")
    assert node["widgets_values"] == [] and "beforeImages" not in json.dumps(saved)
    assert _convert(saved) == FIXTURE["api"]
    assert FIXTURE["api"]["3"]["inputs"]["compare_view"] == INITIAL


def test_a_value_an_older_web_app_saved_is_not_sent() -> None:
    older = FIXTURE["ui_older"]
    node = next(n for n in older["nodes"] if n["type"] == "ImageCompare")
    assert set(node["widgets_values"][0]) == {"beforeImages", "afterImages"}
    assert _convert(older) == FIXTURE["api"]
    # The shape the web app saved before it had beforeImages/afterImages, as in the templates.
    node["widgets_values"] = [{"before": "/api/view?filename=a.png", "after": "/api/view?filename=b.png"}]
    assert _convert(older) == FIXTURE["api"]


def test_the_widget_takes_no_place_among_saved_values() -> None:
    """A node with an imagecompare widget before other widgets: theirs are read from the first place on,
    as LGraphNode.configure does."""
    info = {"input": {"required": {"compare_view": ["IMAGECOMPARE", {"socketless": True}],
                                   "strength": ["FLOAT", {"default": 1.0}]}},
            "input_order": {"required": ["compare_view", "strength"]}}
    values, slots = cat.widget_values(info, [0.25])
    assert values == {"compare_view": ["", ""], "strength": 0.25}
    assert [s.name for s in slots] == ["strength"]
    values, _ = cat.widget_values(info, [])
    assert values["compare_view"] == ["", ""] and values["compare_view"] is not cat.UNSAVED_WIDGETS["IMAGECOMPARE"]


def test_the_prompt_passes_the_pre_flight() -> None:
    report = preflight(_convert(FIXTURE["ui_saved"]), OBJECT_INFO, input_files=["example.png"])
    assert report.ok, report.node_errors


def test_what_the_web_app_sends_after_a_run_is_another_value() -> None:
    """Recorded for the record: within the session of a run the web app sends the URLs it shows, which the
    saved workflow does not keep; the worker converts saved workflows, so it never sends them."""
    after = FIXTURE["api_in_session_after_a_run"]["3"]["inputs"]["compare_view"]
    assert set(after) == {"beforeImages", "afterImages"}
    assert _convert(FIXTURE["ui_saved"])["3"]["inputs"]["compare_view"] == INITIAL
