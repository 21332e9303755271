"""The Ray executor on a real local Ray cluster (start-up ~5-10 s): a study runs as a Ray task.

Deselect with `-k "not ray"`. Ray listens on loopback only here: RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
keeps its node on 127.0.0.1, RAY_AUTH_MODE=disabled stops it writing ~/.ray/auth_token, and a fresh
temp dir per run keeps a stale cluster file from sending ray.init to a dead cluster.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from advisor.jobs import queue
from advisor.jobs.executors import RayExecutor, make_executor, wait_for
from advisor.jobs.worker import Worker
from advisor.specs import parse_spec
from advisor.storage.db import Database
from advisor.storage.models import ProxyRun, Study
from api import testing

ray = pytest.importorskip("ray", reason="the ray executor needs `pip install ray`")


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    os.environ["RAY_AUTH_MODE"] = "disabled"
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    ray.init(
        num_cpus=2,
        num_gpus=0,
        include_dashboard=False,
        _temp_dir=temp_dir,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
    )
    try:
        yield
    finally:
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_unknown_executor_names_are_refused() -> None:
    with pytest.raises(ValueError, match="local, ray"):
        make_executor("slurm")


def test_a_study_runs_as_a_ray_task(ray_cluster: None, tmp_path: Path) -> None:
    db = testing.migrated(f"sqlite:///{tmp_path / 'ray.db'}")
    spec = parse_spec(testing.example_spec(testing.make_roots(tmp_path)[0].parent))
    study_ids = [
        queue.submit_study(
            db,
            spec=spec,
            function="synthetic",
            max_attempts=2,
            token_id=None,
            dataset_fingerprint=None,
            idempotency=None,
            options={"seconds_per_run": 0.01},
        )[0]
        for _ in range(2)
    ]
    # num_gpus=0: this machine has none; production sets LORA_ADVISOR_RAY_GPUS_PER_TASK (default 1).
    worker = Worker(db, options=testing.worker_options(), executor=RayExecutor(num_gpus=0, num_cpus=1))
    assert wait_for(
        lambda: not worker.run_once() and all(state(db, i) == "succeeded" for i in study_ids),
        timeout=60,
        interval=0.1,
    )
    with db.transaction(write=False) as session:
        runs = session.scalars(select(ProxyRun).where(ProxyRun.study_id == study_ids[0])).all()
    assert len(runs) == testing.example_study_runs()
    assert {run.meta["pid"] for run in runs} != {os.getpid()}  # ran in a Ray worker process, not here
    db.dispose()


def test_canceling_a_study_cancels_its_ray_task(ray_cluster: None, tmp_path: Path) -> None:
    db = testing.migrated(f"sqlite:///{tmp_path / 'ray.db'}")
    spec = parse_spec(testing.example_spec(testing.make_roots(tmp_path)[0].parent))
    study_id, _ = queue.submit_study(
        db,
        spec=spec,
        function="synthetic",
        max_attempts=2,
        token_id=None,
        dataset_fingerprint=None,
        idempotency=None,
        options={"seconds_per_run": 5},
    )
    options = testing.worker_options(lease_seconds=0.6)
    with testing.worker_thread(db, options, executor=RayExecutor(num_gpus=0, num_cpus=1, poll_seconds=0.1)):
        assert wait_for(lambda: state(db, study_id) == "running", timeout=30)
        queue.request_cancel(db, study_id=study_id)
        assert wait_for(lambda: state(db, study_id) == "canceled", timeout=15)
    db.dispose()


def state(db: Database, study_id: int) -> str:
    with db.transaction(write=False) as session:
        return session.get_one(Study, study_id).state
