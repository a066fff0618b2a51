"""What a caller may do with the operator's storage credentials (docs/security.md).

The operator's credentials (BUCKET_*) reach the operator's bucket(s) and prefix only: a request's
`output_config.storage.path` is a folder under BUCKET_PATH_PREFIX, never beside it; its `bucket` is one the
operator allows; its `key_template` makes keys no earlier job can own (it names the job, the prompt or a
uuid), so a caller cannot overwrite another caller's objects; and `s3://` inputs are read with those
credentials only under the prefixes the operator lists. A caller who wants anything else brings their own
credentials in the request's `s3Config`, which this module leaves alone.
"""

from __future__ import annotations

from ..errors import invalid_input
from ..schema import StorageConfig
from ..settings import Settings

# A key naming one of these is new for every job: it cannot be an object another job wrote.
UNIQUE_PLACEHOLDERS = ("{job_id}", "{prompt_id}", "{uuid}")


def _split(value: str | None) -> list[str]:
    return [part.strip().strip("/") for part in (value or "").split(",") if part.strip().strip("/")]


def allowed_buckets(settings: Settings) -> list[str]:
    return [b for b in [settings.bucket_name or "", *_split(settings.bucket_allowed_buckets)] if b]


def _relative(path: str, field: str) -> str:
    parts = [p for p in path.replace("\\", "/").split("/") if p not in {"", "."}]
    if any(p == ".." for p in parts):
        raise invalid_input(field, "contains '..'", message=f"{field}: a folder under the worker's prefix, "
                            "without '..'")
    return "/".join(parts)


def check_output_scope(storage: StorageConfig, settings: Settings, *, own_credentials: bool) -> None:
    """Refuse storage options that would reach beyond the operator's bucket and prefix, before the job runs.
    `own_credentials`: the request brought its own `s3Config`, so the choice is the caller's."""
    if own_credentials:
        return
    if storage.bucket and storage.bucket not in allowed_buckets(settings):
        raise invalid_input("output_config.storage.bucket", "not a bucket this worker allows",
                            message="output_config.storage.bucket: with the worker's own credentials only "
                            "BUCKET_NAME and BUCKET_ALLOWED_BUCKETS may be chosen; send your own s3Config to "
                            "use another bucket")
    if storage.path:
        _relative(storage.path, "output_config.storage.path")
    template = storage.key_template
    if template and not any(p in template for p in UNIQUE_PLACEHOLDERS):
        raise invalid_input("output_config.storage.key_template", "names no {job_id}, {prompt_id} or {uuid}",
                            message="output_config.storage.key_template: with the worker's own credentials a "
                            "key must name {job_id}, {prompt_id} or {uuid}, so that it can never be an object "
                            "another job wrote")


def output_prefix(storage: StorageConfig, settings: Settings, *, own_credentials: bool) -> str:
    """The folder a job's keys start with: the caller's own path with their own credentials; otherwise the
    operator's BUCKET_PATH_PREFIX, with the caller's path as a folder inside it."""
    if own_credentials:
        return storage.path if storage.path is not None else settings.bucket_path_prefix
    caller = _relative(storage.path or "", "output_config.storage.path")
    return "/".join(p for p in (settings.bucket_path_prefix.strip("/"), caller) if p)


def check_input_scope(bucket: str, key: str, settings: Settings, field: str, *, own_credentials: bool) -> None:
    """An `s3://bucket/key` input read with the operator's credentials must lie under BUCKET_INPUT_PREFIXES."""
    if own_credentials:
        return
    parts = key.split("/")
    allowed = _split(settings.bucket_input_prefixes)
    if ".." not in parts:
        for entry in allowed:
            want_bucket, _, prefix = entry.partition("/")
            if want_bucket == bucket and (not prefix or key.startswith(prefix.rstrip("/") + "/")):
                return
    problem = ("s3:// inputs are not read with the worker's credentials" if not allowed else
               "outside the prefixes this worker reads with its credentials")
    raise invalid_input(field, problem, message=f"{field}: s3://{bucket}/{key} is {problem} "
                        "(BUCKET_INPUT_PREFIXES); send a presigned https URL, or your own s3Config")


def check_drive_scope(storage: StorageConfig, settings: Settings) -> None:
    """Drive delivery uses the operator's service account: its folder unless the operator lets callers choose,
    and sharing with anyone only when the operator allows it (a caller may always keep files private)."""
    if storage.folder_id and storage.folder_id != settings.gdrive_folder_id and not settings.gdrive_allow_caller_folder:
        raise invalid_input("output_config.storage.folder_id", "not allowed on this worker",
                            message="output_config.storage.folder_id: this worker writes to its own Drive folder "
                            "only (GDRIVE_ALLOW_CALLER_FOLDER is off)")
    if storage.share and not (settings.gdrive_share_anyone or settings.gdrive_allow_caller_share):
        raise invalid_input("output_config.storage.share", "not allowed on this worker",
                            message="output_config.storage.share: this worker does not share files with anyone "
                            "who has the link (GDRIVE_ALLOW_CALLER_SHARE is off)")
