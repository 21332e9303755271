"""BaLoRA (arXiv 2605.31484): keep every LoRA pair on the balanced manifold BᵀB = AAᵀ.

(A, B) and (R⁻¹A, BR) give the same ΔW for any invertible R, but condition the loss differently;
balanced pairs condition best. After each optimizer step every pair is replaced by the balanced pair
with the same product B·A (`proxy_runs.methods.balance`), except while B = 0 (LoRA's initialisation:
balancing would zero A too). Adam's moments are left as they are (as in the paper).
"""

from __future__ import annotations

import torch
from torch import nn

from proxy_runs.methods.balance import refactor_pair, refactor_trained_pairs
from proxy_runs.methods.base import Method, copy_stacked_, lora_pair_groups
from proxy_runs.methods.registry import register

# Only keeps the divisions finite for a rank-deficient factor: far below any singular value a trained
# pair shows, so the projection stays balanced to ~1e-10 (RefLoRA's own eps, 1e-6, would perturb ~1e-5).
BALANCE_EPS = 1e-12


def balance_pair(A: torch.Tensor, B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The balanced pair with the same product: B'A' = BA and B'ᵀB' = A'A'ᵀ = Σ (diagonal); batched too."""
    return refactor_pair(A, B, eps=BALANCE_EPS)


@register
class BaLora(Method):
    name = "balora"

    def after_optimizer_step(self, model: nn.Module, optimizer: torch.optim.Optimizer, step: int) -> None:
        with torch.no_grad():
            for group in lora_pair_groups(model):
                balanced_A, balanced_B = refactor_trained_pairs(group.stack_A(), group.stack_B(), BALANCE_EPS)
                copy_stacked_(group.factors_A(), balanced_A)
                copy_stacked_(group.factors_B(), balanced_B)
