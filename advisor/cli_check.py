"""`advisor check CONFIG`: the CI hook. Is the planned (effective batch, LR) inside the recommended band?

Reads an Axolotl, LLaMA-Factory, Hugging Face / TRL, torchtune or study-spec config
(`advisor.training_configs`), asks the service (POST /v1/check) or, with --offline, the local database, and
judges the plan with `advisor.check.decide`. See docs/ci.md for the GitHub Actions and pre-commit set-up.

Exit codes: 0 inside the band; 1 outside it (the message gives the recommended values and how far off);
2 usage, parse or service-access error; 3 nothing known for the context (`--on-indeterminate pass`
makes it 0). An unreachable server is indeterminate too: the hook fails closed unless told otherwise.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Any

from advisor.check import Decision, Finding, decide
from advisor.specs import MAX_BATCH_SIZE, MAX_RANK
from advisor.training_configs import ConfigError, MappedConfig, load_config

EXIT_PASS, EXIT_FAIL, EXIT_USAGE, EXIT_INDETERMINATE = 0, 1, 2, 3
TOKEN_ENV, SERVER_ENV = "LORA_ADVISOR_TOKEN", "LORA_ADVISOR_URL"
TIMEOUT_SECONDS = 30.0
RULES = {  # SARIF rule id per (finding key, level)
    ("learning_rate", "error"): ("lr-outside-band", "The planned LR is outside the recommended band"),
    ("learning_rate", "warning"): ("lr-not-rescaled", "The effective batch changed but the LR did not"),
    ("batch_size", "error"): ("batch-outside-band", "The effective batch is outside the band"),
    ("context", "error"): ("no-recommendation", "Nothing is known for this model, method and rank"),
    ("context", "warning"): ("no-recommendation", "Nothing is known for this model, method and rank"),
    ("context", "note"): ("assumption", "A value the check had to assume"),
}


def add_check(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "check", help="CI hook: is a training config's batch size and LR in the band?"
    )
    parser.add_argument("config", help="Axolotl, LLaMA-Factory, HF/TRL, torchtune YAML/JSON or a study spec")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--server", help=f"service URL (default: ${SERVER_ENV})")
    where.add_argument(
        "--offline", action="store_true", help="read the local database (LORA_ADVISOR_DATA_DIR)"
    )
    parser.add_argument("--token", help=f"API token (default: ${TOKEN_ENV})")
    parser.add_argument("--format", choices=["text", "json", "sarif", "github"], default="text")
    parser.add_argument("--on-indeterminate", choices=["pass", "fail"], default="fail")
    parser.add_argument("--model", help="override the config's model")
    parser.add_argument("--method", help="override the method (lora, dora, rslora, pissa, ...)")
    parser.add_argument("--rank", type=int, help="override the LoRA rank")
    parser.add_argument("--alpha", type=float, help="override the LoRA alpha")
    parser.add_argument("--lr", type=float, help="override the planned learning rate")
    parser.add_argument("--batch-size", type=int, help="override the micro-batch size (per device)")
    parser.add_argument("--accumulation", type=int, help="override gradient accumulation steps")
    parser.add_argument("--devices", type=int, help="data-parallel devices (default: the config's, else 1)")
    parser.set_defaults(handler=run_check)


def run_check(args: argparse.Namespace) -> int:
    try:
        plan = _with_overrides(load_config(args.config), args)
        answer = _ask(plan, args)
    except ConfigError as exc:
        _print_usage_error(args, exc)
        return EXIT_USAGE
    decision = (
        answer
        if isinstance(answer, Decision)
        else decide(answer, batch_size=plan.effective_batch_size, learning_rate=plan.learning_rate or 0.0)
    )
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
    for name, flag in (
        ("model", "--model"),
        ("rank", "--rank"),
        ("micro_batch_size", "--batch-size"),
        ("learning_rate", "--lr"),
    ):
        if getattr(plan, name) is None:
            key = plan.keys.get(name, name)
            raise ConfigError(plan.path, key, f"missing; set it in the config or pass {flag}")
    return plan


def _context(plan: MappedConfig) -> dict[str, Any]:
    return {"model": plan.model, "method": plan.method, "rank": plan.rank, "alpha": plan.alpha}


# asking ------------------------------------------------------------------------------------------------


def _ask(plan: MappedConfig, args: argparse.Namespace) -> dict[str, Any] | Decision:
    if args.offline:
        return _ask_local(plan)
    server = args.server or os.environ.get(SERVER_ENV)
    if not server:
        raise ConfigError(plan.path, "--server", f"pass --server URL (or set ${SERVER_ENV}) or --offline")
    return _ask_server(plan, server, args.token or os.environ.get(TOKEN_ENV))


def _ask_local(plan: MappedConfig) -> dict[str, Any]:
    """The same lookup the service makes, on the SQLite database under LORA_ADVISOR_DATA_DIR."""
    from advisor.cli_recommend import data_dir, open_database
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
                session, **_context(plan), dataset_fingerprint=None, dataset_examples=None
            )
    finally:
        db.dispose()


def _ask_server(plan: MappedConfig, server: str, token: str | None) -> Decision:
    import httpx

    body = {**_context(plan), "batch_size": plan.effective_batch_size, "learning_rate": plan.learning_rate}
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    url = server.rstrip("/") + "/v1/check"
    try:
        response = httpx.post(url, json=body, headers=headers, timeout=TIMEOUT_SECONDS)
    except httpx.HTTPError as exc:  # an unreachable service knows nothing: indeterminate, fails closed
        return decide(
            {"status": "none", "detail": f"cannot reach {url}: {exc}"},
            batch_size=plan.effective_batch_size,
            learning_rate=plan.learning_rate or 0.0,
        )
    if response.status_code != 200:
        detail = _problem_detail(response)
        raise ConfigError(plan.path, "--server", f"{url} answered {response.status_code}: {detail}")
    decision = response.json().get("decision")
    if decision is None:
        raise ConfigError(plan.path, "--server", f"{url} is too old to answer `advisor check`; upgrade it")
    return Decision.model_validate(decision)


def _problem_detail(response: Any) -> str:
    try:
        return str(response.json().get("detail"))
    except ValueError:
        return response.text[:200]


def _print_usage_error(args: argparse.Namespace, exc: ConfigError) -> None:
    """The error on stderr, and on stdout in the format asked for: a SARIF upload or a JSON reader in a
    pipeline gets a document that says what to fix, not an empty file."""
    print(f"error: {exc}", file=sys.stderr)
    if args.format == "github":
        print(_command("error", exc.path, exc.line, f"advisor check: {exc.key}: {exc.message}"))
    elif args.format == "json":
        error = {"path": exc.path, "key": exc.key, "line": exc.line, "message": exc.message}
        print(json.dumps({"outcome": "error", "exit_code": EXIT_USAGE, "error": error}, indent=2))
    elif args.format == "sarif":
        print(_sarif_document([_config_error_result(exc)], [CONFIG_ERROR_RULE], "error", EXIT_USAGE))


CONFIG_ERROR_RULE = ("config-error", "The training config cannot be read or honoured")


def _config_error_result(exc: ConfigError) -> dict[str, Any]:
    location: dict[str, Any] = {"artifactLocation": {"uri": _uri(exc.path)}}
    if exc.line:
        location["region"] = {"startLine": exc.line}
    return {
        "ruleId": CONFIG_ERROR_RULE[0],
        "level": "error",
        "message": {"text": f"{exc.key}: {exc.message}"},
        "locations": [{"physicalLocation": location}],
    }


# output ------------------------------------------------------------------------------------------------


def _findings(plan: MappedConfig, decision: Decision) -> list[Finding]:
    """The decision's findings plus what the check assumed (a device count it could not read)."""
    found = list(decision.findings)
    if plan.devices_source == "default":
        found.append(
            Finding(
                level="note",
                key="context",
                message="devices: 1 assumed (no num_processes / world_size in the config); "
                "pass --devices N for multi-device runs",
            )
        )
    return found


def _batch_text(plan: MappedConfig) -> str:
    devices = f"{plan.devices} device{'s' if plan.devices != 1 else ''}"
    if plan.devices_source != "flag" and plan.devices_source != "default":
        devices += f" ({plan.devices_source})"
    elif plan.devices_source == "default":
        devices += " (assumed)"
    return (
        f"{plan.effective_batch_size} = {plan.micro_batch_size} micro × {plan.accumulation_steps} "
        f"accumulation × {devices}"
    )


def render_text(plan: MappedConfig, decision: Decision, code: int) -> str:
    d = decision
    lines = [
        f"advisor check: {d.outcome.upper()}  {plan.path} ({plan.format})",
        f"  context      {plan.model}, {plan.method} rank {plan.rank} alpha {plan.alpha:g}"
        if plan.alpha
        else f"  context      {plan.model}, {plan.method} rank {plan.rank}",
        f"  plan         effective batch {_batch_text(plan)}, LR {plan.learning_rate:.3g}",
    ]
    if d.recommended_batch_size is not None:
        lines.append(
            f"  recommended  batch {d.recommended_batch_size}, LR {d.recommended_learning_rate:.3g}; "
            f"at batch {d.effective_batch_size}: LR {d.rescaled_learning_rate:.2g}, "
            f"band {d.lr_low:.2g}…{d.lr_high:.2g} (batch sizes {d.batch_low}…{d.batch_high})"
        )
    lines += [f"  {f.level}: {f.message}" for f in _findings(plan, decision)]
    return "\n".join(lines)


PLAN_FIELDS = (
    "path",
    "format",
    "model",
    "method",
    "rank",
    "alpha",
    "micro_batch_size",
    "accumulation_steps",
    "devices",
    "learning_rate",
    "devices_source",
)


def render_json(plan: MappedConfig, decision: Decision, code: int) -> str:
    plan_fields = {name: getattr(plan, name) for name in PLAN_FIELDS}
    return json.dumps(
        {
            "outcome": decision.outcome,
            "exit_code": code,
            "plan": {**plan_fields, "effective_batch_size": plan.effective_batch_size},
            "decision": decision.model_dump(mode="json"),
            "notes": [f.message for f in _findings(plan, decision) if f.level == "note"],
        },
        indent=2,
    )


def render_github(plan: MappedConfig, decision: Decision, code: int) -> str:
    """GitHub Actions workflow commands: each finding an annotation on the config line it is about."""
    lines = []
    for finding in _findings(plan, decision):
        level = {"error": "error", "warning": "warning", "note": "notice"}[finding.level]
        if finding.key == "context" and finding.level == "error" and code == EXIT_PASS:
            level = "warning"  # indeterminate, let through by --on-indeterminate pass
        lines.append(_command(level, plan.path, _line(plan, finding), f"advisor check: {finding.message}"))
    lines.append(
        f"advisor check: {decision.outcome} (effective batch {_batch_text(plan)}, "
        f"LR {plan.learning_rate:.3g})"
    )
    return "\n".join(lines)


def _command(level: str, path: str, line: int | None, message: str) -> str:
    def escape(text: str, extra: str = "") -> str:
        text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
        return text.replace(":", "%3A").replace(",", "%2C") if extra else text

    where = f"file={escape(path, 'property')}" + (f",line={line}" if line else "")
    return f"::{level} {where}::{escape(message)}"


def _line(plan: MappedConfig, finding: Finding) -> int | None:
    if finding.key == "batch_size":
        return plan.lines.get("micro_batch_size")
    if finding.key == "learning_rate":
        return plan.lines.get("learning_rate")
    return plan.lines.get("model")


def render_sarif(plan: MappedConfig, decision: Decision, code: int) -> str:
    """SARIF 2.1.0, for GitHub code scanning (upload-sarif) and other SARIF viewers."""
    findings = _findings(plan, decision)
    used = sorted({RULES[(f.key, f.level)] for f in findings})
    results = [_sarif_result(plan, f) for f in findings]
    return _sarif_document(results, used, decision.outcome, code)


def _sarif_document(
    results: list[dict[str, Any]], rules: list[tuple[str, str]], outcome: str, code: int
) -> str:
    run = {
        "tool": {
            "driver": {
                "name": "lora-advisor",
                "informationUri": "https://github.com/lora-advisor/lora-advisor/blob/main/docs/ci.md",
                "version": _version(),
                "rules": [{"id": rule, "shortDescription": {"text": text}} for rule, text in rules],
            }
        },
        "results": results,
        "properties": {"outcome": outcome, "exitCode": code},
    }
    return json.dumps(
        {
            "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
            "version": "2.1.0",
            "runs": [run],
        },
        indent=2,
    )


def _sarif_result(plan: MappedConfig, finding: Finding) -> dict[str, Any]:
    region = {"startLine": line} if (line := _line(plan, finding)) else {}
    location: dict[str, Any] = {"artifactLocation": {"uri": _uri(plan.path)}}
    if region:
        location["region"] = region
    return {
        "ruleId": RULES[(finding.key, finding.level)][0],
        "level": finding.level,
        "message": {"text": finding.message},
        "locations": [{"physicalLocation": location}],
    }


def _uri(path: str) -> str:
    """Relative paths stay relative (code scanning resolves them against the checkout); else file URIs."""
    from pathlib import Path

    return Path(path).as_uri() if Path(path).is_absolute() else Path(path).as_posix()


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lora-advisor")
    except PackageNotFoundError:
        return "0+unknown"


RENDERERS = {"text": render_text, "json": render_json, "sarif": render_sarif, "github": render_github}
