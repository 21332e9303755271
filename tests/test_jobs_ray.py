"""The Ray executor on a real local Ray cluster (start-up ~5-10 s): a study's control loop runs in the
worker process, each of its proxy runs as a Ray task of its own.

Deselect with `-k "not ray"`. Ray listens on loopback only here: RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
keeps its node on 127.0.0.1 (set before Ray is imported: Ray reads it once, at import), RAY_AUTH_MODE=disabled
stops it writing ~/.ray/auth_token, and a fresh temp dir per run keeps a stale cluster file from sending
ray.init to a dead cluster. tests/test_ray_runs.py runs studies on a cluster of two nodes.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy_runs.ray_cluster import use_loopback_environment

use_loopback_environment()  # RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 and RAY_AUTH_MODE=disabled, before Ray
ray = pytest.importorskip("ray", reason="the ray executor needs `pip install ray`")

from sqlalchemy import select  # noqa: E402 (after the loopback environment, like everything that may import ray)

from advisor.jobs import queue  # noqa: E402
from advisor.jobs.executors import RayExecutor, make_executor, wait_for  # noqa: E402
from advisor.jobs.worker import Worker  # noqa: E402
from advisor.specs import parse_spec  # noqa: E402
from advisor.storage.db import Database  # noqa: E402
from advisor.storage.models import ProxyRun, Study  # noqa: E402
from advisor.study.runner import ProxyRunner  # noqa: E402
from advisor.study.synthetic import SyntheticRunner  # noqa: E402
from api import testing  # noqa: E402
from proxy_runs.ray_runner import RayRunner  # noqa: E402

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
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


def synthetic_runs_on_ray(
    parallel: int | None = None,
    ray_address: str | None = None,
    *,
    ray_gpus_per_run: float = 0.0,
    ray_cpus_per_run: float = 1.0,
    seconds_per_run: float = 0.01,
) -> ProxyRunner:
    """`proxy_runs.torch_runner`'s signature, training SyntheticRunner's closed-form runs instead of torch."""
    assert ray_address is not None, "the ray executor gives the runner its cluster's address"
    make_runner = functools.partial(SyntheticRunner, seconds_per_run=seconds_per_run)
    return RayRunner(
        ray_address, gpus_per_run=ray_gpus_per_run, cpus_per_run=ray_cpus_per_run, make_runner=make_runner
    )


def submit_study(db: Database, tmp_path: Path) -> int:
    """The example study as the service queues it (job function `study`), its paths absolute as on submit."""
    models, datasets = testing.make_roots(tmp_path)
    spec = parse_spec(
        {
            **testing.example_spec(tmp_path),
            "model": str(models / "tiny-llama"),
            "dataset": {"path": str(datasets / "train.jsonl")},
        }
    )
    return queue.submit_study(
        db,
        spec=spec,
        function="study",
        max_attempts=2,
        token_id=None,
        dataset_fingerprint=None,
        idempotency=None,
    )[0]


def test_a_ray_workers_study_runs_in_the_worker_and_each_proxy_run_as_a_ray_task(
    ray_cluster: None, tmp_path: Path
) -> None:
    # Changed with issue 34: the whole study used to be one Ray task; now only its runs are.
    db = testing.migrated(f"sqlite:///{tmp_path / 'ray.db'}")
    study_ids = [submit_study(db, tmp_path) for _ in range(2)]
    # num_gpus=0: this machine has none; production sets LORA_ADVISOR_RAY_GPUS_PER_TASK (default 1).
    options = testing.worker_options(runner=synthetic_runs_on_ray)
    worker = Worker(db, options=options, executor=RayExecutor(num_gpus=0, num_cpus=1))
    assert wait_for(
        lambda: not worker.run_once() and all(state(db, i) == "succeeded" for i in study_ids),
        timeout=60,
        interval=0.1,
    )
    with db.transaction(write=False) as session:
        runs = session.scalars(select(ProxyRun).where(ProxyRun.study_id == study_ids[0])).all()
    calibration, *proxy_runs = sorted(runs, key=lambda run: run.run_index)
    assert calibration.meta["pid"] == os.getpid()  # the study itself ran here, in the worker
    assert proxy_runs and all(run.meta["pid"] != os.getpid() for run in proxy_runs)  # its runs in Ray workers
    assert all(run.meta["ray_node"] == ray.get_runtime_context().get_node_id() for run in proxy_runs)
    db.dispose()


def test_canceling_a_study_cancels_its_runs_in_flight_on_ray(ray_cluster: None, tmp_path: Path) -> None:
    # Changed with issue 34: a cancel used to cancel the study's one Ray task; now it cancels the runs in
    # flight. A rung of 5-second runs on 2 CPUs lasts far longer than the 15 s allowed here.
    db = testing.migrated(f"sqlite:///{tmp_path / 'ray.db'}")
    study_id = submit_study(db, tmp_path)
    options = testing.worker_options(
        lease_seconds=0.6, runner=functools.partial(synthetic_runs_on_ray, seconds_per_run=5)
    )
    with testing.worker_thread(db, options, executor=RayExecutor(num_gpus=0, num_cpus=1)):
        assert wait_for(lambda: state(db, study_id) == "running", timeout=30)
        queue.request_cancel(db, study_id=study_id)
        assert wait_for(lambda: state(db, study_id) == "canceled", timeout=15)
    db.dispose()


def state(db: Database, study_id: int) -> str:
    with db.transaction(write=False) as session:
        return session.get_one(Study, study_id).state
