"""The contract every fine-tuning method implements, and the helpers LoRA-family methods share.

A method is a small class registered by name. The engine calls, in order: `wrap` once (adapters,
initialisation, which parameters train), `build_optimizer` once, then around every optimizer step
`before_optimizer_step` (gradient surgery such as RefLoRA's preconditioning) and
`after_optimizer_step` (weight surgery such as BaLoRA's projection).
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, cast

import torch
from peft import LoraConfig, PeftModel, TaskType, get_peft_model
from peft.tuners.lora import LoraLayer
from torch import nn

from advisor.specs import StudySpec, TrainingSpec

# PEFT still calls a transformers property deprecated in v5; the warning is theirs, repeated on every wrap.
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


@dataclass
class LoraPair:
    """One adapted linear layer: A is r × in, B is out × r (PEFT's shapes), ΔW = s·B·A."""

    module_name: str
    A: nn.Parameter
    B: nn.Parameter


def lora_pairs(model: nn.Module) -> Iterator[LoraPair]:
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer):
            for adapter in module.active_adapters:
                if adapter in module.lora_A:
                    A = cast(nn.Parameter, module.lora_A[adapter].weight)
                    B = cast(nn.Parameter, module.lora_B[adapter].weight)
                    yield LoraPair(name, A, B)


@dataclass
class LoraPairGroup:
    """Adapters whose A and B have the same shapes, so that their factors stack into one batch.

    Methods that decompose every pair at every step (BaLoRA, RefLoRA) work on a group at a time: one
    batched call per shape instead of a few small calls per module. On a GPU each small call is a kernel
    launch and often a host synchronisation, which made the per-module form cost more than the forward
    and backward of a SmolLM2-sized model (bench/RESULTS.md, "Proxy engine throughput").
    """

    pairs: list[LoraPair]

    def factors_A(self) -> list[torch.Tensor]:
        return [pair.A for pair in self.pairs]

    def factors_B(self) -> list[torch.Tensor]:
        return [pair.B for pair in self.pairs]

    def stack_A(self) -> torch.Tensor:
        """n × r × in."""
        return torch.stack(self.factors_A())

    def stack_B(self) -> torch.Tensor:
        """n × out × r."""
        return torch.stack(self.factors_B())

    def with_gradients(self) -> LoraPairGroup:
        """The pairs whose A and B both have gradients (after a backward pass: all of them)."""
        return LoraPairGroup([p for p in self.pairs if p.A.grad is not None and p.B.grad is not None])

    def gradients(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The gradients of every A and every B; call on `with_gradients()`."""
        return (
            [cast(torch.Tensor, pair.A.grad) for pair in self.pairs],
            [cast(torch.Tensor, pair.B.grad) for pair in self.pairs],
        )


def lora_pair_groups(model: nn.Module) -> list[LoraPairGroup]:
    groups: dict[tuple[object, ...], list[LoraPair]] = defaultdict(list)
    for pair in lora_pairs(model):
        groups[(pair.A.shape, pair.B.shape, pair.A.dtype, pair.A.device)].append(pair)
    return [LoraPairGroup(pairs) for pairs in groups.values()]


def copy_stacked_(targets: list[torch.Tensor], stacked: torch.Tensor) -> None:
    """targets[i] ← stacked[i], as one multi-tensor copy rather than a kernel per tensor."""
    torch._foreach_copy_(targets, list(stacked.to(targets[0].dtype).unbind(0)))


def adamw_settings(training: TrainingSpec) -> dict[str, Any]:
    """The real run's AdamW β1, β2 and ε, as keywords of torch.optim.AdamW: β2 and ε set how fast the
    step size adapts, which moves the best LR, so proxies must train with the user's values."""
    return {"betas": training.optimizer.betas, "eps": training.optimizer.eps}


def adamw_with_decay_groups(model: nn.Module, lr: float, training: TrainingSpec) -> torch.optim.Optimizer:
    """The real run's AdamW over trainable parameters, with its weight decay on matrices only: biases,
    norms and other 1-D tensors get none."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in trainable if p.ndim >= 2], "weight_decay": training.weight_decay},
        {"params": [p for p in trainable if p.ndim < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, **adamw_settings(training))


class Method:
    """Base: a PEFT LoRA adapter configured from the spec, trained with plain AdamW."""

    name: ClassVar[str]
    lora_config_overrides: ClassVar[Mapping[str, object]] = {}

    def __init__(self, spec: StudySpec) -> None:
        self.spec = spec
        self.planned_steps = 0

    def lora_config(self, *, is_seq2seq: bool) -> LoraConfig:
        spec = self.spec
        settings: dict[str, object] = dict(
            r=spec.rank,
            lora_alpha=spec.alpha,
            lora_dropout=spec.method_options.dropout,
            target_modules=spec.target_modules,
            use_rslora=spec.scaling == "alpha_over_sqrt_r",
            task_type=TaskType.SEQ_2_SEQ_LM if is_seq2seq else TaskType.CAUSAL_LM,
        )
        settings.update(self.lora_config_overrides)
        return LoraConfig(**settings)  # type: ignore[arg-type]  # PEFT's dataclass fields are loosely typed

    def wrap(self, model: nn.Module, *, is_seq2seq: bool) -> nn.Module:
        peft_model: PeftModel = get_peft_model(model, self.lora_config(is_seq2seq=is_seq2seq))
        return peft_model

    def start(self, planned_steps: int) -> None:
        """Called once before training with the number of optimizer steps the run plans."""
        self.planned_steps = planned_steps

    def build_optimizer(self, model: nn.Module, lr: float, training: TrainingSpec) -> torch.optim.Optimizer:
        """The optimizer at peak LR `lr`, with the weight decay, betas and ε of the real run's `training`."""
        return adamw_with_decay_groups(model, lr, training)

    def before_optimizer_step(self, model: nn.Module, optimizer: torch.optim.Optimizer, step: int) -> None:
        """Gradients are final here (accumulated, not yet clipped). `step` counts from 0."""

    def after_optimizer_step(self, model: nn.Module, optimizer: torch.optim.Optimizer, step: int) -> None:
        """Weights have just been updated by the optimizer step number `step`."""
