"""Hessian-vector products and λ_max against exact answers on models small enough for a dense Hessian.

References are computed independently: torch.autograd.functional.hessian of the mean token loss over
the whole sample in a single batch (so the HVP's micro-batching and token weighting are checked too),
in float64, then torch.linalg.eigvalsh.
"""

from __future__ import annotations

import copy

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn
from torch.func import functional_call

from advisor.specs import DatasetSpec
from proxy_runs.data import Example, collate, tokenize_records
from proxy_runs.models import load_model_and_tokenizer
from proxy_runs.probes.estimators import lanczos, power, top_k_eigenvalues
from proxy_runs.probes.hvp import HessianOperator, ProbeError, flatten, hessian_operator_for_model
from proxy_runs.synthetic import corpus_of, instruction_records
from proxy_runs.tiny import build_tiny_model, save_tiny_model, train_tokenizer

MICRO_BATCH = 2


# Tiny models gain nothing from intra-op threads (tests/conftest.py: one_intra_op_thread).
pytestmark = pytest.mark.usefixtures("one_intra_op_thread")


@pytest.fixture(scope="module")
def tokenizer_and_examples():
    records = instruction_records(8, seed=0)
    tokenizer = train_tokenizer(corpus_of(instruction_records(200, seed=1)), vocab_size=300)
    examples = tokenize_records(
        records, DatasetSpec(path="synthetic"), tokenizer, is_seq2seq=False, max_len=40, packing=False
    )
    return tokenizer, examples


def tiny_lora_llama(vocab_size: int, dtype: torch.dtype) -> nn.Module:
    """2-layer Llama, hidden 16, LoRA r=1 on q_proj and v_proj of the last layer: 64 adapter parameters."""
    model = build_tiny_model("llama", vocab_size, seed=0, hidden=16, layers=2, heads=4).to(dtype)
    model.set_attn_implementation("eager")
    torch.manual_seed(0)
    config = LoraConfig(r=1, lora_alpha=1, target_modules=["q_proj", "v_proj"], layers_to_transform=[1])
    return get_peft_model(model, config)


def micro_batches(examples: list[Example], pad_id: int) -> list[dict[str, torch.Tensor]]:
    return [
        collate(examples[i : i + MICRO_BATCH], pad_id, is_seq2seq=False)
        for i in range(0, len(examples), MICRO_BATCH)
    ]


def dense_reference_hessian(model: nn.Module, examples: list[Example], pad_id: int) -> torch.Tensor:
    """∇² of the mean token loss over all examples in ONE batch, w.r.t. the trainable parameters."""
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    whole_batch = collate(examples, pad_id, is_seq2seq=False)

    def loss_of(flat: torch.Tensor) -> torch.Tensor:
        pieces = flat.split([p.numel() for _, p in named])
        values = {name: piece.view(p.shape) for (name, p), piece in zip(named, pieces, strict=True)}
        return functional_call(model, values, args=(), kwargs=whole_batch).loss

    model.eval()
    return torch.autograd.functional.hessian(loss_of, flatten([p.detach() for _, p in named]))


@pytest.fixture(scope="module")
def float64_case(tokenizer_and_examples):
    tokenizer, examples = tokenizer_and_examples
    model = tiny_lora_llama(len(tokenizer), torch.float64)
    reference = dense_reference_hessian(model, examples, tokenizer.pad_token_id)
    operator = hessian_operator_for_model(
        model, micro_batches(examples, tokenizer.pad_token_id), is_seq2seq=False
    )
    return model, operator, reference


def test_hvp_columns_rebuild_the_dense_hessian_of_the_token_weighted_loss(float64_case) -> None:
    _, operator, reference = float64_case
    # Micro-batches of 2 with uneven token counts must average to the one-batch mean-token Hessian.
    probes = torch.eye(operator.dim, dtype=torch.float64)[:: operator.dim // 8]

    columns = torch.stack([operator.matvec(e) for e in probes], dim=1)

    # Llama computes RMSNorm and rotary embeddings in fp32 even in a float64 model: agreement is ~1e-7.
    expected = reference[:, :: operator.dim // 8]
    assert torch.allclose(columns, expected, rtol=1e-5, atol=1e-6 * float(reference.abs().max()))
    assert operator.stats.hvps == len(probes) and operator.stats.hvp_seconds > 0


def test_lanczos_lambda_max_matches_eigvalsh_of_the_dense_hessian(float64_case) -> None:
    _, operator, reference = float64_case
    exact = torch.linalg.eigvalsh(reference)

    estimate = lanczos(operator, tol=1e-6, max_iter=64)

    assert estimate.converged
    assert estimate.eigenvalue == pytest.approx(float(exact[-1]), rel=1e-4)
    assert exact[0] < 0  # LoRA at B = 0 has an indefinite Hessian; λ_max is still what we return
    assert estimate.lowest_ritz is not None and estimate.lowest_ritz >= float(exact[0]) - 1e-9


def test_fp32_probe_agrees_with_the_float64_reference(tokenizer_and_examples, float64_case) -> None:
    tokenizer, examples = tokenizer_and_examples
    model64, _, reference = float64_case
    model32 = copy.deepcopy(model64).to(torch.float32)  # the same adapter initialisation
    operator = hessian_operator_for_model(
        model32, micro_batches(examples, tokenizer.pad_token_id), is_seq2seq=False
    )

    estimate = lanczos(operator, tol=1e-5, max_iter=64)

    assert operator.dtype == torch.float32
    assert estimate.eigenvalue == pytest.approx(float(torch.linalg.eigvalsh(reference)[-1]), rel=1e-4)


def test_restricting_to_one_module_gives_its_block_of_the_full_hessian(float64_case) -> None:
    model, full, reference = float64_case
    q_params = [p for name, p in model.named_parameters() if p.requires_grad and "q_proj" in name]
    block = HessianOperator(q_params, full.batches, full.loss_fn)
    size = block.dim  # q_proj's A and B come first in parameter order
    vector = torch.linspace(-1, 1, size, dtype=torch.float64)

    expected = reference[:size, :size] @ vector
    assert torch.allclose(block.matvec(vector), expected, rtol=1e-5, atol=1e-6 * float(expected.abs().max()))


def test_gradient_is_the_token_weighted_mean_and_its_cost_is_recorded(float64_case) -> None:
    _, operator, _ = float64_case
    loss, gradient = operator.loss_and_gradient()

    assert loss == pytest.approx(operator.mean_loss(), rel=1e-12)
    assert gradient.shape == (operator.dim,) and float(gradient.norm()) > 0
    assert operator.stats.gradients >= 1
    assert operator.stats.hvp_over_gradient > 0


def test_tiny_mlp_top_eigenvalues_match_the_dense_hessian() -> None:
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 1)).double()
    inputs, targets = torch.randn(24, 3, dtype=torch.float64), torch.randn(24, 1, dtype=torch.float64)
    batches = [{"x": inputs[i : i + 4], "y": targets[i : i + 4]} for i in range(0, 24, 4)]

    def summed_loss(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        return (mlp(batch["x"]) - batch["y"]).pow(2).sum(), len(batch["x"])

    params = list(mlp.parameters())
    names = [name for name, _ in mlp.named_parameters()]

    def mean_loss(flat: torch.Tensor) -> torch.Tensor:
        pieces = flat.split([p.numel() for p in params])
        values = {n: piece.view(p.shape) for n, p, piece in zip(names, params, pieces, strict=True)}
        return (functional_call(mlp, values, (inputs,)) - targets).pow(2).mean()

    exact = torch.linalg.eigvalsh(torch.autograd.functional.hessian(mean_loss, flatten(params).detach()))
    operator = HessianOperator(params, batches, summed_loss)

    assert lanczos(operator, tol=1e-8).eigenvalue == pytest.approx(float(exact[-1]), rel=1e-6)
    by_power = power(operator, tol=1e-6, max_iter=2000)
    assert by_power.converged and by_power.eigenvalue == pytest.approx(float(exact[-1]), rel=1e-5)
    top3 = top_k_eigenvalues(operator, 3, tol=1e-8)
    assert top3.eigenvalues == pytest.approx(exact.flip(0)[:3].tolist(), rel=1e-6)


def test_sdpa_attention_raises_a_probe_error_that_names_the_fix(tmp_path, tokenizer_and_examples) -> None:
    records = instruction_records(8, seed=0)
    save_tiny_model(tmp_path, "llama", corpus_of(records), vocab_size=300, hidden=16, layers=1)
    loaded = load_model_and_tokenizer(str(tmp_path), attn_implementation="sdpa")
    examples = tokenize_records(
        records[:2],
        DatasetSpec(path="synthetic"),
        loaded.tokenizer,
        is_seq2seq=False,
        max_len=40,
        packing=False,
    )
    model = get_peft_model(loaded.model, LoraConfig(r=1, target_modules=["q_proj"]))
    operator = hessian_operator_for_model(
        model, micro_batches(examples, loaded.tokenizer.pad_token_id), is_seq2seq=False
    )

    with pytest.raises(ProbeError, match='attn_implementation="eager"') as caught:
        operator.matvec(torch.ones(operator.dim))
    assert "derivative for" in str(caught.value)


def test_half_precision_parameters_are_refused(tokenizer_and_examples) -> None:
    tokenizer, examples = tokenizer_and_examples
    model = tiny_lora_llama(len(tokenizer), torch.bfloat16)

    with pytest.raises(ProbeError, match="fp32"):
        hessian_operator_for_model(model, micro_batches(examples, tokenizer.pad_token_id), is_seq2seq=False)
