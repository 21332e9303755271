"""Everything that touches torch: the proxy fine-tune engine, method plugins, Hessian probes, and
`runner.TorchRunner`, which trains a study's runs (the study itself is `advisor.study`, without torch).

Nothing in `advisor` imports this package; the entry points (`api`, `advisor.cli`) hand workers
`torch_runner`, so the API, dashboard and CI hook load without torch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from advisor.study.runner import ProxyRunner


PARALLEL_ENV = "LORA_ADVISOR_PARALLEL"  # proxy runs a study trains at once (worker processes); default 1
# On Ray: a folder every node mounts at this path, where paused runs wait between rungs; unset: none are kept
RAY_PAUSED_RUNS_DIR_ENV = "LORA_ADVISOR_RAY_PAUSED_RUNS_DIR"


def torch_runner(
    parallel: int | None = None,
    ray_address: str | None = None,
    *,
    ray_gpus_per_run: float = 0.0,
    ray_cpus_per_run: float = 1.0,
    ray_paused_runs_dir: Path | None = None,
) -> ProxyRunner:
    """What workers and `advisor recommend` train studies with. Torch is imported here, when a study starts,
    never when this package is (the API and the CI hook load without it).

    - With `ray_address` ("host:port", "ray://host:10001", or "auto"): `proxy_runs.ray_runner.RayRunner`, each
      run a Ray task on that cluster asking for `ray_cpus_per_run` CPUs and `ray_gpus_per_run` GPUs, at most
      `parallel` (else LORA_ADVISOR_PARALLEL, when set) in flight; unbounded otherwise: the cluster's room
      decides. Paused runs wait in `ray_paused_runs_dir` (else LORA_ADVISOR_RAY_PAUSED_RUNS_DIR), a folder
      every node mounts at that path; without one, promoted configs restart.
    - Else with `parallel` (else LORA_ADVISOR_PARALLEL) above 1: `proxy_runs.parallel.ParallelRunner` with
      that many worker processes.
    - Else `proxy_runs.runner.TorchRunner`, in this process.
    """
    if ray_address is not None:
        from proxy_runs.ray_runner import RayRunner

        in_flight = parallel if parallel is not None else _parallel_if_set()
        shared = ray_paused_runs_dir or _path_if_set(RAY_PAUSED_RUNS_DIR_ENV)
        return RayRunner(
            ray_address,
            gpus_per_run=ray_gpus_per_run,
            cpus_per_run=ray_cpus_per_run,
            max_in_flight=in_flight,
            paused_runs_dir=shared,
        )
    count = parallel if parallel is not None else parallel_from_environment()
    if count > 1:
        from proxy_runs.parallel import ParallelRunner

        return ParallelRunner(count)
    from proxy_runs.runner import TorchRunner

    return TorchRunner()


def parallel_from_environment() -> int:
    text = os.environ.get(PARALLEL_ENV, "1")
    if not text.strip().isdigit() or int(text) < 1:
        raise ValueError(f"{PARALLEL_ENV} must be a whole number of at least 1, got {text!r}")
    return int(text)


def _parallel_if_set() -> int | None:
    return parallel_from_environment() if os.environ.get(PARALLEL_ENV) else None


def _path_if_set(name: str) -> Path | None:
    text = os.environ.get(name, "").strip()
    return Path(text) if text else None
