"""Run a study: plan → successive halving over (batch size, LR) → fits → transfer → recommendation.

Read top to bottom:
1. Data is prepared once; the warm start answers provisionally from stored studies before any compute.
2. A short calibration run measures throughput, so the plan's cost estimate is in real seconds. For PiSSA
   and OLoRA over a wide LR range, two curvature probes (the method and LoRA at the same rank) centre the
   LR grid by their λ ratio (`curvature`).
3. Successive halving (synchronous, η = 3; `halving`): every config runs to rung 0; the grid is extended when
   the optimum lands on its edge; the best third (plus the leader's LR neighbours, so the top rung can fit a
   bowl) is re-run further; then a second seed of the top rung's two best configs (the noise level), and LR
   steps beyond a top-rung edge.
4. Fits per rung; the recommendation comes from the top rung (B*, LR*, L*), κ from the deepest rung that
   has it, uncertainty from a bootstrap (`answer`).
5. When the top rung fell short of the real run, LR* and the loss move to the real run's length
   (`run_length`).
6. A sibling proxy's LR moves to the target (`sibling`).

Every run is trained by a `ProxyRunner` (`runner`): the study itself never touches torch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from advisor.errors import SpecError
from advisor.method_catalog import METHODS
from advisor.records import HALVING_ROLE, RunRecord
from advisor.science.knowledge import KnowledgeStore, Priors, StudyContext, stored_priors
from advisor.science.planner import batch_candidates, batch_grid_reasoning, plan_study
from advisor.science.recommendation import Cost, NoRecommendation, Recommendation
from advisor.science.study_plan import StudyPlan
from advisor.science.transfer import band_holding_interval, picked_lr
from advisor.specs import StudySpec
from advisor.study.answer import (
    apply_outcome_correction,
    batch_edge,
    batch_sizes_evidence,
    deepest_fit,
    fits_evidence,
    recommend_from_rungs,
    rung_fits,
    runs_summary,
    thin_data_caveat,
    top_fit,
)
from advisor.study.curvature import ProbeLog, curvature_prior, derive_other_methods
from advisor.study.halving import Halving, successive_halving
from advisor.study.ledger import Ledger
from advisor.study.run_length import (
    TrendResult,
    apply_size_trend,
    deepest_bowl,
    forecast_real_run_loss,
    horizon_study,
    trend_study,
    with_horizon_length,
)
from advisor.study.runner import Calibration, DataSummary, Progress, ProxyRunner, ShelfRoom
from advisor.study.sibling import confirm_on_target, proxy_spec_for


@dataclass
class StudyResult:
    recommendation: Recommendation | NoRecommendation
    runs: list[RunRecord]
    plan: StudyPlan
    provisional: Recommendation | None = None
    fits: dict[str, Any] = field(default_factory=dict)
    derived: dict[str, Recommendation] = field(default_factory=dict)  # other methods, through λ ratios
    probes: list[dict[str, Any]] = field(default_factory=list)  # every curvature probe's per-module report
    dataset_examples: int | None = None  # the training split's size: where stored answers are looked up


@dataclass(frozen=True)
class RunLengthRuns:
    """Complete runs at B* of another length than the top rung's: the trend study's and the horizon's."""

    trend: TrendResult | None = None
    horizon: TrendResult | None = None


def calibrate(runner: ProxyRunner, spec: StudySpec, data: DataSummary) -> Calibration:
    """2 steps at the largest batch (no larger than the training split), marked as the calibration run."""
    batch = min(max(batch_candidates(spec, data.train_examples).sizes), data.train_examples)
    calibration = runner.calibrate(spec, batch)
    calibration.record.meta["role"] = "calibration"
    return calibration


def run_study(
    spec: StudySpec,
    runner: ProxyRunner,
    *,
    budget_override: float | None = None,
    progress: Progress | None = None,
    store: KnowledgeStore | None = None,
    derive_methods: Sequence[str] = (),
) -> StudyResult:
    """Plan and run a whole study within the budget (seconds; the spec's budget unless overridden).

    `derive_methods` names other methods to answer for from this one study, through the ratio of their
    curvature at initialisation to this method's (arXiv 2602.04998); those answers are marked derived.
    """
    unknown = [m for m in derive_methods if m not in METHODS]
    if unknown:
        raise SpecError(
            "derive_methods", "unknown method", value=unknown, fix=f"choose from {', '.join(METHODS)}"
        )
    started = time.perf_counter()
    proxy = proxy_spec_for(spec)
    data = runner.prepare(proxy)
    # A sibling study trains and probes the target too: its data is prepared once, and a bad target fails
    # before any budget is spent.
    if spec.proxy_model is not None:
        runner.prepare(spec)
    probes = ProbeLog(runner)
    priors = _warm_start(spec, data, store, progress)
    provisional, beta = priors.provisional, priors.beta
    calibration = calibrate(runner, proxy, data)
    per_example = calibration.seconds_per_example
    budget = budget_override if budget_override is not None else spec.budget.proxy_seconds
    calibrations = [calibration.record]
    target_cost_ratio = 1.0
    if spec.proxy_model is not None and budget is not None:  # a seconds budget prices the target's runs
        on_target = calibrate(runner, spec, runner.prepare(spec))
        # The target's seconds per training example over the proxy's, at least 1.
        target_cost_ratio = max(1.0, on_target.seconds_per_example / per_example)
        calibrations.append(on_target.record)
    prior, prior_evidence = (
        (None, {}) if provisional else curvature_prior(probes, proxy, per_example, budget, beta)
    )
    remaining = None if budget is None else max(budget - (time.perf_counter() - started), 0.0)
    plan, room = plan_with_paused_runs(
        runner,
        lambda pausable: plan_study(
            spec,
            n_train=data.train_examples,
            seconds_per_example=per_example,
            run_overhead_seconds=calibration.overhead_seconds,
            budget_seconds=remaining,
            prior=prior,
            lr_centre=provisional.learning_rate if provisional else None,
            spent_examples=sum(c.examples_seen for c in calibrations),
            target_cost_ratio=target_cost_ratio,
            pausable_runs=pausable,
        ),
        calibration.checkpoint_bytes,
        per_example,
        priced_in_seconds=budget is not None,
    )
    # Extensions may use the budget the plan leaves unspent, up to 70% of it; halving then completes.
    ledger = Ledger(
        plan.estimated_runs,
        progress,
        deadline=time.perf_counter() + 0.7 * remaining if remaining is not None else math.inf,
        budget_examples=plan.budget_examples,
        hard_deadline=started + budget if budget is not None else math.inf,
        runs=calibrations,  # their examples count towards the study's cost
        reserved_examples=plan.target_reserve_examples,
        reserved_seconds=plan.target_reserve_seconds,
    )
    if progress:
        progress(0, plan.estimated_runs, plan.describe())
    halving = successive_halving(runner, proxy, plan, ledger, room)
    plan = halving.plan
    fits = rung_fits(halving.by_rung, plan.batch_sizes)
    top = top_fit(fits)
    length_runs = RunLengthRuns()
    if top is not None:
        trend = trend_study(runner, proxy, plan, top, ledger)
        horizon = horizon_study(runner, proxy, plan, top, ledger, priors.size_exponent)
        length_runs = RunLengthRuns(trend, horizon)
        plan = with_horizon_length(plan, horizon)
    result = _finish(spec, replace(halving, plan=plan), ledger, fits, length_runs, priors, probes, data)
    if prior_evidence and isinstance(result.recommendation, Recommendation):
        result.recommendation.evidence["curvature_prior"] = prior_evidence
    if calibration.base_eval_loss is not None and isinstance(result.recommendation, Recommendation):
        # The proxy's held-out loss before training: no fine-tune of this data ends above it, so reported
        # outcomes are bounded by it (api/routes/outcomes.py). A sibling proxy's is the looser bound.
        result.recommendation.evidence["base_eval_loss"] = calibration.base_eval_loss
    if derive_methods and isinstance(result.recommendation, Recommendation):
        result.derived = derive_other_methods(probes, proxy, result.recommendation, derive_methods, beta)
    result.probes = list(probes.reports)
    return result


def plan_with_paused_runs(
    runner: ProxyRunner,
    plan_for: Callable[[int], StudyPlan],
    paused_bytes: int,
    seconds_per_example: float,
    room: ShelfRoom | None = None,
    *,
    priced_in_seconds: bool = True,
) -> tuple[StudyPlan, ShelfRoom]:
    """The plan for as many paused runs as the study can hold, and where it holds them; `room` is what this
    machine offers (the runner's `shelf_room` when not given).

    In memory first. When rung 0's runs do not all fit there, on disk as well, if that pays: every rung-0
    run is written and the promoted third read back, each saving rung 0's training (the runner's
    `spill_seconds`, timed on this machine). A budget of examples (`priced_in_seconds` False) counts no
    seconds, so there disk always pays: its plan buys more runs, and it does not hang on a timing (two
    studies of one spec make the same plan). Otherwise promoted configs restart, and the plan, which then
    costs more examples, says why."""
    room = room or runner.shelf_room()
    if room.memory_bytes == room.disk_bytes == 0:  # e.g. runs in worker processes of their own
        plan = plan_for(0)
        note = "the runner keeps no paused runs (each trains in its own process): promoted configs restart"
        return (replace(plan, notes=[*plan.notes, note]) if len(plan.rungs) > 1 else plan), room
    memory = ShelfRoom(room.memory_bytes)
    plan = plan_for(memory.runs(paused_bytes))
    if plan.resumes_promotions or len(plan.rungs) < 2:
        return plan, memory
    held = (
        f"paused runs of {paused_bytes / 1e9:.2f} GB each exceed the {memory.memory_bytes / 1e9:.1f} GB this "
        "study may hold in memory"
        if memory.memory_bytes
        else f"the runner's workers share paused runs of {paused_bytes / 1e9:.2f} GB each only on disk"
    )
    spilling = plan_for(room.runs(paused_bytes))
    if not spilling.resumes_promotions:
        note = (
            f"{held}, and rung 0's paused runs exceed the {room.disk_bytes / 1e9:.0f} GB this study may use "
            "on disk: promoted configs restart"
        )
        return replace(plan, notes=[*plan.notes, note]), memory
    if not priced_in_seconds:
        note = f"{held}: they go to a temporary folder on disk (a budget of examples does not count its time)"
        return replace(spilling, notes=[*spilling.notes, note]), room
    promoted_share = spilling.rungs[1].configs / spilling.rungs[0].configs
    disk_seconds = runner.spill_seconds(paused_bytes, promoted_share)
    retrain_seconds = spilling.rungs[0].examples * seconds_per_example
    timing = f"~{disk_seconds:.1f} s of disk per promoted run (twice a speed test's), retraining rung 0 "
    if disk_seconds >= retrain_seconds:
        note = (
            f"{held}, and disk is slower than retraining ({timing}{retrain_seconds:.1f} s): promoted configs "
            "restart"
        )
        return replace(plan, notes=[*plan.notes, note]), memory
    note = f"{held}: they go to a temporary folder on disk ({timing}{retrain_seconds:.1f} s)"
    return replace(spilling, notes=[*spilling.notes, note]), room


def _warm_start(
    spec: StudySpec, data: DataSummary, store: KnowledgeStore | None, progress: Progress | None
) -> Priors:
    if store is None:
        return Priors()
    context = StudyContext.from_spec(
        spec, n_train=data.train_examples, fingerprint=data.fingerprint.get("content_sha256")
    )
    priors = stored_priors(store, context)
    provisional = priors.provisional
    if provisional and progress:
        progress(
            0,
            0,
            f"provisional: batch {provisional.batch_size}, LR {provisional.learning_rate:.3g} "
            f"({provisional.confidence.label} confidence, from stored studies)",
        )
    return priors


def _finish(
    spec: StudySpec,
    halving: Halving,
    ledger: Ledger,
    fits: dict[int, Any],
    length_runs: RunLengthRuns,
    priors: Priors,
    probes: ProbeLog,
    data: DataSummary,  # the proxy's
) -> StudyResult:
    plan, by_rung = halving.plan, halving.by_rung
    cost = Cost(
        proxy_seconds=round(sum(r.seconds for r in ledger.runs), 2),
        examples_seen=sum(r.examples_trained for r in ledger.runs),
        runs=len(ledger.runs),
    )
    fits_json = {str(plan.top_examples): fits_evidence(fits)}
    evidence: dict[str, Any] = {
        "runs": runs_summary(ledger.runs),
        "plan": plan.describe(),
        "probes": None,
        "beta": priors.beta,
        "fits": fits_json,
    }
    answer = recommend_from_rungs(fits, by_rung, spec=spec, cost=cost, evidence=evidence)
    rec, fits = answer.recommendation, answer.fits
    if isinstance(rec, Recommendation):
        deepest = deepest_fit(fits)
        if deepest is not None:  # always, when there is a recommendation: it came from this fit
            answer_rung, top = deepest
            bowl = deepest_bowl(fits, top.batch_size)
            rec = apply_size_trend(
                rec,
                plan,
                top,
                by_rung[answer_rung],
                length_runs.trend,
                length_runs.horizon,
                bowl,
                priors.size_exponent,
            )
            rec = forecast_real_run_loss(rec, plan, deepest, length_runs.horizon, bowl, priors.loss_exponent)
        rec = confirm_on_target(probes, spec, plan, rec, ledger, priors.beta, fits)
        rec = band_holding_interval(apply_outcome_correction(rec, priors.lr_correction))
        rec = picked_lr(rec, spec.lr_pick)  # last: the median it may move from has every other move in it
        rec = thin_data_caveat(rec, spec, data)
        rec.band.compared_batch_sizes = sorted(
            {r.config.batch_size for r in ledger.runs if r.meta.get("role") == HALVING_ROLE}
        )
        dropped = plan.dropped_batch_note(rec.batch_size)
        if dropped:
            rec.reasoning.append(dropped)
        rec.reasoning.extend(batch_grid_reasoning(plan, rec.batch_size, batch_edge(fits)))
        rec.evidence["batch_sizes"] = batch_sizes_evidence(plan)
        rec.reasoning.insert(
            0,
            f"Successive halving ran {cost.runs} proxy runs ({cost.examples_seen} "
            f"examples, {cost.proxy_seconds:.0f} s) comparing configs at equal examples seen.",
        )
    return StudyResult(
        rec, ledger.runs, plan, priors.provisional, fits_json, dataset_examples=data.train_examples
    )
