"""A database restart in the middle of a study: readiness fails, then recovers, and no job is left stuck.

This test restarts a PostgreSQL server of its own (started by scripts/start_postgres.sh on a free
loopback port), never the shared one named by LORA_ADVISOR_TEST_PG_URL.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import POSTGRES_SCRIPT as SCRIPT
from sqlalchemy import select

from advisor.jobs import queue
from advisor.jobs.executors import wait_for
from advisor.specs import parse_spec
from advisor.storage.models import Job, ProxyRun
from api import testing

pytestmark = pytest.mark.postgres


def test_database_restart_fails_readiness_then_recovers_with_no_stuck_job(
    own_postgres: tuple[str, Path], tmp_path: Path
) -> None:
    from fastapi.testclient import TestClient

    from api.app import create_app

    url, folder = own_postgres
    db = testing.migrated(url)
    settings = testing.make_settings(tmp_path, database_url=url)
    spec = parse_spec(testing.example_spec(tmp_path))
    study_id, _ = queue.submit_study(
        db,
        spec=spec,
        function="synthetic",
        max_attempts=3,
        token_id=None,
        dataset_fingerprint=None,
        idempotency=None,
        options={"seconds_per_run": 0.15},
    )
    with (
        TestClient(create_app(settings, db=db, start_workers=False)) as client,
        testing.worker_thread(db, testing.worker_options(lease_seconds=3.0)),
    ):
        headers = testing.token(db)
        assert wait_for(
            lambda: client.get(f"/v1/studies/{study_id}", headers=headers).json()["state"] == "running",
            timeout=10,
        )
        subprocess.run([str(SCRIPT), "stop", str(folder)], check=True, capture_output=True)
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["database"]["ok"] is False
        down = client.get("/v1/studies", headers=headers)
        assert down.status_code == 503 and down.headers["content-type"].startswith("application/problem+json")

        port = url.rsplit(":", 1)[1].split("/")[0]
        subprocess.run([str(SCRIPT), port, str(folder)], check=True, capture_output=True)
        assert wait_for(lambda: client.get("/readyz").status_code == 200, timeout=20, interval=0.2)
        assert wait_for(
            lambda: client.get(f"/v1/studies/{study_id}", headers=headers).json()["state"] == "succeeded",
            timeout=30,
            interval=0.2,
        )
    with db.transaction(write=False) as session:
        assert session.scalars(select(Job.state)).all() == ["succeeded"]
        assert (
            len(session.scalars(select(ProxyRun.id).where(ProxyRun.study_id == study_id)).all())
            == testing.example_study_runs()
        )
    db.dispose()
