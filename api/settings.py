"""Service settings from environment variables `LORA_ADVISOR_*` (e.g. LORA_ADVISOR_DATABASE_URL)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from advisor.jobs.limits import CostLimits, Quotas
from advisor.storage.db import default_sqlite_url

LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _split_paths(value: Any) -> Any:
    if isinstance(value, str):
        return [part for part in value.split(":") if part]  # PATH-style, as shells already write lists
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LORA_ADVISOR_", extra="ignore")

    data_dir: Path = Field(default=Path("data"), description="SQLite file and uploaded datasets live here")
    database_url: str | None = Field(default=None, description="default: SQLite at DATA_DIR/advisor.db")
    host: str = "127.0.0.1"
    port: int = 8000

    # security
    auth_disabled: bool = Field(default=False, description="only honoured when bound to loopback")
    allow_hub_ids: bool = Field(default=False, description="accept hub ids (org/name) as models and datasets")
    model_roots: Annotated[list[Path], NoDecode] = Field(default_factory=list, description="colon-separated")
    dataset_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list, description="colon-separated"
    )
    max_body_bytes: int = 1 << 20  # JSON bodies: a study spec is a few kB
    max_upload_bytes: int = 64 << 20  # POST /datasets
    rate_limit_per_second: float = 20.0  # per token, sustained
    rate_limit_burst: int = 100
    token_cache_seconds: float = 10.0  # a revoked token may keep working this long

    # per-study cost, checked at POST /v1/studies before a study is queued (advisor.jobs.limits)
    max_study_proxy_seconds: float = Field(
        default=86_400.0, gt=0, description="a day of proxy compute; a study's default budget is 900 s"
    )
    max_study_proxy_examples: int = Field(
        default=10_000_000,
        gt=0,
        description="proxy training examples per study: ~55 h at the planner's first guess of 0.02 s each",
    )
    # quotas: 429 with Retry-After when full
    max_active_studies_per_token: int = Field(
        default=100, ge=1, description="queued + running; at 900 s each, a day of one worker's time"
    )
    max_daily_studies_per_token: int = Field(default=1000, ge=1, description="created in the last 24 h")
    max_queued_jobs: int = Field(default=500, ge=1, description="queued jobs of every token together")

    # jobs
    workers: int = Field(default=1, ge=0, description="local worker processes embedded in `advisor serve`")
    executor: str = "local"
    # Proxy runs one study trains at once, in worker processes (proxy_runs.parallel); read again by each
    # worker from the same LORA_ADVISOR_PARALLEL, validated here so that a bad value stops the service.
    parallel: int = Field(default=1, ge=1, le=256, description="proxy runs a study trains at once")
    # executor "ray": the study runs in the worker, each proxy run as a Ray task on this cluster (docs/ray.md)
    ray_address: str | None = None  # "head:6379"; None: RAY_ADDRESS, or the cluster `ray start` began here
    ray_gpus_per_task: float = Field(
        default=1.0, ge=0, description="GPUs each proxy run asks Ray for; 0.25 packs four runs on a GPU"
    )
    job_function: str = "study"
    job_options: dict[str, Any] = Field(
        default_factory=dict, description="JSON merged into every job payload"
    )
    lease_seconds: float = 30.0
    max_attempts: int = 3
    retry_base_seconds: float = 5.0
    readyz_requires_workers: bool = True

    recommendation_cache_seconds: float = 5.0

    @field_validator("model_roots", "dataset_roots", mode="before")
    @classmethod
    def _paths(cls, value: Any) -> Any:
        return _split_paths(value)

    @model_validator(mode="after")
    def _resolve(self) -> Settings:
        self.data_dir = self.data_dir.expanduser().resolve()
        if self.auth_disabled and not is_loopback(self.host):
            raise ValueError(
                f"auth may be disabled only when bound to loopback, not {self.host!r}; "
                "create a token with `advisor token create` instead"
            )
        return self

    @property
    def url(self) -> str:
        return self.database_url or default_sqlite_url(self.data_dir)

    @property
    def study_cost_limits(self) -> CostLimits:
        return CostLimits(
            max_proxy_seconds=self.max_study_proxy_seconds, max_proxy_examples=self.max_study_proxy_examples
        )

    @property
    def study_quotas(self) -> Quotas:
        return Quotas(
            max_active_per_token=self.max_active_studies_per_token,
            max_daily_per_token=self.max_daily_studies_per_token,
            max_queued_jobs=self.max_queued_jobs,
        )

    @property
    def upload_dir(self) -> Path:
        return self.data_dir / "datasets"

    @property
    def all_model_roots(self) -> list[Path]:
        return [self.data_dir / "models", *self.model_roots]

    @property
    def all_dataset_roots(self) -> list[Path]:
        return [self.upload_dir, *self.dataset_roots]
