"""The LR grid a study searches: a lattice of 4 points per decade anchored at LoRA's usual 2e-4, where the
first grid lies (the spec's range, the method's usual LR or a curvature prior) and how far edge extensions
reach."""

from __future__ import annotations

import math
from dataclasses import dataclass

from advisor.specs import StudySpec

POINTS_PER_DECADE = 4


LATTICE_ANCHOR = 2e-4  # grid points are 2e-4 × 10^(k/4)


LR_BOUNDS = (1e-8, 1.0)  # no extension goes beyond these, whatever the edge says


EXTENSION_STEPS = 2  # an edge extends the grid by half a decade


EXTENSION_REACH = 10.0  # ... and extensions may go this factor past either end of the spec's lr_range


# The method's usual LR when nothing better is known (LoRA 2e-4 in arXiv 2602.04998; BaLoRA ≈ 3e-6…8e-6
# in arXiv 2605.31484).
METHOD_LR_CENTRE = {"balora": 5e-6, "pissa": 2e-5, "olora": 1e-5, "full": 2e-5, "prompt_tuning": 3e-3}


@dataclass(frozen=True)
class CurvaturePrior:
    """LR* ≈ reference_lr × (λ_max / reference_lambda)^(−β): centre the grid from a measured sharpness.

    The reference pair (λ, LR*) comes from a stored study of the same family (warm start) or from the
    method's usual LR at the proxy's own λ; β defaults to 1 (η* ∝ 1/λ_max in arXiv 2602.04998;
    our band 0.7–1.5).
    """

    lambda_max: float
    reference_lambda: float
    reference_lr: float
    beta: float = 1.0
    source: str = "probe"

    def lr_centre(self) -> float:
        return self.reference_lr * (self.lambda_max / self.reference_lambda) ** (-self.beta)


def lattice_index(lr: float) -> int:
    """Nearest k with lr ≈ 2e-4 × 10^(k/4)."""
    return round(POINTS_PER_DECADE * math.log10(lr / LATTICE_ANCHOR))


def lattice_lr(index: int) -> float:
    return float(f"{LATTICE_ANCHOR * 10 ** (index / POINTS_PER_DECADE):.3g}")


def lr_grid(
    centre: float, *, half_width_decades: float = 1.0, bounds: tuple[float, float] = LR_BOUNDS
) -> list[float]:
    """4 points per decade, centred on the lattice point nearest `centre`, clipped to `bounds`."""
    middle, half = lattice_index(centre), round(half_width_decades * POINTS_PER_DECADE)
    grid = [lattice_lr(k) for k in range(middle - half, middle + half + 1)]
    return [lr for lr in grid if bounds[0] <= lr <= bounds[1]]


def extend_lr_grid(
    grid: list[float], side: str, *, steps: int = EXTENSION_STEPS, bounds: tuple[float, float] = LR_BOUNDS
) -> list[float]:
    """The new LRs beyond the grid's low or high end (half a decade by default); [] at the bounds."""
    end = lattice_index(min(grid) if side == "low" else max(grid))
    direction = -1 if side == "low" else 1
    new = [lattice_lr(end + direction * i) for i in range(1, steps + 1)]
    return [lr for lr in new if bounds[0] <= lr <= bounds[1]]


def extension_bounds(spec: StudySpec) -> tuple[float, float]:
    """How far edge extensions may take the LR grid: a decade past either end of the spec's lr_range.

    The range only places the first grid, and it is a guess: the default's top, 1e-2, lies below the best
    LR of LoRA on SmolLM2-135M (0.0112 at B = 4, `bench/real_llm.py`), where a hard top would leave the
    optimum on the edge and the answer at the last LR below it. Diverged runs stop at once, so looking past
    the high end costs little."""
    low, high = spec.lr_range
    return max(low / EXTENSION_REACH, LR_BOUNDS[0]), min(high * EXTENSION_REACH, LR_BOUNDS[1])


def grid_centre(spec: StudySpec, prior: CurvaturePrior | None, lr_centre: float | None) -> float:
    """Explicit centre > curvature prior > the method's usual LR, kept inside `first_grid_bounds`."""
    centre = lr_centre or (prior.lr_centre() if prior else METHOD_LR_CENTRE.get(spec.method, LATTICE_ANCHOR))
    low, high = first_grid_bounds(spec, prior, lr_centre)
    return min(max(centre, low), high)


def first_grid_bounds(
    spec: StudySpec, prior: CurvaturePrior | None, lr_centre: float | None
) -> tuple[float, float]:
    """Where the first LR grid may lie: the spec's lr_range, or as far as extensions reach when a
    measurement centres it (a curvature prior, or a stored study's answer).

    A measured centre outranks the range, which is a guess. Clipped to the range, a centre near its top
    gave a lopsided grid: the warm Swedish study on SmolLM2 (`bench/real_llm_warm.py`, centre 0.0076 from
    an English study) ran 0.00063 … 0.0063, every point at or below the centre, and a tight budget then
    narrowed that grid from both ends, further away from it."""
    return extension_bounds(spec) if prior or lr_centre else spec.lr_range


def grid_span(spec: StudySpec, prior: CurvaturePrior | None, lr_centre: float | None) -> tuple[float, float]:
    """(centre, half-width in decades) of the first LR grid.

    With a prior: ±1 decade around it. Without one, a user's lr_range of at most 3 decades is taken as
    the prior itself and covered whole; a wider one (the default 1e-6 … 1e-2) is searched ±1.5 decades
    around the method's usual LR, and edges extend it.
    """
    if prior or lr_centre:
        return grid_centre(spec, prior, lr_centre), 1.0
    low, high = spec.lr_range
    span = math.log10(high / low)
    if span <= 3.0:
        return math.sqrt(low * high), span / 2
    return grid_centre(spec, None, None), 1.5


def first_lr_grid(spec: StudySpec, prior: CurvaturePrior | None, lr_centre: float | None) -> list[float]:
    """The LRs every batch size starts with, before halving and edge extensions."""
    centre, half_width = grid_span(spec, prior, lr_centre)
    return lr_grid(centre, half_width_decades=half_width, bounds=first_grid_bounds(spec, prior, lr_centre))
