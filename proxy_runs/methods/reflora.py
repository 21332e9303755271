"""RefLoRA (seed 004): refactor each LoRA pair to the factorisation that minimises a loss upper bound.

Closed form (PEFT shapes): eigh(AAᵀ) = V_A Σ_A² V_Aᵀ, M = B V_A Σ_A, eigh(MᵀM) = V_M Σ_M² V_Mᵀ,
P = V_A Σ_A⁻¹ V_M Σ_M^½. The refactored pair A' = PᵀA, B' = B P⁻ᵀ has the same product and balanced
Gram matrices A'A'ᵀ = B'ᵀB' = Σ_M. In practice the weights are kept and the gradients preconditioned
with S = PPᵀ: g_A ← S⁻¹ g_A, g_B ← g_B S, starting after a warm-up so that B ≠ 0.

RefLoRA-S is the scalar form: p = √(‖B‖/‖A‖), A ← pA, B ← B/p, with Adam's moments rescaled to match.
"""

from __future__ import annotations

import torch
from torch import nn

from proxy_runs.methods.base import Method, lora_pairs
from proxy_runs.methods.registry import register


def refactoring_matrix(A: torch.Tensor, B: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """P (r × r) in float64. `eps` keeps Σ_A⁻¹ finite when A is (nearly) rank-deficient."""
    A64, B64 = A.double(), B.double()
    eig_A, V_A = torch.linalg.eigh(A64 @ A64.T)
    sigma_A = eig_A.clamp_min(0).sqrt() + eps
    M = B64 @ V_A @ torch.diag(sigma_A)
    eig_M, V_M = torch.linalg.eigh(M.T @ M)
    sigma_M = eig_M.clamp_min(0).sqrt() + eps
    return V_A @ torch.diag(1.0 / sigma_A) @ V_M @ torch.diag(sigma_M.sqrt())


def refactor_pair(A: torch.Tensor, B: torch.Tensor, eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """(A', B') = (PᵀA, B P⁻ᵀ): same product, A'A'ᵀ = B'ᵀB'."""
    P = refactoring_matrix(A, B, eps)
    A_new = P.T @ A.double()
    B_new = torch.linalg.solve(P, B.double().T).T  # B P⁻ᵀ without forming the inverse
    return A_new.to(A.dtype), B_new.to(B.dtype)


def precondition_gradients(
    A: torch.Tensor, B: torch.Tensor, grad_A: torch.Tensor, grad_B: torch.Tensor, eps: float = 1e-6
) -> tuple[torch.Tensor, torch.Tensor]:
    """(S⁻¹ g_A, g_B S) with S = PPᵀ."""
    P = refactoring_matrix(A, B, eps)
    S = P @ P.T
    new_grad_A = torch.linalg.solve(S, grad_A.double())
    new_grad_B = grad_B.double() @ S
    return new_grad_A.to(grad_A.dtype), new_grad_B.to(grad_B.dtype)


class _RefactoringMethod(Method):
    def warmup_steps(self) -> int:
        """The paper's 100 plain steps assume runs of thousands of steps; a short proxy that waited that
        long would never show the method at all, so the warm-up is capped at a tenth of the run."""
        configured = self.spec.method_options.reflora_warmup_steps
        return max(1, min(configured, self.planned_steps // 10)) if self.planned_steps else configured


@register
class RefLora(_RefactoringMethod):
    name = "reflora"

    def before_optimizer_step(self, model: nn.Module, optimizer: torch.optim.Optimizer, step: int) -> None:
        if step < self.warmup_steps():
            return
        eps = self.spec.method_options.reflora_eps
        with torch.no_grad():
            for pair in lora_pairs(model):
                if pair.A.grad is None or pair.B.grad is None or torch.count_nonzero(pair.B) == 0:
                    continue
                grad_A, grad_B = precondition_gradients(pair.A, pair.B, pair.A.grad, pair.B.grad, eps)
                pair.A.grad.copy_(grad_A)
                pair.B.grad.copy_(grad_B)


def _scale_adam_state(optimizer: torch.optim.Optimizer, parameter: nn.Parameter, grad_scale: float) -> None:
    """Rescale Adam's moments of `parameter` as its gradient rescales: m by c, v by c²."""
    state = optimizer.state.get(parameter)
    if not state:
        return
    if "exp_avg" in state:
        state["exp_avg"].mul_(grad_scale)
    if "exp_avg_sq" in state:
        state["exp_avg_sq"].mul_(grad_scale**2)


@register
class RefLoraS(_RefactoringMethod):
    name = "reflora_s"

    def after_optimizer_step(self, model: nn.Module, optimizer: torch.optim.Optimizer, step: int) -> None:
        if step + 1 < self.warmup_steps():
            return
        with torch.no_grad():
            for pair in lora_pairs(model):
                norm_A, norm_B = float(pair.A.norm()), float(pair.B.norm())
                if norm_A == 0.0 or norm_B == 0.0:
                    continue
                p = (norm_B / norm_A) ** 0.5
                pair.A.mul_(p)
                pair.B.div_(p)
                # With A ← pA and B ← B/p the gradient of A is ∂L/∂A·(1/p) and that of B is ∂L/∂B·p
                # (∂L/∂A = sBᵀG); the moments are statistics of those gradients and follow them.
                _scale_adam_state(optimizer, pair.A, 1.0 / p)
                _scale_adam_state(optimizer, pair.B, p)
