"""Recipe fidelity (issue 31): does a study started from the user's own training config pick the (B, LR)
that the real run, trained exactly as that config says, does best with? And what does each copied recipe
field buy?

1. A tiny Llama base model is pretrained on synthetic text (`bench/common.py`'s `build_base`).
2. Each task is a real tool's config file, written by this benchmark into a temporary folder next to the
   task's data and pointing at the base model: an Axolotl YAML (LoRA on all linear layers, no gradient
   clipping, sample packing, cosine with 10% warm-up) and a TRL `SFTConfig` JSON (LoRA on seven named
   modules, clipping at 0.3, packing, linear with 10 warm-up steps, β2 = 0.95). Each sets every field the
   ablation below resets to something other than the study spec's default.
3. The reference fine-tune (`bench/reference_loop.py`) follows each tool's documented semantics, in plain
   transformers / PEFT / torch, reading the config file with its own small readers (`read_recipe`), not
   through `advisor.training_configs` nor `proxy_runs`' engine: PEFT LoraConfig with the config's targets,
   rank, α and dropout; torch AdamW with its betas, ε and weight decay; `transformers.get_scheduler` with
   the config's schedule and warm-up; clipping at its max_grad_norm (0: none, as in the Trainer);
   micro-batch × accumulation with the loss summed over the effective batch's target tokens (the Trainer's
   `num_items_in_batch`); whole examples packed into `sequence_len` rows with positions restarting per
   example, or one example per row; the loss on the response (completion) only; the config's epochs, with
   the Trainer's steps per epoch (⌈micro-batches / accumulation⌉).
4. Ground truth per task: every (B, LR) of a dense grid, the config's candidate batches × 4 LRs per decade
   over 1e-5 … 1e-1, trained on TRUTH_SEEDS; the grid's best has the lowest mean eval loss over them.
   Regret of a pick = (its mean eval loss over FRESH_SEEDS − the grid best's over REFERENCE_SEEDS) / the
   latter, every run the reference fine-tune on the config's true recipe.
5. The study from the config: `load_config` → `study_spec(batch_sizes=the candidates, lr_range=the same
   four decades, budget=5% of the grid's compute)` → `run_study`, on CHOICE_SEEDS. The grid's compute is
   its tokens (one seed of every config); the budget, in the study's own examples, buys as many tokens.
6. Ablation: the same study with one field left at the study spec's default instead of copied (target
   modules → PEFT's default, q_proj and v_proj; packing → off; max_grad_norm → 1.0; warm-up → 3%), its pick
   scored on the config's true recipe as above.

Sizes: the full run trains 2 tasks × 4 batches × 17 LRs × 3 seeds = 408 reference runs for the ground
truth, 30 studies (2 tasks × 3 choice seeds × (1 + 4 ablations)) and the picks' scoring runs: 43 minutes
on the project's 2-core machine, one thread, beside other jobs (RESULTS.md). `--quick` runs one task on a
coarse grid (2 LRs per decade over 1e-4 … 1e-1, 2 batches, 2 seeds) with one choice seed, to check the
plumbing in a few minutes; its figures mean nothing. `--cache DIR` keeps every reference run's loss and every
study's pick, keyed by the code and machine they depend on, so a rerun trains only what changed.

    python -m bench.recipe_fidelity [--quick] [--cache DIR] [--json FILE] [--tasks NAME ...] [--reprint JSON]
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import inspect
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch

from advisor.records import RunStatus
from advisor.science.recommendation import Recommendation
from advisor.specs import BudgetSpec, StudySpec, TrainingSpec
from advisor.training_configs import load_config
from bench.common import BenchConfig, build_base, cpu_model  # the quality benchmark's tiny pretrained base
from bench.reference_loop import (  # the real run, trained as its config says
    Recipe,
    Row,
    RunResult,
    adapted_model,
    axolotl_recipe,
    collate,
    encode,
    eval_loss,
    held_out_rows,
    load_base,
    pack,
    read_recipe,
    reference_finetune,
    summed_loss,
    training_rows,
    trl_recipe,
    warmup_steps,
    write_axolotl_task,
    write_trl_task,
)
from proxy_runs import synthetic
from proxy_runs.runner import prepared_data, run_study

STUDY_SHARE = 0.05  # the study's budget: 5% of the dense grid's compute (one seed of it)
REGRET_TARGET = 0.005  # issue 31: the pick within 0.5% of the grid's best
ABLATIONS = ("target_modules", "packing", "clipping", "warmup")
# Seeds: the grid's best is picked on TRUTH_SEEDS; studies choose on CHOICE_SEEDS; every regret is judged on
# seeds neither used (a minimum of noisy runs is optimistic on the seeds it was picked on). On the quality
# benchmark's tasks one run's eval loss varies by 1–3% from seed to seed, so a mean over 6 fresh seeds
# carries about ±0.5–1%: as large as the regret target, which single rows therefore cannot resolve.
TRUTH_SEEDS = (0, 8, 9)
CHOICE_SEEDS = (0, 3, 6)
FRESH_SEEDS = (1, 2, 4, 5, 10, 11)
REFERENCE_SEEDS = (*FRESH_SEEDS, 12, 13, 14, 15, 16, 17)  # the grid best's yardstick: 12 fresh seeds
EVAL_RECORDS = 128  # held-out records the reference fine-tune is scored on (written beside the data)

Config = tuple[int, float]  # (effective batch size, peak LR)
Tool = Literal["axolotl", "trl"]


@dataclass(frozen=True)
class Task:
    """One real run: a tool's config over instruction records of some synthetic tasks."""

    name: str
    tool: Tool
    instruction_tasks: tuple[str, ...]
    records: int
    batch_sizes: tuple[int, ...]  # the candidates a user would give; the config's own batch among them


@dataclass(frozen=True)
class Setting:
    tasks: tuple[Task, ...]
    lr_range: tuple[float, float]  # the grid's and every study's LR range
    lrs_per_decade: int
    truth_seeds: tuple[int, ...]
    choice_seeds: tuple[int, ...]
    fresh_seeds: tuple[int, ...]
    reference_seeds: tuple[int, ...]
    base: BenchConfig = field(default_factory=lambda: BenchConfig([], [], 1.0, 8000))


FULL = Setting(
    tasks=(
        Task("axolotl", "axolotl", ("reverse", "upper"), 1000, (2, 4, 8, 16)),
        Task("trl", "trl", ("add", "repeat"), 2000, (2, 4, 8, 16)),
    ),
    lr_range=(1e-5, 1e-1),  # four decades: wide, as a user who does not know this model's LR scale gives
    lrs_per_decade=4,
    truth_seeds=TRUTH_SEEDS,
    choice_seeds=CHOICE_SEEDS,
    fresh_seeds=FRESH_SEEDS,
    reference_seeds=REFERENCE_SEEDS,
)
QUICK = Setting(
    tasks=(Task("axolotl", "axolotl", ("reverse", "upper"), 400, (4, 16)),),
    lr_range=(1e-4, 1e-1),
    lrs_per_decade=2,
    truth_seeds=(0, 8),
    choice_seeds=(0,),
    fresh_seeds=(1, 2),
    reference_seeds=(1, 2, 4),
    base=BenchConfig([], [], 1.0, 2000),
)


# 1. The task as a user has it: data files and a real tool's config (written by bench/reference_loop.py) -----


def write_task(base: Path, folder: Path, task: Task) -> Path:
    """The task's training and held-out data and its config file, in `folder`; returns the config's path."""
    tasks = list(task.instruction_tasks)
    train = synthetic.instruction_records(task.records, seed=10, tasks=tasks)
    held_out = synthetic.instruction_records(EVAL_RECORDS, seed=11, tasks=tasks)
    writer = write_axolotl_task if task.tool == "axolotl" else write_trl_task
    return writer(base, folder / task.name, train, held_out)


# 2. Ground truth: the reference fine-tune over a dense grid, cached on disk ---------------------------------


def code_digest(functions: tuple[Callable[..., Any], ...], files: tuple[str, ...], *extra: Any) -> str:
    """A hash of functions' source, files (or folders of .py files) under the repository, and `extra`."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for name in files:
        path = root / name
        for source in sorted([path] if path.is_file() else path.rglob("*.py")):
            digest.update(source.read_bytes())
    for function in functions:
        digest.update(inspect.getsource(function).encode())
    digest.update(json.dumps([*extra, torch.__version__, cpu_model()], sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def run_key(batch_size: int, lr: float, seed: int) -> str:
    return f"{batch_size}|{lr:.6e}|{seed}"


@dataclass
class ReferenceRuns:
    """The reference fine-tunes of one task, each trained once: in memory, and in `cache_file` when given,
    so that a rerun on this machine trains only what it has not."""

    recipe: Recipe
    train: list[Row]
    held_out: list[Row]
    untrained: float  # the base model's held-out loss: what a diverged run is worth
    cache_file: Path | None = None
    runs: dict[str, RunResult] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.cache_file is not None and self.cache_file.exists():
            stored = json.loads(self.cache_file.read_text())
            self.runs = {key: RunResult(**value) for key, value in stored.items()}

    def run(self, batch_size: int, lr: float, seed: int) -> RunResult:
        key = run_key(batch_size, lr, seed)
        if key not in self.runs:
            self.runs[key] = reference_finetune(self.recipe, batch_size, lr, seed, self.train, self.held_out)
            self._store()
        return self.runs[key]

    def _store(self) -> None:
        if self.cache_file is None:
            return
        self.cache_file.parent.mkdir(parents=True, exist_ok=True)
        partial = self.cache_file.with_suffix(".tmp")
        partial.write_text(json.dumps({key: asdict(run) for key, run in self.runs.items()}))
        partial.replace(self.cache_file)

    def score(self, batch_size: int, lr: float, seed: int) -> float:
        """A run's held-out loss; a diverged run is worth the untrained model's."""
        loss = self.run(batch_size, lr, seed).eval_loss
        return self.untrained if loss is None else loss

    def mean(self, config: Config, seeds: tuple[int, ...]) -> float:
        return statistics.fmean(self.score(*config, seed) for seed in seeds)

    def scores(self, config: Config, seeds: tuple[int, ...]) -> list[float]:
        return [self.score(*config, seed) for seed in seeds]


def reference_runs(config_path: Path, task: Task, cache: Path | None) -> ReferenceRuns:
    """The task's reference runs, with the data tokenised once and the untrained loss measured. Cached by
    what a run reads: the base model's files, the task's files (its temporary folder left out of the
    config's text), this loop's code, the libraries and the machine."""
    recipe = read_recipe(config_path)
    _, tokenizer = load_base(recipe)
    held_out = held_out_rows(recipe, tokenizer)
    untrained = eval_loss(adapted_model(recipe, seed=0), held_out)  # B = 0: the adapter adds nothing yet
    cache_file = None
    if cache is not None:
        inputs = [*sorted(Path(recipe.model).iterdir()), *sorted(config_path.parent.iterdir())]
        contents = [f.read_bytes().replace(str(config_path.parents[1]).encode(), b"<tmp>") for f in inputs]
        digest = code_digest(REFERENCE_CODE, (), hashlib.sha256(b"".join(contents)).hexdigest())
        cache_file = cache / f"reference-{task.name}-{digest}.json"
    return ReferenceRuns(recipe, training_rows(recipe, tokenizer), held_out, untrained, cache_file)


def grid_lrs(setting: Setting) -> list[float]:
    """The dense grid's LRs: `lrs_per_decade` per decade over the setting's range, ends included."""
    low, high = setting.lr_range
    count = round(math.log10(high / low) * setting.lrs_per_decade) + 1
    return [float(f"{low * (high / low) ** (i / (count - 1)):.4g}") for i in range(count)]


@dataclass
class Truth:
    runs: ReferenceRuns
    grid: list[Config]
    best: Config
    best_loss: float  # mean over the truth seeds
    examples: int  # the grid's training rows, one seed: what the study's budget is a share of
    tokens: int  # the same in tokens

    def regret(self, config: Config, setting: Setting) -> tuple[float, float]:
        """(regret, its standard error): the config's mean loss over the fresh seeds against the grid best's
        over the reference seeds, relative to the latter."""
        mine = self.runs.scores(config, setting.fresh_seeds)
        reference = self.runs.scores(self.best, setting.reference_seeds)
        yardstick = statistics.fmean(reference)
        variance = statistics.variance(mine) / len(mine) + statistics.variance(reference) / len(reference)
        return (statistics.fmean(mine) - yardstick) / yardstick, math.sqrt(variance) / yardstick


def ground_truth(runs: ReferenceRuns, task: Task, setting: Setting) -> Truth:
    grid = [(b, lr) for b in task.batch_sizes for lr in grid_lrs(setting)]
    losses = {config: runs.mean(config, setting.truth_seeds) for config in grid}
    best = min(losses, key=lambda c: losses[c])
    first_seed = [runs.run(*config, setting.truth_seeds[0]) for config in grid]
    examples = len(grid) * len(runs.train) * runs.recipe.epochs
    return Truth(runs, grid, best, losses[best], examples, sum(r.tokens for r in first_seed))


# 3. The study from the config, and with one field left at the spec's default --------------------------------


def study_spec(
    config_path: Path, task: Task, setting: Setting, ablation: str | None, grid_tokens: int
) -> StudySpec:
    """The study a user starts from the config: its candidate batches, the wide LR range and a budget of
    STUDY_SHARE of the dense grid's compute; with `ablation`, that one field reset to the study spec's
    default. The budget is in the study's own examples: STUDY_SHARE of the grid's tokens over the mean length
    of the rows the study trains on, so that a variant whose rows are shorter (packing off) gets the same
    compute, not fewer tokens."""
    mapped = load_config(config_path)
    spec = mapped.study_spec(batch_sizes=list(task.batch_sizes), lr_range=list(setting.lr_range))
    spec = with_default(spec, ablation)
    rows = prepared_data(spec).train
    row_tokens = statistics.fmean(len(row.input_ids) for row in rows)
    budget = max(1, int(STUDY_SHARE * grid_tokens / row_tokens))
    return spec.model_copy(update={"budget": BudgetSpec(proxy_examples=budget, proxy_seconds=None)})


def with_default(spec: StudySpec, ablation: str | None) -> StudySpec:
    """`spec` with the field `ablation` names at StudySpec's default, as a user who left it out would have."""
    defaults = TrainingSpec()
    training: dict[str, Any] = {
        "packing": {"packing": defaults.packing},
        "clipping": {"max_grad_norm": defaults.max_grad_norm},
        "warmup": {"warmup_ratio": defaults.warmup_ratio, "warmup_steps": defaults.warmup_steps},
    }.get(ablation or "", {})
    update: dict[str, Any] = {"training": spec.training.model_copy(update=training)}
    if ablation == "target_modules":
        update["target_modules"] = None  # PEFT's default for the architecture (q_proj, v_proj on Llama)
    return spec.model_copy(update=update)


@functools.cache
def advisor_code() -> str:
    """A hash of the advisor's and the engine's code as this process loaded it (taken once, at the start:
    files edited while the benchmark runs are not the code it runs)."""
    return code_digest((), ("advisor", "proxy_runs"))


def code_state() -> dict[str, Any]:
    """The commit and the uncommitted changes under advisor/ and proxy_runs/, for the JSON."""
    root = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True).stdout.strip()

    return {
        "commit": git("rev-parse", "HEAD"),
        "uncommitted": git("status", "--porcelain", "advisor", "proxy_runs").splitlines(),
        "advisor_code": advisor_code(),
    }


@dataclass
class Pick:
    batch_size: int
    learning_rate: float
    examples: int  # what the study trained on, in its own rows
    tokens: int
    runs: int
    seconds: float


def run_choice(spec: StudySpec, seed: int, cache: Path | None, folder: Path) -> Pick:
    """The study's pick on choice seed `seed`; cached by the spec (temporary paths left out), the advisor's
    and the engine's code, torch and the machine."""
    seeded = spec.with_seed(seed)
    cache_file = cache / "studies.json" if cache is not None else None
    stored = json.loads(cache_file.read_text()) if cache_file is not None and cache_file.exists() else {}
    spec_text = seeded.model_dump_json().replace(str(folder), "<tmp>")
    key = code_digest((), (), advisor_code(), spec_text)
    if key not in stored:
        started = time.perf_counter()
        result = run_study(seeded)
        rec = result.recommendation
        if not isinstance(rec, Recommendation):
            raise RuntimeError(f"the study gave no recommendation: {rec}")
        stored[key] = asdict(
            Pick(
                rec.batch_size,
                rec.learning_rate,
                sum(r.examples_seen for r in result.runs),
                sum(r.tokens_seen for r in result.runs if r.status != RunStatus.FAILED),
                len(result.runs),
                time.perf_counter() - started,
            )
        )
        if cache_file is not None:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            cache_file.write_text(json.dumps(stored, indent=1))
    return Pick(**stored[key])


def run_task(base: Path, folder: Path, task: Task, setting: Setting, cache: Path | None) -> dict[str, Any]:
    """One task: its ground truth, then the faithful study and each ablation on every choice seed."""
    config_path = write_task(base, folder, task)
    runs = reference_runs(config_path, task, cache)
    truth = ground_truth(runs, task, setting)
    print(f"{task.name}: grid best {truth.best} → {truth.best_loss:.4f}", file=sys.stderr)
    variants: dict[str, list[dict[str, Any]]] = {}
    for ablation in (None, *ABLATIONS):
        spec = study_spec(config_path, task, setting, ablation, truth.tokens)
        rows = []
        for seed in setting.choice_seeds:
            pick = run_choice(spec, seed, cache, folder)
            regret, se = truth.regret((pick.batch_size, pick.learning_rate), setting)
            rows.append(
                {
                    "choice_seed": seed,
                    **asdict(pick),
                    "regret": regret,
                    "regret_se": se,
                    "budget_examples": spec.budget.proxy_examples,
                    "token_share": pick.tokens / truth.tokens,
                }
            )
        variants[ablation or "faithful"] = rows
        print(
            f"{task.name} {ablation or 'faithful'}: {[round(r['regret'], 4) for r in rows]}", file=sys.stderr
        )
    best_seeds = runs.scores(truth.best, setting.reference_seeds)
    return {
        "task": task.name,
        "tool": task.tool,
        "config": config_path.read_text(encoding="utf-8").replace(str(folder), "<tmp>"),
        "recipe": {k: str(v) for k, v in asdict(runs.recipe).items()},
        "train_rows": len(runs.train),
        "untrained_loss": runs.untrained,
        "grid": {"configs": len(truth.grid), "examples": truth.examples, "tokens": truth.tokens},
        "grid_best": {
            "batch_size": truth.best[0],
            "learning_rate": truth.best[1],
            "truth_loss": truth.best_loss,
            "reference_loss": statistics.fmean(best_seeds),
        },
        "seed_noise_relative": statistics.stdev(best_seeds) / statistics.fmean(best_seeds),
        "batch_best": batch_best(truth, setting),
        "variants": variants,
    }


def batch_best(truth: Truth, setting: Setting) -> dict[int, dict[str, float]]:
    """Per batch size, its best grid LR and how much worse than the grid's best it is (truth seeds)."""
    out = {}
    for batch in sorted({b for b, _ in truth.grid}):
        row = [c for c in truth.grid if c[0] == batch]
        config = min(row, key=lambda c: truth.runs.mean(c, setting.truth_seeds))
        loss = truth.runs.mean(config, setting.truth_seeds)
        out[batch] = {"learning_rate": config[1], "loss_above_best": loss / truth.best_loss - 1}
    return out


# The code a reference run's loss depends on besides its inputs (`reference_runs` hashes those). The advisor's
# code is not among them: a change to the study keeps the ground truth.
REFERENCE_CODE: tuple[Callable[..., Any], ...] = (
    write_task,
    write_axolotl_task,
    write_trl_task,
    read_recipe,
    axolotl_recipe,
    trl_recipe,
    encode,
    pack,
    training_rows,
    held_out_rows,
    collate,
    summed_loss,
    eval_loss,
    load_base,
    adapted_model,
    warmup_steps,
    reference_finetune,
)


# 4. Summary, table, JSON ------------------------------------------------------------------------------------


def summarise(tasks: list[dict[str, Any]]) -> dict[str, Any]:
    """Per variant, over every (task, choice seed) pair: median, mean and worst regret, the pairs within the
    target, and the median share of the grid's tokens the studies trained on."""
    summary: dict[str, Any] = {}
    for variant in ("faithful", *ABLATIONS):
        rows = [row for task in tasks for row in task["variants"][variant]]
        regrets = [row["regret"] for row in rows]
        summary[variant] = {
            "median_regret": statistics.median(regrets),
            "mean_regret": statistics.fmean(regrets),
            "worst_regret": max(regrets),
            "within_target": sum(r <= REGRET_TARGET for r in regrets),
            "pairs": len(rows),
            "median_token_share": statistics.median(row["token_share"] for row in rows),
            "median_study_seconds": statistics.median(row["seconds"] for row in rows),
        }
    return summary


def print_table(tasks: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    names = ("faithful", *ABLATIONS)
    print(f"{'task (grid best → loss)':<40}{'seed':>5}" + "".join(f"{n:>24}" for n in names))
    for task in tasks:
        best = task["grid_best"]
        label = (
            f"{task['task']} ({best['batch_size']}, {best['learning_rate']:.3g}) → {best['truth_loss']:.4f}"
        )
        for i, seed in enumerate(row["choice_seed"] for row in task["variants"]["faithful"]):
            cells = ""
            for name in names:
                row = task["variants"][name][i]
                cells += f"{row['regret']:>+9.2%} ({row['batch_size']:>2}, {row['learning_rate']:.2g})".rjust(
                    24
                )
            print(f"{label if i == 0 else '':<40}{seed:>5}{cells}")
        print(f"{'':<40}{'':>5}  seed noise of one run {task['seed_noise_relative']:.2%}")
    for stat in ("median_regret", "mean_regret", "worst_regret"):
        print(f"{stat.replace('_', ' '):<45}" + "".join(f"{summary[n][stat]:>+24.2%}" for n in names))
    print(
        f"{'within 0.5% of the grid best':<45}"
        + "".join(f"{summary[n]['within_target']:>21} / {summary[n]['pairs']}" for n in names)
    )
    print(
        f"{'share of the grid tokens':<45}"
        + "".join(f"{summary[n]['median_token_share']:>24.1%}" for n in names)
    )


def run_suite(setting: Setting, cache: Path | None) -> list[dict[str, Any]]:
    """Pretrain the base model in a temporary folder, then run every task."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        base = build_base(folder, setting.base)
        tasks = []
        for task in setting.tasks:
            tasks.append(run_task(base, folder, task, setting, cache))
            print(f"{task.name}: done at {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return tasks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one task, a coarse grid: a smoke run")
    parser.add_argument("--json", default="bench/out/recipe_fidelity.json")
    parser.add_argument("--cache", metavar="DIR", help="keep reference runs and study picks here for reruns")
    parser.add_argument("--tasks", nargs="+", choices=[t.name for t in FULL.tasks], help="only these tasks")
    parser.add_argument("--reprint", metavar="JSON", help="print an earlier run's table again, no training")
    args = parser.parse_args()
    if args.reprint:
        tasks = json.loads(Path(args.reprint).read_text())["tasks"]
        print_table(tasks, summarise(tasks))
        return
    torch.set_num_threads(1)  # tiny models: one thread is as fast, and the machine is shared
    setting = QUICK if args.quick else FULL
    if args.tasks:
        setting = replace(setting, tasks=tuple(t for t in setting.tasks if t.name in args.tasks))
    started, code = time.perf_counter(), code_state()
    tasks = run_suite(setting, Path(args.cache) if args.cache else None)
    summary = summarise(tasks)
    out = {
        "setting": asdict(setting),
        "quick": args.quick,
        "study_share": STUDY_SHARE,
        "machine": {"cpu": cpu_model(), "torch": torch.__version__, "threads": 1},
        "code": code,
        "tasks": tasks,
        "summary": summary,
        "seconds": round(time.perf_counter() - started, 1),
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2, default=str))
    print_table(tasks, summary)
    print(f"wrote {args.json} ({out['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
