"""Instant answers from stored recommendations: the closest earlier study for a context.

Ranking: same dataset fingerprint first, then the nearest dataset size (in log space), then the newest.
A different α is bridged by keeping the product lr·(α/r) constant: with Adam the weight update scales
with the LoRA scale s = α/r times the LR, so lr·s is what transfers between α choices.
"""

from __future__ import annotations

import math
from typing import Any

from sqlalchemy.orm import Session

from advisor.storage import repository as repo
from advisor.storage.models import RecommendationRow


def lookup(
    session: Session,
    *,
    model: str,
    method: str,
    rank: int,
    alpha: float | None,
    dataset_fingerprint: str | None,
    dataset_examples: int | None,
) -> dict[str, Any]:
    rows = repo.candidate_recommendations(session, model=model, method=method, rank=rank)
    if not rows:
        return {
            "status": "none",
            "detail": f"no study for {model} with {method} rank {rank} has finished yet; "
            "POST /v1/studies to run one",
        }
    best = min(rows, key=lambda row: _distance(row, dataset_fingerprint, dataset_examples))
    learning_rate = best.learning_rate
    if alpha is not None and learning_rate is not None and alpha != best.alpha:
        learning_rate = learning_rate * best.alpha / alpha
    exact = dataset_fingerprint is not None and best.dataset_fingerprint == dataset_fingerprint
    return {
        "status": "ready",
        "batch_size": best.batch_size,
        "learning_rate": learning_rate,
        "match": "same dataset" if exact else "same model, method and rank",
        "source_study_id": best.study_id,
        "alpha": alpha if alpha is not None else best.alpha,
        "alpha_rescaled": alpha is not None and alpha != best.alpha,
        "details": best.payload,
    }


def _distance(
    row: RecommendationRow, fingerprint: str | None, examples: int | None
) -> tuple[int, float, int]:
    same = 0 if fingerprint is not None and row.dataset_fingerprint == fingerprint else 1
    size_gap = (
        abs(math.log(examples / row.dataset_examples)) if examples and row.dataset_examples else math.inf
    )
    return same, size_gap, -row.id
