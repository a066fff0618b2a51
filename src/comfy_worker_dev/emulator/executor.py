"""The prompt queue, the single execution thread, the output cache and the history.

Mirrors ComfyUI's PromptQueue / PromptExecutor: one prompt at a time from a priority heap, events in the
same order with the same payloads, cached nodes skipped and their UI replayed.
"""

from __future__ import annotations

import copy
import hashlib
import heapq
import logging
import os
import sys
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .catalogue import Catalogue
from .faults import Faults
from .media import preview_jpeg
from .nodes import IMPLEMENTATIONS, InterruptProcessing, NodeContext, OutOfMemoryError, pass_through
from .validation import full_type_name

log = logging.getLogger(__name__)

Send = Callable[[str, dict[str, Any], "str | None"], None]
SendPreview = Callable[[bytes, dict[str, Any], "str | None"], None]
PREVIEW_METHODS = {"auto", "latent2rgb", "taesd"}
OOM_TIP = ("This error means you ran out of memory on your GPU.\n\nTIPS: If the workflow worked before you "
           "might have accidentally set the batch_size to a large number.")
MAX_HISTORY = 10000
MAX_CACHE = 512


@dataclass
class CacheEntry:
    ui: dict[str, Any] | None
    outputs: tuple[Any, ...]


def is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) \
        and isinstance(value[1], int)


def _hashable(value: Any) -> Any:
    if isinstance(value, dict):
        return ("__dict__", tuple(sorted((k, _hashable(v)) for k, v in value.items())))
    if isinstance(value, list):
        return ("__list__", tuple(_hashable(v) for v in value))
    return value


def _format_value(x: Any) -> Any:
    if x is None or isinstance(x, (int, float, bool, str)):
        return x
    return str(x)


class Executor:
    def __init__(self, catalogue: Catalogue, send: Send, faults: Callable[[], Faults],
                 disable_metadata: bool = False, cache_enabled: bool = True,
                 send_preview: SendPreview | None = None, preview_method: str = "none") -> None:
        self.catalogue = catalogue
        self.send = send
        self.send_preview = send_preview or (lambda image, meta, sid: None)
        self.preview_method = preview_method  # --preview-method
        self.faults = faults
        self.disable_metadata = disable_metadata
        self.cache_enabled = cache_enabled
        self.mutex = threading.RLock()
        self.not_empty = threading.Condition(self.mutex)
        self.queue: list[tuple[Any, ...]] = []
        self.running: dict[int, tuple[Any, ...]] = {}
        self.history: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.task_counter = 0
        self.number = 0
        self.cache: OrderedDict[Any, CacheEntry] = OrderedDict()
        self.interrupt_flag = threading.Event()
        self.hang_release = threading.Event()
        self.free_pending = False
        self.free_calls: list[dict[str, bool]] = []  # every POST /free, for tests to read back
        self.client_id: str | None = None
        self.last_node_id: str | None = None
        self._thread = threading.Thread(target=self._worker, name="prompt_worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def previews_on(self, extra_data: dict[str, Any]) -> bool:
        """ComfyUI's set_preview_method: the prompt's `extra_data.preview_method` when it names a method,
        else the server's --preview-method."""
        method = extra_data.get("preview_method")
        if method in PREVIEW_METHODS or method == "none":
            return method != "none"
        return self.preview_method in PREVIEW_METHODS

    # --- queue -------------------------------------------------------------------------------------
    def queue_remaining(self) -> int:
        with self.mutex:
            return len(self.queue) + len(self.running)

    def queue_updated(self) -> None:
        self.send("status", {"status": {"exec_info": {"queue_remaining": self.queue_remaining()}}}, None)

    def put(self, item: tuple[Any, ...]) -> None:
        with self.mutex:
            heapq.heappush(self.queue, item)
            self.queue_updated()
            self.not_empty.notify()

    def current_queue(self) -> tuple[list[list[Any]], list[list[Any]]]:
        with self.mutex:
            return ([list(x[:5]) for x in self.running.values()], [list(x[:5]) for x in self.queue])

    def wipe_queue(self) -> None:
        with self.mutex:
            self.queue = []
            self.queue_updated()

    def delete_queue_item(self, prompt_id: str) -> None:
        with self.mutex:
            for i, item in enumerate(self.queue):
                if item[1] == prompt_id:
                    if len(self.queue) == 1:
                        self.wipe_queue()
                    else:
                        self.queue.pop(i)
                        heapq.heapify(self.queue)
                    self.queue_updated()
                    return

    def interrupt(self, prompt_id: str | None = None) -> None:
        with self.mutex:
            if prompt_id:
                if any(item[1] == prompt_id for item in self.running.values()):
                    self.interrupt_flag.set()
                else:
                    log.info("Prompt %s is not currently running, skipping interrupt", prompt_id)
            else:
                self.interrupt_flag.set()

    def free(self, unload_models: bool, free_memory: bool) -> None:
        self.free_calls.append({"unload_models": unload_models, "free_memory": free_memory})
        if not free_memory:
            return
        with self.mutex:
            if self.running:
                self.free_pending = True
            else:
                self.cache.clear()

    def reset(self) -> None:
        with self.mutex:
            self.free_calls = []
            self.queue = []
            self.history.clear()
            self.cache.clear()
            self.hang_release.set()
            self.queue_updated()

    # --- history -----------------------------------------------------------------------------------
    def get_history(self, prompt_id: str | None = None, max_items: int | None = None, offset: int = -1
                    ) -> dict[str, Any]:
        with self.mutex:
            if prompt_id is not None:
                entry = self.history.get(prompt_id)
                return {prompt_id: copy.deepcopy(entry)} if entry is not None else {}
            if offset < 0 and max_items is not None:
                offset = len(self.history) - max_items
            out: dict[str, Any] = {}
            for i, key in enumerate(self.history):
                if i >= offset:
                    out[key] = copy.deepcopy(self.history[key])
                    if max_items is not None and len(out) >= max_items:
                        break
            return out

    def delete_history(self, prompt_id: str | None = None) -> None:
        with self.mutex:
            if prompt_id is None:
                self.history.clear()
            else:
                self.history.pop(prompt_id, None)

    # --- worker ------------------------------------------------------------------------------------
    def _worker(self) -> None:
        while True:
            with self.not_empty:
                while not self.queue:
                    self.not_empty.wait()
                item = heapq.heappop(self.queue)
                item_id = self.task_counter
                self.running[item_id] = copy.deepcopy(item)
                self.task_counter += 1
                self.queue_updated()
            started = time.perf_counter()
            prompt_id = item[1]
            extra_data = {**item[3], **item[5]}
            try:
                result, success, messages = self._execute(item[2], prompt_id, extra_data, item[4])
            except Exception:
                log.exception("internal emulator failure")
                result, success, messages = {"outputs": {}, "meta": {}}, False, []
            with self.mutex:
                stored = self.running.pop(item_id)
                if len(self.history) > MAX_HISTORY:
                    self.history.popitem(last=False)
                entry: dict[str, Any] = {
                    "prompt": list(stored[:5]),
                    "outputs": {},
                    "status": {"status_str": "success" if success else "error", "completed": success,
                               "messages": messages},
                }
                entry.update(result)
                self.history[prompt_id] = entry
                self.queue_updated()
                if self.free_pending:
                    self.cache.clear()
                    self.free_pending = False
            if self.client_id is not None and not self.faults().drop_final_message:
                self.send("executing", {"node": None, "prompt_id": prompt_id}, self.client_id)
            log.info("Prompt executed in %.2f seconds", time.perf_counter() - started)

    def _add_message(self, messages: list[Any], event: str, data: dict[str, Any], broadcast: bool) -> None:
        data = {**data, "timestamp": int(time.time() * 1000)}
        messages.append([event, data])
        if event == "execution_success" and self.faults().drop_final_message:
            return
        if self.client_id is not None or broadcast:
            self.send(event, data, self.client_id)

    def _signatures(self, prompt: dict[str, Any]) -> dict[str, Any]:
        is_changed: dict[str, Any] = {}
        for node_id, node in prompt.items():
            if node["class_type"] in ("LoadImage", "LoadImageMask"):
                is_changed[node_id] = self._file_hash(node["inputs"].get("image"))
            else:
                is_changed[node_id] = False

        def immediate(node_id: str, order: dict[str, int]) -> list[Any]:
            if node_id not in prompt:
                return [object()]
            node = prompt[node_id]
            sig: list[Any] = [node["class_type"], is_changed[node_id]]
            for key in sorted(node["inputs"]):
                value = node["inputs"][key]
                if is_link(value):
                    sig.append((key, ("ANCESTOR", order[value[0]], value[1])))
                else:
                    sig.append((key, _hashable(value)))
            return sig

        def ancestry(node_id: str, ancestors: list[str], order: dict[str, int]) -> None:
            if node_id not in prompt:
                return
            inputs = prompt[node_id]["inputs"]
            for key in sorted(inputs):
                if is_link(inputs[key]) and inputs[key][0] not in order:
                    ancestors.append(inputs[key][0])
                    order[inputs[key][0]] = len(ancestors) - 1
                    ancestry(inputs[key][0], ancestors, order)

        out: dict[str, Any] = {}
        for node_id in prompt:
            ancestors: list[str] = []
            order: dict[str, int] = {}
            ancestry(node_id, ancestors, order)
            sig = [immediate(node_id, order)] + [immediate(a, order) for a in ancestors]
            out[node_id] = _hashable_sig(sig)
        return out

    def _file_hash(self, name: Any) -> Any:
        path = self.catalogue.folders.annotated_path(str(name)) if isinstance(name, str) else None
        if path is None or not path.is_file():
            return object()  # never equal: not cacheable
        return hashlib.sha256(path.read_bytes()).hexdigest()

    def _cache_get(self, sig: Any) -> CacheEntry | None:
        if not self.cache_enabled:
            return None
        entry = self.cache.get(sig)
        if entry is not None:
            self.cache.move_to_end(sig)
        return entry

    def _cache_set(self, sig: Any, entry: CacheEntry) -> None:
        if not self.cache_enabled:
            return
        self.cache[sig] = entry
        while len(self.cache) > MAX_CACHE:
            self.cache.popitem(last=False)

    def _execute(self, prompt: dict[str, Any], prompt_id: str, extra_data: dict[str, Any],
                 execute_outputs: list[str]) -> tuple[dict[str, Any], bool, list[Any]]:
        self.interrupt_flag.clear()
        self.client_id = extra_data.get("client_id")
        messages: list[Any] = []
        self._add_message(messages, "execution_start", {"prompt_id": prompt_id}, broadcast=False)
        sigs = self._signatures(prompt)
        cached_nodes = [n for n in prompt if self._cache_get(sigs[n]) is not None]
        self._add_message(messages, "execution_cached", {"nodes": cached_nodes, "prompt_id": prompt_id},
                          broadcast=False)
        current_outputs = list(cached_nodes)
        progress = _ProgressState(prompt_id, self)
        run = _Run(self, prompt, prompt_id, extra_data, sigs, progress)
        for node_id in execute_outputs:
            run.add_node(node_id)
        success = True
        while run.pending:
            node_id = run.pick()
            error = run.execute(node_id)
            if error is not None:
                success = False
                ex, details = error
                class_type = prompt[details["node_id"]]["class_type"]
                if isinstance(ex, InterruptProcessing):
                    self._add_message(messages, "execution_interrupted", {
                        "prompt_id": prompt_id, "node_id": details["node_id"], "node_type": class_type,
                        "executed": list(run.executed)}, broadcast=True)
                else:
                    self._add_message(messages, "execution_error", {
                        "prompt_id": prompt_id, "node_id": details["node_id"], "node_type": class_type,
                        "executed": list(run.executed), "exception_message": details["exception_message"],
                        "exception_type": details["exception_type"], "traceback": details["traceback"],
                        "current_inputs": details["current_inputs"],
                        "current_outputs": current_outputs}, broadcast=False)
                break
            run.complete(node_id)
        else:
            self._add_message(messages, "execution_success", {"prompt_id": prompt_id}, broadcast=False)
        self.last_node_id = None
        outputs = {n: ui["output"] for n, ui in run.ui_outputs.items()}
        meta = {n: ui["meta"] for n, ui in run.ui_outputs.items()}
        return {"outputs": outputs, "meta": meta}, success, messages


def _hashable_sig(sig: list[Any]) -> Any:
    return tuple(tuple(x) if isinstance(x, list) else x for x in sig)


class _ProgressState:
    """progress_state messages: every non-pending node of the prompt, as the real registry sends them."""

    def __init__(self, prompt_id: str, ex: Executor) -> None:
        self.prompt_id = prompt_id
        self.ex = ex
        self.nodes: dict[str, dict[str, Any]] = {}

    def _entry(self, node_id: str) -> dict[str, Any]:
        return self.nodes.setdefault(node_id, {"state": "pending", "value": 0, "max": 1})

    def _send(self) -> None:
        nodes = {
            nid: {"value": st["value"], "max": st["max"], "state": st["state"], "node_id": nid,
                  "prompt_id": self.prompt_id, "display_node_id": nid, "parent_node_id": None,
                  "real_node_id": nid}
            for nid, st in self.nodes.items() if st["state"] != "pending"
        }
        self.ex.send("progress_state", {"prompt_id": self.prompt_id, "nodes": nodes}, self.ex.client_id)

    def start(self, node_id: str) -> None:
        self._entry(node_id).update(state="running", value=0.0, max=1.0)
        self._send()

    def update(self, node_id: str, value: int, max_value: int) -> None:
        self._entry(node_id).update(state="running", value=value, max=max_value)
        self._send()

    def finish(self, node_id: str) -> None:
        entry = self._entry(node_id)
        entry.update(state="finished", value=entry["max"])
        self._send()


class _Run:
    """One prompt's execution list: a topological dissolve picking nodes the way ComfyUI does."""

    def __init__(self, ex: Executor, prompt: dict[str, Any], prompt_id: str, extra_data: dict[str, Any],
                 sigs: dict[str, Any], progress: _ProgressState) -> None:
        self.ex = ex
        self.prompt = prompt
        self.prompt_id = prompt_id
        self.extra_data = extra_data
        self.sigs = sigs
        self.progress = progress
        self.pending: dict[str, bool] = {}
        self.block_count: dict[str, int] = {}
        self.blocking: dict[str, dict[str, dict[int, bool]]] = {}
        self.values: dict[str, tuple[Any, ...]] = {}
        self.ui_outputs: dict[str, dict[str, Any]] = {}
        self.executed: set[str] = set()

    def is_cached(self, node_id: str) -> bool:
        return node_id in self.values or self.ex._cache_get(self.sigs.get(node_id)) is not None

    def add_node(self, start: str) -> None:
        stack = [start]
        links: list[tuple[str, int, str]] = []
        while stack:
            node_id = stack.pop()
            if node_id in self.pending:
                continue
            self.pending[node_id] = True
            self.block_count[node_id] = 0
            self.blocking[node_id] = {}
            inputs = self.prompt[node_id]["inputs"]
            for name in inputs:
                value = inputs[name]
                if is_link(value):
                    if not self.is_cached(value[0]):
                        stack.append(value[0])
                    links.append((value[0], value[1], node_id))
        for src, slot, dst in links:
            if not self.is_cached(src):
                self.add_node(src)
                if dst not in self.blocking[src]:
                    self.blocking[src][dst] = {}
                    self.block_count[dst] += 1
                self.blocking[src][dst][slot] = True

    def _is_output(self, node_id: str) -> bool:
        return self.ex.catalogue.is_output_node(self.prompt[node_id]["class_type"])

    def pick(self) -> str:
        ready = [n for n in self.pending if self.block_count[n] == 0]
        for n in ready:
            if self._is_output(n):
                return n
        for n in ready:
            if any(self._is_output(b) for b in self.blocking[n]):
                return n
        for n in ready:
            if any(self._is_output(b2) for b in self.blocking[n] for b2 in self.blocking.get(b, {})):
                return n
        return ready[0]

    def complete(self, node_id: str) -> None:
        del self.pending[node_id]
        for blocked in self.blocking[node_id]:
            self.block_count[blocked] -= 1
        del self.blocking[node_id]

    def _value_of(self, link: list[Any]) -> Any:
        src, slot = link
        outputs = self.values.get(src)
        if outputs is None:
            entry = self.ex._cache_get(self.sigs[src])
            outputs = entry.outputs if entry is not None else ()
        return outputs[slot] if slot < len(outputs) else None

    def _check_interrupt(self) -> None:
        if self.ex.interrupt_flag.is_set():
            self.ex.interrupt_flag.clear()
            raise InterruptProcessing("Processing interrupted")

    def execute(self, node_id: str) -> tuple[BaseException, dict[str, Any]] | None:
        node = self.prompt[node_id]
        class_type = node["class_type"]
        ex = self.ex
        cached = ex._cache_get(self.sigs[node_id])
        if cached is not None:
            if cached.ui is not None:
                self.ui_outputs[node_id] = cached.ui
            if ex.client_id is not None:
                ex.send("executed", {"node": node_id, "display_node": node_id,
                                     "output": (cached.ui or {}).get("output"), "prompt_id": self.prompt_id},
                        ex.client_id)
            self.progress.finish(node_id)
            self.values[node_id] = cached.outputs
            return None

        self.progress.start(node_id)
        inputs = {k: (self._value_of(v) if is_link(v) else v) for k, v in node["inputs"].items()}
        if ex.client_id is not None:
            ex.last_node_id = node_id
            ex.send("executing", {"node": node_id, "display_node": node_id, "prompt_id": self.prompt_id},
                    ex.client_id)
        declared = ex.catalogue.input_defs(class_type)
        call_inputs = {k: v for k, v in inputs.items() if k in declared["required"] or k in declared["optional"]}
        try:
            self._apply_faults(node_id, class_type)
            self._check_interrupt()
            ctx = NodeContext(node_id=node_id, class_type=class_type, prompt_id=self.prompt_id,
                              prompt=self.prompt, extra_data=self.extra_data, folders=ex.catalogue.folders,
                              catalogue=ex.catalogue, disable_metadata=ex.disable_metadata,
                              step=lambda v, m: self._step(node_id, v, m), faults=ex.faults())
            impl = IMPLEMENTATIONS.get(class_type)
            if impl is not None:
                outputs = impl(ctx, **call_inputs)
            else:
                outputs = pass_through(ctx, call_inputs)
        except InterruptProcessing as iex:
            log.info("Processing interrupted")
            return iex, {"node_id": node_id}
        except Exception as err:
            log.error("!!! Exception during processing !!! %s", err)
            log.error(traceback.format_exc())
            tips = OOM_TIP if isinstance(err, OutOfMemoryError) else ""
            return err, {
                "node_id": node_id,
                "exception_message": f"{err}\n{tips}",
                "exception_type": full_type_name(type(err)),
                "traceback": traceback.format_tb(sys.exc_info()[2]),
                "current_inputs": {k: [_format_value(v)] for k, v in call_inputs.items()},
            }
        ui = None
        if ctx.ui:
            ui = {"meta": {"node_id": node_id, "display_node": node_id, "parent_node": None,
                           "real_node_id": node_id}, "output": ctx.ui}
            self.ui_outputs[node_id] = ui
            if ex.client_id is not None:
                ex.send("executed", {"node": node_id, "display_node": node_id, "output": ctx.ui,
                                     "prompt_id": self.prompt_id}, ex.client_id)
        self.values[node_id] = outputs
        ex._cache_set(self.sigs[node_id], CacheEntry(ui=ui, outputs=outputs))
        self.progress.finish(node_id)
        self.executed.add(node_id)
        return None

    def _step(self, node_id: str, value: int, max_value: int) -> None:
        delay = self.ex.faults().node_delay
        if delay:
            time.sleep(delay)
        self._check_interrupt()
        self.progress.update(node_id, value, max_value)
        self.ex.send("progress", {"value": value, "max": max_value, "prompt_id": self.prompt_id,
                                  "node": node_id}, self.ex.client_id)
        if self.ex.previews_on(self.extra_data):
            # After each step's progress, as ComfyUI's progress hook sends it: a legacy frame (type 1), or type 4
            # with node and prompt ids to a client that declared `supports_preview_metadata`.
            self.ex.send_preview(preview_jpeg(value, max_value), {
                "node_id": node_id, "prompt_id": self.prompt_id, "display_node_id": node_id,
                "parent_node_id": None, "real_node_id": node_id}, self.ex.client_id)

    def _apply_faults(self, node_id: str, class_type: str) -> None:
        faults = self.ex.faults()
        if faults.node_delay:
            time.sleep(faults.node_delay)
        delay = faults.delay_on_node.get(node_id, faults.delay_on_node.get(class_type, 0.0))
        deadline = time.monotonic() + delay
        # A slow node that an interrupt stops, as ComfyUI's samplers do; taking the delay away ends it too.
        while time.monotonic() < deadline and not self.ex.interrupt_flag.is_set():
            if not ({node_id, class_type} & set(self.ex.faults().delay_on_node)):
                break
            self.ex.interrupt_flag.wait(min(0.05, deadline - time.monotonic()))
        if Faults.matches(faults.crash_on_node, node_id, class_type):
            log.critical("Emulated crash at node %s (%s)", node_id, class_type)
            logging.shutdown()
            os._exit(1)
        if Faults.matches(faults.hang_on_node, node_id, class_type):
            log.warning("Emulated hang at node %s (%s)", node_id, class_type)
            self.ex.hang_release.clear()
            while Faults.matches(self.ex.faults().hang_on_node, node_id, class_type) \
                    and not self.ex.hang_release.wait(0.05):
                pass
        freed = any(call["unload_models"] or call["free_memory"] for call in self.ex.free_calls)
        if Faults.matches(faults.oom_on_node, node_id, class_type) and not (faults.oom_until_free and freed):
            raise OutOfMemoryError("Allocation on device 0 would exceed allowed memory. (out of memory)")
        if Faults.matches(faults.error_on_node, node_id, class_type):
            raise RuntimeError(f"Emulated failure in node {node_id} ({class_type})")
