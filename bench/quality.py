"""Regret benchmark of the recommendation engine (issue 4): how close does each way of choosing (B, LR) get
to the best config of a dense grid, and at what compute?

1. A base model is pretrained here: a tiny Llama trained in full on synthetic text (a small grammar), so
   fine-tuning starts from a model that knows the tokens, like a real base model.
2. Each task is a fine-tune of that base on instruction records (reverse, add, upper, repeat, or a mixture),
   and the 7 tasks differ in method (LoRA, rsLoRA, DoRA, PiSSA, LoRA+, full fine-tuning), rank (4 … 32) and
   dataset size (450 … 1800 examples).
3. Ground truth: every (B, LR) of a dense grid (4 LRs per decade over the search range × candidate batch
   sizes) is trained for the full run on 3 seeds (0, 8, 9); the grid's best is the config of the lowest
   mean loss over them. Seed noise: the grid's best config's spread over seeds.
4. Contenders, each returning one (B, LR) chosen on a choice seed (0 by default; `--choice-seed 0 3 6 7`
   repeats every contender on several, against one ground truth, to see how much of the table is luck),
   scored by regret = (its config's mean loss over 8 fresh seeds − the grid best's mean loss over 16 fresh
   seeds) / the latter. Fresh seeds remove the winner's curse (the grid's best and a search's best are
   minima of noisy runs). Evaluation runs are not counted as anyone's compute.
5. The advisor's predicted eval loss is scored against its pick's mean loss over the 8 fresh seeds, and the
   gradient noise scale along the grid best's run is set beside what each batch size loses.
   - default: B = 16, LR = 2e-4 (Unsloth / Axolotl's LoRA default); no compute.
   - LR range test at B = 16: short runs (8 steps) at every grid LR, the LR of the lowest loss ÷ 10
     (fastai's rule of thumb).
   - advisor: `run_study` with a budget of 10% of the grid's compute (examples seen).
   - random search and Optuna TPE: full runs at random / TPE-suggested (B, LR) until they have used the
     advisor's compute; the best of their runs (by its own eval loss) is their answer.
   - Optuna TPE + ASHA: TPE with Optuna's successive-halving pruner on the same compute; trials follow the
     real run's schedule and the worse two thirds stop after a ninth and after a third of it, so it tries
     several times as many configs; the best finished trial is its answer.

    python -m bench.quality [--quick] [--choice-seed 0 [3 ...]] [--tasks upper ...] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bench import common
from bench.common import (
    DEFAULT_CONFIG,
    FRESH_SEEDS,
    FULL,
    QUICK,
    REFERENCE_SEEDS,
    TRUTH_SEEDS,
    BenchConfig,
    Config,
    Task,
    Trainer,
    Truth,
    advisor,
    batch_penalties,
    ground_truth,
    loss_forecast_check,
    method_label,
    only_tasks,
    regret,
    run_suite,
    write_results,
)
from bench.searches import Searched, lr_range_test, random_search, tpe_asha_search, tpe_search
from proxy_runs.engine import setup_proxy, train_proxy
from proxy_runs.probes.report import probe_noise_scale

# Until 2026-12-02 regrets were seed-paired differences on the first 4 fresh seeds; pairing does not help
# here (seed effects are not shared between configs: paired differences spread as much as unpaired ones),
# and the JSON keeps that figure as `regret_paired_4` for comparison.
PAIRED_SEEDS = FRESH_SEEDS[:4]
# Every contender; `advisor_median` is the advisor's own study answered with LR*'s median, before the move
# down for caution (`advisor.science.transfer.with_cautious_lr`): what that last step is worth.
CONTENDERS = ("default", "lr_range_test", "advisor", "advisor_median", "random_search", "tpe", "tpe_asha")


def paired_regret(trainer: Trainer, config: Config, best: Config) -> float:
    """The regret this file reported before 2026-12-02: seed-paired differences on PAIRED_SEEDS."""
    paired = [trainer.score(*config, s) - trainer.score(*best, s) for s in PAIRED_SEEDS]
    return statistics.fmean(paired) / statistics.fmean(trainer.scores(*best, PAIRED_SEEDS))


# One task, all contenders -----------------------------------------------------------------------------------


def choose(
    trainer: Trainer,
    truth: Truth,
    cfg: BenchConfig,
    choice_seed: int,
    earlier: dict[str, Any] | None = None,
    contenders: set[str] | None = None,
) -> dict[str, Any]:
    """Every contender's pick on `choice_seed`, its compute and its regret against the grid's best.

    `earlier` is this (task, seed)'s choice from an earlier run of this benchmark on this machine: where the
    advisor's study trained on as many examples as it did then, the other contenders' picks are taken from it
    (each depends only on its seed and on those examples, its budget) and only the advisor is run again.
    `contenders` limits the rows to these (the advisor always: the others' budget is its compute)."""
    started = time.perf_counter()
    advised, advisor_examples, rec = advisor(trainer, truth.grid_examples, choice_seed)
    advisor_seconds = time.perf_counter() - started
    rows = {"default": Searched(DEFAULT_CONFIG, 0, 0, 0)}
    # A study's runs: every rung's, second seeds, horizon and edge runs.
    rows["advisor"] = Searched(advised, advisor_examples, rec.cost.runs, None)
    # The advisor without its last step: LR*'s median, before the move down for caution (the same study).
    median = rec.evidence.get("caution", {}).get("lr_star_median", rec.learning_rate)
    rows["advisor_median"] = rows["advisor"]._replace(config=(rec.batch_size, median))
    if earlier is not None and earlier["contenders"]["advisor"]["examples"] == advisor_examples:
        for name, row in earlier["contenders"].items():
            config = (row["batch_size"], row["learning_rate"])
            # JSON written before 2026-12-03 (late) has no counts of configs trained.
            counts = (row.get("configs_trained", 0), row.get("configs_finished"))
            rows.setdefault(name, Searched(config, row["examples"], *counts))
    else:
        searches: dict[str, Callable[[], Searched]] = {
            "lr_range_test": lambda: lr_range_test(trainer, truth.lrs, choice_seed),
            "random_search": lambda: random_search(trainer, cfg, advisor_examples, seed=choice_seed),
            "tpe": lambda: tpe_search(trainer, cfg, advisor_examples, seed=choice_seed),
            "tpe_asha": lambda: tpe_asha_search(trainer, cfg.batch_sizes, advisor_examples, seed=choice_seed),
        }
        rows |= {name: run() for name, run in searches.items() if contenders is None or name in contenders}
    if contenders is not None:
        rows = {name: row for name, row in rows.items() if name in contenders or name == "advisor"}
    regrets = {name: regret(trainer, row.config, truth.best) for name, row in rows.items()}
    return {
        "choice_seed": choice_seed,
        "advisor_seconds": round(advisor_seconds, 1),
        "advisor_confidence": rec.confidence.label,
        "advisor_reasoning": rec.reasoning,
        "loss_forecast": loss_forecast_check(trainer, advised, rec),
        "contenders": {
            name: {
                "batch_size": row.config[0],
                "learning_rate": row.config[1],
                "regret": regrets[name][0],
                "regret_se": regrets[name][1],
                "regret_paired_4": paired_regret(trainer, row.config, truth.best),
                "examples": row.examples,
                "compute_share": row.examples / truth.grid_examples,
                "configs_trained": row.trained,
                "configs_finished": row.finished,
            }
            for name, row in rows.items()
        },
    }


NOISE_FRACTIONS = (0.0, 1 / 3, 1.0)  # where in the grid best's full run the noise scale is measured


def noise_scale_along_run(trainer: Trainer, config: Config) -> list[dict[str, Any]]:
    """The gradient noise scale B_simple (McCandlish et al. 2018; `proxy_runs.probes.noise`) at the start,
    a third of the way through and at the end of the grid best's full run (seed 0): the critical batch size
    it estimates, beside `batch_penalties`, says whether it could stand in for comparing batch sizes."""
    measured = []
    for fraction in NOISE_FRACTIONS:
        setup = setup_proxy(trainer.spec, data=trainer.data)
        stop_at = int(fraction * trainer.full_examples())
        if stop_at:
            train_proxy(
                trainer.spec,
                batch_size=config[0],
                learning_rate=config[1],
                setup=setup,  # trained in place: the probe below sees the model where the run stopped
                eval_every=10**9,
                max_eval_examples=8,
                should_stop=(lambda p, n=stop_at: p.examples_seen >= n) if fraction < 1 else None,
            )
        noise = probe_noise_scale(setup, small_batch=2, big_batch=32, draws=32)
        measured.append({"fraction": fraction, "b_simple": noise.b_simple, "interval": noise.interval})
    return measured


def run_task(
    base: Path,
    folder: Path,
    task: Task,
    cfg: BenchConfig,
    choice_seeds: list[int],
    cache_folder: Path | None = None,
    earlier: dict[tuple[str, int], dict[str, Any]] | None = None,
    contenders: set[str] | None = None,
) -> dict[str, Any]:
    """One task: the ground truth, the seed noise, and every contender on every choice seed (`earlier`:
    choices of an earlier run by (task, seed), see `choose`)."""
    truth = ground_truth(base, folder, task, cfg, cache_folder)
    trainer, best = truth.trainer, truth.best
    seed_losses = [trainer.loss(*best, seed=s) for s in sorted({*TRUTH_SEEDS, *REFERENCE_SEEDS})]
    finite = [v for v in seed_losses if v is not None]
    noise = statistics.stdev(finite) / truth.best_loss if len(finite) > 1 else math.nan
    single = min(truth.grid, key=lambda c: trainer.score(*c, seed=TRUTH_SEEDS[0]))
    return {
        "task": task.name,
        "method": task.method,
        "rank": task.rank,
        "train_examples": trainer.full_examples(),
        "grid_best": {
            "batch_size": best[0],
            "learning_rate": best[1],
            "eval_loss": truth.best_loss,  # mean over TRUTH_SEEDS
            "reference_loss": statistics.fmean(trainer.scores(*best, REFERENCE_SEEDS)),
        },
        # What the grid's best was when it was picked on one seed (this file's figures before 2026-12-02).
        "single_seed_best": {
            "batch_size": single[0],
            "learning_rate": single[1],
            "regret": regret(trainer, single, best)[0],
        },
        "grid_configs": len(truth.grid),
        "grid_examples": truth.grid_examples,
        "grid_seconds": None if truth.seconds is None else round(truth.seconds, 1),
        "seed_noise_relative": noise,
        "batch_penalties": batch_penalties(truth),
        "noise_scale": noise_scale_along_run(trainer, best),
        "seed_losses": seed_losses,
        "choices": [
            choose(trainer, truth, cfg, seed, (earlier or {}).get((task.name, seed)), contenders)
            for seed in choice_seeds
        ],
    }


def pairs(tasks: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Every (task, choice) pair of a run."""
    return [(t, c) for t in tasks for c in t["choices"]]


def summarise(tasks: list[dict[str, Any]]) -> dict[str, Any]:
    """Per contender, over every (task, choice seed) pair: median, mean and worst regret, the median per
    choice seed, and the median compute; the advisor's wins against TPE."""
    everything = pairs(tasks)
    names = list(everything[0][1]["contenders"])
    seeds = [c["choice_seed"] for c in tasks[0]["choices"]]

    def regrets(name: str, seed: int | None = None) -> list[float]:
        return [c["contenders"][name]["regret"] for _, c in everything if seed in (None, c["choice_seed"])]

    summary: dict[str, Any] = {
        name: {
            "median_regret": statistics.median(regrets(name)),
            "mean_regret": statistics.fmean(regrets(name)),
            "worst_regret": max(regrets(name)),
            "median_regret_by_choice_seed": {seed: statistics.median(regrets(name, seed)) for seed in seeds},
            "median_regret_se": statistics.median(c["contenders"][name]["regret_se"] for _, c in everything),
            "median_regret_paired_4": statistics.median(
                c["contenders"][name]["regret_paired_4"] for _, c in everything
            ),
            "median_compute_share": statistics.median(
                c["contenders"][name]["compute_share"] for _, c in everything
            ),
            # JSON written before 2026-12-03 (late) holds no counts: 0 configs trained there.
            "median_configs_trained": statistics.median(
                c["contenders"][name].get("configs_trained", 0) for _, c in everything
            ),
            "median_configs_finished": median_or_none(
                [c["contenders"][name].get("configs_finished") for _, c in everything]
            ),
        }
        for name in names
    }
    for name in names:
        summary[name]["median_regret_interval"] = median_interval(tasks, name)
    for rival in ("tpe", "tpe_asha"):  # JSON written before 2026-12-03 has no tpe_asha
        if rival in names:
            summary[f"advisor_beats_{rival}"] = sum(
                c["contenders"]["advisor"]["regret"] < c["contenders"][rival]["regret"] for _, c in everything
            )
    summary["pairs"] = len(everything)
    forecasts = [c["loss_forecast"] for _, c in everything if c["loss_forecast"]["error"] is not None]
    if forecasts:
        summary["loss_forecast"] = {
            "median_abs_error": statistics.median(abs(f["error"]) for f in forecasts),
            "worst_abs_error": max(abs(f["error"]) for f in forecasts),
            "median_abs_top_rung_error": statistics.median(abs(f["top_rung_error"]) for f in forecasts),
            "covered": sum(f["covered"] for f in forecasts),
            "forecasts": len(forecasts),
        }
    summary["median_seed_noise"] = statistics.median(t["seed_noise_relative"] for t in tasks)
    # Compute above is training examples; wall-clock time also pays per-run setup and evaluations, which on
    # these tiny models weigh as much as training: the advisor's seconds against one seed of the grid's.
    timed = [(t, c) for t, c in everything if t["grid_seconds"] is not None]  # not from a cache without times
    summary["advisor_wall_clock_share"] = (
        statistics.median(c["advisor_seconds"] / (t["grid_seconds"] / len(TRUTH_SEEDS)) for t, c in timed)
        if timed
        else None
    )
    return summary


def median_or_none(values: list[Any]) -> float | None:
    """The median of the values that are not None; None when all are."""
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


BOOTSTRAP_REPLICATES = 2000


def median_interval(tasks: list[dict[str, Any]], name: str, level: float = 0.9) -> tuple[float, float]:
    """A cluster bootstrap of a contender's median regret: resample the tasks, then the choice seeds within
    each (pairs of one task share its ground truth and yardstick, so they are not independent)."""
    rng = random.Random(0)
    medians = []
    for _ in range(BOOTSTRAP_REPLICATES):
        sample = []
        for task in rng.choices(tasks, k=len(tasks)):
            sample += [
                c["contenders"][name]["regret"] for c in rng.choices(task["choices"], k=len(task["choices"]))
            ]
        medians.append(statistics.median(sample))
    medians.sort()
    tail = int((1 - level) / 2 * BOOTSTRAP_REPLICATES)
    return medians[tail], medians[-tail - 1]


def print_table(tasks: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    names = list(tasks[0]["choices"][0]["contenders"])
    print(
        f"{'task':<36}{'best (B, LR) → loss':<22}{'seed':>5}"
        + "".join(f"{n:>15}" for n in names)
        + f"{'seed noise':>12}"
    )
    for t in tasks:
        best = t["grid_best"]
        head = f"({best['batch_size']}, {best['learning_rate']:.3g}) → {best['eval_loss']:.4f}"
        label = f"{t['task']} ({method_label(t)}, N={t['train_examples']})"
        for i, c in enumerate(t["choices"]):
            cells = "".join(f"{c['contenders'][n]['regret']:>14.2%} " for n in names)
            first = (label, head, f"{t['seed_noise_relative']:>11.2%}") if i == 0 else ("", "", "")
            print(f"{first[0]:<36}{first[1]:<22}{c['choice_seed']:>5}{cells}{first[2]}")
    for seed in summary[names[0]]["median_regret_by_choice_seed"]:
        cells = "".join(f"{summary[n]['median_regret_by_choice_seed'][seed]:>14.2%} " for n in names)
        print(f"{'median, choice seed':<58}{seed:>5}{cells}")
    for stat in (
        "median_regret",
        "mean_regret",
        "worst_regret",
        "median_regret_se",
        "median_regret_paired_4",
    ):
        label = f"{stat.replace('_', ' ')} ({summary['pairs']} pairs)"
        print(f"{label:<63}" + "".join(f"{summary[n][stat]:>14.2%} " for n in names))
    intervals = [summary[n]["median_regret_interval"] for n in names]
    cells = "".join(f"{f'{lo * 100:.2f}…{hi * 100:.2f}%':>14} " for lo, hi in intervals)
    print(f"{'median regret, 90% cluster bootstrap':<63}{cells}")
    print(f"{'compute':<63}" + "".join(f"{summary[n]['median_compute_share']:>14.1%} " for n in names))
    print(
        f"{'configs trained (median)':<63}"
        + "".join(f"{summary[n]['median_configs_trained']:>14.0f} " for n in names)
    )
    finished = [summary[n]["median_configs_finished"] for n in names]
    cells = "".join(f"{'—' if f is None else f'{f:.0f}':>14} " for f in finished)
    print(f"{'… of them run to the end, unpruned (median)':<63}{cells}")
    share = summary["advisor_wall_clock_share"]
    timed = "not timed (a cache without times)" if share is None else f"{share:.0%} of one seed of the grid's"
    wins = [
        f"{label} in {summary[key]} of {summary['pairs']} pairs"
        for label, key in (("TPE", "advisor_beats_tpe"), ("TPE + ASHA", "advisor_beats_tpe_asha"))
        if key in summary
    ]
    print(
        ("advisor beats " + ", ".join(wins) + "; " if wins else "")
        + f"median seed noise {summary['median_seed_noise']:.2%}; the advisor's wall-clock time is "
        f"{timed} (median)"
    )
    print_loss_forecasts(tasks, summary.get("loss_forecast"))
    print_noise_scales(tasks)


def print_noise_scales(tasks: list[dict[str, Any]]) -> None:
    """B_simple along the grid best's run beside how much each batch size's best config loses."""
    print("\ngradient noise scale B_simple (start, a third in, end of the grid best's run); batch penalties")
    for t in tasks:
        scales = " / ".join(f"{m['b_simple']:.3g}" if m["b_simple"] else "—" for m in t["noise_scale"])
        batches = ", ".join(f"B={b}: {v['regret']:+.1%}" for b, v in t["batch_penalties"].items())
        print(f"{t['task']:<10}B_simple {scales:<24}{batches}")


def print_loss_forecasts(tasks: list[dict[str, Any]], overall: dict[str, Any] | None) -> None:
    """Predicted eval loss (at the real run's length) against the pick's loss in full runs."""
    print(
        f"\n{'task':<10}{'seed':>5}{'top-rung L*':>13}{'predicted':>11}{'90% interval':>19}"
        f"{'actual':>9}{'error':>9}"
    )
    for t in tasks:
        for c in t["choices"]:
            f = c["loss_forecast"]
            if f["predicted"] is None:
                continue
            low, high = f["interval"] or (math.nan, math.nan)
            print(
                f"{t['task']:<10}{c['choice_seed']:>5}{f['top_rung_loss'] or math.nan:>13.4f}"
                f"{f['predicted']:>11.4f}{f'{low:.3f} … {high:.3f}':>19}{f['actual']:>9.4f}{f['error']:>9.2%}"
            )
    if overall:
        print(
            f"loss forecast: median |error| {overall['median_abs_error']:.2%} (the top rung's L*: "
            f"{overall['median_abs_top_rung_error']:.2%}), worst {overall['worst_abs_error']:.2%}; the 90% "
            f"interval held the outcome in {overall['covered']} of {overall['forecasts']}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 tasks, 3 batch sizes, a shorter base model")
    parser.add_argument("--json", default="bench/out/quality.json")
    parser.add_argument(
        "--choice-seed",
        type=int,
        nargs="+",
        default=[0],
        help="the seeds every contender chooses on, against one ground truth (none of the scoring seeds)",
    )
    parser.add_argument("--tasks", nargs="+", metavar="NAME", help="only these tasks (default: all)")
    parser.add_argument(
        "--cache",
        metavar="FOLDER",
        help="keep every full run's loss here and reuse it on a rerun on this machine (the ground truth and "
        "the contenders' scoring runs): a change to the advisor then costs only its own study and new picks",
    )
    parser.add_argument(
        "--contenders",
        nargs="+",
        choices=CONTENDERS,
        help="only these contenders besides the advisor (default: all)",
    )
    parser.add_argument(
        "--reuse",
        metavar="JSON",
        help="an earlier run's JSON on this machine: the contenders other than the advisor keep their picks "
        "from it wherever the advisor trained on as many examples as then (a change to the advisor's choice "
        "alone then costs its studies and the new picks' scoring runs)",
    )
    parser.add_argument(
        "--advisor-share",
        type=float,
        default=common.ADVISOR_SHARE,
        help="the advisor's budget as a share of the grid's examples (default 0.10, the issue's target; the "
        "other searchers get what the advisor spent)",
    )
    parser.add_argument(
        "--reprint", metavar="JSON", help="summarise and print an earlier run's JSON again, without training"
    )
    args = parser.parse_args()
    if args.reprint:
        tasks = json.loads(Path(args.reprint).read_text())["tasks"]
        summary = summarise(tasks)
        print_table(tasks, summary)
        return
    if not 0 < args.advisor_share <= 1:
        parser.error(f"--advisor-share: must be in (0, 1], got {args.advisor_share}")
    common.ADVISOR_SHARE = args.advisor_share  # read by with_advisor_budget: one benchmark run, one share
    scoring = set(args.choice_seed) & set(REFERENCE_SEEDS)
    if scoring:
        parser.error(f"--choice-seed: {sorted(scoring)} are scoring seeds {REFERENCE_SEEDS}")
    torch.set_num_threads(1)  # tiny models: one thread is as fast, and the machine is shared
    cfg = only_tasks(QUICK if args.quick else FULL, args.tasks, parser)
    started = time.perf_counter()
    cache = Path(args.cache) if args.cache else None
    earlier = earlier_choices(Path(args.reuse)) if args.reuse else None
    tasks = run_suite(
        cfg,
        lambda base, folder, task: run_task(
            base, folder, task, cfg, args.choice_seed, cache, earlier, set(args.contenders or CONTENDERS)
        ),
    )
    summary = summarise(tasks)
    write_results(
        args.json,
        started,
        cfg,
        tasks,
        summary,
        quick=args.quick,
        choice_seeds=args.choice_seed,
        advisor_share=common.ADVISOR_SHARE,
    )
    print_table(tasks, summary)


def earlier_choices(path: Path) -> dict[tuple[str, int], dict[str, Any]]:
    """An earlier run's choices by (task, choice seed)."""
    tasks = json.loads(path.read_text())["tasks"]
    return {(t["task"], c["choice_seed"]): c for t in tasks for c in t["choices"]}


if __name__ == "__main__":
    main()
