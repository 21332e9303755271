"""Trust, the rest of the surface (issue 35, findings 2 and 5): paths, ids, metrics, tokens, logs, readiness,
cancel and chunked bodies. Auth is on; each test names what an outside tester did and what must hold now.
Everything listens on 127.0.0.1: TestClient, or a real uvicorn where only a real server shows the finding.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient
from sqlalchemy import select

from advisor.cli import main as advisor_cli
from advisor.jobs.control import JobControl, PermanentJobError
from advisor.jobs.functions import get_job_function
from advisor.storage.db import Database, default_sqlite_url
from advisor.storage.models import Job, Study
from api import security, testing
from api.app import create_app
from api.security import create_token
from api.settings import Settings

PROBLEM = "application/problem+json"
SECRET_COLUMNS = {"aws_secret_access_key": "AKIA-not-a-real-key", "password": "hunter2"}


@dataclass
class Api:
    client: TestClient
    db: Database
    url: str
    settings: Settings
    root: Path
    tokens: dict[str, tuple[int, dict[str, str]]]  # name → (token id, auth header)

    def headers(self, name: str) -> dict[str, str]:
        return self.tokens[name][1]

    def spec(self, **changes: Any) -> dict[str, Any]:
        return {**testing.example_spec(self.root), **changes}

    def studies(self) -> int:
        with self.db.transaction(write=False) as session:
            return len(session.scalars(select(Study.id)).all())


def start_api(root: Path, **overrides: Any) -> Iterator[Api]:
    url = default_sqlite_url(root / "db")
    db = testing.migrated(url)
    tokens = {}
    for name, scopes in (
        ("alice", ["read", "submit"]),
        ("mallory", ["read", "submit"]),
        ("admin", ["admin"]),
    ):
        token_id, secret = create_token(db, name=name, scopes=scopes)
        tokens[name] = (token_id, {"Authorization": f"Bearer {secret}"})
    settings = testing.make_settings(root, database_url=url, **overrides)
    with TestClient(create_app(settings, db=db, start_workers=False)) as client:
        yield Api(client, db, url, settings, root, tokens)
    db.dispose()


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    yield from start_api(tmp_path)


@pytest.fixture
def hub_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Api]:
    """Hub ids allowed; the server runs in an empty working directory of its own."""
    server_cwd = tmp_path / "server-cwd"
    server_cwd.mkdir()
    monkeypatch.chdir(server_cwd)
    yield from start_api(tmp_path, allow_hub_ids=True)


def problem(response: httpx.Response, status: int, field: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    if field is not None:
        assert field in [error["field"] for error in body["errors"]], body
    return body


def write_secret_file(folder: Path) -> None:
    (folder / "outside").mkdir(parents=True)
    (folder / "outside" / "creds.jsonl").write_text(json.dumps(SECRET_COLUMNS) + "\n")


# Paths ------------------------------------------------------------------------------------------------


def test_a_value_on_the_servers_disk_is_never_taken_for_a_hub_id(hub_api: Api) -> None:
    """With hub ids on, `outside/creds.jsonl` (a file relative to the server's working directory) passed as
    a hub id. Now a value that exists on disk is a path or nothing; hub ids follow the hub's grammar."""
    write_secret_file(Path.cwd())
    for value in ("outside/creds.jsonl", "outside"):
        body = hub_api.spec(dataset={"path": value})
        problem(
            hub_api.client.post("/v1/studies", json=body, headers=hub_api.headers("alice")),
            422,
            "dataset.path",
        )
    for not_a_hub_id in (
        "a/b/c",
        "./creds",
        "org/..",
        "../name",
        "org/.hidden",
        "org--x/name",
        "org/name.git",
    ):
        body = hub_api.spec(dataset={"path": not_a_hub_id})
        answer = hub_api.client.post("/v1/studies", json=body, headers=hub_api.headers("alice"))
        problem(answer, 422, "dataset.path")
    assert hub_api.studies() == 0
    for hub_id in ("org/instructions", "gpt2"):  # names nothing on disk: a hub id, read by the hub client
        answer = hub_api.client.post(
            "/v1/studies", json=hub_api.spec(model=hub_id), headers=hub_api.headers("alice")
        )
        assert answer.status_code == 202, answer.text


def test_a_worker_never_reads_a_hub_id_from_its_own_working_directory(
    hub_api: Api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The API cannot see the worker's disk: a hub id it accepted was read by the worker relative to the
    worker's working directory, and the error listed the file's columns. Now the worker refuses it before it
    reads anything, in the words of every refused path."""
    body = hub_api.spec(dataset={"path": "outside/creds.jsonl"})
    assert hub_api.client.post("/v1/studies", json=body, headers=hub_api.headers("alice")).status_code == 202
    with hub_api.db.transaction(write=False) as session:
        payload = session.scalars(select(Job.payload)).one()
    worker_cwd = tmp_path / "worker-cwd"
    write_secret_file(worker_cwd)
    monkeypatch.chdir(worker_cwd)
    with pytest.raises(PermanentJobError) as refused:
        get_job_function("study")(payload, JobControl())
    message = str(refused.value)
    assert "dataset.path: not a usable dataset" in message
    assert not any(secret in message for pair in SECRET_COLUMNS.items() for secret in pair)


def test_every_refused_path_gets_the_same_answer(api: Api) -> None:
    """ "Resolves outside the configured roots" against "not found" told a submitter what exists on the
    server's disk. Now a file outside the roots, a missing one, `..`, a link out of a root and a name the
    file system cannot hold all get one answer (only the echoed value differs)."""
    outside = api.root / "outside.jsonl"
    outside.write_text('{"instruction": "q", "output": "a"}\n')
    (api.settings.dataset_roots[0] / "escape.jsonl").symlink_to(outside)
    refused = [str(outside), str(api.root / "missing.jsonl"), "../outside.jsonl", "escape.jsonl", "d" * 5000]
    answers = []
    for value in refused:
        body = api.spec(dataset={"path": value})
        answer = problem(
            api.client.post("/v1/studies", json=body, headers=api.headers("alice")), 422, "dataset.path"
        )
        answers.append(
            (answer["detail"].replace(repr(value), "VALUE"), [e["message"] for e in answer["errors"]])
        )
    assert all(answer == answers[0] for answer in answers), answers
    assert str(api.root) not in json.dumps(answers)  # nor where the roots are


# Ids --------------------------------------------------------------------------------------------------


def test_ids_below_the_first_row_are_problems_naming_the_id(api: Api) -> None:
    """`GET /v1/studies/-9223372036854775809` was a 500: ids had an upper bound only."""
    past_int64 = -(2**63) - 1
    admin, alice = api.headers("admin"), api.headers("alice")
    for bad in (past_int64, -1, 0):
        problem(api.client.get(f"/v1/studies/{bad}", headers=alice), 422, "study_id")
        problem(api.client.get(f"/v1/studies/{bad}/runs", headers=alice), 422, "study_id")
        problem(api.client.post(f"/v1/studies/{bad}/cancel", headers=alice), 422, "study_id")
        problem(api.client.get(f"/v1/runs/{bad}", headers=alice), 422, "run_id")
        problem(api.client.delete(f"/v1/tokens/{bad}", headers=admin), 422, "token_id")
        problem(
            api.client.get("/v1/recommendations", params={"model": "m", "study_id": bad}, headers=alice),
            422,
            "study_id",
        )
        outcome = {
            "model": "m",
            "rank": 8,
            "alpha": 8,
            "batch_size": 4,
            "learning_rate": 1e-3,
            "study_id": bad,
        }
        problem(
            api.client.post("/v1/outcomes", json={**outcome, "final_eval_loss": 1.0}, headers=alice),
            422,
            "study_id",
        )
        problem(api.client.post("/v1/check", json=outcome, headers=alice), 422, "study_id")
    dashboard = api.client.get(f"/dashboard/studies/{past_int64}", headers=alice)
    assert dashboard.status_code == 422


# Metrics ------------------------------------------------------------------------------------------------


def test_made_up_http_methods_fold_into_one_metric_label(api: Api) -> None:
    """3,000 requests with invented methods made 6,000 series. Labels now come from a fixed set."""
    for number in range(200):
        api.client.request(f"BREW{number}", "/v1/studies", headers=api.headers("alice"))
        api.client.request(f"BREW{number}", f"/made-up/{number}")
    text = api.client.get("/metrics").text
    assert "BREW" not in text and "made-up" not in text
    series = [line for line in text.splitlines() if line.startswith("advisor_http_requests_total{")]
    assert 'method="other"' in text and len(series) <= 4, series


# Tokens -------------------------------------------------------------------------------------------------


def test_a_cached_token_is_refused_under_any_scheme_but_bearer(api: Api) -> None:
    """Once cached, a token was accepted under any scheme (`Basic <token>`): only the part after the space
    was looked up. The scheme is checked on every request."""
    header = api.headers("alice")["Authorization"]
    secret = header.removeprefix("Bearer ")
    assert api.client.get("/v1/studies", headers={"Authorization": header}).status_code == 200  # now cached
    for wrong in (f"Basic {secret}", f"Token {secret}", f"Bearerx {secret}", secret):
        problem(api.client.get("/v1/studies", headers={"Authorization": wrong}), 401)
    assert api.client.get("/v1/studies", headers={"Authorization": f"bearer {secret}"}).status_code == 200


def test_admins_list_tokens_and_a_revoked_token_stops_working_at_once(api: Api) -> None:
    """Tokens could be neither listed nor revoked. GET /v1/tokens lists them (never a hash or a token);
    DELETE /v1/tokens/{id} revokes one, which is refused on its very next request, cache or not."""
    admin, alice = api.headers("admin"), api.headers("alice")
    listed = api.client.get("/v1/tokens", headers=admin)
    assert listed.status_code == 200
    assert [(t["name"], t["scopes"], t["revoked_at"]) for t in listed.json()] == [
        ("alice", ["read", "submit"], None),
        ("mallory", ["read", "submit"], None),
        ("admin", ["admin"], None),
    ]
    assert all(token["prefix"].startswith("lra_") for token in listed.json())
    assert alice["Authorization"].removeprefix("Bearer ") not in listed.text and "hash" not in listed.text
    problem(api.client.get("/v1/tokens", headers=alice), 403)
    problem(api.client.delete(f"/v1/tokens/{api.tokens['mallory'][0]}", headers=alice), 403)

    assert api.client.get("/v1/studies", headers=alice).status_code == 200  # cached from here on
    revoked = api.client.delete(f"/v1/tokens/{api.tokens['alice'][0]}", headers=admin)
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    problem(api.client.get("/v1/studies", headers=alice), 401)
    again = api.client.delete(f"/v1/tokens/{api.tokens['alice'][0]}", headers=admin)
    assert again.json()["revoked_at"] == revoked.json()["revoked_at"]  # revoking twice changes nothing
    problem(api.client.delete("/v1/tokens/999999", headers=admin), 404)


def test_the_cli_lists_and_revokes_tokens_and_a_running_server_obeys(
    api: Api, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`advisor token list` and `advisor token revoke ID`: the server, another process, drops the revoked
    token from its cache when it next looks for revocations (every REVOCATION_CHECK_SECONDS; 0 here)."""
    monkeypatch.setattr(security, "REVOCATION_CHECK_SECONDS", 0.0)
    mallory_id, mallory = api.tokens["mallory"]
    assert api.client.get("/v1/studies", headers=mallory).status_code == 200  # cached
    assert advisor_cli(["token", "list", "--database-url", api.url]) == 0
    listing = capsys.readouterr().out
    assert "mallory" in listing and "alice" in listing and mallory["Authorization"][7:] not in listing
    assert advisor_cli(["token", "revoke", str(mallory_id), "--database-url", api.url]) == 0
    assert "revoked" in capsys.readouterr().err
    problem(api.client.get("/v1/studies", headers=mallory), 401)
    assert api.client.get("/v1/studies", headers=api.headers("alice")).status_code == 200
    assert advisor_cli(["token", "revoke", "999999", "--database-url", api.url]) == 2
    with pytest.raises(SystemExit):  # argparse: an id no row can have is a usage error, not a traceback
        advisor_cli(["token", "revoke", str(-(2**63) - 1), "--database-url", api.url])


# A real server --------------------------------------------------------------------------------------------


@dataclass
class RealServer:
    base_url: str
    headers: dict[str, str]
    secret: str


@pytest.fixture(scope="module")
def real_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealServer]:
    """uvicorn on 127.0.0.1 in a thread (a free port), with access logging on and logging left to pytest."""
    root = tmp_path_factory.mktemp("real-server")
    url = default_sqlite_url(root / "db")
    db = testing.migrated(url)
    _, secret = create_token(db, name="reader", scopes=["read", "submit"])
    settings = testing.make_settings(root, database_url=url, max_body_bytes=4096)
    config = uvicorn.Config(
        create_app(settings, db=db, start_workers=False), log_config=None, access_log=True, lifespan="on"
    )
    server = uvicorn.Server(config)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started
    yield RealServer(
        f"http://127.0.0.1:{listener.getsockname()[1]}", {"Authorization": f"Bearer {secret}"}, secret
    )
    server.should_exit = True
    thread.join(timeout=10)
    db.dispose()


def test_token_query_values_are_redacted_in_the_access_log(
    real_server: RealServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The dashboard accepts `?token=` (a link cannot carry a header); uvicorn wrote it in full to the
    access log. The log line keeps the request and says `token=[redacted]`."""
    caplog.set_level(logging.INFO, logger="uvicorn.access")
    answer = httpx.get(f"{real_server.base_url}/dashboard/?view=all&token={real_server.secret}")
    assert answer.status_code == 200
    lines = [record.getMessage() for record in caplog.records if record.name == "uvicorn.access"]
    assert any("/dashboard/?view=all&token=[redacted]" in line for line in lines), lines
    assert not any(real_server.secret in line for line in lines)


def test_a_chunked_body_over_the_limit_is_413(real_server: RealServer) -> None:
    """A body without Content-Length (chunked) over the limit was answered 400 ("error parsing the body"):
    the framework turned the middleware's stop into a parse error. It is 413, like a declared one."""

    def chunks() -> Iterator[bytes]:
        yield b'{"model": "tiny-llama", "notes": "'
        for _ in range(16):
            yield b"x" * 1024
        yield b'"}'

    headers = {**real_server.headers, "content-type": "application/json"}
    answer = httpx.post(f"{real_server.base_url}/v1/studies", content=chunks(), headers=headers)
    assert "content-length" not in answer.request.headers
    problem(answer, 413)
    small = httpx.post(f"{real_server.base_url}/v1/studies", content=iter([b"[1]"]), headers=headers)
    problem(small, 422)  # under the limit, a chunked body is read and validated as before


# Readiness ------------------------------------------------------------------------------------------


def test_a_down_database_is_reported_without_its_host_or_port(tmp_path: Path) -> None:
    """/readyz (public) once said `connection to server at "127.0.0.1", port …`. Now: down, and no more."""
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"postgresql+psycopg://advisor:pw@127.0.0.1:{port}/advisor"
    settings = testing.make_settings(tmp_path, database_url=url, auth_disabled=True)
    client = TestClient(create_app(settings, db=Database(url), start_workers=False))  # no lifespan: it checks
    ready = problem(client.get("/readyz"), 503)
    assert ready["checks"]["database"] == {"ok": False, "detail": "unreachable"}
    listing = client.get("/v1/studies")
    problem(listing, 503)
    for answer in (ready, listing.json()):
        assert str(port) not in json.dumps(answer) and "127.0.0.1" not in json.dumps(answer)


# Cancel ---------------------------------------------------------------------------------------------------


def test_only_the_studys_owner_or_an_admin_may_cancel_it(api: Api) -> None:
    """Any submit token could cancel any study. Now another submitter gets 403 and the study runs on."""
    studies = [
        api.client.post(
            "/v1/studies", json=api.spec(training={"seed": seed}), headers=api.headers("alice")
        ).json()
        for seed in (1, 2)
    ]
    problem(api.client.post(f"{studies[0]['url']}/cancel", headers=api.headers("mallory")), 403)
    assert api.client.get(studies[0]["url"], headers=api.headers("alice")).json()["state"] == "queued"
    assert api.client.post(f"{studies[0]['url']}/cancel", headers=api.headers("alice")).status_code == 202
    assert api.client.post(f"{studies[1]['url']}/cancel", headers=api.headers("admin")).status_code == 202
    problem(api.client.post("/v1/studies/999999/cancel", headers=api.headers("mallory")), 404)
