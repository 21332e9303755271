"""How LR* and the best loss L* move with run length: measurements in log-log (from a bootstrap, an
interval, or a pair of complete runs on a known bowl) and the Bayesian straight line through them and a
prior exponent.

The study's runs at other lengths (`advisor.study.run_length`) are read through these."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

from advisor.science.fits import LR_QUANTISATION_SD, BootstrapSummary, CurveFit


def lr_star_sd(bootstrap: BootstrapSummary) -> float:
    """Standard deviation of log10 LR* from a bootstrap's interval, never below the grid's resolution."""
    return interval_sd(bootstrap.lr_interval if bootstrap.replicates else None, bootstrap.level)


def interval_sd(interval: tuple[float, float] | None, level: float = 0.9) -> float:
    """Standard deviation of log10 LR* from its `level` interval (a 90% normal interval is ±1.645σ), never
    below the grid's own resolution; 1 decade when there is no interval (no resample fitted)."""
    width = math.log10(interval[1] / interval[0]) if interval is not None else math.nan
    if not math.isfinite(width):
        return 1.0  # as good as unknown
    return max(width / (2 * float(norm.ppf(0.5 + level / 2))), LR_QUANTISATION_SD)


def bowl_coefficient(curve: CurveFit) -> float | None:
    """c in loss ≈ L* + c·(log10 lr − log10 LR*)²: the quadratic's when it is convex, else a finite difference
    over the best tested LR and its two neighbours; None when neither shows a bowl."""
    if curve.kind == "quadratic" and curve.coefficients[2] > 0:
        return curve.coefficients[2]
    finite = [(math.log10(lr), loss) for lr, loss in curve.tested if loss is not None]
    best = min(range(len(finite)), key=lambda i: finite[i][1])
    if not 0 < best < len(finite) - 1:
        return None
    (x0, y0), (x1, y1), (x2, y2) = finite[best - 1 : best + 2]
    # Second divided difference: exact for a parabola through the three points, even on an uneven grid.
    c = ((y2 - y1) / (x2 - x1) - (y1 - y0) / (x1 - x0)) / (x2 - x0)
    return c if c > 0 else None


@dataclass(frozen=True)
class LogMeasurement:
    """log10 of a quantity that moves with run length (LR*, or the best loss L*), measured on complete runs
    of `examples` examples, give or take `sd` decades (one standard deviation)."""

    examples: int
    log_value: float
    sd: float


def vertex_of_pair(
    low: tuple[float, float], high: tuple[float, float], bowl: float, noise_sd: float, examples: int
) -> LogMeasurement:
    """LR* from two runs, (lr, loss) a known distance apart, and the bowl's width c measured elsewhere.

    With loss = L* + c·(x − x*)², two points fix x*: x* = (x₁ + x₂)/2 − (y₁ − y₂) / (2c·(x₁ − x₂)). Its
    spread is σ·√2 / (2c·d) for seed noise σ and spacing d. The vertex is kept within half a spacing beyond
    the pair (further out the bowl is no longer a parabola: the high side turns into a cliff), and a
    clamped vertex is known only to that half spacing.
    """
    (x1, y1), (x2, y2) = (math.log10(low[0]), low[1]), (math.log10(high[0]), high[1])
    spacing = x2 - x1
    vertex = (x1 + x2) / 2 - (y1 - y2) / (2 * bowl * (x1 - x2))
    sd = max(noise_sd * math.sqrt(2) / (2 * bowl * spacing), LR_QUANTISATION_SD)
    clamped = min(max(vertex, x1 - spacing / 2), x2 + spacing / 2)
    if clamped != vertex:
        sd = max(sd, spacing / 2)
    return LogMeasurement(examples, clamped, sd)


@dataclass(frozen=True)
class LogLogLine:
    """log10 y(N) = intercept + exponent · log10(N / anchor): the posterior of a straight line in log-log, for
    y = LR* (LR* ∝ N^γ) or y = L* (L* ∝ N^−α, `advisor.science.loss_forecast`).

    `covariance` is of (intercept, exponent); the line's spread at any N follows from it.
    """

    anchor_examples: int
    intercept: float
    exponent: float
    covariance: tuple[tuple[float, float], tuple[float, float]]

    def at(self, examples: int) -> tuple[float, float]:
        """(mean, sd) of log10 y at `examples`."""
        ell = math.log10(examples / self.anchor_examples)
        h = np.array([1.0, ell])
        variance = float(h @ np.array(self.covariance) @ h)
        return self.intercept + self.exponent * ell, math.sqrt(max(variance, 0.0))


def loglog_line(
    anchor: LogMeasurement, measurements: Sequence[LogMeasurement], prior_exponent: float, prior_sd: float
) -> LogLogLine:
    """Bayesian straight line through a quantity measured at several run lengths, y ∝ N^exponent: LR*
    (exponent γ, arXiv 2602.04998's prior −0.25 ± 0.3) or the best loss L* (exponent −α).

    Unknowns: log10 y at the anchor (the top rung; prior = its own measurement and spread) and the exponent
    (prior = `prior_exponent` ± `prior_sd`). Each other measurement at N_i observes
    intercept + exponent·log10(N_i/anchor) with its own spread. A Gaussian linear model, so the posterior is
    closed form: a precise measurement far from the anchor pins the line; a noisy one close to it barely
    moves the exponent off its prior. Measuring at a longer run (interpolating towards the real run) is
    worth more than at a shorter one (extrapolating).
    """
    precision = np.diag([1 / anchor.sd**2, 1 / prior_sd**2])
    weighted = np.array([anchor.log_value / anchor.sd**2, prior_exponent / prior_sd**2])
    for m in measurements:
        h = np.array([1.0, math.log10(m.examples / anchor.examples)])
        precision += np.outer(h, h) / m.sd**2
        weighted += h * m.log_value / m.sd**2
    covariance = np.linalg.inv(precision)
    intercept, exponent = covariance @ weighted
    (a, b), (c, d) = covariance.tolist()
    return LogLogLine(anchor.examples, float(intercept), float(exponent), ((a, b), (c, d)))
