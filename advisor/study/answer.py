"""From the rungs' fits to the study's answer: the top rung's (B*, LR*, L*), κ and the noise level from the
deepest rung that measured them, and the caveats every answer carries (thin data, reported outcomes)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from advisor.records import RunRecord
from advisor.science.fits import (
    Observation,
    SurfaceFit,
    bootstrap_optimum,
    fit_surface,
    replicate_noise,
    shrink_kappa,
)
from advisor.science.knowledge import LrCorrection
from advisor.science.planner import batch_candidates
from advisor.science.recommendation import (
    Cost,
    NoRecommendation,
    Recommendation,
    confidence_label,
)
from advisor.science.study_plan import StudyPlan
from advisor.science.transfer import build_recommendation, with_lr_scaled
from advisor.specs import StudySpec
from advisor.study.runner import DataSummary

Fits = dict[int, SurfaceFit | NoRecommendation]  # examples seen at a rung → that rung's fit


@dataclass(frozen=True)
class Answer:
    """The recommendation from the rungs, and the fits as it read them: the answer's rung with the noise
    level, ε and κ the answer assumed (measured at a deeper rung, or assumed when nothing measured it)."""

    recommendation: Recommendation | NoRecommendation
    fits: Fits


def rung_fits(by_rung: dict[int, list[Observation]], batch_candidates: Sequence[int]) -> Fits:
    return {
        examples: fit_surface(obs, batch_candidates=batch_candidates)
        for examples, obs in by_rung.items()
        if obs
    }


# The seed noise a study assumes when none of its runs measured it, relative to the loss: about half of what
# `bench/quality.py` measured at the grid best over 19 seeds (1.2–3.2%, median 1.9%), so that an answer
# from single-seed runs is never said to be known more exactly than a second seed could show.
UNMEASURED_NOISE = 0.01


def _measured_noise(fit: SurfaceFit) -> bool:
    """Whether a fit's noise level is a measurement: an exact fit (3 points, or single seeds on a clean
    bowl) leaves a residual of rounding error, ~1e-16 of the loss."""
    return fit.noise_sd > 1e-6 * abs(fit.loss)


def recommend_from_rungs(
    fits: Fits,
    by_rung: dict[int, list[Observation]],
    *,
    spec: StudySpec,
    cost: Cost,
    evidence: dict[str, Any],
) -> Answer:
    """Top rung for B*, LR*, L*; κ and the noise level from the deepest rung that measured them."""
    usable = [(examples, fit) for examples, fit in sorted(fits.items()) if isinstance(fit, SurfaceFit)]
    if not usable:  # every rung failed to fit: report rung 0's reason (e.g. all diverged)
        first = next(iter(fits.values()), None)
        if isinstance(first, NoRecommendation):
            return Answer(first, fits)
        return Answer(NoRecommendation(reason="no runs finished", kind="no_runs"), fits)
    examples, fit = usable[-1]
    noise_sd = fit.noise_sd
    assumed = ""
    if replicate_noise(by_rung[examples]) is None:
        # No second seed at the top: its 3–4 points leave no residual to speak of, so take the noise of the
        # deepest rung that measured one (shallower rungs are noisier: short runs, far from quadratic).
        noise_sd = next((f.noise_sd for _, f in reversed(usable) if _measured_noise(f)), 0.0)
    if not _measured_noise(dataclasses.replace(fit, noise_sd=noise_sd)):
        # Nothing measured it (no second seeds, every fit exact): zero noise would make every bootstrap
        # resample the same and claim LR* to the digit, so assume UNMEASURED_NOISE of the loss instead.
        noise_sd = UNMEASURED_NOISE * abs(fit.loss)
        assumed = (
            f"No run measured the seed-to-seed noise, so it is taken as {UNMEASURED_NOISE:.0%} of the loss "
            f"(±{noise_sd:.3g}) for the band and the resampling."
        )
    top = dataclasses.replace(fit, noise_sd=noise_sd, epsilon=max(fit.epsilon, 2.0 * noise_sd))
    measured = next(((e, f) for e, f in reversed(usable) if f.kappa is not None), None)
    if measured is not None:
        kappa_fit = top if measured[0] == examples else measured[1]
        top = dataclasses.replace(top, kappa=shrink_kappa(by_rung[measured[0]], kappa_fit, noise_sd=noise_sd))
    else:
        top = dataclasses.replace(top, kappa=None)
    summary = bootstrap_optimum(by_rung[examples], top, replicates=100)
    rec = build_recommendation(
        top,
        summary,
        method=spec.method,
        cost=cost,
        lora_plus_ratio=spec.method_options.lora_plus_ratio,
        evidence=evidence,
    )
    if assumed:
        rec.reasoning.append(assumed)
    return Answer(rec, {**fits, examples: top})


def fits_evidence(fits: Fits) -> dict[str, Any]:
    """A compact, JSON-able account of each rung's fit."""
    out: dict[str, Any] = {}
    for examples, fit in sorted(fits.items()):
        if isinstance(fit, NoRecommendation):
            out[str(examples)] = {"no_recommendation": fit.reason}
            continue
        out[str(examples)] = {
            "batch_size": fit.batch_size,
            "learning_rate": fit.learning_rate,
            "loss": fit.loss,
            "epsilon": fit.epsilon,
            "kappa": fit.kappa.kappa if fit.kappa else None,
            "edges": [f"{e.axis}:{e.side}" + (f"@{e.batch_size}" if e.batch_size else "") for e in fit.edges],
            "lr_star_by_batch": {str(b): c.lr_star for b, c in fit.curves.items()},
        }
    return out


def runs_summary(runs: list[RunRecord]) -> dict[str, Any]:
    statuses: dict[str, int] = {}
    for run in runs:
        statuses[str(run.status)] = statuses.get(str(run.status), 0) + 1
    return {
        "runs": len(runs),
        "by_status": statuses,
        "examples_seen": sum(r.examples_trained for r in runs),
        "resumed": sum(1 for r in runs if r.meta.get("resumed_from")),
        "seconds": round(sum(r.seconds for r in runs), 2),
    }


# Below this many held-out examples the mean eval loss ranks configs largely by which examples were held
# out (one example's loss moves the mean by 1/n), which no number of training seeds averages away.
MIN_EVAL_EXAMPLES = 16


THIN_DATA_CONFIDENCE = 0.3  # the most an answer from such data may claim: "low"


def thin_data_caveat(rec: Recommendation, spec: StudySpec, data: DataSummary) -> Recommendation:
    """The answer with its confidence capped at low, and the reason said, when the data cannot carry it: a
    training split smaller than every candidate batch (the real run is a single step), or an eval split too
    small to rank configs. Bowls fit to such data can look clean and read as high confidence."""
    problems = []
    smallest = min(batch_candidates(spec, data.train_examples).sizes)
    if data.train_examples < smallest:
        problems.append(
            f"the training split holds {data.train_examples} examples, fewer than the smallest batch size "
            f"{smallest}, so the real run is a single optimizer step"
        )
    if data.eval_examples < MIN_EVAL_EXAMPLES:
        problems.append(
            f"the eval loss is the mean over {data.eval_examples} held-out examples (at least "
            f"{MIN_EVAL_EXAMPLES} are needed to rank configs by more than which examples were held out)"
        )
    if not problems:
        return rec
    score = min(rec.confidence.score, THIN_DATA_CONFIDENCE)
    confidence = rec.confidence.model_copy(
        update={"score": score, "label": confidence_label(score), "notes": [*rec.confidence.notes, *problems]}
    )
    said = (
        f"Too little data to trust this answer: {'; and '.join(problems)}. "
        "Add examples, or give dataset.eval_path."
    )
    return rec.model_copy(update={"confidence": confidence, "reasoning": [*rec.reasoning, said]})


def apply_outcome_correction(rec: Recommendation, correction: LrCorrection) -> Recommendation:
    """Full runs reported back in this context found the advisor's LRs off by a factor; this answer was made
    the same way, so it moves by that factor too (the stored outcome is compared with the final answer).
    Unless enough reporters corroborate it, the move stays inside the LR interval this study measured: a
    single reporter, honest or hostile, cannot take an answer beyond what its own runs allow."""
    factor = correction.factor
    interval = rec.confidence.lr_interval
    if not correction.corroborated and interval is not None:
        low, high = interval
        factor = min(max(factor, low / rec.learning_rate), high / rec.learning_rate)
    if not correction.outcomes_used or math.isclose(factor, 1.0):
        return rec
    held = "" if math.isclose(factor, correction.factor) else " (held inside this study's LR interval)"
    return with_lr_scaled(
        rec,
        factor,
        f"Moved by ×{factor:.2f}{held}: {correction.describe()}.",
        evidence_key="outcome_correction",
        evidence=correction.model_dump(),
    )


def batch_edge(fits: Fits) -> str | None:
    """The side of the batch sizes B* sits on in the answer's fit ("low", "high"); None when inside them."""
    deepest = deepest_fit(fits)
    edges = [e.side for e in deepest[1].edges if e.axis == "batch"] if deepest else []
    return edges[0] if edges else None


def batch_sizes_evidence(plan: StudyPlan) -> dict[str, Any]:
    """The batch sizes a study compared and why those: the candidates (derived or the spec's), the ones an
    edge added, the ones the budget left out."""
    origin = plan.batch_origin.evidence() if plan.batch_origin else {}
    return origin | {
        "compared": plan.batch_sizes,
        "extended": plan.extended_batch_sizes,
        "dropped": plan.dropped_batch_sizes,
    }


def top_fit(fits: Fits) -> SurfaceFit | None:
    deepest = deepest_fit(fits)
    return deepest[1] if deepest else None


def deepest_fit(fits: Fits) -> tuple[int, SurfaceFit] | None:
    """(examples, fit) of the deepest rung with a usable fit: the answer's rung (recommend_from_rungs picks
    the same one). Below the top rung when the budget cut the halving short."""
    usable = [(examples, f) for examples, f in sorted(fits.items()) if isinstance(f, SurfaceFit)]
    return usable[-1] if usable else None
