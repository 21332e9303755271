"""The database job queue: leases, heartbeats, attempts, stale writes, retries, cancellation, kill -9.

Jobs here run the registered `synthetic` job function (a full study shape with a closed-form loss and a
fixed time per run), through the real Worker and the real database, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from advisor.jobs import queue
from advisor.jobs.control import JobControl
from advisor.jobs.executors import wait_for
from advisor.jobs.functions import run_synthetic_study
from advisor.jobs.worker import Worker
from advisor.specs import parse_spec
from advisor.storage.db import Database
from advisor.storage.errors import Conflict, StaleAttempt
from advisor.storage.models import Job, ProxyRun, RecommendationRow, Study
from api import testing

RUNS_PER_STUDY = testing.example_study_runs()  # a whole study of testing.example_spec, on its surface


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    for url in testing.database_url(request.param, tmp_path):
        database = testing.migrated(url)
        yield database
        database.dispose()


def submit(
    db: Database, tmp_path: Path, *, function: str = "synthetic", max_attempts: int = 3, **options: object
) -> int:
    testing.make_roots(tmp_path)
    spec = parse_spec(testing.example_spec(tmp_path))
    study_id, created = queue.submit_study(
        db,
        spec=spec,
        function=function,
        max_attempts=max_attempts,
        token_id=None,
        dataset_fingerprint=None,
        idempotency=None,
        options={**testing.FAST_JOB, **options},
    )
    assert created
    return study_id


def study(db: Database, study_id: int) -> Study:
    with db.transaction(write=False) as session:
        return session.get_one(Study, study_id)


def job(db: Database, study_id: int) -> Job:
    with db.transaction(write=False) as session:
        return session.scalars(select(Job).where(Job.study_id == study_id)).one()


def run_attempts(db: Database, study_id: int) -> list[int]:
    with db.transaction(write=False) as session:
        return list(session.scalars(select(ProxyRun.attempt).where(ProxyRun.study_id == study_id)))


def test_a_job_completes_with_one_result_per_run_and_a_recommendation(db: Database, tmp_path: Path) -> None:
    study_id = submit(db, tmp_path)
    worker = Worker(db, options=testing.worker_options())
    assert worker.run_once()
    assert not worker.run_once()  # nothing else is due
    assert study(db, study_id).state == "succeeded"
    assert run_attempts(db, study_id) == [1] * RUNS_PER_STUDY
    with db.transaction(write=False) as session:
        recommendation = session.scalars(select(RecommendationRow)).one()
    assert recommendation.available and recommendation.batch_size in (8, 16)


def test_a_stale_attempt_cannot_heartbeat_or_write_results(db: Database, tmp_path: Path) -> None:
    study_id = submit(db, tmp_path)
    first = queue.claim(db, worker_id="slow-worker", lease_seconds=0.2)
    assert first is not None and first.attempt == 1
    time.sleep(0.3)  # the lease expires while the slow worker is still busy
    second = queue.claim(db, worker_id="fresh-worker", lease_seconds=30)
    assert second is not None and second.attempt == 2

    result = run_synthetic_study(first.payload, JobControl())
    with pytest.raises(StaleAttempt):
        queue.heartbeat(db, lease=first)
    with pytest.raises(StaleAttempt):
        queue.complete(db, lease=first, result=result)
    assert run_attempts(db, study_id) == []  # the late write changed nothing

    queue.complete(db, lease=second, result=run_synthetic_study(second.payload, JobControl()))
    with pytest.raises(StaleAttempt):  # and finished jobs accept no second result either
        queue.complete(db, lease=second, result=result)
    assert run_attempts(db, study_id) == [2] * RUNS_PER_STUDY
    assert study(db, study_id).state == "succeeded"


def test_failures_retry_with_backoff_then_succeed(db: Database, tmp_path: Path) -> None:
    study_id = submit(db, tmp_path, trace_dir=str(tmp_path / "trace"), fail_attempts=2)
    worker = Worker(
        db, options=testing.worker_options(backoff=queue.Backoff(base_seconds=0.3, cap_seconds=1))
    )
    before = time.monotonic()
    assert worker.run_once()  # attempt 1 fails
    queued = job(db, study_id)
    assert (queued.state, queued.attempt) == ("queued", 1) and "synthetic failure 1" in (
        queued.last_error or ""
    )
    assert not worker.run_once()  # backing off: not due yet
    assert wait_for(lambda: worker.run_once() and job(db, study_id).attempt == 2, timeout=5)
    assert wait_for(lambda: worker.run_once() and study(db, study_id).state == "succeeded", timeout=5)
    assert time.monotonic() - before >= 0.3 + 0.6  # base, then doubled
    assert job(db, study_id).attempt == 3
    assert run_attempts(db, study_id) == [3] * RUNS_PER_STUDY


def test_a_job_that_keeps_failing_stops_at_max_attempts(db: Database, tmp_path: Path) -> None:
    study_id = submit(db, tmp_path, max_attempts=2, trace_dir=str(tmp_path / "trace"), fail_attempts=9)
    worker = Worker(db, options=testing.worker_options(backoff=queue.Backoff(0.01, 0.01)))
    assert wait_for(lambda: (worker.run_once(), study(db, study_id).state == "failed")[1], timeout=5)
    final = study(db, study_id)
    assert final.state == "failed" and "synthetic failure 2" in (final.error or "")
    assert job(db, study_id).attempt == 2


def test_a_permanent_error_is_not_retried(db: Database, tmp_path: Path) -> None:
    study_id = submit(db, tmp_path, function="no_such_function")
    assert Worker(db, options=testing.worker_options()).run_once()
    final = study(db, study_id)
    assert final.state == "failed" and "unknown job function" in (final.error or "")
    assert job(db, study_id).attempt == 1


def test_cancel_a_queued_study_and_a_running_one(db: Database, tmp_path: Path) -> None:
    queued_id = submit(db, tmp_path)
    assert queue.request_cancel(db, study_id=queued_id) == "canceled"
    with pytest.raises(Conflict):
        queue.request_cancel(db, study_id=queued_id)

    running_id = submit(db, tmp_path, seconds_per_run=0.2)
    with testing.worker_thread(db, testing.worker_options(lease_seconds=0.6)):
        assert wait_for(lambda: study(db, running_id).state == "running", timeout=5)
        queue.request_cancel(db, study_id=running_id)
        assert wait_for(lambda: study(db, running_id).state == "canceled", timeout=5)
    assert job(db, running_id).state == "canceled"
    assert run_attempts(db, running_id) == []


def test_competing_workers_give_every_study_exactly_one_result_set(db: Database, tmp_path: Path) -> None:
    ids = [submit(db, tmp_path) for _ in range(6)]
    with testing.worker_thread(db), testing.worker_thread(db), testing.worker_thread(db):
        assert wait_for(lambda: all(study(db, i).state == "succeeded" for i in ids), timeout=30, interval=0.1)
    with db.transaction(write=False) as session:
        per_study = dict(
            session.execute(select(ProxyRun.study_id, func.count()).group_by(ProxyRun.study_id)).all()
        )
    assert per_study == {i: RUNS_PER_STUDY for i in ids}


WORKER_PROCESS = """
import sys
from advisor.jobs.worker import WorkerOptions, worker_process_main
worker_process_main(sys.argv[1], WorkerOptions(lease_seconds=1.0, poll_seconds=0.05))
"""


def test_kill_9_of_a_worker_mid_run_releases_the_job_to_another(db: Database, tmp_path: Path) -> None:
    trace = tmp_path / "trace"
    study_id = submit(db, tmp_path, seconds_per_run=0.15, trace_dir=str(trace))
    process = subprocess.Popen([sys.executable, "-c", WORKER_PROCESS, db.url], stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: trace.exists() and len(list(trace.iterdir())) >= 2, timeout=30)
        os.kill(process.pid, signal.SIGKILL)  # mid-study: some runs done, no result written
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
    assert study(db, study_id).state == "running" and run_attempts(db, study_id) == []

    with testing.worker_thread(db, testing.worker_options(lease_seconds=1.0)):
        assert wait_for(lambda: study(db, study_id).state == "succeeded", timeout=20)
    assert run_attempts(db, study_id) == [2] * RUNS_PER_STUDY  # exactly one result per run
    executed = len(list(trace.iterdir()))
    assert executed > RUNS_PER_STUDY  # at-least-once execution: the killed attempt's runs were redone
