"""The storage contract, run against every backend: the one transaction boundary commits, rolls back and
translates driver errors; times come back as aware UTC; non-finite floats are encoded explicitly."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from advisor.specs import parse_spec
from advisor.storage import repository as repo
from advisor.storage.db import Database, normalize_url
from advisor.storage.errors import Conflict, DatabaseUnavailable, NotFound
from advisor.storage.jsonsafe import json_safe
from advisor.storage.models import ModelRow, Probe, Study
from api import testing


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    for url in testing.database_url(request.param, tmp_path):
        database = testing.migrated(url)
        yield database
        database.dispose()


def count(db: Database, model: type) -> int:
    with db.transaction(write=False) as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def test_a_failing_block_rolls_everything_back(db: Database) -> None:
    with pytest.raises(RuntimeError), db.transaction() as session:
        repo.get_or_create_model(session, name="m", revision=None)
        raise RuntimeError("boom")
    assert count(db, ModelRow) == 0


def test_unique_violations_become_conflicts_naming_the_constraint(db: Database) -> None:
    with db.transaction() as session:
        session.add(ModelRow(name="m", revision=""))
    with pytest.raises(Conflict) as caught, db.transaction() as session:
        session.add(ModelRow(name="m", revision=""))
    assert "uq_models_name_revision" in (caught.value.constraint or "") or "models.name" in (
        caught.value.constraint or ""
    )
    assert count(db, ModelRow) == 1


def test_studies_round_trip_with_utc_times_and_pagination(db: Database, tmp_path: Path) -> None:
    spec = parse_spec(testing.example_spec(tmp_path))
    with db.transaction() as session:
        ids = [
            repo.create_study(
                session,
                spec=spec,
                function="synthetic",
                max_attempts=3,
                token_id=None,
                dataset_fingerprint=None,
                idempotency=None,
            ).id
            for _ in range(3)
        ]
    with db.transaction(write=False) as session:
        rows, total = repo.list_studies(
            session, state="queued", model="tiny-llama", method=None, limit=2, offset=0
        )
        assert total == 3 and [r.id for r in rows] == ids[::-1][:2]
        study = repo.get_study(session, study_id=ids[0])
        assert study.created_at.tzinfo is not None and study.created_at.utcoffset() == dt.timedelta(0)
        assert abs(dt.datetime.now(dt.UTC) - study.created_at) < dt.timedelta(minutes=1)
        assert study.spec["alpha"] == 8.0  # defaults resolved into the stored spec
        with pytest.raises(NotFound):
            repo.get_study(session, study_id=10**6)
    assert count(db, Study) == 3


def test_non_finite_floats_are_stored_as_strings(db: Database, tmp_path: Path) -> None:
    spec = parse_spec(testing.example_spec(tmp_path))
    with db.transaction() as session:
        study = repo.create_study(
            session,
            spec=spec,
            function="synthetic",
            max_attempts=3,
            token_id=None,
            dataset_fingerprint=None,
            idempotency=None,
        )
        repo.add_probes(
            session, study_id=study.id, probes=[{"kind": "hessian", "values": [1.0, math.inf, math.nan]}]
        )
    with db.transaction(write=False) as session:
        probe = session.scalars(select(Probe)).one()
    assert probe.payload["values"] == [1.0, "inf", "nan"]
    assert json_safe({"a": (-math.inf,)}) == {"a": ["-inf"]}


def test_an_unreachable_database_is_reported_not_raised_raw() -> None:
    db = Database("postgresql://nobody@127.0.0.1:1/none")
    with pytest.raises(DatabaseUnavailable, match="database unavailable"):
        db.ping()


def test_relative_sqlite_paths_are_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert normalize_url("sqlite:///rel/advisor.db") == f"sqlite:///{tmp_path}/rel/advisor.db"
    assert normalize_url("postgresql://u@h/db").startswith("postgresql+psycopg://")
