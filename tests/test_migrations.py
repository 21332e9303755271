"""Migrations: up, down and up again on SQLite and PostgreSQL, no drift between the models and the
migrations, and a refusal to run against an out-of-date schema."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.dialects import postgresql

from advisor.specs import parse_spec
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
    assert migrate.current_revision(db.engine) is None
    migrate.upgrade(url)
    assert migrate.current_revision(db.engine) == migrate.head_revision()
    db.dispose()


def test_models_and_migrations_do_not_drift(url: str) -> None:
    migrate.upgrade(url)
    db = Database(url)
    with db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        diff = compare_metadata(context, Base.metadata)
    db.dispose()
    assert diff == [], f"models and migrations differ; add a migration for: {diff}"


def test_the_per_token_quota_counts_read_an_index_not_the_whole_studies_table(tmp_path: Path) -> None:
    db = testing.migrated(f"sqlite:///{tmp_path / 'quota.db'}")
    since = dt.datetime(2026, 1, 1)
    with db.engine.connect() as connection:
        plan = connection.execute(
            sa.text(
                "EXPLAIN QUERY PLAN SELECT count(*) FROM studies WHERE token_id = 7 AND created_at >= :since"
            ),
            {"since": since},
        ).all()
    db.dispose()
    assert any("ix_studies_token_created" in str(row) for row in plan), plan


def test_migrations_ship_beside_the_package() -> None:
    folder = migrate.migrations_dir()
    assert (folder / "env.py").is_file() and list((folder / "versions").glob("*.py"))
    assert migrate.head_revision() == "0004"


# Data migrations: what a stored spec meant when it was stored is what it means after the upgrade.

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def spec_as_0001_stored_it(data_format: str) -> dict[str, Any]:
    """A spec dumped by the code of revision 0001: no field added since (packing among them)."""
    spec = parse_spec({"model": "org/base", "dataset": {"path": "data.jsonl", "format": data_format}})
    stored = spec.model_dump(mode="json")
    for name in ("max_steps", "packing", "warmup_steps", "optimizer"):
        del stored["training"][name]
    for name in ("messages_field", "train_on_prompt"):
        del stored["dataset"][name]
    return stored


def insert(connection: sa.Connection, table_name: str, **values: Any) -> None:
    """A row of `values` written by SQL, as revision 0001's schema holds it (today's models may have more
    columns than it); dicts are JSON documents."""

    def column(name: str, value: Any) -> sa.ColumnClause[Any]:
        if isinstance(value, dict):
            return sa.column(name, JSON)
        return (
            sa.column(name, sa.DateTime(timezone=True)) if isinstance(value, dt.datetime) else sa.column(name)
        )

    table = sa.table(table_name, *(column(name, value) for name, value in values.items()))
    connection.execute(sa.insert(table).values(**values))


def insert_study_job_and_run(connection: sa.Connection, study_id: int, spec: dict[str, Any]) -> None:
    times = {"created_at": NOW, "updated_at": NOW}
    insert(
        connection,
        "studies",
        id=study_id,
        state="succeeded",
        spec=spec,
        model_id=1,
        method="lora",
        rank=8,
        progress=1.0,
        **times,
    )
    insert(
        connection,
        "jobs",
        id=study_id,
        study_id=study_id,
        function="study",
        payload={"spec": spec},
        state="succeeded",
        attempt=1,
        max_attempts=3,
        available_at=NOW,
        cancel_requested=False,
        **times,
    )
    insert(
        connection,
        "proxy_runs",
        id=study_id,
        study_id=study_id,
        run_index=0,
        attempt=1,
        status="success",
        batch_size=8,
        learning_rate=1e-3,
        config={},
        steps=1,
        examples_seen=8,
        tokens_seen=64,
        seconds=0.5,
        metrics={},
        dataset_fingerprint={},
        meta={"spec": spec},
        created_at=NOW,
    )


def stored_specs(db: Database, study_id: int) -> list[dict[str, Any]]:
    """The spec as the study, its job and its run hold it."""
    places = [("studies", "spec", "id", None), ("jobs", "payload", "study_id", "spec")]
    places.append(("proxy_runs", "meta", "study_id", "spec"))
    specs = []
    with db.engine.connect() as connection:
        for table_name, column, owner, key in places:
            table = sa.table(table_name, sa.column(owner), sa.column(column, JSON))
            document = connection.execute(
                sa.select(table.c[column]).where(table.c[owner] == study_id)
            ).scalar_one()
            specs.append(document[key] if key else document)
    return specs


def test_text_specs_stored_before_packing_existed_stay_packed(url: str) -> None:
    """Format text was always packed before training.packing existed; now the default is unpacked."""
    text, instruction = spec_as_0001_stored_it("text"), spec_as_0001_stored_it("instruction")
    migrate.upgrade(url, "0001")
    db = Database(url)
    with db.engine.begin() as connection:
        insert(connection, "models", id=1, name="org/base", revision="", created_at=NOW)
        insert_study_job_and_run(connection, 1, text)
        insert_study_job_and_run(connection, 2, instruction)

    migrate.upgrade(url, "0002")
    assert all(spec["training"]["packing"] is True for spec in stored_specs(db, 1))
    assert all(parse_spec(spec).training.packing for spec in stored_specs(db, 1))
    assert stored_specs(db, 2) == [instruction] * 3, "other formats were never packed: untouched"

    migrate.downgrade(url, "0001")
    assert stored_specs(db, 1) == [text] * 3 and stored_specs(db, 2) == [instruction] * 3
    db.dispose()
