"""Executors by name: where a leased job's function runs.

- `local`: in the worker process itself (workers are separate processes, started by `advisor serve` or
  `advisor worker`), so a crash or kill -9 takes one worker down and its lease expires.
- `ray`: in the worker process too (the study's control loop: plan, rungs, answer), while each proxy run
  trains as a Ray task of its own on an existing cluster (by address), asking for `num_gpus` GPUs (a fraction
  packs several runs onto one GPU) and `num_cpus` CPUs. The worker's runner factory is called with the
  cluster's address and those resources (`proxy_runs.torch_runner`, which the entry points hand workers,
  then returns a `proxy_runs.ray_runner.RayRunner`); a study canceled mid-rung cancels its runs' tasks.
  Jobs that bring their own runner (`synthetic`) run here entirely.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any, Protocol, cast

from advisor.jobs.control import JobControl
from advisor.jobs.functions import get_job_function
from advisor.jobs.queue import JobResult
from advisor.study.runner import ProxyRunner


class Executor(Protocol):
    name: str

    def execute(self, function: str, payload: dict[str, Any], control: JobControl) -> JobResult: ...


class LocalExecutor:
    name = "local"

    def execute(self, function: str, payload: dict[str, Any], control: JobControl) -> JobResult:
        return get_job_function(function)(payload, control)


class RayRunnerFactory(Protocol):
    """A runner factory that can put a study's runs on a Ray cluster (`proxy_runs.torch_runner`)."""

    def __call__(
        self, *, ray_address: str, ray_gpus_per_run: float, ray_cpus_per_run: float
    ) -> ProxyRunner: ...


@dataclasses.dataclass
class RayExecutor:
    address: str | None = None  # "host:6379" or "ray://host:10001"; None: RAY_ADDRESS, or the cluster joined
    num_gpus: float = 1.0  # per proxy run (LORA_ADVISOR_RAY_GPUS_PER_TASK); fractions share a GPU; 0 on CPUs
    num_cpus: float = 1.0  # per proxy run: its torch threads
    name: str = "ray"

    def execute(self, function: str, payload: dict[str, Any], control: JobControl) -> JobResult:
        if control.runner is not None:
            control.runner = self._on_ray(cast(RayRunnerFactory, control.runner))
        return get_job_function(function)(payload, control)

    def _on_ray(self, make_runner: RayRunnerFactory) -> Callable[[], ProxyRunner]:
        def runner_on_ray() -> ProxyRunner:
            return make_runner(
                ray_address=self.address or "auto",
                ray_gpus_per_run=self.num_gpus,
                ray_cpus_per_run=self.num_cpus,
            )

        return runner_on_ray


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
