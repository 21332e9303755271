"""Fine-tuning methods by name: `build_method(spec)` returns the plugin for `spec.method`.

Importing this package registers every method; a new method is one module here plus its entry in
`advisor.method_catalog`, and the contract test covers it automatically.
"""

from __future__ import annotations

from advisor.specs import StudySpec
from proxy_runs.methods import balora, peft_methods, reflora  # noqa: F401  (imported to register)
from proxy_runs.methods.base import LoraPair, Method, lora_pairs
from proxy_runs.methods.registry import METHOD_REGISTRY, get_method, register


def build_method(spec: StudySpec) -> Method:
    return get_method(spec.method)(spec)


__all__ = ["METHOD_REGISTRY", "LoraPair", "Method", "build_method", "get_method", "lora_pairs", "register"]
