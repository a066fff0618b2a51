"""RunPod's worker-facing job API, emulated, for tests that run the worker as RunPod does.

    RunPodPlatform    server.py: the job API on loopback; records every call (Call)
    to_mermaid        server.py: a recorded call list as a Mermaid sequenceDiagram
"""

from .server import SDK_VERSION, Call, JobRecord, RunPodPlatform, to_mermaid

__all__ = ["SDK_VERSION", "Call", "JobRecord", "RunPodPlatform", "to_mermaid"]
