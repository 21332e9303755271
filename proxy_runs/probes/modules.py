"""Which modules to probe, and each one's trainable parameters.

arXiv 2602.04998 probes one module at a time (A and B of one linear layer) and finds the trends agree across
layers and module types, so by default we sample a few representative ones: the query and value
projections (or, failing those, every adapted module type) in the first, middle and last layers.
`"all"` probes every module with trainable parameters; a list of names picks modules by full name or
by a dotted suffix (`"q_proj"` matches every layer's q_proj, `"layers.0.self_attn.q_proj"` one).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from peft.tuners.lora import LoraLayer
from torch import nn

from advisor.errors import SpecError

# Attention projections whose curvature arXiv 2602.04998 reports, in the spellings of common architectures:
# Llama/Mistral/Qwen (q_proj, v_proj), T5 (q, v), BERT-like (query, value), GPT-2 (fused c_attn).
REPRESENTATIVE_NAMES = ("q_proj", "v_proj", "q", "v", "query", "value", "c_attn", "qkv_proj", "Wqkv")
_PREFIXES = ("base_model.model.", "base_model.")
_LAYER_NUMBER = re.compile(r"^(.*?)\.(\d+)(?:\.|$)")

ModuleSelection = None | Literal["all"] | Sequence[str]


@dataclass
class ModuleGroup:
    """One probed module: its name (PEFT wrapper prefixes stripped) and its trainable parameters."""

    name: str
    params: list[nn.Parameter] = field(repr=False)
    param_names: list[str] = field(default_factory=list)

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.params)

    @property
    def short_name(self) -> str:
        return self.name.rsplit(".", 1)[-1]


def display_name(name: str) -> str:
    for prefix in _PREFIXES:
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


def _is_lora_layer(module: nn.Module) -> bool:
    # A helper rather than an inline isinstance: LoraLayer is a mixin, and narrowing to it would hide
    # that `module` is an nn.Module from the type checker.
    return isinstance(module, LoraLayer)


def trainable_groups(model: nn.Module) -> list[ModuleGroup]:
    """Every module that owns trainable parameters, in model order.

    A LoRA-wrapped layer owns its A, B (and DoRA magnitude) parameters; any other trainable parameter
    (full fine-tuning, prompt-tuning embeddings) belongs to the module that holds it directly.
    """
    groups: dict[str, ModuleGroup] = {}
    claimed: set[int] = set()
    for name, module in model.named_modules():
        if _is_lora_layer(module):
            owned = [(f"{name}.{n}", p) for n, p in module.named_parameters() if p.requires_grad]
            if owned:
                groups[name] = ModuleGroup(display_name(name), [p for _, p in owned], [n for n, _ in owned])
                claimed.update(id(p) for _, p in owned)
    for name, param in model.named_parameters():
        if param.requires_grad and id(param) not in claimed:
            owner = name.rsplit(".", 1)[0] if "." in name else name
            group = groups.setdefault(owner, ModuleGroup(display_name(owner), []))
            group.params.append(param)
            group.param_names.append(name)
    return list(groups.values())


def _layer_key(name: str) -> tuple[str, int] | None:
    """("model.layers", 3) for "model.layers.3.self_attn.q_proj": the first number in a name is the block
    index (T5's "encoder.block.0.layer.1.SelfAttention.q" is block 0; "layer.1" is a sub-layer)."""
    match = _LAYER_NUMBER.match(name)
    return (match.group(1), int(match.group(2))) if match else None


def representative_groups(groups: list[ModuleGroup]) -> list[ModuleGroup]:
    """Query/value projections (else all groups) of the first, middle and last layers."""
    candidates = [g for g in groups if g.short_name in REPRESENTATIVE_NAMES] or groups
    layers: list[tuple[str, int]] = []
    for group in candidates:
        key = _layer_key(group.name)
        if key is not None and key not in layers:
            layers.append(key)
    if not layers:  # no layered structure (e.g. one prompt embedding): probe every candidate
        return candidates
    picked = {layers[0], layers[len(layers) // 2], layers[-1]}
    return [g for g in candidates if _layer_key(g.name) in picked]


def _matches(group: ModuleGroup, wanted: str) -> bool:
    wanted = display_name(wanted)
    return group.name == wanted or group.name.endswith("." + wanted)


def select_modules(model: nn.Module, selection: ModuleSelection = None) -> list[ModuleGroup]:
    """The modules to probe: representative (None), every one ("all"), or those named."""
    groups = trainable_groups(model)
    if not groups:
        raise SpecError(
            "modules",
            "the model has no trainable parameters to probe",
            fix="apply a method (spec.method) before probing",
        )
    if selection is None:
        return representative_groups(groups)
    names = [selection] if isinstance(selection, str) else list(selection)
    if "all" in names:
        return groups
    chosen: list[ModuleGroup] = []
    for wanted in names:
        matched = [g for g in groups if _matches(g, wanted)]
        if not matched:
            examples = ", ".join(g.name for g in groups[:4])
            raise SpecError(
                "modules",
                "no trainable module has this name or name suffix",
                value=wanted,
                fix=f"use 'all', a suffix such as {groups[0].short_name!r}, or a full name: {examples}",
            )
        chosen.extend(g for g in matched if g not in chosen)
    return chosen
