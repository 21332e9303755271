"""Storage errors the API and CLI can act on; database driver exceptions never leave advisor.storage."""

from __future__ import annotations

from advisor.errors import AdvisorError


class StorageError(AdvisorError):
    """Base class of everything advisor.storage raises."""


class NotFound(StorageError):
    def __init__(self, kind: str, ident: object) -> None:
        self.kind, self.ident = kind, ident
        super().__init__(f"{kind} {ident} not found")


class Conflict(StorageError):
    """A uniqueness or state rule refused the write (a duplicate key, a finished study, ...)."""

    def __init__(self, message: str, *, constraint: str | None = None) -> None:
        self.constraint = constraint
        super().__init__(message)


class StaleAttempt(Conflict):
    """A worker wrote for a job attempt that is no longer current: its lease expired and the job moved on."""


class DatabaseUnavailable(StorageError):
    """The database cannot be reached or is busy; the caller may retry later."""


class SchemaOutOfDate(StorageError):
    """The database's schema is not the one this code needs; the message says how to upgrade it."""


class DatabaseCorrupt(StorageError):
    """The database file is damaged; the message names it and what to do."""
