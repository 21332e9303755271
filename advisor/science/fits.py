"""Response-surface fits: eval loss over (batch size, learning rate) → LR*(B), L*(B), B*, the ε-band, κ.

Why a *robust local quadratic in log LR* per batch size (and not a global quadratic, a spline or a GP):
- Loss against log LR is a bowl near its minimum but asymmetric away from it (a slow rise towards low LRs,
  a cliff towards divergence), so a global quadratic is biased; fitting only the ±half decade around the
  grid minimum (2 grid steps each side on the 4-per-decade grid) keeps the quadratic where it is accurate.
- 3 to 9 points per batch size are too few to fit a GP's length scale or a spline's knots honestly; a
  local quadratic has 3 parameters and a closed-form vertex.
- Seeds are averaged before the fit; with a measured seed noise a soft-L1 loss at that scale (scipy's
  `least_squares`) keeps one bad run from dragging the vertex.
- The vertex is trusted within one grid step of the grid minimum only: interpolation, never extrapolation.
  When the bowl is not convex (flat or noisy) the fit falls back to the grid minimum and says so.

Across run lengths (§4): LR* measured at a few lengths (the top rung, horizon or trend runs) is joined by
a Bayesian straight line in log LR* against log N whose slope has arXiv 2602.04998's prior, −0.25 ± 0.3,
because two or three noisy points cannot fit a slope on their own.

A spec may ask for an LR a little below LR*'s median (`lr_pick: cautious`), by an amount that grows with
LR*'s spread (§5): the bowl is steeper above the optimum than below, so under uncertainty a low miss costs
less than a high one. The median is the default (`transfer.picked_lr` says why).

Diverged runs carry no loss; they bound LR* from above. Everything here is numpy/scipy, no torch.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
from scipy.optimize import brentq, least_squares
from scipy.stats import norm

from advisor.science.recommendation import NoRecommendation

GRID_STEP = 0.25  # decades between LR grid points: 4 per decade, as in arXiv 2602.04998
WINDOW_DECADES = 0.5  # half-width of the local fit: 2 grid steps each side of the grid minimum
DEFAULT_EPSILON = 0.005  # the band holds configs within 0.5% of the best loss (the benchmark's regret target)
Z90 = 1.645  # a 90% normal interval is ± this many standard deviations (the bootstrap's level)

Side = Literal["low", "high"]
Axis = Literal["lr", "batch"]


@dataclass(frozen=True)
class Observation:
    """One run's eval loss at a given number of examples seen; `loss` is None when it diverged."""

    batch_size: int
    learning_rate: float
    loss: float | None
    seed: int = 0
    examples_seen: int = 0
    dataset_size: int | None = None

    @property
    def diverged(self) -> bool:
        return self.loss is None or not math.isfinite(self.loss)


@dataclass(frozen=True)
class GridEdge:
    """The optimum sits on the edge of what was searched: the planner should extend the grid there."""

    axis: Axis
    side: Side
    batch_size: int | None = None  # for axis "lr": the batch size whose LR optimum is on the edge


@dataclass
class CurveFit:
    """Eval loss against log10 LR at one batch size, and its minimum."""

    batch_size: int
    lr_star: float
    loss_star: float
    kind: Literal["quadratic", "grid"]  # "grid": no convex bowl, the best grid point is reported
    coefficients: tuple[float, float, float]  # a + b·u + c·u², u = log10(lr) − centre
    centre: float
    tested: list[tuple[float, float | None]]  # (lr, loss or None when diverged), sorted by lr
    edge: Side | None = None
    residual_sd: float = 0.0

    @property
    def curvature(self) -> float:
        """d²loss/d(log10 lr)²: how sharply the loss rises one decade away from LR* (0 when flat)."""
        return 2.0 * self.coefficients[2] if self.kind == "quadratic" else 0.0

    def predict(self, lr: float) -> float:
        a, b, c = self.coefficients
        u = math.log10(lr) - self.centre
        return a + b * u + c * u * u

    def lr_interval(self, epsilon: float) -> tuple[float, float]:
        """LRs whose loss is within `epsilon` of L*(B), never wider than what was tested."""
        finite = [(lr, loss) for lr, loss in self.tested if loss is not None]
        low, high = finite[0][0], finite[-1][0]
        if self.kind == "quadratic":
            half = math.sqrt(epsilon / self.coefficients[2])
            x = math.log10(self.lr_star)
            return max(low, 10 ** (x - half)), min(high, 10 ** (x + half))
        near = [lr for lr, loss in finite if loss <= self.loss_star + epsilon]
        return min(near), max(near)


@dataclass
class KappaFit:
    """LR*(B) ∝ B^κ: rescale the LR when the effective batch changes (arXiv 2602.04998: κ ≈ 0.55…0.83).

    `kappa` is the least-squares slope through the measured LR*(B); `shrunk` is what the LR rule uses once
    `shrink_kappa` has weighed that slope by its bootstrap spread against arXiv 2602.04998's prior."""

    kappa: float
    intercept: float  # log10 LR* at B = 1
    batch_sizes: list[int]
    r_squared: float
    sd: float | None = None  # spread of the slope over bootstrap refits (∞: too few refits had a slope)
    shrunk: float | None = None

    @property
    def rule_kappa(self) -> float:
        return bounded_kappa(self.kappa) if self.shrunk is None else self.shrunk

    def lr_at(self, batch_size: float) -> float:
        return 10 ** (self.intercept + self.kappa * math.log10(batch_size))


@dataclass
class BandEntry:
    batch_size: int
    learning_rate: float  # LR*(B)
    lr_low: float
    lr_high: float
    loss: float  # L*(B)


@dataclass
class SurfaceFit:
    """All batch sizes at one fidelity (examples seen): the optimum, its ε-band and what to extend."""

    curves: dict[int, CurveFit]
    batch_size: int  # B*
    learning_rate: float  # LR*(B*)
    loss: float  # L*(B*), the predicted eval loss
    epsilon: float
    band: list[BandEntry]
    kappa: KappaFit | None
    edges: list[GridEdge] = field(default_factory=list)
    noise_sd: float = 0.0
    n_observations: int = 0
    n_diverged: int = 0

    @property
    def is_flat(self) -> bool:
        """No LR tested at B* is worse than the best by more than ε: the data cannot locate LR*."""
        losses = [loss for _, loss in self.curves[self.batch_size].tested if loss is not None]
        return max(losses) - min(losses) <= self.epsilon


# 1. One batch size ------------------------------------------------------------------------------------------


def _quadratic(u: np.ndarray, y: np.ndarray, noise_sd: float | None) -> np.ndarray:
    """Least squares of y ≈ a + b·u + c·u²; with a measured noise level, a soft-L1 loss at that scale.

    The scale must be the seed-to-seed noise, not the fit's own residuals: 3 parameters on 5 points leave
    residuals far below the noise, and a soft-L1 at that scale would treat honest points as outliers and
    bias the vertex. Without replicates the fit is plain least squares.
    """
    design = np.stack([np.ones_like(u), u, u * u], axis=1)
    start = np.linalg.lstsq(design, y, rcond=None)[0]
    if not noise_sd or len(u) <= 3:
        return start
    return least_squares(lambda p: design @ p - y, start, loss="soft_l1", f_scale=2.0 * noise_sd).x


def _window(x: np.ndarray, best: int) -> np.ndarray:
    """Indices within WINDOW_DECADES of the grid minimum; at least the 3 nearest points."""
    inside = np.flatnonzero(np.abs(x - x[best]) <= WINDOW_DECADES + 1e-9)
    if len(inside) >= 3:
        return inside
    return np.sort(np.argsort(np.abs(x - x[best]), kind="stable")[:3])


def _curve_edge(tested: list[tuple[float, float | None]], best_lr: float) -> Side | None:
    """'low': the best is the smallest LR tried; 'high': the largest, with nothing above it diverged."""
    finite = [lr for lr, loss in tested if loss is not None]
    if len(finite) < 2:
        return None
    if best_lr == finite[0] and tested[0][0] == best_lr:
        return "low"
    diverged_above = any(loss is None and lr > best_lr for lr, loss in tested)
    return "high" if best_lr == finite[-1] and not diverged_above else None


def fit_curve(
    batch_size: int, points: Sequence[tuple[float, float | None]], noise_sd: float | None = None
) -> CurveFit | None:
    """Fit one batch size's (lr, loss) points; None when no run at this batch size has a finite loss."""
    tested = sorted((lr, loss if loss is not None and math.isfinite(loss) else None) for lr, loss in points)
    finite = [(lr, loss) for lr, loss in tested if loss is not None]
    if not finite:
        return None
    x = np.log10([lr for lr, _ in finite])
    y = np.array([loss for _, loss in finite], dtype=float)
    best = int(np.argmin(y))
    edge = _curve_edge(tested, finite[best][0])
    grid = CurveFit(
        batch_size,
        float(finite[best][0]),
        float(y[best]),
        "grid",
        (float(y[best]), 0.0, 0.0),
        float(x[best]),
        tested,
        edge,
    )
    if len(finite) < 3:
        return grid
    return _vertex_fit(grid, x, y, best, noise_sd)


def _vertex_fit(grid: CurveFit, x: np.ndarray, y: np.ndarray, best: int, noise_sd: float | None) -> CurveFit:
    """Replace the grid minimum by the local quadratic's vertex when the bowl is convex."""
    idx = _window(x, best)
    u = x[idx] - x[best]
    a, b, c = _quadratic(u, y[idx], noise_sd)
    residual_sd = float(np.std(a + b * u + c * u * u - y[idx], ddof=0)) * math.sqrt(
        len(idx) / max(len(idx) - 3, 1)
    )
    if c <= 1e-12:  # flat or concave: no vertex to trust
        grid.residual_sd = residual_sd
        return grid
    vertex = float(np.clip(-b / (2 * c), -GRID_STEP, GRID_STEP))  # interpolate within one grid step
    vertex = float(np.clip(vertex, u.min(), u.max()))
    loss_star = float(a + b * vertex + c * vertex * vertex)
    return CurveFit(
        grid.batch_size,
        float(10 ** (x[best] + vertex)),
        loss_star,
        "quadratic",
        (float(a), float(b), float(c)),
        float(x[best]),
        grid.tested,
        grid.edge,
        residual_sd,
    )


# 2. All batch sizes -----------------------------------------------------------------------------------------


def points_by_batch(observations: Iterable[Observation]) -> dict[int, list[tuple[float, float | None]]]:
    """(lr, mean loss over seeds) per batch size; a config diverged when any of its seeds did."""
    grouped: dict[tuple[int, float], list[float | None]] = defaultdict(list)
    for obs in observations:
        grouped[obs.batch_size, obs.learning_rate].append(None if obs.diverged else obs.loss)
    points: dict[int, list[tuple[float, float | None]]] = defaultdict(list)
    for (batch, lr), losses in grouped.items():
        mean = None if any(v is None for v in losses) else float(np.mean(losses))  # type: ignore[arg-type]
        points[batch].append((lr, mean))
    return dict(points)


def replicate_noise(observations: Iterable[Observation]) -> float | None:
    """Pooled standard deviation of the loss across seeds of the same config; None without replicates."""
    grouped: dict[tuple[int, float], list[float]] = defaultdict(list)
    for obs in observations:
        if not obs.diverged:
            grouped[obs.batch_size, obs.learning_rate].append(float(obs.loss))  # type: ignore[arg-type]
    deviations = [v - np.mean(vs) for vs in grouped.values() if len(vs) > 1 for v in vs]
    dof = sum(len(vs) - 1 for vs in grouped.values() if len(vs) > 1)
    return float(math.sqrt(sum(d * d for d in deviations) / dof)) if dof else None


def fit_kappa(curves: Iterable[CurveFit]) -> KappaFit | None:
    """Least squares of log LR*(B) on log B over batch sizes whose LR optimum is interior."""
    interior = sorted((c.batch_size, c.lr_star) for c in curves if c.edge is None)
    if len({b for b, _ in interior}) < 2:
        return None
    logb = np.log10([b for b, _ in interior])
    loglr = np.log10([lr for _, lr in interior])
    kappa, intercept = np.polyfit(logb, loglr, 1)
    predicted = intercept + kappa * logb
    total = float(np.sum((loglr - loglr.mean()) ** 2))
    r2 = 1.0 - float(np.sum((loglr - predicted) ** 2)) / total if total > 0 else 1.0
    return KappaFit(float(kappa), float(intercept), [b for b, _ in interior], r2)


def fit_surface(
    observations: Sequence[Observation],
    *,
    epsilon_rel: float = DEFAULT_EPSILON,
    batch_candidates: Sequence[int] | None = None,
) -> SurfaceFit | NoRecommendation:
    """B*, LR*(B*), L*(B*), the ε-band, κ and grid edges from runs compared at one fidelity.

    `batch_candidates` are all batch sizes the study considered: at a late rung only survivors remain, and
    B* is on the batch edge only if it is the smallest or largest candidate, not merely of the survivors.
    """
    if not observations:
        return NoRecommendation(reason="no runs to fit", kind="no_runs")
    noise = replicate_noise(observations)
    curves = {
        b: c for b, pts in sorted(points_by_batch(observations).items()) if (c := fit_curve(b, pts, noise))
    }
    n_diverged = sum(obs.diverged for obs in observations)
    if not curves:
        return _all_diverged(observations)
    best = min(curves.values(), key=lambda c: c.loss_star)
    noise_sd = noise if noise is not None else float(np.median([c.residual_sd for c in curves.values()]))
    epsilon = max(epsilon_rel * abs(best.loss_star), 2.0 * noise_sd)
    band = [
        BandEntry(c.batch_size, c.lr_star, *c.lr_interval(epsilon), c.loss_star)
        for c in curves.values()
        if c.loss_star <= best.loss_star + epsilon
    ]
    return SurfaceFit(
        curves,
        best.batch_size,
        best.lr_star,
        best.loss_star,
        epsilon,
        band,
        fit_kappa(curves.values()),
        _edges(curves, best, batch_candidates),
        noise_sd,
        len(observations),
        n_diverged,
    )


def _edges(
    curves: dict[int, CurveFit], best: CurveFit, batch_candidates: Sequence[int] | None
) -> list[GridEdge]:
    """LR edges of every batch size in play, and a batch edge when B* is the smallest or largest candidate
    (never below B = 1: no smaller batch exists to try)."""
    edges = [GridEdge("lr", c.edge, c.batch_size) for c in curves.values() if c.edge is not None]
    batches = sorted(set(batch_candidates or []) | set(curves))
    if len(batches) > 1 and best.batch_size == batches[0] > 1:
        edges.append(GridEdge("batch", "low"))
    elif len(batches) > 1 and best.batch_size == batches[-1]:
        edges.append(GridEdge("batch", "high"))
    return edges


def _all_diverged(observations: Sequence[Observation]) -> NoRecommendation:
    lowest = min(obs.learning_rate for obs in observations)
    return NoRecommendation(
        reason=f"all {len(observations)} runs diverged, down to the lowest learning rate tried "
        f"({lowest:.3g}); "
        "no (batch size, learning rate) produced a finite loss",
        kind="all_diverged",
        fix="lower lr_range (e.g. start a decade lower), check the data (empty responses, huge losses) "
        "and the method's α/r scale",
    )


# 3. Uncertainty ---------------------------------------------------------------------------------------------


@dataclass
class BootstrapSummary:
    """Spread of the optimum over resampled runs: a 90% interval by default."""

    lr_interval: tuple[float, float]
    loss_interval: tuple[float, float]
    batch_share: dict[int, float]  # how often each batch size came out best
    replicates: int
    level: float

    @property
    def lr_width_decades(self) -> float:
        return math.log10(self.lr_interval[1] / self.lr_interval[0])


def _resample(
    observations: Sequence[Observation], surface: SurfaceFit, rng: np.random.Generator
) -> list[Observation]:
    """One bootstrap data set (a parametric residual bootstrap): each config's loss is the fitted curve near
    the optimum (its observed mean further out) plus fresh noise of the measured size, σ/√seeds.

    Resampling the seeds themselves was tried and rejected: with 2–3 seeds per config the spread of a
    resample is itself so variable (χ² with 1–2 degrees of freedom) that intervals came out far too
    narrow for some configs; σ pooled over every config's seeds is stable.
    """
    grouped: dict[tuple[int, float], list[Observation]] = defaultdict(list)
    for obs in observations:
        grouped[obs.batch_size, obs.learning_rate].append(obs)
    sample = []
    for (batch, lr), runs in grouped.items():
        curve = surface.curves.get(batch)
        if any(run.diverged for run in runs) or curve is None:
            sample.extend(runs)
            continue
        near = curve.kind == "quadratic" and abs(math.log10(lr) - curve.centre) <= WINDOW_DECADES + 1e-9
        mean = float(np.mean([run.loss for run in runs]))
        centre = curve.predict(lr) if near else mean
        noise = float(rng.normal(0.0, surface.noise_sd / math.sqrt(len(runs))))
        sample.append(Observation(batch, lr, centre + noise, runs[0].seed))
    return sample


def bootstrap_refits(
    observations: Sequence[Observation], surface: SurfaceFit, *, replicates: int, seed: int
) -> Iterator[SurfaceFit]:
    """The surface refitted on `replicates` resampled data sets (`_resample`); resamples that no longer fit
    (every run diverged) are skipped."""
    rng = np.random.default_rng(seed)
    for _ in range(replicates):
        refit = fit_surface(_resample(observations, surface, rng))
        if isinstance(refit, SurfaceFit):
            yield refit


def bootstrap_optimum(
    observations: Sequence[Observation],
    surface: SurfaceFit,
    *,
    replicates: int = 200,
    level: float = 0.9,
    seed: int = 0,
) -> BootstrapSummary:
    """Refit on resampled runs: percentile intervals of LR* and L* at the chosen B*, and B votes."""
    lrs: list[float] = []
    losses: list[float] = []
    votes: dict[int, int] = defaultdict(int)
    for refit in bootstrap_refits(observations, surface, replicates=replicates, seed=seed):
        same_batch = refit.curves.get(surface.batch_size)  # the interval is of LR* at the chosen B*
        if same_batch is not None:
            lrs.append(same_batch.lr_star)
            losses.append(same_batch.loss_star)
        votes[refit.batch_size] += 1
    tail = 100 * (1 - level) / 2
    lr_lo, lr_hi = (10 ** np.percentile(np.log10(lrs), [tail, 100 - tail])) if lrs else (math.nan, math.nan)
    loss_lo, loss_hi = np.percentile(losses, [tail, 100 - tail]) if losses else (math.nan, math.nan)
    share = {b: n / max(sum(votes.values()), 1) for b, n in sorted(votes.items())}
    lr_interval = resolved_interval((float(lr_lo), float(lr_hi)), surface.curves[surface.batch_size])
    return BootstrapSummary(lr_interval, (float(loss_lo), float(loss_hi)), share, len(lrs), level)


def resolved_interval(interval: tuple[float, float], curve: CurveFit) -> tuple[float, float]:
    """An interval of LR* no narrower than the LRs tested can resolve. Resamples cannot show it: a curve
    without a bowl (kind "grid") reports its best grid point in every resample, and a vertex past the
    last LR tried is clipped to it, so on a grid curve or at an edge the percentiles collapse onto one LR
    (on `add`, a 90% interval of 0.0063 … 0.0063 at the top of the LRs promoted, a band of that LR alone).
    A grid point stands for half a step either side; at an edge the optimum may lie a whole step beyond.
    """
    low, high = interval
    if not (math.isfinite(low) and math.isfinite(high)):
        return interval
    centre = math.log10(curve.lr_star)
    if curve.kind == "grid":
        low, high = min(low, 10 ** (centre - GRID_STEP / 2)), max(high, 10 ** (centre + GRID_STEP / 2))
    tested = [lr for lr, loss in curve.tested if loss is not None]
    if curve.edge == "low":
        low = min(low, 10 ** (math.log10(tested[0]) - GRID_STEP))
    elif curve.edge == "high":
        high = max(high, 10 ** (math.log10(tested[-1]) + GRID_STEP))
    return low, high


# arXiv 2602.04998 (Gemma-3-1B, LoRA): LR* ∝ B^0.55…0.83. The spread is a judgement of how far another model
# or task may stray; a slope through 2–3 noisy LR* values half a decade apart is often off by more than that.
KAPPA_PRIOR = 0.7
KAPPA_PRIOR_SD = 0.3
KAPPA_MIN_REFITS = 10  # fewer bootstrap refits with a slope than this: the measurement's spread is unknown
# Where κ can lie when configs are compared at equal examples seen: 0 where curvature caps the LR whatever
# the batch (past the critical batch), 1 in the noise-dominated limit where LR/B fixes the dynamics (the
# linear scaling rule; Adam's is √B). The prior puts no weight outside, so neither does the rule: an LR
# falling with B, or growing faster than B, comes from noisy optima (the quality benchmark's rungs read
# −2.2 … 3.0 where the grids' own LR*(B) rose by 0 … 0.6).
KAPPA_BOUNDS = (0.0, 1.0)


def bounded_kappa(kappa: float) -> float:
    """κ moved to the nearer of KAPPA_BOUNDS when outside them (an unshrunk slope, or a rule stored before
    the bounds)."""
    return min(max(kappa, KAPPA_BOUNDS[0]), KAPPA_BOUNDS[1])


def shrink_kappa(
    observations: Sequence[Observation],
    surface: SurfaceFit,
    *,
    noise_sd: float = 0.0,
    replicates: int = 100,
    seed: int = 0,
) -> KappaFit | None:
    """The rung's κ weighed against the prior: refit on resampled runs (as `bootstrap_optimum` does, with
    noise of at least `noise_sd`: a shallow rung of single seeds does not measure its own), take the slope's
    spread over the refits as its error, never below what optima known to a grid step allow, and combine
    slope and prior by precision. Two batch sizes an octave apart put every 0.1 decade of LR* noise into
    0.33 of κ, so a wild slope from noisy optima moves the rule little, while a clean one over several
    batch sizes moves it most of the way."""
    fit = surface.kappa
    if fit is None:
        return None
    noisy = replace(surface, noise_sd=max(surface.noise_sd, noise_sd))
    refits = bootstrap_refits(observations, noisy, replicates=replicates, seed=seed)
    slopes = [refit.kappa.kappa for refit in refits if refit.kappa is not None]
    log_batches = np.log10(fit.batch_sizes)
    quantised = LR_QUANTISATION_SD / math.sqrt(float(np.sum((log_batches - log_batches.mean()) ** 2)))
    sd = max(float(np.std(slopes)), quantised) if len(slopes) >= KAPPA_MIN_REFITS else math.inf
    measured = 1 / sd**2 if math.isfinite(sd) else 0.0
    prior = 1 / KAPPA_PRIOR_SD**2
    combined = (measured * fit.kappa + prior * KAPPA_PRIOR) / (measured + prior)
    shrunk = truncated_normal_mean(combined, (measured + prior) ** -0.5, KAPPA_BOUNDS)
    return KappaFit(fit.kappa, fit.intercept, fit.batch_sizes, fit.r_squared, sd=sd, shrunk=shrunk)


def truncated_normal_mean(mean: float, sd: float, bounds: tuple[float, float]) -> float:
    """The mean of N(mean, sd²) restricted to `bounds`: the posterior mean when the prior is zero outside."""
    low, high = ((bound - mean) / sd for bound in bounds)
    mass = norm.cdf(high) - norm.cdf(low)
    if mass < 1e-12:  # all but no mass inside: the posterior sits on the nearer bound
        return bounds[0] if mean < bounds[0] else bounds[1]
    return float(mean + sd * (norm.pdf(low) - norm.pdf(high)) / mass)


def confidence_score(surface: SurfaceFit, bootstrap: BootstrapSummary | None) -> float:
    """0–1: 1 when the LR interval is narrow, B* wins every resample and no edge is left open.

    A 90% LR interval one decade wide (4 grid steps) scores 0; each open grid edge at B* halves the score (the
    true optimum may lie outside), and a flat surface caps it at 0.2 (any LR in the band is as good).
    """
    width = bootstrap.lr_width_decades if bootstrap and bootstrap.replicates else 1.0
    score = max(0.0, 1.0 - width / 1.0)
    if bootstrap and bootstrap.replicates:
        score *= bootstrap.batch_share.get(surface.batch_size, 0.0)
    for _ in (e for e in surface.edges if e.batch_size in (None, surface.batch_size)):
        score *= 0.5  # each open edge at B* (its LR edge, the batch edge) leaves the optimum possibly outside
    return min(score, 0.2) if surface.is_flat else score


# How LR* moves with run length is advisor.science.length_scaling; what it needs from here:
LR_QUANTISATION_SD = GRID_STEP / math.sqrt(12)  # decades: an optimum known only to the nearest grid point


# 4. Choosing an LR when LR* is uncertain --------------------------------------------------------------------


# How much faster the loss rises above LR* than below it: the ratio of the bowl's curvatures on the two sides
# (loss ≈ L* + c·d² below, c·k·d² above, d in decades of LR). Measured a quarter to half a decade either side
# of the best LR: 6 on SmolLM2-135M with LoRA (bench/real_llm.py's grid: +0.7% below, +4.2% above, diverged
# half a decade up), 13–20 for PiSSA and OLoRA there (bench/curvature_transfer.py), and 1–12 (median about 2)
# on the quality benchmark's tiny tasks. 3 is the low, careful end of that: a larger k moves the pick further
# down, which costs where a bowl is symmetric.
LR_ASYMMETRY = 3.0


def cautious_offset(sd: float, asymmetry: float = LR_ASYMMETRY) -> float:
    """Decades below LR*'s median (≤ 0) at which the expected loss is lowest, when log10 LR* is normal with
    standard deviation `sd` and the bowl is `asymmetry` times steeper above LR* than below.

    With d = x − log10 LR* ~ N(u, sd²) for a pick u decades from the median, the expected excess loss
    c·E[d²; d < 0] + c·k·E[d²; d > 0] is convex in u, and its derivative vanishes where
    z + (k − 1)·(z·Φ(z) + φ(z)) = 0 for z = u / sd: z ≈ −0.28 at k = 2, −0.44 at k = 3, −0.9 at k = 10.
    The move grows with the uncertainty: a well-measured LR* stays put, a loosely measured one moves down,
    away from the steep side (and from divergence).
    """
    if sd <= 0 or asymmetry <= 1:
        return 0.0
    k = asymmetry

    def slope(z: float) -> float:
        return z + (k - 1) * (z * float(norm.cdf(z)) + float(norm.pdf(z)))

    return float(brentq(slope, -10.0, 0.0)) * sd
