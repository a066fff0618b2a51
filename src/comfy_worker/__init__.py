"""A RunPod serverless worker that serves ComfyUI workflows as an API."""

# The version of the worker's API (what a request and a result may contain), semantic: see CHANGELOG.md. The
# one place it is written: pyproject.toml reads it from here, every result and the start-up log line carry
# it, and a release tag must equal it.
__version__ = "1.0.0"
