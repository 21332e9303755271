"""From the proxy's fit to the target's answer, and from one method to another.

- Batch size: B* carries over from the proxy unchanged (arXiv 2602.09492: B* is roughly invariant to rank
  and model size; it moves with dataset size, which the proxy shares with the target).
- Learning rate: LR*_target = LR*_proxy × (λ_target / λ_proxy)^(−β), with λ the top Hessian eigenvalue at
  initialisation. arXiv 2602.04998 reports η* ∝ 1/λ_max (β = 1) but its own numbers span β ≈ 0.7 (OLoRA: 60×
  curvature → 18× lower LR) to β ≈ 1.5 (MiLoRA: 2.2× → 3.2×); so β defaults to 1.0 and is recalibrated
  from reported full-run outcomes (see `knowledge.recalibrate_beta`).
- When the budget allows, short target runs measure the model ratio instead: 3 LRs at B* spanning β from
  0 (the proxy's LR as is) to β (`confirmation_lrs`), on the schedule and to the length of one of the
  proxy's rungs, so that LR*_target(L) / LR*_proxy(L) is a ratio at equal examples seen. The answer is the
  proxy's LR* at the real run's length times that ratio: the run-length trend comes from the proxy's
  study, which measured it, and the short runs do not pull the LR towards the high values short runs
  favour. On a model pair built by `bench/sibling_transfer.py` the λ ratio pointed the wrong way (the
  wider target had the lower λ and the lower LR*), which is why the runs span β down to 0 and may add one
  LR past an edge.
- Other methods (arXiv 2602.04998): LR*_method = LR*_lora × (λ_method / λ_lora)^(−β), marked derived and given
  a lower confidence because the magnitude of the effect differs between models (PiSSA: 10× on
  Qwen3-0.6B, 2–3× on Gemma-3-1B).
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel

from advisor.science.fits import (
    KAPPA_BOUNDS,
    KAPPA_PRIOR,
    KAPPA_PRIOR_SD,
    LR_ASYMMETRY,
    BootstrapSummary,
    SurfaceFit,
    cautious_offset,
    confidence_score,
    fit_curve,
)
from advisor.science.length_scaling import interval_sd
from advisor.science.recommendation import (
    Band,
    BandPair,
    Confidence,
    Cost,
    Recommendation,
    confidence_label,
    kappa_rule,
)
from advisor.specs import LrPick

BETA_DEFAULT = 1.0
BETA_BAND = (0.7, 1.5)  # the exponents arXiv 2602.04998's own ratios imply; calibration stays inside it
DERIVED_CONFIDENCE_FACTOR = 0.6  # a method derived through λ ratios is trusted less than one measured
TRANSFER_CONFIDENCE_FACTOR = 0.8  # an LR moved from a sibling proxy without confirmation on the target


def curvature_ratio_lr(lr: float, lambda_from: float, lambda_to: float, beta: float = BETA_DEFAULT) -> float:
    """Move an LR from one model (or method) to another by the ratio of their top Hessian eigenvalues."""
    if not (lambda_from > 0 and lambda_to > 0):
        return lr  # a non-positive λ_max carries no step-size limit: keep the LR
    return lr * (lambda_to / lambda_from) ** (-beta)


def beta_interval(lr: float, lambda_from: float, lambda_to: float) -> tuple[float, float]:
    """The transferred LR at both ends of the β band: how much the exponent's uncertainty matters."""
    ends = [curvature_ratio_lr(lr, lambda_from, lambda_to, beta) for beta in BETA_BAND]
    return min(ends), max(ends)


MIN_CONFIRMATION_HALF_SPAN = 0.25  # decades either side of the middle run: a loss difference short runs show


def confirmation_lrs(
    proxy_lr: float, lambda_proxy: float, lambda_target: float, beta: float = BETA_DEFAULT
) -> list[float]:
    """3 LRs for the target's short runs: from the proxy's LR as is (β = 0) to the curvature ratio's LR (β),
    around their geometric middle, at least MIN_CONFIRMATION_HALF_SPAN decades either side of it."""
    moved = curvature_ratio_lr(proxy_lr, lambda_proxy, lambda_target, beta)
    middle = math.sqrt(proxy_lr * moved)
    half = max(MIN_CONFIRMATION_HALF_SPAN, abs(math.log10(moved / proxy_lr)) / 2)
    return [middle * 10**-half, middle, middle * 10**half]


def past_the_edge(confirmations: list[tuple[float, float | None]], batch_size: int) -> float | None:
    """One more LR, a step beyond the tested end, when the runs' best LR is that end; None otherwise."""
    curve = fit_curve(batch_size, confirmations)
    if curve is None or curve.edge is None:
        return None
    lrs = sorted(lr for lr, _ in confirmations)
    step = lrs[1] / lrs[0] if curve.edge == "low" else lrs[-1] / lrs[-2]
    return lrs[0] / step if curve.edge == "low" else lrs[-1] * step


class ModelRatio(BaseModel):
    """LR*_target / LR*_proxy at equal examples seen, from the target's short runs."""

    examples: int  # the run length both LR* are measured at (one of the proxy's rungs)
    proxy_lr: float  # the proxy's LR*(B*) at that rung
    target_lr: float  # the vertex (or best run) of the target's runs
    kind: str  # "quadratic" (a vertex between the runs) or "grid" (the best run)
    edge: str | None = None  # the target's best run is the lowest ("low") or highest ("high") LR tried

    @property
    def ratio(self) -> float:
        return self.target_lr / self.proxy_lr


def measured_model_ratio(
    proxy_lr: float, batch_size: int, examples: int, confirmations: list[tuple[float, float | None]]
) -> ModelRatio | None:
    """The model ratio the target's runs (lr, eval loss or None when diverged) measure; None when none
    finished."""
    curve = fit_curve(batch_size, confirmations)
    if curve is None:
        return None
    return ModelRatio(
        examples=examples, proxy_lr=proxy_lr, target_lr=curve.lr_star, kind=curve.kind, edge=curve.edge
    )


def build_recommendation(
    surface: SurfaceFit,
    bootstrap: BootstrapSummary | None,
    *,
    method: str,
    cost: Cost,
    lora_plus_ratio: float | None = None,
    evidence: dict[str, Any] | None = None,
    reasoning: list[str] | None = None,
) -> Recommendation:
    """The proxy's own answer: B*, LR*(B*), the ε-band, the κ rule and a confidence."""
    best = surface.curves[surface.batch_size]
    lr_low, lr_high = best.lr_interval(surface.epsilon)
    pairs = [
        BandPair(
            batch_size=e.batch_size,
            learning_rate=e.learning_rate,
            lr_low=e.lr_low,
            lr_high=e.lr_high,
            loss=e.loss,
        )
        for e in surface.band
    ]
    band = Band(
        batch_sizes=[e.batch_size for e in surface.band],
        lr_low=lr_low,
        lr_high=lr_high,
        epsilon=surface.epsilon,
        pairs=pairs,
    )
    score = confidence_score(surface, bootstrap)
    confidence = Confidence(
        score=score,
        label=confidence_label(score),
        lr_interval=bootstrap.lr_interval if bootstrap and bootstrap.replicates else None,
        notes=_confidence_notes(surface),
    )
    kappa = surface.kappa.rule_kappa if surface.kappa else KAPPA_PRIOR
    rule = kappa_rule(kappa, surface.batch_size, surface.learning_rate, measured=surface.kappa is not None)
    return Recommendation(
        batch_size=surface.batch_size,
        learning_rate=surface.learning_rate,
        method=method,
        band=band,
        confidence=confidence,
        predicted_eval_loss=surface.loss,
        lr_rule=rule,
        lora_plus_ratio=lora_plus_ratio if method == "lora_plus" else None,
        cost=cost,
        evidence=evidence or {},
        reasoning=reasoning or fit_reasoning(surface, bootstrap),
    )


def _confidence_notes(surface: SurfaceFit) -> list[str]:
    notes = []
    if surface.is_flat:
        notes.append("flat: every LR tried at B* is within ε of the best, so any LR in the band will do")
    notes.extend(
        f"optimum on the {e.side} {e.axis} edge" + (f" at B={e.batch_size}" if e.batch_size else "")
        for e in surface.edges
    )
    return notes


def fit_reasoning(surface: SurfaceFit, bootstrap: BootstrapSummary | None) -> list[str]:
    """Plain-language sentences on how the numbers were reached."""
    best = surface.curves[surface.batch_size]
    sentences = [
        f"At batch size {surface.batch_size} the eval loss is lowest ({surface.loss:.4f}) at LR "
        f"{surface.learning_rate:.3g}, from a {_fit_kind(best.kind)}"
        f" fit over {len(best.tested)} learning rates.",
        f"Configs within ε = {surface.epsilon:.4f} of the best form the band: batch sizes "
        f"{[e.batch_size for e in surface.band]}.",
    ]
    if surface.kappa and surface.kappa.shrunk is not None:
        sentences.append(
            f"LR*(B) measured as B^{surface.kappa.kappa:.2f} across batch sizes {surface.kappa.batch_sizes} "
            f"(± {surface.kappa.sd:.2g} over resampled runs), weighed against arXiv 2602.04998's "
            f"{KAPPA_PRIOR} ± {KAPPA_PRIOR_SD}, which keeps κ within "
            f"{KAPPA_BOUNDS[0]:g} … {KAPPA_BOUNDS[1]:g}: rescale the LR as B^{surface.kappa.shrunk:.2f} "
            "when the effective batch changes."
        )
    elif surface.kappa:
        sentences.append(
            f"LR*(B) grows as B^{surface.kappa.kappa:.2f} across batch sizes "
            f"{surface.kappa.batch_sizes}; rescale the LR as B^{surface.kappa.rule_kappa:.2f} (κ kept within "
            f"{KAPPA_BOUNDS[0]:g} … {KAPPA_BOUNDS[1]:g}) when the effective batch changes."
        )
    else:
        sentences.append(
            f"κ could not be fitted (fewer than 2 batch sizes with an interior optimum); the rule "
            f"uses arXiv 2602.04998's κ ≈ {KAPPA_PRIOR}."
        )
    if bootstrap and bootstrap.replicates:
        low, high = bootstrap.lr_interval
        sentences.append(
            f"Resampling the runs {bootstrap.replicates} times puts LR* between {low:.3g} and "
            f"{high:.3g} ({bootstrap.level:.0%}; never narrower than the LRs tried resolve), and picks "
            f"batch size {surface.batch_size} in "
            f"{bootstrap.batch_share.get(surface.batch_size, 0.0):.0%} of resamples."
        )
    for edge in (e for e in surface.edges if e.axis == "lr" and e.batch_size == surface.batch_size):
        tried = [lr for lr, loss in best.tested if loss is not None]
        sentences.append(
            f"The best LR at B* is the {'highest' if edge.side == 'high' else 'lowest'} one run this far "
            f"({tried[-1] if edge.side == 'high' else tried[0]:.3g}): the optimum may lie beyond it, so the "
            "interval of LR* stays open a grid step past it. Raise the budget so the study can try LRs "
            "there (it may go a decade past either end of lr_range), or move lr_range if it ended there."
        )
    for edge in (e for e in surface.edges if e.axis == "batch"):
        direction = "smaller" if edge.side == "low" else "larger"
        sentences.append(
            f"B* = {surface.batch_size} is the {'smallest' if edge.side == 'low' else 'largest'} "
            f"candidate batch size: a {direction} effective batch may be better still; add one "
            "to batch_sizes to test it."
        )
    if surface.n_diverged:
        sentences.append(
            f"{surface.n_diverged} of {surface.n_observations} runs diverged; they bound LR* from above."
        )
    return sentences


def transfer_to_target(
    rec: Recommendation,
    *,
    lambda_proxy: float,
    lambda_target: float,
    beta: float = BETA_DEFAULT,
    confirmations: list[tuple[float, float | None]] | None = None,
    model_ratio: ModelRatio | None = None,
) -> Recommendation:
    """A proxy's answer moved to the target: same B*, LR by the model ratio the target's short runs measured
    (`confirmations`, `model_ratio`) or, without them, by the curvature ratio."""
    lr = curvature_ratio_lr(rec.learning_rate, lambda_proxy, lambda_target, beta)
    chosen = rec.learning_rate * model_ratio.ratio if model_ratio else lr
    low, high = beta_interval(rec.learning_rate, lambda_proxy, lambda_target)
    sentence = (
        f"Moved from the proxy by the curvature ratio λ_target/λ_proxy = {lambda_target / lambda_proxy:.3g}"
        f" with β = {beta:g}: LR {rec.learning_rate:.3g} → {lr:.3g} (β over 0.7–1.5 gives "
        f"{low:.3g} … {high:.3g}); B* = {rec.batch_size} carries over unchanged."
    )
    if model_ratio:
        where = {"low": " (the lowest LR tried: it may lie lower)", "high": " (the highest LR tried)"}
        sentence += (
            f" Instead, {len(confirmations or [])} short target runs at B* on the proxy's rung of "
            f"{model_ratio.examples} examples put the target's LR* at {model_ratio.target_lr:.3g}"
            f"{where.get(model_ratio.edge or '', '')} against the proxy's {model_ratio.proxy_lr:.3g} there: "
            f"the model ratio ×{model_ratio.ratio:.3g} moves the LR to {chosen:.3g}."
        )
    # The proxy's loss says nothing about another model's: the target's loss is not predicted.
    sentence += " The study measured the proxy model's loss, so no eval loss is predicted for the target."
    moved = _rescaled(
        rec,
        chosen,
        chosen / rec.learning_rate,
        1.0 if model_ratio else TRANSFER_CONFIDENCE_FACTOR,
        sentence,
        derived=False,
        # Unmeasured, the LR is only as good as β: the interval of LR* holds where β's band puts it.
        widen_to=None if model_ratio else (low, high),
        evidence={
            "lambda_proxy": lambda_proxy,
            "lambda_target": lambda_target,
            "beta": beta,
            "proxy_learning_rate": rec.learning_rate,  # the proxy's own LR*, before the move
            "transferred_learning_rate": lr,  # through the curvature ratio
            "confirmations": confirmations or [],
            "model_ratio": model_ratio.model_dump() | {"ratio": model_ratio.ratio} if model_ratio else None,
        },
    )
    return moved.model_copy(update={"predicted_eval_loss": None, "predicted_eval_loss_interval": None})


def derive_method(
    rec: Recommendation,
    method: str,
    *,
    lambda_measured: float,
    lambda_method: float,
    beta: float = BETA_DEFAULT,
) -> Recommendation:
    """Another method's recommendation from this one's, through λ ratios (arXiv 2602.04998), marked
    derived."""
    lr = curvature_ratio_lr(rec.learning_rate, lambda_measured, lambda_method, beta)
    ends = beta_interval(rec.learning_rate, lambda_measured, lambda_method)
    sentence = (
        f"Derived for {method} from the {rec.method} study: its curvature is "
        f"{lambda_method / lambda_measured:.3g}× at initialisation, so its LR is {lr:.3g} (β = {beta:g}; "
        f"β over 0.7–1.5 gives {ends[0]:.3g} … {ends[1]:.3g}, which the band holds); derived answers carry "
        "a lower confidence — run its own study to confirm."
    )
    derived = _rescaled(
        rec,
        lr,
        lr / rec.learning_rate,
        DERIVED_CONFIDENCE_FACTOR,
        sentence,
        derived=True,
        evidence={"derived_from": rec.method, "lambda_ratio": lambda_method / lambda_measured},
        widen_to=ends,
    )
    derived = band_holding_interval(derived)
    return derived.model_copy(
        update={
            "method": method,
            "predicted_eval_loss": None,
            "predicted_eval_loss_interval": None,
            "lora_plus_ratio": rec.lora_plus_ratio if method == "lora_plus" else None,
        }
    )


def band_holding_interval(rec: Recommendation) -> Recommendation:
    """The band's LR range widened to hold the 90% interval of LR*, which it may not: the ε-band is where the
    proxy's losses were within ε of its best, at a shorter run than the real one, and when those losses
    differ by more than ε it shrinks to the best LR alone. The optimum may lie anywhere in the interval,
    so `advisor check` must pass a plan there (a band narrower than the uncertainty fails good pipelines)."""
    interval = rec.confidence.lr_interval
    if interval is None or (rec.band.lr_low <= interval[0] and interval[1] <= rec.band.lr_high):
        return rec
    band = rec.band.model_copy(
        update={"lr_low": min(rec.band.lr_low, interval[0]), "lr_high": max(rec.band.lr_high, interval[1])}
    )
    return rec.model_copy(update={"band": band})


def picked_lr(rec: Recommendation, pick: LrPick) -> Recommendation:
    """The answer's LR as the spec's `lr_pick` asks: LR*'s median as it stands, or the cautious pick below it.

    The median is the default. On SmolLM2-135M the cautious pick cost 0.7–1.1 points of regret in each of
    7 studies (LoRA and PiSSA on the English FAQ, LoRA on the Swedish one; bench/RESULTS.md), where the
    median already sat low (LR* rises with run length there, the run-length prior says it falls). On the
    quality benchmark's tiny tasks, whose short runs read LR* high, it helped the tail instead: the step
    corrects a bias more than it hedges an uncertainty, and on the one real LLM measured that bias points
    the other way."""
    return with_cautious_lr(rec) if pick == "cautious" else rec


def with_cautious_lr(rec: Recommendation, asymmetry: float = LR_ASYMMETRY) -> Recommendation:
    """The LR moved below LR*'s median to where the expected loss is lowest (`fits.cautious_offset`), given
    the final 90% interval of LR*. The interval and the band stay (they are about LR*, and the pick lies
    inside both); the rule for other batch sizes is re-anchored at the pick. The median is kept in the
    evidence: reported outcomes are compared with it (`LrCorrection`), so the move is never counted twice."""
    interval = rec.confidence.lr_interval
    if interval is None:
        return rec
    sd = interval_sd(interval)
    offset = cautious_offset(sd, asymmetry)
    lr = rec.learning_rate * 10**offset
    sentence = (
        f"LR* is known to ±{sd:.2f} decades (one standard deviation) and the loss rises about {asymmetry:g}× "
        f"faster above the optimum than below, so the LR sits ×{10**offset:.2f} below LR*'s median "
        f"{rec.learning_rate:.3g}: there a miss costs least on average."
    )
    evidence = {
        "lr_star_median": rec.learning_rate,
        "sd_decades": sd,
        "asymmetry": asymmetry,
        "offset_decades": offset,
    }
    rule = kappa_rule(rec.lr_rule.kappa, rec.lr_rule.reference_batch, lr, measured=rec.lr_rule.measured)
    return rec.model_copy(
        update={
            "learning_rate": lr,
            "lr_rule": rule,
            "evidence": {**rec.evidence, "caution": evidence},
            "reasoning": [*rec.reasoning, sentence],
        }
    )


def with_lr_scaled(
    rec: Recommendation,
    scale: float,
    sentence: str,
    *,
    evidence_key: str,
    evidence: dict[str, Any],
    confidence_factor: float = 1.0,
    lr_interval: tuple[float, float] | None = None,
) -> Recommendation:
    """The recommendation with its LR, band and rule multiplied by `scale`, `sentence` added to the
    reasoning and `evidence` stored under `evidence_key`; `lr_interval` replaces the confidence's interval
    of LR* when the move itself made it wider or narrower (else the interval moves with the LR)."""
    return _rescaled(
        rec,
        rec.learning_rate * scale,
        scale,
        confidence_factor,
        sentence,
        derived=rec.derived,
        evidence=evidence,
        evidence_key=evidence_key,
        lr_interval=lr_interval,
    )


def _rescaled(
    rec: Recommendation,
    lr: float,
    scale: float,
    confidence_factor: float,
    sentence: str,
    *,
    derived: bool,
    evidence: dict[str, Any],
    evidence_key: str = "transfer",
    lr_interval: tuple[float, float] | None = None,
    widen_to: tuple[float, float] | None = None,
) -> Recommendation:
    """The same recommendation with every LR multiplied by `scale` and the confidence lowered by a factor;
    the interval of LR* moves with it unless a new one is given, and then widens to hold `widen_to`: for a
    move by a curvature ratio, the LRs β's band (0.7–1.5) gives. That band is a judgement from arXiv
    2602.04998's ratios, not a law: `bench/curvature_transfer.py` measured β ≈ 0.7–0.8 on SmolLM2, −0.3 … 0 on
    a tiny model."""
    band = rec.band.model_copy(
        update={
            "lr_low": rec.band.lr_low * scale,
            "lr_high": rec.band.lr_high * scale,
            "pairs": [
                p.model_copy(
                    update={
                        "learning_rate": p.learning_rate * scale,
                        "lr_low": p.lr_low * scale,
                        "lr_high": p.lr_high * scale,
                    }
                )
                for p in rec.band.pairs
            ],
        }
    )
    score = min(1.0, rec.confidence.score * confidence_factor)
    if lr_interval is None and rec.confidence.lr_interval is not None:
        lr_interval = (rec.confidence.lr_interval[0] * scale, rec.confidence.lr_interval[1] * scale)
    if widen_to is not None:
        low, high = lr_interval or (lr, lr)
        lr_interval = (min(low, widen_to[0]), max(high, widen_to[1]))
    confidence = rec.confidence.model_copy(
        update={"score": score, "label": confidence_label(score), "lr_interval": lr_interval}
    )
    rule = kappa_rule(rec.lr_rule.kappa, rec.lr_rule.reference_batch, lr, measured=rec.lr_rule.measured)
    return rec.model_copy(
        update={
            "learning_rate": lr,
            "band": band,
            "confidence": confidence,
            "lr_rule": rule,
            "derived": derived,
            "evidence": {**rec.evidence, evidence_key: evidence},
            "reasoning": [*rec.reasoning, sentence],
        }
    )


def _fit_kind(kind: str) -> str:
    return "local quadratic in log LR" if kind == "quadratic" else "grid"
