"""Liveness and readiness. Readiness: database reachable, schema current, a worker polled recently."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from advisor.jobs.worker import WORKER_SEEN_WITHIN
from advisor.storage import repository as repo
from advisor.storage.errors import StorageError
from api.deps import Service, ServiceDep
from api.problems import PROBLEM_TYPE

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
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
        checks["database"] = {"ok": False, "detail": str(exc)}
        return checks
    try:
        service.db.check_schema()
        checks["schema"] = {"ok": True}
    except StorageError as exc:
        checks["schema"] = {"ok": False, "detail": str(exc)}
        return checks
    if service.settings.readyz_requires_workers:
        try:
            with service.db.transaction(write=False) as session:
                alive = repo.live_workers(session, seen_within=WORKER_SEEN_WITHIN)
            checks["workers"] = {"ok": alive > 0, "alive": alive}
        except StorageError as exc:
            checks["workers"] = {"ok": False, "detail": str(exc)}
    return checks
