"""Curvature at initialisation: the λ_max probes a study takes, where they centre the LR grid (PiSSA, OLoRA)
and how they carry an answer to other methods (arXiv 2602.04998's λ-ratio rule)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from advisor.science.lr_grid import LATTICE_ANCHOR, CurvaturePrior
from advisor.science.recommendation import Recommendation
from advisor.science.transfer import derive_method
from advisor.specs import StudySpec
from advisor.study.runner import Probe, ProxyRunner


@dataclass
class ProbeLog:
    """Every probe a study takes, through one runner: the per-module reports are stored with the study."""

    runner: ProxyRunner
    reports: list[dict[str, Any]] = field(default_factory=list)

    def measure(self, spec: StudySpec) -> Probe:
        probe = self.runner.probe(spec)
        if probe.report is not None:
            self.reports.append(probe.report)
        return probe


# Probing λ costs about this many training examples' time per probe: ~6 representative modules × ~12
# Lanczos steps × an HVP (≈ 3 training examples' work per sample) × 16 samples.
PROBE_COST_EXAMPLES = 6 * 12 * 3 * 16


PROBE_BUDGET_SHARE = 0.15  # the curvature prior may use at most this share of the study's seconds


# Methods that keep LoRA's (A, B) parametrisation but start elsewhere, whose LR scale arXiv 2602.04998 ties to
# the curvature at initialisation. Not BaLoRA (its scale comes from its training dynamics: λ at init equals
# LoRA's), nor full fine-tuning or prompt tuning (another parametrisation, where Adam's step size and not λ
# sets the scale): those keep the method's usual LR as the centre.
CURVATURE_CENTRED_METHODS = frozenset({"pissa", "olora"})


def curvature_prior(
    probes: ProbeLog, proxy: StudySpec, seconds_per_example: float, budget: float | None, beta: float
) -> tuple[CurvaturePrior | None, dict[str, Any]]:
    """Centre the LR grid by curvature for PiSSA and OLoRA: LR ≈ 2e-4 × (λ_method / λ_LoRA)^−β, both λ_max
    measured on the proxy at initialisation at the same rank and α (arXiv 2602.04998's λ-ratio rule). Other
    methods, a user's range of at most 3 decades (covered whole), or a probe that would take more than 15%
    of the budget: no prior, and the grid is centred on the method's usual LR.
    """
    low, high = proxy.lr_range
    if proxy.method not in CURVATURE_CENTRED_METHODS or math.log10(high / low) <= 3.0:
        return None, {}
    estimated = 2 * PROBE_COST_EXAMPLES * seconds_per_example
    if budget is not None and estimated > PROBE_BUDGET_SHARE * budget:
        return None, {"skipped": f"two curvature probes (~{estimated:.0f} s) exceed 15% of the budget"}
    method_probe = probes.measure(proxy)
    lora_probe = probes.measure(proxy.model_copy(update={"method": "lora"}))
    lambda_method, lambda_lora = method_probe.lambda_max, lora_probe.lambda_max
    evidence = {"method": method_probe.evidence, "lora": lora_probe.evidence, "beta": beta}
    if lambda_method is None or lambda_lora is None or lambda_method <= 0 or lambda_lora <= 0:
        return None, evidence | {"skipped": "λ_max could not be measured for both methods"}
    prior = CurvaturePrior(
        lambda_method, lambda_lora, LATTICE_ANCHOR, beta, source=f"λ ratio of {proxy.method} to LoRA"
    )
    return prior, evidence | {"lr_centre": prior.lr_centre(), "ratio": lambda_method / lambda_lora}


def derive_other_methods(
    probes: ProbeLog, proxy: StudySpec, rec: Recommendation, methods: Sequence[str], beta: float
) -> dict[str, Recommendation]:
    """Each method's answer from this study's, by λ_max(method) / λ_max(this method) on the proxy at
    initialisation; methods whose curvature cannot be measured are left out (and say so in the evidence)."""
    measured = probes.measure(proxy).lambda_max
    derived: dict[str, Recommendation] = {}
    for method in methods:
        other = probes.measure(proxy.model_copy(update={"method": method})).lambda_max
        if measured is not None and other is not None and method != proxy.method:
            derived[method] = derive_method(
                rec, method, lambda_measured=measured, lambda_method=other, beta=beta
            )
    return derived
