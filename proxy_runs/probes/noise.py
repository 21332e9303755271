"""The gradient noise scale B_simple = tr(Σ)/|G|² (McCandlish et al. 2018, arXiv 1812.06162).

B_simple estimates the critical batch size: below it, doubling the batch nearly halves the steps to a
given loss; above it, extra examples per step are mostly wasted. It is the ratio of the per-example
gradient noise tr(Σ) to the squared true gradient |G|², both unknown, estimated from squared gradient
norms at two batch sizes B_s < B_b. For a batch of B examples, E|G_B|² = |G|² + tr(Σ)/B, hence the
unbiased estimates (science.md §6)

    |G|²  ≈ (B_b·|G_b|² − B_s·|G_s|²) / (B_b − B_s)
    tr(Σ) ≈ (|G_s|² − |G_b|²) / (1/B_s − 1/B_b).

One draw is noisy (|G|² can even come out negative), so we average each estimate over many draws and
take the ratio of the means (the mean of ratios is biased), with a bootstrap interval over draws.

Per draw we take B_b examples at random, split them into B_b/B_s small batches, compute each small
batch's gradient (|G_s|² is averaged over them), and use their mean as the big batch's gradient: the
big batch costs nothing extra. Batch sizes count examples (sequences), the unit the advisor tunes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from proxy_runs.data import Example, collate
from proxy_runs.probes.hvp import hessian_operator_for_model

# Mean gradient of the loss over the examples with these indices, as a flat vector.
BatchGradient = Callable[[Sequence[int]], torch.Tensor]


@dataclass
class NoiseScale:
    """B_simple with its bootstrap interval; `resolved` is False when the |G|² estimate is not
    positive (the gradient signal is drowned in noise: use more draws or bigger batches)."""

    b_simple: float | None
    interval: tuple[float | None, float | None]
    confidence: float
    trace_sigma: float  # tr(Σ): per-example gradient noise
    grad_norm_sq: float  # |G|²: squared norm of the true gradient
    small_batch: int
    big_batch: int
    draws: int
    resolved: bool
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _finite_or_none(value: float) -> float | None:
    # JSON has no infinity; an unbounded interval end is reported as null.
    return float(value) if math.isfinite(value) else None


def _ratio_of_means(trace_draws: np.ndarray, norm_draws: np.ndarray) -> float:
    signal = float(norm_draws.mean())
    return float(trace_draws.mean()) / signal if signal > 0 else math.inf


def draw_estimates(
    batch_gradient: BatchGradient, n_examples: int, *, small_batch: int, big_batch: int, draws: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-draw unbiased estimates of (tr(Σ), |G|²)."""
    if not 0 < small_batch < big_batch or big_batch % small_batch:
        raise ValueError(
            f"need 0 < small_batch < big_batch with big a multiple of small, got {small_batch}, {big_batch}"
        )
    if big_batch > n_examples:
        raise ValueError(f"big_batch {big_batch} exceeds the {n_examples} examples available")
    rng = np.random.default_rng(seed)
    traces, norms = np.empty(draws), np.empty(draws)
    for draw in range(draws):
        # 1. B_b distinct examples, cut into B_b/B_s small batches
        chosen = rng.choice(n_examples, size=big_batch, replace=False)
        small_batches = [chosen[i : i + small_batch].tolist() for i in range(0, big_batch, small_batch)]
        grads = [batch_gradient(indices) for indices in small_batches]
        # 2. |G_s|² averaged over the small batches; G_b is their mean (same examples, equal weights)
        small_sq = float(np.mean([float(g.double().pow(2).sum()) for g in grads]))
        big_sq = float(torch.stack(grads).double().mean(0).pow(2).sum())
        # 3. the two-batch-size estimates of McCandlish et al. (Appendix A)
        norms[draw] = (big_batch * big_sq - small_batch * small_sq) / (big_batch - small_batch)
        traces[draw] = (small_sq - big_sq) / (1 / small_batch - 1 / big_batch)
    return traces, norms


def gradient_noise_scale(
    batch_gradient: BatchGradient,
    n_examples: int,
    *,
    small_batch: int = 4,
    big_batch: int = 16,
    draws: int = 16,
    seed: int = 0,
    bootstrap: int = 2000,
    confidence: float = 0.95,
) -> NoiseScale:
    """B_simple from `draws` random draws of `big_batch` examples out of `n_examples`."""
    started = time.perf_counter()
    traces, norms = draw_estimates(
        batch_gradient, n_examples, small_batch=small_batch, big_batch=big_batch, draws=draws, seed=seed
    )
    estimate = _ratio_of_means(traces, norms)
    # 4. percentile bootstrap over draws: resample draws, recompute the ratio of means
    rng = np.random.default_rng(seed + 1)
    picks = rng.integers(0, draws, size=(bootstrap, draws))
    replicas = np.array([_ratio_of_means(traces[p], norms[p]) for p in picks])
    tail = (1 - confidence) / 2 * 100
    # no interpolation between replicas: an infinite one (|G|² ≤ 0) must not turn an end into NaN
    low = np.percentile(replicas, tail, method="lower")
    high = np.percentile(replicas, 100 - tail, method="higher")
    resolved = math.isfinite(estimate)
    return NoiseScale(
        _finite_or_none(estimate),
        (_finite_or_none(low), _finite_or_none(high)),
        confidence,
        float(traces.mean()),
        float(norms.mean()),
        small_batch,
        big_batch,
        draws,
        resolved,
        time.perf_counter() - started,
    )


def model_batch_gradient(
    model: nn.Module,
    examples: Sequence[Example],
    params: Sequence[torch.Tensor],
    *,
    pad_id: int,
    is_seq2seq: bool,
) -> BatchGradient:
    """Token-weighted mean gradient of the model's loss over chosen examples (one micro-batch each)."""

    def gradient_of(indices: Sequence[int]) -> torch.Tensor:
        batch = collate([examples[i] for i in indices], pad_id, is_seq2seq=is_seq2seq)
        return hessian_operator_for_model(model, [batch], is_seq2seq=is_seq2seq, params=params).gradient()

    return gradient_of
