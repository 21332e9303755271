"""Instant answers from stored knowledge, cached in memory for a few seconds (the hot path)."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool

from advisor.recipes import Recipe
from advisor.specs import MAX_COUNT, MAX_NAME_CHARS, MAX_RANK
from advisor.storage import knowledge
from advisor.storage.models import MAX_ROW_ID
from api.deps import Reader, Service, ServiceDep
from api.problems import AUTHENTICATED_PROBLEMS

router = APIRouter(prefix="/v1", tags=["recommendations"], responses=AUTHENTICATED_PROBLEMS)
CACHE_ENTRIES = 10_000  # distinct contexts kept; beyond that the cache starts over


@router.get(
    "/recommendations", summary="Batch size and LR for a context from finished studies, or 'none yet'"
)
async def get_recommendation(
    _: Reader,
    service: ServiceDep,
    model: Annotated[str, Query(min_length=1, max_length=MAX_NAME_CHARS)],
    method: Annotated[str, Query(max_length=32)] = "lora",
    rank: Annotated[int, Query(gt=0, le=MAX_RANK)] = 8,
    alpha: Annotated[float | None, Query(gt=0)] = None,
    dataset_fingerprint: Annotated[str | None, Query(max_length=64)] = None,
    dataset_size: Annotated[int | None, Query(gt=0, le=MAX_COUNT, description="training examples")] = None,
    study_id: Annotated[int | None, Query(gt=0, le=MAX_ROW_ID, description="this study's answer")] = None,
) -> dict[str, Any]:
    key = (model, method.lower(), rank, alpha, dataset_fingerprint, dataset_size)
    now = time.monotonic()
    cache_key = (*key, study_id)
    hit = service.recommendation_cache.get(cache_key)
    if hit is not None and hit[0] > now:
        return hit[1]
    answer = await run_in_threadpool(lookup, service, key, study_id=study_id)
    if len(service.recommendation_cache) >= CACHE_ENTRIES:
        service.recommendation_cache.clear()
    service.recommendation_cache[(*key, study_id)] = (
        now + service.settings.recommendation_cache_seconds,
        answer,
    )
    return answer


def lookup(
    service: Service, key: tuple[Any, ...], *, recipe: Recipe | None = None, study_id: int | None = None
) -> dict[str, Any]:
    """The stored answer for a context (model, method, rank, α, dataset fingerprint, dataset size) and,
    when given, a planned recipe; `study_id` pins one study's answer."""
    model, method, rank, alpha, fingerprint, size = key
    with service.db.transaction(write=False) as session:
        return knowledge.lookup(
            session,
            model=model,
            method=method,
            rank=rank,
            alpha=alpha,
            dataset_fingerprint=fingerprint,
            dataset_examples=size,
            recipe=recipe,
            study_id=study_id,
        )
