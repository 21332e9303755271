"""POST /outcomes: a full fine-tune's result, kept to calibrate later recommendations."""

from __future__ import annotations

from fastapi import APIRouter

from advisor.storage import repository as repo
from api.deps import ServiceDep, Submitter
from api.schemas import OutcomeIn, OutcomeOut

router = APIRouter(prefix="/v1", tags=["outcomes"])


@router.post("/outcomes", status_code=201, response_model=OutcomeOut)
def report_outcome(body: OutcomeIn, principal: Submitter, service: ServiceDep) -> OutcomeOut:
    with service.db.transaction() as session:
        row = repo.add_outcome(session, values=body.model_dump(), token_id=principal.token_id)
        return OutcomeOut(id=row.id, created_at=row.created_at)
