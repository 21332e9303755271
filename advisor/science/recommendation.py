"""What the advisor answers: a batch size and a learning rate, with the evidence to trust them.

`Recommendation` is a pydantic model so that the CLI's `--json`, the REST response and the stored record
are the same object. `NoRecommendation` is an answer too: it says why nothing can be recommended
(every run diverged, no budget, ...) and what to change.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, Field

ConfidenceLabel = Literal["high", "medium", "low"]
HIGH_CONFIDENCE, MEDIUM_CONFIDENCE = 0.7, 0.4


def confidence_label(score: float) -> ConfidenceLabel:
    if score >= HIGH_CONFIDENCE:
        return "high"
    return "medium" if score >= MEDIUM_CONFIDENCE else "low"


class NoRecommendation(BaseModel):
    """A clear "no answer", with the reason and the fix; `kind` is machine-readable."""

    reason: str
    kind: Literal["all_diverged", "no_runs", "no_budget", "failed"] = "failed"
    fix: str | None = None


class BandPair(BaseModel):
    batch_size: int
    learning_rate: float  # LR*(B) at this batch size
    lr_low: float
    lr_high: float
    loss: float | None = None


class Band(BaseModel):
    """Every (B, LR) whose predicted loss is within `epsilon` of the best: equally good choices. A study's
    final band also holds the 90% interval of LR* (`transfer.band_holding_interval`): what `advisor check`
    passes."""

    batch_sizes: list[int]
    lr_low: float  # at the recommended batch size
    lr_high: float
    epsilon: float
    pairs: list[BandPair] = Field(default_factory=list)
    # Every batch size the study compared (all candidates run in the halving): those outside `batch_sizes`
    # were measured worse than ε, so `advisor check` does not let a one-batch band's tolerance reach them.
    compared_batch_sizes: list[int] = Field(default_factory=list)


class Confidence(BaseModel):
    score: float = Field(ge=0.0, le=1.0)
    label: ConfidenceLabel
    lr_interval: tuple[float, float] | None = None  # bootstrap interval of LR* (90% unless said)
    notes: list[str] = Field(default_factory=list)


class LrRule(BaseModel):
    """LR for another effective batch: LR(B) = learning_rate × (B / reference_batch)^kappa."""

    kappa: float
    reference_batch: int
    reference_lr: float
    formula: str
    measured: bool = True  # False: κ is a prior (arXiv 2602.04998's 0.55…0.83), not fitted in this study

    def lr_at(self, batch_size: int) -> float:
        return self.reference_lr * (batch_size / self.reference_batch) ** self.kappa


class Cost(BaseModel):
    proxy_seconds: float
    examples_seen: int
    runs: int
    target_seconds: float = 0.0  # confirmation runs on the target model, when any


class Recommendation(BaseModel):
    batch_size: int
    learning_rate: float
    method: str
    band: Band
    confidence: Confidence
    predicted_eval_loss: float | None  # at the real run's length (`loss_forecast`), None for another model
    lr_rule: LrRule
    lora_plus_ratio: float | None = None  # only for method lora_plus: LR of B = ratio × LR of A
    cost: Cost
    evidence: dict[str, Any] = Field(default_factory=dict)  # runs summary, fits, probes, transfer
    derived: bool = False  # True: carried over from another method or context, not measured directly
    provisional: bool = False  # True: a warm-start answer from stored studies, before any compute
    reasoning: list[str] = Field(default_factory=list)
    predicted_eval_loss_interval: tuple[float, float] | None = None  # 90%

    def search_space(self, widen_decades: float = 0.25) -> dict[str, Any]:
        """The band as a search space for Optuna and Ray Tune, for users who still want to search.

        The LR range is the band widened by one grid step each side (a log-uniform prior); batch sizes are
        categorical. Build the samplers with `optuna.distributions.FloatDistribution(low, high, log=True)`
        / `CategoricalDistribution(choices)` or `ray.tune.loguniform(low, high)` / `tune.choice(choices)`.
        """
        low = self.band.lr_low / 10**widen_decades
        high = self.band.lr_high * 10**widen_decades
        batches = sorted(set(self.band.batch_sizes) | {self.batch_size})
        return {
            "optuna": {
                "learning_rate": {"type": "float", "low": low, "high": high, "log": True},
                "batch_size": {"type": "categorical", "choices": batches},
            },
            "ray_tune": {
                "learning_rate": {"type": "loguniform", "lower": low, "upper": high},
                "batch_size": {"type": "choice", "categories": batches},
            },
        }

    def summary(self) -> str:
        """Plain text for the terminal."""
        band = self.band
        lines = [
            f"batch size      {self.batch_size}",
            f"learning rate   {self.learning_rate:.3g}  (band {band.lr_low:.3g} … {band.lr_high:.3g}, "
            f"batch sizes {band.batch_sizes})",
            f"confidence      {self.confidence.label} ({self.confidence.score:.2f})"
            + (" — derived" if self.derived else "")
            + (" — provisional" if self.provisional else ""),
            f"predicted loss  {_fmt(self.predicted_eval_loss)}{self._loss_interval_text()}",
            f"other batches   {self.lr_rule.formula}",
        ]
        if self.lora_plus_ratio is not None:
            lines.append(f"LoRA+ ratio     {self.lora_plus_ratio:g} (LR of B = ratio × LR of A)")
        lines.append(
            f"study cost      {self.cost.runs} runs, {self.cost.examples_seen} examples, "
            f"{self.cost.proxy_seconds:.0f} s of proxy time"
        )
        lines.extend(f"  · {sentence}" for sentence in self.reasoning)
        return "\n".join(lines)

    def _loss_interval_text(self) -> str:
        if self.predicted_eval_loss is None or self.predicted_eval_loss_interval is None:
            return ""
        low, high = self.predicted_eval_loss_interval
        return f"  (90%: {low:.4f} … {high:.4f}, at the real run's length)"


def _fmt(value: float | None) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.4f}"


def kappa_rule(kappa: float, reference_batch: int, reference_lr: float, *, measured: bool) -> LrRule:
    text = f"LR(B) = {reference_lr:.3g} × (B / {reference_batch})^{kappa:.2f}"
    return LrRule(
        kappa=kappa,
        reference_batch=reference_batch,
        reference_lr=reference_lr,
        formula=text,
        measured=measured,
    )
