"""Methods PEFT implements: configured here, trained by PEFT's own code."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import torch
from peft import PeftModel, PromptTuningConfig, PromptTuningInit, TaskType, get_peft_model
from peft.optimizers import create_loraplus_optimizer
from torch import nn

from advisor.specs import TrainingSpec
from proxy_runs.methods.base import Method, adamw_settings, adamw_with_decay_groups
from proxy_runs.methods.registry import register


@register
class Lora(Method):
    name = "lora"


@register
class RsLora(Method):
    """Scale α/√r keeps the update size stable across ranks (the spec resolves scaling accordingly)."""

    name = "rslora"


@register
class Dora(Method):
    name = "dora"
    lora_config_overrides: ClassVar[Mapping[str, object]] = {"use_dora": True}


@register
class Pissa(Method):
    """Principal singular vectors of W as the initial A, B (W keeps the residual). The fast randomised
    SVD with 4 subspace iterations is PEFT's recommended setting and exact enough for initialisation."""

    name = "pissa"
    lora_config_overrides: ClassVar[Mapping[str, object]] = {"init_lora_weights": "pissa_niter_4"}


@register
class Olora(Method):
    name = "olora"
    lora_config_overrides: ClassVar[Mapping[str, object]] = {"init_lora_weights": "olora"}


@register
class LoraPlus(Method):
    """LoRA+: B learns `lora_plus_ratio` times faster than A (the LR we recommend is A's)."""

    name = "lora_plus"

    def build_optimizer(self, model: nn.Module, lr: float, training: TrainingSpec) -> torch.optim.Optimizer:
        assert isinstance(model, PeftModel)
        return create_loraplus_optimizer(
            model,
            torch.optim.AdamW,
            lr=lr,
            loraplus_lr_ratio=self.spec.method_options.lora_plus_ratio,
            loraplus_weight_decay=training.weight_decay,
            **adamw_settings(training),
        )


@register
class PromptTuning(Method):
    """Trainable virtual-token embeddings prepended to the input; rank and α do not apply."""

    name = "prompt_tuning"

    def wrap(self, model: nn.Module, *, is_seq2seq: bool) -> nn.Module:
        config = PromptTuningConfig(
            task_type=TaskType.SEQ_2_SEQ_LM if is_seq2seq else TaskType.CAUSAL_LM,
            num_virtual_tokens=self.spec.method_options.num_virtual_tokens,
            prompt_tuning_init=PromptTuningInit.RANDOM,
        )
        wrapped: nn.Module = get_peft_model(model, config)
        return wrapped


@register
class FullFineTuning(Method):
    """Every weight trains; no adapter."""

    name = "full"

    def wrap(self, model: nn.Module, *, is_seq2seq: bool) -> nn.Module:
        for parameter in model.parameters():
            parameter.requires_grad_(True)
        return model

    def build_optimizer(self, model: nn.Module, lr: float, training: TrainingSpec) -> torch.optim.Optimizer:
        return adamw_with_decay_groups(model, lr, training)
