"""What one proxy fine-tune returns, and what storage keeps of it.

A run records everything needed to trust a recommendation built on it: its status, the resolved
config, per-step metrics, evaluations and meta (package versions, git sha, device, model revision).
Diverged is a result, stored as a status, never as NaN in a loss column.
"""

from __future__ import annotations

import enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

# What a study ran each proxy run for, stored in the run's meta as "role": the halving's runs, and the runs
# a study makes besides it (each of these is short or long by design, neither pruned nor promoted).
HALVING_ROLE = "halving"
CONFIRMATION_ROLE = "target confirmation"  # a sibling-proxy study's short runs on the target model
EXTRA_RUN_ROLES = ("calibration", "second seed", "edge", "trend", "horizon", CONFIRMATION_ROLE)


class RunStatus(enum.StrEnum):
    SUCCESS = "success"  # ran to the end of its budget or plan
    DIVERGED = "diverged"  # loss became non-finite or blew up: the LR (or batch) is too aggressive
    PRUNED = "pruned"  # stopped early by the caller (successive halving dropped it)
    FAILED = "failed"  # an error unrelated to the hyperparameters; `error` says which
    CANCELED = "canceled"  # the user or the service stopped it


class StepMetrics(BaseModel):
    step: int
    examples_seen: int
    loss: float
    lr: float
    grad_norm: float
    tokens_per_s: float
    seconds: float  # wall time since the run started


class EvalPoint(BaseModel):
    step: int
    examples_seen: int
    eval_loss: float  # token-weighted mean cross-entropy on the held-out split


class OomEvent(BaseModel):
    step: int
    micro_batch_before: int
    micro_batch_after: int


class RunConfig(BaseModel):
    """The resolved hyperparameters of one run; `batch_size` is the effective batch we recommend."""

    model_config = ConfigDict(extra="forbid")

    method: str
    rank: int
    alpha: float
    batch_size: int
    learning_rate: float
    micro_batch_size: int
    accumulation_steps: int
    planned_steps: int
    warmup_steps: int
    max_seq_len: int
    seed: int
    device: str
    precision: str


class RunRecord(BaseModel):
    status: RunStatus
    error: str | None = None
    config: RunConfig
    spec: dict[str, Any]
    eval_loss: float | None = (
        None  # last evaluation; None when the run never evaluated (e.g. diverged at once)
    )
    best_eval_loss: float | None = None
    final_train_loss: float | None = None
    steps: int = 0
    examples_seen: int = 0
    tokens_seen: int = 0
    seconds: float = 0.0
    trainable_params: int = 0
    total_params: int = 0
    metrics: dict[str, Any] = Field(
        default_factory=dict
    )  # {"steps": [...], "evals": [...], "oom_events": [...]}
    dataset_fingerprint: dict[str, Any] = Field(default_factory=dict)
    meta: dict[str, Any] = Field(default_factory=dict)

    @property
    def examples_trained(self) -> int:
        """Examples this run trained on itself: a resumed run reports the whole curve, but only the examples
        after the pause cost anything."""
        return self.examples_seen - resumed_at(self.meta)


def resumed_at(meta: dict[str, Any] | None) -> int:
    """Examples a run had seen when the paused run it went on from stopped (its meta "resumed_from", see
    `proxy_runs.resume`); 0 for a run that started afresh."""
    return int(((meta or {}).get("resumed_from") or {}).get("examples_seen", 0))
