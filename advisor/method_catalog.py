"""The fine-tuning methods lora-advisor knows, by the names requests use.

This catalogue is torch-free so that the spec (and with it the API and CI hook) can validate a method
name without importing torch. The plugins that implement each name live in `proxy_runs.methods`, and a
contract test checks that both lists agree.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MethodInfo:
    name: str
    summary: str
    uses_rank: bool = True  # prompt tuning and full fine-tuning ignore rank/alpha
    lora_family: bool = True  # trains PEFT lora_A / lora_B pairs


METHODS: dict[str, MethodInfo] = {
    info.name: info
    for info in [
        MethodInfo("lora", "LoRA: ΔW = (α/r)·B·A, B initialised to zero"),
        MethodInfo("rslora", "rank-stabilised LoRA: scale α/√r instead of α/r"),
        MethodInfo("dora", "DoRA: weight-decomposed LoRA (magnitude vector + LoRA direction)"),
        MethodInfo("pissa", "PiSSA: A, B initialised from the top singular vectors of W"),
        MethodInfo("olora", "OLoRA: A, B initialised from a QR decomposition of W"),
        MethodInfo("lora_plus", "LoRA+: B trained at ratio × the learning rate of A"),
        MethodInfo("balora", "BaLoRA: project (A, B) onto the balanced manifold BᵀB = AAᵀ after each step"),
        MethodInfo("reflora", "RefLoRA: precondition gradients by the refactoring matrix S after a warm-up"),
        MethodInfo("reflora_s", "RefLoRA-S: scalar refactoring ‖A‖ = ‖B‖ with Adam moments rescaled"),
        MethodInfo("prompt_tuning", "prompt tuning: trainable virtual-token embeddings", False, False),
        MethodInfo("full", "full fine-tuning: every weight trained", False, False),
    ]
}


def method_names() -> list[str]:
    return list(METHODS)
