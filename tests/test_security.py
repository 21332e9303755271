"""Trust: what an outside tester broke, one test per finding (issue 35). Auth is on; each test names the
attack and what must hold.

Outcomes are evidence, not commands: a submit token once posted thirty outcomes with `learning_rate: 1e300,
final_eval_loss: -1e300` on another token's study, and every user's next answer became LR 1.5e99.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from advisor.science.knowledge import lr_correction
from advisor.science.recommendation import Band, Confidence, Cost, Recommendation, kappa_rule
from advisor.specs import StudySpec, parse_spec
from advisor.storage.db import Database, default_sqlite_url
from advisor.storage.knowledge_store import DatabaseKnowledgeStore
from advisor.storage.models import Outcome
from advisor.study.answer import apply_outcome_correction
from api import testing
from api.app import create_app
from api.security import create_token

LR_RANGE = (1e-5, 1e-2)
VICTIM_LR, VICTIM_INTERVAL = 3e-4, (2e-4, 4.5e-4)


@dataclass
class Service:
    client: TestClient
    db: Database
    tokens: dict[str, tuple[int, dict[str, str]]]  # name → (token id, auth header)
    studies: dict[str, int]  # owner name → its finished study
    spec: StudySpec  # what those studies studied

    def headers(self, name: str) -> dict[str, str]:
        return self.tokens[name][1]


def _answer(lr: float, interval: tuple[float, float]) -> Recommendation:
    return Recommendation(
        batch_size=16,
        learning_rate=lr,
        method="lora",
        band=Band(batch_sizes=[16], lr_low=interval[0], lr_high=interval[1], epsilon=0.01),
        confidence=Confidence(score=0.8, label="high", lr_interval=interval),
        predicted_eval_loss=1.2,
        lr_rule=kappa_rule(0.5, 16, lr, measured=True),
        cost=Cost(proxy_seconds=60.0, examples_seen=5000, runs=20),
    )


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    """Two submitters (victim, attacker) and an admin; victim and attacker each own a finished study of the
    same context (tiny-llama, LoRA rank 8, 900 examples)."""
    url = default_sqlite_url(tmp_path / "db")
    db = testing.migrated(url)
    tokens = {}
    for name, scopes in (
        ("victim", ["read", "submit"]),
        ("attacker", ["read", "submit"]),
        ("admin", ["admin"]),
    ):
        token_id, secret = create_token(db, name=name, scopes=scopes)
        tokens[name] = (token_id, {"Authorization": f"Bearer {secret}"})
    spec = parse_spec({**testing.example_spec(tmp_path), "lr_range": list(LR_RANGE)})
    studies = {
        owner: testing.store_finished_study(
            db, spec, _answer(VICTIM_LR, VICTIM_INTERVAL), dataset_examples=900, token_id=tokens[owner][0]
        )
        for owner in ("victim", "attacker")
    }
    settings = testing.make_settings(tmp_path, database_url=url)
    with TestClient(create_app(settings, db=db, start_workers=False)) as client:
        yield Service(client, db, tokens, studies, spec)
    db.dispose()


def outcome(study_id: int, **changes: Any) -> dict[str, Any]:
    return {
        "study_id": study_id,
        "model": "tiny-llama",
        "method": "lora",
        "rank": 8,
        "alpha": 8.0,
        "batch_size": 16,
        "learning_rate": 4e-4,
        "final_eval_loss": 1.1,
        **changes,
    }


def post(service: Service, who: str, body: dict[str, Any]) -> Any:
    return service.client.post("/v1/outcomes", json=body, headers=service.headers(who))


def problem_field(response: Any) -> str:
    return str(response.json()["errors"][0]["field"])


def test_outcome_values_no_fine_tune_produces_are_refused_naming_the_field(service: Service) -> None:
    own = service.studies["attacker"]
    for changes, field in (
        ({"learning_rate": 1e300}, "learning_rate"),
        ({"final_eval_loss": -1e300}, "final_eval_loss"),
        ({"final_eval_loss": 1e300}, "final_eval_loss"),
        ({"final_eval_loss": 0.0}, "final_eval_loss"),
    ):
        response = post(service, "attacker", outcome(own, **changes))
        assert response.status_code == 422 and problem_field(response) == field


def test_an_lr_more_than_a_decade_outside_the_studys_searched_range_is_implausible(service: Service) -> None:
    own = service.studies["attacker"]
    response = post(service, "attacker", outcome(own, learning_rate=0.5))  # range 1e-5…1e-2, reach 0.1
    assert response.status_code == 422 and problem_field(response) == "learning_rate"
    assert "more than a decade outside the LR range study" in response.json()["detail"]
    assert post(service, "attacker", outcome(own, learning_rate=0.09)).status_code == 201  # within reach


def test_a_loss_above_the_studys_untrained_loss_is_implausible_unless_the_run_diverged(
    service: Service,
) -> None:
    answer = _answer(VICTIM_LR, VICTIM_INTERVAL)
    answer.evidence["base_eval_loss"] = 2.0  # what the study measured before any training
    own = testing.store_finished_study(
        service.db, service.spec, answer, dataset_examples=900, token_id=service.tokens["attacker"][0]
    )
    refused = post(service, "attacker", outcome(own, final_eval_loss=2.5))
    assert refused.status_code == 422 and problem_field(refused) == "final_eval_loss"
    assert "before any training" in refused.json()["detail"]
    assert post(service, "attacker", outcome(own, final_eval_loss=2.1)).status_code == 201  # eval-split slack
    assert post(service, "attacker", outcome(own, final_eval_loss=2.5, diverged=True)).status_code == 201


def test_only_the_studys_owner_or_an_admin_reports_on_it(service: Service) -> None:
    victims = service.studies["victim"]
    refused = post(service, "attacker", outcome(victims))
    assert refused.status_code == 403 and f"study {victims}" in refused.json()["detail"]
    assert post(service, "victim", outcome(victims)).status_code == 201
    assert post(service, "admin", outcome(victims)).status_code == 201


def test_every_outcome_is_audited_with_who_sent_it_and_what_it_did(service: Service) -> None:
    own = service.studies["victim"]
    response = post(service, "victim", outcome(own, learning_rate=6e-4))
    assert response.status_code == 201
    audit = response.json()["audit"]
    assert audit["reporter"] == "victim" and audit["token_id"] == service.tokens["victim"][0]
    assert audit["lr_correction_before"] == 1.0 and audit["lr_correction_after"] > 1.0
    with service.db.transaction(write=False) as session:
        stored = session.get(Outcome, response.json()["id"])
        assert stored is not None and stored.payload["audit"] == audit and stored.created_at is not None


def test_thirty_hostile_outcomes_from_one_token_move_no_other_tokens_answer_beyond_its_interval(
    service: Service,
) -> None:
    """The replay: the attacker reports on its own study (all it may), at the most extreme values the
    bounds let through, thirty times."""
    hostile = outcome(service.studies["attacker"], learning_rate=0.099, final_eval_loss=1e-9)
    for _ in range(30):
        assert post(service, "attacker", hostile).status_code == 201

    store = DatabaseKnowledgeStore(service.db)
    context = store.study_context(service.studies["victim"])
    assert context is not None
    correction = lr_correction(store.outcomes(context))
    assert correction.reporters == 1 and not correction.corroborated
    victims_next = apply_outcome_correction(_answer(VICTIM_LR, VICTIM_INTERVAL), correction)
    assert VICTIM_INTERVAL[0] <= victims_next.learning_rate <= VICTIM_INTERVAL[1]

    query = {"model": "tiny-llama", "method": "lora", "rank": 8}
    answer = service.client.get("/v1/recommendations", params=query, headers=service.headers("victim")).json()
    assert answer["learning_rate"] == pytest.approx(VICTIM_LR)
    plan = {**query, "batch_size": 16}
    checked = service.client.post(
        "/v1/check", json={**plan, "learning_rate": VICTIM_LR}, headers=service.headers("victim")
    ).json()
    poisoned = service.client.post(
        "/v1/check", json={**plan, "learning_rate": 1e99}, headers=service.headers("victim")
    ).json()
    assert (checked["outcome"], poisoned["outcome"]) == ("pass", "fail")


def test_three_independent_reporters_that_agree_do_move_an_answer() -> None:
    """Robustness must not deafen the advisor: agreeing reporters still correct it, beyond one study's
    interval when three or more say so."""
    from advisor.science.knowledge import ReportedOutcome, StudyContext

    context = StudyContext(
        model="m",
        model_family="m",
        method="lora",
        rank_bucket=3,
        dataset_size_bucket=5,
        scaling="alpha_over_r",
        alpha_over_rank=1.0,
    )

    def report(reporter: str) -> ReportedOutcome:
        return ReportedOutcome(
            context=context,
            batch_size=16,
            proxy_lr=VICTIM_LR,
            recommended_lr=VICTIM_LR,
            best_lr=4 * VICTIM_LR,
            reporter=reporter,
        )

    correction = lr_correction([report(f"token {i}") for i in range(3)])
    assert correction.corroborated and correction.factor == pytest.approx(4 ** (3 / 5))
    moved = apply_outcome_correction(_answer(VICTIM_LR, VICTIM_INTERVAL), correction)
    assert moved.learning_rate > VICTIM_INTERVAL[1]
