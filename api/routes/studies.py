"""Studies: submit (idempotent), list, show, cancel, and their proxy runs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Header, Query, Request, Response
from pydantic import ValidationError

from advisor.errors import SpecError
from advisor.jobs import queue
from advisor.jobs.limits import QuotaExceeded, check_study_cost
from advisor.specs import MAX_COUNT, StudySpec, parse_spec, spec_errors
from advisor.storage import repository as repo
from advisor.storage.models import RecommendationRow, Study, StudyState
from advisor.training_configs import ConfigError, map_config, write_back
from api.deps import Reader, RowId, Service, ServiceDep, Submitter
from api.paths import confine_spec
from api.problems import AUTHENTICATED_PROBLEMS, BODY_PROBLEMS, ApiProblem, problem_responses
from api.routes.runs import run_out
from api.schemas import ConfigStudyRequest, RunOut, StudyAccepted, StudyOut, StudyPage, inline_json_schema

router = APIRouter(prefix="/v1", tags=["studies"], responses=AUTHENTICATED_PROBLEMS)
StateFilter = Literal["queued", "running", "succeeded", "failed", "canceled"]


@router.post(
    "/studies",
    status_code=202,
    response_model=StudyAccepted,
    summary="Submit a study spec, or a training config to copy; replays with the same Idempotency-Key",
    responses={
        200: {"model": StudyAccepted, "description": "a replay: the same Idempotency-Key and body again"},
        **BODY_PROBLEMS,
        **problem_responses(409),
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "oneOf": [
                            inline_json_schema(StudySpec.model_json_schema()),
                            inline_json_schema(ConfigStudyRequest.model_json_schema()),
                        ]
                    }
                }
            },
        }
    },
)
def submit_study(
    body: Annotated[
        dict[str, Any],
        Body(description="a study spec (advisor.specs.StudySpec), or {config, format} (ConfigStudyRequest)"),
    ],
    principal: Submitter,
    service: ServiceDep,
    request: Request,
    response: Response,
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=255)] = None,
) -> StudyAccepted:
    settings = service.settings
    spec, mapped_from = _study_request(body)
    spec = confine_spec(
        spec,
        model_roots=settings.all_model_roots,
        dataset_roots=settings.all_dataset_roots,
        allow_hub=settings.allow_hub_ids,
    )
    check_study_cost(spec, settings.study_cost_limits)  # 422 naming the field and the limit, before queueing
    claim = (
        None
        if idempotency_key is None
        else repo.IdempotencyClaim(
            owner=principal.key,
            key=idempotency_key,
            # The study asked for, not the bytes: a config that differs only in keys the study does not read
            # (output_dir, logging) is the same request, so a rerun pipeline replays instead of conflicting.
            request_hash=hashlib.sha256(
                json.dumps(spec.model_dump(mode="json"), sort_keys=True).encode()
            ).hexdigest(),
        )
    )
    try:
        study_id, created = queue.submit_study(
            service.db,
            spec=spec,
            function=settings.job_function,
            max_attempts=settings.max_attempts,
            token_id=principal.token_id,
            dataset_fingerprint=_uploaded_fingerprint(spec.dataset.path, service),
            idempotency=claim,
            options=settings.job_options,
            mapped_from=mapped_from,
            quotas=settings.study_quotas,
        )
    except QuotaExceeded as exc:
        raise _quota_problem(exc) from None
    url = str(request.url_for("get_study", study_id=study_id))
    response.headers["Location"] = url
    if not created:
        response.status_code = 200  # a replay: the original answer, not a second acceptance
    return StudyAccepted(id=study_id, url=url, state="queued" if created else "existing", created=created)


def _study_request(body: dict[str, Any]) -> tuple[StudySpec, dict[str, Any] | None]:
    """The spec a request asks for, and, for a training config, its mapping report (`mapped_from`)."""
    if "config" not in body:
        return parse_spec(body), None
    try:
        request = ConfigStudyRequest.model_validate(body)
    except ValidationError as exc:
        first, *others = spec_errors(exc)
        first.others = others
        raise first from None
    try:
        mapped = map_config(request.config, path="config", format=request.format)
        if request.devices is not None:
            mapped.devices, mapped.devices_source = request.devices, "request"
        if request.dataset is not None:
            mapped.use_dataset(request.dataset.model_dump(mode="json"), source="request")
        return mapped.study_spec(**request.spec_overrides()), mapped.report()
    except ConfigError as exc:
        raise SpecError(f"config.{exc.key}", exc.message) from None


def _quota_problem(exc: QuotaExceeded) -> ApiProblem:
    """429 naming the quota (its setting, in `errors[0].field`, and its limit), with Retry-After."""
    setting = f"LORA_ADVISOR_{exc.quota.upper()}"
    return ApiProblem(
        429,
        f"quota exceeded: {exc.quota}",
        f"{exc.message}; the limit is {exc.limit} (the server's {setting}). "
        f"Retry after {exc.retry_after_seconds} s.",
        errors=[{"field": exc.quota, "message": exc.message, "value": exc.limit}],
        headers={"Retry-After": str(exc.retry_after_seconds)},
    )


def _uploaded_fingerprint(path: str, service: Service) -> str | None:
    # Uploaded datasets are stored as <sha256>.<ext> in the upload folder: the name is the fingerprint.
    file = Path(path)
    return file.stem if file.parent == service.settings.upload_dir.resolve() else None


@router.get("/studies", response_model=StudyPage)
def list_studies(
    _: Reader,
    service: ServiceDep,
    request: Request,
    state: StateFilter | None = None,
    model: str | None = None,
    method: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_COUNT)] = 0,
) -> StudyPage:
    with service.db.transaction(write=False) as session:
        rows, total = repo.list_studies(
            session, state=state, model=model, method=method, limit=limit, offset=offset
        )
        items = [study_out(row, request, None) for row in rows]
    return StudyPage(items=items, total=total, limit=limit, offset=offset)


@router.get(
    "/studies/{study_id}", response_model=StudyOut, name="get_study", responses=problem_responses(404)
)
def get_study(study_id: RowId, _: Reader, service: ServiceDep, request: Request) -> StudyOut:
    with service.db.transaction(write=False) as session:
        study = repo.get_study(session, study_id=study_id)
        recommendation = repo.get_recommendation_for_study(session, study_id=study_id)
        return study_out(study, request, recommendation)


@router.post(
    "/studies/{study_id}/cancel",
    status_code=202,
    response_model=StudyOut,
    responses=problem_responses(404, 409),  # 409: the study has already finished
)
def cancel_study(study_id: RowId, principal: Submitter, service: ServiceDep, request: Request) -> StudyOut:
    """Only the study's owner, or an admin token, may cancel it (404 first, for a study there is not)."""
    with service.db.transaction(write=False) as session:
        principal.require_owner(repo.get_study(session, study_id=study_id).token_id, f"study {study_id}")
    queue.request_cancel(service.db, study_id=study_id)
    return get_study(study_id, principal, service, request)


@router.get("/studies/{study_id}/runs", response_model=list[RunOut], responses=problem_responses(404))
def list_runs(study_id: RowId, _: Reader, service: ServiceDep) -> list[RunOut]:
    with service.db.transaction(write=False) as session:
        return [run_out(run, curves=False) for run in repo.list_runs(session, study_id=study_id)]


def study_out(study: Study, request: Request, recommendation: RecommendationRow | None) -> StudyOut:
    url = str(request.url_for("get_study", study_id=study.id))
    answer = None
    if recommendation is not None:
        answer = {
            "available": recommendation.available,
            "batch_size": recommendation.batch_size,
            "learning_rate": recommendation.learning_rate,
            "details": recommendation.payload,
        }
        batch, lr = recommendation.batch_size, recommendation.learning_rate
        if study.mapped_from and batch is not None and lr is not None:  # what to put into the user's config
            answer["write_back"] = write_back(study.mapped_from, batch, lr)
    links = {"self": url, "runs": f"{url}/runs"}
    if study.state in (StudyState.QUEUED, StudyState.RUNNING):
        links["cancel"] = f"{url}/cancel"
    return StudyOut(
        id=study.id,
        url=url,
        state=study.state,
        progress=study.progress,
        message=study.message,
        error=study.error,
        model=study.model.name,
        method=study.method,
        rank=study.rank,
        dataset_fingerprint=study.dataset_fingerprint,
        created_at=study.created_at,
        finished_at=study.finished_at,
        spec=study.spec,
        mapped_from=study.mapped_from,
        recommendation=answer,
        links=links,
    )
