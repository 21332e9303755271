"""Dependencies as `Annotated` aliases: the service state, and principals that hold a scope."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, Path, Request
from prometheus_client import CollectorRegistry
from starlette.concurrency import run_in_threadpool

from advisor.storage.db import Database
from advisor.storage.models import MAX_ROW_ID
from api.problems import ApiProblem
from api.security import Principal, RateLimiter, TokenAuth
from api.settings import Settings


@dataclasses.dataclass
class Service:
    settings: Settings
    db: Database
    auth: TokenAuth
    limiter: RateLimiter
    registry: CollectorRegistry
    recommendation_cache: dict[tuple[Any, ...], tuple[float, dict[str, Any]]] = dataclasses.field(
        default_factory=dict
    )
    worker_processes: list[Any] = dataclasses.field(default_factory=list)


async def get_service(request: Request) -> Service:
    # async, so FastAPI calls it on the event loop instead of hopping to a thread for an attribute read
    return request.app.state.service


ServiceDep = Annotated[Service, Depends(get_service)]
# A study's, run's or token's id in a path, bounded both ways: an id past either end of what a row can have
# (2**64, or -9223372036854775809) used to reach the database and fail there (a 500) instead of failing
# validation (a 422 naming the id). Row ids start at 1.
RowId = Annotated[int, Path(ge=1, le=MAX_ROW_ID)]


def _require(scope: str) -> Callable[[Request], Awaitable[Principal]]:
    async def dependency(request: Request) -> Principal:
        service: Service = request.app.state.service
        header = request.headers.get("authorization")
        # Cached tokens answer on the event loop; only a cache miss pays a thread hop and a query.
        principal = service.auth.cached(header)
        if principal is None:
            principal = await run_in_threadpool(service.auth.authenticate, header)
        if not principal.allows(scope):
            raise ApiProblem(
                403,
                "forbidden",
                f"this token lacks the {scope!r} scope (it has {', '.join(sorted(principal.scopes))})",
            )
        service.limiter.check(principal.key)
        return principal

    return dependency


Reader = Annotated[Principal, Depends(_require("read"))]
Submitter = Annotated[Principal, Depends(_require("submit"))]
Admin = Annotated[Principal, Depends(_require("admin"))]
