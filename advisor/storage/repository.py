"""Queries and writes, as keyword-only functions over a Session opened by `Database.transaction()`.

None of these commit: the caller's transaction decides what is one unit of work.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from advisor.records import RunRecord
from advisor.specs import StudySpec
from advisor.storage.errors import Conflict, NotFound
from advisor.storage.jsonsafe import finite_or_none, json_safe
from advisor.storage.models import (
    ApiToken,
    DatasetRow,
    IdempotencyKey,
    Job,
    JobState,
    ModelRow,
    Outcome,
    Probe,
    ProxyRun,
    RecommendationRow,
    Study,
    StudyState,
    WorkerRow,
    utcnow,
)

# models, datasets ----------------------------------------------------------------------------------


def get_or_create_model(session: Session, *, name: str, revision: str | None) -> ModelRow:
    row = session.scalars(
        select(ModelRow).where(ModelRow.name == name, ModelRow.revision == (revision or ""))
    ).first()
    if row is None:
        row = ModelRow(name=name, revision=revision or "")
        session.add(row)
        session.flush()
    return row


def upsert_dataset(
    session: Session, *, fingerprint: str, path: str, fmt: str, rows: int, size: int
) -> DatasetRow:
    row = session.scalars(select(DatasetRow).where(DatasetRow.fingerprint == fingerprint)).first()
    if row is None:
        row = DatasetRow(fingerprint=fingerprint, path=path, format=fmt, rows=rows, bytes=size)
        session.add(row)
        session.flush()
    return row


def find_dataset_by_path(session: Session, *, path: str) -> DatasetRow | None:
    return session.scalars(select(DatasetRow).where(DatasetRow.path == path)).first()


# studies -------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class IdempotencyClaim:
    owner: str
    key: str
    request_hash: str


def find_idempotent_study(session: Session, *, claim: IdempotencyClaim) -> Study | None:
    """The study an earlier request with this key created; a different body under the same key conflicts."""
    row = session.scalars(
        select(IdempotencyKey).where(IdempotencyKey.owner == claim.owner, IdempotencyKey.key == claim.key)
    ).first()
    if row is None:
        return None
    if row.request_hash != claim.request_hash:
        raise Conflict(
            "Idempotency-Key was already used with a different request body; use a new key",
            constraint="uq_idempotency_owner_key",
        )
    return get_study(session, study_id=row.study_id)


def create_study(
    session: Session,
    *,
    spec: StudySpec,
    function: str,
    max_attempts: int,
    token_id: int | None,
    dataset_fingerprint: str | None,
    idempotency: IdempotencyClaim | None,
    options: dict[str, Any] | None = None,
    mapped_from: dict[str, Any] | None = None,
) -> Study:
    """The study, its queued job and its idempotency key, all in the caller's transaction."""
    model = get_or_create_model(session, name=spec.model, revision=spec.revision)
    spec_json = json_safe(spec.model_dump(mode="json"))
    study = Study(
        spec=spec_json,
        mapped_from=json_safe(mapped_from) if mapped_from is not None else None,
        model_id=model.id,
        method=spec.method,
        rank=spec.rank,
        state=StudyState.QUEUED,
        dataset_fingerprint=dataset_fingerprint,
        token_id=token_id,
        progress=0.0,
    )
    session.add(study)
    session.flush()
    session.add(
        Job(
            study_id=study.id,
            function=function,
            payload={**(options or {}), "spec": spec_json},
            state=JobState.QUEUED,
            attempt=0,
            max_attempts=max_attempts,
            available_at=utcnow(),
            cancel_requested=False,
        )
    )
    if idempotency is not None:
        session.add(
            IdempotencyKey(
                owner=idempotency.owner,
                key=idempotency.key,
                request_hash=idempotency.request_hash,
                study_id=study.id,
            )
        )
    session.flush()
    return study


def get_study(session: Session, *, study_id: int) -> Study:
    study = session.get(Study, study_id)
    if study is None:
        raise NotFound("study", study_id)
    return study


def list_studies(
    session: Session, *, state: str | None, model: str | None, method: str | None, limit: int, offset: int
) -> tuple[Sequence[Study], int]:
    query = select(Study)
    if state:
        query = query.where(Study.state == state)
    if method:
        query = query.where(Study.method == method)
    if model:
        query = query.join(ModelRow, ModelRow.id == Study.model_id).where(ModelRow.name == model)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(Study.id.desc()).limit(limit).offset(offset)).all()
    return rows, total


def get_job_for_study(session: Session, *, study_id: int) -> Job:
    job = session.scalars(select(Job).where(Job.study_id == study_id)).first()
    if job is None:
        raise NotFound("job of study", study_id)
    return job


def _of_token(token_id: int | None) -> Any:
    """Studies submitted with this token (None: with auth disabled, the anonymous principal)."""
    return Study.token_id.is_(None) if token_id is None else Study.token_id == token_id


def count_active_studies(session: Session, *, token_id: int | None) -> int:
    """Studies of this token that are queued or running (a retry waiting out its backoff is queued)."""
    active = Study.state.in_([StudyState.QUEUED, StudyState.RUNNING])
    query = select(func.count()).select_from(Study).where(active, _of_token(token_id))
    return session.scalar(query) or 0


def count_studies_since(session: Session, *, token_id: int | None, since: dt.datetime) -> int:
    """Studies this token created at or after `since`, whatever became of them."""
    query = select(func.count()).select_from(Study).where(_of_token(token_id), Study.created_at >= since)
    return session.scalar(query) or 0


def nth_study_created_since(
    session: Session, *, token_id: int | None, since: dt.datetime, position: int
) -> dt.datetime | None:
    """When this token's `position`-th study (0: the oldest) created at or after `since` was created."""
    query = select(Study.created_at).where(_of_token(token_id), Study.created_at >= since)
    return session.scalars(query.order_by(Study.created_at).offset(position).limit(1)).first()


def count_queued_jobs(session: Session) -> int:
    """Jobs waiting for a worker, every token's together."""
    return session.scalar(select(func.count()).select_from(Job).where(Job.state == JobState.QUEUED)) or 0


# runs, probes, recommendations --------------------------------------------------------------------


def add_runs(session: Session, *, study_id: int, attempt: int, runs: Sequence[RunRecord]) -> None:
    for index, record in enumerate(runs):
        session.add(
            ProxyRun(
                study_id=study_id,
                run_index=index,
                attempt=attempt,
                status=str(record.status),
                error=record.error,
                batch_size=record.config.batch_size,
                learning_rate=record.config.learning_rate,
                config=json_safe(record.config.model_dump(mode="json")),
                eval_loss=finite_or_none(record.eval_loss),
                best_eval_loss=finite_or_none(record.best_eval_loss),
                final_train_loss=finite_or_none(record.final_train_loss),
                steps=record.steps,
                examples_seen=record.examples_seen,
                tokens_seen=record.tokens_seen,
                seconds=record.seconds,
                metrics=json_safe(record.metrics),
                dataset_fingerprint=json_safe(record.dataset_fingerprint),
                meta=json_safe(
                    {
                        **record.meta,
                        "spec": record.spec,
                        "trainable_params": record.trainable_params,
                        "total_params": record.total_params,
                    }
                ),
            )
        )
    session.flush()


def add_probes(session: Session, *, study_id: int, probes: Sequence[dict[str, Any]]) -> None:
    for probe in probes:
        session.add(
            Probe(study_id=study_id, kind=str(probe.get("kind", "probe"))[:32], payload=json_safe(probe))
        )


def list_runs(session: Session, *, study_id: int) -> Sequence[ProxyRun]:
    get_study(session, study_id=study_id)
    return session.scalars(
        select(ProxyRun).where(ProxyRun.study_id == study_id).order_by(ProxyRun.run_index)
    ).all()


def list_probes(session: Session, *, study_id: int) -> Sequence[Probe]:
    return session.scalars(select(Probe).where(Probe.study_id == study_id).order_by(Probe.id)).all()


def available_recommendations(session: Session) -> Sequence[RecommendationRow]:
    """Every stored recommendation that answers (not a NoRecommendation), oldest first."""
    return session.scalars(
        select(RecommendationRow).where(RecommendationRow.available.is_(True)).order_by(RecommendationRow.id)
    ).all()


def get_run(session: Session, *, run_id: int) -> ProxyRun:
    run = session.get(ProxyRun, run_id)
    if run is None:
        raise NotFound("run", run_id)
    return run


def add_recommendation(
    session: Session,
    *,
    study: Study,
    model: str,
    available: bool,
    batch_size: int | None,
    learning_rate: float | None,
    dataset_examples: int | None,
    payload: dict[str, Any],
) -> RecommendationRow:
    spec = study.spec
    row = RecommendationRow(
        study_id=study.id,
        model=model,
        method=study.method,
        rank=study.rank,
        alpha=float(spec["alpha"]),
        dataset_fingerprint=study.dataset_fingerprint,
        dataset_examples=dataset_examples,
        available=available,
        batch_size=batch_size,
        learning_rate=finite_or_none(learning_rate),
        payload=json_safe(payload),
    )
    session.add(row)
    session.flush()
    return row


def get_recommendation_for_study(session: Session, *, study_id: int) -> RecommendationRow | None:
    return session.scalars(select(RecommendationRow).where(RecommendationRow.study_id == study_id)).first()


def candidate_recommendations(
    session: Session, *, model: str, method: str, rank: int, limit: int = 50
) -> Sequence[RecommendationRow]:
    """Stored recommendations for the same model, method and rank, newest first; the caller ranks them."""
    return session.scalars(
        select(RecommendationRow)
        .where(
            RecommendationRow.model == model,
            RecommendationRow.method == method,
            RecommendationRow.rank == rank,
            RecommendationRow.available.is_(True),
        )
        .order_by(RecommendationRow.id.desc())
        .limit(limit)
    ).all()


def recommendation_for_study(session: Session, *, study_id: int) -> RecommendationRow | None:
    """A study's stored answer when it has one (None while it runs or when it could not recommend)."""
    row = get_recommendation_for_study(session, study_id=study_id)
    return row if row is not None and row.available else None


def study_specs(session: Session, *, study_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    """The stored specs of these studies, by id (one query, for ranking their recommendations)."""
    if not study_ids:
        return {}
    rows = session.execute(select(Study.id, Study.spec).where(Study.id.in_(list(study_ids)))).all()
    return {study_id: spec for study_id, spec in rows}


def study_model_name(session: Session, *, study: Study) -> str:
    return study.model.name


# outcomes ------------------------------------------------------------------------------------------


def add_outcome(session: Session, *, values: dict[str, Any], token_id: int | None) -> Outcome:
    if values.get("study_id") is not None:
        get_study(session, study_id=int(values["study_id"]))
    row = Outcome(
        study_id=values.get("study_id"),
        model=values["model"],
        method=values["method"],
        rank=values["rank"],
        alpha=values["alpha"],
        dataset_fingerprint=values.get("dataset_fingerprint"),
        batch_size=values["batch_size"],
        learning_rate=values["learning_rate"],
        final_eval_loss=finite_or_none(values.get("final_eval_loss")),
        diverged=bool(values.get("diverged")),
        payload=json_safe(values),
        token_id=token_id,
    )
    session.add(row)
    session.flush()
    return row


def audit_outcome(session: Session, *, outcome_id: int, audit: dict[str, Any]) -> None:
    """Keep who reported an outcome and what it did to the answer, with the outcome itself."""
    row = session.get(Outcome, outcome_id)
    if row is None:
        raise NotFound("outcome", outcome_id)
    row.payload = {**(row.payload or {}), "audit": json_safe(audit)}


# tokens --------------------------------------------------------------------------------------------


def add_token(
    session: Session, *, name: str, prefix: str, token_hash: str, scopes: Sequence[str]
) -> ApiToken:
    row = ApiToken(name=name, prefix=prefix, token_hash=token_hash, scopes=",".join(sorted(set(scopes))))
    session.add(row)
    session.flush()
    return row


def find_token(session: Session, *, token_hash: str) -> ApiToken | None:
    return session.scalars(
        select(ApiToken).where(ApiToken.token_hash == token_hash, ApiToken.revoked_at.is_(None))
    ).first()


def list_tokens(session: Session) -> list[ApiToken]:
    return list(session.scalars(select(ApiToken).order_by(ApiToken.id)))


def revoke_token(session: Session, *, token_id: int) -> ApiToken:
    """Marks the token revoked (once: revoking it again keeps the first time); NotFound when there is none."""
    row = session.get(ApiToken, token_id)
    if row is None:
        raise NotFound("token", token_id)
    if row.revoked_at is None:
        row.revoked_at = utcnow()
    return row


def revoked_token_count(session: Session) -> int:
    """How many tokens were ever revoked: it only grows, so a change tells a cache that one was revoked."""
    return session.scalar(select(func.count()).where(ApiToken.revoked_at.is_not(None))) or 0


# workers and queue statistics ----------------------------------------------------------------------


def touch_worker(session: Session, *, worker_id: str, host: str, pid: int, executor: str) -> None:
    row = session.get(WorkerRow, worker_id)
    if row is None:
        session.add(WorkerRow(id=worker_id, host=host, pid=pid, executor=executor))
    else:
        row.last_seen = utcnow()


def remove_worker(session: Session, *, worker_id: str) -> None:
    row = session.get(WorkerRow, worker_id)
    if row is not None:
        session.delete(row)


def live_workers(session: Session, *, seen_within: dt.timedelta) -> int:
    cutoff = utcnow() - seen_within
    return (
        session.scalar(select(func.count()).select_from(WorkerRow).where(WorkerRow.last_seen >= cutoff)) or 0
    )


def job_counts(session: Session) -> dict[str, int]:
    rows = session.execute(select(Job.state, func.count()).group_by(Job.state)).all()
    return {str(state): int(count) for state, count in rows}
