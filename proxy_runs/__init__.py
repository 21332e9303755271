"""Everything that touches torch: the proxy fine-tune engine, method plugins, Hessian probes, and
`runner.TorchRunner`, which trains a study's runs (the study itself is `advisor.study`, without torch).

Nothing in `advisor` imports this package; the entry points (`api`, `advisor.cli`) hand workers
`torch_runner`, so the API, dashboard and CI hook load without torch.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from advisor.study.runner import ProxyRunner


PARALLEL_ENV = "LORA_ADVISOR_PARALLEL"  # proxy runs a study trains at once (worker processes); default 1


def torch_runner(parallel: int | None = None) -> ProxyRunner:
    """What workers and `advisor recommend` train studies with: `proxy_runs.runner.TorchRunner`, or with
    `parallel` (else LORA_ADVISOR_PARALLEL) above 1, `proxy_runs.parallel.ParallelRunner` with that many
    worker processes. Torch is imported here, when a study starts, never when this package is (the API and
    the CI hook load without it)."""
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
