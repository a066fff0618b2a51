"""Faults the emulator can be told to inject, as one small typed model.

Set at boot from the `COMFY_EMULATOR_FAULTS` environment variable (JSON) so start-up faults work, and at
run time through `POST /__emulator__/faults`.
"""

from __future__ import annotations

import json
import os

from pydantic import BaseModel, ConfigDict, Field

FAULTS_ENV = "COMFY_EMULATOR_FAULTS"


class Faults(BaseModel):
    """Every field defaults to "no fault"."""

    model_config = ConfigDict(extra="forbid")

    node_delay: float = Field(0.0, ge=0, description="Seconds slept per node and per sampler step.")
    crash_on_node: str | None = Field(None, description="class_type or node id: the process exits (code 1) "
                                                        "when that node starts.")
    hang_on_node: str | None = Field(None, description="class_type or node id: execution stalls when that "
                                                       "node starts; HTTP keeps answering.")
    oom_on_node: str | None = Field(None, description="class_type or node id: fails with "
                                                      "torch.OutOfMemoryError and ComfyUI's OOM tip.")
    oom_until_free: bool = Field(False, description="With oom_on_node: the node runs out of memory only until "
                                                    "POST /free has unloaded models or freed memory.")
    error_on_node: str | None = Field(None, description="class_type or node id: fails with a RuntimeError.")
    delay_on_node: dict[str, float] = Field(default_factory=dict, description="class_type or node id -> seconds "
                                            "that node takes before it runs (an interrupt ends the wait).")
    drop_ws_after: int | None = Field(None, ge=0, description="Close every websocket after N more frames.")
    drop_final_message: bool = Field(False, description="Never send execution_success nor the final "
                                                        "executing{node:null}; history is still written.")
    start_delay: float = Field(0.0, ge=0, description="Seconds before the HTTP server answers (boot only).")
    exit_at_start: int | None = Field(None, description="Exit with this code before serving (boot only).")
    fail_upload: bool = Field(False, description="POST /upload/image answers 500.")
    video_bytes: int | None = Field(None, ge=0, description="SaveVideo writes files of this size (random, "
                                                            "incompressible media data): large outputs on demand.")

    @staticmethod
    def matches(target: str | None, node_id: str, class_type: str) -> bool:
        return target is not None and target in (node_id, class_type)


def faults_from_env() -> Faults:
    raw = os.environ.get(FAULTS_ENV, "").strip()
    if not raw:
        return Faults()
    return Faults.model_validate(json.loads(raw))
