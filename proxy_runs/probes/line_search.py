"""Critical sharpness by a line search along the update direction: forward passes only.

Along an update direction u (the gradient g, or Adam's m̂/(√v̂ + ε)), one step of size η gives, to
second order,

    L(θ − η·u) ≈ L(θ) − η·gᵀu + ½·η²·uᵀHu.

The loss comes back to L(θ) at the critical step η_c = 2·gᵀu / uᵀHu; beyond it one step makes things
worse. The critical sharpness is 2/η_c. Along the gradient (u = g) it is the directional curvature
gᵀHg/|g|², a Rayleigh quotient of H and so ≤ λ_max: the line search sees the curvature the optimizer
actually meets, not the worst case.

How: the curvature along û = u/|u| is the second difference c(h) = (L(θ − hû) + L(θ + hû) − 2L(θ))/h²,
the exact curvature of the parabola through three points, two forward passes per distance h. Too far
and the quartic terms bias it; too close and fp32 rounding of the loss swamps it. So h starts far (where
the linear term alone would move the loss by 5%, capped at |θ|) and shrinks ×4 until two successive
curvatures agree within 2%; the two are then combined by Richardson extrapolation (16·c(h) − c(4h))/15,
which cancels the h² error term. Typically 6–10 forward passes, plus one gradient for the direction.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch

from proxy_runs.probes.hvp import HessianOperator

START_CHANGE = 0.05  # first distance: where the linear term alone would change the loss by 5%
AGREEMENT = 0.02  # successive curvatures within 2%: the quadratic regime is reached
NOISE_FLOOR = 1e-6  # a second difference below 1e-6 of the loss is fp32 rounding, not curvature
MAX_ROUNDS = 12  # h shrinks ×4 per round: 4¹² ≈ 1.7e7 from the first distance


@dataclass
class LineSearchResult:
    direction: str  # "gradient" or "adam"
    curvature: float  # ûᵀHû: the curvature along the unit direction (≤ λ_max)
    slope: float  # gᵀû: how fast the loss falls per unit distance along −û
    critical_step: float  # η_c = 2·gᵀu/uᵀHu for the unnormalised update u (the LR where one step breaks even)
    critical_sharpness: float  # 2/η_c
    forward_passes: int  # besides the one gradient (a forward and a backward) that gives g and L(θ)
    seconds: float
    distances: list[float]
    losses: list[float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _loss_at(operator: HessianOperator, origin: torch.Tensor, unit: torch.Tensor, distance: float) -> float:
    operator.set_flat_parameters(origin - distance * unit)
    return operator.mean_loss()


def _first_distance(loss: float, slope: float, origin: torch.Tensor) -> float:
    reach = START_CHANGE * abs(loss) / abs(slope) if slope else math.inf
    return min(reach, max(float(origin.norm()), 1.0))


def critical_sharpness(
    operator: HessianOperator, *, direction: torch.Tensor | None = None, direction_name: str = "gradient"
) -> LineSearchResult:
    """Line search along −direction (default: the gradient); the parameters are restored afterwards."""
    started = time.perf_counter()
    origin = operator.flat_parameters()
    loss_zero, gradient = operator.loss_and_gradient()
    update = gradient if direction is None else direction.to(gradient)
    norm = float(update.norm())
    if norm == 0.0:
        raise ValueError("the update direction is zero: there is nothing to search along")
    unit = update / norm
    slope = float(gradient @ unit)
    h = _first_distance(loss_zero, slope, origin)
    distances, losses = [0.0], [loss_zero]
    curvature, coarser = math.nan, None
    try:
        for _ in range(MAX_ROUNDS):
            # 1. the parabola through L(−h), L(0), L(+h): its curvature is the second difference
            ahead, behind = _loss_at(operator, origin, unit, h), _loss_at(operator, origin, unit, -h)
            distances += [h, -h]
            losses += [ahead, behind]
            rise = ahead + behind - 2 * loss_zero
            if abs(rise) < NOISE_FLOOR * max(abs(loss_zero), 1e-12) and coarser is not None:
                curvature = coarser  # 2. closer in, rounding would dominate: keep the last clean value
                break
            curvature = rise / h**2
            # 3. two distances agree: extrapolate away the h² error and stop
            if coarser is not None and abs(curvature - coarser) <= AGREEMENT * abs(curvature):
                curvature = (16 * curvature - coarser) / 15
                break
            coarser, h = curvature, h / 4
    finally:
        operator.set_flat_parameters(origin)
    # 4. in units of the unnormalised update u = |u|·û: gᵀu = |u|·slope, uᵀHu = |u|²·curvature
    critical_step = 2 * slope / (norm * curvature) if curvature > 0 else math.inf
    sharpness = 2 / critical_step if math.isfinite(critical_step) and critical_step != 0 else 0.0
    return LineSearchResult(
        direction_name,
        curvature,
        slope,
        critical_step,
        sharpness,
        len(losses) - 1,
        time.perf_counter() - started,
        distances,
        losses,
    )


def first_adam_direction(gradient: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Adam's first update m̂₁/(√v̂₁ + ε) = g/(|g| + ε): a sign step, whatever the gradient's scale."""
    return gradient / (gradient.abs() + eps)
