"""A study's proxy runs as Ray tasks on a real two-node Ray cluster on loopback (`proxy_runs.ray_cluster`: a
head and a worker node, one CPU each, every port on 127.0.0.1; ~10 s to start).

Specified here: the runs and the pick are bitwise those of a TorchRunner in one process, the runs come from
both nodes, and paused runs resume from a folder both read; a Ray worker process killed mid-run costs only a
retry of its run, and a run whose worker dies every time is recorded as failed while the study finishes; a
study a service worker leases from the PostgreSQL queue with executor "ray" is stored with runs from both
nodes.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy_runs.ray_cluster import use_loopback_environment

use_loopback_environment()  # before Ray is imported: it reads RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER once, then
ray = pytest.importorskip("ray", reason="proxy runs on Ray need `pip install ray`")

from sqlalchemy import select  # noqa: E402 (after the loopback environment, like everything that may import ray)

from advisor.jobs import queue  # noqa: E402
from advisor.jobs.executors import make_executor  # noqa: E402
from advisor.jobs.worker import Worker  # noqa: E402
from advisor.records import RunStatus  # noqa: E402
from advisor.science.recommendation import Recommendation  # noqa: E402
from advisor.specs import StudySpec, parse_spec  # noqa: E402
from advisor.storage.models import ProxyRun, Study  # noqa: E402
from advisor.study import StudyResult, run_study  # noqa: E402
from advisor.study.runner import Config, ProxyRunner, ShelfRoom  # noqa: E402
from advisor.study.synthetic import Surface, SyntheticRunner  # noqa: E402
from api import testing  # noqa: E402
from proxy_runs import torch_runner  # noqa: E402
from proxy_runs.ray_cluster import LoopbackCluster, loopback_cluster  # noqa: E402
from proxy_runs.ray_runner import RayRunner  # noqa: E402
from proxy_runs.runner import TorchRunner  # noqa: E402
from tests.conftest import PG_ENV, make_spec  # noqa: E402
from tests.test_parallel import runs_of, synthetic_spec  # noqa: E402

pytestmark = pytest.mark.ray

# The runner factories below run inside the cluster's worker processes, which cannot import this file by its
# pytest name: they travel by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

SECONDS_PER_RUN = 0.25  # a synthetic run: long enough to be killed mid-run, short enough for a quick study


@pytest.fixture(scope="module")
def cluster() -> Iterator[LoopbackCluster]:
    with loopback_cluster(nodes=2, cpus_per_node=1) as started:
        yield started


def node_ids() -> set[str]:
    return {node["NodeID"] for node in ray.nodes() if node["Alive"]}


def tiny_study(tiny_llama: Path, instruction_jsonl: Path, examples: int) -> StudySpec:
    """A whole study of the tiny Llama: 39 runs at 900 examples, ~15 s on two one-CPU nodes."""
    return parse_spec(
        make_spec(
            tiny_llama,
            instruction_jsonl,
            batch_sizes=[4, 8],
            lr_range=[1e-3, 1.0],
            budget={"proxy_seconds": None, "proxy_examples": examples},
        )
    )


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """A Ray task trains with one thread per CPU it asked for (one); floats sum in another order at two."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def pick_of(result: StudyResult) -> tuple[int, float]:
    assert isinstance(result.recommendation, Recommendation)
    return result.recommendation.batch_size, result.recommendation.learning_rate


def test_a_study_on_two_nodes_makes_the_runs_and_the_pick_of_one_torch_runner(
    cluster: LoopbackCluster, tiny_llama: Path, instruction_jsonl: Path, tmp_path: Path
) -> None:
    spec = tiny_study(tiny_llama, instruction_jsonl, examples=900)
    with one_torch_thread():
        in_one_process = run_study(spec, TorchRunner())
        # paused runs wait in a folder both nodes read (on one machine, any folder)
        on_ray = run_study(spec, RayRunner(cluster.address, paused_runs_dir=tmp_path))
    assert runs_of(on_ray) == runs_of(in_one_process)  # every config, examples seen and loss, bitwise
    assert pick_of(on_ray) == pick_of(in_one_process)
    resumed = [run for run in on_ray.runs if run.examples_trained < run.examples_seen]
    assert resumed  # promoted configs went on from their paused runs, on whichever node trained them
    trained_on_ray = on_ray.runs[1:]  # the first is the calibration run, trained here
    assert all(run.meta["worker"] and run.meta["ray_node"] for run in trained_on_ray)
    assert {run.meta["ray_node"] for run in trained_on_ray} == node_ids()  # both nodes trained runs


# A Ray worker process dies mid-run ------------------------------------------------------------------------


class SyntheticRunnerWithoutPausedRuns(SyntheticRunner):
    """The synthetic runs of `runner_that_notes_its_pid` as a RayRunner plans them (a rung at once, promoted
    configs restarting), in this process and unattended: the runs a study on Ray should record, once each."""

    def __init__(self) -> None:
        super().__init__(Surface(noise=0.01), batched=True)

    def shelf_room(self) -> ShelfRoom:
        return ShelfRoom(memory_bytes=0)


def note_pid(folder: str, spec: StudySpec, config: Config) -> None:
    """Leave this process's pid where the test can see which process trains a run right now."""
    Path(folder, str(os.getpid())).touch()


def runner_that_notes_its_pid(folder: str) -> ProxyRunner:
    return SyntheticRunner(
        Surface(noise=0.01), seconds_per_run=SECONDS_PER_RUN, on_run=functools.partial(note_pid, folder)
    )


def kill_the_first_ray_worker_seen(folder: Path, stop: threading.Event) -> list[int]:
    """SIGKILL, once, the first process other than this one to note its pid in `folder`: a Ray worker
    process, killed mid-run as the kernel's OOM killer or a preempted machine would."""
    killed: list[int] = []

    def watch() -> None:
        while not stop.is_set() and not killed:
            for entry in folder.iterdir():
                if int(entry.name) != os.getpid():
                    os.kill(int(entry.name), signal.SIGKILL)  # a process this test's cluster started
                    killed.append(int(entry.name))
                    return
            stop.wait(0.05)

    threading.Thread(target=watch, daemon=True).start()
    return killed


def test_a_ray_worker_killed_mid_run_costs_only_a_retry_of_its_run(
    cluster: LoopbackCluster, tmp_path: Path
) -> None:
    stop = threading.Event()
    killed = kill_the_first_ray_worker_seen(tmp_path, stop)
    try:
        result = run_study(
            synthetic_spec(),
            RayRunner(
                cluster.address, make_runner=functools.partial(runner_that_notes_its_pid, str(tmp_path))
            ),
        )
    finally:
        stop.set()
    assert killed  # a worker did die mid-run
    assert runs_of(result) == runs_of(run_study(synthetic_spec(), SyntheticRunnerWithoutPausedRuns()))


def dies_at_lr(lr: float, spec: StudySpec, config: Config) -> None:
    if config[1] == lr:
        os._exit(9)  # as under kill -9, every time this config is trained


def runner_that_dies_at_lr(lr: float) -> ProxyRunner:
    return SyntheticRunner(Surface(noise=0.01), on_run=functools.partial(dies_at_lr, lr))


def test_a_run_whose_worker_dies_every_time_is_recorded_failed_and_the_study_finishes(
    cluster: LoopbackCluster,
) -> None:
    result = run_study(
        synthetic_spec(),
        RayRunner(cluster.address, make_runner=functools.partial(runner_that_dies_at_lr, 2e-4)),
    )
    lost = [run for run in result.runs if run.config.learning_rate == 2e-4]
    assert lost and all(run.status == RunStatus.FAILED for run in lost)
    assert all("its Ray worker died, 2 times" in (run.error or "") for run in lost)  # tried twice
    assert not any(run.status == RunStatus.FAILED for run in result.runs if run not in lost)
    assert isinstance(result.recommendation, Recommendation)


# The service: a worker with executor "ray" on PostgreSQL -------------------------------------------------


@pytest.mark.postgres
def test_a_queued_study_runs_in_a_ray_worker_with_runs_from_both_nodes_stored_in_postgresql(
    cluster: LoopbackCluster, tiny_llama: Path, instruction_jsonl: Path
) -> None:
    if not os.environ.get(PG_ENV):
        pytest.skip(f"{PG_ENV} is not set; .ci/run starts PostgreSQL and sets it")
    with testing.fresh_postgres_database() as url:
        db = testing.migrated(url)
        try:
            study_id, _ = queue.submit_study(
                db,
                # as long as the first test's: a shorter study can end before the second node's Ray worker
                # has imported torch, every run then on the first node
                spec=tiny_study(tiny_llama, instruction_jsonl, examples=900),
                function="study",
                max_attempts=1,
                token_id=None,
                dataset_fingerprint=None,
                idempotency=None,
            )
            # What `LORA_ADVISOR_EXECUTOR=ray LORA_ADVISOR_RAY_GPUS_PER_TASK=0` gives a service worker.
            executor = make_executor("ray", address=cluster.address, num_gpus=0)
            options = testing.worker_options(lease_seconds=10.0, runner=torch_runner)
            assert Worker(db, options=options, executor=executor).run_once()
            with db.transaction(write=False) as session:
                assert session.get_one(Study, study_id).state == "succeeded"
                runs = session.scalars(select(ProxyRun).where(ProxyRun.study_id == study_id)).all()
            assert {run.meta.get("ray_node") for run in runs} - {None} == node_ids()
        finally:
            db.dispose()


def test_ray_runs_are_refused_when_no_node_has_the_gpus_they_ask_for(cluster: LoopbackCluster) -> None:
    with pytest.raises(ValueError, match=r"asks Ray for 1 CPUs and 1 GPUs, but no node has them"):
        RayRunner(cluster.address, gpus_per_run=1, make_runner=SyntheticRunner)
