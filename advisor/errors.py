"""Errors a user can act on. Each names the field (as a dotted spec path), the bad value and the fix."""

from __future__ import annotations

from typing import Any


class AdvisorError(Exception):
    """Base class for every error lora-advisor reports to a user rather than crashing on."""


class SpecError(AdvisorError):
    """Input that cannot be used: a spec field, a CLI flag or a file the spec points to.

    `field` is the dotted path a client would use (``dataset.prompt_field``), so the CLI and the REST
    API can both point at the exact thing to fix.
    """

    def __init__(
        self, field: str, message: str, *, value: Any = None, fix: str | None = None, retryable: bool = False
    ) -> None:
        self.field = field
        self.value = value
        self.message = message
        self.fix = fix
        # False: the same input fails the same way again (a job stops at once rather than retrying it).
        # True only where the cause may pass, such as a hub download on a machine that is online.
        self.retryable = retryable
        self.others: list[SpecError] = []  # further problems found in the same input
        super().__init__(self.describe())

    def describe(self) -> str:
        text = f"{self.field}: {self.message}"
        if self.value is not None:
            text += f" (got {self.value!r})"
        if self.fix:
            text += f". Fix: {self.fix}"
        return text + "".join(f"\n  also {other.describe()}" for other in self.others)

    def problems(self) -> list[dict[str, Any]]:
        """Every problem as {field, message, value}: the `errors` list of an API problem response."""
        return [{"field": e.field, "message": e.message, "value": e.value} for e in [self, *self.others]]


class ModelLoadError(SpecError):
    """The model named by the spec could not be found or loaded."""


class DataError(SpecError):
    """The dataset named by the spec is missing, empty or lacks a field the format needs."""
