"""POST /check: the CI hook asks whether a planned fine-tune's batch size and LR look right."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from api.deps import Reader, ServiceDep
from api.routes.recommendations import lookup
from api.schemas import CheckIn, CheckOut

router = APIRouter(prefix="/v1", tags=["check"])
LR_TOLERANCE = 2.0  # within 2× of the recommended LR passes; the loss basin is that wide on a log scale
BATCH_TOLERANCE = 4.0


@router.post("/check", response_model=CheckOut)
async def check(body: CheckIn, _: Reader, service: ServiceDep) -> CheckOut:
    key = (
        body.model,
        body.method.lower(),
        body.rank,
        body.alpha,
        body.dataset_fingerprint,
        body.dataset_size,
    )
    answer = await run_in_threadpool(lookup, service, key)
    if answer["status"] != "ready" or not answer.get("learning_rate"):
        return CheckOut(
            verdict="unknown", messages=[answer.get("detail", "no recommendation yet")], recommendation=answer
        )
    messages = []
    lr_ratio = body.learning_rate / answer["learning_rate"]
    if not 1 / LR_TOLERANCE <= lr_ratio <= LR_TOLERANCE:
        messages.append(
            f"learning_rate {body.learning_rate:g} is {lr_ratio:.2g}× the recommended "
            f"{answer['learning_rate']:.3g}"
        )
    batch = answer.get("batch_size")
    if batch and not 1 / BATCH_TOLERANCE <= body.batch_size / batch <= BATCH_TOLERANCE:
        messages.append(f"batch_size {body.batch_size} is far from the recommended {batch}")
    return CheckOut(
        verdict="warn" if messages else "ok",
        messages=messages or ["within the recommended range"],
        recommendation=answer,
    )
