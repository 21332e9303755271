"""Instant answers from stored recommendations: the study that best answers a context and a recipe.

Ranking, among the finished studies of the same model, method and rank:
1. the same dataset (fingerprint) first;
2. then the fewest recipe mismatches (`advisor.recipes`: target modules, packing, clipping, schedule,
   warm-up, sequence length, run length, optimizer, data format, dataset size);
3. then the most evidence: proxy examples the study trained on. A 30-second study must not replace a
   15-minute one of the same recipe because it is newer: its answer is the noisier of the two.
4. then the nearest dataset size (log space), then the newest.
`study_id` pins one study instead; its differences from the asked context are reported the same way.

A different α is bridged by keeping the product lr·(α/r) constant: with Adam the weight update scales
with the LoRA scale s = α/r times the LR, so lr·s is what transfers between α choices.
"""

from __future__ import annotations

import math
from typing import Any

from sqlalchemy.orm import Session

from advisor.recipes import Mismatch, Recipe, mismatches, stored_recipe
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
    recipe: Recipe | None = None,
    study_id: int | None = None,
) -> dict[str, Any]:
    if study_id is not None:
        pinned = repo.recommendation_for_study(session, study_id=study_id)
        if pinned is None:
            return {
                "status": "none",
                "detail": f"study {study_id} has no recommendation (it is unknown, still running, or "
                "could not recommend); GET /v1/studies/{study_id} says which",
            }
        rows: list[RecommendationRow] = [pinned]
    else:
        rows = list(repo.candidate_recommendations(session, model=model, method=method, rank=rank))
    if not rows:
        return {
            "status": "none",
            "detail": f"no study for {model} with {method} rank {rank} has finished yet; "
            "POST /v1/studies to run one",
        }
    specs = repo.study_specs(session, study_ids=[row.study_id for row in rows if row.study_id is not None])
    recipes = {row.id: stored_recipe(specs[row.study_id]) if row.study_id in specs else None for row in rows}
    differences = {
        row.id: _context_mismatches(row, model, method, rank)
        + mismatches(
            recipe,
            recipes[row.id],
            planned_examples=dataset_examples,
            study_examples=row.dataset_examples,
        )
        for row in rows
    }
    best = min(rows, key=lambda row: _rank(row, differences[row.id], dataset_fingerprint, dataset_examples))
    learning_rate = best.learning_rate
    if alpha is not None and learning_rate is not None and alpha != best.alpha:
        learning_rate = learning_rate * best.alpha / alpha
    exact = dataset_fingerprint is not None and best.dataset_fingerprint == dataset_fingerprint
    best_recipe = recipes[best.id]
    return {
        "status": "ready",
        "batch_size": best.batch_size,
        "learning_rate": learning_rate,
        "match": "same dataset" if exact else "same model, method and rank",
        "source_study_id": best.study_id,
        "alpha": alpha if alpha is not None else best.alpha,
        "alpha_rescaled": alpha is not None and alpha != best.alpha,
        "study": _study_summary(best, best_recipe),
        "mismatches": [m.as_dict() for m in differences[best.id]],
        "details": best.payload,
    }


def _context_mismatches(row: RecommendationRow, model: str, method: str, rank: int) -> list[Mismatch]:
    """A pinned study of another model, method or rank: named, never silently used as if it matched."""
    pairs = {"model": (model, row.model), "method": (method, row.method), "rank": (rank, row.rank)}
    return [Mismatch(name, asked, stored) for name, (asked, stored) in pairs.items() if asked != stored]


def evidence_examples(row: RecommendationRow) -> int:
    """Proxy examples the study trained on: how much measurement its answer rests on."""
    cost = (row.payload or {}).get("cost") or {}
    return int(cost.get("examples_seen") or 0)


def _rank(
    row: RecommendationRow, found: list[Mismatch], fingerprint: str | None, examples: int | None
) -> tuple[int, int, int, float, int]:
    same = 0 if fingerprint is not None and row.dataset_fingerprint == fingerprint else 1
    size_gap = (
        abs(math.log(examples / row.dataset_examples)) if examples and row.dataset_examples else math.inf
    )
    return same, len(found), -evidence_examples(row), size_gap, -row.id


def _study_summary(row: RecommendationRow, recipe: Recipe | None) -> dict[str, Any]:
    """The study that answered, as a verdict names it: id, confidence, what it spent, and its recipe."""
    payload = row.payload or {}
    confidence = payload.get("confidence") or {}
    cost = payload.get("cost") or {}
    return {
        "id": row.study_id,
        "confidence": confidence.get("score"),
        "confidence_label": confidence.get("label"),
        "budget": {
            "examples_seen": cost.get("examples_seen"),
            "proxy_seconds": cost.get("proxy_seconds"),
            "runs": cost.get("runs"),
        },
        "dataset_examples": row.dataset_examples,
        "recipe": recipe.model_dump(mode="json") if recipe is not None else None,
    }
