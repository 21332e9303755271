"""Adam-preconditioned sharpness and line-search (critical) sharpness.

On a quadratic loss ½θᵀAθ − bᵀθ everything has a closed form: H = A, Adam's moments can be replayed
by hand, and the loss along any direction is exactly a parabola. On a tiny Llama with LoRA the line
search must agree with one HVP (gᵀHg/|g|²) and stay below λ_max.
"""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn

from advisor.specs import DatasetSpec
from proxy_runs.data import collate, tokenize_records
from proxy_runs.probes.estimators import lanczos
from proxy_runs.probes.hvp import HessianOperator, hessian_operator_for_model
from proxy_runs.probes.line_search import critical_sharpness, first_adam_direction
from proxy_runs.probes.sharpness import adam_preconditioned_sharpness
from proxy_runs.synthetic import corpus_of, instruction_records
from proxy_runs.tiny import build_tiny_model, train_tokenizer

# Tiny models gain nothing from intra-op threads (tests/conftest.py: one_intra_op_thread).
pytestmark = pytest.mark.usefixtures("one_intra_op_thread")


def quadratic_problem(seed: int = 0) -> tuple[HessianOperator, torch.Tensor, torch.Tensor, nn.Parameter]:
    """L(θ) = ½θᵀAθ − bᵀθ with A symmetric positive definite and badly scaled (Adam's use case)."""
    generator = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(6, 6, generator=generator, dtype=torch.float64))
    matrix = basis @ torch.diag(torch.tensor([5.0, 2.0, 1.0, 0.5, 0.1, 0.01], dtype=torch.float64)) @ basis.T
    offset = torch.randn(6, generator=generator, dtype=torch.float64)
    theta = nn.Parameter(torch.randn(6, generator=generator, dtype=torch.float64))

    def summed_loss(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        return 0.5 * theta @ matrix @ theta - offset @ theta, 1

    return HessianOperator([theta], [{}], summed_loss), matrix, offset, theta


def replay_adam(
    matrix: torch.Tensor,
    offset: torch.Tensor,
    theta: torch.Tensor,
    *,
    steps: int,
    lr: float,
    betas: tuple[float, float],
    eps: float,
) -> torch.Tensor:
    """Adam's bias-corrected √v̂ + ε after `steps` steps, written out by hand."""
    first, second, theta = torch.zeros_like(theta), torch.zeros_like(theta), theta.clone()
    for t in range(1, steps + 1):
        gradient = matrix @ theta - offset
        first = betas[0] * first + (1 - betas[0]) * gradient
        second = betas[1] * second + (1 - betas[1]) * gradient**2
        denominator = (second / (1 - betas[1] ** t)).sqrt() + eps
        theta = theta - lr * (first / (1 - betas[0] ** t)) / denominator
    return (second / (1 - betas[1] ** steps)).sqrt() + eps


def test_adam_preconditioned_sharpness_is_lambda_max_of_d_inverse_h_on_a_quadratic() -> None:
    operator, matrix, offset, theta = quadratic_problem()
    start = theta.detach().clone()
    denominator = replay_adam(matrix, offset, start, steps=5, lr=1e-2, betas=(0.9, 0.999), eps=1e-8)
    scale = denominator.rsqrt()
    expected = torch.linalg.eigvalsh(scale[:, None] * matrix * scale[None, :])[-1]

    result = adam_preconditioned_sharpness(operator, steps=5, lr=1e-2, tol=1e-10)

    assert result.preconditioned.eigenvalue == pytest.approx(float(expected), rel=1e-8)
    assert result.raw is not None
    assert result.raw.eigenvalue == pytest.approx(5.0, rel=1e-8)  # H = A everywhere
    assert result.critical_lr == pytest.approx(38 / float(expected), rel=1e-8)  # (2 + 2β₁)/(1 − β₁) = 38
    assert torch.equal(theta.detach(), start)  # θ₀ restored
    assert result.loss_after < result.loss_before
    assert result.to_dict()["preconditioned"]["eigenvalue"] == result.preconditioned.eigenvalue


def test_line_search_recovers_the_exact_parabola_of_a_quadratic() -> None:
    operator, matrix, offset, theta = quadratic_problem(seed=1)
    gradient = matrix @ theta.detach() - offset

    along_gradient = critical_sharpness(operator)
    adam_direction = first_adam_direction(gradient)
    along_adam = critical_sharpness(operator, direction=adam_direction, direction_name="adam")

    curvature = float(gradient @ matrix @ gradient / gradient.dot(gradient))
    assert along_gradient.curvature == pytest.approx(curvature, rel=1e-6)
    assert along_gradient.critical_step == pytest.approx(2 / curvature, rel=1e-6)
    assert along_gradient.critical_sharpness == pytest.approx(along_gradient.curvature, rel=1e-6)
    expected_step = 2 * gradient.dot(adam_direction) / (adam_direction @ matrix @ adam_direction)
    assert along_adam.critical_step == pytest.approx(float(expected_step), rel=1e-6)
    assert along_gradient.forward_passes == 4  # a parabola agrees with itself at the second distance


@pytest.fixture(scope="module")
def tiny_llama_operator():
    records = instruction_records(8, seed=0)
    tokenizer = train_tokenizer(corpus_of(instruction_records(200, seed=1)), vocab_size=300)
    examples = tokenize_records(
        records, DatasetSpec(path="synthetic"), tokenizer, is_seq2seq=False, max_len=40, packing=False
    )
    model = build_tiny_model("llama", len(tokenizer), seed=0, hidden=16, layers=2, heads=4)
    model.set_attn_implementation("eager")
    torch.manual_seed(0)
    model = get_peft_model(model, LoraConfig(r=2, lora_alpha=2, target_modules=["q_proj", "v_proj"]))
    batches = [collate(examples[i : i + 2], tokenizer.pad_token_id, is_seq2seq=False) for i in range(0, 8, 2)]
    return hessian_operator_for_model(model, batches, is_seq2seq=False)


def test_line_search_curvature_matches_one_hvp_and_stays_below_lambda_max(tiny_llama_operator) -> None:
    operator = tiny_llama_operator
    gradient = operator.gradient()
    rayleigh = float(gradient @ operator.matvec(gradient) / gradient.dot(gradient))
    top = lanczos(operator, tol=1e-4, max_iter=100)

    along_gradient = critical_sharpness(operator)
    along_adam = critical_sharpness(operator, direction=first_adam_direction(gradient), direction_name="adam")

    assert along_gradient.curvature == pytest.approx(rayleigh, rel=2e-2)
    assert along_gradient.curvature <= top.eigenvalue + top.residual
    assert along_adam.curvature <= top.eigenvalue + top.residual
    assert along_gradient.forward_passes <= 16


def test_adam_sharpness_on_lora_runs_a_few_steps_and_restores_the_adapter(tiny_llama_operator) -> None:
    operator = tiny_llama_operator
    before = operator.flat_parameters()

    result = adam_preconditioned_sharpness(operator, steps=3, lr=1e-3, tol=1e-3, with_raw=False)

    assert result.preconditioned.converged and result.preconditioned.eigenvalue > 0
    assert torch.equal(operator.flat_parameters(), before)
    assert result.loss_after < result.loss_before
