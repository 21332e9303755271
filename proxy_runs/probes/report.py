"""`probe_spec`: λ_max per module (and optionally the gradient noise scale) for a study spec.

This is arXiv 2602.04998's measurement in miniature: the model with the spec's method applied, at
initialisation, in eval mode and fp32; a modest set of training examples, in the largest micro-batches that
fit the memory (`sizing`); λ_max of each sampled module's (A, B) pair, by default through the block
structure of LoRA's Hessian at B = 0 (`lora_block`: one gradient and a few HVPs), and by Lanczos with full
re-orthogonalisation where that structure does not hold (PiSSA, OLoRA, DoRA, full fine-tuning). The report
is plain data (pydantic) so the CLI, the API and the database store the same JSON.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

from advisor.errors import SpecError
from advisor.specs import StudySpec
from proxy_runs.data import Example, collate, target_tokens
from proxy_runs.engine import ProxySetup, setup_proxy
from proxy_runs.meta import run_meta
from proxy_runs.probes.estimators import EigenEstimate, get_estimator
from proxy_runs.probes.hvp import Batch, OperatorStats, hessian_operator_for_model, trainable_parameters
from proxy_runs.probes.lora_block import with_lora_block
from proxy_runs.probes.modules import ModuleGroup, ModuleSelection, select_modules
from proxy_runs.probes.noise import NoiseScale, gradient_noise_scale, model_batch_gradient
from proxy_runs.probes.sizing import MicroBatchSizing, size_micro_batch

DEFAULT_SAMPLES = 32  # arXiv 2602.04998 uses 500; 32 keeps a CPU probe to minutes and λ_max within a few %
MEASURED_SAMPLES = 2  # the micro-batch of longest samples whose HVP memory sizes the probe's micro-batch


class ModuleProbe(BaseModel):
    name: str
    n_params: int
    eigenvalue: float  # λ_max: the largest algebraic eigenvalue of the module's Hessian block
    iterations: int  # HVPs spent
    residual: float  # ‖Hv − λv‖: λ is within this of an eigenvalue of H
    converged: bool
    seconds: float
    lowest_ritz: float | None = None  # Lanczos only: an upper bound on λ_min (negative: indefinite H)
    hvp_over_gradient: float | None = None
    estimator: str | None = None  # the one that ran: lora_block falls back to lanczos off LoRA's structure


class ProbeReport(BaseModel):
    model: str
    method: str
    rank: int
    alpha: float | None
    estimator: str
    tol: float
    samples: int
    tokens: int
    micro_batch_size: int
    micro_batch_sizing: dict[str, Any] | None = None  # how it was chosen, when it was not given
    modules: list[ModuleProbe]
    median_eigenvalue: float
    max_eigenvalue: float
    seconds_per_hvp: float
    seconds_per_gradient: float
    hvp_over_gradient: float
    noise: NoiseScale | None = None
    seconds: float
    meta: dict[str, Any]


def probe_examples(train: Sequence[Example], samples: int, seed: int) -> list[Example]:
    """A seeded subset of the training examples, sorted by length so micro-batches carry little padding."""
    chosen = random.Random(seed).sample(range(len(train)), min(samples, len(train)))
    return sorted((train[i] for i in chosen), key=lambda e: len(e.input_ids))


def probe_batches(
    examples: Sequence[Example], micro_batch_size: int, *, pad_id: int, is_seq2seq: bool
) -> list[Batch]:
    return [
        collate(list(examples[i : i + micro_batch_size]), pad_id, is_seq2seq=is_seq2seq)
        for i in range(0, len(examples), micro_batch_size)
    ]


def _module_probe(group: ModuleGroup, estimate: EigenEstimate, stats: OperatorStats) -> ModuleProbe:
    return ModuleProbe(
        name=group.name,
        n_params=group.n_params,
        eigenvalue=estimate.eigenvalue,
        iterations=estimate.iterations,
        residual=estimate.residual,
        converged=estimate.converged,
        seconds=round(estimate.seconds, 3),
        lowest_ritz=estimate.lowest_ritz,
        hvp_over_gradient=round(stats.hvp_over_gradient, 3),
        estimator=estimate.estimator,
    )


def _check_sizes(samples: int, micro_batch_size: int | None) -> None:
    if samples < 1:
        raise SpecError("samples", "need at least one probe sample", value=samples, fix="use e.g. 32")
    if micro_batch_size is not None and not 1 <= micro_batch_size <= samples:
        raise SpecError(
            "micro_batch_size",
            "must be between 1 and the number of samples",
            value=micro_batch_size,
            fix="leave it out to size it to the memory: HVP memory grows with it (SmolLM2: 2.8 GiB at 2, "
            "8.9 GiB at 8)",
        )


def sized_micro_batch(
    spec: StudySpec, setup: ProxySetup, examples: Sequence[Example], group: ModuleGroup
) -> MicroBatchSizing:
    """The largest micro-batch whose HVPs fit the memory budget (`proxy_runs.probes.sizing`), measured on
    the longest samples and the earliest module probed (its second backward runs through the whole model)."""
    longest = probe_batches(
        examples[-MEASURED_SAMPLES:],
        MEASURED_SAMPLES,
        pad_id=setup.tokenizer.pad_token_id,
        is_seq2seq=setup.is_seq2seq,
    )
    operator = hessian_operator_for_model(
        setup.model, longest, is_seq2seq=setup.is_seq2seq, params=group.params
    )
    key = (spec.model, str(spec.training.max_seq_len), spec.method, str(spec.rank), str(setup.device))
    resident = [*setup.model.parameters(), *setup.model.buffers()]
    return size_micro_batch(key, operator, samples=len(examples), resident=resident)


def probe_noise_scale(
    setup: ProxySetup, *, small_batch: int = 4, big_batch: int = 16, draws: int = 16, seed: int = 0
) -> NoiseScale:
    """B_simple over all trainable parameters (the whole method, not one module), on the training set."""
    train = setup.data.train
    if len(train) < big_batch:
        raise SpecError(
            "dataset",
            f"the noise scale needs at least {big_batch} training examples",
            value=len(train),
            fix="add examples or lower the big batch",
        )
    setup.model.eval()
    gradient_of = model_batch_gradient(
        setup.model,
        train,
        trainable_parameters(setup.model),
        pad_id=setup.tokenizer.pad_token_id,
        is_seq2seq=setup.is_seq2seq,
    )
    return gradient_noise_scale(
        gradient_of, len(train), small_batch=small_batch, big_batch=big_batch, draws=draws, seed=seed
    )


def probe_spec(
    spec: StudySpec,
    *,
    estimator: str = "lora_block",
    modules: ModuleSelection = None,
    noise_scale: bool = False,
    tol: float = 1e-3,
    device: str | None = None,
    samples: int = DEFAULT_SAMPLES,
    micro_batch_size: int | None = None,
    max_iter: int = 100,
    seed: int = 0,
    setup: ProxySetup | None = None,
) -> ProbeReport:
    """λ_max of each selected module's Hessian block at initialisation (and B_simple on request).

    `setup` reuses an already loaded model (the spec's method applied); otherwise one is built. Without
    `micro_batch_size`, the largest that fits the memory (`sized_micro_batch`).
    """
    started = time.perf_counter()
    find = get_estimator(estimator)  # 1. validate the cheap things before loading a model
    _check_sizes(samples, micro_batch_size)
    setup = setup or setup_proxy(spec, device)
    # 2. the probe's samples, fixed for every module so that modules are compared on the same loss
    examples = probe_examples(setup.data.train, samples, seed)
    groups = select_modules(setup.model, modules)
    sizing, micro = None, micro_batch_size
    if micro is None:
        sizing = sized_micro_batch(spec, setup, examples, groups[0])
        micro = sizing.micro_batch_size
    batches = probe_batches(examples, micro, pad_id=setup.tokenizer.pad_token_id, is_seq2seq=setup.is_seq2seq)
    totals = OperatorStats()
    results = []
    for group in groups:
        # 3. one module's (A, B) block of the Hessian, its top eigenvalue, and one gradient for scale
        operator = hessian_operator_for_model(
            setup.model, batches, is_seq2seq=setup.is_seq2seq, params=group.params
        )
        estimate = find(
            with_lora_block(operator, [group], setup.model), tol=tol, max_iter=max_iter, seed=seed
        )
        operator.gradient()
        results.append(_module_probe(group, estimate, operator.stats))
        for name in ("hvps", "hvp_seconds", "gradients", "gradient_seconds"):
            setattr(totals, name, getattr(totals, name) + getattr(operator.stats, name))
    noise = probe_noise_scale(setup, seed=seed) if noise_scale else None
    eigenvalues = [r.eigenvalue for r in results]
    return ProbeReport(
        model=spec.model,
        method=spec.method,
        rank=spec.rank,
        alpha=spec.alpha,
        estimator=estimator,
        tol=tol,
        samples=len(examples),
        tokens=sum(target_tokens(b, is_seq2seq=setup.is_seq2seq) for b in batches),
        micro_batch_size=micro,
        micro_batch_sizing=sizing.to_dict() if sizing is not None else None,
        modules=results,
        median_eigenvalue=statistics.median(eigenvalues),
        max_eigenvalue=max(eigenvalues),
        seconds_per_hvp=totals.seconds_per_hvp,
        seconds_per_gradient=totals.seconds_per_gradient,
        hvp_over_gradient=totals.hvp_over_gradient,
        noise=noise,
        seconds=time.perf_counter() - started,
        meta=run_meta(setup.device, model_source=setup.loaded.source, model_revision=setup.loaded.revision),
    )
