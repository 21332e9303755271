"""BaLoRA's projection and RefLoRA's refactoring: same product B·A, balanced Gram matrices."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from advisor.specs import parse_spec
from proxy_runs.engine import RunBudget, setup_proxy, train_proxy
from proxy_runs.methods import lora_pairs
from proxy_runs.methods.balance import (
    precondition_gradients,
    precondition_trained_pairs,
    refactor_pair,
    refactor_trained_pairs,
    refactoring_matrix,
)
from proxy_runs.methods.balora import balance_pair
from tests.conftest import make_spec


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.fixture
def pair() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    # Deliberately unbalanced: B is 100× larger than A, as after many steps of plain LoRA.
    return torch.randn(4, 24, generator=generator) * 0.01, torch.randn(40, 4, generator=generator)


def test_balanced_pair_keeps_the_product_and_balances_the_grams(
    pair: tuple[torch.Tensor, torch.Tensor],
) -> None:
    A, B = pair
    A2, B2 = balance_pair(A, B)
    assert relative(B2 @ A2, B @ A) <= 1e-5
    assert relative(B2.T @ B2, A2 @ A2.T) <= 1e-5
    # BᵀB = AAᵀ = Σ is diagonal: the singular values of B·A.
    gram = (A2 @ A2.T).double()
    assert torch.allclose(gram, torch.diag(torch.diagonal(gram)), atol=1e-6)
    assert torch.allclose(
        torch.diagonal(gram).sort().values,
        torch.linalg.svdvals((B @ A).double())[:4].sort().values,
        rtol=1e-4,
    )


def test_refactored_pair_keeps_the_product_and_balances_the_grams(
    pair: tuple[torch.Tensor, torch.Tensor],
) -> None:
    A, B = pair
    A2, B2 = refactor_pair(A, B, eps=1e-12)  # the default eps guards rank-deficient A and perturbs ~1e-5
    assert relative(B2 @ A2, B @ A) <= 1e-5
    assert relative(B2.T @ B2, A2 @ A2.T) <= 1e-5


def test_balancing_a_balanced_pair_leaves_it_in_place_row_signs_included(
    pair: tuple[torch.Tensor, torch.Tensor],
) -> None:
    """BaLoRA projects after every step and leaves Adam's moments as they are: a second projection must
    not flip or reorder rows, or the moments would point against their rows."""
    A, B = balance_pair(*pair)
    A_again, B_again = balance_pair(A, B)
    assert relative(A_again, A) <= 1e-6
    assert relative(B_again, B) <= 1e-6


def test_a_stack_of_pairs_refactors_as_each_pair_does_alone() -> None:
    """Methods refactor every adapter of one shape in one batched call."""
    generator = torch.Generator().manual_seed(1)
    A = torch.randn(5, 4, 24, generator=generator) * 0.01
    B = torch.randn(5, 40, 4, generator=generator)
    stacked_A, stacked_B = refactor_pair(A, B)
    for i in range(5):
        alone_A, alone_B = refactor_pair(A[i], B[i])
        assert relative(stacked_A[i], alone_A) <= 1e-6
        assert relative(stacked_B[i], alone_B) <= 1e-6


def test_pairs_that_cannot_be_refactored_are_left_alone_and_the_others_still_are() -> None:
    """In one batch: a pair with B = 0 (LoRA's initialisation), one with a non-finite factor (a diverging run,
    which the engine stops by itself) and a trained pair. The first two come back as they were, without an
    error from the eigendecomposition; the third is balanced."""
    generator = torch.Generator().manual_seed(2)
    A = torch.randn(3, 4, 24, generator=generator) * 0.01
    B = torch.randn(3, 40, 4, generator=generator)
    B[0] = 0.0
    A[1, 0, 0] = float("nan")
    new_A, new_B = refactor_trained_pairs(A, B, eps=1e-12)
    assert torch.equal(new_A[0], A[0]) and torch.equal(new_B[0], B[0])
    assert torch.equal(new_A[1].nan_to_num(), A[1].nan_to_num()) and torch.equal(new_B[1], B[1])
    assert relative(new_B[2].T @ new_B[2], new_A[2] @ new_A[2].T) <= 1e-6
    grad_A, grad_B = torch.randn_like(A), torch.randn_like(B)
    new_grad_A, new_grad_B = precondition_trained_pairs(A, B, grad_A, grad_B, eps=1e-6)
    assert torch.equal(new_grad_A[:2], grad_A[:2]) and torch.equal(new_grad_B[:2], grad_B[:2])
    assert not torch.allclose(new_grad_A[2], grad_A[2])


def test_refactored_and_balanced_pairs_share_their_gram_spectrum(
    pair: tuple[torch.Tensor, torch.Tensor],
) -> None:
    """Our reading of arXiv 2605.31484 and 2505.18877: RefLoRA's refactored point is BaLoRA's balanced
    point."""
    A, B = pair
    balanced_A, _ = balance_pair(A, B)
    refactored_A, _ = refactor_pair(A, B)
    assert torch.allclose(
        torch.linalg.eigvalsh(balanced_A @ balanced_A.T),
        torch.linalg.eigvalsh(refactored_A @ refactored_A.T),
        rtol=1e-4,
    )


def test_preconditioned_step_is_a_plain_step_in_refactored_coordinates(
    pair: tuple[torch.Tensor, torch.Tensor],
) -> None:
    """g_A ← S⁻¹g_A, g_B ← g_B·S (S = PPᵀ) equals: refactor (A' = PᵀA, B' = BP⁻ᵀ), take a gradient
    step there (the gradients transform as P⁻¹g_A and g_B·P), and map back."""
    A, B = (t.double() for t in pair)
    grad_A, grad_B = torch.randn_like(A), torch.randn_like(B)
    P, lr = refactoring_matrix(A, B), 0.1
    new_grad_A, new_grad_B = precondition_gradients(A, B, grad_A, grad_B)
    A_in_refactored = P.T @ A - lr * torch.linalg.solve(P, grad_A)
    B_in_refactored = B @ torch.linalg.inv(P).T - lr * grad_B @ P
    assert torch.allclose(A - lr * new_grad_A, torch.linalg.solve(P.T, A_in_refactored), atol=1e-9)
    assert torch.allclose(B - lr * new_grad_B, B_in_refactored @ P.T, atol=1e-9)


def test_balora_training_keeps_every_adapter_balanced(tiny_llama: Path, instruction_jsonl: Path) -> None:
    spec = parse_spec(make_spec(tiny_llama, instruction_jsonl, method="balora"))
    setup = setup_proxy(spec)
    record = train_proxy(
        spec,
        batch_size=4,
        learning_rate=1e-2,
        budget=RunBudget(max_steps=3),
        setup=setup,
        eval_at_start=False,
    )
    assert record.status == "success"
    for adapter in lora_pairs(setup.model):
        A, B = adapter.A.detach(), adapter.B.detach()
        assert B.norm() > 0, "B left zero: the projection must wait for the first step, then train"
        assert relative(B.T @ B, A @ A.T) <= 1e-4


def test_balora_projection_leaves_the_adapter_output_unchanged(
    tiny_llama: Path, instruction_jsonl: Path
) -> None:
    """Run one step, then call the projection directly and compare B·A before and after."""
    spec = parse_spec(make_spec(tiny_llama, instruction_jsonl, method="lora"))
    setup = setup_proxy(spec)
    train_proxy(
        spec,
        batch_size=4,
        learning_rate=1e-2,
        budget=RunBudget(max_steps=2),
        setup=setup,
        eval_at_start=False,
    )
    from proxy_runs.methods.balora import BaLora

    before = [(p.B @ p.A).detach().clone() for p in lora_pairs(setup.model)]
    BaLora(spec).after_optimizer_step(setup.model, torch.optim.SGD([torch.zeros(1)], lr=0.0), step=2)
    after = [(p.B @ p.A).detach() for p in lora_pairs(setup.model)]
    assert all(relative(a, b) <= 1e-5 for a, b in zip(after, before, strict=True))


def test_balora_never_projects_while_b_is_zero(tiny_llama: Path, instruction_jsonl: Path) -> None:
    from proxy_runs.methods.balora import BaLora

    spec = parse_spec(make_spec(tiny_llama, instruction_jsonl, method="balora"))
    setup = setup_proxy(spec)
    initial_A = [p.A.detach().clone() for p in lora_pairs(setup.model)]
    BaLora(spec).after_optimizer_step(setup.model, torch.optim.SGD([torch.zeros(1)], lr=0.0), step=0)
    assert all(torch.equal(p.A, a) for p, a in zip(lora_pairs(setup.model), initial_A, strict=True))


def test_reflora_s_equalises_factor_norms_and_rescales_adam_moments(
    tiny_llama: Path,
    instruction_jsonl: Path,
) -> None:
    spec = parse_spec(
        make_spec(
            tiny_llama, instruction_jsonl, method="reflora_s", method_options={"reflora_warmup_steps": 1}
        )
    )
    setup = setup_proxy(spec)
    record = train_proxy(
        spec,
        batch_size=4,
        learning_rate=1e-2,
        budget=RunBudget(max_steps=3),
        setup=setup,
        eval_at_start=False,
    )
    assert record.status == "success"
    for adapter in lora_pairs(setup.model):
        assert float(adapter.A.detach().norm()) == pytest.approx(float(adapter.B.detach().norm()), rel=1e-4)


def test_reflora_trains_with_preconditioning_after_its_warm_up(
    tiny_llama: Path, instruction_jsonl: Path
) -> None:
    spec = parse_spec(
        make_spec(tiny_llama, instruction_jsonl, method="reflora", method_options={"reflora_warmup_steps": 1})
    )
    record = train_proxy(
        spec, batch_size=4, learning_rate=1e-2, budget=RunBudget(max_steps=4), eval_at_start=False
    )
    assert record.status == "success"
    assert record.metrics["steps"][-1]["loss"] < record.metrics["steps"][0]["loss"]
