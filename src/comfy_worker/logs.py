"""Logging set-up for the worker process: one format, level from settings."""

from __future__ import annotations

import logging
import sys


def configure_logging(level: str = "INFO") -> None:
    root = logging.getLogger()
    if any(getattr(h, "_comfy_worker", False) for h in root.handlers):
        root.setLevel(level)
        return
    # One format for everything: drop handlers other libraries installed on the root logger at import.
    for existing in list(root.handlers):
        root.removeHandler(existing)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler._comfy_worker = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    # Library chatter that would drown the job log.
    for name in ("urllib3", "websocket", "botocore", "boto3", "s3transfer", "googleapiclient"):
        logging.getLogger(name).setLevel(logging.WARNING)
