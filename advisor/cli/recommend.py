"""`advisor recommend CONFIG [--budget SECONDS | --budget-examples N] [--batch-sizes ...] [--json]`: a whole
study, embedded, with a progress bar.

CONFIG is a study spec or the real run's own training config (Axolotl, LLaMA-Factory, Hugging Face / TRL,
torchtune: `advisor.training_configs`); from a training config the study copies its recipe, and the answer
says what was carried over (`mapped_from`) and the values to write back into the config (`write_back`).

The progress bar goes to stderr so that stdout holds only the answer (plain text, or JSON whose top level
has `batch_size` and `learning_rate`); where stderr is not a terminal (a CI log, a file) it is a line per
tenth of the study instead of a bar redrawn with carriage returns. Torch is imported only when the study
starts.

Every study is kept: in SQLite under LORA_ADVISOR_DATA_DIR (default ./data, migrated on first use), as a
study whose job this process leases and completes exactly as a service worker would, so the service sees
it and the next similar question starts from its answer (the warm start, printed before any compute).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from advisor.training_configs import FORMATS

if TYPE_CHECKING:  # the science imports scipy and the study torch: load them when a study runs
    from advisor.jobs.control import JobControl
    from advisor.jobs.queue import Lease
    from advisor.science.knowledge import KnowledgeStore
    from advisor.science.recommendation import NoRecommendation, Recommendation
    from advisor.specs import StudySpec
    from advisor.storage.db import Database
    from advisor.study import StudyResult
    from advisor.study.runner import ProxyRunner
    from advisor.training_configs import MappedConfig

EXIT_OK, EXIT_NO_RECOMMENDATION = 0, 1
DATA_DIR_ENV = "LORA_ADVISOR_DATA_DIR"
LEASE_SECONDS = 60.0  # renewed every 20 s by a heartbeat; a service worker may reclaim it only once we die
PROVISIONAL_PREFIX = "provisional:"  # how run_study announces the warm start's answer


def add_recommend(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "recommend", help="run a proxy study and recommend batch size and learning rate"
    )
    parser.add_argument(
        "spec",
        metavar="config",
        help="study spec, or the real run's Axolotl, LLaMA-Factory, HF/TRL or torchtune config",
    )
    parser.add_argument(
        "--format",
        dest="config_format",
        choices=["auto", *FORMATS],
        default="auto",
        help="the config's format (default: told from its keys)",
    )
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument(
        "--budget", type=_seconds, help="proxy compute budget in seconds (default: the spec's)"
    )
    budget.add_argument(
        "--budget-examples",
        type=_positive_int,
        help="proxy compute budget in training examples, summed over all proxy runs",
    )
    parser.add_argument(
        "--batch-sizes",
        type=_positive_int,
        nargs="+",
        metavar="B",
        help="candidate effective batches (the config's own batch is always added)",
    )
    parser.add_argument(
        "--devices", type=_positive_int, help="the real run's data-parallel devices (default: the config's)"
    )
    parser.add_argument(
        "--parallel",
        type=_positive_int,
        default=None,
        metavar="N",
        help="proxy runs to train at once, each in a worker process of its own (one torch thread, or one "
        "GPU, each; default: LORA_ADVISOR_PARALLEL, else 1); with --ray, the most runs in flight on the "
        "cluster (default: LORA_ADVISOR_PARALLEL, else as many as the cluster has room for); the pick is "
        "the same at any N",
    )
    parser.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="train each proxy run as a Ray task on the cluster at ADDRESS (head:6379, ray://head:10001, or "
        "auto); the study itself runs here. Every node needs lora-advisor installed and the model and data "
        "at the same paths (docs/ray.md)",
    )
    parser.add_argument(
        "--ray-gpus-per-run",
        type=_gpus,
        default=0.0,
        metavar="G",
        help="with --ray: GPUs each run asks for; 1, or a fraction such as 0.25 to pack four runs on a GPU "
        "(default 0: CPU, one core each)",
    )
    parser.add_argument(
        "--ray-paused-runs-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="with --ray: a folder every node mounts at this path, where paused runs wait between rungs so "
        "a promoted config resumes on any node (default: LORA_ADVISOR_RAY_PAUSED_RUNS_DIR; unset: promoted "
        "configs restart)",
    )
    parser.add_argument("--json", action="store_true", help="print the recommendation as JSON")
    parser.set_defaults(handler=run_recommend)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _gpus(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a number of GPUs of at least 0, got {text}")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


class TerminalProgress:
    """A tqdm bar on stderr, redrawn in place: runs done of the plan's, elapsed time, and an ETA that tqdm
    re-estimates from the runs' measured pace (the plan's total grows when the study extends its grid)."""

    def __init__(self) -> None:
        self.bar: tqdm | None = None

    def __call__(self, done: int, total: int, message: str) -> None:
        if self.bar is None:
            columns = stderr_columns()
            self.bar = tqdm(
                total=total,
                file=sys.stderr,
                unit="run",
                # A terminal that reports no size (a container's, a bare pty) gets 100 × 24: tqdm draws
                # nothing on a screen of 0 rows.
                ncols=columns or 100,
                nrows=None if columns else 24,
                dynamic_ncols=bool(columns),
                bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} runs [{elapsed}<{remaining}]{postfix}",
            )
        if total != self.bar.total:
            self.bar.total = total
        self.bar.n = min(done, total)
        self.bar.set_postfix_str(message[:60], refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def stderr_columns() -> int:
    """The width of the terminal stderr is on; 0 when it reports none."""
    try:
        return os.get_terminal_size(sys.stderr.fileno()).columns
    except (OSError, ValueError):
        return 0


class LogProgress:
    """Progress for a log rather than a terminal: the plan (step 0) and then a line whenever another tenth
    of the study is done, with the time so far and what is left at the pace so far, so a CI log gets about a
    dozen readable lines instead of one line of redraws."""

    def __init__(self) -> None:
        self.tenths_done = -1
        self.started = time.monotonic()

    def __call__(self, done: int, total: int, message: str) -> None:
        tenths = 10 * min(done, total) // max(total, 1)
        if done == 0 or tenths > self.tenths_done:
            self.tenths_done = tenths
            elapsed = time.monotonic() - self.started
            left = f", ~{elapsed / done * max(total - done, 0):.0f} s left" if done else ""
            print(f"[{done}/{total}, {elapsed:.0f} s{left}] {message}", file=sys.stderr, flush=True)

    def close(self) -> None:
        return None


def data_dir() -> Path:
    """Where the embedded study keeps its SQLite database: LORA_ADVISOR_DATA_DIR, as the service reads it."""
    return Path(os.environ.get(DATA_DIR_ENV) or "data").expanduser().resolve()


def open_database(folder: Path) -> Database:
    """The SQLite database under `folder`, migrated to this version's schema on first use."""
    from advisor.storage import migrate
    from advisor.storage.db import Database, default_sqlite_url

    url = default_sqlite_url(folder)
    db = Database(url)
    if migrate.current_revision(db.engine) != migrate.head_revision():
        migrate.upgrade(url)
    return db


def knowledge_store(db: Database) -> KnowledgeStore:
    """Stored studies and reported outcomes for the warm start: the same store the service's studies use."""
    from advisor.storage.knowledge_store import DatabaseKnowledgeStore

    return DatabaseKnowledgeStore(db)


def run_recommend(args: argparse.Namespace) -> int:
    from advisor.science.recommendation import NoRecommendation

    spec, mapped = study_from_file(args)
    folder = data_dir()
    db = open_database(folder)
    try:
        lease = start_study(db, spec, mapped_from=mapped.report() if mapped is not None else None)
        print(f"study {lease.study_id} stored in {folder / 'advisor.db'}", file=sys.stderr)
        runs_on = RunsOn(
            parallel=args.parallel,
            ray_address=args.ray,
            ray_gpus_per_run=args.ray_gpus_per_run,
            ray_paused_runs_dir=args.ray_paused_runs_dir,
        )
        result = run_leased(db, lease, spec, budget=args.budget, runs_on=runs_on)
    finally:
        db.dispose()
    print(render(result.recommendation, as_json=args.json, provisional=result.provisional, mapped=mapped))
    return EXIT_NO_RECOMMENDATION if isinstance(result.recommendation, NoRecommendation) else EXIT_OK


def study_from_file(args: argparse.Namespace) -> tuple[StudySpec, MappedConfig | None]:
    """The study a file asks for: a study spec as written, or the study that copies a training config's run
    (with the mapping, for the answer's `mapped_from` and `write_back`); the flags' overrides applied."""
    from advisor.specs import load_spec, parse_spec
    from advisor.training_configs import load_config

    mapped = load_config(args.spec, format=args.config_format)
    if args.devices is not None:
        mapped.devices, mapped.devices_source = args.devices, "flag"
    overrides: dict[str, object] = {}
    if args.batch_sizes:
        overrides["batch_sizes"] = args.batch_sizes
    if args.budget_examples:
        overrides["budget"] = {"proxy_seconds": None, "proxy_examples": args.budget_examples}
    if mapped.format != "study-spec":
        return _with_seconds_budget(mapped.study_spec(**overrides), args.budget), mapped
    spec = load_spec(args.spec)  # the spec as written, with its own error messages
    spec = parse_spec({**spec.model_dump(mode="json"), **overrides}) if overrides else spec
    return _with_seconds_budget(spec, args.budget), None


def _with_seconds_budget(spec: StudySpec, seconds: float | None) -> StudySpec:
    """The spec with `--budget` as its seconds budget, so that the stored study says what it was given."""
    if seconds is None:
        return spec
    return spec.model_copy(update={"budget": spec.budget.model_copy(update={"proxy_seconds": seconds})})


def start_study(db: Database, spec: StudySpec, *, mapped_from: dict[str, object] | None = None) -> Lease:
    """Store the study as the service would (study + job) and lease its job to this process at once, in one
    transaction: a service worker on the same database can neither take it first nor run it twice."""
    from advisor.jobs import queue
    from advisor.storage import repository as repo
    from advisor.storage.models import utcnow

    with db.transaction() as session:
        study = repo.create_study(
            session,
            spec=spec,
            function="study",
            max_attempts=1,  # if this process dies, its lease expires and a worker marks the study failed
            token_id=None,
            dataset_fingerprint=None,
            idempotency=None,
            options={"embedded": "advisor recommend"},
            mapped_from=mapped_from,
        )
        job = repo.get_job_for_study(session, study_id=study.id)
        # The worker's own lease step, so the lease reads exactly as a worker's.
        lease = queue.try_lease(
            session, job=job, worker_id=f"cli-{os.getpid()}", lease_seconds=LEASE_SECONDS, now=utcnow()
        )
    if lease is None:
        raise AssertionError(f"study {study.id}: the job of a study created in this transaction was taken")
    return lease


@dataclasses.dataclass(frozen=True)
class RunsOn:
    """Where the study's proxy runs train (`proxy_runs.torch_runner`'s arguments): in this process, in
    `parallel` worker processes, or as tasks on the Ray cluster at `ray_address`."""

    parallel: int | None = None
    ray_address: str | None = None
    ray_gpus_per_run: float = 0.0
    ray_paused_runs_dir: Path | None = None


def run_leased(
    db: Database, lease: Lease, spec: StudySpec, *, budget: float | None, runs_on: RunsOn | None = None
) -> StudyResult:
    """Run the study under `lease`, then store its runs and recommendation the way a worker does."""
    from advisor.jobs import queue
    from advisor.jobs.control import JobCanceled, JobControl, LeaseLost
    from advisor.jobs.functions import study_result_to_job_result
    from advisor.jobs.heartbeat import keep_lease
    from advisor.study import run_study

    control = JobControl(store=knowledge_store(db))
    show: TerminalProgress | LogProgress = TerminalProgress() if sys.stderr.isatty() else LogProgress()
    done = threading.Event()
    beat = threading.Thread(target=keep_lease, args=(db, lease, control, done), daemon=True)
    beat.start()
    with interrupted_once():
        try:
            runner = control.watched(_runner(runs_on or RunsOn()))  # a cancel stops runs in flight on Ray
            result = run_study(
                spec,
                runner,
                budget_override=budget,
                progress=reporter(control, show),
                store=control.store,
            )
        except JobCanceled:
            queue.mark_canceled(db, lease=lease)
            raise
        except LeaseLost:
            raise  # another attempt owns the study now: it writes the outcome, not this process
        except KeyboardInterrupt:  # the user stopped it: the stored study says so
            message = f"interrupted (Ctrl-C or SIGTERM) at: {control.message}"
            queue.mark_canceled(db, lease=lease, message=message)
            raise
        except BaseException as exc:
            error = f"{type(exc).__name__}: {exc}"
            queue.fail(db, lease=lease, error=error, retryable=False, backoff=queue.Backoff())
            raise
        finally:
            done.set()
            beat.join()
            show.close()
        queue.complete(db, lease=lease, result=study_result_to_job_result(result))
    return result


def _runner(runs_on: RunsOn) -> ProxyRunner:
    from proxy_runs import torch_runner

    return torch_runner(
        runs_on.parallel,
        runs_on.ray_address,
        ray_gpus_per_run=runs_on.ray_gpus_per_run,
        ray_paused_runs_dir=runs_on.ray_paused_runs_dir,
    )


@contextlib.contextmanager
def interrupted_once() -> Iterator[None]:
    """Ctrl-C, or the SIGTERM a CI runner or `timeout` sends, raises KeyboardInterrupt once; later ones are
    ignored until the block ends. Unhandled, SIGTERM would kill the process with the study 'running' and
    nobody running it, and an impatient second Ctrl-C would interrupt the write of its final state."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pressed = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        if not pressed.is_set():
            pressed.set()
            raise KeyboardInterrupt

    previous = {number: signal.signal(number, on_signal) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def reporter(control: JobControl, show: TerminalProgress | LogProgress) -> Callable[[int, int, str], None]:
    """The study's progress to the terminal or log (`show`; the warm start's answer on a line of its own) and
    to the job's control, which raises when the study was canceled."""

    def report(done: int, total: int, message: str) -> None:
        if message.startswith(PROVISIONAL_PREFIX):
            line = f"warm start: {message}"
            if isinstance(show, TerminalProgress) and show.bar is not None:
                show.bar.write(line, file=sys.stderr)  # above the bar, which stays
            else:
                print(line, file=sys.stderr, flush=True)
        else:
            show(done, total, message)
        control.study_progress(done, total, message)

    return report


def render(
    answer: Recommendation | NoRecommendation,
    *,
    as_json: bool,
    provisional: Recommendation | None = None,
    mapped: MappedConfig | None = None,
) -> str:
    from advisor.science.recommendation import NoRecommendation, Recommendation

    write_back = (
        mapped.write_back(answer.batch_size, answer.learning_rate)
        if mapped is not None and isinstance(answer, Recommendation)
        else None
    )
    if as_json:
        data = answer.model_dump(mode="json")
        if isinstance(answer, Recommendation):
            data["search_space"] = answer.search_space()
        else:
            data = {"batch_size": None, "learning_rate": None, "no_recommendation": data}
        if mapped is not None:
            data["mapped_from"] = mapped.report()
            data["write_back"] = write_back
        if provisional is not None:  # what the warm start said before any compute, to compare with
            data["warm_start"] = {
                "batch_size": provisional.batch_size,
                "learning_rate": provisional.learning_rate,
                "confidence": provisional.confidence.label,
            }
        return json.dumps(data, indent=2)
    if isinstance(answer, NoRecommendation):
        return f"no recommendation: {answer.reason}" + (f"\nfix: {answer.fix}" if answer.fix else "")
    if write_back is None or mapped is None:
        return answer.summary()
    return answer.summary() + "\n" + render_write_back(mapped, write_back)


def render_write_back(mapped: MappedConfig, write_back: dict[str, object]) -> str:
    """The lines to change in the user's config, and what the mapping assumed on the way."""
    values = write_back["values"]
    assert isinstance(values, dict)
    lines = [f"write back to {mapped.path} ({mapped.format}):"]
    lines += [f"  {key}: {value}" for key, value in values.items()]
    notes = [*mapped.notes, *write_back["notes"]]  # type: ignore[misc]  # a list of str, as write_back builds it
    if mapped.devices_source == "default":
        notes.append("devices: 1 assumed (none in the config); pass --devices N for a multi-device run")
    lines += [f"  note: {note}" for note in notes]
    return "\n".join(lines)
