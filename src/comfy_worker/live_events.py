"""The job's live events, as a caller receives them: the chunks of RunPod's `/stream` (stream mode) and the
bodies POSTed to a request's `events.url`. These models are the source of their JSON Schemas in docs/schema/.

Every event names its job and carries `seq`, 1, 2, 3... in the order the worker emitted it. In stream mode
the last chunk is the job's result itself (`JobResult`, `DryRunResult` or `WorkflowCatalogue`), the same object a job returns
in the default mode; a failed job has no last chunk: RunPod marks it FAILED with its `error`.
"""

from __future__ import annotations

from typing import Literal, Union

from pydantic import BaseModel, Field, RootModel

from .schema import DryRunResult, JobResult, ModelFetchProgress, OutputEntry, ProgressPayload, WorkflowCatalogue


class _Event(BaseModel):
    job_id: str
    seq: int = Field(ge=1, description="Position of this event among the job's events (1, 2, 3...).")


class ProgressEvent(_Event):
    """The job moved on (a node started, a sampler step): what `/status` shows while it runs."""

    event: Literal["progress"]
    progress: ProgressPayload | ModelFetchProgress = Field(description="As `/status` shows it: the graph's "
                                                           "progress, or the model files being fetched.")


class PreviewEvent(_Event):
    """A latent preview of the running sampler (`output_config.previews`)."""

    event: Literal["preview"]
    prompt_id: str
    node: str | None = Field(description="Id of the node that sent it.")
    class_type: str | None
    step: float | None = Field(description="The sampler step it shows.")
    max_steps: float | None
    item: int | None = Field(None, description="In a batch: the input set it belongs to.")
    image: str = Field(description="The preview as a data URI (`data:image/jpeg;base64,...`).")
    width: int
    height: int


class OutputEvent(_Event):
    """One output, delivered: its storage URL is live, or (inline) its bytes are here or in the result."""

    event: Literal["output"]
    output: OutputEntry = Field(description="The output's entry as in the result's `outputs`, with `data` "
                                "(base64) for an inline file unless `data_omitted`.")
    data_omitted: bool | None = Field(None, description="True when an inline file is too large for an event "
                                      "(over 512 KiB of base64): its bytes come with the result only.")


class FinalEvent(_Event):
    """The job's end (events.url only; in stream mode the result is the last chunk)."""

    event: Literal["final"]
    status: Literal["COMPLETED", "FAILED", "CANCELLED"]
    output: JobResult | DryRunResult | WorkflowCatalogue | None = Field(None, description="The job's result, when COMPLETED.")
    error: str | None = Field(None, description="JSON text of the `ErrorPayload`, when FAILED (as in "
                              "RunPod's status response).")


class StreamChunk(RootModel[Union[ProgressEvent, PreviewEvent, OutputEvent, JobResult, DryRunResult,
                                  WorkflowCatalogue]]):
    """One chunk of `/stream` in stream mode: an event, or (the last one) the job's result.

    `output` of each entry of `/stream`'s `stream` list. `/runsync` and `/status` return the list of every
    chunk of a COMPLETED job as its `output`."""


class EventBody(RootModel[Union[ProgressEvent, PreviewEvent, OutputEvent, FinalEvent]]):
    """The JSON body of each POST to `events.url`, signed in `X-Comfy-Worker-Signature`."""
