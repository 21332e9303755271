"""The science's `KnowledgeStore` over the database: finished studies and reported outcomes as warm-start
evidence for a new study.

`similar` answers with every stored recommendation of a comparable context: the same method, α convention
and α/r (LRs do not compare otherwise), the same model family, and within `MAX_DISTANCE` of the asked
context by `context_distance` (nearby rank and dataset-size buckets). The science weights them further.
`outcomes` turns POST /v1/outcomes reports that name their study into (proxy LR, recommended LR, best LR):
the best non-diverged full run per study, compared with what that study recommended.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from advisor.science.knowledge import (
    MAX_DISTANCE,
    KnownResult,
    ReportedOutcome,
    StudyContext,
    context_distance,
    model_family,
    rank_bucket,
    size_bucket,
)
from advisor.science.transfer import BETA_DEFAULT, curvature_ratio_lr
from advisor.storage.db import Database
from advisor.storage.errors import DatabaseUnavailable
from advisor.storage.models import Outcome, ProxyRun, RecommendationRow, Study, StudyState

T = TypeVar("T")
CANDIDATES = 200  # newest stored answers looked at per question; older ones add little next to these


# A study reads its warm start when it begins; a database outage then is waited out like any other database
# call of a worker (a 20-second one once failed the attempt outright), for up to this long.
OUTAGE_WAIT_SECONDS = 120.0


def waiting_out_outages(read: Callable[[], T], *, seconds: float = OUTAGE_WAIT_SECONDS) -> T:
    """`read()`, retried with backoff (0.5 s doubling to 8 s) while the database is unavailable."""
    deadline, pause = time.monotonic() + seconds, 0.5
    while True:
        try:
            return read()
        except DatabaseUnavailable:
            if time.monotonic() + pause > deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 8.0)


class DatabaseKnowledgeStore:
    """`advisor.science.knowledge.KnowledgeStore` on a `Database`; each question is one read transaction,
    retried through a database outage (`waiting_out_outages`)."""

    def __init__(self, db: Database, *, outage_wait_seconds: float = OUTAGE_WAIT_SECONDS) -> None:
        self.db = db
        self.outage_wait_seconds = outage_wait_seconds

    def similar(self, context: StudyContext) -> list[KnownResult]:
        return waiting_out_outages(lambda: self._read_similar(context), seconds=self.outage_wait_seconds)

    def outcomes(self, context: StudyContext) -> list[ReportedOutcome]:
        return waiting_out_outages(lambda: self._read_outcomes(context), seconds=self.outage_wait_seconds)

    def _read_similar(self, context: StudyContext) -> list[KnownResult]:
        with self.db.transaction(write=False) as session:
            known = [
                _known_result(row, study, _content_fingerprint(session, study.id))
                for row, study in _recommendations(session, method=context.method)
            ]
        return [k for k in known if k is not None and _comparable(context, k.context)]

    def study_context(self, study_id: int) -> StudyContext | None:
        """The context of a finished study's answer; None while it has none (or no dataset size)."""
        with self.db.transaction(write=False) as session:
            found = _recommendation_of(session, study_id)
            if found is None:
                return None
            return _context(*found, _content_fingerprint(session, study_id))

    def _read_outcomes(self, context: StudyContext) -> list[ReportedOutcome]:
        with self.db.transaction(write=False) as session:
            by_study: dict[int, list[Outcome]] = {}
            for outcome in _outcomes(session, method=context.method):
                by_study.setdefault(int(outcome.study_id or 0), []).append(outcome)
            reported = []
            for study_id, rows in by_study.items():
                found = _recommendation_of(session, study_id)
                if found is not None:
                    reported.append(_reported(_best(rows), *found, _content_fingerprint(session, study_id)))
        return [r for r in reported if r is not None and _comparable(context, r.context)]


def _comparable(asked: StudyContext, stored: StudyContext) -> bool:
    same_family = asked.model_family == stored.model_family
    return same_family and context_distance(asked, stored) <= MAX_DISTANCE


# queries ---------------------------------------------------------------------------------------------


def _recommendations(session: Session, *, method: str) -> Sequence[Any]:
    """(recommendation, study) of finished studies that recommended something, newest first."""
    return session.execute(
        select(RecommendationRow, Study)
        .join(Study, Study.id == RecommendationRow.study_id)
        .where(
            RecommendationRow.method == method,
            RecommendationRow.available.is_(True),
            RecommendationRow.batch_size.is_not(None),
            RecommendationRow.learning_rate.is_not(None),
            Study.state == StudyState.SUCCEEDED,
        )
        .order_by(RecommendationRow.id.desc())
        .limit(CANDIDATES)
    ).all()


def _recommendation_of(session: Session, study_id: int) -> tuple[RecommendationRow, Study] | None:
    row = session.execute(
        select(RecommendationRow, Study)
        .join(Study, Study.id == RecommendationRow.study_id)
        .where(RecommendationRow.study_id == study_id, RecommendationRow.available.is_(True))
    ).first()
    return None if row is None else (row[0], row[1])


def _outcomes(session: Session, *, method: str) -> Sequence[Outcome]:
    """Reports that name their study: without it, there is no recommendation to say how far off it was."""
    return session.scalars(
        select(Outcome)
        .where(Outcome.method == method, Outcome.study_id.is_not(None))
        .order_by(Outcome.id.desc())
        .limit(CANDIDATES)
    ).all()


def _content_fingerprint(session: Session, study_id: int) -> str | None:
    """The dataset content hash the study's runs recorded (what `run_study` puts in its context)."""
    fingerprint = session.scalars(
        select(ProxyRun.dataset_fingerprint).where(ProxyRun.study_id == study_id).limit(1)
    ).first()
    return (fingerprint or {}).get("content_sha256")


# rows → the science's records ------------------------------------------------------------------------


def _context(row: RecommendationRow, study: Study, fingerprint: str | None) -> StudyContext | None:
    """The stored study's context, from the row and its spec; None without a dataset size to bucket."""
    if not row.dataset_examples or row.rank <= 0:
        return None
    return StudyContext(
        model=row.model,
        model_family=model_family(row.model),
        method=row.method,
        rank_bucket=rank_bucket(row.rank),
        dataset_size_bucket=size_bucket(row.dataset_examples),
        scaling=str(study.spec.get("scaling") or "alpha_over_r"),
        alpha_over_rank=row.alpha / row.rank,
        dataset_fingerprint=fingerprint or row.dataset_fingerprint,
        rank=row.rank,
        dataset_size=row.dataset_examples,
    )


def _known_result(row: RecommendationRow, study: Study, fingerprint: str | None) -> KnownResult | None:
    context = _context(row, study, fingerprint)
    if context is None or row.batch_size is None or not _positive(row.learning_rate):
        return None
    payload = row.payload or {}
    return KnownResult(
        context=context,
        batch_size=row.batch_size,
        learning_rate=float(row.learning_rate),  # type: ignore[arg-type]  # checked by _positive
        confidence=min(max(_number(payload.get("confidence", {}).get("score")) or 0.0, 0.0), 1.0),
        kappa=_number((payload.get("lr_rule") or {}).get("kappa")),
        predicted_eval_loss=_number(payload.get("predicted_eval_loss")),
        lambda_max=_lambdas(payload)[1],
        **_size_exponent(payload),
    )


def _size_exponent(payload: dict[str, Any]) -> dict[str, float]:
    """γ and its spread from the answer's run-length evidence, when the study measured γ itself."""
    trend = (payload.get("evidence") or {}).get("size_trend") or {}
    exponent, spread = _number(trend.get("lr_exponent")), _number(trend.get("exponent_sd"))
    if not trend.get("measured") or exponent is None or spread is None or spread <= 0:
        return {}
    return {"size_exponent": exponent, "size_exponent_sd": spread}


def _best(rows: list[Outcome]) -> Outcome | None:
    """A study's best full run: the lowest final loss among those that did not diverge."""
    finite = [r for r in rows if not r.diverged and _positive(r.learning_rate)]
    return min(
        finite, key=lambda r: r.final_eval_loss if r.final_eval_loss is not None else math.inf, default=None
    )


def _reported(
    best: Outcome | None, row: RecommendationRow, study: Study, fingerprint: str | None
) -> ReportedOutcome | None:
    context = _context(row, study, fingerprint)
    if best is None or context is None or not _positive(row.learning_rate):
        return None
    recommended = _lr_star_median(row)
    lambda_proxy, lambda_target = _lambdas(row.payload or {})
    forecast_from, forecast_examples = _loss_forecast(row.payload or {})
    return ReportedOutcome(
        context=context,
        batch_size=best.batch_size,
        proxy_lr=_proxy_lr(recommended, lambda_proxy, lambda_target, row.payload or {}),
        recommended_lr=recommended,
        best_lr=best.learning_rate,
        lambda_proxy=lambda_proxy,
        lambda_target=lambda_target,
        final_eval_loss=_number(best.final_eval_loss),
        forecast_from=forecast_from,
        forecast_examples=forecast_examples,
        reporter=f"token {best.token_id}" if best.token_id is not None else f"study {study.id}",
    )


def _lr_star_median(row: RecommendationRow) -> float:
    """LR*'s median behind the answer: the LR recommended, unless the answer moved below the median for
    caution (`lr_pick: cautious`, `transfer.with_cautious_lr`; for a few hours on 2026-12-03 the default).
    Outcomes are compared with the median, which the next answer may move from again."""
    caution = ((row.payload or {}).get("evidence") or {}).get("caution") or {}
    median = _number(caution.get("lr_star_median"))
    return median if median is not None and median > 0 else float(row.learning_rate)  # type: ignore[arg-type]


def _loss_forecast(payload: dict[str, Any]) -> tuple[tuple[int, float] | None, int | None]:
    """((examples, L*) the study's loss forecast started from, the length it forecast for); (None, None)
    when it forecast no loss for the model the user ran (a sibling proxy's loss is not the target's)."""
    forecast = (payload.get("evidence") or {}).get("loss_forecast") or {}
    examples, loss, full = (
        forecast.get("from_examples"),
        _number(forecast.get("from_loss")),
        forecast.get("examples"),
    )
    if payload.get("predicted_eval_loss") is None or not examples or loss is None or not full:
        return None, None
    return (int(examples), loss), int(full)


def _lambdas(payload: dict[str, Any]) -> tuple[float | None, float | None]:
    """(λ_proxy, λ_target) of a recommendation moved from a sibling proxy; (None, None) otherwise."""
    transfer = (payload.get("evidence") or {}).get("transfer") or {}
    return _number(transfer.get("lambda_proxy")), _number(transfer.get("lambda_target"))


def _proxy_lr(
    recommended: float, lambda_proxy: float | None, lambda_target: float | None, payload: dict[str, Any]
) -> float:
    """The proxy's LR*: as the transfer's evidence stored it (at the recommendation's α), else the curvature
    transfer undone (moved back from the target's λ to the proxy's; answers stored before 2026-12-02); the
    recommended LR itself when the proxy was the target."""
    if lambda_proxy is None or lambda_target is None:
        return recommended
    transfer = (payload.get("evidence") or {}).get("transfer") or {}
    stored = _number(transfer.get("proxy_learning_rate"))
    if stored is not None and stored > 0:
        return stored
    beta = _number(transfer.get("beta")) or BETA_DEFAULT
    return curvature_ratio_lr(recommended, lambda_target, lambda_proxy, beta)


def _number(value: Any) -> float | None:
    """A finite float from a JSON value (non-finite floats are stored as strings, see jsonsafe)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _positive(value: float | None) -> bool:
    return value is not None and math.isfinite(value) and value > 0
