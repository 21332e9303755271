"""Tokens, for admins: list them, revoke one. `advisor token list|revoke` do the same from the CLI.

A revoked token stops working on this server at once (it leaves the auth cache here); other servers on the
same database notice within api.security.REVOCATION_CHECK_SECONDS.
"""

from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from api.deps import Admin, RowId, ServiceDep
from api.problems import AUTHENTICATED_PROBLEMS, problem_responses
from api.schemas import TokenOut
from api.security import list_tokens, revoke_token

router = APIRouter(prefix="/v1", tags=["tokens"], responses=AUTHENTICATED_PROBLEMS)


@router.get("/tokens", response_model=list[TokenOut])
async def get_tokens(_: Admin, service: ServiceDep) -> list[TokenOut]:
    return await run_in_threadpool(list_tokens, service.db)


@router.delete("/tokens/{token_id}", response_model=TokenOut, responses=problem_responses(404))
async def delete_token(token_id: RowId, _: Admin, service: ServiceDep) -> TokenOut:
    """Revokes the token (404 when there is none; revoking it again changes nothing and answers the same)."""
    info = await run_in_threadpool(revoke_token, service.db, token_id=token_id)
    service.auth.forget(token_id)
    return info
