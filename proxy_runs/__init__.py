"""Everything that touches torch: the proxy fine-tune engine, method plugins, Hessian probes, and
`runner.TorchRunner`, which trains a study's runs (the study itself is `advisor.study`, without torch).

Nothing in `advisor` imports this package; the entry points (`api`, `advisor.cli`) hand workers
`torch_runner`, so the API, dashboard and CI hook load without torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from advisor.study.runner import ProxyRunner


def torch_runner() -> ProxyRunner:
    """A fresh `proxy_runs.runner.TorchRunner`: what workers train studies with. Torch is imported here, when
    a study starts, never when this package is (the API and the CI hook load without it)."""
    from proxy_runs.runner import TorchRunner

    return TorchRunner()
