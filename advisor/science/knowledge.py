"""Warm start: answer at once from stored studies of a similar context, and learn from reported outcomes.

Before any compute, stored recommendations for the same or a nearby context (model family, method, rank
bucket, dataset-size bucket, α convention) give a provisional answer. Reported full-run outcomes (the LR
that actually worked on the target) recalibrate β, the curvature-transfer exponent, and correct the LR
prior. Storage is behind `KnowledgeStore`, a Protocol, so the science stays free of SQL: the database
repository implements it elsewhere, tests use a list in memory.
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np
from pydantic import BaseModel, Field

from advisor.science.fits import bounded_kappa
from advisor.science.loss_forecast import LossExponentPrior
from advisor.science.recommendation import (
    Band,
    Confidence,
    Cost,
    Recommendation,
    confidence_label,
    kappa_rule,
)
from advisor.science.transfer import BETA_BAND, BETA_DEFAULT, KAPPA_PRIOR
from advisor.specs import StudySpec

# arXiv 2602.04998 (α = r): r = 4 needs 5.6× the LR of r = 256, so LR* ∝ r^−0.41; LR* drifts down ~3× from 5k
# to 395k examples, so LR* ∝ N^−0.25. A neighbour's LR is moved along these before it is averaged in.
RANK_EXPONENT = -math.log(5.6) / math.log(256 / 4)
SIZE_EXPONENT = -math.log(3.0) / math.log(395_000 / 5_000)
# how far γ may stray from arXiv 2602.04998's −0.25 on another model or task (a judgement)
SIZE_EXPONENT_SD = 0.3
# A prior learned from stored studies never claims γ to better than this: tasks of one family still differ.
LEARNED_EXPONENT_SD_FLOOR = 0.1
MAX_DISTANCE = 3.0  # neighbours further than this (e.g. another model family at another rank) are ignored
PROVISIONAL_CONFIDENCE_CAP = 0.5  # a warm start never claims more than "medium" before any compute
BETA_SHRINKAGE = 2.0  # the prior β counts as this many outcomes when recalibrating
MIN_LOG_RATIO = 0.05  # outcomes whose curvature ratio is within ~12% of 1 say nothing about β
# A full run's best LR more than a decade from what its study recommended says the run (or the report) is
# off, not the study: an outcome's log ratio is clipped to ±1 decade before it counts.
MAX_LOG_CORRECTION = math.log(10.0)
# With three reporters, the median of their votes is one no single reporter chose; with fewer, outcomes move
# an answer only within the LR interval its own study measured.
CORROBORATING_REPORTERS = 3


def rank_bucket(rank: int) -> int:
    """Ranks grouped by powers of two: 8 and 12 share bucket 3 (2³ ≤ r < 2⁴)."""
    return math.floor(math.log2(rank))


def size_bucket(n_examples: int) -> int:
    """Dataset sizes grouped by half decades: bucket 7 holds 3.2k–10k examples."""
    return math.floor(2 * math.log10(max(n_examples, 1)))


def model_family(model: str) -> str:
    """A rough family name from a model reference: 'Qwen/Qwen3-0.6B' → 'qwen3'."""
    name = model.rstrip("/").split("/")[-1].lower()
    return name.split("-")[0].split("_")[0] or name


class StudyContext(BaseModel):
    """What makes two studies comparable."""

    model: str
    model_family: str
    method: str
    rank_bucket: int
    dataset_size_bucket: int
    scaling: str  # α convention: alpha_over_r or alpha_over_sqrt_r
    alpha_over_rank: float
    dataset_fingerprint: str | None = None
    rank: int = 0
    dataset_size: int = 0

    @classmethod
    def from_spec(
        cls, spec: StudySpec, *, n_train: int, fingerprint: str | None = None, family: str | None = None
    ) -> StudyContext:
        assert spec.alpha is not None and spec.scaling is not None
        return cls(
            model=spec.model,
            model_family=family or model_family(spec.model),
            method=spec.method,
            rank_bucket=rank_bucket(spec.rank),
            dataset_size_bucket=size_bucket(n_train),
            scaling=spec.scaling,
            alpha_over_rank=spec.alpha / spec.rank,
            dataset_fingerprint=fingerprint,
            rank=spec.rank,
            dataset_size=n_train,
        )


class KnownResult(BaseModel):
    """A stored study's answer."""

    context: StudyContext
    batch_size: int
    learning_rate: float
    confidence: float = Field(ge=0.0, le=1.0)
    kappa: float | None = None
    predicted_eval_loss: float | None = None
    lambda_max: float | None = None
    # γ in LR* ∝ N^γ and its spread, when the study measured how LR* moves with run length (horizon or
    # trend runs); None when it only applied the prior.
    size_exponent: float | None = None
    size_exponent_sd: float | None = None


class ReportedOutcome(BaseModel):
    """What a user's full run found, reported back: the proxy's LR* and the target's best LR."""

    context: StudyContext
    batch_size: int
    proxy_lr: float  # LR* measured on the proxy
    recommended_lr: float  # what the advisor said for the target
    best_lr: float  # the LR that worked best in the full runs
    lambda_proxy: float | None = None
    lambda_target: float | None = None
    # The loss side: the full run's final eval loss, and the study's L* (examples, loss) that its forecast
    # started from and the length it forecast for; None when either is unknown.
    final_eval_loss: float | None = None
    forecast_from: tuple[int, float] | None = None
    forecast_examples: int | None = None
    # Who reported it (a token, or the study when no token is known): each reporter has one vote, so that
    # no single reporter moves an answer by more than its share (see `reporter_votes`).
    reporter: str = "unknown"


class KnowledgeStore(Protocol):
    """What the science needs from storage; the SQL repository and test doubles implement it."""

    def similar(self, context: StudyContext) -> list[KnownResult]: ...

    def outcomes(self, context: StudyContext) -> list[ReportedOutcome]: ...


# 1. Nearness ------------------------------------------------------------------------------------------------


def context_distance(a: StudyContext, b: StudyContext) -> float:
    """0 for the same context; ∞ when LRs do not compare at all (another method or α convention)."""
    if (
        a.method != b.method
        or a.scaling != b.scaling
        or not math.isclose(a.alpha_over_rank, b.alpha_over_rank)
    ):
        return math.inf  # arXiv 2605.31484: the LR scale is coupled to method and α/r
    distance = 0.0 if a.model == b.model else 0.5
    distance += 0.0 if a.model_family == b.model_family else 1.5
    distance += 0.5 * abs(a.rank_bucket - b.rank_bucket) + 0.5 * abs(
        a.dataset_size_bucket - b.dataset_size_bucket
    )
    same_data = a.dataset_fingerprint is not None and a.dataset_fingerprint == b.dataset_fingerprint
    return max(0.0, distance - (0.25 if same_data else 0.0))


def adjusted_lr(known: KnownResult, context: StudyContext, size_exponent: float = SIZE_EXPONENT) -> float:
    """A neighbour's LR moved to this context's rank along arXiv 2602.04998's trend, and to its dataset size
    along LR* ∝ N^γ with γ = `size_exponent` (arXiv 2602.04998's −0.25 unless stored studies measured
    better)."""
    lr = known.learning_rate
    if known.context.rank and context.rank:
        lr *= (context.rank / known.context.rank) ** RANK_EXPONENT
    if known.context.dataset_size and context.dataset_size:
        lr *= (context.dataset_size / known.context.dataset_size) ** size_exponent
    return lr


# 2. Recalibration from outcomes -----------------------------------------------------------------------------


def reporter_votes(values: list[tuple[str, float]]) -> list[float]:
    """One value per reporter, the median of what it reported: thirty reports from one token count as one,
    so the median over votes moves with the number of reporters that agree, not with how often one posts."""
    by_reporter: dict[str, list[float]] = {}
    for reporter, value in values:
        by_reporter.setdefault(reporter, []).append(value)
    return [float(np.median(reported)) for reported in by_reporter.values()]


class BetaCalibration(BaseModel):
    beta: float = BETA_DEFAULT
    outcomes_used: int = 0
    raw_estimates: list[float] = Field(default_factory=list)


def recalibrate_beta(outcomes: list[ReportedOutcome], prior: float = BETA_DEFAULT) -> BetaCalibration:
    """β from outcomes: each gives β_i = −log(best_lr / proxy_lr) / log(λ_target / λ_proxy).

    The median of the β_i is shrunk towards the prior (worth BETA_SHRINKAGE outcomes) and kept inside the
    0.7–1.5 band arXiv 2602.04998's own numbers imply: a few outcomes move β, one odd run cannot throw it out.
    """
    reported = []
    for outcome in outcomes:
        if not (
            outcome.lambda_proxy
            and outcome.lambda_target
            and min(outcome.lambda_proxy, outcome.lambda_target) > 0
            and outcome.best_lr > 0
            and outcome.proxy_lr > 0
        ):
            continue
        log_ratio = math.log(outcome.lambda_target / outcome.lambda_proxy)
        if abs(log_ratio) >= MIN_LOG_RATIO:
            reported.append((outcome.reporter, -math.log(outcome.best_lr / outcome.proxy_lr) / log_ratio))
    estimates = reporter_votes(reported)
    if not estimates:
        return BetaCalibration(beta=prior, outcomes_used=0)
    n = len(estimates)
    shrunk = (n * float(np.median(estimates)) + BETA_SHRINKAGE * prior) / (n + BETA_SHRINKAGE)
    return BetaCalibration(beta=float(np.clip(shrunk, *BETA_BAND)), outcomes_used=n, raw_estimates=estimates)


class LrCorrection(BaseModel):
    """How far off recommendations in this context were, by reported full runs: their best LR over the
    recommended one, clipped to a decade, one vote per reporter (`reporter_votes`), the median of the votes
    shrunk towards 1 (no correction counts as BETA_SHRINKAGE reporters). One reporter alone moves the LR by
    at most a third of a decade, however many outcomes it posts."""

    factor: float = 1.0
    outcomes_used: int = 0
    reporters: int = 0  # distinct reporters (tokens) behind the outcomes

    @property
    def corroborated(self) -> bool:
        """Enough independent reporters that no single one decides the median: only then may the correction
        move an answer beyond the LR interval its own study measured."""
        return self.reporters >= CORROBORATING_REPORTERS

    def describe(self) -> str:
        return (
            f"{self.outcomes_used} reported full-run outcome(s) from {self.reporters} reporter(s) in this "
            f"context found the best LR at ×{self.factor:.2f} of what was recommended (shrunk towards ×1)"
        )


def lr_correction(outcomes: list[ReportedOutcome]) -> LrCorrection:
    reported = [
        (
            o.reporter,
            float(np.clip(math.log(o.best_lr / o.recommended_lr), -MAX_LOG_CORRECTION, MAX_LOG_CORRECTION)),
        )
        for o in outcomes
        if o.best_lr > 0 and o.recommended_lr > 0
    ]
    votes = reporter_votes(reported)
    if not votes:
        return LrCorrection()
    shrunk = float(np.median(votes)) * len(votes) / (len(votes) + BETA_SHRINKAGE)
    return LrCorrection(factor=math.exp(shrunk), outcomes_used=len(reported), reporters=len(votes))


# One outcome's α, a judgement: 1% seed noise in each of two losses over half a decade of N is ± 0.012,
# and a full run's LR is seldom exactly at the optimum its study's L* was measured at.
OUTCOME_LOSS_EXPONENT_SD = 0.03
# Slopes of log L* against log N a reported run may vote for: fine-tuning losses fall at most about as fast as
# N^−0.5 and do not rise with more data (beyond noise); a slope outside says the run differed from the study
# (another LR, other data), not that α did.
LOSS_SLOPE_RANGE = (-0.5, 0.1)


def loss_exponent_prior(outcomes: list[ReportedOutcome]) -> LossExponentPrior:
    """The loss forecast's slope −α sharpened by full runs reported back: each outcome measures
    log(final loss / the study's L*) / log(real run / top rung), counted with OUTCOME_LOSS_EXPONENT_SD
    against the default prior's ± 0.05. Outcomes of runs no longer than the study's own are skipped."""
    default = LossExponentPrior()
    reported = []
    for o in outcomes:
        if not (o.final_eval_loss and o.forecast_from and o.forecast_examples):
            continue
        examples, loss = o.forecast_from
        if o.forecast_examples <= examples or loss <= 0 or o.final_eval_loss <= 0:
            continue
        reported.append(
            (o.reporter, math.log10(o.final_eval_loss / loss) / math.log10(o.forecast_examples / examples))
        )
    # One vote per reporter (its outcomes are not independent evidence), within LOSS_SLOPE_RANGE.
    low, high = LOSS_SLOPE_RANGE
    votes = [min(max(vote, low), high) for vote in reporter_votes(reported)]
    if not votes:
        return default
    precision = 1 / default.sd**2 + len(votes) / OUTCOME_LOSS_EXPONENT_SD**2
    weighted = default.mean / default.sd**2 + sum(votes) / OUTCOME_LOSS_EXPONENT_SD**2
    used = len(reported)
    return LossExponentPrior(mean=weighted / precision, sd=1 / math.sqrt(precision), outcomes=used)


# 3. The provisional answer ----------------------------------------------------------------------------------


def provisional_recommendation(
    context: StudyContext,
    neighbours: list[KnownResult],
    outcomes: list[ReportedOutcome] | None = None,
    size_exponent: ExponentPrior | None = None,
) -> Recommendation | None:
    """An answer before any compute, from stored neighbours weighted by exp(−distance); None without any.
    A neighbour of another dataset size moves along the γ the neighbours measured (`size_exponent_prior`)."""
    near = [(context_distance(context, k.context), k) for k in neighbours]
    near = [(d, k) for d, k in near if d <= MAX_DISTANCE]
    if not near:
        return None
    exponent = size_exponent or size_exponent_prior(context, neighbours)
    weights = np.array([math.exp(-d) * max(k.confidence, 0.05) for d, k in near])
    log_lrs = np.array([math.log10(adjusted_lr(k, context, exponent.mean)) for _, k in near])
    correction = lr_correction(outcomes or [])
    lr = 10 ** float(np.average(log_lrs, weights=weights)) * correction.factor
    batch = _weighted_median([k.batch_size for _, k in near], weights)
    spread = (
        float(np.sqrt(np.average((log_lrs - log_lrs.mean()) ** 2, weights=weights)))
        if len(near) > 1
        else 0.25
    )
    kappas = [k.kappa for _, k in near if k.kappa is not None]
    # Studies stored before κ was held within its bounds may carry a wilder one.
    kappa = bounded_kappa(float(np.median(kappas))) if kappas else None
    return _provisional(context, near, batch, lr, max(spread, 0.25), kappa, correction, exponent)


def _weighted_median(values: list[int], weights: np.ndarray) -> int:
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order])
    return int(np.asarray(values)[order][np.searchsorted(cumulative, cumulative[-1] / 2)])


def _provisional(
    context: StudyContext,
    near: list[tuple[float, KnownResult]],
    batch: int,
    lr: float,
    spread_decades: float,
    kappa: float | None,
    correction: LrCorrection,
    exponent: ExponentPrior,
) -> Recommendation:
    nearest = min(d for d, _ in near)
    score = min(PROVISIONAL_CONFIDENCE_CAP, max(k.confidence for _, k in near) * math.exp(-nearest))
    low, high = lr / 10**spread_decades, lr * 10**spread_decades
    band = Band(batch_sizes=sorted({k.batch_size for _, k in near}), lr_low=low, lr_high=high, epsilon=0.0)
    reasons = [
        f"Provisional, before any compute: {len(near)} stored studies of a nearby context "
        f"(nearest at distance {nearest:.2g}) put LR at {lr:.3g} and batch size {batch}, after moving "
        f"each along arXiv 2602.04998's rank trend and to this dataset size along LR* ∝ N^γ "
        f"({exponent.describe()})."
    ]
    if correction.outcomes_used:
        reasons.append(f"Moved by ×{correction.factor:.2f}: {correction.describe()}.")
    return Recommendation(
        batch_size=batch,
        learning_rate=lr,
        method=context.method,
        band=band,
        confidence=Confidence(score=score, label=confidence_label(score), lr_interval=(low, high)),
        predicted_eval_loss=None,
        lr_rule=kappa_rule(
            kappa if kappa is not None else KAPPA_PRIOR, batch, lr, measured=kappa is not None
        ),
        cost=Cost(proxy_seconds=0.0, examples_seen=0, runs=0),
        provisional=True,
        reasoning=reasons,
        evidence={"neighbours": [{"distance": d, **k.model_dump(mode="json")} for d, k in near]},
    )


class ExponentPrior(BaseModel):
    """The prior of γ in LR* ∝ N^γ that a study moves its LR to the real run's length with."""

    mean: float = SIZE_EXPONENT
    sd: float = SIZE_EXPONENT_SD
    studies: int = 0  # stored studies of a nearby context that measured γ and went into it

    def describe(self) -> str:
        if not self.studies:
            return f"arXiv 2602.04998's prior {self.mean:.2f} ± {self.sd:.2g}"
        return (
            f"a prior {self.mean:.2f} ± {self.sd:.2f} from arXiv 2602.04998 and {self.studies} stored studies"
        )


def size_exponent_prior(context: StudyContext, neighbours: list[KnownResult]) -> ExponentPrior:
    """arXiv 2602.04998's γ sharpened by what nearby stored studies measured: a precision-weighted mean in
    which a neighbour at distance d counts with its spread widened by e^(d/2). A neighbour's γ is its
    posterior, which leaned on arXiv 2602.04998's prior already; counting that prior again errs towards it,
    the safe side."""
    precision, weighted, used = 1 / SIZE_EXPONENT_SD**2, SIZE_EXPONENT / SIZE_EXPONENT_SD**2, 0
    for known in neighbours:
        distance = context_distance(context, known.context)
        if known.size_exponent is None or not known.size_exponent_sd or distance > MAX_DISTANCE:
            continue
        sd = known.size_exponent_sd * math.exp(distance / 2)
        precision += 1 / sd**2
        weighted += known.size_exponent / sd**2
        used += 1
    if not used:
        return ExponentPrior()
    sd = max(1 / math.sqrt(precision), LEARNED_EXPONENT_SD_FLOOR)
    return ExponentPrior(mean=weighted / precision, sd=sd, studies=used)


class Priors(BaseModel):
    """What stored studies say before any compute: a provisional answer, β (curvature transfer), the prior
    of γ (run-length transfer), the correction reported outcomes call for and the loss forecast's slope
    they measured; arXiv 2602.04998's defaults and no correction when nothing is stored."""

    provisional: Recommendation | None = None
    calibration: BetaCalibration = Field(default_factory=BetaCalibration)
    size_exponent: ExponentPrior = Field(default_factory=ExponentPrior)
    lr_correction: LrCorrection = Field(default_factory=LrCorrection)
    loss_exponent: LossExponentPrior = Field(default_factory=LossExponentPrior)

    @property
    def beta(self) -> float:
        return self.calibration.beta


def stored_priors(store: KnowledgeStore, context: StudyContext) -> Priors:
    """Ask the store once (neighbours and outcomes) for everything a study starts from."""
    neighbours, outcomes = store.similar(context), store.outcomes(context)
    exponent = size_exponent_prior(context, neighbours)
    return Priors(
        provisional=provisional_recommendation(context, neighbours, outcomes, exponent),
        calibration=recalibrate_beta(outcomes),
        size_exponent=exponent,
        lr_correction=lr_correction(outcomes),
        loss_exponent=loss_exponent_prior(outcomes),
    )


def warm_start(store: KnowledgeStore, context: StudyContext) -> tuple[Recommendation | None, BetaCalibration]:
    """The provisional answer (if any neighbour) and β recalibrated from outcomes."""
    priors = stored_priors(store, context)
    return priors.provisional, priors.calibration
