"""The `advisor` command line. Subcommands import torch lazily, so `advisor --help` stays instant.

Exit codes: 0 a result was produced (a diverged run is a result), 1 the run itself failed,
2 bad input (the message names the field or flag to fix).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence

from advisor.cli.check import add_check
from advisor.cli.recommend import add_recommend
from advisor.cli.service import add_db, add_serve, add_token, add_worker
from advisor.errors import AdvisorError, SpecError
from advisor.method_catalog import METHODS
from advisor.records import RunRecord
from advisor.specs import MAX_BATCH_SIZE, MAX_COUNT

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a Ctrl-C


def _positive_int(text: str, upper: int = MAX_COUNT) -> int:
    value = int(text)
    if not 0 < value <= upper:
        raise argparse.ArgumentTypeError(f"must be a positive integer up to {upper}, got {text}")
    return value


def _batch_size(text: str) -> int:
    return _positive_int(text, MAX_BATCH_SIZE)


def _positive_float(text: str) -> float:
    value = float(text)
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


# train-proxy ---------------------------------------------------------------------------------------


def add_train_proxy(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("train-proxy", help="run one proxy fine-tune and print its record")
    parser.add_argument("spec", help="study spec (YAML or JSON)")
    parser.add_argument("--batch-size", type=_batch_size, required=True, help="effective batch size")
    parser.add_argument("--lr", type=_positive_float, required=True, help="peak learning rate")
    parser.add_argument("--max-steps", type=_positive_int, help="stop after this many optimizer steps")
    parser.add_argument("--max-examples", type=_positive_int, help="stop after this many training examples")
    parser.add_argument("--max-seconds", type=_positive_float, help="stop after this much wall time")
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when present)")
    parser.add_argument("--json", action="store_true", help="print the whole run record as JSON")
    parser.set_defaults(handler=run_train_proxy)


def run_train_proxy(args: argparse.Namespace) -> int:
    from advisor.specs import load_spec
    from proxy_runs.engine import RunBudget, train_proxy

    spec = load_spec(args.spec)
    budget = RunBudget(max_steps=args.max_steps, max_examples=args.max_examples, max_seconds=args.max_seconds)
    record = train_proxy(
        spec, batch_size=args.batch_size, learning_rate=args.lr, budget=budget, device=args.device
    )
    if args.json:
        print(record.model_dump_json(indent=2))
    else:
        print(summarise_run(record))
    return EXIT_FAILED if record.status == "failed" else EXIT_OK


def summarise_run(record: RunRecord) -> str:
    config = record.config
    lines = [
        f"status        {record.status}" + (f" ({record.error.splitlines()[0]})" if record.error else ""),
        f"method        {config.method}  rank {config.rank}  alpha {config.alpha:g}",
        f"batch         {config.batch_size} = {config.micro_batch_size} micro"
        f" × {config.accumulation_steps} accumulation",
        f"lr            {config.learning_rate:g}"
        f"  ({config.warmup_steps} warm-up of {config.planned_steps} steps)",
        f"eval loss     {_fmt(record.eval_loss)}  (best {_fmt(record.best_eval_loss)})",
        f"trained       {record.steps} steps, {record.examples_seen} examples, {record.tokens_seen} tokens "
        f"in {record.seconds:.1f} s on {config.device}",
        f"parameters    {record.trainable_params:,} trainable of {record.total_params:,}",
    ]
    evals = record.metrics.get("evals", [])
    if evals:
        lines.append("eval curve    " + "  ".join(f"{e['step']}:{e['eval_loss']:.4f}" for e in evals))
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


# probe ----------------------------------------------------------------------------------------------


def add_probe(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("probe", help="Hessian top eigenvalue per module (and gradient noise scale)")
    try:
        from proxy_runs.probes.cli import add_probe_arguments
    except ImportError:  # the probes package is optional at install time only in development checkouts
        return
    add_probe_arguments(parser)
    parser.set_defaults(handler=_run_probe)


def _run_probe(args: argparse.Namespace) -> int:
    from proxy_runs.probes.cli import run_probe

    return run_probe(args)


# methods --------------------------------------------------------------------------------------------


def add_methods(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("methods", help="list the fine-tuning methods the advisor knows")
    parser.set_defaults(handler=lambda args: _print_methods())


def _print_methods() -> int:
    width = max(len(name) for name in METHODS)
    for info in METHODS.values():
        print(f"{info.name:<{width}}  {info.summary}")
    return EXIT_OK


# demo -------------------------------------------------------------------------------------------------


def add_demo(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "demo", help="write a tiny model and dataset to try the service; print a spec"
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help="the service's data directory (default: LORA_ADVISOR_DATA_DIR, as the service reads it, else "
        "./data): the model and dataset go under its models/ and datasets/, inside the service's roots",
    )
    parser.set_defaults(handler=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from proxy_runs.demo import write_demo_assets

    data_dir = args.data_dir or os.environ.get("LORA_ADVISOR_DATA_DIR") or "data"
    spec = write_demo_assets(Path(data_dir).expanduser().resolve(), progress=_stderr_line)
    print(json.dumps(spec, indent=2))
    return EXIT_OK


def _stderr_line(message: str) -> None:
    """Progress for people (stderr), so that stdout holds only the spec a script pipes on."""
    print(message, file=sys.stderr, flush=True)


SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    add_train_proxy,
    add_probe,
    add_recommend,
    add_check,
    add_methods,
    add_demo,
    add_serve,
    add_worker,
    add_db,
    add_token,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="advisor",
        description="Batch size and learning rate for a LoRA fine-tune, from cheap proxy runs, before the "
        "expensive run. `advisor COMMAND --help` says more.",
        epilog="exit codes: 0 a result was produced (a diverged run is a result), 1 the run failed or the "
        "check failed, 2 bad input (the message names the field or flag), 3 `check` knows nothing yet",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except SpecError as exc:
        print(f"error: {exc.describe()}", file=sys.stderr)
        return EXIT_USAGE
    except AdvisorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except json.JSONDecodeError as exc:
        print(f"error: invalid JSON: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:  # a stored study was marked canceled on the way out (advisor.cli.recommend)
        print("\ninterrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
