"""BaLoRA (seed 002): keep every LoRA pair on the balanced manifold BᵀB = AAᵀ.

(A, B) and (R⁻¹A, BR) give the same ΔW for any invertible R, but condition the loss differently;
balanced pairs condition best. After each optimizer step every pair is replaced by the balanced pair
with the same product B·A. Adam's moments are left as they are (as in the paper).
"""

from __future__ import annotations

import torch
from torch import nn

from proxy_runs.methods.base import Method, lora_pairs
from proxy_runs.methods.registry import register


def _polar_left(A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A (r × in) = S_A · R_A with S_A symmetric PSD (r × r) and R_A with orthonormal rows."""
    U, sigma, Vh = torch.linalg.svd(A, full_matrices=False)
    return U @ torch.diag(sigma) @ U.T, U @ Vh


def _polar_right(B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """B (out × r) = R_B · S_B with R_B with orthonormal columns and S_B symmetric PSD (r × r)."""
    U, sigma, Vh = torch.linalg.svd(B, full_matrices=False)
    return U @ Vh, Vh.T @ torch.diag(sigma) @ Vh


def balance_pair(A: torch.Tensor, B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The balanced pair with the same product: B'A' = BA and B'ᵀB' = A'A'ᵀ = Σ.

    1. polar parts A = S_A·R_A, B = R_B·S_B (thin SVDs, O(r²(in+out)));
    2. SVD of the r × r core S_B·S_A = UΣVᵀ (O(r³));
    3. A' = Σ^½·Vᵀ·R_A and B' = R_B·U·Σ^½.
    Computed in float64: the product must survive to ~1e-12, far below the 1e-5 the tests demand.
    """
    A64, B64 = A.double(), B.double()
    S_A, R_A = _polar_left(A64)
    R_B, S_B = _polar_right(B64)
    U, sigma, Vh = torch.linalg.svd(S_B @ S_A)
    root = torch.diag(sigma.sqrt())
    return (root @ Vh @ R_A).to(A.dtype), (R_B @ U @ root).to(B.dtype)


@register
class BaLora(Method):
    name = "balora"

    def after_optimizer_step(self, model: nn.Module, optimizer: torch.optim.Optimizer, step: int) -> None:
        with torch.no_grad():
            for pair in lora_pairs(model):
                # B = 0 at LoRA's standard initialisation: balancing would zero A as well and stall training.
                if torch.count_nonzero(pair.B) == 0:
                    continue
                A, B = balance_pair(pair.A, pair.B)
                pair.A.copy_(A)
                pair.B.copy_(B)
