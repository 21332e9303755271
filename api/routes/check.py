"""POST /check: the CI hook asks whether a planned fine-tune's batch size and LR look right.

`batch_size` is the plan's effective batch (micro-batch × accumulation × devices). The verdict is
`advisor.check.decide`, the same function `advisor check --offline` uses.
"""

from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from advisor.check import decide
from api.deps import Reader, ServiceDep
from api.problems import AUTHENTICATED_PROBLEMS, BODY_PROBLEMS
from api.routes.recommendations import lookup
from api.schemas import CheckIn, CheckOut

router = APIRouter(prefix="/v1", tags=["check"], responses=AUTHENTICATED_PROBLEMS)
VERDICTS = {"pass": "ok", "fail": "warn", "indeterminate": "unknown"}  # the original `verdict` vocabulary


@router.post("/check", response_model=CheckOut, responses=BODY_PROBLEMS)
async def check(body: CheckIn, _: Reader, service: ServiceDep) -> CheckOut:
    key = (
        body.model,
        body.method.lower(),
        body.rank,
        body.alpha,
        body.dataset_fingerprint,
        body.dataset_size,
    )
    answer = await run_in_threadpool(lookup, service, key, recipe=body.recipe, study_id=body.study_id)
    decision = decide(
        answer, batch_size=body.batch_size, learning_rate=body.learning_rate, on_mismatch=body.on_mismatch
    )
    return CheckOut(
        verdict=VERDICTS[decision.outcome],
        messages=[f.message for f in decision.findings] or ["within the recommended range"],
        recommendation=answer,
        outcome=decision.outcome,
        effective_batch_size=decision.effective_batch_size,
        decision=decision,
    )
