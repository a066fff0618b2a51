"""A RunPod serverless worker that serves ComfyUI workflows as an API."""

__version__ = "0.1.0"
