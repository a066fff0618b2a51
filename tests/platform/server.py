"""An emulator of RunPod's worker-facing job API, as runpod 1.12.0 speaks it.

In production RunPod starts the image's `python -u handler.py` with RUNPOD_WEBHOOK_* URLs set, and the SDK's
worker loop takes jobs from, and posts results to, those URLs. This module serves those URLs on loopback so
tests can run the worker exactly that way and see every call it makes.

Read against the runpod 1.12.0 sources (`runpod/serverless/`): `worker.py` (local vs production),
`modules/rp_scale.py` (JobScaler: take loop, concurrency, stop channel), `modules/rp_job.py` (job-take and
job-take-batch URLs, status codes, job-stop parsing, result shaping), `modules/rp_http.py` (result POSTs:
body, headers, Fibonacci retry), `modules/rp_progress.py` (progress_update: a thread and session per call),
`modules/rp_ping.py` (heartbeat process), `modules/rp_fitness.py`, `modules/rp_system_fitness.py`,
`modules/rp_gpu_fitness.py` (start-up checks and their `status=unhealthy` report), `modules/worker_state.py`
(worker id, in-progress job ids) and `http_client.py` (sessions, auth header, TooManyRequests).

The wire protocol, as the SDK uses it (paths follow RunPod's URL templates, which carry a query string):

  GET  /v2/E/job-take/W?gpu=G&job_in_progress=0|1                 one job: 200 {"id","input"} or 204
  GET  /v2/E/job-take-batch/W?gpu=G&batch_size=N&job_in_progress=0|1   200 [jobs] or 204
       (also 400: "no job", FlashBoot; 429: the SDK backs off 5 s)
  GET  /v2/E/job-stop/W?gpu=G                                      200 {"jobsToStop": [...]} or 204
  POST /v2/E/job-done/W/J?gpu=G&isStream=true|false                the result, or a progress update
       body: JSON text, Content-Type application/x-www-form-urlencoded, header X-Request-ID: J
  POST /v2/E/job-stream/W/J?gpu=G&isStream=false                   one chunk of a generator handler
  GET  /v2/E/ping/W?gpu=G[&job_id=a,b]&runpod_version=1.12.0       heartbeat (from a separate process)
  GET  /v2/E/ping/W?gpu=G&status=unhealthy&check=C&reason=R&runpod_version=1.12.0   failed fitness check

The server is threaded (stdlib), so tests drive it synchronously: `enqueue` jobs, then `wait_result`.
Every call is recorded, in arrival order, as a `Call`. Posts are "applied" to the job's platform state when
they are answered, which is what a delayed progress post changes (see `set_progress_delay`).
"""

from __future__ import annotations

import itertools
import json
import logging
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

from typing_extensions import Self

log = logging.getLogger("tests.platform.server")

SDK_VERSION = "1.12.0"

T = TypeVar("T")

# Routes by the path segment after /v2/<endpoint>/, with how many path segments follow it.
_ROUTES: dict[str, int] = {
    "job-take": 1,        # worker id
    "job-take-batch": 1,  # worker id
    "job-stop": 1,        # worker id
    "ping": 1,            # worker id
    "job-done": 2,        # worker id, job id
    "job-stream": 2,      # worker id, job id
}

# The headers worth keeping per call (the rest is aiohttp's and requests' own).
_KEPT_HEADERS = ("Authorization", "Content-Type", "X-Request-ID", "User-Agent")


@dataclass
class Call:
    """One request the worker made, as the platform saw it."""

    seq: int
    t: float                     # time.monotonic() when the request (headers and body) had arrived
    method: str
    route: str                   # one of _ROUTES, or "unknown"
    path: str
    query: dict[str, str]
    endpoint_id: str | None = None
    worker_id: str | None = None
    job_id: str | None = None    # the job a post is about (job-done, job-stream)
    body: Any = None             # parsed JSON of a post; the raw text if it is not JSON
    headers: dict[str, str] = field(default_factory=dict)
    status: int | None = None    # the answer; None while the request is still held (long poll, delay)
    t_answered: float | None = None
    answered_ids: list[str] = field(default_factory=list)  # jobs handed out, or jobs told to stop

    @property
    def is_progress(self) -> bool:
        """A `progress_update`: posted to job-done with `{"status": "IN_PROGRESS", ...}`."""
        return self.route == "job-done" and isinstance(self.body, dict) and self.body.get("status") == "IN_PROGRESS"

    @property
    def is_final(self) -> bool:
        """A job's result: a job-done post whose body is not a progress update."""
        return self.route == "job-done" and not self.is_progress

    @property
    def is_unhealthy_report(self) -> bool:
        return self.route == "ping" and self.query.get("status") == "unhealthy"

    @property
    def ping_job_ids(self) -> list[str]:
        """The in-progress job ids a heartbeat carried (none: the parameter is left out)."""
        raw = self.query.get("job_id", "")
        return [part for part in raw.split(",") if part]


@dataclass
class JobRecord:
    """The platform's view of one job, what `/status` would show."""

    id: str
    input: Any
    status: str = "IN_QUEUE"     # IN_QUEUE, IN_PROGRESS, COMPLETED, FAILED, CANCELLED
    worker_id: str | None = None
    progress: Any = None         # the output of the last applied progress update
    result: dict[str, Any] | None = None  # the body of the first final job-done post
    stream: list[Any] = field(default_factory=list)


class RunPodPlatform:
    """RunPod's worker-facing job API on a loopback port. Use as a context manager, or start()/close().

    Knobs (all thread-safe, effective for the next call):
      set_progress_delay(low, high)     hold each progress post a random time before applying/answering it
      answer_next_takes(status, count)  answer the next job-take / job-take-batch calls with e.g. 400 or 429
      fail_next_results(status, count)  answer the next final job-done posts with e.g. 500 (the SDK retries)
    """

    def __init__(self, endpoint_id: str = "comfy-worker-test", *, api_key: str | None = "rp-test-key",
                 gpu: str = "NVIDIA", long_poll: float = 0.5, stop_long_poll: float | None = None,
                 host: str = "127.0.0.1", port: int = 0) -> None:
        self.endpoint_id = endpoint_id
        self.api_key = api_key
        self.gpu = gpu
        self.long_poll = long_poll
        self.stop_long_poll = long_poll if stop_long_poll is None else stop_long_poll
        self._host, self._port = host, port
        self._cond = threading.Condition(threading.RLock())
        self._calls: list[Call] = []
        self._seq = itertools.count(1)
        self._queue: deque[str] = deque()
        self._jobs: dict[str, JobRecord] = {}
        self._stops: dict[str, list[str]] = {}  # worker id -> ids of its jobs to stop
        self._take_answers: deque[int] = deque()
        self._result_failures: deque[int] = deque()
        self._progress_delay: tuple[float, float] | None = None
        self._violations: list[str] = []
        self._closed = False
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._rng = random.Random(0)  # delays vary, runs repeat

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> RunPodPlatform:
        platform = self

        class Handler(_Handler):
            owner = platform

        self._server = ThreadingHTTPServer((self._host, self._port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="runpod-platform", daemon=True)
        self._thread.start()
        log.info("RunPod job API emulator on %s", self.url)
        return self

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()  # release held long polls at once
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def port(self) -> int:
        assert self._server is not None, "start() the platform first"
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.port}"

    def webhook_env(self) -> dict[str, str]:
        """The variables RunPod sets for a worker, with RunPod's templates ($ID, $RUNPOD_POD_ID, a query)."""
        base = f"{self.url}/v2/{self.endpoint_id}"
        query = f"?gpu={self.gpu}"
        return {
            "RUNPOD_WEBHOOK_GET_JOB": f"{base}/job-take/$ID{query}",
            "RUNPOD_WEBHOOK_POST_OUTPUT": f"{base}/job-done/$RUNPOD_POD_ID/$ID{query}",
            "RUNPOD_WEBHOOK_POST_STREAM": f"{base}/job-stream/$RUNPOD_POD_ID/$ID{query}",
            "RUNPOD_WEBHOOK_PING": f"{base}/ping/$RUNPOD_POD_ID{query}",
            "RUNPOD_ENDPOINT_ID": self.endpoint_id,
        }

    # ------------------------------------------------------------------ jobs

    def enqueue(self, job_input: Any, job_id: str | None = None) -> str:
        """Queue a job (as `/run` would); returns its id."""
        return self.enqueue_many([job_input], [job_id] if job_id else None)[0]

    def enqueue_many(self, inputs: Sequence[Any], job_ids: Sequence[str] | None = None) -> list[str]:
        """Queue several jobs at once, so that one take can hand them all out."""
        ids = list(job_ids) if job_ids else [f"{uuid.uuid4()}-u1" for _ in inputs]
        if len(ids) != len(inputs):
            raise ValueError("one job id per input")
        with self._cond:
            for job_id, job_input in zip(ids, inputs):
                if job_id in self._jobs:
                    raise ValueError(f"job {job_id} exists already")
                self._jobs[job_id] = JobRecord(job_id, job_input)
                self._queue.append(job_id)
            self._cond.notify_all()
        return ids

    def stop_job(self, job_id: str) -> None:
        """Cancel a job, as RunPod's `/cancel` does: the job is CANCELLED at once, a queued one is never handed
        out, and the worker that holds it finds it in its next job-stop poll."""
        with self._cond:
            job = self._jobs[job_id]
            if job.status in ("COMPLETED", "FAILED", "CANCELLED"):
                return
            if job.status == "IN_QUEUE":
                self._queue.remove(job_id)
            else:
                self._stops.setdefault(job.worker_id or "", []).append(job_id)
            job.status = "CANCELLED"
            self._cond.notify_all()

    def job(self, job_id: str) -> JobRecord:
        with self._cond:
            return self._jobs[job_id]

    def job_status(self, job_id: str) -> str:
        with self._cond:
            return self._jobs[job_id].status

    def queued(self) -> list[str]:
        with self._cond:
            return list(self._queue)

    # ------------------------------------------------------------------ knobs

    def set_progress_delay(self, low: float, high: float | None = None) -> None:
        """Hold every progress post for a random time in [low, high] before it is applied and answered, as a
        slow platform would; `set_progress_delay(0)` turns it off."""
        high = low if high is None else high
        if not 0 <= low <= high:
            raise ValueError("need 0 <= low <= high")
        with self._cond:
            self._progress_delay = (low, high) if high > 0 else None

    def answer_next_takes(self, status: int, count: int = 1) -> None:
        """The next `count` job-take / job-take-batch calls get `status` (400, 429, 500, ...) and no job."""
        with self._cond:
            self._take_answers.extend([status] * count)
            self._cond.notify_all()

    def fail_next_results(self, status: int = 500, count: int = 1) -> None:
        """The next `count` final job-done posts are answered `status` and not applied (the SDK retries 5xx,
        3 attempts in all)."""
        with self._cond:
            self._result_failures.extend([status] * count)

    # ------------------------------------------------------------------ what happened

    def calls(self, route: str | None = None) -> list[Call]:
        with self._cond:
            return [c for c in self._calls if route is None or c.route == route]

    def posts_for(self, job_id: str) -> list[Call]:
        """job-done and job-stream posts about `job_id`, in arrival order."""
        with self._cond:
            return [c for c in self._calls if c.route in ("job-done", "job-stream") and c.job_id == job_id]

    def takes_of(self, job_id: str) -> list[Call]:
        """The job-take / job-take-batch calls that handed out `job_id`."""
        with self._cond:
            return [c for c in self._calls if c.route.startswith("job-take") and job_id in c.answered_ids]

    def final_post(self, job_id: str) -> Call | None:
        """The first final job-done post about `job_id` that was accepted (answered 2xx)."""
        with self._cond:
            for c in self._calls:
                if c.job_id == job_id and c.is_final and c.status is not None and 200 <= c.status < 300:
                    return c
            return None

    def late_progress(self, job_id: str) -> list[Call]:
        """Progress posts about `job_id` that arrived, or were applied, after its final result arrived: the
        platform would show them in place of, or after, the result."""
        final = self.final_post(job_id)
        if final is None:
            return []
        with self._cond:
            return [c for c in self._calls if c.job_id == job_id and c.is_progress
                    and (c.t >= final.t or c.t_answered is None or c.t_answered >= final.t)]

    def violations(self) -> list[str]:
        """Protocol breaches seen (bad query, bad body, wrong key, unknown route)."""
        with self._cond:
            return list(self._violations)

    def wait_for(self, predicate: Callable[[], T], timeout: float, what: str = "condition") -> T:
        """Wait until `predicate()` returns something truthy (re-checked on every call and state change)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                value = predicate()
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{what} not met within {timeout} s")
                self._cond.wait(min(left, 0.1))

    def wait_result(self, job_id: str, timeout: float = 60.0) -> dict[str, Any]:
        """The body of the job's final job-done post (the first one accepted, a retry repeats it)."""
        call = self.wait_for(lambda: self.final_post(job_id), timeout, f"final result of job {job_id}")
        assert isinstance(call.body, dict), call.body
        return call.body

    def wait_taken(self, job_id: str, timeout: float = 30.0) -> Call:
        return self.wait_for(lambda: (self.takes_of(job_id) or [None])[0], timeout, f"job {job_id} taken")

    def wait_calls(self, route: str, count: int = 1, timeout: float = 30.0, *,
                   where: Callable[[Call], bool] = lambda c: True) -> list[Call]:
        """Wait until `count` calls of `route` matching `where` were answered; returns all such calls."""
        def found() -> list[Call]:
            hits = [c for c in self.calls(route) if c.status is not None and where(c)]
            return hits if len(hits) >= count else []
        return self.wait_for(found, timeout, f"{count} answered {route} call(s)")

    # ------------------------------------------------------------------ request handling (server threads)

    def _record(self, call: Call) -> None:
        with self._cond:
            self._calls.append(call)
            self._cond.notify_all()

    def _answer(self, call: Call, status: int, ids: Iterable[str] = ()) -> None:
        with self._cond:
            call.status = status
            call.t_answered = time.monotonic()
            call.answered_ids = list(ids)
            self._cond.notify_all()

    def _violation(self, call: Call, problem: str) -> None:
        text = f"{call.method} {call.path}: {problem}"
        log.warning("protocol violation: %s", text)
        with self._cond:
            self._violations.append(text)

    def _take(self, call: Call, batch_size: int) -> tuple[int, Any]:
        """Hand out up to `batch_size` queued jobs; hold the poll while the queue is empty."""
        deadline = call.t + self.long_poll
        with self._cond:
            while not self._queue and not self._take_answers and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            # A forced answer wins over queued jobs, and reaches a poll already held.
            if self._take_answers:
                return self._take_answers.popleft(), None
            if not self._queue:
                return 204, None
            jobs = []
            while self._queue and len(jobs) < batch_size:
                record = self._jobs[self._queue.popleft()]
                record.status = "IN_PROGRESS"
                record.worker_id = call.worker_id
                jobs.append({"id": record.id, "input": record.input})
        return 200, jobs

    def _stop_signals(self, call: Call) -> list[str]:
        deadline = call.t + self.stop_long_poll
        with self._cond:
            while not self._closed:
                ids = self._stops.pop(call.worker_id or "", [])
                if ids:
                    return ids
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
        return []

    def _post(self, call: Call) -> int:
        """Apply a job-done / job-stream post; returns the HTTP status to answer with."""
        if call.route == "job-done" and call.is_progress:
            with self._cond:
                delay = self._progress_delay
            if delay:
                time.sleep(self._rng.uniform(*delay))
        with self._cond:
            job = self._jobs.get(call.job_id or "")
            if job is None:
                self._violation(call, f"post about unknown job {call.job_id}")
                return 404
            if call.route == "job-stream":
                job.stream.append(call.body.get("output") if isinstance(call.body, dict) else call.body)
                return 200
            if call.is_progress:
                if job.status == "IN_PROGRESS":
                    job.progress = call.body.get("output")
                return 200
            if self._result_failures:
                return self._result_failures.popleft()
            if job.result is None:
                job.result = call.body if isinstance(call.body, dict) else {"raw": call.body}
                if job.status == "IN_PROGRESS":
                    job.status = "FAILED" if isinstance(call.body, dict) and "error" in call.body else "COMPLETED"
            return 200


class _Handler(BaseHTTPRequestHandler):
    """One HTTP request: parse it, record it, let the platform decide, answer."""

    owner: RunPodPlatform
    protocol_version = "HTTP/1.1"  # keep-alive, as aiohttp and requests use it

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, payload: Any = None) -> None:
        body = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        if status != 204:  # a 204 has no body, and says nothing about one
            if payload is not None:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)

    def _handle(self, method: str) -> None:
        platform = self.owner
        raw = self._read_body()
        parts = urlsplit(self.path)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        call = Call(next(platform._seq), time.monotonic(), method, "unknown", parts.path, query,
                    headers={k: v for k in _KEPT_HEADERS if (v := self.headers.get(k)) is not None})
        segments = [s for s in parts.path.split("/") if s]
        # /v2/<endpoint>/<route>/<ids...>; a template without '?' gets the SDK's parameters glued onto the path
        glued = "&" in parts.path or "=" in parts.path
        if not glued and len(segments) >= 3 and segments[0] == "v2" and segments[2] in _ROUTES \
                and len(segments) == 3 + _ROUTES[segments[2]]:
            call.route, call.endpoint_id, call.worker_id = segments[2], segments[1], segments[3]
            if _ROUTES[call.route] == 2:
                call.job_id = segments[4]
        if raw:
            text = raw.decode("utf-8", errors="replace")
            try:
                call.body = json.loads(text)
            except ValueError:
                call.body = text
        platform._record(call)
        status, payload = self._route(platform, call, method)
        ids: list[str] = []
        if call.route.startswith("job-take") and payload:
            ids = [job["id"] for job in payload]
            if call.route == "job-take":
                payload = payload[0]  # the legacy route hands out one job object, not a list
        elif call.route == "job-stop" and payload:
            ids = list(payload["jobsToStop"])
        platform._answer(call, status, ids)
        try:
            self._send(status, payload)
        except OSError:  # the worker gave up on the request (its own timeout, or it was stopped)
            log.debug("could not answer %s %s", method, self.path)

    def _route(self, platform: RunPodPlatform, call: Call, method: str) -> tuple[int, Any]:
        if call.route == "unknown":
            glued = "&" in call.path or "=" in call.path
            platform._violation(call, "query parameters glued onto the path (a URL template without '?')"
                                if glued else "no such route")
            return 404, None
        expected = "POST" if call.route in ("job-done", "job-stream") else "GET"
        if method != expected:
            platform._violation(call, f"{call.route} takes {expected}")
            return 405, None
        if call.endpoint_id != platform.endpoint_id:
            platform._violation(call, f"endpoint {call.endpoint_id} is not {platform.endpoint_id}")
            return 404, None
        if platform.api_key is not None and call.headers.get("Authorization") != platform.api_key:
            platform._violation(call, "Authorization is not the worker's RUNPOD_AI_API_KEY")
            return 401, None
        if call.query.get("gpu") != platform.gpu:
            platform._violation(call, "the template's query string (gpu=...) was lost")
        problem = _query_problem(call)
        if problem:
            platform._violation(call, problem)
            return 400, None
        if call.route in ("job-take", "job-take-batch"):
            size = int(call.query.get("batch_size", "1"))
            status, jobs = platform._take(call, size)
            return status, jobs
        if call.route == "job-stop":
            ids = platform._stop_signals(call)
            return (200, {"jobsToStop": ids}) if ids else (204, None)
        if call.route == "ping":
            return 200, None
        return platform._post(call), None


def _query_problem(call: Call) -> str | None:
    """What is wrong with a call's query and body, by the SDK's own rules (rp_job.py, rp_http.py, rp_ping.py)."""
    q = call.query
    if call.route in ("job-take", "job-take-batch") and q.get("job_in_progress") not in ("0", "1"):
        return "job_in_progress must be 0 or 1"
    if call.route == "job-take-batch" and (not q.get("batch_size", "").isdigit() or int(q["batch_size"]) < 2):
        return "job-take-batch needs batch_size >= 2 (the SDK uses job-take for one job)"
    if call.route == "job-take" and "batch_size" in q:
        return "batch_size on the single job-take route"
    if call.route in ("job-done", "job-stream"):
        if q.get("isStream") not in ("true", "false"):
            return "isStream must be true or false"
        if not isinstance(call.body, dict):
            return "the body is not a JSON object"
        if call.headers.get("X-Request-ID") is None:
            return "no X-Request-ID header"
    if call.route == "ping" and q.get("runpod_version") != SDK_VERSION:
        return f"runpod_version is not {SDK_VERSION}"
    return None


# ---------------------------------------------------------------------- sequence diagrams

_BACKGROUND = "background"


def _request_label(call: Call) -> str:
    q = call.query
    if call.route == "job-take":
        return f"GET job-take (job_in_progress={q.get('job_in_progress')})"
    if call.route == "job-take-batch":
        return f"GET job-take-batch (batch_size={q.get('batch_size')}, job_in_progress={q.get('job_in_progress')})"
    if call.route == "job-stop":
        return "GET job-stop"
    if call.route == "ping":
        if call.is_unhealthy_report:
            return f"GET ping (status=unhealthy, check={q.get('check')})"
        return f"GET ping (job_id={q['job_id']})" if q.get("job_id") else "GET ping"
    if call.route in ("job-done", "job-stream"):
        label = f"POST {call.route} isStream={q.get('isStream')}"
        body = call.body if isinstance(call.body, dict) else {}
        if call.is_progress:
            return f"{label} status=IN_PROGRESS"
        if call.route == "job-done":
            if "error" in body:
                return f"{label} error {_error_code(body['error'])}"
            extra = ", stopPod" if body.get("stopPod") else ""
            return f"{label} output{extra}"
        return label
    return f"{call.method} {call.path}"


def _error_code(error: Any) -> str:
    """The worker's error code from the error string; the SDK's own error JSON names an exception type."""
    try:
        parsed = json.loads(error) if isinstance(error, str) else error
    except ValueError:
        return "(text)"
    if isinstance(parsed, dict):
        return str(parsed.get("code") or parsed.get("error_type") or "(object)")
    return "(text)"


def _response_label(call: Call) -> str:
    if call.status is None:
        return "(no answer)"
    if call.route.startswith("job-take") and call.status == 200:
        noun = "job" if call.route == "job-take" else "jobs"
        return f"200 {noun} {', '.join(call.answered_ids)}"
    if call.route == "job-take" and call.status in (204, 400):
        return f"{call.status} no job"
    if call.route == "job-take-batch" and call.status in (204, 400):
        return f"{call.status} no jobs"
    if call.route == "job-stop" and call.status == 200:
        return f"200 jobsToStop [{', '.join(call.answered_ids)}]"
    return str(call.status)


def _is_background(call: Call) -> bool:
    """Calls that repeat while nothing happens: idle polls, heartbeats, progress updates."""
    if call.route in ("job-take", "job-take-batch", "job-stop"):
        return call.status in (204, 400) or (call.status == 200 and not call.answered_ids)
    if call.route == "ping":
        return not call.is_unhealthy_report
    return call.is_progress and call.status == 200


def _mermaid_text(text: str, names: Mapping[str, str]) -> str:
    for long, short in names.items():
        text = text.replace(long, short)
    # ';' ends a statement and '#' starts an entity code in a sequence diagram's message text.
    return text.replace(";", ",").replace("#", "#35;")


def to_mermaid(calls: Sequence[Call], *, job_names: Mapping[str, str] | None = None,
               platform: str = "RunPod job API", worker: str = "worker") -> str:
    """A Mermaid `sequenceDiagram` of recorded calls, each drawn (request and answer) in the order they were
    answered. Between two events (a job handed out, a result, a stop signal, ...), the repeated calls (idle
    polls, heartbeats, progress posts) are drawn once each, with how many there were. `job_names` replaces
    job ids (long uuids) with short names."""
    names = dict(job_names or {})
    lines = ["sequenceDiagram", f"    participant R as {platform}", f"    participant W as {worker}"]

    def arrow(request: str, response: str, count: int = 1) -> None:
        times = f" ×{count}" if count > 1 else ""
        lines.append(f"    W->>R: {_mermaid_text(request, names)}{times}")
        lines.append(f"    R-->>W: {_mermaid_text(response, names)}")

    pending: dict[tuple[str, str], int] = {}

    def flush() -> None:
        for (request, response), count in pending.items():
            arrow(request, response, count)
        pending.clear()

    # A call is drawn when it was answered: a long poll that hands out a job shows where the job starts.
    for call in sorted(calls, key=lambda c: (c.t if c.t_answered is None else c.t_answered, c.seq)):
        key = (_request_label(call), _response_label(call))
        if _is_background(call):
            pending[key] = pending.get(key, 0) + 1
            continue
        flush()
        arrow(*key)
    flush()
    return "\n".join(lines) + "\n"
