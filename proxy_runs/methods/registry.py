"""Name → method class. Names arrive in requests as strings; only registered, catalogued names resolve."""

from __future__ import annotations

from advisor.method_catalog import METHODS
from proxy_runs.methods.base import Method

METHOD_REGISTRY: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    name = cls.name
    if name != name.lower() or name in METHOD_REGISTRY:
        raise ValueError(f"method name {name!r} must be lowercase and unique")
    if name not in METHODS:
        raise ValueError(f"method {name!r} is not in advisor.method_catalog.METHODS; add it there first")
    METHOD_REGISTRY[name] = cls
    return cls


def get_method(name: str) -> type[Method]:
    try:
        return METHOD_REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown method {name!r}; registered: {', '.join(METHOD_REGISTRY)}") from None
