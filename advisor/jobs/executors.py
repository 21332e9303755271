"""Executors by name: where a leased job's function runs.

- `local`: in the worker process itself (workers are separate processes, started by `advisor serve` or
  `advisor worker`), so a crash or kill -9 takes one worker down and its lease expires.
- `ray`: as a Ray task on an existing cluster (by address), requesting GPUs; the worker process keeps the
  lease alive with heartbeats while it waits, and cancels the task when the study is canceled.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any, Protocol

from advisor.jobs.control import JobControl, RunnerFactory
from advisor.jobs.functions import get_job_function
from advisor.jobs.queue import JobResult


class Executor(Protocol):
    name: str

    def execute(self, function: str, payload: dict[str, Any], control: JobControl) -> JobResult: ...


class LocalExecutor:
    name = "local"

    def execute(self, function: str, payload: dict[str, Any], control: JobControl) -> JobResult:
        return get_job_function(function)(payload, control)


def _run_in_ray(function: str, payload: dict[str, Any], runner: RunnerFactory | None) -> JobResult:
    # Inside the Ray worker there is no lease to keep; cancellation arrives as ray.cancel from the owner.
    return get_job_function(function)(payload, JobControl(runner=runner))


@dataclasses.dataclass
class RayExecutor:
    address: str | None = None  # "ray://host:10001" or "host:6379"; None: the already-initialized cluster
    num_gpus: float = 1.0  # per study task; 0 on CPU-only clusters
    num_cpus: float = 1.0
    poll_seconds: float = 0.5
    name: str = "ray"

    def _connect(self) -> Any:
        import ray  # optional dependency: only workers with executor "ray" need it

        if not ray.is_initialized():
            ray.init(address=self.address or "auto", ignore_reinit_error=True, log_to_driver=False)
        return ray

    def execute(self, function: str, payload: dict[str, Any], control: JobControl) -> JobResult:
        ray = self._connect()
        task = ray.remote(num_gpus=self.num_gpus, num_cpus=self.num_cpus, max_retries=0)(_run_in_ray)
        ref = task.remote(function, payload, control.runner)
        while True:
            ready, _ = ray.wait([ref], timeout=self.poll_seconds)
            if ready:
                return ray.get(ref)  # re-raises the task's exception (wrapped), which the worker records
            try:
                control.check()
            except Exception:
                ray.cancel(ref, force=True)
                raise


EXECUTORS: dict[str, Callable[..., Executor]] = {"local": LocalExecutor, "ray": RayExecutor}


def make_executor(name: str, **options: Any) -> Executor:
    key = name.strip().lower()
    if key not in EXECUTORS:
        raise ValueError(f"unknown executor {name!r}; choose one of {', '.join(EXECUTORS)}")
    factory = EXECUTORS[key]
    return factory(**options) if key == "ray" else factory()


def wait_for(predicate: Callable[[], bool], *, timeout: float, interval: float = 0.05) -> bool:
    """Poll `predicate` until true or `timeout` seconds pass (used by tests and the CLI)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
