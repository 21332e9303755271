"""A sibling proxy's answer carried to the target: B* as is; the LR by the model ratio that 3–4 short target
runs at B* measure at one of the proxy's rungs (their LRs placed by the curvature ratio) when the budget
allows, else by the curvature ratio alone."""

from __future__ import annotations

from dataclasses import dataclass

from advisor.records import CONFIRMATION_ROLE
from advisor.science.fits import SurfaceFit
from advisor.science.planner import PROXY_RANK
from advisor.science.recommendation import Recommendation
from advisor.science.study_plan import CONFIRM_EXTENSIONS, StudyPlan
from advisor.science.transfer import (
    confirmation_lrs,
    measured_model_ratio,
    past_the_edge,
    transfer_to_target,
)
from advisor.specs import StudySpec
from advisor.study.answer import Fits
from advisor.study.curvature import ProbeLog
from advisor.study.halving import loss_at, run_to_rung
from advisor.study.ledger import Ledger
from advisor.study.runner import ProxyRunner


@dataclass(frozen=True)
class Placement:
    """Where the target's runs go: the proxy's LR*(B*) at the rung they are measured at, the two λ_max and
    β of the LR ∝ λ^−β rule that places them around it."""

    proxy_lr: float
    lambda_proxy: float
    lambda_target: float
    beta: float


def proxy_spec_for(spec: StudySpec) -> StudySpec:
    """What the proxy trains: the sibling model (if any) at a low rank, α/r kept so that LR scales match."""
    if spec.proxy_model is None:
        return spec
    rank = min(spec.rank, PROXY_RANK)
    alpha = (spec.alpha or spec.rank) / spec.rank * rank
    return spec.model_copy(update={"model": spec.proxy_model, "rank": rank, "alpha": alpha})


def confirm_on_target(
    probes: ProbeLog,
    spec: StudySpec,
    plan: StudyPlan,
    rec: Recommendation,
    ledger: Ledger,
    beta: float,
    fits: Fits,
) -> Recommendation:
    """A sibling proxy's answer on the target: B* as is; the LR by the model ratio that short target runs
    measure at one of the proxy's rungs when the plan affords them, else by the curvature ratio."""
    if spec.proxy_model is None:  # the proxy is the target itself
        return rec
    proxy_probe, target_probe = probes.measure(proxy_spec_for(spec)), probes.measure(spec)
    lambda_proxy, lambda_target = proxy_probe.lambda_max, target_probe.lambda_max
    rec.evidence["probes"] = {"proxy": proxy_probe.evidence, "target": target_probe.evidence}
    measured = lambda_proxy is not None and lambda_target is not None
    lp, lt = 1.0, 1.0  # no curvature measured: the LR carries over unchanged
    if lambda_proxy is not None and lambda_target is not None:
        lp, lt = lambda_proxy, lambda_target
    anchor = confirmation_anchor(fits, plan.confirm_examples, rec.batch_size) if plan.confirm_lrs else None
    confirmations: list[tuple[float, float | None]] = []
    ratio = None
    if anchor is not None:
        examples, proxy_lr = anchor
        confirmations = target_runs(
            probes.runner, spec, plan, ledger, rec.batch_size, examples, Placement(proxy_lr, lp, lt, beta)
        )
        ratio = measured_model_ratio(proxy_lr, rec.batch_size, examples, confirmations)
    moved = transfer_to_target(
        rec, lambda_proxy=lp, lambda_target=lt, beta=beta, confirmations=confirmations, model_ratio=ratio
    )
    if not measured:
        moved.reasoning.append("No curvature probe was available, so the proxy's LR was carried over as is.")
    target_seconds = sum(r.seconds for r in ledger.runs[-len(confirmations) :]) if confirmations else 0.0
    moved.cost = moved.cost.model_copy(update={"target_seconds": round(target_seconds, 2)})
    return moved


def confirmation_anchor(fits: Fits, examples: int, batch_size: int) -> tuple[int, float] | None:
    """(rung length, the proxy's LR*(B*) there): the longest rung up to `examples` whose fit has a curve at
    B*, which the target's runs are measured against at equal examples seen."""
    for length in sorted(fits, reverse=True):
        fit = fits[length]
        if length <= examples and isinstance(fit, SurfaceFit) and batch_size in fit.curves:
            return length, fit.curves[batch_size].lr_star
    return None


def target_runs(
    runner: ProxyRunner,
    spec: StudySpec,
    plan: StudyPlan,
    ledger: Ledger,
    batch: int,
    examples: int,
    placement: Placement,
) -> list[tuple[float, float | None]]:
    """(lr, loss at `examples`) of the target's runs at B* on the rungs' schedule: `confirmation_lrs` from
    `placement`, then one LR past an edge if affordable."""
    results: list[tuple[float, float | None]] = []
    ledger.release_reserve()
    lrs = confirmation_lrs(
        placement.proxy_lr, placement.lambda_proxy, placement.lambda_target, placement.beta
    )
    while lrs:
        lr = lrs.pop(0)
        if not ledger.in_time():
            break  # a seconds budget: target examples cost more than the proxy's the plan was priced at
        record = run_to_rung(
            runner,
            spec,
            (batch, lr),
            top_examples=plan.top_examples,
            stop_at=examples,
            eval_examples=examples,
        )
        ledger.add(
            record,
            f"target run B={batch} LR={lr:.3g} to {examples} examples: {record.status}",
            CONFIRMATION_ROLE,
        )
        results.append((lr, loss_at(record, examples)))
        if not lrs and len(results) < plan.confirm_lrs + CONFIRM_EXTENSIONS and ledger.affords(examples):
            beyond = past_the_edge(results, batch)
            lrs = [beyond] if beyond is not None else []
    return results
