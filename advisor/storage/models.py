"""The database schema as SQLAlchemy 2 typed models. Alembic migrations in `migrations/` must match it
(tests/test_migrations.py compares the two, so a column added here without a migration fails CI).

Times are stored as UTC; JSON columns hold the pydantic dumps of specs, run records and recommendations,
with non-finite floats encoded as strings ("inf", "nan") because PostgreSQL's JSON rejects them.
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from advisor.specs import MAX_NAME_CHARS, MAX_REVISION_CHARS


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Aware UTC datetimes in Python on every backend (SQLite has no time zones and returns naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; use advisor.storage.models.utcnow()")
        value = value.astimezone(dt.UTC)
        # SQLite compares datetimes as strings: one fixed naive UTC format keeps the order right.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


JSONType = JSON().with_variant(JSONB(), "postgresql")


class StudyState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


class JobState(enum.StrEnum):
    QUEUED = "queued"  # waiting for `available_at` (retries back off by pushing it later)
    RUNNING = "running"  # leased by `lease_owner` until `lease_expires_at`; an expired lease is reclaimed
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


FINISHED_JOB_STATES = (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELED)
# The largest id a row can have: Integer primary keys are int4 on PostgreSQL. A request naming a larger one
# names no row, and PostgreSQL refuses to compare it (a 500) unless the API refuses it first (a 422).
MAX_ROW_ID = 2**31 - 1


class Base(DeclarativeBase):
    pass


class ModelRow(Base):
    __tablename__ = "models"
    __table_args__ = (UniqueConstraint("name", "revision", name="uq_models_name_revision"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(MAX_NAME_CHARS))
    revision: Mapped[str] = mapped_column(
        String(MAX_REVISION_CHARS), default=""
    )  # "" rather than NULL so the unique key holds
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class DatasetRow(Base):
    __tablename__ = "datasets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 of the bytes
    path: Mapped[str] = mapped_column(Text)
    format: Mapped[str] = mapped_column(String(16))
    rows: Mapped[int] = mapped_column(Integer)
    bytes: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    prefix: Mapped[str] = mapped_column(String(16))  # shown in listings so a user can tell tokens apart
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[str] = mapped_column(String(128))  # comma-separated: read,submit,admin
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Study(Base):
    __tablename__ = "studies"
    __table_args__ = (
        Index("ix_studies_state_created", "state", "created_at"),
        # The per-token quotas count a token's active studies and its studies of the last day at every submit.
        Index("ix_studies_token_created", "token_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    state: Mapped[str] = mapped_column(String(16), default=StudyState.QUEUED)
    spec: Mapped[dict[str, Any]] = mapped_column(JSONType)
    # The training config the spec was mapped from (advisor.training_configs.MappedConfig.report), or None
    # for a spec written as one: what was carried over, and the batch layout the answer's write-back needs.
    mapped_from: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    method: Mapped[str] = mapped_column(String(32))
    rank: Mapped[int] = mapped_column(Integer)
    dataset_fingerprint: Mapped[str | None] = mapped_column(String(64), nullable=True)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    message: Mapped[str | None] = mapped_column(Text, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    token_id: Mapped[int | None] = mapped_column(ForeignKey("api_tokens.id"), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)

    model: Mapped[ModelRow] = relationship(lazy="joined")  # every study view shows the model's name


class Job(Base):
    """One unit of queued work (today: one study). `attempt` grows on every lease, and every write a
    worker makes names the attempt it holds: a worker whose lease expired cannot overwrite its successor."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_state_available", "state", "available_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), unique=True)
    function: Mapped[str] = mapped_column(String(64))  # a name in advisor.jobs.functions.JOB_FUNCTIONS
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType)
    state: Mapped[str] = mapped_column(String(16), default=JobState.QUEUED)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    available_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    lease_owner: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class ProxyRun(Base):
    __tablename__ = "proxy_runs"
    # One result per (study, run index): the database itself enforces exactly-once results.
    __table_args__ = (UniqueConstraint("study_id", "run_index", name="uq_proxy_runs_study_index"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    run_index: Mapped[int] = mapped_column(Integer)
    attempt: Mapped[int] = mapped_column(Integer)  # the job attempt that produced it
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    batch_size: Mapped[int] = mapped_column(Integer)
    learning_rate: Mapped[float] = mapped_column(Float)
    config: Mapped[dict[str, Any]] = mapped_column(JSONType)
    eval_loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    best_eval_loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    final_train_loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    steps: Mapped[int] = mapped_column(Integer, default=0)
    examples_seen: Mapped[int] = mapped_column(Integer, default=0)
    tokens_seen: Mapped[int] = mapped_column(Integer, default=0)
    seconds: Mapped[float] = mapped_column(Float, default=0.0)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONType)  # curves: steps, evals, oom_events
    dataset_fingerprint: Mapped[dict[str, Any]] = mapped_column(JSONType)
    meta: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Probe(Base):
    __tablename__ = "probes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32))  # e.g. hessian_top_eigenvalue, gradient_noise_scale
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class RecommendationRow(Base):
    __tablename__ = "recommendations"
    __table_args__ = (Index("ix_recommendations_context", "model", "method", "rank"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int | None] = mapped_column(ForeignKey("studies.id"), unique=True, nullable=True)
    model: Mapped[str] = mapped_column(String(MAX_NAME_CHARS))
    method: Mapped[str] = mapped_column(String(32))
    rank: Mapped[int] = mapped_column(Integer)
    alpha: Mapped[float] = mapped_column(Float)
    dataset_fingerprint: Mapped[str | None] = mapped_column(String(64), nullable=True)
    dataset_examples: Mapped[int | None] = mapped_column(Integer, nullable=True)
    available: Mapped[bool] = mapped_column(Boolean)  # False: the study ran but could not recommend
    batch_size: Mapped[int | None] = mapped_column(Integer, nullable=True)
    learning_rate: Mapped[float | None] = mapped_column(Float, nullable=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Outcome(Base):
    """A user's full fine-tune result, reported back so recommendations can be calibrated."""

    __tablename__ = "outcomes"
    __table_args__ = (Index("ix_outcomes_context", "model", "method", "rank"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int | None] = mapped_column(ForeignKey("studies.id"), nullable=True)
    model: Mapped[str] = mapped_column(String(MAX_NAME_CHARS))
    method: Mapped[str] = mapped_column(String(32))
    rank: Mapped[int] = mapped_column(Integer)
    alpha: Mapped[float] = mapped_column(Float)
    dataset_fingerprint: Mapped[str | None] = mapped_column(String(64), nullable=True)
    batch_size: Mapped[int] = mapped_column(Integer)
    learning_rate: Mapped[float] = mapped_column(Float)
    final_eval_loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    diverged: Mapped[bool] = mapped_column(Boolean, default=False)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType)
    token_id: Mapped[int | None] = mapped_column(ForeignKey("api_tokens.id"), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class IdempotencyKey(Base):
    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("owner", "key", name="uq_idempotency_owner_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner: Mapped[str] = mapped_column(
        String(64)
    )  # token id, or "anonymous" with auth off: keys are per caller
    key: Mapped[str] = mapped_column(String(255))
    request_hash: Mapped[str] = mapped_column(String(64))  # the same key with a different body is a conflict
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class WorkerRow(Base):
    """Workers announce themselves here so /readyz can tell whether anyone is draining the queue."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    executor: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
