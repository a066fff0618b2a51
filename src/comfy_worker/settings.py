"""Every environment variable the worker reads, in one typed object.

Each field names its variable in ``json_schema_extra["env"]``; the README's table of variables is checked
against this class by a test, so the two cannot drift apart.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator


def _env(name: str, description: str, default: Any = None, **kwargs: Any) -> Any:
    return Field(default=default, description=description, json_schema_extra={"env": name}, **kwargs)


class Settings(BaseModel):
    """Operator settings, read once at start-up from the environment."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # --- ComfyUI process -------------------------------------------------------------------------
    comfyui_dir: Path = _env("COMFYUI_DIR", "ComfyUI checkout that the worker starts (its `main.py`).",
                             Path("/comfyui"))
    comfyui_python: str = _env("COMFYUI_PYTHON", "Interpreter that runs ComfyUI. Default: the worker's own.",
                               sys.executable)
    comfyui_url: str | None = _env("COMFYUI_URL", "Attach to an already running ComfyUI at this URL instead "
                                   "of starting one (development). Unset: the worker starts ComfyUI itself.")
    comfyui_host: str = _env("COMFYUI_HOST", "Address the started ComfyUI listens on (loopback only).",
                             "127.0.0.1")
    comfyui_port: int = _env("COMFYUI_PORT", "Port the started ComfyUI listens on.", 8188, ge=1, le=65535)
    comfyui_input_dir: Path | None = _env("COMFYUI_INPUT_DIR", "ComfyUI input folder. Default: "
                                          "`$COMFYUI_DIR/input`.")
    comfyui_output_dir: Path | None = _env("COMFYUI_OUTPUT_DIR", "ComfyUI output folder. Default: "
                                           "`$COMFYUI_DIR/output`.")
    comfyui_temp_dir: Path | None = _env("COMFYUI_TEMP_DIR", "Parent of ComfyUI's temp folder (ComfyUI appends "
                                         "`temp`). Default: `$COMFYUI_DIR`.")
    comfyui_extra_model_paths: Path | None = _env("COMFYUI_EXTRA_MODEL_PATHS", "Extra model paths YAML passed to "
                                                  "ComfyUI (`--extra-model-paths-config`).")
    comfyui_extra_args: str = _env("COMFYUI_EXTRA_ARGS", "More ComfyUI flags, shell-quoted (for example "
                                   "`--cpu` or `--highvram`).", "")
    comfyui_start_timeout: float = _env("COMFYUI_START_TIMEOUT", "Seconds to wait for ComfyUI to answer after "
                                        "it starts.", 300.0, gt=0)
    comfyui_restart: bool = _env("COMFYUI_RESTART", "Restart ComfyUI automatically when it exits.", True)
    comfyui_restart_backoff_max: float = _env("COMFYUI_RESTART_BACKOFF_MAX", "Longest pause, in seconds, "
                                              "between restarts of a ComfyUI that keeps dying.", 30.0, gt=0)
    comfyui_log_lines: int = _env("COMFYUI_LOG_LINES", "Lines of ComfyUI's log kept for error reports.", 200,
                                  ge=10)
    comfyui_user: str | None = _env("COMFYUI_USER", "Unprivileged user (name or uid) ComfyUI and its custom nodes "
                                    "run as; needs a worker running as root (the image sets `comfyui`). Unset: "
                                    "the worker's own user.")
    comfyui_env_passthrough: str = _env("COMFYUI_ENV_PASSTHROUGH", "Comma-separated environment variables ComfyUI "
                                        "may see beyond its allowlist (Python, locale, CUDA/ROCm, torch); a "
                                        "trailing `*` matches a prefix. No secret of the worker's reaches ComfyUI "
                                        "unless named here.", "")

    # --- Talking to ComfyUI ----------------------------------------------------------------------
    http_timeout: float = _env("COMFY_HTTP_TIMEOUT", "Timeout in seconds of each HTTP call to ComfyUI.",
                               30.0, gt=0)
    ws_reconnect_max: float = _env("COMFY_WS_RECONNECT_MAX", "Longest pause, in seconds, between websocket "
                                   "reconnection attempts.", 2.0, gt=0)
    history_poll_interval: float = _env("COMFY_HISTORY_POLL_INTERVAL", "Seconds without any websocket event "
                                        "after which the job checks `/history` itself.", 5.0, gt=0)

    # --- Job input limits ------------------------------------------------------------------------
    max_input_images: int = _env("MAX_INPUT_IMAGES", "Most media files one job stages: `images` entries and media "
                                 "given in `inputs`, over all the items of a batch.", 64, ge=0)
    max_input_image_bytes: int = _env("MAX_INPUT_IMAGE_BYTES", "Largest decoded size of one input image, in "
                                      "bytes.", 50 * 1024 * 1024, ge=1)
    max_input_depth: int = _env("MAX_INPUT_DEPTH", "Deepest nesting of lists and objects accepted in the job "
                                "input.", 64, ge=8)
    max_request_bytes: int = _env("MAX_REQUEST_BYTES", "Largest job input, in bytes of text (media included), "
                                  "accepted at all. RunPod's own limits are 10 MB (/run) and 20 MB (/runsync).",
                                  64 * 1024 * 1024, ge=1024)
    max_workflow_bytes: int = _env("MAX_WORKFLOW_BYTES", "Largest workflow, in bytes of text, accepted (its "
                                   "conversion and checks take time in proportion).", 8 * 1024 * 1024, ge=1024)
    max_text_chars: int = _env("MAX_TEXT_CHARS", "Longest text value (a prompt, a widget) accepted inside a "
                               "workflow.", 256 * 1024, ge=1024)
    max_workflow_nodes: int = _env("MAX_WORKFLOW_NODES", "Most nodes (API format) or UI nodes accepted in one "
                                   "workflow before any processing.", 5000, ge=1)
    max_input_pixels: int = _env("MAX_INPUT_PIXELS", "Largest input image, in pixels (width x height from its "
                                 "header), staged for ComfyUI; `MAX_PIXELS` lowers it when set.", 8192 * 8192, ge=1)
    max_batch_size: int = _env("MAX_BATCH_SIZE", "Most input sets in one batch (`inputs` given as a list).", 16,
                               ge=1)
    max_input_total_bytes: int = _env("MAX_INPUT_TOTAL_BYTES", "Largest decoded size of all input media of "
                                      "one job together, in bytes.", 200 * 1024 * 1024, ge=1)

    # --- Results ---------------------------------------------------------------------------------
    include_temp_outputs: bool = _env("INCLUDE_TEMP_OUTPUTS", "Return temporary outputs (PreviewImage) unless "
                                      "the request says otherwise.", False)
    cleanup: bool = _env("CLEANUP", "Delete each job's staged inputs, outputs and history entry after the job.",
                         True)

    # --- Deadlines, concurrency and worker life ---------------------------------------------------
    job_timeout: float | None = _env("JOB_TIMEOUT", "Default time limit of a job, in seconds, when the request "
                                     "sets no `execution_config.timeout`. Unset: no limit of the worker's own.",
                                     None, gt=0)
    job_timeout_max: float | None = _env("JOB_TIMEOUT_MAX", "Ceiling on `execution_config.timeout`; larger "
                                         "requests are lowered to it (with a warning).", None, gt=0)
    stall_timeout: float = _env("STALL_TIMEOUT", "Seconds a running prompt may go without any event from "
                                "ComfyUI before the job fails with TIMEOUT (0 turns the watchdog off).", 900.0,
                                ge=0)
    interrupt_grace: float = _env("INTERRUPT_GRACE", "Seconds an interrupted prompt gets to stop before ComfyUI "
                                  "is restarted so that the next job does not wait behind it.", 15.0, gt=0)
    max_concurrency: int = _env("MAX_CONCURRENCY", "Jobs this worker takes at once. ComfyUI runs one prompt at "
                                "a time; above 1, input staging and delivery of one job overlap another's "
                                "execution.", 1, ge=1, le=16)
    refresh_worker: bool = _env("REFRESH_WORKER", "Ask RunPod for a fresh worker after every job.", False)
    refresh_worker_after_jobs: int = _env("REFRESH_WORKER_AFTER_JOBS", "Ask RunPod for a fresh worker after this "
                                          "many jobs (0: never).", 0, ge=0)
    start_timeout: float | None = _env("START_TIMEOUT", "Seconds the worker may take to start (ComfyUI boot, "
                                       "`start` model downloads, warm-up) before it gives up and ends without "
                                       "taking a job. Default: RUNPOD_INIT_TIMEOUT minus 20 s when set, else "
                                       "400 s (RunPod marks a worker unhealthy after 7 minutes by default).",
                                       None, gt=0)
    runpod_init_timeout: float | None = _env("RUNPOD_INIT_TIMEOUT", "RunPod's own limit, in seconds, on a "
                                             "worker's start (an endpoint variable RunPod reads); the start "
                                             "budget stays 20 s below it.", None, gt=0)
    comfyui_max_restarts: int = _env("COMFYUI_MAX_RESTARTS", "Restarts in a row of a ComfyUI that dies within "
                                     "a minute of starting before the worker gives up and ends (RunPod then "
                                     "replaces it).", 3, ge=0)
    oom_retry: bool = _env("OOM_RETRY", "When a prompt runs out of GPU memory, free ComfyUI's memory (models "
                           "unloaded, caches dropped) and run it once more before failing with OUT_OF_MEMORY. "
                           "A request can turn it off with `execution_config.retry_on_oom`.", True)
    warmup_workflow: Path | None = _env("WARMUP_WORKFLOW", "API-format workflow (JSON file, or a job file with an "
                                        "`input`) run once before the worker takes jobs, to load models.")

    # --- Logging ---------------------------------------------------------------------------------
    log_level: str = _env("LOG_LEVEL", "Log level of the worker (`DEBUG`, `INFO`, `WARNING`, `ERROR`).", "INFO")

    # --- Workflow policy ---------------------------------------------------------------------------
    node_allowlist: str = _env("NODE_ALLOWLIST", "Comma-separated node types a workflow may use; empty allows all.",
                               "")
    node_denylist: str = _env("NODE_DENYLIST", "Comma-separated node types a workflow may not use.", "")
    max_nodes: int | None = _env("MAX_NODES", "Most nodes in one workflow (after conversion). Unset: no limit.",
                                 None, ge=1)
    max_pixels: int | None = _env("MAX_PIXELS", "Most pixels one node may be asked for (width x height x batch x "
                                  "frames). Unset: no limit.", None, ge=1)
    max_steps: int | None = _env("MAX_STEPS", "Highest `steps` value a sampler may be given. Unset: no limit.",
                                 None, ge=1)
    max_frames: int | None = _env("MAX_FRAMES", "Most video frames (`length`, `frames`, ...) a node may be asked "
                                  "for. Unset: no limit.", None, ge=1)

    # --- Image, models and network volume --------------------------------------------------------
    network_volume_path: Path = _env("NETWORK_VOLUME_PATH", "Where a RunPod network volume is mounted. When the "
                                     "folder exists, ComfyUI also searches `<volume>/models/<folder>/` and "
                                     "`<volume>/ComfyUI/models/<folder>/` for every model folder.",
                                     Path("/runpod-volume"))
    network_volume_custom_nodes: bool = _env("NETWORK_VOLUME_CUSTOM_NODES", "Also load custom nodes from "
                                             "`<volume>/custom_nodes` and `<volume>/ComfyUI/custom_nodes` (runs "
                                             "code from the volume).", False)
    comfyui_model_folders: Path | None = _env("COMFYUI_MODEL_FOLDERS", "JSON file of ComfyUI's model folders, "
                                              "written at image build time. Default: "
                                              "`$COMFYUI_DIR/model_folders.json`.")
    models_manifest: Path = _env("MODELS_MANIFEST", "The models.yaml manifest (`start` and `on_demand` entries "
                                 "are fetched by the worker).", Path("models.yaml"))
    model_download_root: Path | None = _env("MODEL_DOWNLOAD_ROOT", "Models root that `start` and `on_demand` "
                                            "files are fetched into. Default: `<volume>/models` when the "
                                            "volume exists, else `$COMFYUI_DIR/models`.")
    model_download_on_demand: bool = _env("MODEL_DOWNLOAD_ON_DEMAND", "Fetch a missing model that a job needs "
                                          "when models.yaml lists it as `on_demand`.", True)
    model_download_workers: int = _env("MODEL_DOWNLOAD_WORKERS", "Parallel model downloads.", 4, ge=1, le=32)
    model_download_timeout: float = _env("MODEL_DOWNLOAD_TIMEOUT", "Seconds a model download may wait for "
                                         "data before it retries.", 60.0, gt=0)
    model_download_retries: int = _env("MODEL_DOWNLOAD_RETRIES", "Retries (resuming) after a failed model "
                                       "download.", 4, ge=0, le=20)
    model_cache_dir: Path | None = _env("MODEL_CACHE_DIR", "Cache of the model files requests name by URL "
                                        "(`models`, or a URL as a loader's value), shown to ComfyUI. Default: the "
                                        "models root of `start` and `on_demand` files (`<volume>/models` with a "
                                        "volume, shared by every worker), as `<folder>/<key>/<file>`.")
    model_cache_max_bytes: int | None = _env("MODEL_CACHE_MAX_BYTES", "Size cap of the model cache, in bytes: the "
                                             "least recently used files no running job uses are evicted. Unset: "
                                             "no cap.", None, ge=1)
    model_url_hosts: str = _env("MODEL_URL_HOSTS", "Comma-separated hosts a request may name models on (`*.` "
                                "allows subdomains); redirects may lead elsewhere, each hop checked like input "
                                "URLs. Empty: https models are off. `s3://` models follow BUCKET_INPUT_PREFIXES.",
                                "huggingface.co,hf.co,civitai.com")
    model_url_tokens: str = _env("MODEL_URL_TOKENS", "Comma-separated `host=VARIABLE`: the environment variable "
                                 "whose token is sent (as a bearer token) to that host only, never after a "
                                 "redirect to another host.",
                                 "huggingface.co=HF_TOKEN,hf.co=HF_TOKEN,civitai.com=CIVITAI_TOKEN")
    model_url_max_bytes: int = _env("MODEL_URL_MAX_BYTES", "Largest model file a request may have fetched, in "
                                    "bytes.", 50 * 1024 ** 3, ge=1)
    model_url_allow_pickle: bool = _env("MODEL_URL_ALLOW_PICKLE", "Let requests fetch pickled model files "
                                        "(`.ckpt`, `.pt`, `.pth`, `.bin`, `.pkl`), which can run code when "
                                        "loaded. Off: only `.safetensors`, `.sft` and `.gguf`.", False)
    model_url_max_files: int = _env("MODEL_URL_MAX_FILES", "Most model files one job may name by URL.", 8,
                                    ge=0, le=64)

    # --- Deployed workflows ----------------------------------------------------------------------
    deployed_workflows_dir: Path = _env("DEPLOYED_WORKFLOWS_DIR", "Folder of deployed workflows shipped with the "
                                        "worker (relative to its folder: `/worker/workflows` in the image): each "
                                        "`<id>.json` (API or UI format) with its manifest `<id>.yaml`, run by name "
                                        "(`workflow_id`). See docs/workflows.md.", Path("workflows"))
    deployed_workflows_volume_dir: Path | None = _env("DEPLOYED_WORKFLOWS_VOLUME_DIR", "Folder of deployed "
                                                      "workflows on the network volume; its workflows replace the "
                                                      "image's of the same id. Default: `<volume>/workflows`.")
    deployed_workflows_only: bool = _env("DEPLOYED_WORKFLOWS_ONLY", "Run deployed workflows only: a request that "
                                         "sends a graph (`workflow`) fails with POLICY_VIOLATION. The safe way to "
                                         "expose an endpoint to untrusted callers (docs/security.md).", False)

    @field_validator("log_level")
    @classmethod
    def _upper(cls, value: str) -> str:
        value = value.upper()
        if value not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return value

    @field_validator("comfyui_url")
    @classmethod
    def _strip_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        return value.strip().rstrip("/")

    # --- Derived -----------------------------------------------------------------------------------
    @property
    def input_dir(self) -> Path:
        return self.comfyui_input_dir or self.comfyui_dir / "input"

    @property
    def output_dir(self) -> Path:
        return self.comfyui_output_dir or self.comfyui_dir / "output"

    @property
    def temp_dir(self) -> Path:
        # ComfyUI appends "temp" to --temp-directory.
        return (self.comfyui_temp_dir or self.comfyui_dir) / "temp"

    @property
    def base_url(self) -> str:
        return self.comfyui_url or f"http://{self.comfyui_host}:{self.comfyui_port}"

    @property
    def start_budget(self) -> float:
        """Seconds from process start until the worker must be ready to take jobs."""
        if self.start_timeout is not None:
            return self.start_timeout
        if self.runpod_init_timeout is not None:
            return max(30.0, self.runpod_init_timeout - 20.0)
        return 400.0

    @property
    def manages_process(self) -> bool:
        return self.comfyui_url is None

    def input_limits(self) -> dict[str, int]:
        """The limits `schema.parse_job_input` applies to a raw job input, before anything walks it."""
        return {"max_depth": self.max_input_depth, "max_nodes": self.max_workflow_nodes,
                "max_bytes": self.max_request_bytes, "max_text": self.max_text_chars,
                "max_workflow": self.max_workflow_bytes}

    def time_limit(self, requested: float | None, warnings: list[str]) -> float | None:
        """A job's time limit: the request's, capped at JOB_TIMEOUT_MAX (said in `warnings`), or JOB_TIMEOUT."""
        timeout = requested or self.job_timeout
        if timeout and self.job_timeout_max and timeout > self.job_timeout_max:
            warnings.append(f"execution_config.timeout {timeout:g} s lowered to the worker's limit of "
                            f"{self.job_timeout_max:g} s")
            return self.job_timeout_max
        return timeout

    @classmethod
    def env_names(cls) -> dict[str, str]:
        """Field name -> environment variable name."""
        return {name: field.json_schema_extra["env"] for name, field in cls.model_fields.items()}  # type: ignore[index]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from the environment; an unusable value names its variable."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name, env_name in cls.env_names().items():
            raw = environ.get(env_name)
            if raw is not None and raw != "":
                values[name] = raw
        try:
            return cls(**values)
        except ValidationError as exc:
            names = cls.env_names()
            problems = "; ".join(
                f"{names.get(str(err['loc'][0]), err['loc'][0])}: {err['msg']}" for err in exc.errors()
            )
            raise SettingsError(f"invalid environment: {problems}") from None

    # --- Delivery and input media ----------------------------------------------------------------
    delivery_provider: Literal["inline", "auto", "s3", "gdrive"] = _env(
        "DELIVERY_PROVIDER", "Delivery target when a request names none (`inline`, `auto`, `s3`, `gdrive`).",
        "auto")
    inline_max_bytes: int = _env("INLINE_MAX_BYTES", "Largest JSON size, in bytes, of the outputs returned "
                                 "inline. RunPod refuses results over 10 MB (/run) or 20 MB (/runsync).",
                                 9 * 1024 * 1024, ge=1024)
    output_quality: int = _env("OUTPUT_QUALITY", "JPEG/WEBP quality used when a request re-encodes without "
                               "`quality`.", 90, ge=1, le=100)
    max_reencode_pixels: int = _env("MAX_REENCODE_PIXELS", "Largest image, in pixels, that is decoded for "
                                    "re-encoding or as an input (decompression-bomb guard).", 100_000_000, ge=1)
    bucket_endpoint_url: str | None = _env("BUCKET_ENDPOINT_URL", "S3-compatible endpoint (runpod SDK name). "
                                           "Unset with keys set: AWS S3.")
    bucket_access_key_id: SecretStr | None = _env("BUCKET_ACCESS_KEY_ID", "S3 access key id (runpod SDK name).")
    bucket_secret_access_key: SecretStr | None = _env("BUCKET_SECRET_ACCESS_KEY", "S3 secret access key "
                                                      "(runpod SDK name).")
    bucket_name: str | None = _env("BUCKET_NAME", "Default S3 bucket for outputs.")
    bucket_region: str | None = _env("BUCKET_REGION", "S3 region (`auto` for R2). Default: taken from an AWS "
                                     "endpoint URL, else `us-east-1`.")
    bucket_addressing_style: Literal["path", "virtual", "auto"] = _env(
        "BUCKET_ADDRESSING_STYLE", "S3 addressing style: `path`, `virtual` or `auto`.", "path")
    bucket_key_template: str = _env("BUCKET_KEY_TEMPLATE", "Object key template (see docs/delivery.md).",
                                    "{job_id}/{filename}")
    bucket_path_prefix: str = _env("BUCKET_PATH_PREFIX", "Prefix put before every object key written with the "
                                   "worker's credentials; a request's `output_config.storage.path` is a folder "
                                   "inside it.", "")
    bucket_allowed_buckets: str = _env("BUCKET_ALLOWED_BUCKETS", "Comma-separated buckets besides BUCKET_NAME that "
                                       "a request may choose (`output_config.storage.bucket`) while the worker's "
                                       "credentials are used.", "")
    bucket_input_prefixes: str = _env("BUCKET_INPUT_PREFIXES", "Comma-separated `bucket` or `bucket/prefix` under "
                                      "which `s3://` inputs are read with the worker's credentials. Empty: "
                                      "`s3://` inputs need the request's own `s3Config`.", "")
    bucket_public_url: str | None = _env("BUCKET_PUBLIC_URL", "Base URL of a public bucket; when set, results "
                                         "carry `<base>/<key>` instead of presigned URLs.")
    bucket_url_expiry: int = _env("BUCKET_URL_EXPIRY", "Lifetime of presigned URLs in seconds.", 86400,
                                  ge=1, le=604800)
    upload_concurrency: int = _env("UPLOAD_CONCURRENCY", "Outputs uploaded at the same time.", 4, ge=1, le=64)
    upload_part_concurrency: int = _env("UPLOAD_PART_CONCURRENCY", "Parts of one large output uploaded at the "
                                        "same time.", 4, ge=1, le=64)
    upload_multipart_threshold: int = _env("UPLOAD_MULTIPART_THRESHOLD", "Outputs from this size (bytes) on "
                                           "are uploaded in parts.", 100 * 1024 * 1024, ge=5 * 1024 * 1024)
    upload_part_size: int = _env("UPLOAD_PART_SIZE", "Part size in bytes of multipart uploads.",
                                 32 * 1024 * 1024, ge=5 * 1024 * 1024)
    upload_retries: int = _env("UPLOAD_RETRIES", "Tries per output before a transient storage error fails "
                               "the job.", 4, ge=1, le=10)
    upload_timeout: float = _env("UPLOAD_TIMEOUT", "Connect/read timeout in seconds of each storage call.",
                                 60.0, gt=0)
    gdrive_credentials: SecretStr | None = _env("GDRIVE_CREDENTIALS", "Google service-account key: JSON, "
                                                "base64 of the JSON, or a file path.")
    gdrive_folder_id: str | None = _env("GDRIVE_FOLDER_ID", "Google Drive folder or shared-drive id for "
                                        "outputs.")
    gdrive_share_anyone: bool = _env("GDRIVE_SHARE_ANYONE", "Share uploaded files with anyone who has the "
                                     "link.", False)
    gdrive_allow_caller_folder: bool = _env("GDRIVE_ALLOW_CALLER_FOLDER", "Let a request choose another Drive "
                                            "folder (`output_config.storage.folder_id`) the service account can "
                                            "write to.", False)
    gdrive_allow_caller_share: bool = _env("GDRIVE_ALLOW_CALLER_SHARE", "Let a request share its files with anyone "
                                           "who has the link (`output_config.storage.share: true`); a request may "
                                           "always turn sharing off.", False)
    gdrive_chunk_size: int = _env("GDRIVE_CHUNK_SIZE", "Chunk size in bytes of resumable Drive uploads "
                                  "(a multiple of 256 KiB).", 8 * 1024 * 1024, ge=256 * 1024)
    gdrive_api_endpoint: str | None = _env("GDRIVE_API_ENDPOINT", "Drive API base URL override (private "
                                           "gateways, tests). Default: Google's.")
    input_fetch_timeout: float = _env("INPUT_FETCH_TIMEOUT", "Seconds allowed to download one input URL.",
                                      60.0, gt=0)
    input_max_redirects: int = _env("INPUT_MAX_REDIRECTS", "Redirects followed when downloading an input.", 5,
                                    ge=0, le=20)
    max_input_media_bytes: int = _env("MAX_INPUT_MEDIA_BYTES", "Largest size of one video or audio input, in "
                                      "bytes.", 500 * 1024 * 1024, ge=1)
    allow_private_urls: bool = _env("ALLOW_PRIVATE_URLS", "Allow input URLs and request-supplied storage "
                                    "endpoints on loopback, private or other non-public addresses.", False)
    allow_http_urls: bool = _env("ALLOW_HTTP_URLS", "Allow plain http:// input URLs and storage endpoints "
                                 "from requests.", False)
    comfy_org_api_key: SecretStr | None = _env("COMFY_ORG_API_KEY", "Comfy.org API key for ComfyUI's partner "
                                               "API nodes, sent with every prompt (`extra_data.api_key_comfy_org`) "
                                               "unless the request carries `comfy_org_api_key`. Never logged.")

    # --- Live: stream mode, previews and events ----------------------------------------------------
    stream_mode: bool = _env("STREAM_MODE", "Serve RunPod's `/stream`: the handler becomes a generator that yields "
                             "progress, previews and each output as it is delivered, then the job's result as its "
                             "last chunk; `/runsync` and `/status` then return the list of chunks. Off: the "
                             "handler returns the result, as worker-comfyui's does.", False)
    comfyui_preview_method: Literal["none", "auto", "latent2rgb", "taesd"] | None = _env(
        "COMFYUI_PREVIEW_METHOD", "`--preview-method` of the ComfyUI the worker starts. Unset: ComfyUI's default "
        "(none), previews switched on per job that asks for them (`extra_data.preview_method`, ComfyUI 0.3.6x "
        "and later); set it for an older ComfyUI.")
    events_secret: SecretStr | None = _env("EVENTS_SECRET", "Key that signs every event POSTed to a request's "
                                           "`events.url` (HMAC-SHA256 with a timestamp; docs/api.md). Unset: "
                                           "requests with `events` are refused. Never logged.")
    events_timeout: float = _env("EVENTS_TIMEOUT", "Timeout in seconds of one event POST to `events.url`.", 5.0,
                                 gt=0)
    events_retries: int = _env("EVENTS_RETRIES", "Tries per event (pauses from 0.5 s, doubling) before it is "
                               "dropped.", 5, ge=1, le=20)
    events_drain_timeout: float = _env("EVENTS_DRAIN_TIMEOUT", "Longest a job's result waits for its remaining "
                                       "events to reach `events.url`: a receiver that is down or slow delays a "
                                       "job by at most this; what is left is then dropped.", 10.0, ge=0)


class SettingsError(ValueError):
    """An environment variable holds a value the worker cannot use."""
