"""Curvature and noise probes (issue #3): λ_max of the Hessian per module, Adam-preconditioned and
line-search sharpness, and the gradient noise scale.

Layers, bottom up: `hvp` (the Hessian of the token-weighted loss as an operator on flat vectors),
`estimators` (a name → estimator registry that only sees that operator), `modules` (which parameters),
`sharpness`, `line_search`, `noise`, and `report` (`probe_spec`, what `advisor probe` runs).

Names are imported lazily: `proxy_runs.probes.cli` must stay cheap to import (the main CLI builds its
parser on every call), and importing it runs this file first.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from proxy_runs.probes.estimators import (
        ESTIMATORS,
        DeflatedOperator,
        DenseOperator,
        EigenEstimate,
        LinearOperator,
        TraceEstimate,
        get_estimator,
        hutchinson_trace,
        lanczos,
        power,
        power_delta,
        register_estimator,
        top_k_eigenvalues,
    )
    from proxy_runs.probes.hvp import HessianOperator, OperatorStats, ProbeError, hessian_operator_for_model
    from proxy_runs.probes.line_search import LineSearchResult, critical_sharpness, first_adam_direction
    from proxy_runs.probes.modules import ModuleGroup, select_modules, trainable_groups
    from proxy_runs.probes.noise import NoiseScale, gradient_noise_scale, model_batch_gradient
    from proxy_runs.probes.report import ModuleProbe, ProbeReport, probe_spec
    from proxy_runs.probes.sharpness import PreconditionedSharpness, adam_preconditioned_sharpness

_EXPORTS = {
    "estimators": [
        "ESTIMATORS",
        "DeflatedOperator",
        "DenseOperator",
        "EigenEstimate",
        "LinearOperator",
        "TraceEstimate",
        "get_estimator",
        "hutchinson_trace",
        "lanczos",
        "power",
        "power_delta",
        "register_estimator",
        "top_k_eigenvalues",
    ],
    "hvp": ["HessianOperator", "OperatorStats", "ProbeError", "hessian_operator_for_model"],
    "line_search": ["LineSearchResult", "critical_sharpness", "first_adam_direction"],
    "modules": ["ModuleGroup", "select_modules", "trainable_groups"],
    "noise": ["NoiseScale", "gradient_noise_scale", "model_batch_gradient"],
    "report": ["ModuleProbe", "ProbeReport", "probe_spec"],
    "sharpness": ["PreconditionedSharpness", "adam_preconditioned_sharpness"],
}
_HOME = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = [
    "ESTIMATORS",
    "DeflatedOperator",
    "DenseOperator",
    "EigenEstimate",
    "HessianOperator",
    "LineSearchResult",
    "LinearOperator",
    "ModuleGroup",
    "ModuleProbe",
    "NoiseScale",
    "OperatorStats",
    "PreconditionedSharpness",
    "ProbeError",
    "ProbeReport",
    "TraceEstimate",
    "adam_preconditioned_sharpness",
    "critical_sharpness",
    "first_adam_direction",
    "get_estimator",
    "gradient_noise_scale",
    "hessian_operator_for_model",
    "hutchinson_trace",
    "lanczos",
    "model_batch_gradient",
    "power",
    "power_delta",
    "probe_spec",
    "register_estimator",
    "select_modules",
    "top_k_eigenvalues",
    "trainable_groups",
]


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
