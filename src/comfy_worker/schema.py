"""The job contract: what a caller sends (``JobInput``) and what comes back (``JobResult``, ``ErrorPayload``).

These models are the single source of the JSON Schemas in ``docs/schema/``.
"""

from __future__ import annotations

import difflib
import json
import re
from typing import Annotated, Any, Literal

from pydantic import (BaseModel, ConfigDict, Field, PrivateAttr, RootModel, SecretStr, ValidationError,
                      WithJsonSchema, field_validator)

from .errors import ErrorCode, WorkerError, invalid_input

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\- ()\[\]+=,@]{0,199}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InputImage(_Strict):
    """An input image, in the form the most-used ComfyUI worker accepts."""

    name: str = Field(description="File name the workflow refers to (for example in LoadImage's `image`).",
                      examples=["input.png"])
    image: str = Field(description="The image as base64, a data URI (`data:image/png;base64,...`), an `https://` "
                                   "URL or an `s3://bucket/key` (fetched with the configured credentials).",
                       min_length=1)

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        if "/" in value or "\\" in value or value in {".", ".."} or not _SAFE_NAME.match(value):
            raise ValueError("must be a plain file name (letters, digits, '.', '_', '-', spaces; no folders)")
        return value


class S3Config(_Strict):
    """RunPod's per-request `s3Config`: the caller's own S3-compatible storage, used for this job's outputs
    (and `s3://` inputs) instead of the operator's. RunPod passes it to the worker as is."""

    accessId: str = Field(min_length=1, description="Access key id.")
    accessSecret: str = Field(min_length=1, description="Secret access key (never logged or returned).")
    bucketName: str | None = Field(None, description="Bucket. Default: `output_config.storage.bucket`, then "
                                   "the operator's `BUCKET_NAME`.")
    endpointUrl: str | None = Field(None, description="S3-compatible endpoint URL (https unless the operator "
                                    "allows http); checked like input URLs. Unset: AWS S3.")

    def __repr__(self) -> str:  # the secret never reaches a log line or a traceback
        return f"S3Config(accessId=***, bucketName={self.bucketName!r}, endpointUrl={self.endpointUrl!r})"

    __str__ = __repr__


def parse_s3_config(raw: Any) -> S3Config | None:
    """A request's `s3Config` (None when absent or empty), or INVALID_INPUT naming the field."""
    if raw is None or raw == {}:
        return None
    if not isinstance(raw, dict):
        raise invalid_input("s3Config", "must be an object {accessId, accessSecret, bucketName, endpointUrl}")
    try:
        return S3Config.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        problem = {"extra_forbidden": "unknown field", "missing": "required field is missing"}.get(
            err["type"], err["msg"])
        raise invalid_input(_loc(("s3Config", *err["loc"])), problem) from None


class StorageConfig(_Strict):
    """Where outputs go. `inline` returns them base64-encoded inside the result; `auto` does so while the
    result stays under the operator's `INLINE_MAX_BYTES` and uses the configured storage otherwise.
    Credentials never travel here: S3 keys come from the environment or RunPod's `s3Config`, Google Drive
    keys from the environment. See docs/delivery.md."""

    provider: Literal["inline", "auto", "s3", "gdrive"] | None = Field(
        None, description="Delivery target. Default: the operator's `DELIVERY_PROVIDER` (`auto` unless set).")
    bucket: str | None = Field(None, min_length=3, max_length=63,
                               description="S3 bucket. Default: `s3Config.bucketName`, then `BUCKET_NAME`.")
    path: str | None = Field(None, max_length=512,
                             description="Prefix put before every object key (S3) or ignored (Drive).")
    key_template: str | None = Field(
        None, max_length=512,
        description="Object key (S3) or file name (Drive) of each output. Placeholders: {job_id}, "
                    "{prompt_id}, {node_id}, {filename}, {stem}, {ext}, {index}, {date}, {uuid}. Default: "
                    "`BUCKET_KEY_TEMPLATE` (`{job_id}/{filename}`).")
    region: str | None = Field(None, max_length=64, description="S3 region. Default: `BUCKET_REGION`.")
    addressing_style: Literal["path", "virtual", "auto"] | None = Field(
        None, description="S3 addressing style. Default: `BUCKET_ADDRESSING_STYLE` (`path`).")
    presign: bool | None = Field(
        None, description="Return presigned GET URLs (true) or plain object URLs for public buckets (false). "
                          "Default: presigned unless `BUCKET_PUBLIC_URL` is set.")
    url_expiry: int | None = Field(None, ge=1, le=604800,
                                   description="Lifetime of presigned URLs in seconds (at most 7 days). "
                                               "Default: `BUCKET_URL_EXPIRY`.")
    folder_id: str | None = Field(None, max_length=200,
                                  description="Google Drive folder (or shared drive) id. Default: "
                                              "`GDRIVE_FOLDER_ID`.")
    share: bool | None = Field(None, description="Google Drive: share each file with anyone who has the link. "
                                                 "Default: `GDRIVE_SHARE_ANYONE`.")


class PreviewConfig(_Strict):
    """Latent previews while a sampler runs, sent as `preview` events (stream mode, `events.url`)."""

    max_per_second: float = Field(2.0, gt=0, le=10, description="At most this many previews per second for the "
                                  "job; when ComfyUI sends more, the latest wins.")
    format: Literal["jpeg", "webp"] = Field("jpeg", description="Image format of each preview's data URI.")
    max_size: int = Field(256, ge=16, le=512, description="Longest side of a preview, in pixels.")
    quality: int = Field(70, ge=1, le=100, description="JPEG/WEBP quality of a preview.")
    method: Literal["auto", "latent2rgb", "taesd"] = Field(
        "auto", description="ComfyUI's preview method for this prompt (`extra_data.preview_method`): `taesd` "
        "needs the TAESD decoders in models/vae_approx, `auto` uses them when present, else `latent2rgb`.")


class OutputConfig(_Strict):
    include_temp: bool | None = Field(
        None, description="Also return temporary outputs (PreviewImage). Default: the operator's setting "
                          "(`INCLUDE_TEMP_OUTPUTS`, off unless set).")
    format: Literal["original", "png", "jpeg", "webp"] = Field(
        "original", description="Re-encode still images to this format; other kinds pass through unchanged.")
    quality: int | None = Field(None, ge=1, le=100,
                                description="JPEG/WEBP quality (1-100). Default: `OUTPUT_QUALITY` (90).")
    strip_metadata: bool | None = Field(
        None, description="Remove the workflow/prompt metadata ComfyUI embeds in images. Default: stripped "
                          "when re-encoding, kept for `format: original`.")
    storage: StorageConfig = Field(default_factory=StorageConfig)
    previews: bool | PreviewConfig | None = Field(
        None, description="Latent previews while the workflow runs (`true` for the defaults), sent with the job's "
        "live events (stream mode or `events.url`). Off unless asked for.")

    @field_validator("previews")
    @classmethod
    def _previews(cls, value: bool | PreviewConfig | None) -> PreviewConfig | None:
        return PreviewConfig() if value is True else (value or None)


class ExecutionConfig(_Strict):
    timeout: float | None = Field(None, gt=0, description="Seconds the job may take, staging to delivery; on "
                                  "expiry the prompt is interrupted and removed from ComfyUI's queue and the job "
                                  "fails with TIMEOUT. Default: the operator's `JOB_TIMEOUT`; capped at "
                                  "`JOB_TIMEOUT_MAX`.")
    free_memory_after: bool = Field(False, description="Unload models and free ComfyUI's caches after this job "
                                    "(slower next job, VRAM back).")
    randomize_seeds: bool = Field(False, description="Give every seed input (seed, noise_seed, or flagged "
                                  "control_after_generate) a fresh random value within its range. Seeds set in "
                                  "`inputs` are kept.")
    output_nodes: list[str] | None = Field(None, description="Run only these output nodes (and what they need); "
                                           "each must exist and be an output node.", min_length=1)
    dry_run: bool = Field(False, description="Convert, apply `inputs` and run the pre-flight check only; return "
                          "the resolved API graph and the report without running anything.")
    retry_on_oom: bool | None = Field(None, description="When a prompt runs out of GPU memory, free ComfyUI's "
                                      "memory (models unloaded, caches dropped) and run it once more before "
                                      "failing with OUT_OF_MEMORY. Default: the operator's `OOM_RETRY` (on).")


class ModelSource(_Strict):
    """A model file the job needs, fetched by URL before the run (once: a cache keeps it for later jobs). See
    README's "Models by URL"."""

    url: str = Field(min_length=9, max_length=4096, pattern=r"^([hH][tT][tT][pP][sS]?|[sS]3)://",
                     description="`https://` on a host the operator allows (`MODEL_URL_HOSTS`: Hugging Face and "
                     "Civitai unless changed), or `s3://bucket/key` (`BUCKET_INPUT_PREFIXES`, or your `s3Config`).",
                     examples=["https://huggingface.co/org/repo/resolve/main/style.safetensors"])
    folder: str | None = Field(None, pattern=r"^[a-z0-9_]{1,64}$",
                               description="ComfyUI model folder (`loras`, `checkpoints`, `vae`, ...). Default: the "
                               "folder of the loader input whose value is the file name.")
    filename: str | None = Field(None, description="The name the workflow gives the file (a loader's value), and "
                                 "the format it must have. Default: the URL's last path segment.")
    sha256: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$",
                               description="Checked before the file is used; a mismatch fails the job. Unset: "
                               "Hugging Face's published hash is checked when it has one.")

    @field_validator("filename")
    @classmethod
    def _plain_name(cls, value: str | None) -> str | None:
        if value is not None and ("/" in value or "\\" in value or not _SAFE_NAME.match(value)):
            raise ValueError("must be a plain file name (letters, digits, '.', '_', '-', spaces; no folders)")
        return value

    @field_validator("sha256")
    @classmethod
    def _lower(cls, value: str | None) -> str | None:
        return value.lower() if value else value


class EventsConfig(_Strict):
    """The job's live events POSTed to the caller's own URL, signed with the endpoint's `EVENTS_SECRET`
    (docs/api.md, "Live events")."""

    url: str = Field(min_length=8, max_length=2048, description="https URL that receives each event as a "
                     "signed JSON POST; public addresses only (checked like input URLs).")
    types: list[Literal["progress", "preview", "output", "final"]] | None = Field(
        None, min_length=1, description="The events to send. Default: all of them (`preview` only when "
        "`output_config.previews` asks for previews).")


class JobInput(_Strict):
    """`job["input"]` of a RunPod job sent to this worker."""

    # A graph, a deployed workflow's name, or the catalogue: the schema says that one of them is required.
    model_config = ConfigDict(extra="forbid", json_schema_extra={"anyOf": [
        {"required": ["workflow"]}, {"required": ["workflow_id"]},
        {"required": ["list_workflows"], "properties": {"list_workflows": {"const": True}}}]})

    workflow: dict[str, Any] | None = Field(None, description="The workflow: ComfyUI's API format (node id -> "
                                            "node), or the UI format the web app saves (converted on the worker). "
                                            "Required unless `workflow_id` names a deployed workflow.")
    images: list[InputImage] = Field(default_factory=list,
                                     description="Input images, uploaded to ComfyUI before the run.")
    inputs: dict[str, Any] | list[dict[str, Any]] | None = Field(
        None, description="Node input values keyed `\"<node id>.<input>\"` or `\"<node title>.<input>\"`. A list of "
                          "such objects is a batch: one run of the graph per set, all validated first and queued "
                          "together; results grouped per item (`items`, and `item` on each output). See "
                          "docs/workflows.md.")
    output_config: OutputConfig = Field(default_factory=OutputConfig)
    execution_config: ExecutionConfig = Field(default_factory=ExecutionConfig)
    models: list[ModelSource] = Field(
        default_factory=list, max_length=64,
        description="Model files to fetch by URL before the run; the workflow's loader inputs that name a file "
                    "are pointed at the fetched copy. A URL given as a loader's value (in the workflow or "
                    "`inputs`) is fetched the same way. At most `MODEL_URL_MAX_FILES` per job.")
    events: EventsConfig | None = Field(None, description="Also POST the job's live events (progress, previews, "
                                        "each output as delivered, the final result) to the caller's URL.")
    comfy_org_api_key: SecretStr | None = Field(
        None, min_length=1, description="Comfy.org API key for ComfyUI's partner API nodes (as worker-comfyui "
        "reads it), passed to ComfyUI as the prompt's `extra_data.api_key_comfy_org`; never logged or returned. "
        "Default: the operator's `COMFY_ORG_API_KEY`.")
    workflow_id: str | None = Field(None, min_length=1, max_length=64, description="A workflow deployed on this "
                                    "worker, run by name instead of a `workflow` graph; its parameters go in "
                                    "`params` (docs/workflows.md#deployed-workflows).")
    # Checked against the workflow's own schema (deployments.params), which names each parameter in its errors.
    params: Annotated[Any, WithJsonSchema({"anyOf": [{"type": "object"}, {"type": "array", "items": {
        "type": "object"}}, {"type": "null"}]})] = Field(
        None, description="Parameter values of the deployed workflow `workflow_id`, checked against its JSON "
                          "Schema (`list_workflows` serves it). A list of such objects is a batch, as with `inputs`.")
    list_workflows: bool = Field(False, description="Answer with the catalogue of deployed workflows (id, "
                                 "version, description, JSON Schema of `params`) instead of running anything.")
    # A request by `workflow_id` runs as `inputs`: the parameter behind each key, for messages to name.
    _param_names: dict[str, str] = PrivateAttr(default_factory=dict)

    @property
    def param_names(self) -> dict[str, str]:
        return self._param_names

    def comfy_extra_data(self, operator_key: SecretStr | None) -> dict[str, Any]:
        """What ComfyUI's nodes get beside the graph: the Comfy.org key for partner API nodes, the request's
        over the operator's (as worker-comfyui does). It goes to ComfyUI only: never logged or returned."""
        key = self.comfy_org_api_key or operator_key
        return {"api_key_comfy_org": key.get_secret_value()} if key is not None else {}

    @field_validator("workflow")
    @classmethod
    def _non_empty(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and not value:
            raise ValueError("must contain at least one node")
        return value


# ------------------------------------------------------------------------------------------------
# Results

OutputKind = Literal["image", "animation", "video", "audio", "3d", "latent", "text", "file"]


class OutputEntry(BaseModel):
    """One produced file or text."""

    node_id: str = Field(description="Id of the node that produced it.")
    item: int | None = Field(None, description="In a batch: the index of the input set that produced it.")
    kind: OutputKind
    key: str = Field(description="The key of ComfyUI's UI output dict it came from (`images`, `gifs`, ...).")
    filename: str | None = Field(None, description="File name as ComfyUI wrote it (files only).")
    type: Literal["output", "temp", "input"] | None = Field(None, description="ComfyUI folder of the file.")
    mime_type: str
    size: int = Field(description="Size in bytes (UTF-8 bytes for text).")
    sha256: str | None = None
    width: int | None = None
    height: int | None = None
    duration: float | None = Field(None, description="Seconds, for audio and video whose header tells it.")
    data: str | None = Field(None, description="Base64 of the file, when delivered inline (not for images: see "
                                               "`data_in`).")
    data_in: str | None = Field(None, description="Where this output's base64 is, when it is in the compatible "
                                "`images` list instead of here (`images[0]`): each image's bytes travel once.",
                                pattern=r"^images\[\d+\]$")
    text: str | None = Field(None, description="The text, for `kind: text`.")
    url: str | None = Field(None, description="Where to download it, when delivered to storage.")
    storage: Literal["s3", "gdrive"] | None = Field(None, description="Storage the file was delivered to.")
    bucket: str | None = Field(None, description="S3 bucket of the object.")
    object_key: str | None = Field(None, description="S3 object key.")
    url_expires_at: str | None = Field(None, description="UTC time (ISO 8601) a presigned URL stops working.")
    file_id: str | None = Field(None, description="Google Drive file id.")
    view_url: str | None = Field(None, description="Google Drive page of the file.")
    source_filename: str | None = Field(None, description="File name ComfyUI wrote, when re-encoding "
                                                          "changed it.")


class CompatImage(BaseModel):
    """The `images` list of the most-used ComfyUI worker, kept so its callers can switch unchanged."""

    filename: str
    type: Literal["base64", "s3_url"]
    data: str


class JobResult(BaseModel):
    """`output` of a COMPLETED job."""

    prompt_id: str
    outputs: list[OutputEntry]
    images: list[CompatImage]
    timings: dict[str, float] = Field(description="Seconds spent in each stage that ran.")
    warnings: list[str] = Field(default_factory=list)
    seeds: dict[str, Any] | None = Field(None, description="Seeds chosen by `randomize_seeds` (node id.input -> "
                                         "value; in a batch, per item index).")
    items: list[BatchItem] | None = Field(None, description="In a batch: the outcome of each input set.")
    worker_version: str = Field(description="Version of the worker that ran the job (semantic; CHANGELOG.md "
                                "says what each version may change).")
    workflow_id: str | None = Field(None, description="The deployed workflow that ran (a request by "
                                    "`workflow_id`).")
    workflow_version: str | None = Field(None, description="Its version: a content hash of its graph and "
                                         "manifest.")


class BatchItem(BaseModel):
    """The outcome of one input set of a batch."""

    index: int
    prompt_id: str
    status: Literal["COMPLETED", "FAILED"]
    error: ErrorPayload | None = None


class DryRunResult(BaseModel):
    """`output` of a COMPLETED job sent with `execution_config.dry_run`: nothing ran."""

    dry_run: Literal[True]
    workflow: dict[str, Any] | None = Field(None, description="The API-format graph ComfyUI would be given.")
    preflight: dict[str, Any] | None = Field(None, description="The pre-flight report (`ok`, `problems`, "
                                             "`node_errors`, ...).")
    media_inputs: list[dict[str, str]] | None = Field(None, description="`inputs` values that would be uploaded as "
                                                      "files (`node_id`, `input_name`, `key`).")
    seeds: dict[str, int] | None = Field(None, description="Seed values chosen by `randomize_seeds`.")
    models: list[ModelPlan] | None = Field(None, description="Model files named by URL: what a run would fetch "
                                           "(or find in the cache), and their size where the server says.")
    items: list[dict[str, Any]] | None = Field(None, description="For a batch: `index`, `workflow`, `preflight`, "
                                               "`media_inputs`, `seeds` and `models` of each input set.")
    warnings: list[str]
    timings: dict[str, float]
    worker_version: str = Field(description="Version of the worker that checked the job.")
    workflow_id: str | None = Field(None, description="The deployed workflow that ran (a request by "
                                    "`workflow_id`).")
    workflow_version: str | None = Field(None, description="Its version: a content hash of its graph and "
                                         "manifest.")


class ModelPlan(BaseModel):
    """A model file named by URL, as a dry run reports it."""

    field: str = Field(description="Where the request names it: `models[0]`, `inputs.<key>` or "
                       "`workflow.<node>.<input>`.")
    url: str = Field(description="The URL, without its query string.")
    folder: str
    name: str | None = Field(description="The value the workflow's inputs get (`<key>/<file name>` in the model "
                             "cache), when known without fetching.")
    cached: bool = Field(description="Already in the model cache: nothing would be fetched.")
    size: int | None = Field(description="Bytes, from the cache or as the server says; null when it does not.")


class DeployedWorkflow(BaseModel):
    """One workflow a request can name in `workflow_id`."""

    id: str
    version: str = Field(description="Content hash of the workflow and its manifest; results name it too.")
    description: str
    params_schema: dict[str, Any] = Field(description="JSON Schema (draft 2020-12) of the request's `params`.")


class UnavailableWorkflow(BaseModel):
    """A deployed workflow that failed its start-up check: requests naming it get this error."""

    id: str
    code: ErrorCode
    reason: str


class WorkflowCatalogue(BaseModel):
    """`output` of a COMPLETED job sent with `list_workflows`: the workflows deployed on this worker."""

    workflows: list[DeployedWorkflow]
    unavailable: list[UnavailableWorkflow] = Field(description="Deployed workflows that cannot run here, and why.")
    deployed_only: bool = Field(description="Whether this endpoint refuses graphs sent in `workflow` "
                                "(DEPLOYED_WORKFLOWS_ONLY).")
    timings: dict[str, float]


class ModelFetchProgress(BaseModel):
    """`output` of `GET /status` while the job fetches the model files it names by URL (before the run)."""

    stage: Literal["fetching_models"]
    models: int = Field(description="Files being fetched or waited for (another job may be fetching one).")
    models_done: int
    bytes_done: int
    bytes_total: int | None = Field(description="Null until every file's size is known.")
    percent: float = Field(ge=0, le=100, description="Of the bytes when their total is known, else of the "
                           "files; never goes down.")


class ProgressPayload(BaseModel):
    """`output` of `GET /status` while a job is IN_PROGRESS (sent with runpod's progress_update)."""

    stage: Literal["queued", "running"] = Field(description="`running` once ComfyUI started the prompt.")
    prompt_id: str
    node: str | None = Field(description="Id of the node running now.")
    class_type: str | None = Field(description="Its node type.")
    step: float | None = Field(description="Step of the running node (samplers), if it reports steps.")
    max_steps: float | None
    nodes_done: int = Field(description="Nodes finished, not counting nodes served from ComfyUI's cache.")
    nodes_total: int = Field(description="Nodes that have to run (cached nodes excluded).")
    percent: float = Field(ge=0, le=100, description="Overall progress; never goes down.")
    item: int | None = Field(None, description="In a batch: the input set this report is about.")
    items: int | None = Field(None, description="In a batch: how many input sets it has.")
    item_percent: float | None = Field(None, description="In a batch: that input set's own progress.")


class Progress(RootModel[ProgressPayload | ModelFetchProgress]):
    """`output` of `GET /status` while a job is IN_PROGRESS: its prompt's progress, or its models' download.

    Before the run, while the model files the request names by URL arrive, `stage` is `fetching_models`."""


class ErrorPayload(BaseModel):
    """The object inside the JSON string of a FAILED job's `error` field."""

    code: ErrorCode
    message: str
    retryable: bool
    details: dict[str, Any]
    job_id: str | None = None
    timings: dict[str, float] | None = Field(None, description="Seconds spent in each stage before the failure.")
    worker_version: str | None = Field(None, description="Version of the worker that ran the job; on the job's "
                                       "error always, not repeated inside a batch item's.")


# ------------------------------------------------------------------------------------------------
# The shape of `details`, per error code: every path that fails with a code gives its details this shape
# (the JSON Schema of ErrorPayload says so per code; fields beyond these may be added, never removed).


class _Details(BaseModel):
    model_config = ConfigDict(extra="allow")


class FieldError(BaseModel):
    field: str = Field(description="The request field, e.g. `images[0].name` or `inputs.6.text`.")
    problem: str
    suggestion: str | None = Field(None, description="The field probably meant, when the name is unknown but "
                                   "close to a known one.")


class InvalidInputDetails(_Details):
    errors: list[FieldError] = Field(min_length=1)


class WorkflowProblem(BaseModel):
    node_id: str | None
    class_type: str | None
    type: str | None = Field(description="Kind of problem (`missing_node_type`, `value_not_in_list`, ...).")
    input_name: str | None
    message: str | None
    details: Any = None
    suggestion: str | None = Field(None, description="The node type or value probably meant (an unknown "
                                   "`ImageInvertt`: `ImageInvert`).")


class WorkflowDetails(_Details):
    """INVALID_WORKFLOW, MISSING_MODELS and POLICY_VIOLATION: what found the problems, and every one of them."""

    source: Literal["preflight", "comfyui", "conversion", "deployment"] = Field(
        description="Who refused the graph: the worker's pre-flight check, ComfyUI itself, the UI→API "
                    "conversion, or the deployed workflow's own files (its manifest; the endpoint's "
                    "deployed-only rule).")
    problems: list[WorkflowProblem] = Field(min_length=1)
    node_errors: dict[str, Any] = Field(description="ComfyUI's own per-node errors (empty when ComfyUI was not "
                                        "asked or named no node).")


class NodeFailureDetails(_Details):
    """EXECUTION_ERROR and OUT_OF_MEMORY: the node that raised, and what."""

    node_id: str | None
    class_type: str | None
    exception_type: str
    exception_message: str
    traceback: list[str]


class UnavailableDetails(_Details):
    """COMFYUI_UNAVAILABLE: the message says what happened (ComfyUI's exit code and its last line when it exited
    during this job). ComfyUI's log holds every job's lines: its tail goes to the worker's log, never here."""

    prompt_id: str | None = Field(None, description="The prompt that was running, when one was.")
    input: str | None = Field(None, description="The input that could not be handed to ComfyUI.")


class TimeoutDetails(_Details):
    timeout: float = Field(description="The limit that passed, in seconds.")
    prompt_ids: list[str]
    comfyui_restarted: bool


class TooLargeDetails(_Details):
    inline_bytes: int
    limit_bytes: int
    outputs: list[dict[str, Any]]


class ModelFetchFailure(BaseModel):
    field: str = Field(description="Where the request names the file (`models[0]`, `inputs.<key>`, "
                       "`workflow.<node>.<input>`).")
    url: str = Field(description="The URL, without query string or credentials.")
    folder: str
    reason: Literal["host_not_allowed", "url_refused", "refused_format", "too_large", "checksum_mismatch",
                    "invalid_file", "http_status", "connection", "download"] = Field(
        description="`host_not_allowed` (not in MODEL_URL_HOSTS, or an `s3://` outside BUCKET_INPUT_PREFIXES), "
                    "`url_refused` (the SSRF guard: a private address, or a redirect to one), `refused_format` "
                    "(pickled or unknown format), `too_large`, `checksum_mismatch`, `invalid_file` (not the "
                    "format its name says), `http_status` (with `status`), `connection`.")
    message: str
    status: int | None = Field(None, description="The HTTP status, for `http_status`.")
    retryable: bool = Field(description="Whether fetching this file again can succeed.")


class ModelFetchDetails(_Details):
    """MODEL_FETCH_FAILED: every file that could not be had; nothing of them is left in the cache."""

    failures: list[ModelFetchFailure] = Field(min_length=1)


ERROR_DETAILS: dict[ErrorCode, type[BaseModel]] = {
    ErrorCode.INVALID_INPUT: InvalidInputDetails,
    ErrorCode.INVALID_WORKFLOW: WorkflowDetails,
    ErrorCode.MISSING_MODELS: WorkflowDetails,
    ErrorCode.POLICY_VIOLATION: WorkflowDetails,
    ErrorCode.EXECUTION_ERROR: NodeFailureDetails,
    ErrorCode.OUT_OF_MEMORY: NodeFailureDetails,
    ErrorCode.COMFYUI_UNAVAILABLE: UnavailableDetails,
    ErrorCode.TIMEOUT: TimeoutDetails,
    ErrorCode.OUTPUT_TOO_LARGE: TooLargeDetails,
    ErrorCode.MODEL_FETCH_FAILED: ModelFetchDetails,
}


# ------------------------------------------------------------------------------------------------


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "input"


def _too_deep(value: Any, limit: int) -> bool:
    """Whether nesting exceeds `limit`, checked without recursion (a hostile input may be 100 000 deep)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return False


def _largest_texts(value: Any) -> tuple[int, int]:
    """(total characters of every string and key, the longest string), counted without recursion."""
    total = longest = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item)
            longest = max(longest, len(item))
        elif isinstance(item, dict):
            total += sum(len(k) for k in item if isinstance(k, str))
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        else:
            total += 8
    return total, longest


def check_input_shape(raw: Any, *, max_depth: int, max_nodes: int, max_bytes: int | None = None,
                      max_text: int | None = None, max_workflow: int | None = None) -> None:
    """Limits on the raw input's structure and size, before any model or graph code walks it: a request must
    not buy unbounded CPU in the parsing, conversion or checks that follow."""
    if max_bytes is not None:
        size, _ = _largest_texts(raw)
        if size > max_bytes:
            raise invalid_input("input", f"about {size} bytes, limit {max_bytes}",
                                message=f"job input is about {size} bytes, over the limit of {max_bytes} "
                                "(MAX_REQUEST_BYTES); send large media as URLs")
    workflow_part = raw.get("workflow") if isinstance(raw, dict) else None
    if workflow_part is not None and (max_text is not None or max_workflow is not None):
        size, longest = _largest_texts(workflow_part)
        if max_workflow is not None and size > max_workflow:
            raise invalid_input("workflow", f"about {size} bytes, limit {max_workflow}",
                                message=f"workflow: about {size} bytes, over the limit of {max_workflow} "
                                "(MAX_WORKFLOW_BYTES)")
        if max_text is not None and longest > max_text:
            raise invalid_input("workflow", f"a text of {longest} characters, limit {max_text}",
                                message=f"workflow: a text value has {longest} characters, over the limit of "
                                f"{max_text} (MAX_TEXT_CHARS)")
    if _too_deep(raw, max_depth):
        raise invalid_input("input", f"nesting deeper than {max_depth}", message=f"job input is nested deeper than {max_depth} levels")
    workflow = raw.get("workflow") if isinstance(raw, dict) else None
    count = 0
    if isinstance(workflow, dict):
        nodes = workflow.get("nodes")
        count = len(nodes) if isinstance(nodes, list) else len(workflow)
    if count > max_nodes:
        raise invalid_input("workflow", f"{count} nodes, limit {max_nodes}", message=f"workflow: {count} nodes, more than the limit of {max_nodes}")


def decode_json_strings(raw: Any, warnings: list[str]) -> Any:
    """`input`, or its `workflow`, sent as a string of JSON (worker-comfyui accepts both) as an object, with a
    warning in the result; a string that is not JSON is INVALID_INPUT naming the field."""
    if isinstance(raw, str):
        raw = _loads("input", raw)
        warnings.append("input was sent as a string of JSON; it was parsed (send an object)")
    if isinstance(raw, dict) and isinstance(raw.get("workflow"), str):
        raw = {**raw, "workflow": _loads("workflow", raw["workflow"])}
        warnings.append("workflow was sent as a string of JSON; it was parsed (send an object)")
    return raw


def _loads(name: str, text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise invalid_input(name, f"a string that is not JSON ({exc})",
                            message=f"{name} is a string but not JSON: {exc}") from None


def parse_job_input(raw: Any, *, max_depth: int = 64, max_nodes: int = 5000, max_bytes: int | None = None,
                    max_text: int | None = None, max_workflow: int | None = None,
                    warnings: list[str] | None = None) -> JobInput:
    """Validate ``job["input"]``; every problem is reported with the field it belongs to (and, for an unknown
    field, the known one it was probably meant to be)."""
    raw = decode_json_strings(raw, warnings if warnings is not None else [])
    if not isinstance(raw, dict):
        raise invalid_input("input", f"got {type(raw).__name__}", message="job input must be a JSON object")
    check_input_shape(raw, max_depth=max_depth, max_nodes=max_nodes, max_bytes=max_bytes, max_text=max_text,
                      max_workflow=max_workflow)
    errors: list[dict[str, str]] = []
    try:
        request = JobInput.model_validate(raw)
    except ValidationError as exc:
        errors = [_field_error(err) for err in exc.errors(include_url=False)]
    errors += _combination_errors(raw)
    if errors:
        summary = "; ".join(f"{e['field']}: {e['problem']}" for e in errors[:5])
        if len(errors) > 5:
            summary += f"; and {len(errors) - 5} more"
        raise WorkerError(ErrorCode.INVALID_INPUT, f"invalid job input: {summary}", {"errors": errors}) from None
    return request


def _combination_errors(raw: dict[str, Any]) -> list[dict[str, str]]:
    """What the fields say together: a graph (`workflow`) or a deployed workflow's name (`workflow_id`), or
    the catalogue (`list_workflows`), each with the fields that go with it."""
    graph, named = raw.get("workflow") is not None, raw.get("workflow_id") is not None
    errors = []
    if raw.get("list_workflows") is True:
        if graph or named:
            errors.append({"field": "list_workflows", "problem": "asks for the catalogue only; send it without "
                           "`workflow` or `workflow_id`"})
    elif not (graph or named):
        errors.append({"field": "workflow", "problem": "required field is missing (or name a deployed workflow "
                       "in `workflow_id`)"})
    elif graph and named:
        errors.append({"field": "workflow_id", "problem": "give `workflow` (a graph) or `workflow_id` (a deployed "
                       "workflow), not both"})
    if named:
        errors += [{"field": name, "problem": f"a deployed workflow takes `params`, not `{name}`"}
                   for name in ("inputs", "images") if raw.get(name)]
    elif raw.get("params") is not None:
        errors.append({"field": "params", "problem": "`params` go with `workflow_id` (a deployed workflow); a "
                       "graph takes `inputs`"})
    return errors


def _field_error(err: Any) -> dict[str, str]:
    """One entry of INVALID_INPUT's `details.errors`: `field`, `problem`, and `suggestion` when a field name
    is unknown but close to a known one."""
    loc = tuple(err["loc"])
    if err["type"] == "extra_forbidden":
        entry = {"field": _loc(loc), "problem": "unknown field"}
        close = difflib.get_close_matches(str(loc[-1]), _known_fields(loc[:-1]), n=1, cutoff=0.6)
        if close:
            entry["suggestion"] = _loc((*loc[:-1], close[0]))
            entry["problem"] = f"unknown field; did you mean {close[0]!r}?"
        return entry
    problem = "required field is missing" if err["type"] == "missing" else err["msg"]
    return {"field": _loc(loc), "problem": problem}


def _known_fields(parent: tuple[Any, ...]) -> list[str]:
    """Field names of the model at `parent` (a pydantic error location under JobInput)."""
    model: Any = JobInput
    for part in parent:
        if isinstance(part, int):
            continue
        info = getattr(model, "model_fields", {}).get(part)
        if info is None:
            return []
        model = _model_of(info.annotation)
    return list(getattr(model, "model_fields", {}))


def _model_of(annotation: Any) -> Any:
    """The BaseModel inside an annotation such as `list[InputImage]` or `OutputConfig | None`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


JobResult.model_rebuild()
BatchItem.model_rebuild()
