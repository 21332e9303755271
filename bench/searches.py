"""The searches the advisor is measured against on the quality benchmark's tasks (`bench/quality.py`): the
LR range test, random search, Optuna's TPE, and TPE with Optuna's successive-halving pruner (also run against
the real model by `bench/real_llm.py`). Each returns the (B, LR) it chose and what choosing it took.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any, NamedTuple

from advisor.records import RunRecord, RunStatus
from bench.common import EVAL_EXAMPLES, BenchConfig, Config, Trainer
from proxy_runs.engine import RunBudget, RunProgress, setup_proxy, train_proxy


class Searched(NamedTuple):
    """A contender's answer and what it took: the examples it trained on, the configs it trained (full runs,
    a study's runs, or trials under a pruner) and how many of those no pruner or budget stopped early (None
    for a study, whose runs stop at rungs by design)."""

    config: Config
    examples: int
    trained: int
    finished: int | None


def lr_range_test(trainer: Trainer, lrs: list[float], seed: int, batch: int = 16, steps: int = 8) -> Searched:
    """Short runs at every LR; fastai's pick: the LR of the lowest loss divided by 10."""
    losses = {}
    spec = trainer.spec.with_seed(seed)
    for lr in lrs:
        record = train_proxy(
            spec,
            batch_size=batch,
            learning_rate=lr,
            eval_at_start=False,
            setup=setup_proxy(spec, data=trainer.data),
            budget=RunBudget(max_steps=steps),
            max_eval_examples=EVAL_EXAMPLES,
        )
        finished = record.status == "success" and record.final_train_loss is not None
        losses[lr] = float(record.final_train_loss) if finished else math.inf  # type: ignore[arg-type]
    pick = (batch, min(losses, key=lambda lr: losses[lr]) / 10)
    return Searched(pick, batch * steps * len(lrs), len(lrs), len(lrs))  # a short run at every LR


def search(
    trainer: Trainer,
    budget_examples: int,
    suggest: Callable[[int], tuple[int, float]],
    tell: Callable[[float], None],
    seed: int,
) -> Searched:
    """Full runs until the budget is spent (at least one); the best by its own eval loss wins."""
    spent = 0
    tried: list[tuple[float, tuple[int, float]]] = []  # (its own eval loss, config)
    while not tried or spent + trainer.full_examples() <= budget_examples:
        config = suggest(len(tried))
        loss = trainer.score(*config, seed=seed)
        tell(loss)
        tried.append((loss, config))
        spent += trainer.full_examples()
    return Searched(min(tried)[1], spent, len(tried), len(tried))


def random_search(trainer: Trainer, cfg: BenchConfig, budget: int, seed: int) -> Searched:
    rng = random.Random(seed)
    low, high = (math.log10(v) for v in trainer.spec.lr_range)
    return search(
        trainer,
        budget,
        lambda _: (rng.choice(cfg.batch_sizes), 10 ** rng.uniform(low, high)),
        lambda _: None,
        seed,
    )


def tpe_study(seed: int, pruner: Any = None) -> Any:
    """An Optuna study with TPE (3 random trials first), and `pruner` when given."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=3)
    return optuna.create_study(sampler=sampler, pruner=pruner)


def suggest_config(trial: Any, batch_sizes: list[int], lr_range: tuple[float, float]) -> Config:
    return (
        trial.suggest_categorical("batch_size", batch_sizes),
        trial.suggest_float("learning_rate", *lr_range, log=True),
    )


def tpe_search(trainer: Trainer, cfg: BenchConfig, budget: int, seed: int) -> Searched:
    study = tpe_study(seed)
    trials: list[Any] = []

    def suggest(_: int) -> tuple[int, float]:
        trials.append(study.ask())
        return suggest_config(trials[-1], cfg.batch_sizes, trainer.spec.lr_range)

    def tell(loss: float) -> None:
        study.tell(trials[-1], loss)

    return search(trainer, budget, suggest, tell, seed)


# Optuna's TPE with its successive-halving pruner (asynchronous successive halving, η = 3): what a user who
# knows Optuna runs instead of plain TPE, and the multi-fidelity search the advisor's own halving competes
# with. Every trial follows the real run's schedule and reports its eval loss after each ninth of the run;
# the pruner compares trials after the first ninth and after a third (rungs 1, 3 and 9 ninths) and stops
# those outside the best third there, so the budget buys many more configs than full runs do.
ASHA_REPORTS = 9  # evaluations per trial: one per ninth of the run (the pruner's steps)
ASHA_REDUCTION = 3


def asha_trial(trainer: Trainer, config: Config, seed: int, trial: Any, allowance: float) -> RunRecord:
    """Train `config` on the real run's schedule, reporting to `trial` after each ninth of the run; pruned
    when its pruner says so or the examples reach `allowance` (what is left of the budget)."""
    batch, lr = config
    spec = trainer.spec.with_seed(seed)
    full = trainer.full_examples()
    eval_every = max(1, round(full / ASHA_REPORTS / batch))  # steps between reports

    def should_stop(progress: RunProgress) -> bool:
        if progress.examples_seen + batch > full:
            return False  # the last step: a finished run is never pruned
        if progress.step % eval_every == 0 and progress.eval_loss is not None:
            # The pruner's step is the ninth of the run reached, so batch sizes whose ninths fall a few
            # examples apart are still compared at the same rung.
            trial.report(progress.eval_loss, step=round(progress.examples_seen * ASHA_REPORTS / full))
            if trial.should_prune():
                return True
        return progress.examples_seen >= allowance

    return train_proxy(
        spec,
        batch_size=batch,
        learning_rate=lr,
        setup=setup_proxy(spec, data=trainer.data),
        eval_every=eval_every,
        eval_at_start=False,
        max_eval_examples=EVAL_EXAMPLES,
        should_stop=should_stop,
    )


def tpe_asha_search(trainer: Trainer, batch_sizes: list[int], budget: int, seed: int) -> Searched:
    """Trials until the examples they trained on reach `budget`; the answer is the finished trial of the
    lowest final eval loss (a diverged trial is worth the untrained loss, as a diverged pick is)."""
    import optuna
    from optuna.trial import TrialState

    study = tpe_study(
        seed, optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=ASHA_REDUCTION)
    )
    spent, trained, finished = 0, 0, []
    while spent < budget:
        trained += 1
        trial = study.ask()
        config = suggest_config(trial, batch_sizes, trainer.spec.lr_range)
        record = asha_trial(trainer, config, seed, trial, budget - spent)
        spent += record.examples_seen
        if record.status in (RunStatus.SUCCESS, RunStatus.DIVERGED):
            diverged = record.status == RunStatus.DIVERGED or record.eval_loss is None
            loss = trainer.untrained if diverged else record.eval_loss
            study.tell(trial, loss)
            finished.append((loss, config))
        else:  # pruned (by the pruner or the budget) or failed
            study.tell(
                trial, state=TrialState.PRUNED if record.status == RunStatus.PRUNED else TrialState.FAIL
            )
    if not finished:  # the first trial is never pruned, so only a budget below one run gets here
        raise RuntimeError(f"TPE + ASHA finished no trial within {budget} examples")
    return Searched(min(finished)[1], spent, trained, len(finished))
