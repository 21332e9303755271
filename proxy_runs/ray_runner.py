"""`RayRunner`: a study's proxy runs as Ray tasks on a cluster, one task per run, on any of its machines.

The study's control loop stays in this process, and so do the data, the calibration and the curvature
probes (as in `ParallelRunner`, whose `RunsElsewhere` this shares). Each run of a rung becomes a Ray task
that asks for `cpus_per_run` CPUs and `gpus_per_run` GPUs (a fraction such as 0.25 packs four runs onto one
GPU); Ray's scheduler places it on whichever node has the room. Records come back in the requests' order,
and each run trains exactly as in a `ParallelRunner` worker (its seed and data order depend only on its
config; one torch thread per CPU asked for, one by default), so the study's runs and pick are bitwise those
of `ParallelRunner` at any number of nodes.

A task's worker process keeps its runner, and so the runner's tokenized data, for the next run of the same
study that Ray gives it: tasks are declared with `max_calls=0`, since Ray's default for GPU tasks is a fresh
process per task.

Faults: a run whose worker process or node died (Ray raises `WorkerCrashedError` or `NodeDiedError`) is
tried once more, then recorded FAILED (`failed_record`); any other error in a run ends the study, as it does
with `ParallelRunner`. With `stop_when` set (the service sets its job's cancel check), a canceled study
cancels its tasks in flight instead of waiting for the rung to end.

Every node needs this package and its dependencies (the driver's versions) and the model and dataset at the
paths the spec names: docs/ray.md.
"""

from __future__ import annotations

import math
import os
import socket
import sys
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from advisor.records import RunRecord
from advisor.study.runner import PausedRuns, ProxyRunner, RunnerFactory, RunRequest
from proxy_runs.parallel import RETRIES, RunsElsewhere, failed_record, make_torch_runner
from proxy_runs.shared_shelf import FolderShelf

POLL_SECONDS = 0.5  # how often a waiting rung checks whether its study was canceled
MAX_WARM_UPS = 64  # Ray workers started ahead of the first rung, at most (a big cluster has room for more)

# In a Ray worker process: the runner of the study it last trained a run for, by that study's token. One
# study's data cache is kept between its runs; a later study's runner replaces it (a service's workers would
# otherwise keep every study's data).
_worker_runner: tuple[str, ProxyRunner] | None = None


def train_in_ray_worker(
    study: str, make_runner: RunnerFactory, threads: int, request: RunRequest, shelf: FolderShelf | None
) -> RunRecord:
    """The body of a run's Ray task: train `request` with this process's runner for `study`, pausing to and
    resuming from `shelf` (a folder every node reads) when there is one."""
    import ray

    record = _runner_for(study, make_runner, threads).run(
        request.spec, request.config, request.schedule, request.stop_at, shelf
    )
    node = ray.get_runtime_context().get_node_id()
    record.meta["worker"] = f"{socket.gethostname()}:{os.getpid()} (ray node {node[:12]})"
    record.meta["ray_node"] = node
    return record


def warm_up_in_ray_worker(study: str, make_runner: RunnerFactory, threads: int) -> None:
    """Build this process's runner for `study` (imports torch) before the first rung needs it."""
    _runner_for(study, make_runner, threads)


def _runner_for(study: str, make_runner: RunnerFactory, threads: int) -> ProxyRunner:
    global _worker_runner
    if _worker_runner is None or _worker_runner[0] != study:
        _worker_runner = (study, make_runner())
        # As many torch threads as CPUs asked for, so runs on one node share its cores. A torch runner has
        # imported torch by now; other runners never pay for it.
        torch = sys.modules.get("torch")
        if torch is not None:
            torch.set_num_threads(threads)
    return _worker_runner[1]


def connect(address: str | None) -> Any:
    """The `ray` module, connected: to the cluster this process has already joined, else to `address` (None or
    "auto": the cluster RAY_ADDRESS names, or the one `ray start` started on this machine)."""
    import ray  # optional dependency (`pip install lora-advisor[ray]`): only Ray studies need it

    if not ray.is_initialized():
        ray.init(address=address or "auto", log_to_driver=False)
    return ray


def runs_with_room(cluster: dict[str, float], cpus_per_run: float, gpus_per_run: float) -> int:
    """How many runs the cluster could train at once, by its CPUs and, for GPU runs, its GPUs."""
    room = cluster.get("CPU", 0.0) / cpus_per_run
    if gpus_per_run > 0:
        room = min(room, cluster.get("GPU", 0.0) / gpus_per_run)
    return math.floor(room)


def check_room(nodes: list[dict[str, float]], cpus_per_run: float, gpus_per_run: float) -> None:
    """Refuse at once a run that no node could ever take (`nodes`: each live node's resources), rather than
    leave the study waiting for it forever."""
    if any(node.get("CPU", 0.0) >= cpus_per_run and node.get("GPU", 0.0) >= gpus_per_run for node in nodes):
        return
    have = "; ".join(f"{node.get('CPU', 0.0):g} CPUs, {node.get('GPU', 0.0):g} GPUs" for node in nodes)
    raise ValueError(
        f"each proxy run asks Ray for {cpus_per_run:g} CPUs and {gpus_per_run:g} GPUs, but no node has them "
        f"(nodes: {have or 'none'}); on a CPU-only cluster set GPUs per run to 0 "
        "(LORA_ADVISOR_RAY_GPUS_PER_TASK=0, or `advisor recommend --ray-gpus-per-run 0`)"
    )


class RayRunner(RunsElsewhere):
    """Trains a study's proxy runs as Ray tasks on the cluster at `address` (module docstring), at most
    `max_in_flight` at once (None: as many as the cluster has room for). `make_runner` builds the runner each
    Ray worker trains with, and the one in this process (it travels to the cluster by pickling). With
    `paused_runs_dir`, a folder every node mounts at that path, paused runs wait there between rungs."""

    def __init__(
        self,
        address: str | None,
        *,
        gpus_per_run: float = 0.0,
        cpus_per_run: float = 1.0,
        max_in_flight: int | None = None,
        make_runner: RunnerFactory = make_torch_runner,
        paused_runs_dir: Path | None = None,
    ) -> None:
        if not (cpus_per_run > 0 and gpus_per_run >= 0 and math.isfinite(cpus_per_run + gpus_per_run)):
            raise ValueError(
                f"need CPUs per run > 0 and GPUs per run ≥ 0, got {cpus_per_run}, {gpus_per_run}"
            )
        if max_in_flight is not None and max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, got {max_in_flight}")
        self.ray = connect(address)
        check_room(
            [node["Resources"] for node in self.ray.nodes() if node["Alive"]], cpus_per_run, gpus_per_run
        )
        self.max_in_flight = max_in_flight
        self.make_runner = make_runner
        # Paused runs wait where every node reads them: a folder all nodes mount at the same path (on one
        # machine, any local folder); without one, promoted configs restart.
        self.shares_paused_runs = paused_runs_dir is not None
        self.paused_runs_parent = paused_runs_dir
        self.threads = max(1, math.floor(cpus_per_run))
        self.study = uuid.uuid4().hex  # names this runner's runner in the Ray workers (`_runner_for`)
        # No retries by Ray (run_many decides); a worker process kept between tasks (module docstring); and
        # tasks spread over the nodes: by default Ray fills the driver's node first and keeps reusing its
        # worker there while runs queue, so a rung could train on one node while the others idle.
        self._as_task = self.ray.remote(
            num_cpus=cpus_per_run,
            num_gpus=gpus_per_run,
            max_retries=0,
            max_calls=0,
            scheduling_strategy="SPREAD",
        )
        self._train = self._as_task(train_in_ray_worker)
        self._died = (self.ray.exceptions.WorkerCrashedError, self.ray.exceptions.NodeDiedError)
        self._stop_check: Callable[[], None] | None = None
        self._warming = self._warm_up(
            runs_with_room(self.ray.cluster_resources(), cpus_per_run, gpus_per_run)
        )
        self.local = make_runner()

    def _warm_up(self, room: int) -> list[Any]:
        """As ParallelRunner's workers do, Ray workers start (import torch) while this process prepares the
        data and calibrates: one per run the cluster has room for, so every node is ready for the first
        rung."""
        warm_up = self._as_task(warm_up_in_ray_worker)
        count = min(room, self.max_in_flight or MAX_WARM_UPS, MAX_WARM_UPS)
        return [warm_up.remote(self.study, self.make_runner, self.threads) for _ in range(count)]

    def stop_when(self, check: Callable[[], None]) -> None:
        """Call `check` while runs are in flight; when it raises, cancel them and let its exception out."""
        self._stop_check = check

    def run_many(self, requests: Sequence[RunRequest], paused: PausedRuns | None = None) -> list[RunRecord]:
        """Each request a Ray task, at most `max_in_flight` at once; records in the requests' order."""
        records: list[RunRecord | None] = [None] * len(requests)
        shelf = paused if isinstance(paused, FolderShelf) else None
        deaths = [0] * len(requests)
        waiting = deque(range(len(requests)))
        in_flight: dict[Any, int] = {}  # a task's ObjectRef → its request's index
        try:
            while waiting or in_flight:
                while waiting and (self.max_in_flight is None or len(in_flight) < self.max_in_flight):
                    index = waiting.popleft()
                    in_flight[self._submit(requests[index], shelf)] = index
                done, _ = self.ray.wait(list(in_flight), num_returns=1, timeout=POLL_SECONDS)
                if self._stop_check is not None:
                    self._stop_check()
                for ref in done:
                    index = in_flight.pop(ref)
                    try:
                        records[index] = self.ray.get(ref)
                    except self._died as exc:
                        deaths[index] += 1
                        if deaths[index] > RETRIES:
                            error = f"its Ray worker died, {deaths[index]} times ({type(exc).__name__})"
                            records[index] = failed_record(requests[index], error)
                        else:
                            waiting.appendleft(index)  # tried again first: the rung waits for it
        except BaseException:
            for ref in in_flight:
                self.ray.cancel(ref, force=True)
            raise
        return [record for record in records if record is not None]

    def _submit(self, request: RunRequest, shelf: FolderShelf | None) -> Any:
        """The run's Ray task, started: its ObjectRef."""
        return self._train.remote(self.study, self.make_runner, self.threads, request, shelf)
