"""Sample studies for the dashboard's tests and for a look at the pages without running a study.

`seed(db)` submits each sample as a `synthetic` study and runs it the way a worker does: the real study logic
(`advisor.study`) on `SyntheticRunner`'s closed-form loss surface, whose optimum LR grows like √B, stored by
`advisor.jobs.queue.complete`. One pair of studies is of a sibling proxy (so it probes curvature on proxy and
target), one study's runs all diverge, and one is left running.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from advisor.jobs import queue
from advisor.jobs.control import JobControl
from advisor.jobs.functions import run_synthetic_study
from advisor.specs import StudySpec, parse_spec
from advisor.storage import repository as repo
from advisor.storage.db import Database
from advisor.storage.models import Study, StudyState, utcnow


@dataclasses.dataclass(frozen=True)
class SampleStudy:
    model: str
    method: str
    rank: int
    examples: int  # training examples (the trends page's dataset size)
    batch_sizes: tuple[int, ...] = (8, 16, 32)
    lr_range: tuple[float, float] = (1e-5, 1e-2)
    lr_scale: float = 1.0  # multiplies the optimum LR (methods and ranks move it)
    probes: bool = False  # a sibling proxy ("<model>-proxy") answers for the model: curvature is probed


SAMPLES = (
    SampleStudy("tiny-llama", "lora", 8, 1000, probes=True),
    SampleStudy("tiny-llama", "dora", 8, 1000, lr_scale=0.5, probes=True),
    SampleStudy("tiny-llama", "lora", 16, 4000, lr_scale=0.7),
    SampleStudy("tiny-qwen", "lora", 8, 1000, lr_scale=1.5),
    SampleStudy("tiny-llama", "lora", 8, 1000, lr_range=(2e-2, 1e-1)),  # every run diverges
)


def spec_for(sample: SampleStudy) -> StudySpec:
    return parse_spec(
        {
            "model": sample.model,
            "proxy_model": f"{sample.model}-proxy" if sample.probes else None,
            "dataset": {"path": "train.jsonl", "max_examples": sample.examples},
            "method": sample.method,
            "rank": sample.rank,
            "batch_sizes": list(sample.batch_sizes),
            "lr_range": list(sample.lr_range),
            "budget": {"proxy_seconds": None, "proxy_examples": 20 * sample.examples},
        }
    )


def store(db: Database, sample: SampleStudy) -> int:
    """One finished study: submitted, leased, run and stored as a worker runs and stores one."""
    with db.transaction() as session:
        study = _new_study(session, sample)
        job = repo.get_job_for_study(session, study_id=study.id)
        lease = queue.try_lease(session, job=job, worker_id="sample", lease_seconds=60.0, now=utcnow())
    assert lease is not None, "a job created in this transaction was taken"
    surface = {"lr_at_batch_8": 2e-4 * sample.lr_scale, "noise": 0.005}
    payload = {**lease.payload, "seconds_per_run": 0.0, "surface": surface}
    queue.complete(db, lease=lease, result=run_synthetic_study(payload, JobControl()))
    return study.id


def store_running(db: Database, sample: SampleStudy, *, progress: float) -> int:
    with db.transaction() as session:
        study = _new_study(session, sample)
        study.state, study.progress, study.message = (
            StudyState.RUNNING,
            progress,
            "run 5/12: batch 16, lr 1e-4",
        )
        return study.id


def _new_study(session: Any, sample: SampleStudy) -> Study:
    return repo.create_study(
        session,
        spec=spec_for(sample),
        function="synthetic",
        max_attempts=1,
        token_id=None,
        dataset_fingerprint=None,
        idempotency=None,
    )


def seed(db: Database) -> dict[str, int]:
    """Every sample study; returns their ids by role: `lora`, `dora`, ..., `diverged`, `running`."""
    ids = {
        name: store(db, sample)
        for name, sample in zip(("lora", "dora", "rank16", "qwen", "diverged"), SAMPLES, strict=True)
    }
    ids["running"] = store_running(db, SAMPLES[0], progress=0.4)
    return ids
