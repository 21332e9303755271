"""The job queue, kept in the database: leases, heartbeats, attempt numbers, retries, cancellation.

Execution is at-least-once (a worker killed mid-run leaves a lease that expires, and the job is leased
again with attempt + 1); results are exactly-once, because every worker write is a conditional UPDATE on
(job, attempt, running, owner) in the same transaction as the results: a stale attempt changes nothing.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from advisor.jobs.limits import QuotaExceeded, Quotas
from advisor.specs import StudySpec
from advisor.storage import repository as repo
from advisor.storage.db import Database
from advisor.storage.errors import Conflict, StaleAttempt
from advisor.storage.models import FINISHED_JOB_STATES, Job, JobState, Study, StudyState, utcnow

CLAIM_BATCH = 8  # candidates looked at per claim; others may be taken by competing workers meanwhile
SUBMIT_RETRIES = 3  # concurrent first inserts of the same model or idempotency key: retry reads the winner
QUOTA_WINDOW = dt.timedelta(days=1)  # the daily quota counts the studies created in the last 24 h
# A full queue or active-study quota frees as studies finish; at the default budget one takes 15 minutes, so
# a client polling once a minute neither waits long nor floods the server.
QUOTA_RETRY_SECONDS = 60
# PostgreSQL: submits take this transaction-scoped advisory lock before counting, so concurrent requests
# cannot all count the same last free slot (SQLite's write transactions are serial already).
SUBMIT_LOCK_KEY = 0x6C6F7261  # "lora"


@dataclasses.dataclass(frozen=True)
class Lease:
    job_id: int
    study_id: int
    attempt: int
    worker_id: str
    function: str
    payload: dict[str, Any]
    lease_seconds: float


@dataclasses.dataclass(frozen=True)
class Backoff:
    """Delay before retry n (1-based): base · 2^(n-1), capped."""

    base_seconds: float = 5.0
    cap_seconds: float = 300.0

    def delay(self, attempt: int) -> float:
        return min(self.base_seconds * 2 ** max(attempt - 1, 0), self.cap_seconds)


@dataclasses.dataclass
class JobResult:
    runs: list[Any]  # advisor.records.RunRecord
    recommendation: dict[str, Any] | None
    recommendation_available: bool
    batch_size: int | None = None
    learning_rate: float | None = None
    dataset_examples: int | None = None
    probes: list[dict[str, Any]] = dataclasses.field(default_factory=list)


# submit and cancel (API side) ----------------------------------------------------------------------


def submit_study(
    db: Database,
    *,
    spec: StudySpec,
    function: str,
    max_attempts: int,
    token_id: int | None,
    dataset_fingerprint: str | None,
    idempotency: repo.IdempotencyClaim | None,
    options: dict[str, Any] | None = None,
    mapped_from: dict[str, Any] | None = None,
    quotas: Quotas | None = None,
) -> tuple[int, bool]:
    """(study id, created?). With an idempotency key, concurrent duplicates return the first study (a replay
    is never refused by a quota). With `quotas`, QuotaExceeded when a new study would break one."""
    for attempt in range(SUBMIT_RETRIES):
        try:
            with db.transaction() as session:
                if idempotency is not None:
                    existing = repo.find_idempotent_study(session, claim=idempotency)
                    if existing is not None:
                        return existing.id, False
                if quotas is not None:
                    if db.backend == "postgresql":
                        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SUBMIT_LOCK_KEY})
                    check_quotas(session, token_id=token_id, quotas=quotas)
                study = repo.create_study(
                    session,
                    spec=spec,
                    function=function,
                    max_attempts=max_attempts,
                    token_id=token_id,
                    dataset_fingerprint=dataset_fingerprint,
                    idempotency=idempotency,
                    options=options,
                    mapped_from=mapped_from,
                )
                return study.id, True
        except Conflict as exc:
            # Another request inserted the same key (or model) first; the next pass sees its row.
            if exc.constraint is None or attempt == SUBMIT_RETRIES - 1 or isinstance(exc, StaleAttempt):
                raise
    raise AssertionError("unreachable")


def check_quotas(session: Session, *, token_id: int | None, quotas: Quotas) -> None:
    """QuotaExceeded when this token already has its limit of studies queued or running, or created in the
    last 24 h, or when the queue holds its limit of jobs; else None."""
    active = repo.count_active_studies(session, token_id=token_id)
    if active >= quotas.max_active_per_token:
        raise QuotaExceeded(
            "max_active_studies_per_token",
            quotas.max_active_per_token,
            f"this token has {active} studies queued or running",
            retry_after_seconds=QUOTA_RETRY_SECONDS,
        )
    now = utcnow()
    created = repo.count_studies_since(session, token_id=token_id, since=now - QUOTA_WINDOW)
    if created >= quotas.max_daily_per_token:
        raise QuotaExceeded(
            "max_daily_studies_per_token",
            quotas.max_daily_per_token,
            f"this token created {created} studies in the last 24 hours",
            retry_after_seconds=_seconds_until_daily_slot(session, token_id, quotas, created, now),
        )
    queued = repo.count_queued_jobs(session)
    if queued >= quotas.max_queued_jobs:
        raise QuotaExceeded(
            "max_queued_jobs",
            quotas.max_queued_jobs,
            f"the queue holds {queued} jobs of all tokens together",
            retry_after_seconds=QUOTA_RETRY_SECONDS,
        )


def _seconds_until_daily_slot(
    session: Session, token_id: int | None, quotas: Quotas, created: int, now: dt.datetime
) -> int:
    """Seconds until enough of this token's studies leave the 24 h window for one more to fit."""
    since = now - QUOTA_WINDOW
    position = created - quotas.max_daily_per_token  # 0: the oldest must age out; more if the limit fell
    freed_by = repo.nth_study_created_since(session, token_id=token_id, since=since, position=position)
    if freed_by is None:
        return QUOTA_RETRY_SECONDS
    return int((freed_by + QUOTA_WINDOW - now).total_seconds()) + 1


def request_cancel(db: Database, *, study_id: int) -> str:
    """Queued jobs end at once; a running job is flagged and its worker stops at its next heartbeat."""
    with db.transaction() as session:
        study = repo.get_study(session, study_id=study_id)
        job = repo.get_job_for_study(session, study_id=study_id)
        if job.state in FINISHED_JOB_STATES:
            raise Conflict(f"study {study_id} already finished ({study.state}); nothing to cancel")
        if job.state == JobState.QUEUED:
            _finish(
                session,
                job=job,
                study=study,
                job_state=JobState.CANCELED,
                study_state=StudyState.CANCELED,
                error="canceled before it started",
            )
        else:
            job.cancel_requested = True
            study.message = "cancel requested; stopping at the worker's next heartbeat"
        return str(study.state)


# worker side ---------------------------------------------------------------------------------------


def claim(db: Database, *, worker_id: str, lease_seconds: float, take_expired: bool = True) -> Lease | None:
    """Lease the oldest available job: queued and due, or running with an expired lease (its worker died).
    `take_expired=False` leaves expired leases alone: right after a database outage every lease has
    expired, and their workers, alive, need a moment to renew them (see `Worker`)."""
    now = utcnow()
    with db.transaction() as session:
        due = (Job.state == JobState.QUEUED) & (Job.available_at <= now)
        expired = (Job.state == JobState.RUNNING) & (Job.lease_expires_at < now)
        query = (
            select(Job)
            .where(due | expired if take_expired else due)
            .order_by(Job.available_at, Job.id)
            .limit(CLAIM_BATCH)
        )
        if db.backend == "postgresql":
            query = query.with_for_update(skip_locked=True)  # competing workers skip rows being claimed
        for job in session.scalars(query).all():
            lease = try_lease(session, job=job, worker_id=worker_id, lease_seconds=lease_seconds, now=now)
            if lease is not None:
                return lease
    return None


def try_lease(
    session: Session, *, job: Job, worker_id: str, lease_seconds: float, now: dt.datetime
) -> Lease | None:
    study = repo.get_study(session, study_id=job.study_id)
    if job.cancel_requested:
        _finish(
            session,
            job=job,
            study=study,
            job_state=JobState.CANCELED,
            study_state=StudyState.CANCELED,
            error="canceled while its worker was gone",
        )
        return None
    if job.state == JobState.RUNNING and job.attempt >= job.max_attempts:
        _finish(
            session,
            job=job,
            study=study,
            job_state=JobState.FAILED,
            study_state=StudyState.FAILED,
            error=f"lease expired on the last of {job.max_attempts} attempts (worker lost)",
        )
        return None
    # Conditional on the state we read: if another worker got there first, this matches no row.
    result = session.execute(
        update(Job)
        .where(Job.id == job.id, Job.attempt == job.attempt, Job.state == job.state)
        .values(
            state=JobState.RUNNING,
            attempt=job.attempt + 1,
            lease_owner=worker_id,
            lease_expires_at=now + dt.timedelta(seconds=lease_seconds),
            heartbeat_at=now,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]  # CursorResult of an UPDATE has rowcount
        return None
    study.state = StudyState.RUNNING
    study.message = f"attempt {job.attempt + 1} of {job.max_attempts} on {worker_id}"
    return Lease(
        job_id=job.id,
        study_id=job.study_id,
        attempt=job.attempt + 1,
        worker_id=worker_id,
        function=job.function,
        payload=dict(job.payload),
        lease_seconds=lease_seconds,
    )


def _guard(session: Session, *, lease: Lease, values: dict[str, Any]) -> None:
    """Write `values` to the job only if this lease is still the current attempt; else StaleAttempt."""
    result = session.execute(
        update(Job)
        .where(
            Job.id == lease.job_id,
            Job.attempt == lease.attempt,
            Job.state == JobState.RUNNING,
            Job.lease_owner == lease.worker_id,
        )
        .values(updated_at=utcnow(), **values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise StaleAttempt(f"job {lease.job_id} attempt {lease.attempt} is no longer current; write rejected")


def heartbeat(
    db: Database, *, lease: Lease, progress: float | None = None, message: str | None = None
) -> bool:
    """Extend the lease; True when a cancel was requested. Raises StaleAttempt when the lease was lost."""
    now = utcnow()
    with db.transaction() as session:
        _guard(
            session,
            lease=lease,
            values={"lease_expires_at": now + dt.timedelta(seconds=lease.lease_seconds), "heartbeat_at": now},
        )
        study = repo.get_study(session, study_id=lease.study_id)
        if progress is not None:
            study.progress = max(0.0, min(1.0, progress))
        if message is not None:
            study.message = message[:1000]
        job = session.get(Job, lease.job_id)
        return bool(job and job.cancel_requested)


def complete(db: Database, *, lease: Lease, result: JobResult) -> None:
    """Store the runs, probes and recommendation, and finish the study: all or nothing, once."""
    with db.transaction() as session:
        _guard(session, lease=lease, values={"state": JobState.SUCCEEDED, "lease_expires_at": None})
        study = repo.get_study(session, study_id=lease.study_id)
        repo.add_runs(session, study_id=study.id, attempt=lease.attempt, runs=result.runs)
        repo.add_probes(session, study_id=study.id, probes=result.probes)
        if result.recommendation is not None:
            repo.add_recommendation(
                session,
                study=study,
                model=repo.study_model_name(session, study=study),
                available=result.recommendation_available,
                batch_size=result.batch_size,
                learning_rate=result.learning_rate,
                dataset_examples=result.dataset_examples,
                payload=result.recommendation,
            )
        study.state, study.progress, study.finished_at = StudyState.SUCCEEDED, 1.0, utcnow()
        study.message = f"{len(result.runs)} proxy runs on attempt {lease.attempt}"


def fail(db: Database, *, lease: Lease, error: str, retryable: bool, backoff: Backoff) -> bool:
    """Record a failed attempt; True when the job was queued again (after a backoff delay)."""
    with db.transaction() as session:
        job = session.get(Job, lease.job_id)
        again = retryable and job is not None and lease.attempt < job.max_attempts
        if again:
            _guard(
                session,
                lease=lease,
                values={
                    "state": JobState.QUEUED,
                    "lease_owner": None,
                    "lease_expires_at": None,
                    "last_error": error,
                    "available_at": utcnow() + dt.timedelta(seconds=backoff.delay(lease.attempt)),
                },
            )
            study = repo.get_study(session, study_id=lease.study_id)
            study.state, study.message = (
                StudyState.QUEUED,
                f"attempt {lease.attempt} failed, retrying: {error[:300]}",
            )
        else:
            _guard(session, lease=lease, values={"state": JobState.FAILED, "last_error": error})
            study = repo.get_study(session, study_id=lease.study_id)
            study.state, study.error, study.finished_at = StudyState.FAILED, error, utcnow()
        return again


def mark_canceled(db: Database, *, lease: Lease, message: str = "canceled by request") -> None:
    with db.transaction() as session:
        _guard(session, lease=lease, values={"state": JobState.CANCELED, "lease_expires_at": None})
        study = repo.get_study(session, study_id=lease.study_id)
        study.state, study.finished_at, study.message = StudyState.CANCELED, utcnow(), message


def _finish(
    session: Session, *, job: Job, study: Study, job_state: JobState, study_state: StudyState, error: str
) -> None:
    job.state, job.lease_owner, job.lease_expires_at, job.last_error = job_state, None, None, error
    study.state, study.finished_at, study.message = study_state, utcnow(), error
    if study_state == StudyState.FAILED:
        study.error = error
