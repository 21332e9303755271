"""One proxy run with its curves."""

from __future__ import annotations

from fastapi import APIRouter

from advisor.storage import repository as repo
from advisor.storage.models import ProxyRun
from api.deps import Reader, RowId, ServiceDep
from api.problems import AUTHENTICATED_PROBLEMS, problem_responses
from api.schemas import RunOut

router = APIRouter(prefix="/v1", tags=["runs"], responses=AUTHENTICATED_PROBLEMS)


@router.get("/runs/{run_id}", response_model=RunOut, responses=problem_responses(404))
def get_run(run_id: RowId, _: Reader, service: ServiceDep) -> RunOut:
    with service.db.transaction(write=False) as session:
        return run_out(repo.get_run(session, run_id=run_id), curves=True)


def run_out(run: ProxyRun, *, curves: bool) -> RunOut:
    return RunOut(
        id=run.id,
        study_id=run.study_id,
        run_index=run.run_index,
        attempt=run.attempt,
        status=run.status,
        error=run.error,
        batch_size=run.batch_size,
        learning_rate=run.learning_rate,
        eval_loss=run.eval_loss,
        best_eval_loss=run.best_eval_loss,
        final_train_loss=run.final_train_loss,
        steps=run.steps,
        examples_seen=run.examples_seen,
        tokens_seen=run.tokens_seen,
        seconds=run.seconds,
        config=run.config,
        metrics=run.metrics if curves else None,
        meta=run.meta if curves else None,
    )
