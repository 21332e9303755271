"""Liveness and readiness. Readiness: database reachable, schema current, its file sound (SQLite, checked
at most every INTEGRITY_CHECK_SECONDS), a worker polled recently.

/readyz is public (load balancers call it without a token), so a failing check says what is down, never
how: the driver's message names the database host and port. The details go to the server log.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from advisor.jobs.worker import WORKER_SEEN_WITHIN
from advisor.storage import repository as repo
from advisor.storage.errors import StorageError
from api.deps import Service, ServiceDep
from api.problems import PROBLEM_TYPE, problem_responses

router = APIRouter(tags=["health"])
log = logging.getLogger("advisor.api")


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses=problem_responses(503))  # 503: the body also says which check failed
async def readyz(service: ServiceDep) -> JSONResponse:
    checks = await run_in_threadpool(readiness, service)
    ready = all(check["ok"] for check in checks.values())
    body: dict[str, Any] = {"status": "ready" if ready else "not ready", "checks": checks}
    if ready:
        return JSONResponse(body)
    failed = ", ".join(name for name, check in checks.items() if not check["ok"])
    body |= {"type": "about:blank", "title": "not ready", "status": 503, "detail": f"failing: {failed}"}
    return JSONResponse(body, status_code=503, media_type=PROBLEM_TYPE)


def readiness(service: Service) -> dict[str, dict[str, Any]]:
    checks: dict[str, dict[str, Any]] = {}
    try:
        service.db.ping()
        checks["database"] = {"ok": True}
    except StorageError as exc:
        checks["database"] = _failed("database", "unreachable", exc)
        return checks
    try:
        service.db.check_revision()
        checks["schema"] = {"ok": True}
    except StorageError as exc:
        checks["schema"] = _failed("schema", "not this version's: run `advisor db upgrade`", exc)
        return checks
    checks["integrity"] = _integrity(service)
    if not checks["integrity"]["ok"]:
        return checks
    if service.settings.readyz_requires_workers:
        try:
            with service.db.transaction(write=False) as session:
                alive = repo.live_workers(session, seen_within=WORKER_SEEN_WITHIN)
            checks["workers"] = {"ok": alive > 0, "alive": alive}
        except StorageError as exc:
            checks["workers"] = _failed("workers", "cannot be counted: the database is unreachable", exc)
    return checks


# A damaged SQLite file once left /readyz saying "ready" while every study list failed. quick_check reads
# every page (milliseconds per MB), so readiness, polled every few seconds, runs it at most once a minute.
INTEGRITY_CHECK_SECONDS = 60.0
_integrity_cache: dict[str, tuple[float, str | None]] = {}


def _integrity(service: Service) -> dict[str, Any]:
    now = time.monotonic()
    checked = _integrity_cache.get(service.db.url)
    if checked is None or now - checked[0] > INTEGRITY_CHECK_SECONDS:
        try:
            checked = (now, service.db.integrity_problem())
        except StorageError as exc:
            return _failed("integrity", "cannot be checked: the database is unreachable", exc)
        _integrity_cache[service.db.url] = checked
    if checked[1] is None:
        return {"ok": True}
    log.error("readiness check integrity failed: %s", checked[1])
    return {"ok": False, "detail": "the database file is damaged; see the server log"}


def _failed(check: str, public_detail: str, error: StorageError) -> dict[str, Any]:
    log.warning("readiness check %s failed: %s", check, error)
    return {"ok": False, "detail": public_detail}
