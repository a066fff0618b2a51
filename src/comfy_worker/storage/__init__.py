"""Where bytes come from and go to outside the worker and ComfyUI: S3-compatible storage (the target of a
job and the shared clients) and URLs, fetched only where they were checked to lead (`urlsafety`)."""
