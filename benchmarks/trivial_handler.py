"""The runpod SDK's local API server with a handler that does nothing but answer: what the server itself costs
per /runsync (HTTP, JSON, the SDK's job bookkeeping), to be taken out of the worker's time. It answers with a
result of the worker's shape and the size the benchmark asks for (TRIVIAL_RESULT_BYTES of base64), so the
JSON it sends back costs what the worker's does."""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from comfy_worker.sdk import import_sdk

import_sdk()  # as the worker imports it: the server's start-up matches the worker's, its requests are the SDK's own
import runpod

_DATA = "A" * int(os.environ.get("TRIVIAL_RESULT_BYTES", "2000"))


def handler(job):  # type: ignore[no-untyped-def]
    return {"prompt_id": job["id"], "outputs": [{"node_id": "3", "kind": "image", "data": _DATA}],
            "images": [{"filename": "x.png", "type": "base64", "data": _DATA}], "timings": {}, "warnings": []}


if __name__ == "__main__":
    runpod.serverless.start({"handler": handler})
