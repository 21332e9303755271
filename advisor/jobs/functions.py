"""Job functions by name: what a queued job runs. Names arrive from the database, never import paths.

`study` runs the real thing (proxy_runs.study.run_study: torch, imported only here and only when run).
`synthetic` exercises the queue, not the science: it answers from a closed-form loss surface with a fixed
time per run, so the fault tests (kill -9, retries, stale writes) run in seconds. Its records say
`"source": "synthetic"`, and it runs only when LORA_ADVISOR_JOB_FUNCTION names it.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import math
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
from advisor.records import RunConfig, RunRecord, RunStatus
from advisor.science.planner import batch_candidates
from advisor.specs import StudySpec, parse_spec

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
    spec = _confined_references(_spec(payload))  # before torch is imported: a refusal costs nothing
    study = importlib.import_module("proxy_runs.study")  # torch: imported by the worker, never by the API
    store, opened = knowledge_store(control)
    try:
        result = study.run_study(spec, progress=control.study_progress, store=store)
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


def study_result_to_job_result(result: Any) -> JobResult:
    """proxy_runs.study.StudyResult → what the queue stores; tolerant of fields the science adds later."""
    recommendation = getattr(result, "recommendation", None)
    payload: dict[str, Any] | None = None
    if recommendation is not None and hasattr(recommendation, "model_dump"):
        payload = recommendation.model_dump(mode="json")
    available = recommendation is not None and type(recommendation).__name__ != "NoRecommendation"
    probes = [
        p.model_dump(mode="json") if hasattr(p, "model_dump") else dict(p)
        for p in getattr(result, "probes", None) or []
    ]
    runs = list(getattr(result, "runs", []))
    return JobResult(
        runs=runs,
        recommendation=payload,
        recommendation_available=available,
        batch_size=getattr(recommendation, "batch_size", None) if available else None,
        learning_rate=getattr(recommendation, "learning_rate", None) if available else None,
        dataset_examples=getattr(result, "dataset_examples", None) or _training_examples(runs),
        probes=probes,
    )


def _training_examples(runs: list[Any]) -> int | None:
    """The training split's size as the runs' dataset fingerprint recorded it (the warm start's bucket)."""
    for run in runs:
        n_train = (getattr(run, "dataset_fingerprint", None) or {}).get("n_train")
        if n_train:
            return int(n_train)
    return None


# synthetic -----------------------------------------------------------------------------------------

LR_POINTS = 4  # learning rates per batch size, log-spaced over the spec's lr_range
# The synthetic surface reads no data: a spec without batch_sizes gets the candidates a real study would
# derive for a training split of this many examples.
SYNTHETIC_TRAIN_EXAMPLES = 2_000


def synthetic_optimum(batch_size: int) -> float:
    # LR optimum grows like √batch (the square-root scaling rule for Adam), 2e-4 at batch 8.
    return 2e-4 * math.sqrt(batch_size / 8)


@register_job_function("synthetic")
def run_synthetic_study(payload: dict[str, Any], control: JobControl) -> JobResult:
    """One 'run' per (batch, lr) on a grid; payload options: seconds_per_run, trace_dir (a file per run
    executed, so tests can see at-least-once execution), fail_attempts (raise on the first n calls)."""
    spec = _spec(payload)
    seconds = float(payload.get("seconds_per_run", 0.05))
    _maybe_fail(payload)
    low, high = (math.log10(x) for x in spec.lr_range)
    grid = [
        (b, 10 ** (low + (high - low) * i / (LR_POINTS - 1)))
        for b in batch_candidates(spec, SYNTHETIC_TRAIN_EXAMPLES).sizes
        for i in range(LR_POINTS)
    ]
    runs = []
    for index, (batch, lr) in enumerate(grid):
        control.progress(index / len(grid), f"run {index + 1}/{len(grid)}: batch {batch}, lr {lr:.2e}")
        time.sleep(seconds)
        _trace(payload, index)
        runs.append(_synthetic_run(spec, batch, lr, seconds))
    best = min(
        (r for r in runs if r.status == RunStatus.SUCCESS),
        key=lambda r: r.eval_loss or math.inf,
        default=None,
    )
    recommendation = (
        None
        if best is None
        else {
            "batch_size": best.config.batch_size,
            "learning_rate": best.config.learning_rate,
            "eval_loss": best.eval_loss,
            "source": "synthetic",
        }
    )
    return JobResult(
        runs=runs,
        recommendation=recommendation or {"reason": "every run diverged"},
        recommendation_available=best is not None,
        batch_size=best.config.batch_size if best else None,
        learning_rate=best.config.learning_rate if best else None,
    )


def _synthetic_run(spec: StudySpec, batch: int, lr: float, seconds: float) -> RunRecord:
    distance = math.log10(lr / synthetic_optimum(batch))
    diverged = distance > 1.0  # 10× past the optimum blows up
    loss = 1.0 + 0.25 * distance**2 + 0.5 / math.sqrt(batch)
    config = RunConfig(
        method=spec.method,
        rank=spec.rank,
        alpha=float(spec.alpha or spec.rank),
        batch_size=batch,
        learning_rate=lr,
        micro_batch_size=batch,
        accumulation_steps=1,
        planned_steps=10,
        warmup_steps=0,
        max_seq_len=spec.training.max_seq_len,
        seed=spec.training.seed,
        device="none",
        precision="fp32",
    )
    evals = [{"step": s, "examples_seen": s * batch, "eval_loss": loss + 1.0 / s} for s in (2, 5, 10)]
    return RunRecord(
        status=RunStatus.DIVERGED if diverged else RunStatus.SUCCESS,
        config=config,
        spec=spec.model_dump(mode="json"),
        eval_loss=None if diverged else loss,
        best_eval_loss=None if diverged else loss,
        steps=10,
        examples_seen=10 * batch,
        seconds=seconds,
        metrics={"steps": [], "evals": [] if diverged else evals, "oom_events": []},
        meta={"job_function": "synthetic", "pid": os.getpid()},
    )


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
