"""`ParallelRunner`: a study's proxy runs trained N at a time, each in a worker process of its own.

The study hands a batched runner every run of a rung at once (`advisor.study.halving`), chosen by what each
is planned to cost, so its runs and its pick are the same at any N. Each worker trains with one torch thread
on CPU (N workers share the cores instead of fighting over them), or on one GPU of its own, round-robin,
when there are GPUs. Preparing the data, the calibration and the curvature probes stay in this process.

Paused runs wait as files in a private temporary folder that every worker reads (`FolderShelf`), so a
promoted config resumes in whichever worker trains its next rung, bitwise the run that never stopped; the
plan weighs the disk's time against retraining, as it does for paused runs past a machine's memory. A worker
that dies takes only its run down: that run is tried once more in a fresh pool (from its paused checkpoint if
it had not yet taken it, else from the start: the same run either way), then recorded as failed.

`RunsElsewhere` is what it shares with `proxy_runs.ray_runner.RayRunner`, which sends each run to a Ray
cluster instead; `failed_record` too.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import socket
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from advisor.records import RunConfig, RunRecord, RunStatus
from advisor.specs import StudySpec
from advisor.study.runner import (
    Calibration,
    Config,
    DataSummary,
    PausedRuns,
    Probe,
    ProxyRunner,
    RunnerFactory,
    RunRequest,
    Schedule,
    ShelfRoom,
)
from proxy_runs.resume import measure_spill_speed, spill_disk_bytes, spill_seconds
from proxy_runs.shared_shelf import FolderShelf

RETRIES = 1  # a run whose worker died is tried this many more times before it is recorded as failed

_worker_runner: Any = None  # the worker process's own TorchRunner (its data cache lives as long as it does)


def _start_worker(slots: Any, gpus: int, make_runner: RunnerFactory) -> None:
    """In a new worker: one torch thread, and its own GPU when there are any (before CUDA starts)."""
    with slots.get_lock():
        slot = slots.value
        slots.value += 1
    if gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(slot % gpus)
    import torch

    torch.set_num_threads(1)
    global _worker_runner
    _worker_runner = make_runner()


def _train(request: RunRequest, shelf: FolderShelf | None) -> RunRecord:
    record = _worker_runner.run(request.spec, request.config, request.schedule, request.stop_at, shelf)
    record.meta["worker"] = f"{socket.gethostname()}:{os.getpid()}"
    return record


def _cuda_devices() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def make_torch_runner() -> ProxyRunner:
    """The runner a worker trains with by default (a module-level callable: it travels to workers by name)."""
    from proxy_runs.runner import TorchRunner

    return TorchRunner()


class RunsElsewhere:
    """What every runner that trains a study's runs in other processes shares (`ParallelRunner`, and
    `proxy_runs.ray_runner.RayRunner` on a Ray cluster): the data, the calibration and the curvature probes
    run on `local`, a runner in this process; the study hands it every run of a rung at once (`batched`);
    and paused runs wait in a `FolderShelf` under `paused_runs_parent` when every worker reads that folder
    (`shares_paused_runs`; the machine's TMPDIR when None), else nowhere: promoted configs restart."""

    batched = True
    local: ProxyRunner
    shares_paused_runs = False
    paused_runs_parent: Path | None = None

    def prepare(self, spec: StudySpec) -> DataSummary:
        return self.local.prepare(spec)

    def calibrate(self, spec: StudySpec, batch_size: int) -> Calibration:
        return self.local.calibrate(spec, batch_size)

    def probe(self, spec: StudySpec) -> Probe:
        return self.local.probe(spec)

    def run(
        self,
        spec: StudySpec,
        config: Config,
        schedule: Schedule,
        stop_at: int,
        paused: PausedRuns | None = None,
    ) -> RunRecord:
        return self.run_many([RunRequest(spec, config, schedule, stop_at)], paused)[0]

    def run_many(self, requests: Sequence[RunRequest], paused: PausedRuns | None = None) -> list[RunRecord]:
        raise NotImplementedError

    def shelf_room(self) -> ShelfRoom:
        """No memory (a checkpoint in one worker's memory is out of the others' reach); the shared folder's
        disk when there is one."""
        disk = spill_disk_bytes(self.paused_runs_parent) if self.shares_paused_runs else 0
        return ShelfRoom(memory_bytes=0, disk_bytes=disk)

    def spill_seconds(self, checkpoint_bytes: int, promoted_share: float) -> float:
        if not self.shares_paused_runs:
            return math.inf
        speed = measure_spill_speed(self.paused_runs_parent, nbytes=checkpoint_bytes)
        return spill_seconds(checkpoint_bytes, speed, promoted_share)

    def paused_runs(self, room: ShelfRoom) -> AbstractContextManager[PausedRuns]:
        if not self.shares_paused_runs or room.disk_bytes == 0:
            return nullcontext(_NoShelf())
        return FolderShelf.create(room.disk_bytes, self.paused_runs_parent)


class ParallelRunner(RunsElsewhere):
    """Trains up to `workers` proxy runs at once in worker processes, each with a runner of
    `make_runner` (a module-level callable: it travels to the workers by name); data, the calibration and the
    probes run on one in this process. Its workers share this machine's disk: paused runs wait there."""

    shares_paused_runs = True

    def __init__(self, workers: int, make_runner: RunnerFactory = make_torch_runner) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.workers = workers
        self.make_runner = make_runner
        self._pool: ProcessPoolExecutor | None = None
        self._warm_up()  # workers start (import torch) while this process prepares data and calibrates
        self.local = make_runner()

    def _warm_up(self) -> None:
        pool = self._executor()
        for _ in range(self.workers):
            pool.submit(os.getpid)

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            context = multiprocessing.get_context("spawn")  # fork would copy this process's threads and locks
            slots = context.Value("i", 0)
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=context,
                initializer=_start_worker,
                initargs=(slots, _cuda_devices(), self.make_runner),
            )
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def __del__(self) -> None:
        self.close()

    def run_many(self, requests: Sequence[RunRequest], paused: PausedRuns | None = None) -> list[RunRecord]:
        """Every request trained in a worker, up to `workers` at once; records in the requests' order."""
        records: list[RunRecord | None] = [None] * len(requests)
        pending = list(range(len(requests)))
        shelf = paused if isinstance(paused, FolderShelf) else None
        for attempt in range(RETRIES + 1):
            pool = self._executor()
            futures: dict[int, Future[RunRecord]] = {
                i: pool.submit(_train, requests[i], shelf) for i in pending
            }
            broken = []
            for index, future in futures.items():
                try:
                    records[index] = future.result()
                except BrokenProcessPool:
                    broken.append(index)
            if broken:
                self.close()  # a worker died: every run left in this pool is lost with it; a fresh one
            pending = broken
            if not pending:
                break
            if attempt == RETRIES:
                for index in pending:
                    records[index] = failed_record(requests[index], "its worker process died, twice")
        return [record for record in records if record is not None]


class _NoShelf:
    """Nothing paused: every promoted config restarts."""

    def paused_at(self, key: object) -> int:
        return 0

    def keep_only(self, keys: set[Any]) -> None:
        return None


def failed_record(request: RunRequest, error: str) -> RunRecord:
    """The record of a run that never finished for reasons of its own (not its hyperparameters)."""
    spec, (batch, lr) = request.spec, request.config
    return RunRecord(
        status=RunStatus.FAILED,
        error=error,
        config=RunConfig(
            method=spec.method,
            rank=spec.rank,
            alpha=float(spec.alpha or spec.rank),
            batch_size=batch,
            learning_rate=lr,
            micro_batch_size=batch,
            accumulation_steps=1,
            planned_steps=max(1, request.schedule.examples // batch),
            warmup_steps=0,
            max_seq_len=spec.training.max_seq_len,
            seed=spec.training.seed,
            device="none",
            precision=spec.training.precision,
        ),
        spec=spec.model_dump(mode="json"),
    )
