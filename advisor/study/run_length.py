"""How LR* and the best loss move with run length, from the top rung to the real run's.

When the top rung fell short of the real run, LR* moves to the real run's length along LR* ∝ N^γ: 2–3 horizon
runs at B* (complete, at least twice the top rung's length) or else a trend study on a third of its examples
measure where LR* went, and a Bayesian line through them and arXiv 2602.04998's prior γ extends it
(`advisor.science.fits.loglog_line`). The eval loss the real run will reach moves along L* ∝ N^−α the same way
(`advisor.science.loss_forecast`).
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from dataclasses import dataclass, field
from typing import Any

from advisor.science.fits import Z90, Observation, SurfaceFit, bootstrap_optimum, fit_surface
from advisor.science.knowledge import SIZE_EXPONENT, ExponentPrior
from advisor.science.length_scaling import (
    LogMeasurement,
    bowl_coefficient,
    interval_sd,
    loglog_line,
    lr_star_sd,
    vertex_of_pair,
)
from advisor.science.loss_forecast import LossExponentPrior, forecast_loss, loss_measurement
from advisor.science.lr_grid import extension_bounds, lattice_index, lattice_lr
from advisor.science.planner import TREND_MIN_STEPS, horizon_length
from advisor.science.recommendation import Recommendation
from advisor.science.study_plan import HORIZON_RUNS, StudyPlan
from advisor.science.transfer import with_lr_scaled
from advisor.specs import StudySpec
from advisor.study.answer import Fits
from advisor.study.halving import affordable_runs, beyond_edge, observation, run_to_rung
from advisor.study.ledger import Ledger
from advisor.study.runner import ProxyRunner, RunRequest, Schedule

HORIZON_SPACING = 2  # lattice steps between the two horizon LRs: half a decade, a clear loss difference


NOISE_FLOOR = 0.0025  # relative: below a quarter percent of the loss, seed noise is not believed to be zero


@dataclass
class TrendResult:
    """Complete runs at B* of another length than the top rung's (a trend study on a third of its examples,
    or horizon runs towards the real run's length), or why there were none."""

    examples: int
    batch_size: int
    fit: SurfaceFit | None = None
    observations: list[Observation] = field(default_factory=list)
    skipped: str | None = None


def trend_study(
    runner: ProxyRunner, spec: StudySpec, plan: StudyPlan, top: SurfaceFit, ledger: Ledger
) -> TrendResult | None:
    """Complete runs of `plan.trend_examples` examples at B*, at LR*(top) one step below and two above (a
    shorter run wants a higher LR), one step further when the optimum lands on an edge."""
    small, batch = plan.trend_examples, top.batch_size
    if small is None or not plan.trend_runs:
        return None
    if small < TREND_MIN_STEPS * batch:
        reason = f"B* = {batch} takes fewer than {TREND_MIN_STEPS} steps on {small} examples"
        return TrendResult(small, batch, skipped=reason)
    centre = lattice_index(top.learning_rate)
    lrs = [lattice_lr(centre + step) for step in (-1, 0, 1, 2)]
    observations: list[Observation] = []
    complete = Schedule(small, small)  # evaluated at the end only
    for _ in range(2):  # the planned LRs, then one step beyond an edge if the budget allows
        jobs = [(RunRequest(spec, (batch, lr), complete, small), small) for lr in lrs]
        for request, record in affordable_runs(runner, ledger, jobs):
            observations.append(observation(record, small, small))
            message = f"size trend B={batch} LR={request.config[1]:.3g} on {small} examples: {record.status}"
            ledger.add(record, message, "trend")
        fit = fit_surface(observations, batch_candidates=[batch])
        curve = fit.curves.get(batch) if isinstance(fit, SurfaceFit) else None
        lrs = beyond_edge(spec, curve) if curve is not None else []
        if not lrs:
            break
    if not isinstance(fit, SurfaceFit):
        return TrendResult(small, batch, skipped=f"no trend run finished ({fit.reason})")
    return TrendResult(small, batch, fit=fit, observations=observations)


def horizon_lrs(
    spec: StudySpec, top_lr: float, top_examples: int, length: int, exponent: float = SIZE_EXPONENT
) -> list[float]:
    """Two lattice LRs half a decade apart, the higher one where the prior γ moves LR*(top) at `length`
    examples, shifted down as a pair when the higher one would leave the reach of extensions.

    The pair sits below the prediction, not around it, because the loss is lopsided about LR*: above it a
    complete run climbs a cliff onto a plateau (the quality benchmark's `repeat` at B = 2: 2.40 at LR 0.02,
    3.07 at 0.0356, 3.13 at 0.0632), where a run says nearly nothing about where the vertex is, while below
    it the loss slopes gently. When short runs read LR* high, as on the tiny tasks, a pair centred on the
    prediction had both runs on the plateau, and the bowl width read the vertex inside it: ×3–15 too high."""
    predicted = top_lr * (length / top_examples) ** exponent
    low = lattice_index(predicted) - HORIZON_SPACING
    floor, ceiling = extension_bounds(spec)
    while low > lattice_index(floor) and lattice_lr(low + HORIZON_SPACING) > ceiling:
        low -= 1
    return [lattice_lr(low), lattice_lr(low + HORIZON_SPACING)]


def horizon_study(
    runner: ProxyRunner,
    spec: StudySpec,
    plan: StudyPlan,
    top: SurfaceFit,
    ledger: Ledger,
    prior: ExponentPrior | None = None,
) -> TrendResult | None:
    """Complete runs at B*, as long as the budget left affords (≥ 2× the top rung, ≤ the real run): where LR*
    has moved at a length near the real run's is measured, not extrapolated. The pair of `horizon_lrs` first;
    then, where the budget reserved it and the loss still falls at the pair's upper LR, one run a pair's
    spacing above it (`bracketing_lr`), so that the vertex is bracketed rather than bounded from below."""
    if not plan.horizon_runs:
        return None
    planned = horizon_length(plan, ledger.examples_left(top.batch_size))
    if planned is None:
        reason = "the runs before it left too little budget for 2 runs at twice the top rung's length"
        return TrendResult(plan.horizon_examples or 0, top.batch_size, skipped=reason)
    length, runs = planned
    observations: list[Observation] = []
    exponent = (prior or ExponentPrior()).mean
    batch = top.batch_size

    def run(lr: float) -> None:
        if ledger.affords(length):
            record = run_to_rung(
                runner, spec, (batch, lr), top_examples=length, stop_at=length, eval_examples=length
            )
            observations.append(observation(record, length, length))
            ledger.add(
                record, f"horizon B={batch} LR={lr:.3g} on {length} examples: {record.status}", "horizon"
            )

    for lr in horizon_lrs(spec, top.learning_rate, plan.top_examples, length, exponent):
        run(lr)
    above = bracketing_lr(spec, observations) if runs > HORIZON_RUNS else None
    if above is not None:
        run(above)
    return TrendResult(length, top.batch_size, observations=observations)


def bracketing_lr(spec: StudySpec, pair: list[Observation]) -> float | None:
    """The LR a pair's spacing above the horizon pair when both finished and the upper one has the lower loss
    (the vertex may lie beyond it); None when the lower one has (the pair then bounds the vertex from above,
    and `vertex_of_pair` reads it on the gentle side of the bowl), or past the reach of extensions."""
    finite = _finished_runs(pair)
    if len(finite) < HORIZON_RUNS or finite[-1][1] >= finite[-2][1]:
        return None
    above = lattice_lr(lattice_index(finite[-1][0]) + HORIZON_SPACING)
    return above if above <= extension_bounds(spec)[1] else None


Bowl = tuple[float, float]  # (c, L*): loss ≈ L* + c·(log10 lr − log10 LR*)² on one rung, at B*


def deepest_bowl(fits: Fits, batch: int) -> Bowl | None:
    """The bowl at `batch` of the deepest rung that shows one: the top rung's optimum can sit on the edge of
    the few LRs promoted to it, where a shallower rung's wider spread of LRs still shows the bowl's width."""
    for _, fit in sorted(fits.items(), reverse=True):
        curve = fit.curves.get(batch) if isinstance(fit, SurfaceFit) else None
        coefficient = bowl_coefficient(curve) if curve is not None else None
        if curve is not None and coefficient is not None:
            return coefficient, curve.loss_star
    return None


def _finished_runs(observations: list[Observation]) -> list[tuple[float, float]]:
    """(LR, loss) of the runs that did not diverge, by LR."""
    return sorted((o.learning_rate, float(o.loss or 0.0)) for o in observations if not o.diverged)


def reading_pair(finite: list[tuple[float, float]]) -> tuple[tuple[float, float], tuple[float, float]]:
    """The two of the horizon runs (sorted by LR, at least 2) that read the vertex: the lowest-loss run and
    its better neighbour. With a bowl either side of its bottom, those two straddle or nearly straddle LR*;
    a third run on a cliff above LR* is then only an upper bound (`vertex_of_pair` keeps the vertex within
    half a spacing of the pair, which is where a bowl through the third would put its farthest)."""
    best = min(range(len(finite)), key=lambda i: finite[i][1])
    neighbours = [i for i in (best - 1, best + 1) if 0 <= i < len(finite)]
    other = min(neighbours, key=lambda i: finite[i][1])
    low, high = sorted((best, other))
    return finite[low], finite[high]


def _horizon_scale(
    top: SurfaceFit, finite: list[tuple[float, float]], bowl: Bowl | None
) -> tuple[float | None, float]:
    """(bowl width c, seed noise) at the horizon runs' loss level: a longer run has a lower loss, and the
    bowl's depth and the seed noise are taken to shrink in proportion."""
    level = statistics.fmean(loss for _, loss in finite)
    noise = max(top.noise_sd, NOISE_FLOOR * top.loss) * level / top.loss
    return (bowl[0] * level / bowl[1] if bowl is not None else None), noise


def _horizon_measurement(top: SurfaceFit, horizon: TrendResult, bowl: Bowl | None) -> LogMeasurement | str:
    """LR* at the horizon from its runs' reading pair and a rung's bowl, scaled to the horizon's loss
    level."""
    finite = _finished_runs(horizon.observations)
    if len(finite) < HORIZON_RUNS:
        diverged = [o.learning_rate for o in horizon.observations if o.diverged]
        if len(finite) == 1 and diverged and min(diverged) > finite[0][0]:
            # The higher LR diverged: LR* is at or below the lower one, known to about one spacing.
            return LogMeasurement(horizon.examples, math.log10(finite[0][0]), HORIZON_SPACING / 4)
        return f"{len(finite)} of the {len(horizon.observations)} horizon runs finished"
    pair = reading_pair(finite)
    bowl_width, noise = _horizon_scale(top, list(pair), bowl)
    if bowl_width is None:
        return "no rung shows a bowl at B* to read the horizon pair by"
    return vertex_of_pair(pair[0], pair[1], bowl_width, noise, horizon.examples)


def _horizon_best_loss(
    top: SurfaceFit, horizon: TrendResult | None, bowl: Bowl | None
) -> LogMeasurement | None:
    """L* at the horizon: the bowl's bottom through the reading pair when there is one, else the lower run's
    loss (an upper bound: LR* may lie between the runs)."""
    if horizon is None or not (finite := _finished_runs(horizon.observations)):
        return None
    best = min(loss for _, loss in finite)
    pair = reading_pair(finite) if len(finite) >= HORIZON_RUNS else None
    bowl_width, noise = _horizon_scale(top, list(pair) if pair else finite, bowl)
    if pair is not None and bowl_width is not None:
        vertex = vertex_of_pair(pair[0], pair[1], bowl_width, noise, horizon.examples).log_value
        bottom = statistics.fmean(loss - bowl_width * (math.log10(lr) - vertex) ** 2 for lr, loss in pair)
        best = min(best, bottom)
    return loss_measurement(horizon.examples, best, noise)


def forecast_real_run_loss(
    rec: Recommendation,
    plan: StudyPlan,
    answer: tuple[int, SurfaceFit],
    horizon: TrendResult | None,
    bowl: Bowl | None,
    prior: LossExponentPrior | None = None,
) -> Recommendation:
    """The predicted eval loss at the real run's length (`advisor.science.loss_forecast`): L* of the answer's
    rung moved along L* ∝ N^−α (α's prior sharpened by reported outcomes), through L* of the horizon runs
    where they ran (trend runs are shorter than the top rung: the forecast does not read them)."""
    examples, top = answer
    anchor = loss_measurement(examples, top.loss, max(top.noise_sd, NOISE_FLOOR * top.loss))
    at_horizon = _horizon_best_loss(top, horizon, bowl)
    measured = [at_horizon] if at_horizon is not None else []
    forecast = forecast_loss(anchor, measured, max(plan.full_examples, examples), prior)
    rec.evidence["loss_forecast"] = forecast.model_dump()
    rec.reasoning.append(forecast.sentence())
    interval = (forecast.low, forecast.high)
    return rec.model_copy(
        update={"predicted_eval_loss": forecast.loss, "predicted_eval_loss_interval": interval}
    )


def _trend_measurement(top: SurfaceFit, trend: TrendResult) -> LogMeasurement | str:
    """LR* on the trend study's shorter runs, with its bootstrap spread (single seeds: at least as noisy as
    the top rung)."""
    if trend.fit is None:
        return trend.skipped or "no trend run finished"
    fit = dataclasses.replace(trend.fit, noise_sd=max(trend.fit.noise_sd, top.noise_sd))
    spread = lr_star_sd(bootstrap_optimum(trend.observations, fit, replicates=100))
    return LogMeasurement(trend.examples, math.log10(fit.learning_rate), spread)


def apply_size_trend(
    rec: Recommendation,
    plan: StudyPlan,
    top: SurfaceFit,
    top_observations: list[Observation],
    trend: TrendResult | None,
    horizon: TrendResult | None = None,
    bowl: Bowl | None = None,
    prior: ExponentPrior | None = None,
) -> Recommendation:
    """Move LR* from the top rung's length to the real run's along LR* ∝ N^γ: a straight line in log-log
    through the top rung's LR*, whatever the trend study or the horizon runs measured, and the prior of γ
    (arXiv 2602.04998's −0.25 ± 0.3, or sharpened by stored studies; `fits.loglog_line`); the prior alone when
    nothing else was measured."""
    prior = prior or ExponentPrior()
    reached, full = plan.top_examples, plan.full_examples
    if full <= reached:
        return rec
    evidence: dict[str, Any] = {"from_examples": reached, "to_examples": full}
    measurements: list[LogMeasurement] = []
    if bowl is None:
        bowl = deepest_bowl({reached: top}, top.batch_size)
    for kind, runs in (("trend", trend), ("horizon", horizon)):
        if runs is None:
            continue
        measured = _trend_measurement(top, runs) if kind == "trend" else _horizon_measurement(top, runs, bowl)
        evidence[kind] = {
            "examples": runs.examples,
            "runs": [{"learning_rate": o.learning_rate, "loss": o.loss} for o in runs.observations],
        }
        if isinstance(measured, str):
            evidence[kind]["skipped"] = runs.skipped or measured
            continue
        measurements.append(measured)
        evidence[kind] |= {"lr_star": 10**measured.log_value, "sd_decades": measured.sd}
    anchor_sd = interval_sd(rec.confidence.lr_interval)  # the top rung's bootstrap, as the answer has it
    anchor = LogMeasurement(reached, math.log10(top.learning_rate), anchor_sd)
    path = loglog_line(anchor, measurements, prior.mean, prior.sd)
    at_full, spread = path.at(full)
    exponent, factor = path.exponent, 10 ** (at_full - anchor.log_value)
    if not measurements:
        source = prior.describe()
    else:
        said = "; ".join(
            f"LR* {10**m.log_value:.3g} ± {m.sd:.2f} decades on {m.examples}" for m in measurements
        )
        source = (
            f"a line through the top rung's LR* ({top.learning_rate:.3g} ± {anchor_sd:.2f} decades), {said} "
            f"examples at B* = {top.batch_size}, and {prior.describe()}"
        )
    skipped = [
        f" (the {kind} runs told nothing: {e['skipped']})"
        for kind, e in evidence.items()
        if isinstance(e, dict) and "skipped" in e
    ]
    answer_rung = top_observations[0].examples_seen if top_observations else reached
    cut = (
        f" (the budget stopped the halving at {answer_rung} examples into its {reached}-example schedule, "
        "and the answer comes from there)"
        if answer_rung < reached
        else ""
    )
    sentence = (
        f"The top rung trained on {reached} of the real run's {full} examples{cut}; LR* ∝ N^{exponent:.2f} "
        f"({source}) moves the LR by ×{factor:.2f} to the real run's length (±{spread:.2f} decades)"
        f"{''.join(skipped)}."
    )
    evidence |= {
        "lr_exponent": exponent,
        "exponent_sd": math.sqrt(path.covariance[1][1]),
        "measured": bool(measurements),  # a stored γ sharpens later studies' prior only when measured
        "prior": prior.model_dump(),
        "source": source,
        "factor": factor,
        "sd_decades_at_full": spread,
    }
    interval = (10 ** (at_full - Z90 * spread), 10 ** (at_full + Z90 * spread))
    return with_lr_scaled(
        rec,
        factor,
        sentence,
        evidence_key="size_trend",
        evidence=evidence,
        confidence_factor=_width_factor(rec, 2 * Z90 * spread),
        lr_interval=interval,
    )


def _width_factor(rec: Recommendation, new_width: float) -> float:
    """How the confidence score changes when the 90% interval of LR* goes from the top rung's width to
    `new_width` decades at the real run's length (the score falls linearly to 0 at a decade wide)."""
    if rec.confidence.lr_interval is None:
        return 1.0
    low, high = rec.confidence.lr_interval
    old_width = math.log10(high / low)
    return max(0.0, 1.0 - new_width) / (1.0 - old_width) if old_width < 1.0 else 1.0


def with_horizon_length(plan: StudyPlan, horizon: TrendResult | None) -> StudyPlan:
    """The plan saying the length the horizon runs had (the budget left may have shortened them)."""
    if horizon is None or horizon.skipped is not None:
        return plan
    return dataclasses.replace(plan, dataset_sizes=[*plan.dataset_sizes[:-1], horizon.examples])
