"""Adam-preconditioned sharpness: the curvature that sets Adam's stability edge.

Adam steps θ ← θ − η·m̂/(√v̂ + ε), i.e. preconditioned gradient descent with P = diag(√v̂) + ε. On a
quadratic it is stable while η·λ_max(P⁻¹H) stays below (2 + 2β₁)/(1 − β₁) = 38 for β₁ = 0.9 (Cohen et
al. 2022, "Adaptive gradient methods at the edge of stability"), so for Adam the raw λ_max(H) is the
wrong yardstick (science.md §6).

What is computed, and when:
1. `steps` full-batch AdamW steps (weight decay 0) from the current parameters θ₀ over the probe's
   micro-batches, token-weighted like every other probe. Adam's second moments are zero at θ₀, so P
   only exists after steps; at LoRA's B = 0 initialisation A gets no gradient on the first step, so
   take at least 2 (default 5). `lr` keeps θ_t close to θ₀ (default 2e-4, the usual LoRA LR).
2. At θ_t: D = diag(√v̂) + ε with v̂ = v/(1 − β₂ᵗ) (bias-corrected, as Adam uses it).
3. λ_max of D^-½·H(θ_t)·D^-½, which is symmetric and has the eigenvalues of D⁻¹H, by the chosen
   estimator; also λ_max(H(θ_t)) unpreconditioned for comparison (`raw`).
4. The parameters are put back to θ₀ (unless restore=False).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from proxy_runs.probes.estimators import EigenEstimate, LinearOperator, get_estimator
from proxy_runs.probes.hvp import HessianOperator, flatten


class PreconditionedOperator:
    """x ↦ s ⊙ H(s ⊙ x) with s = D^-½: the symmetric form of D⁻¹H."""

    def __init__(self, operator: LinearOperator, inverse_sqrt_d: torch.Tensor) -> None:
        self.operator = operator
        self.dim, self.dtype, self.device = operator.dim, operator.dtype, operator.device
        self.scale = inverse_sqrt_d.to(device=operator.device, dtype=operator.dtype)

    def matvec(self, vector: torch.Tensor) -> torch.Tensor:
        return self.scale * self.operator.matvec(self.scale * vector)


@dataclass
class PreconditionedSharpness:
    preconditioned: EigenEstimate  # λ_max(D^-½ H D^-½) at θ_t
    raw: EigenEstimate | None  # λ_max(H) at θ_t
    adam_steps: int
    lr: float
    betas: tuple[float, float]
    eps: float
    loss_before: float
    loss_after: float

    @property
    def critical_lr(self) -> float:
        """(2 + 2β₁)/((1 − β₁)·λ): the LR at which Adam on the local quadratic turns unstable."""
        beta1 = self.betas[0]
        value = self.preconditioned.eigenvalue
        return (2 + 2 * beta1) / ((1 - beta1) * value) if value > 0 else math.inf

    def to_dict(self) -> dict[str, Any]:
        return {
            "preconditioned": self.preconditioned.to_dict(),
            "raw": self.raw.to_dict() if self.raw else None,
            "adam_steps": self.adam_steps,
            "lr": self.lr,
            "betas": list(self.betas),
            "eps": self.eps,
            "loss_before": self.loss_before,
            "loss_after": self.loss_after,
            "critical_lr": self.critical_lr if math.isfinite(self.critical_lr) else None,
        }


def adam_steps(
    operator: HessianOperator, *, steps: int, lr: float, betas: tuple[float, float], eps: float
) -> torch.Tensor:
    """Run `steps` full-batch AdamW steps on the operator's parameters; return D^-½ = (√v̂ + ε)^-½."""
    optimizer = torch.optim.AdamW(operator.params, lr=lr, betas=betas, eps=eps, weight_decay=0.0)
    for _ in range(steps):
        _, gradient = operator.loss_and_gradient()
        for param, piece in zip(operator.params, gradient.split(operator.numels), strict=True):
            param.grad = piece.view(param.shape).clone()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    # 2. the bias-corrected second moment Adam divides by, per parameter
    correction = 1 - betas[1] ** steps
    second_moments = flatten([optimizer.state[p]["exp_avg_sq"] for p in operator.params])
    return (second_moments / correction).sqrt().add(eps).rsqrt()


def adam_preconditioned_sharpness(
    operator: HessianOperator,
    *,
    steps: int = 5,
    lr: float = 2e-4,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    estimator: str = "lanczos",
    tol: float = 1e-3,
    max_iter: int = 100,
    seed: int = 0,
    with_raw: bool = True,
    restore: bool = True,
) -> PreconditionedSharpness:
    """λ_max(D^-½ H D^-½) after `steps` AdamW steps (see the module docstring for exactly what)."""
    if steps < 1:
        raise ValueError("Adam's second moments need at least one step (2+ for LoRA at B = 0)")
    started_at = operator.flat_parameters()
    loss_before = operator.mean_loss()
    find = get_estimator(estimator)
    try:
        inverse_sqrt_d = adam_steps(operator, steps=steps, lr=lr, betas=betas, eps=eps)
        loss_after = operator.mean_loss()
        preconditioned = find(
            PreconditionedOperator(operator, inverse_sqrt_d), tol=tol, max_iter=max_iter, seed=seed
        )
        raw = find(operator, tol=tol, max_iter=max_iter, seed=seed) if with_raw else None
    finally:
        if restore:
            operator.set_flat_parameters(started_at)
    return PreconditionedSharpness(preconditioned, raw, steps, lr, betas, eps, loss_before, loss_after)
