"""`advisor check CONFIG`: the CI hook. Is the planned (effective batch, LR) inside the recommended band?

Reads an Axolotl, LLaMA-Factory, Hugging Face / TRL, torchtune or study-spec config
(`advisor.training_configs`), asks the service (POST /v1/check) or, with --offline, the local database, and
judges the plan with `advisor.check.decide`. See docs/ci.md for the GitHub Actions and pre-commit set-up.

The verdict names the study that answered (id, confidence, budget, recipe). When that study trained another
recipe than the config plans (target modules, packing, clipping, schedule, warm-up, sequence length, run
length, dataset size: `advisor.recipes`), the check fails and names the field, unless `--on-mismatch warn`.
`--study ID` judges by one study's answer.

With `--submit`, a config that no study answers (or only one of another recipe) gets a study of exactly its
recipe: its local dataset is uploaded, the config submitted, and the check exits 3 with the study's URL, or
waits for the verdict with `--wait SECONDS`. Submissions are idempotent on the recipe's hash, so a pipeline
that reruns never starts a second study.

Exit codes: 0 inside the band; 1 outside it or a recipe mismatch (the message gives the recommended values
and how far off); 2 usage, parse or service-access error; 3 nothing known for the context, or a submitted
study still running (`--on-indeterminate pass` makes it 0). An unreachable server is indeterminate too: the
hook fails closed unless told otherwise.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from advisor.check import Decision, Finding, decide
from advisor.cli.check_output import (
    CONFIG_ERROR_RULE,
    EXIT_FAIL,
    EXIT_INDETERMINATE,
    EXIT_PASS,
    EXIT_USAGE,
    RENDERERS,
    config_error_result,
    github_command,
    sarif_document,
)
from advisor.method_catalog import METHODS
from advisor.recipes import Recipe, recipe_key
from advisor.service_client import ServiceClient, ServiceError, Unreachable
from advisor.specs import MAX_BATCH_SIZE, MAX_RANK, StudySpec
from advisor.training_configs import ConfigError, MappedConfig, load_config

TOKEN_ENV, SERVER_ENV = "LORA_ADVISOR_TOKEN", "LORA_ADVISOR_URL"


def add_check(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "check",
        help="CI hook: is a training config's batch size and LR in the band?",
        description="Judge a training config's planned LR and effective batch against the recommended band.",
        epilog=f"exit codes: {EXIT_PASS} inside the band; {EXIT_FAIL} outside it (or the recipe differs, "
        f"unless --on-mismatch warn); {EXIT_USAGE} a config or flag that cannot be read or honoured; "
        f"{EXIT_INDETERMINATE} nothing known about this recipe yet (--on-indeterminate pass turns it into "
        f"{EXIT_PASS}; --submit starts a study of it)",
    )
    parser.add_argument("config", help="Axolotl, LLaMA-Factory, HF/TRL, torchtune YAML/JSON or a study spec")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--server", help=f"service URL (default: ${SERVER_ENV})")
    where.add_argument(
        "--offline", action="store_true", help="read the local database (LORA_ADVISOR_DATA_DIR)"
    )
    parser.add_argument("--token", help=f"API token (default: ${TOKEN_ENV})")
    parser.add_argument(
        "--format",
        choices=["text", "json", "sarif", "github"],
        default="text",
        help="text (default), json, SARIF 2.1.0 for code scanning, or GitHub Actions annotations",
    )
    parser.add_argument(
        "--on-indeterminate",
        choices=["pass", "fail"],
        default="fail",
        help=f"when nothing is known about this recipe: fail (default: exit {EXIT_INDETERMINATE}) or pass "
        f"(exit {EXIT_PASS}, the answer still says nothing was known)",
    )
    parser.add_argument("--model", help="override the config's model")
    parser.add_argument("--method", help="override the method (lora, dora, rslora, pissa, ...)")
    parser.add_argument("--rank", type=int, help="override the LoRA rank")
    parser.add_argument("--alpha", type=float, help="override the LoRA alpha")
    parser.add_argument("--lr", type=float, help="override the planned learning rate")
    parser.add_argument("--batch-size", type=int, help="override the micro-batch size (per device)")
    parser.add_argument("--accumulation", type=int, help="override gradient accumulation steps")
    parser.add_argument("--devices", type=int, help="data-parallel devices (default: the config's, else 1)")
    parser.add_argument("--study", type=int, metavar="ID", help="judge by this study's answer")
    parser.add_argument(
        "--on-mismatch",
        choices=["fail", "warn"],
        default="fail",
        help="when the answering study trained another recipe: fail (default) or only warn",
    )
    parser.add_argument(
        "--submit",
        action="store_true",
        help="when no study answers this recipe, submit one (idempotent on the recipe's hash)",
    )
    parser.add_argument(
        "--wait", type=float, metavar="SECONDS", help="with --submit: wait this long for the study's verdict"
    )
    parser.add_argument(
        "--batch-sizes", type=int, nargs="+", metavar="B", help="with --submit: candidate effective batches"
    )
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--budget", type=float, metavar="SECONDS", help="with --submit: proxy seconds")
    budget.add_argument("--budget-examples", type=int, metavar="N", help="with --submit: proxy examples")
    parser.set_defaults(handler=run_check)


def run_check(args: argparse.Namespace) -> int:
    try:
        plan = _with_overrides(load_config(args.config), args)
        _check_submit_flags(plan, args)
        dataset = local_dataset(plan)
        decision = _ask(plan, dataset, args, study_id=args.study)
        if args.submit and _needs_study(decision):
            decision = _submit_and_judge(plan, dataset, decision, args)
    except ConfigError as exc:
        _print_usage_error(args, exc)
        return EXIT_USAGE
    code = _exit_code(decision, args.on_indeterminate)
    print(RENDERERS[args.format](plan, decision, code))
    return code


def _exit_code(decision: Decision, on_indeterminate: str) -> int:
    if decision.outcome == "indeterminate":
        return EXIT_PASS if on_indeterminate == "pass" else EXIT_INDETERMINATE
    return EXIT_PASS if decision.outcome == "pass" else EXIT_FAIL


# the plan ---------------------------------------------------------------------------------------------

OVERRIDES = {  # flag → (plan field, what the flag stands for in messages)
    "model": "model",
    "method": "method",
    "rank": "rank",
    "alpha": "alpha",
    "lr": "learning_rate",
    "batch_size": "micro_batch_size",
    "accumulation": "accumulation_steps",
    "devices": "devices",
}


def _with_overrides(plan: MappedConfig, args: argparse.Namespace) -> MappedConfig:
    for flag, name in OVERRIDES.items():
        value = getattr(args, flag)
        if value is None:
            continue
        upper = MAX_RANK if flag == "rank" else MAX_BATCH_SIZE if isinstance(value, int) else math.inf
        if isinstance(value, int | float) and not (0 < value <= upper and math.isfinite(value)):
            bound = f" and at most {upper}" if upper < math.inf else " and finite"
            raise ConfigError(
                plan.path, f"--{flag.replace('_', '-')}", f"must be positive{bound} (got {value})"
            )
        setattr(plan, name, value.lower() if flag == "method" else value)
        plan.keys[name] = f"--{flag.replace('_', '-')}"
    if args.devices is not None:
        plan.devices_source = "flag"
    method = METHODS.get(plan.method)
    for name, flag in (
        ("model", "--model"),
        ("rank", "--rank"),
        ("micro_batch_size", "--batch-size"),
        ("learning_rate", "--lr"),
    ):
        if name == "rank" and method is not None and not method.uses_rank:
            continue  # full fine-tuning and prompt tuning: studies of them store the spec's default rank
        if getattr(plan, name) is None:
            key = plan.keys.get(name, name)
            raise ConfigError(plan.path, key, f"missing; set it in the config or pass {flag}")
    return plan


def _context(plan: MappedConfig) -> dict[str, Any]:
    rank = plan.rank if plan.rank is not None else StudySpec.model_fields["rank"].default
    return {"model": plan.model, "method": plan.method, "rank": rank, "alpha": plan.alpha}


def _check_submit_flags(plan: MappedConfig, args: argparse.Namespace) -> None:
    from advisor.storage.models import MAX_ROW_ID  # SQLAlchemy: only when a check runs

    if args.study is not None and not 0 < args.study <= MAX_ROW_ID:
        raise ConfigError(plan.path, "--study", f"must be a study id, 1 to {MAX_ROW_ID} (got {args.study})")
    if not args.submit:
        for flag in ("wait", "budget", "budget_examples", "batch_sizes"):
            if getattr(args, flag) is not None:
                raise ConfigError(
                    plan.path, f"--{flag.replace('_', '-')}", "only means something with --submit"
                )
        return
    if args.offline:
        raise ConfigError(plan.path, "--submit", "submits to a service; pass --server URL, not --offline")
    for flag in ("model", "method", "rank", "alpha", "batch_size", "accumulation"):
        if getattr(args, flag) is not None:
            raise ConfigError(
                plan.path,
                f"--{flag.replace('_', '-')}",
                "--submit studies the config as written; put this value into the config instead",
            )
    for flag, value in (("--wait", args.wait), ("--budget", args.budget)):
        if value is not None and not (value > 0 and math.isfinite(value)):
            raise ConfigError(plan.path, flag, f"must be a positive number of seconds (got {value})")
    if args.budget_examples is not None and args.budget_examples <= 0:
        raise ConfigError(plan.path, "--budget-examples", f"must be positive (got {args.budget_examples})")
    if args.batch_sizes and not all(0 < b <= MAX_BATCH_SIZE for b in args.batch_sizes):
        raise ConfigError(plan.path, "--batch-sizes", f"must be positive, at most {MAX_BATCH_SIZE}")


# the plan's data ---------------------------------------------------------------------------------------


@dataclass
class LocalDataset:
    """The config's training data when it is a local file: what identifies it to the service (the SHA-256
    of the bytes uploaded, as POST /v1/datasets names it) and how many rows it has."""

    path: Path
    data: bytes  # JSONL or CSV, as uploaded
    upload_format: str
    fingerprint: str
    rows: int


def local_dataset(plan: MappedConfig) -> LocalDataset | None:
    """The config's dataset file, read for upload; None for a hub id, a folder or a file type the service
    does not take (the study then reads the config's path on the service's side)."""
    path = Path(str((plan.spec.get("dataset") or {}).get("path", "")))
    if not path.is_file():
        return None
    return _readable_dataset(plan, path)


def _readable_dataset(plan: MappedConfig, path: Path) -> LocalDataset | None:
    try:
        raw = path.read_bytes()
        if path.suffix == ".jsonl":
            data, fmt, rows = raw, "jsonl", sum(1 for line in raw.splitlines() if line.strip())
        elif path.suffix == ".csv":
            data, fmt, rows = raw, "csv", len(list(csv.DictReader(io.StringIO(raw.decode("utf-8")))))
        elif path.suffix == ".json":
            records = json.loads(raw)
            if not isinstance(records, list):
                return None
            data = "\n".join(json.dumps(r, ensure_ascii=False) for r in records).encode() + b"\n"
            fmt, rows = "jsonl", len(records)
        else:
            return None
    except (OSError, UnicodeDecodeError, ValueError, csv.Error) as exc:
        key = plan.keys.get("dataset", "dataset")
        raise ConfigError(plan.path, key, f"cannot read {path}: {type(exc).__name__}: {exc}") from None
    return LocalDataset(path, data, fmt, hashlib.sha256(data).hexdigest(), rows)


# asking ------------------------------------------------------------------------------------------------


def _ask(
    plan: MappedConfig, dataset: LocalDataset | None, args: argparse.Namespace, *, study_id: int | None
) -> Decision:
    recipe = plan.recipe()
    if args.offline:
        answer = _ask_local(plan, recipe, dataset, study_id)
        return decide(
            answer,
            batch_size=plan.effective_batch_size,
            learning_rate=plan.learning_rate or 0.0,
            on_mismatch=args.on_mismatch,
        )
    body = {
        **_context(plan),
        "batch_size": plan.effective_batch_size,
        "learning_rate": plan.learning_rate,
        "recipe": recipe.model_dump(mode="json"),
        "on_mismatch": args.on_mismatch,
    }
    if dataset is not None:
        body.update(dataset_fingerprint=dataset.fingerprint, dataset_size=dataset.rows)
    if study_id is not None:
        body["study_id"] = study_id
    client = _client(plan, args)
    try:
        return Decision.model_validate(client.check(body)["decision"])
    except Unreachable as exc:  # an unreachable service knows nothing: indeterminate, fails closed
        return decide(
            {"status": "none", "detail": str(exc)},
            batch_size=plan.effective_batch_size,
            learning_rate=plan.learning_rate or 0.0,
        )
    except ServiceError as exc:
        raise ConfigError(plan.path, "--server", str(exc)) from None


def _client(plan: MappedConfig, args: argparse.Namespace) -> ServiceClient:
    server = args.server or os.environ.get(SERVER_ENV)
    if not server:
        raise ConfigError(plan.path, "--server", f"pass --server URL (or set ${SERVER_ENV}) or --offline")
    return ServiceClient(server, args.token or os.environ.get(TOKEN_ENV))


def _ask_local(
    plan: MappedConfig, recipe: Recipe, dataset: LocalDataset | None, study_id: int | None
) -> dict[str, Any]:
    """The same lookup the service makes, on the SQLite database under LORA_ADVISOR_DATA_DIR."""
    from advisor.cli.recommend import data_dir, open_database
    from advisor.storage import knowledge

    folder = data_dir()
    if not (folder / "advisor.db").is_file():
        return {
            "status": "none",
            "detail": f"no local database at {folder / 'advisor.db'}; "
            "run `advisor recommend` there first, or check against a --server",
        }
    db = open_database(folder)
    try:
        with db.transaction(write=False) as session:
            return knowledge.lookup(
                session,
                **_context(plan),
                dataset_fingerprint=dataset.fingerprint if dataset else None,
                dataset_examples=dataset.rows if dataset else None,
                recipe=recipe,
                study_id=study_id,
            )
    finally:
        db.dispose()


# submitting a study of the config ------------------------------------------------------------------------


def _needs_study(decision: Decision) -> bool:
    """Nothing answers the config, or only a study of another recipe (which fails the check)."""
    mismatch = any(f.key == "recipe" and f.level == "error" for f in decision.findings)
    return decision.outcome == "indeterminate" or mismatch


def _submit_and_judge(
    plan: MappedConfig, dataset: LocalDataset | None, decision: Decision, args: argparse.Namespace
) -> Decision:
    """Submit the study of this config (or find the one submitted before), wait for it if asked, and judge
    the plan by its answer; while it runs the verdict is indeterminate and gives its URL."""
    client = _client(plan, args)
    try:
        submitted = _submit(client, plan, dataset, args)
        study = submitted
        if args.wait:
            study = client.wait_for_study(submitted["id"], args.wait, on_progress=_progress_line)
    except ServiceError as exc:
        raise ConfigError(plan.path, "--server", str(exc)) from None
    if study.get("state") == "succeeded":
        return _ask(plan, dataset, args, study_id=submitted["id"])
    return _pending(decision, submitted, study)


def _submit(
    client: ServiceClient, plan: MappedConfig, dataset: LocalDataset | None, args: argparse.Namespace
) -> dict[str, Any]:
    if dataset is not None:  # the service cannot read the CI machine's files: it studies an uploaded copy
        stored = client.upload_dataset(dataset.data, dataset.upload_format)
        plan.use_dataset({**plan.spec["dataset"], "path": stored["path"]}, source="upload")
    overrides: dict[str, Any] = {}
    if args.budget is not None:
        overrides["budget"] = {"proxy_seconds": args.budget}
    elif args.budget_examples is not None:
        overrides["budget"] = {"proxy_seconds": None, "proxy_examples": args.budget_examples}
    if args.batch_sizes:
        overrides["batch_sizes"] = sorted(set(args.batch_sizes))
    spec = plan.study_spec(**overrides)  # names the config key when the study cannot be made
    body: dict[str, Any] = {
        "config": plan.source,
        "format": plan.format,
        "dataset": spec.dataset.model_dump(mode="json"),
        **overrides,
    }
    if plan.devices_source == "flag":
        body["devices"] = plan.devices
    key = "advisor-check-" + recipe_key(spec, dataset.fingerprint if dataset else None)
    return client.submit_study(body, key)


def _progress_line(study: dict[str, Any]) -> None:
    print(
        f"advisor check: study {study['id']} {study['state']} {100 * float(study.get('progress') or 0):.0f}%"
        + (f" — {study['message']}" if study.get("message") else ""),
        file=sys.stderr,
    )


def _pending(decision: Decision, submitted: dict[str, Any], study: dict[str, Any]) -> Decision:
    """The verdict while the submitted study has no answer: indeterminate, with where to follow it."""
    state = study.get("state", "queued")
    again = "submitted" if submitted.get("created") else "submitted earlier for this recipe"
    if state in ("failed", "canceled"):
        message = (
            f"study {submitted['id']} of this recipe {state}: {study.get('error') or 'no answer'} "
            f"({submitted['url']})"
        )
    else:
        message = (
            f"study {submitted['id']} of this recipe ({again}) is {state}: {submitted['url']}; rerun the "
            "check when it has finished, or pass --wait SECONDS"
        )
    kept = [
        f.model_copy(update={"level": "warning"}) if f.key == "recipe" else f
        for f in decision.findings
        if f.key != "context"
    ]
    return decision.model_copy(
        update={
            "outcome": "indeterminate",
            "findings": [*kept, Finding(level="error", key="context", message=message)],
        }
    )


def _print_usage_error(args: argparse.Namespace, exc: ConfigError) -> None:
    """The error on stderr, and on stdout in the format asked for: a SARIF upload or a JSON reader in a
    pipeline gets a document that says what to fix, not an empty file."""
    print(f"error: {exc}", file=sys.stderr)
    if args.format == "github":
        print(github_command("error", exc.path, exc.line, f"advisor check: {exc.key}: {exc.message}"))
    elif args.format == "json":
        error = {"path": exc.path, "key": exc.key, "line": exc.line, "message": exc.message}
        print(json.dumps({"outcome": "error", "exit_code": EXIT_USAGE, "error": error}, indent=2))
    elif args.format == "sarif":
        print(sarif_document([config_error_result(exc)], [CONFIG_ERROR_RULE], "error", EXIT_USAGE))


# output ------------------------------------------------------------------------------------------------
