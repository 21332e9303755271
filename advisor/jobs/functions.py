"""Job functions by name: what a queued job runs. Names arrive from the database, never import paths.

`study` runs a study (`advisor.study.run_study`) with the runner the worker was started with (torch's, from
`proxy_runs.torch_runner`, in `advisor serve` and `advisor worker`). `synthetic` runs the same study logic on
`advisor.study.synthetic.SyntheticRunner`'s closed-form loss surface with a fixed time per run, so the queue's
fault tests (kill -9, retries, stale writes) run in seconds. Its records say `"source": "synthetic"`, and it
runs only when LORA_ADVISOR_JOB_FUNCTION names it.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from advisor.errors import SpecError
from advisor.hub_ids import check_stored_references
from advisor.jobs.control import JobControl, PermanentJobError
from advisor.jobs.queue import JobResult
from advisor.science.recommendation import Recommendation
from advisor.specs import StudySpec, parse_spec
from advisor.study import StudyResult, run_study
from advisor.study.synthetic import Surface, SyntheticRunner

if TYPE_CHECKING:
    from advisor.science.knowledge import KnowledgeStore
    from advisor.storage.db import Database

DATABASE_URL_ENV = "LORA_ADVISOR_DATABASE_URL"
JobFunction = Callable[[dict[str, Any], JobControl], JobResult]
JOB_FUNCTIONS: dict[str, JobFunction] = {}


def register_job_function(name: str) -> Callable[[JobFunction], JobFunction]:
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise ValueError(f"job function name {name!r} must be lowercase letters, digits and underscores")
    if name in JOB_FUNCTIONS:
        raise ValueError(f"job function {name!r} is already registered")

    def register(function: JobFunction) -> JobFunction:
        JOB_FUNCTIONS[name] = function
        return function

    return register


def get_job_function(name: str) -> JobFunction:
    try:
        return JOB_FUNCTIONS[name]
    except KeyError:
        raise PermanentJobError(
            f"unknown job function {name!r}; known: {', '.join(sorted(JOB_FUNCTIONS))}"
        ) from None


def _spec(payload: dict[str, Any]) -> StudySpec:
    try:
        return parse_spec(payload["spec"])
    except SpecError as exc:  # stored specs were validated on submit; a failure here will not heal on retry
        raise PermanentJobError(f"stored spec no longer validates: {exc.describe()}") from None


def _confined_references(spec: StudySpec) -> StudySpec:
    """The spec, once every model and dataset it names is an absolute path or a hub id that names nothing
    relative to this worker's working directory (advisor.hub_ids: the API cannot see the worker's disk)."""
    try:
        check_stored_references(spec, working_directory=Path.cwd())
    except SpecError as exc:
        raise PermanentJobError(f"{type(exc).__name__}: {exc.describe()}") from None
    return spec


@register_job_function("study")
def run_study_job(payload: dict[str, Any], control: JobControl) -> JobResult:
    spec = _confined_references(_spec(payload))  # before a runner starts: a refusal costs nothing
    if control.runner is None:
        raise PermanentJobError(
            "this worker has no proxy runner to train studies with (start it with `advisor worker` or "
            "`advisor serve`, which give it one)"
        )
    store, opened = knowledge_store(control)
    try:
        runner = control.watched(control.runner())  # a cancel or a lost lease stops runs in flight
        result = run_study(spec, runner, progress=control.study_progress, store=store)
    except SpecError as exc:  # the model or data the spec names cannot be used: retrying will not help
        if exc.retryable:
            raise
        raise PermanentJobError(f"{type(exc).__name__}: {exc.describe()}") from None
    finally:
        if opened is not None:
            opened.dispose()
    return study_result_to_job_result(result)


def knowledge_store(control: JobControl) -> tuple[KnowledgeStore | None, Database | None]:
    """(the warm start's store, a database opened for it here). The runner's store when it set one; else
    the database named by LORA_ADVISOR_DATABASE_URL (how standalone workers are configured); else none."""
    if control.store is not None:
        return control.store, None
    url = os.environ.get(DATABASE_URL_ENV)
    if not url:
        return None, None
    from advisor.storage.db import Database
    from advisor.storage.knowledge_store import DatabaseKnowledgeStore

    db = Database(url)
    return DatabaseKnowledgeStore(db), db


def study_result_to_job_result(result: StudyResult) -> JobResult:
    """A finished study as the queue stores it: its runs, its probes' reports and its answer."""
    recommendation = result.recommendation
    available = isinstance(recommendation, Recommendation)
    return JobResult(
        runs=list(result.runs),
        recommendation=recommendation.model_dump(mode="json"),
        recommendation_available=available,
        batch_size=recommendation.batch_size if isinstance(recommendation, Recommendation) else None,
        learning_rate=recommendation.learning_rate if isinstance(recommendation, Recommendation) else None,
        dataset_examples=result.dataset_examples,
        probes=list(result.probes),
    )


# synthetic ---------------------------------------------------------------------------------------


@register_job_function("synthetic")
def run_synthetic_study(payload: dict[str, Any], control: JobControl) -> JobResult:
    """A whole study, run by the real study logic on `SyntheticRunner`'s closed-form loss surface (no model,
    no data). Payload options: seconds_per_run (each run sleeps that long), surface (`Surface` fields),
    trace_dir (a file per run executed, so tests can see at-least-once execution), fail_attempts (raise on
    the first n calls)."""
    spec = _spec(payload)
    _maybe_fail(payload)
    runs_started = itertools.count()

    def trace(_spec: StudySpec, _config: tuple[int, float]) -> None:
        control.check()  # a canceled or superseded job stops between runs, as a real study does
        _trace(payload, next(runs_started))

    try:
        surface = Surface(**payload.get("surface", {}))
    except TypeError as exc:
        raise PermanentJobError(f"synthetic job: bad surface option ({exc})") from None
    runner = SyntheticRunner(
        surface, seconds_per_run=float(payload.get("seconds_per_run", 0.05)), on_run=trace
    )
    return study_result_to_job_result(run_study(spec, runner, progress=control.study_progress))


def _trace(payload: dict[str, Any], index: int) -> None:
    """A file per run executed, named by the study's spec (`spec_tag`), run index and process."""
    if payload.get("trace_dir"):
        folder = Path(payload["trace_dir"])
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{spec_tag(payload['spec'])}-run{index}-pid{os.getpid()}-{time.monotonic_ns()}").touch()


def spec_tag(spec: dict[str, Any]) -> str:
    """A short name for a stored spec, so that traces of several studies in one folder tell apart."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:10]


def _maybe_fail(payload: dict[str, Any]) -> None:
    """fail_attempts: n → the first n executions raise (counted in trace_dir/failures), to test retries."""
    limit = int(payload.get("fail_attempts", 0))
    if not limit or not payload.get("trace_dir"):
        return
    counter = Path(payload["trace_dir"]) / "failures"
    counter.parent.mkdir(parents=True, exist_ok=True)
    done = int(counter.read_text()) if counter.exists() else 0
    if done < limit:
        counter.write_text(str(done + 1))
        raise RuntimeError(f"synthetic failure {done + 1} of {limit}")
