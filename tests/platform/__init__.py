"""RunPod's worker-facing job API, emulated, and a runner for the worker in production mode against it.

    RunPodPlatform    server.py: the job API on loopback; records every call (Call)
    to_mermaid        server.py: a recorded call list as a Mermaid sequenceDiagram
    WorkerProcess     harness.py: `python -u handler.py` with RunPod's environment, log to a file
"""

from .harness import SDK_CHECKS_OFF, WorkerProcess, fake_nvidia_smi, recording_torch
from .server import SDK_VERSION, Call, JobRecord, RunPodPlatform, to_mermaid

__all__ = ["SDK_CHECKS_OFF", "SDK_VERSION", "Call", "JobRecord", "RunPodPlatform", "WorkerProcess",
           "fake_nvidia_smi", "recording_torch", "to_mermaid"]
