"""Is a planned fine-tune's (effective batch, LR) inside the recommended band? One pure decision.

`decide` takes what `advisor.storage.knowledge.lookup` answers for a context (the same dict that
GET /v1/recommendations returns) and the plan's effective batch and LR. It is the only place the
verdict is made: POST /v1/check and `advisor check --offline` both call it.

The rule, in order:
1. Nothing stored for the context → "indeterminate".
2. The band's LR range is stored at the recommended batch B*. At another batch B it moves with the
   study's LR rule, LR(B) = LR(B*) × (B / B*)^κ, so [lr_low, lr_high] is rescaled by the same factor.
3. The effective batch must lie within the band's batch sizes. A band of one batch size (or a stored
   answer without a band) allows `BATCH_TOLERANCE` either side: one doubling, the usual grid step; but
   never as far as a batch size the study compared and left out of the band (measured worse than ε).
   With candidates 4, 8, 16, 32 and a band of 4 alone, that is 2…7.
4. A stored answer without a band (synthetic or older studies) gets `LR_TOLERANCE` around LR*.
5. The study that answered trained another recipe (`advisor.recipes`: the lookup lists the fields that
   differ beyond tolerance, e.g. packing or target modules): each is an error, so the verdict fails closed,
   or with `on_mismatch="warn"` a warning. Its band was measured for another run.
6. "pass" when all hold, else "fail". Separately, a plan whose LR is the one recommended for B* at
   another batch is flagged: the batch was changed and the LR was not rescaled (science.md §6).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, Field

Outcome = Literal["pass", "fail", "indeterminate"]
Level = Literal["error", "warning", "note"]
OnMismatch = Literal["fail", "warn"]

LR_TOLERANCE = (
    2.0  # no stored band: within 2× of LR* passes; the loss basin is about that wide on a log scale
)
BATCH_TOLERANCE = 2.0  # a one-batch band: one doubling either side stays within the LR rule's reach
COPIED_LR_RTOL = 0.05  # an LR within 5% of LR* was copied from the recommendation (rounded to 2 digits)
# The science's constants, repeated so that this module (and `advisor check`) need not import scipy; a test
# keeps them equal. The prior, for stored answers without an LR rule; the bounds, for answers stored before
# the rule's κ was held within them.
KAPPA_FALLBACK = 0.7  # advisor.science.fits.KAPPA_PRIOR
KAPPA_BOUNDS = (0.0, 1.0)  # advisor.science.fits.KAPPA_BOUNDS


class Finding(BaseModel):
    """One thing wrong (or worth knowing) about the plan; `key` is the plan value it is about."""

    level: Level
    key: Literal["learning_rate", "batch_size", "context", "recipe"]
    message: str


class Decision(BaseModel):
    """The verdict and every number behind it, so a report can say how far off the plan is."""

    outcome: Outcome
    findings: list[Finding] = Field(default_factory=list)
    effective_batch_size: int
    learning_rate: float
    recommended_batch_size: int | None = None
    recommended_learning_rate: float | None = None
    rescaled_learning_rate: float | None = None  # the LR rule at the planned batch
    lr_low: float | None = None  # the band at the planned batch
    lr_high: float | None = None
    batch_low: int | None = None
    batch_high: int | None = None
    kappa: float | None = None
    lr_not_rescaled: bool = False
    study: dict[str, Any] | None = None  # the study that answered: id, confidence, budget, recipe
    mismatches: list[dict[str, Any]] = Field(default_factory=list)  # where its recipe differs from the plan

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "error"]


def decide(
    answer: Mapping[str, Any], *, batch_size: int, learning_rate: float, on_mismatch: OnMismatch = "fail"
) -> Decision:
    """The verdict for a plan of effective batch `batch_size` at `learning_rate`, given a lookup answer."""
    best_batch, best_lr = answer.get("batch_size"), answer.get("learning_rate")
    if answer.get("status") != "ready" or not best_batch or not best_lr:
        detail = str(answer.get("detail") or "no recommendation is stored for this context yet")
        return Decision(
            outcome="indeterminate",
            findings=[Finding(level="error", key="context", message=detail)],
            effective_batch_size=batch_size,
            learning_rate=learning_rate,
        )
    band = _band_at(answer, batch_size)
    findings = _batch_findings(band, batch_size) + _lr_findings(band, batch_size, learning_rate)
    not_rescaled = batch_size != best_batch and math.isclose(learning_rate, best_lr, rel_tol=COPIED_LR_RTOL)
    if not_rescaled:
        findings.append(_not_rescaled(band, batch_size, learning_rate))
    findings += _recipe_findings(answer, "error" if on_mismatch == "fail" else "warning")
    failed = any(f.level == "error" for f in findings)
    return Decision(
        outcome="fail" if failed else "pass",
        findings=findings,
        effective_batch_size=batch_size,
        learning_rate=learning_rate,
        lr_not_rescaled=not_rescaled,
        study=answer.get("study"),
        mismatches=list(answer.get("mismatches") or []),
        **band,
    )


def _band_at(answer: Mapping[str, Any], batch_size: int) -> dict[str, Any]:
    """The band's numbers moved to `batch_size` by the LR rule (and to the asked α, as lookup did)."""
    best_batch, best_lr = int(answer["batch_size"]), float(answer["learning_rate"])
    details = answer.get("details") or {}
    stored_band, rule = details.get("band") or {}, details.get("lr_rule") or {}
    # lookup rescales LR* for a different α (lr·α/r constant); the stored band needs the same factor.
    alpha_factor = best_lr / float(details["learning_rate"]) if details.get("learning_rate") else 1.0
    kappa = (
        min(max(float(rule["kappa"]), KAPPA_BOUNDS[0]), KAPPA_BOUNDS[1])
        if "kappa" in rule
        else KAPPA_FALLBACK
    )
    scale = (batch_size / best_batch) ** kappa
    if stored_band.get("lr_low") and stored_band.get("lr_high"):
        low, high = float(stored_band["lr_low"]) * alpha_factor, float(stored_band["lr_high"]) * alpha_factor
    else:
        low, high = best_lr / LR_TOLERANCE, best_lr * LR_TOLERANCE
    batches = sorted({int(b) for b in stored_band.get("batch_sizes") or []} | {best_batch})
    if len(batches) == 1:
        compared = [int(b) for b in stored_band.get("compared_batch_sizes") or []]
        batch_low, batch_high = _one_batch_range(best_batch, compared)
    else:
        batch_low, batch_high = batches[0], batches[-1]
    return {
        "recommended_batch_size": best_batch,
        "recommended_learning_rate": best_lr,
        "rescaled_learning_rate": best_lr * scale,
        "lr_low": low * scale,
        "lr_high": high * scale,
        "batch_low": batch_low,
        "batch_high": batch_high,
        "kappa": kappa,
    }


def _one_batch_range(best_batch: int, compared: list[int]) -> tuple[int, int]:
    """The batch sizes a band of B* alone passes: a doubling either side, stopping short of any batch size
    the study compared and found worse (an answer stored before 2026-12-02 lists none)."""
    low, high = math.ceil(best_batch / BATCH_TOLERANCE), int(best_batch * BATCH_TOLERANCE)
    above, below = [b for b in compared if b > best_batch], [b for b in compared if b < best_batch]
    if above:
        high = min(high, min(above) - 1)
    if below:
        low = max(low, max(below) + 1)
    return low, high


def _batch_findings(band: Mapping[str, Any], batch_size: int) -> list[Finding]:
    low, high = band["batch_low"], band["batch_high"]
    if low <= batch_size <= high:
        return []
    message = (
        f"effective batch {batch_size} is outside the band's batch sizes {low}…{high} "
        f"(recommended {band['recommended_batch_size']})"
    )
    return [Finding(level="error", key="batch_size", message=message)]


def _lr_findings(band: Mapping[str, Any], batch_size: int, learning_rate: float) -> list[Finding]:
    low, high = band["lr_low"], band["lr_high"]
    if learning_rate > high:
        where = f"{learning_rate / high:.2g}× above the band's top {high:.2g}"
    elif learning_rate < low:
        where = f"{low / learning_rate:.2g}× below the band's bottom {low:.2g}"
    else:
        return []
    message = (
        f"learning_rate {learning_rate:.3g} is {where} at effective batch {batch_size} "
        f"(recommended {band['rescaled_learning_rate']:.2g}, band {low:.2g}…{high:.2g})"
    )
    return [Finding(level="error", key="learning_rate", message=message)]


def _recipe_findings(answer: Mapping[str, Any], level: Level) -> list[Finding]:
    study = (answer.get("study") or {}).get("id")
    source = f"study {study}" if study is not None else "the stored answer"
    advice = (
        "submit a study of this config, or pass --on-mismatch warn to accept it"
        if level == "error"
        else "accepted with --on-mismatch warn"
    )
    return [
        Finding(
            level=level,
            key="recipe",
            message=f"recipe mismatch with {source}: {m['message']} (its LR band was measured for another "
            f"run; {advice})",
        )
        for m in answer.get("mismatches") or []
    ]


def _not_rescaled(band: Mapping[str, Any], batch_size: int, learning_rate: float) -> Finding:
    message = (
        f"effective batch changed from {band['recommended_batch_size']} to {batch_size} but the LR was not "
        f"rescaled: learning_rate {learning_rate:.3g} is the recommendation for batch "
        f"{band['recommended_batch_size']}; at {batch_size} use {band['rescaled_learning_rate']:.2g} "
        f"(LR(B) = LR* × (B / {band['recommended_batch_size']})^{band['kappa']:.2f})"
    )
    return Finding(level="warning", key="learning_rate", message=message)
