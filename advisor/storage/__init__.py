"""Persistence: typed models, one transaction boundary (`Database.transaction`), keyword-only repository
functions and Alembic migrations driven from code."""

from advisor.storage.db import Database, default_sqlite_url
from advisor.storage.errors import (
    Conflict,
    DatabaseUnavailable,
    NotFound,
    SchemaOutOfDate,
    StaleAttempt,
    StorageError,
)

__all__ = [
    "Conflict",
    "Database",
    "DatabaseUnavailable",
    "NotFound",
    "SchemaOutOfDate",
    "StaleAttempt",
    "StorageError",
    "default_sqlite_url",
]
