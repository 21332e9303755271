"""POST /outcomes: a full fine-tune's result, kept to calibrate later recommendations.

Outcomes are evidence, not commands (one token once moved every user's answer to LR 1e99 with thirty
reports). So:
- only the study's owner, or an admin token, may report on a study;
- the LR must lie in the study's searched range widened by a decade either way, and the loss must be
  finite, positive and no higher than the study's base model scored on the held-out split before any
  training, within `BASE_LOSS_SLACK` (`OutcomeIn`'s bounds hold for reports that name no study);
- the knowledge layer gives each reporter one vote (`advisor.science.knowledge.reporter_votes`);
- each report is audited: who sent it, when, and the LR correction of its study's context before and after,
  stored with the outcome, returned, and logged on `advisor.audit`.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter

from advisor.science.knowledge import lr_correction
from advisor.storage import repository as repo
from advisor.storage.knowledge_store import DatabaseKnowledgeStore
from advisor.storage.models import RecommendationRow, Study
from api.deps import ServiceDep, Submitter
from api.problems import AUTHENTICATED_PROBLEMS, BODY_PROBLEMS, ApiProblem, problem_responses
from api.schemas import OutcomeIn, OutcomeOut
from api.security import Principal

router = APIRouter(prefix="/v1", tags=["outcomes"], responses=AUTHENTICATED_PROBLEMS)
audit_log = logging.getLogger("advisor.audit")
LR_REACH = 10.0  # an outcome's LR may lie this far outside the range its study searched
# A real run evaluates on its own eval split, not the study's held-out examples (at most 256 of them, a few
# % of sampling error): a reported loss may exceed the study's untrained loss by this share before it is
# refused. Above it the report is of another model or data, or a run that diverged (report those with
# diverged: true).
BASE_LOSS_SLACK = 0.10


@router.post(
    "/outcomes",
    status_code=201,
    response_model=OutcomeOut,
    responses={**BODY_PROBLEMS, **problem_responses(404)},  # 404: the study named is not there
)
def report_outcome(body: OutcomeIn, principal: Submitter, service: ServiceDep) -> OutcomeOut:
    store = DatabaseKnowledgeStore(service.db)
    context = None
    if body.study_id is not None:
        with service.db.transaction(write=False) as session:
            study = repo.get_study(session, study_id=body.study_id)  # 404 when there is none
            _check_reporter(study, principal)
            _check_plausible(study, body)
            _check_below_base_loss(study, body, repo.recommendation_for_study(session, study_id=study.id))
        context = store.study_context(body.study_id)
    before = lr_correction(store.outcomes(context)).factor if context is not None else None
    with service.db.transaction() as session:
        row = repo.add_outcome(session, values=body.model_dump(), token_id=principal.token_id)
        outcome_id, created_at = row.id, row.created_at
    audit: dict[str, Any] = {"reporter": principal.name, "token_id": principal.token_id}
    if context is not None:
        after = lr_correction(store.outcomes(context)).factor
        audit.update(lr_correction_before=before, lr_correction_after=after)
    with service.db.transaction() as session:
        repo.audit_outcome(session, outcome_id=outcome_id, audit=audit)
    audit_log.info("outcome %s on study %s: %s", outcome_id, body.study_id, audit)
    return OutcomeOut(id=outcome_id, created_at=created_at, audit=audit)


def _check_reporter(study: Study, principal: Principal) -> None:
    """The study's owner reports on it; anyone else needs the admin scope."""
    if principal.allows("admin") or (study.token_id is not None and study.token_id == principal.token_id):
        return
    raise ApiProblem(
        403,
        "forbidden",
        f"only the token that submitted study {study.id}, or an admin token, may report outcomes on it",
    )


def _check_plausible(study: Study, body: OutcomeIn) -> None:
    low, high = study.spec.get("lr_range") or (0.0, float("inf"))
    low, high = float(low) / LR_REACH, float(high) * LR_REACH
    if not low <= body.learning_rate <= high:
        message = (
            f"{body.learning_rate:g} is more than a decade outside the LR range study {study.id} searched "
            f"({low * LR_REACH:g} … {high / LR_REACH:g}); report runs of that study's model and data"
        )
        raise ApiProblem(
            422,
            "implausible outcome",
            f"learning_rate: {message}",
            errors=[{"field": "learning_rate", "message": message, "value": body.learning_rate}],
        )


def _check_below_base_loss(study: Study, body: OutcomeIn, answer: RecommendationRow | None) -> None:
    """A fine-tune that did not diverge ends below its untrained loss; the study measured that loss."""
    base = ((answer.payload or {}).get("evidence") or {}).get("base_eval_loss") if answer else None
    if body.final_eval_loss is None or body.diverged or not isinstance(base, int | float):
        return
    ceiling = float(base) * (1 + BASE_LOSS_SLACK)
    if body.final_eval_loss <= ceiling:
        return
    message = (
        f"{body.final_eval_loss:g} is above the loss study {study.id}'s model had before any training "
        f"({float(base):.4g}, +{BASE_LOSS_SLACK:.0%} for eval-split differences); a run that got worse than "
        "its start diverged: report it with diverged: true"
    )
    raise ApiProblem(
        422,
        "implausible outcome",
        f"final_eval_loss: {message}",
        errors=[{"field": "final_eval_loss", "message": message, "value": body.final_eval_loss}],
    )
