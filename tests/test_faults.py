"""Faults that must cost no work (issue 35, finding 4): a finished result outlives a database outage longer
than its lease, the warm-start read waits an outage out, and a server's embedded worker dies with it.

The outage is a real one: a PostgreSQL server of this test's own (scripts/start_postgres.sh on a free
loopback port) is stopped and started again, never the shared one named by LORA_ADVISOR_TEST_PG_URL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import POSTGRES_SCRIPT as SCRIPT
from conftest import free_port
from sqlalchemy import select

from advisor.jobs import queue
from advisor.jobs.executors import wait_for
from advisor.specs import parse_spec
from advisor.storage.errors import DatabaseUnavailable
from advisor.storage.knowledge_store import waiting_out_outages
from advisor.storage.models import Job, ProxyRun
from api import testing

LEASE_SECONDS = 2.0


@pytest.mark.postgres
def test_a_result_finished_during_an_outage_longer_than_the_lease_is_stored_when_the_database_returns(
    own_postgres: tuple[str, Path],
    tmp_path: Path,
) -> None:
    url, folder = own_postgres
    db = testing.migrated(url)
    traces = tmp_path / "traces"
    study_id, _ = queue.submit_study(
        db,
        spec=parse_spec(testing.example_spec(tmp_path)),
        function="synthetic",
        max_attempts=3,
        token_id=None,
        dataset_fingerprint=None,
        idempotency=None,
        options={"seconds_per_run": 0.15, "trace_dir": str(traces)},
    )
    spool = tmp_path / "spool"
    options = testing.worker_options(lease_seconds=LEASE_SECONDS, spool_dir=spool)
    # A second, idle worker: when the database returns it finds the job's lease long expired, and must leave
    # it to the worker that holds the result (it waits one lease after an outage before taking expired jobs).
    with testing.worker_thread(db, options), testing.worker_thread(db, options):
        assert wait_for(lambda: traces.is_dir() and any(traces.iterdir()), timeout=15, interval=0.05)
        subprocess.run([str(SCRIPT), "stop", str(folder)], check=True, capture_output=True)
        # The job finishes, its write fails for a whole lease, and the result goes to the spool.
        assert wait_for(lambda: spool.is_dir() and any(spool.glob("job-*.json")), timeout=30, interval=0.1)
        time.sleep(LEASE_SECONDS)  # the outage outlasts the lease by as much again
        port = url.rsplit(":", 1)[1].split("/")[0]
        subprocess.run([str(SCRIPT), port, str(folder)], check=True, capture_output=True)
        assert wait_for(lambda: not any(spool.glob("job-*.json")), timeout=30, interval=0.2)

    with db.transaction(write=False) as session:
        job = session.scalars(select(Job).where(Job.study_id == study_id)).one()
        runs = session.scalars(select(ProxyRun).where(ProxyRun.study_id == study_id)).all()
        assert (job.state, job.attempt) == ("succeeded", 1)  # stored, not run again
        assert len(runs) == len(list(traces.iterdir())) == testing.example_study_runs()  # once each
    db.dispose()


def test_a_read_waits_out_a_short_outage_and_gives_up_after_its_limit() -> None:
    calls: list[float] = []

    def flaky() -> str:
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise DatabaseUnavailable("database unavailable: connection refused")
        return "answer"

    assert waiting_out_outages(flaky, seconds=5.0) == "answer" and len(calls) == 3

    def down() -> str:
        raise DatabaseUnavailable("database unavailable: connection refused")

    started = time.monotonic()
    with pytest.raises(DatabaseUnavailable):
        waiting_out_outages(down, seconds=1.0)
    assert time.monotonic() - started < 2.0


def _workers(pid: int) -> list[int]:
    """The worker processes `pid` spawned (multiprocessing's spawn_main), from the process table."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                command = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if int(fields[1]) == pid and b"spawn_main" in command:  # fields[1]: the parent pid
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads the process table from /proc")
def test_the_embedded_worker_dies_with_its_server_on_kill_9(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "LORA_ADVISOR_DATA_DIR": str(tmp_path),
        "LORA_ADVISOR_AUTH_DISABLED": "1",
        "LORA_ADVISOR_PORT": str(free_port()),
        "LORA_ADVISOR_WORKERS": "1",
    }
    advisor = [sys.executable, "-m", "advisor.cli"]
    subprocess.run([*advisor, "db", "upgrade"], env=env, check=True, capture_output=True, timeout=120)
    server = subprocess.Popen([*advisor, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert wait_for(lambda: bool(_workers(server.pid)), timeout=60, interval=0.2), "no worker started"
        workers = _workers(server.pid)
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=10)
        assert wait_for(lambda: not any(_alive(pid) for pid in workers), timeout=15, interval=0.2)
    finally:
        if server.poll() is None:
            server.kill()


@pytest.mark.parametrize(
    ("offset", "what"),
    [(0, "its header"), (11 * 4096, "the studies table's root page, mid-file")],
    ids=["header", "mid-file"],
)
def test_a_damaged_sqlite_file_stops_start_up_with_one_line_naming_it(
    tmp_path: Path, offset: int, what: str
) -> None:
    """Damage to `what`: the service must not start (mid-file damage once gave a ready service whose
    study lists failed with 500s), and must say which file and what to do, not print a traceback."""
    env = {**os.environ, "LORA_ADVISOR_DATA_DIR": str(tmp_path), "LORA_ADVISOR_PORT": str(free_port())}
    advisor = [sys.executable, "-m", "advisor.cli"]
    subprocess.run([*advisor, "db", "upgrade"], env=env, check=True, capture_output=True, timeout=120)
    database = tmp_path / "advisor.db"
    with database.open("r+b") as file:
        file.seek(offset)
        file.write(b"\xde\xad\xbe\xef" * 256)
    started = subprocess.run([*advisor, "serve"], env=env, capture_output=True, text=True, timeout=60)
    assert started.returncode == 2
    (line,) = started.stderr.strip().splitlines()
    assert line.startswith(f"error: the SQLite database {database} is damaged (")
    assert "restore the file from a backup" in line


def test_readiness_fails_when_the_sqlite_file_is_damaged_under_a_running_service(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from advisor.storage.db import default_sqlite_url
    from api.app import create_app

    url = default_sqlite_url(tmp_path)
    db = testing.migrated(url)
    settings = testing.make_settings(tmp_path, database_url=url, readyz_requires_workers=False)
    with TestClient(create_app(settings, db=db, start_workers=False)) as client:
        db.engine.dispose()  # nothing cached in an open connection: the damage is read from the file
        with (tmp_path / "advisor.db").open("r+b") as file:
            file.seek(11 * 4096)  # a table's root page, mid-file
            file.write(b"\xde\xad\xbe\xef" * 256)
        ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["integrity"] == {
        "ok": False,
        "detail": "the database file is damaged; see the server log",
    }
    db.dispose()
