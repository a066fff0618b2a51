"""Development tools, outside the worker: the ComfyUI emulator (the README's stand-in for ComfyUI), the
local API server helper, the generated reference tables and JSON Schemas, and the Mermaid check."""
