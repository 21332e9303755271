"""RefLoRA (arXiv 2505.18877): refactor each LoRA pair to the factorisation that minimises a loss upper bound.

Closed form (PEFT shapes): eigh(AAᵀ) = V_A Σ_A² V_Aᵀ, M = B V_A Σ_A, eigh(MᵀM) = V_M Σ_M² V_Mᵀ,
P = V_A Σ_A⁻¹ V_M Σ_M^½. The refactored pair A' = PᵀA, B' = B P⁻ᵀ has the same product and balanced
Gram matrices A'A'ᵀ = B'ᵀB' = Σ_M. In practice the weights are kept and the gradients preconditioned
with S = PPᵀ: g_A ← S⁻¹ g_A, g_B ← g_B S, starting after a warm-up so that B ≠ 0. The algebra, batched
over adapters of one shape, is in `proxy_runs.methods.balance`.

RefLoRA-S is the scalar form: p = √(‖B‖/‖A‖), A ← pA, B ← B/p, with Adam's moments rescaled to match.
"""

from __future__ import annotations

import torch
from torch import nn

from proxy_runs.methods.balance import precondition_trained_pairs
from proxy_runs.methods.base import Method, copy_stacked_, lora_pair_groups
from proxy_runs.methods.registry import register


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
            for shape_group in lora_pair_groups(model):
                group = shape_group.with_gradients()
                if not group.pairs:
                    continue
                grads_A, grads_B = group.gradients()
                new_grad_A, new_grad_B = precondition_trained_pairs(
                    group.stack_A(), group.stack_B(), torch.stack(grads_A), torch.stack(grads_B), eps
                )
                copy_stacked_(grads_A, new_grad_A)
                copy_stacked_(grads_B, new_grad_B)


def _scale_adam_state_(
    optimizer: torch.optim.Optimizer, parameters: list[torch.Tensor], scales: torch.Tensor
) -> None:
    """Rescale Adam's moments of each parameter as its gradient rescales by scales[i]: m by c, v by c²."""
    states = [optimizer.state.get(parameter) for parameter in parameters]
    for moment, power in (("exp_avg", 1), ("exp_avg_sq", 2)):
        tensors = [state[moment] for state in states if state and moment in state]
        if len(tensors) == len(parameters):  # all or none: the optimizer creates them on its first step
            factors = (scales**power).view(-1, *([1] * tensors[0].ndim))
            copy_stacked_(tensors, torch.stack(tensors) * factors.to(tensors[0].dtype))


@register
class RefLoraS(_RefactoringMethod):
    name = "reflora_s"

    def after_optimizer_step(self, model: nn.Module, optimizer: torch.optim.Optimizer, step: int) -> None:
        if step + 1 < self.warmup_steps():
            return
        with torch.no_grad():
            for group in lora_pair_groups(model):
                A, B = group.stack_A(), group.stack_B()
                norm_A, norm_B = A.flatten(1).norm(dim=1), B.flatten(1).norm(dim=1)
                # p = √(‖B‖/‖A‖); a pair with a zero factor keeps p = 1 (nothing to balance).
                p = torch.where(
                    (norm_A > 0) & (norm_B > 0), (norm_B / norm_A).sqrt(), torch.ones_like(norm_A)
                )
                copy_stacked_(group.factors_A(), A * p.view(-1, 1, 1))
                copy_stacked_(group.factors_B(), B / p.view(-1, 1, 1))
                # With A ← pA and B ← B/p the gradient of A is ∂L/∂A·(1/p) and that of B is ∂L/∂B·p
                # (∂L/∂A = sBᵀG); the moments are statistics of those gradients and follow them.
                _scale_adam_state_(optimizer, group.factors_A(), 1.0 / p)
                _scale_adam_state_(optimizer, group.factors_B(), p)
