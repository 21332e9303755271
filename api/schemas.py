"""Response and small request bodies. A study request body is advisor.specs.StudySpec itself, or a training
config to map (`ConfigStudyRequest`)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, Field

from advisor.check import Decision, OnMismatch
from advisor.recipes import Recipe
from advisor.specs import (
    MAX_BATCH_SIZE,
    MAX_COUNT,
    MAX_NAME_CHARS,
    MAX_RANK,
    BudgetSpec,
    DatasetSpec,
    LrPick,
    StrictInput,
)
from advisor.storage.models import MAX_ROW_ID

MAX_OUTCOME_LR = 10.0  # Adam fine-tuning diverges far below this; an LR above it is not a run's
MAX_OUTCOME_LOSS = 100.0  # nats per token: a uniform guess over a 10^43-token vocabulary; beyond it, diverged


class _In(StrictInput):
    """A small request body: unknown fields, NaN, Infinity and NUL characters are refused."""


class ConfigStudyRequest(_In):
    """A study of the real run a training config describes (advisor.training_configs): the config as an
    object, and what a study spec says that a training config does not."""

    config: dict[str, Any] = Field(description="an Axolotl, LLaMA-Factory, HF/TRL or torchtune config")
    format: Literal["auto", "axolotl", "llama-factory", "hf-trainer", "torchtune", "study-spec"] = "auto"
    devices: int | None = Field(None, gt=0, le=MAX_BATCH_SIZE, description="the real run's devices")
    batch_sizes: list[int] | None = Field(None, description="candidate effective batches")
    lr_range: tuple[float, float] | None = None
    lr_pick: LrPick | None = None
    budget: BudgetSpec | None = None
    dataset: DatasetSpec | None = Field(
        None,
        description="the data to study in place of the config's, e.g. the file `advisor check --submit` "
        "uploaded with POST /v1/datasets (a config's local paths mean nothing on the server)",
    )

    def spec_overrides(self) -> dict[str, Any]:
        """The study spec's own fields this request sets."""
        fields = {"batch_sizes", "lr_range", "lr_pick", "budget"}
        return self.model_dump(mode="json", include=fields, exclude_none=True)


class StudyOut(BaseModel):
    id: int
    url: str
    state: str
    progress: float
    message: str | None
    error: str | None
    model: str
    method: str
    rank: int
    dataset_fingerprint: str | None
    created_at: dt.datetime
    finished_at: dt.datetime | None
    spec: dict[str, Any]
    mapped_from: dict[str, Any] | None = None  # the training config the spec was mapped from
    recommendation: dict[str, Any] | None = None
    links: dict[str, str]


class StudyPage(BaseModel):
    items: list[StudyOut]
    total: int
    limit: int
    offset: int


class StudyAccepted(BaseModel):
    id: int
    url: str
    state: str
    created: bool  # False when an Idempotency-Key replayed an earlier request


class RunOut(BaseModel):
    id: int
    study_id: int
    run_index: int
    attempt: int
    status: str
    error: str | None
    batch_size: int
    learning_rate: float
    eval_loss: float | None
    best_eval_loss: float | None
    final_train_loss: float | None
    steps: int
    examples_seen: int
    tokens_seen: int
    seconds: float
    config: dict[str, Any]
    metrics: dict[str, Any] | None = None  # curves; on GET /runs/{id} only
    meta: dict[str, Any] | None = None


class DatasetOut(BaseModel):
    fingerprint: str
    path: str
    format: str
    rows: int
    bytes: int


class OutcomeIn(_In):
    study_id: int | None = Field(None, gt=0, le=MAX_ROW_ID)
    model: str = Field(min_length=1, max_length=MAX_NAME_CHARS)
    method: str = Field("lora", min_length=1, max_length=32)
    rank: int = Field(gt=0, le=MAX_RANK)
    alpha: float = Field(gt=0)
    dataset_fingerprint: str | None = Field(None, max_length=64)
    batch_size: int = Field(gt=0, le=MAX_BATCH_SIZE)
    # Outcomes are evidence, not commands: values no fine-tune produces are refused here, and the route
    # holds the LR to the study's searched range widened by a decade.
    learning_rate: float = Field(gt=0, le=MAX_OUTCOME_LR)
    final_eval_loss: float | None = Field(None, gt=0, le=MAX_OUTCOME_LOSS, description="nats per token")
    diverged: bool = False
    steps: int | None = Field(None, ge=0, le=MAX_COUNT)
    notes: str | None = Field(None, max_length=2000)


class OutcomeOut(BaseModel):
    id: int
    created_at: dt.datetime
    # The audit of the report: who sent it, and the LR correction its study's context had before and after.
    audit: dict[str, Any] | None = None


class CheckIn(_In):
    """What a CI hook knows about a fine-tune it is about to launch."""

    model: str = Field(min_length=1, max_length=MAX_NAME_CHARS)
    method: str = Field("lora", min_length=1, max_length=32)
    rank: int = Field(gt=0, le=MAX_RANK)
    alpha: float | None = Field(None, gt=0)
    dataset_fingerprint: str | None = Field(None, max_length=64)
    dataset_size: int | None = Field(None, gt=0, le=MAX_COUNT)
    batch_size: int = Field(gt=0, le=MAX_BATCH_SIZE)
    learning_rate: float = Field(gt=0)
    recipe: Recipe | None = Field(
        None, description="the planned recipe (advisor.recipes); the answering study's is compared with it"
    )
    study_id: int | None = Field(None, gt=0, le=MAX_ROW_ID, description="judge by this study's answer")
    on_mismatch: OnMismatch = Field("fail", description="a recipe mismatch fails the check, or only warns")


class CheckOut(BaseModel):
    """One decision, `outcome`. `verdict` is the same decision in the vocabulary of the first release, kept
    for the scripts that read it: ok = pass, warn = fail, unknown = indeterminate."""

    verdict: str = Field(
        deprecated=True,
        description="the legacy spelling of `outcome` (ok = pass, warn = fail, unknown = indeterminate)",
    )
    messages: list[str]
    recommendation: dict[str, Any]
    outcome: str | None = Field(
        None,
        description="the decision: pass | fail | indeterminate (advisor.check), as `advisor check` exits",
    )
    effective_batch_size: int | None = None
    decision: Decision | None = None


class TokenOut(BaseModel):
    """A token in listings: id, name, scopes and the prefix it starts with; never the token or its hash."""

    id: int
    name: str
    prefix: str
    scopes: list[str]
    created_at: dt.datetime
    revoked_at: dt.datetime | None


def inline_json_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A pydantic JSON schema with its $defs substituted in place, for an OpenAPI request or response
    body (whose references must point into the document's components, not the model's own $defs)."""
    definitions = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return resolve(definitions[ref.removeprefix("#/$defs/")])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    return resolve(schema)
