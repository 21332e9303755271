"""Explicit encoding of ±inf and NaN for JSON columns: PostgreSQL rejects them, SQLite would store
invalid JSON. Non-finite floats become the strings "inf", "-inf" and "nan"."""

from __future__ import annotations

import math
from typing import Any


def json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def finite_or_none(value: float | None) -> float | None:
    """Loss columns hold finite numbers or NULL; a diverged run says so in its status instead."""
    return value if value is not None and math.isfinite(value) else None
