"""What the benchmarks share: the quality benchmark's tiny pretrained base model and its tasks, full runs
of a task cached by (B, LR, seed) on disk, the dense grid's ground truth, regret, the advisor's budget and
study, stored studies and `advisor check`'s good and bad thresholds, and running a suite, labels and JSON.

`bench/quality.py` scores the advisor against the other ways of choosing on these tasks (the searches it is
measured against are in `bench/searches.py`); every benchmark that reuses its base model, tasks, ground
truth, regret or run cache imports them from here.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from advisor.check import decide
from advisor.cli.recommend import knowledge_store, run_leased, start_study
from advisor.method_catalog import METHODS
from advisor.science.knowledge import StudyContext, stored_priors
from advisor.science.lr_grid import lr_grid
from advisor.science.recommendation import Recommendation
from advisor.specs import StudySpec, parse_spec
from advisor.storage.db import Database
from advisor.storage.knowledge import lookup
from proxy_runs import synthetic, tiny
from proxy_runs.data import PreparedData, prepare_data
from proxy_runs.engine import RunBudget, setup_proxy, train_proxy
from proxy_runs.models import load_model_and_tokenizer
from proxy_runs.runner import run_study

DEFAULT_CONFIG = (16, 2e-4)  # Unsloth / Axolotl's LoRA default (science.md §6)
ADVISOR_SHARE = 0.10  # the advisor's budget: 10% of the dense grid's compute
EVAL_EXAMPLES = 96
# Contenders are scored on these seeds: no choice and not the grid's best was made on any of them. A run's
# loss at an LR 0.2% away is as different as another seed's (training these tiny models is chaotic at that
# scale), so a contender's mean over 8 seeds carries about ±0.6% on these tasks.
FRESH_SEEDS = (1, 2, 4, 5, 10, 11, 12, 13)
# The yardstick of every regret on a task is the grid best's mean loss over these 16 fresh seeds. All 16
# (task, choice seed) pairs of a task share it, so its error shifts them all alike: on 4 seeds that was
# ±0.75%, as large as the regret target, and `add`'s reference happened to score 0.7% below its mean.
REFERENCE_SEEDS = (*FRESH_SEEDS, 14, 15, 16, 17, 18, 19, 20, 21)
TRUTH_SEEDS = (0, 8, 9)


@dataclass(frozen=True)
class Task:
    name: str  # an instruction task of proxy_runs.synthetic, unless `mixes` names several
    method: str
    rank: int  # ignored by full fine-tuning
    records: int  # 10% are held out for evaluation
    lr_range: tuple[float, float]  # the search range every contender is given (2 decades: an 8-LR grid)
    mixes: tuple[str, ...] = ()  # the synthetic tasks a mixed dataset draws from (default: `name` alone)

    @property
    def instruction_tasks(self) -> list[str]:
        return list(self.mixes or (self.name,))


@dataclass
class BenchConfig:
    tasks: list[Task]
    batch_sizes: list[int]
    epochs: float
    pretrain_examples: int
    hidden: int = 32
    max_seq_len: int = 40
    layers: int = 2


FULL = BenchConfig(
    [
        Task("reverse", "lora", 8, 1000, (3e-3, 3e-1)),
        # rsLoRA scales the adapter by α/√r instead of α/r: √32 ≈ 5.7× LoRA's at α = r, so a lower range.
        Task("add", "rslora", 32, 1000, (1e-3, 1e-1)),
        # DoRA at rank 4 on 450 examples wants large steps: its optimum sat on 0.2, the top of 3e-3 … 3e-1.
        Task("upper", "dora", 4, 500, (5e-3, 5e-1)),
        Task("repeat", "lora", 16, 2000, (3e-3, 3e-1)),
        # Three more since 2026-12-02, for methods whose LR scale differs (ranges centred by a probe on
        # seed 0 at B = 4 and 16, so that the dense grid's optimum is inside): PiSSA on a mixture of all
        # four tasks (optimum near 0.03); full fine-tuning (rank ignored), whose loss falls far lower and
        # whose bowl is flat from 0.003 to 0.02; LoRA+, which trains B at 16× the LR (optimum near 0.01).
        Task("mixed", "pissa", 8, 1200, (3e-3, 3e-1), mixes=("reverse", "add", "upper", "repeat")),
        Task("add_full", "full", 8, 600, (1e-3, 1e-1), mixes=("add",)),
        Task("reverse_plus", "lora_plus", 8, 700, (1e-3, 1e-1), mixes=("reverse",)),
    ],
    [4, 8, 16, 32],
    1.0,
    8000,
)
QUICK = BenchConfig(
    [Task("reverse", "lora", 8, 400, (3e-3, 2e-1)), Task("upper", "dora", 4, 400, (3e-3, 2e-1))],
    [4, 8, 16],
    1.0,
    3000,
)


# 1. Base model and tasks ------------------------------------------------------------------------------------


def build_base(folder: Path, cfg: BenchConfig) -> Path:
    """Pretrain a tiny Llama in full on synthetic text; the tokenizer also knows the tasks' vocabulary."""
    text = synthetic.text_records(2000, seed=1)
    corpus = synthetic.corpus_of(text) + synthetic.corpus_of(synthetic.instruction_records(2000, seed=2))
    init = tiny.save_tiny_model(
        folder / "init", "llama", corpus, vocab_size=384, hidden=cfg.hidden, layers=cfg.layers
    )
    data_path = synthetic.write_jsonl(text, folder / "pretrain.jsonl")
    spec = parse_spec(
        {
            "model": str(init),
            "method": "full",
            "dataset": {"path": str(data_path), "format": "text"},
            "training": {"max_seq_len": 64, "warmup_ratio": 0.05, "epochs": 100, "packing": True},
        }
    )
    setup = setup_proxy(spec)
    record = train_proxy(
        spec,
        batch_size=16,
        learning_rate=3e-3,
        setup=setup,
        eval_at_start=False,
        budget=RunBudget(max_examples=cfg.pretrain_examples),
        max_eval_examples=64,
    )
    print(
        f"base model: pretrained on {record.examples_seen} text blocks, eval loss {record.eval_loss:.3f} "
        f"({record.seconds:.0f} s)",
        file=sys.stderr,
    )
    base = folder / "base"
    setup.model.save_pretrained(base)  # type: ignore[operator]  # a PreTrainedModel behind nn.Module
    setup.tokenizer.save_pretrained(base)
    return base


def task_spec(base: Path, folder: Path, task: Task, cfg: BenchConfig) -> StudySpec:
    records = synthetic.instruction_records(task.records, seed=10, tasks=task.instruction_tasks)
    path = synthetic.write_jsonl(records, folder / f"{task.name}.jsonl")
    return parse_spec(
        {
            "model": str(base),
            "dataset": {"path": str(path)},
            "method": task.method,
            "rank": task.rank,
            "training": {"max_seq_len": cfg.max_seq_len, "epochs": cfg.epochs},
            "batch_sizes": cfg.batch_sizes,
            "lr_range": list(task.lr_range),
        }
    )


# 2. True losses ---------------------------------------------------------------------------------------------


# What a full run's loss depends on besides the task: the engine, the spec's defaults, the base model's making
# and the full run itself. A cached loss is reused only where all of these, the machine's CPU and torch are
# unchanged (runs are deterministic on one machine, not across machines). The study code is not among them:
# a change to the advisor keeps the ground truth.
RUN_SOURCES = (
    "proxy_runs/engine.py",
    "proxy_runs/data.py",
    "proxy_runs/models.py",
    "proxy_runs/loss.py",
    "proxy_runs/tiny.py",
    "proxy_runs/synthetic.py",
    "proxy_runs/methods",
    "advisor/specs.py",
)


def run_cache_file(folder: Path, task: Task, cfg: BenchConfig) -> Path:
    """Where a task's full-run losses are kept between runs of this benchmark on one machine."""
    root = Path(__file__).resolve().parents[1]
    paths = [root / name for name in RUN_SOURCES]
    sources = sorted(f for path in paths for f in ([path] if path.is_file() else path.rglob("*.py")))
    digest = hashlib.sha256()
    for source in sources:
        digest.update(source.read_bytes())
    for function in (build_base, task_spec, Trainer.loss):  # this file: the base model, the task, a run
        digest.update(inspect.getsource(function).encode())
    setting = {"task": asdict(task), "config": asdict(replace(cfg, tasks=[])), "torch": torch.__version__}
    digest.update(json.dumps([setting, cpu_model()], sort_keys=True).encode())
    return folder / f"{task.name}-{digest.hexdigest()[:16]}.json"


def cpu_model() -> str:
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else platform.processor()


@dataclass
class Trainer:
    """Full runs of one task, cached by (B, LR, seed) — in `cache_file` too, when given, so that a rerun
    on the same machine trains only what it has not; counts the examples each caller spends."""

    spec: StudySpec
    data: PreparedData
    cache: dict[tuple[int, float, int], float | None] = field(default_factory=dict)
    seconds: dict[tuple[int, float, int], float] = field(default_factory=dict)  # each run's, when timed
    untrained: float = math.nan  # eval loss before fine-tuning: what a diverged choice is worth
    cache_file: Path | None = None

    def __post_init__(self) -> None:
        self._load()

    def _load(self) -> None:
        if self.cache_file is not None and self.cache_file.exists():
            stored = json.loads(self.cache_file.read_text())
            self.untrained = stored["untrained"]
            for b, lr, s, loss, *timed in stored["runs"]:  # files written before 2026-12-02 hold no seconds
                self.cache[(b, lr, s)] = loss
                if timed and timed[0] is not None:
                    self.seconds[(b, lr, s)] = timed[0]

    def _store(self) -> None:
        """Merge this trainer's runs into the cache file; replaced whole, so that two benchmarks sharing it
        (two snapshots of the advisor side by side) never read half a file."""
        if self.cache_file is None:
            return
        self._load()
        runs = [[*key, loss, self.seconds.get(key)] for key, loss in self.cache.items()]
        self.cache_file.parent.mkdir(parents=True, exist_ok=True)
        partial = self.cache_file.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(json.dumps({"untrained": self.untrained, "runs": runs}))
        partial.replace(self.cache_file)

    @staticmethod
    def key(batch: int, lr: float, seed: int) -> tuple[int, float, int]:
        """A run's key in the cache (the LR rounded so that grid LRs computed two ways meet)."""
        return batch, round(lr, 12), seed

    def training_seconds(self, configs: list[Config], seeds: tuple[int, ...]) -> float | None:
        """What these runs took to train; None when any came from a cache written without times."""
        times = [self.seconds.get(self.key(*config, seed)) for config in configs for seed in seeds]
        return None if None in times else sum(t for t in times if t is not None)

    def loss(self, batch: int, lr: float, seed: int = 0) -> float | None:
        key = self.key(batch, lr, seed)
        if key not in self.cache:
            spec = self.spec.with_seed(seed)
            record = train_proxy(
                spec,
                batch_size=batch,
                learning_rate=lr,
                setup=setup_proxy(spec, data=self.data),
                eval_every=10**9,
                max_eval_examples=EVAL_EXAMPLES,
            )
            self.untrained = record.metrics["evals"][0]["eval_loss"]
            self.seconds[key] = record.seconds
            self.cache[key] = record.eval_loss if record.status == "success" else None
            self._store()
        return self.cache[key]

    def full_examples(self) -> int:
        return self.spec.training.real_run_examples(len(self.data.train))

    def score(self, batch: int, lr: float, seed: int = 0) -> float:
        loss = self.loss(batch, lr, seed)
        return self.untrained if loss is None else loss

    def scores(self, batch: int, lr: float, seeds: tuple[int, ...] = FRESH_SEEDS) -> list[float]:
        return [self.score(batch, lr, seed) for seed in seeds]

    def fresh_score(self, batch: int, lr: float) -> float:
        """Mean loss over seeds no contender chose with."""
        return statistics.fmean(self.scores(batch, lr))


Config = tuple[int, float]  # (batch size, LR)


def truth_loss(trainer: Trainer, config: Config) -> float:
    """A grid config's loss for picking the grid's best: its mean over TRUTH_SEEDS."""
    return statistics.fmean(trainer.score(*config, seed) for seed in TRUTH_SEEDS)


def grid_truth(trainer: Trainer, grid: list[Config]) -> tuple[Config, float]:
    losses = {config: truth_loss(trainer, config) for config in grid}
    best = min(losses, key=lambda c: losses[c])
    return best, losses[best]


def regret(
    trainer: Trainer,
    config: Config,
    best: Config,
    seeds: tuple[int, ...] = FRESH_SEEDS,
    reference_seeds: tuple[int, ...] = REFERENCE_SEEDS,
) -> tuple[float, float]:
    """(regret, its standard error): the config's mean loss over `seeds` (FRESH_SEEDS) against the grid
    best's over `reference_seeds` (REFERENCE_SEEDS), relative to the latter. Every contender picked its
    config on a choice seed and the grid on TRUTH_SEEDS, so judging on those would reward whoever was
    luckiest there (the grid's minimum of 32 noisy runs included)."""
    mine, reference = trainer.scores(*config, seeds), trainer.scores(*best, reference_seeds)
    yardstick = statistics.fmean(reference)
    variance = statistics.variance(mine) / len(mine) + statistics.variance(reference) / len(reference)
    return (statistics.fmean(mine) - yardstick) / yardstick, math.sqrt(variance) / yardstick


# 3. The advisor: its budget and its study -------------------------------------------------------------------


def with_advisor_budget(spec: StudySpec, grid_examples: int) -> StudySpec:
    """`spec` with the advisor's budget: ADVISOR_SHARE of the grid's examples."""
    budget = {"proxy_examples": max(1, int(ADVISOR_SHARE * grid_examples)), "proxy_seconds": None}
    return spec.model_copy(update={"budget": spec.budget.model_copy(update=budget)})


def advisor_spec(trainer: Trainer, grid_examples: int, seed: int) -> StudySpec:
    """The task's spec on `seed` with the advisor's budget."""
    return with_advisor_budget(trainer.spec.with_seed(seed), grid_examples)


def advisor(trainer: Trainer, grid_examples: int, seed: int) -> tuple[tuple[int, float], int, Recommendation]:
    result = run_study(advisor_spec(trainer, grid_examples, seed))
    rec = result.recommendation
    assert isinstance(rec, Recommendation), rec
    return (rec.batch_size, rec.learning_rate), rec.cost.examples_seen, rec


# 4. Ground truth --------------------------------------------------------------------------------------------


@dataclass
class Truth:
    """A task's ground truth: its trainer (which caches every full run) and the dense grid's best."""

    trainer: Trainer
    lrs: list[float]
    grid: list[tuple[int, float]]
    best: tuple[int, float]
    best_loss: float
    seconds: float | None  # the grid's training time on TRUTH_SEEDS; None when a cache holds no times

    @property
    def grid_examples(self) -> int:
        return len(self.grid) * self.trainer.full_examples()


def task_lrs(task: Task) -> list[float]:
    """The dense grid's LRs: 4 per decade over the task's range."""
    low, high = task.lr_range
    return lr_grid(math.sqrt(low * high), half_width_decades=math.log10(high / low) / 2, bounds=task.lr_range)


def ground_truth(
    base: Path, folder: Path, task: Task, cfg: BenchConfig, cache_folder: Path | None = None
) -> Truth:
    spec = task_spec(base, folder, task, cfg)
    loaded = load_model_and_tokenizer(spec.model)
    data = prepare_data(
        spec.dataset,
        loaded.tokenizer,
        is_seq2seq=False,
        max_seq_len=spec.training.max_seq_len,
        packing=spec.training.packing,
    )
    cache_file = run_cache_file(cache_folder, task, cfg) if cache_folder is not None else None
    trainer = Trainer(spec, data, cache_file=cache_file)
    lrs = task_lrs(task)
    grid = [(b, lr) for b in cfg.batch_sizes for lr in lrs]
    best, best_loss = grid_truth(trainer, grid)
    return Truth(trainer, lrs, grid, best, best_loss, trainer.training_seconds(grid, TRUTH_SEEDS))


def loss_forecast_check(trainer: Trainer, advised: Config, rec: Recommendation) -> dict[str, Any]:
    """The advisor's predicted eval loss against what its pick reached in full runs (the mean over
    FRESH_SEEDS), beside the top rung's L* that it used to report: relative errors, and whether the 90%
    interval held the outcome."""
    actual = trainer.fresh_score(*advised)
    forecast = rec.evidence.get("loss_forecast") or {}
    predicted, interval = rec.predicted_eval_loss, rec.predicted_eval_loss_interval
    top_rung = forecast.get("from_loss")
    return {
        "actual": actual,
        "predicted": predicted,
        "interval": interval,
        "top_rung_loss": top_rung,
        "measured_at": forecast.get("measured_at"),
        "error": predicted / actual - 1 if predicted is not None else None,
        "top_rung_error": top_rung / actual - 1 if top_rung is not None else None,
        "covered": interval is not None and interval[0] <= actual <= interval[1],
    }


def batch_penalties(truth: Truth) -> dict[int, dict[str, float]]:
    """Per batch size, its best LR on the grid and how much worse than the grid's best it is (on the
    TRUTH_SEEDS means, which picked the best: a slight winner's curse in the best's favour)."""
    penalties = {}
    for batch in sorted({b for b, _ in truth.grid}):
        lr = min((c for c in truth.grid if c[0] == batch), key=lambda c: truth_loss(truth.trainer, c))[1]
        loss = truth_loss(truth.trainer, (batch, lr))
        penalties[batch] = {"learning_rate": lr, "regret": loss / truth.best_loss - 1}
    return penalties


# 5. Stored studies and `advisor check` ----------------------------------------------------------------------


# `advisor check` should pass a grid config within 2% of the grid's best loss and fail one over 5% worse
# (seed noise is 0.6–2.5% on these tasks, so between the two either verdict is defensible).
GOOD_REGRET, BAD_REGRET = 0.02, 0.05


def context_of(spec: StudySpec, data: PreparedData) -> StudyContext:
    """The warm-start context of a spec on its prepared data, as `run_study` builds it."""
    return StudyContext.from_spec(
        spec, n_train=len(data.train), fingerprint=data.fingerprint.get("content_sha256")
    )


def stored_study(db: Database, spec: StudySpec) -> tuple[int, Recommendation]:
    """A whole study the way `advisor recommend` runs it: stored, leased, its answer written by the queue."""
    lease = start_study(db, spec)
    result = run_leased(db, lease, spec, budget=None)
    assert isinstance(result.recommendation, Recommendation), result.recommendation
    return lease.study_id, result.recommendation


def instant_answer(db: Database, spec: StudySpec, data: PreparedData) -> Recommendation:
    priors = stored_priors(knowledge_store(db), context_of(spec, data))
    assert priors.provisional is not None, "the store holds a comparable study, so there is an instant answer"
    return priors.provisional


def stored_answer(db: Database, spec: StudySpec, dataset_examples: int) -> dict[str, Any]:
    """What `advisor check` reads for the spec's context: the lookup that POST /v1/check runs."""
    with db.transaction(write=False) as session:
        return lookup(
            session,
            model=spec.model,
            method=spec.method,
            rank=spec.rank,
            alpha=spec.alpha,
            dataset_fingerprint=None,
            dataset_examples=dataset_examples,
        )


def answer_summary(answer: dict[str, Any]) -> dict[str, Any]:
    """A stored answer's numbers that the check acts on."""
    return {
        "batch_size": answer["batch_size"],
        "learning_rate": answer["learning_rate"],
        # κ as `advisor check` applies it (the stored rule's, held within its bounds)
        "kappa": decide(answer, batch_size=1, learning_rate=1.0).kappa,
        "band": answer["details"].get("band"),
        "lr_interval": (answer["details"].get("confidence") or {}).get("lr_interval"),
    }


def verdict_counts(verdicts: list[dict[str, Any]], regret_key: str = "regret") -> dict[str, Any]:
    good = [v for v in verdicts if v[regret_key] <= GOOD_REGRET]
    bad = [v for v in verdicts if v[regret_key] > BAD_REGRET]
    passed = [v for v in verdicts if v["outcome"] == "pass"]
    return {
        "good": len(good),
        "good_passed": sum(v["outcome"] == "pass" for v in good),
        "bad": len(bad),
        "bad_failed": sum(v["outcome"] == "fail" for v in bad),
        "passed": len(passed),
        "worst_passed_regret": max((v[regret_key] for v in passed), default=None),
    }


# 6. Running a suite of tasks, tables and JSON ---------------------------------------------------------------


def method_label(task: dict[str, Any]) -> str:
    """'lora r8', or the method alone where it has no rank (full fine-tuning, prompt tuning)."""
    return f"{task['method']} r{task['rank']}" if METHODS[task["method"]].uses_rank else task["method"]


def only_tasks(cfg: BenchConfig, names: list[str] | None, parser: argparse.ArgumentParser) -> BenchConfig:
    """`cfg` with only the tasks `--tasks` named (all of them when it named none); an unknown name is a
    usage error."""
    if not names:
        return cfg
    unknown = set(names) - {t.name for t in cfg.tasks}
    if unknown:
        parser.error(f"--tasks: no task named {', '.join(sorted(unknown))}")
    return replace(cfg, tasks=[t for t in cfg.tasks if t.name in names])


def run_suite(
    cfg: BenchConfig, run_one: Callable[[Path, Path, Task], dict[str, Any]]
) -> list[dict[str, Any]]:
    """Pretrain the base model in a temporary folder, then `run_one(base, folder, task)` for every task."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        base = build_base(folder, cfg)
        tasks = []
        for task in cfg.tasks:
            tasks.append(run_one(base, folder, task))
            print(f"{task.name}: done at {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return tasks


def write_results(
    path: str,
    started: float,
    cfg: BenchConfig,
    tasks: list[dict[str, Any]],
    summary: dict[str, Any],
    **settings: Any,
) -> None:
    """The benchmark's JSON: its config and `settings`, the machine, every task, the summary, the time."""
    out = {
        "config": asdict(cfg),
        **settings,
        "machine": "2-core CPU, no GPU",
        "tasks": tasks,
        "summary": summary,
        "seconds": round(time.perf_counter() - started, 1),
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(out, indent=2, default=float))
    print(f"wrote {path} ({out['seconds']:.0f} s)")
