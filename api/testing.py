"""Helpers the service's tests share (kept in the package, like optuna.testing, so every test file and
the load bench build the same fixtures): migrated databases on SQLite or PostgreSQL, settings confined
to a temporary folder, tokens, and a real worker running in a thread."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import make_url

from advisor.jobs.executors import Executor
from advisor.jobs.queue import Backoff
from advisor.jobs.worker import Worker, WorkerOptions
from advisor.science.recommendation import Recommendation
from advisor.specs import StudySpec, parse_spec
from advisor.storage import migrate
from advisor.storage import repository as repo
from advisor.storage.db import Database, default_sqlite_url, normalize_url
from api.security import create_token
from api.settings import Settings
from proxy_runs import torch_runner

PG_ENV = "LORA_ADVISOR_TEST_PG_URL"
FAST_JOB = {"seconds_per_run": 0.01}


def store_finished_study(
    db: Database,
    spec: StudySpec,
    recommendation: Recommendation,
    *,
    dataset_examples: int,
    token_id: int | None = None,
) -> int:
    """A study stored as finished with this recommendation, as a worker leaves it; its id."""
    with db.transaction() as session:
        study = repo.create_study(
            session,
            spec=spec,
            function="synthetic",
            max_attempts=1,
            token_id=token_id,
            dataset_fingerprint=None,
            idempotency=None,
        )
        repo.add_recommendation(
            session,
            study=study,
            model=spec.model,
            available=True,
            batch_size=recommendation.batch_size,
            learning_rate=recommendation.learning_rate,
            dataset_examples=dataset_examples,
            payload=recommendation.model_dump(mode="json"),
        )
        return study.id


def example_spec(root: Path) -> dict[str, Any]:
    """A valid spec whose model folder and dataset file exist under `root` (see `make_roots`)."""
    return {
        "model": "tiny-llama",
        "dataset": {"path": "train.jsonl"},
        "method": "lora",
        "rank": 8,
        "batch_sizes": [8, 16],
        "lr_range": [1e-5, 1e-2],
        "budget": {"proxy_seconds": 60},
    }


@functools.cache
def example_study_runs() -> int:
    """Runs the `synthetic` study of `example_spec` stores: the real study logic on SyntheticRunner's surface,
    the same runs every time (the calibration run included)."""
    from advisor.jobs.control import JobControl
    from advisor.jobs.functions import run_synthetic_study

    payload = {"spec": parse_spec(example_spec(Path("/"))).model_dump(mode="json"), "seconds_per_run": 0.0}
    return len(run_synthetic_study(payload, JobControl()).runs)


def make_roots(root: Path) -> tuple[Path, Path]:
    models, datasets = root / "model-root", root / "dataset-root"
    (models / "tiny-llama").mkdir(parents=True, exist_ok=True)
    (models / "tiny-llama" / "config.json").write_text("{}")
    datasets.mkdir(parents=True, exist_ok=True)
    rows = [{"instruction": f"q{i}", "input": "", "output": f"a{i}"} for i in range(20)]
    (datasets / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return models, datasets


def make_settings(root: Path, *, database_url: str | None = None, **overrides: Any) -> Settings:
    models, datasets = make_roots(root)
    values: dict[str, Any] = {
        "data_dir": root / "data",
        "database_url": database_url or default_sqlite_url(root / "data"),
        "model_roots": [models],
        "dataset_roots": [datasets],
        "workers": 0,
        "job_function": "synthetic",
        "job_options": FAST_JOB,
        "lease_seconds": 2.0,
        "retry_base_seconds": 0.05,
        "readyz_requires_workers": False,
        "rate_limit_per_second": 1000.0,
        "rate_limit_burst": 1000,
    }
    values.update(overrides)
    (root / "data").mkdir(parents=True, exist_ok=True)
    return Settings(**values)


def migrated(url: str) -> Database:
    migrate.upgrade(url)
    return Database(url)


@contextlib.contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A new, empty database on the server named by LORA_ADVISOR_TEST_PG_URL, dropped afterwards."""
    import psycopg

    server = make_url(normalize_url(os.environ[PG_ENV]))
    name = f"advisor_test_{uuid.uuid4().hex[:12]}"
    admin = server.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def token(db: Database, scopes: str = "read,submit") -> dict[str, str]:
    _, secret = create_token(db, name=f"test-{scopes}", scopes=scopes.split(","))
    return {"Authorization": f"Bearer {secret}"}


def worker_options(**overrides: Any) -> WorkerOptions:
    values: dict[str, Any] = {
        "lease_seconds": 2.0,
        "poll_seconds": 0.05,
        "backoff": Backoff(0.05, 0.2),
        "runner": torch_runner,
    }
    values.update(overrides)
    return WorkerOptions(**values)


@contextlib.contextmanager
def worker_thread(
    db: Database, options: WorkerOptions | None = None, *, executor: Executor | None = None
) -> Iterator[Worker]:
    """A real Worker polling the queue in a background thread until the block ends."""
    worker = Worker(db, options=options or worker_options(), executor=executor)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run_forever, args=(stop,), daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        stop.set()
        thread.join(timeout=30)


def database_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """Body of the tests' `url` fixture: SQLite in tmp_path, or a fresh PostgreSQL database."""
    import pytest

    if backend == "sqlite":
        yield default_sqlite_url(tmp_path / "db")
        return
    if not os.environ.get(PG_ENV):
        pytest.skip(
            f"{PG_ENV} is not set; .ci/run starts PostgreSQL with scripts/start_postgres.sh and sets it"
        )
    with fresh_postgres_database() as url:
        yield url


@dataclasses.dataclass
class ServiceEnv:
    """The app over a migrated database with a read+submit token, in-process, no workers: what the API's
    tests submit to and count in."""

    client: Any  # fastapi.testclient.TestClient
    db: Database
    settings: Settings
    headers: dict[str, str]
    root: Path

    def spec(self, **changes: Any) -> dict[str, Any]:
        return {**example_spec(self.root), **changes}

    def submit(self, headers: dict[str, str] | None = None, **changes: Any) -> Any:
        """POST /v1/studies of the example spec with `changes`, as this env's token unless `headers`."""
        return self.client.post("/v1/studies", json=self.spec(**changes), headers=headers or self.headers)

    def count(self, model: type) -> int:
        """Rows of a table (a model class such as Study or Job)."""
        from sqlalchemy import func, select

        with self.db.transaction(write=False) as session:
            return session.scalar(select(func.count()).select_from(model)) or 0


@contextlib.contextmanager
def service_env(url: str, root: Path, **overrides: Any) -> Iterator[ServiceEnv]:
    """A `ServiceEnv` on the database at `url`, settings confined to `root` with `overrides`."""
    from fastapi.testclient import TestClient

    from api.app import create_app

    db = migrated(url)
    settings = make_settings(root, database_url=url, **overrides)
    try:
        with TestClient(create_app(settings, db=db, start_workers=False)) as client:
            yield ServiceEnv(client, db, settings, token(db), root)
    finally:
        db.dispose()
