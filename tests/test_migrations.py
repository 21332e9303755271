"""Migrations: up, down and up again on SQLite and PostgreSQL, no drift between the models and the
migrations, and a refusal to run against an out-of-date schema."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from advisor.storage import migrate
from advisor.storage.db import Database
from advisor.storage.errors import SchemaOutOfDate
from advisor.storage.models import Base
from api import testing


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from testing.database_url(request.param, tmp_path)


def tables(db: Database) -> set[str]:
    return set(inspect(db.engine).get_table_names()) - {"alembic_version"}


def test_upgrade_downgrade_upgrade(url: str) -> None:
    db = Database(url)
    with pytest.raises(SchemaOutOfDate, match="advisor db upgrade"):
        db.check_schema()
    migrate.upgrade(url)
    db.check_schema()
    assert tables(db) == set(Base.metadata.tables)
    migrate.downgrade(url, "base")
    assert tables(db) == set()
    assert migrate.current_revision(db) is None
    migrate.upgrade(url)
    assert migrate.current_revision(db) == migrate.head_revision()
    db.dispose()


def test_models_and_migrations_do_not_drift(url: str) -> None:
    migrate.upgrade(url)
    db = Database(url)
    with db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        diff = compare_metadata(context, Base.metadata)
    db.dispose()
    assert diff == [], f"models and migrations differ; add a migration for: {diff}"


def test_migrations_ship_beside_the_package() -> None:
    folder = migrate.migrations_dir()
    assert (folder / "env.py").is_file() and list((folder / "versions").glob("*.py"))
    assert migrate.head_revision() == "0001"
