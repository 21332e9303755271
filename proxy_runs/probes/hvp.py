"""Hessian-vector products of the token-weighted loss, over a chosen list of parameters.

The curvature probed is that of the mean token loss over all probe samples,

    L(θ) = (Σ_micro-batches Σ_tokens ℓ) / (Σ_micro-batches n_tokens),

so every valid target token weighs the same however the samples are cut into micro-batches (arXiv 2602.04998:
"HVPs averaged with weights = valid target tokens"). θ is the flat concatenation of the chosen parameters
(by default every trainable one, i.e. the adapter; or A and B of one linear layer, as arXiv 2602.04998
probes), and the operator works on flat vectors so that the estimators never need to know about the model.

One HVP is a double backward: g = ∂L/∂θ with the graph kept (create_graph=True), then ∂(g·v)/∂θ = H·v.
It costs about a forward and two to three backwards per micro-batch; the gradient alone, which the
same object also computes, is the yardstick (`OperatorStats.hvp_over_gradient`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from advisor.errors import AdvisorError
from proxy_runs.loss import summed_token_loss
from proxy_runs.meta import synchronize

Batch = dict[str, torch.Tensor]
# (sum of the per-token losses of one micro-batch, number of tokens that carry loss)
LossFn = Callable[[Batch], tuple[torch.Tensor, int]]

_NO_SECOND_DERIVATIVE = re.compile(r"derivative for .* is not implemented", re.IGNORECASE | re.DOTALL)


class ProbeError(AdvisorError):
    """A curvature or noise probe cannot run on this model as configured; the message says what to change."""


@dataclass
class OperatorStats:
    """How many HVPs and gradients an operator has computed, and the time they took (seconds)."""

    hvps: int = 0
    hvp_seconds: float = 0.0
    gradients: int = 0
    gradient_seconds: float = 0.0

    @property
    def seconds_per_hvp(self) -> float:
        return self.hvp_seconds / self.hvps if self.hvps else float("nan")

    @property
    def seconds_per_gradient(self) -> float:
        return self.gradient_seconds / self.gradients if self.gradients else float("nan")

    @property
    def hvp_over_gradient(self) -> float:
        """Cost of one HVP in gradients: the number to compare with the 2.5× target."""
        return self.seconds_per_hvp / self.seconds_per_gradient


def flatten(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def _second_derivative_error(error: RuntimeError) -> ProbeError | None:
    if not _NO_SECOND_DERIVATIVE.search(str(error)):
        return None
    return ProbeError(
        "this model's attention kernel has no second derivative, so Hessian-vector products cannot go "
        "through it (" + str(error).splitlines()[0] + '). Load the model with attn_implementation="eager" '
        '(load_model_and_tokenizer does by default; or model.set_attn_implementation("eager")), '
        "or use SDPA's MATH backend"
    )


class HessianOperator:
    """H = ∇²L over `params` as a linear operator on flat vectors of length `dim`.

    `batches` are the probe's micro-batches (moved to the parameters' device once); `loss_fn` maps one
    micro-batch to (summed loss, token count). The caller puts the model in eval mode (dropout off:
    a Hessian of a random function is not a Hessian). Parameters must be fp32 or fp64: bf16 HVPs are
    too noisy for 1e-3 eigenvalues.
    """

    def __init__(self, params: Sequence[torch.Tensor], batches: Sequence[Batch], loss_fn: LossFn) -> None:
        if not params:
            raise ProbeError("no parameters to probe: the model has no trainable parameter in the selection")
        if any(not p.requires_grad for p in params):
            raise ProbeError("every probed parameter must have requires_grad=True (they are what H is over)")
        if any(p.dtype not in (torch.float32, torch.float64) for p in params):
            raise ProbeError("Hessian probes need fp32 (or fp64) parameters; load the model in float32")
        if not batches:
            raise ProbeError("no probe samples: give at least one micro-batch")
        self.params = list(params)
        self.device = self.params[0].device
        self.dtype = self.params[0].dtype
        self.batches = [{k: v.to(self.device) for k, v in batch.items()} for batch in batches]
        self.loss_fn = loss_fn
        self.shapes = [p.shape for p in self.params]
        self.numels = [p.numel() for p in self.params]
        self.dim = sum(self.numels)
        self.stats = OperatorStats()

    def _unflatten(self, vector: torch.Tensor) -> list[torch.Tensor]:
        pieces = vector.split(self.numels)
        return [piece.view(shape) for piece, shape in zip(pieces, self.shapes, strict=True)]

    def _flat_or_zeros(self, grads: Sequence[torch.Tensor | None]) -> torch.Tensor:
        # A parameter the loss does not reach has a zero gradient (and zero Hessian rows), not None.
        pairs = zip(grads, self.params, strict=True)
        return flatten([torch.zeros_like(p) if g is None else g for g, p in pairs])

    def matvec(self, vector: torch.Tensor) -> torch.Tensor:
        """H·v for a flat v of length `dim` (one HVP, counted and timed)."""
        if vector.shape != (self.dim,):
            raise ValueError(f"expected a flat vector of length {self.dim}, got shape {tuple(vector.shape)}")
        synchronize(self.device)
        started = time.perf_counter()
        pieces = self._unflatten(vector.to(self.device, self.dtype))
        product = torch.zeros(self.dim, dtype=self.dtype, device=self.device)
        total_tokens = 0
        for batch in self.batches:
            try:
                batch_product, n_tokens = self._batch_hvp(batch, pieces)
            except RuntimeError as error:
                probe_error = _second_derivative_error(error)
                if probe_error is None:
                    raise
                raise probe_error from None
            product += batch_product
            total_tokens += n_tokens
        synchronize(self.device)
        self.stats.hvps += 1
        self.stats.hvp_seconds += time.perf_counter() - started
        return product / total_tokens

    def _batch_hvp(self, batch: Batch, pieces: Sequence[torch.Tensor]) -> tuple[torch.Tensor, int]:
        """(H_batch·v summed over the micro-batch's tokens, its token count)."""
        with torch.enable_grad():
            # 1. summed loss of the micro-batch and its gradient, keeping the graph of the gradient itself
            loss_sum, n_tokens = self.loss_fn(batch)
            grads = torch.autograd.grad(loss_sum, self.params, create_graph=True, allow_unused=True)
            # 2. the scalar g·v; its gradient is H·v (v is a constant, so no term for it)
            contraction = sum(
                ((g * v).sum() for g, v in zip(grads, pieces, strict=True) if g is not None),
                torch.zeros((), dtype=self.dtype, device=self.device),
            )
            if not contraction.requires_grad:  # the loss is linear in θ on this batch: H·v = 0
                return torch.zeros(self.dim, dtype=self.dtype, device=self.device), n_tokens
            # 3. second backward; the graph is freed afterwards (HVPs on a big model cannot keep it)
            second = torch.autograd.grad(contraction, self.params, allow_unused=True)
        return self._flat_or_zeros(second).detach(), n_tokens

    def loss_and_gradient(self) -> tuple[float, torch.Tensor]:
        """(mean token loss, flat gradient of it) over all micro-batches (one gradient, counted and timed)."""
        synchronize(self.device)
        started = time.perf_counter()
        gradient = torch.zeros(self.dim, dtype=self.dtype, device=self.device)
        loss_total, total_tokens = 0.0, 0
        for batch in self.batches:
            with torch.enable_grad():
                loss_sum, n_tokens = self.loss_fn(batch)
                grads = torch.autograd.grad(loss_sum, self.params, allow_unused=True)
            gradient += self._flat_or_zeros(grads)
            loss_total += float(loss_sum.detach())
            total_tokens += n_tokens
        synchronize(self.device)
        self.stats.gradients += 1
        self.stats.gradient_seconds += time.perf_counter() - started
        return loss_total / total_tokens, gradient / total_tokens

    def gradient(self) -> torch.Tensor:
        return self.loss_and_gradient()[1]

    @torch.no_grad()
    def mean_loss(self) -> float:
        """L(θ) at the current parameters: forward passes only."""
        loss_total, total_tokens = 0.0, 0
        for batch in self.batches:
            loss_sum, n_tokens = self.loss_fn(batch)
            loss_total += float(loss_sum)
            total_tokens += n_tokens
        return loss_total / total_tokens

    def flat_parameters(self) -> torch.Tensor:
        return flatten([p.detach() for p in self.params]).clone()

    @torch.no_grad()
    def set_flat_parameters(self, flat: torch.Tensor) -> None:
        for param, value in zip(self.params, self._unflatten(flat), strict=True):
            param.copy_(value)


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def hessian_operator_for_model(
    model: nn.Module,
    batches: Sequence[Batch],
    *,
    is_seq2seq: bool,
    params: Sequence[torch.Tensor] | None = None,
) -> HessianOperator:
    """The Hessian of a transformers model's token-weighted loss over `params` (default: all trainable).

    Puts the model in eval mode: arXiv 2602.04998 probes without dropout, and so do we.
    """
    low_precision = {str(p.dtype) for p in model.parameters() if p.dtype in (torch.float16, torch.bfloat16)}
    if low_precision:
        # PEFT keeps adapters in fp32 on a bf16 base, but the base's rounding still swamps the curvature.
        found = ", ".join(sorted(low_precision))
        raise ProbeError(
            f"Hessian probes need the whole model in fp32; it has {found} weights "
            "(load with dtype=torch.float32)"
        )
    model.eval()
    loss_fn: LossFn = partial(summed_token_loss, model, is_seq2seq=is_seq2seq)
    return HessianOperator(trainable_parameters(model) if params is None else params, batches, loss_fn)
