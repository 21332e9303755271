"""What `advisor check` prints: its verdict as text, JSON, GitHub annotations or SARIF 2.1.0 (for code
scanning), each finding pointing at the config line it is about."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from advisor.check import Decision, Finding
from advisor.training_configs import ConfigError, MappedConfig

# How `advisor check` exits: the contract a CI pipeline reads.
EXIT_PASS, EXIT_FAIL, EXIT_USAGE, EXIT_INDETERMINATE = 0, 1, 2, 3

RULES = {  # SARIF rule id per (finding key, level)
    ("learning_rate", "error"): ("lr-outside-band", "The planned LR is outside the recommended band"),
    ("learning_rate", "warning"): ("lr-not-rescaled", "The effective batch changed but the LR did not"),
    ("batch_size", "error"): ("batch-outside-band", "The effective batch is outside the band"),
    ("context", "error"): ("no-recommendation", "Nothing is known for this model, method and rank"),
    ("context", "warning"): ("no-recommendation", "Nothing is known for this model, method and rank"),
    ("context", "note"): ("assumption", "A value the check had to assume"),
    ("recipe", "error"): ("recipe-mismatch", "The answering study trained another recipe than the config"),
    ("recipe", "warning"): ("recipe-mismatch", "The answering study trained another recipe than the config"),
}


CONFIG_ERROR_RULE = ("config-error", "The training config cannot be read or honoured")


def config_error_result(exc: ConfigError) -> dict[str, Any]:
    location: dict[str, Any] = {"artifactLocation": {"uri": _uri(exc.path)}}
    if exc.line:
        location["region"] = {"startLine": exc.line}
    return {
        "ruleId": CONFIG_ERROR_RULE[0],
        "level": "error",
        "message": {"text": f"{exc.key}: {exc.message}"},
        "locations": [{"physicalLocation": location}],
    }


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
    if d.study is not None:
        lines.append(f"  answered by  {study_text(d.study)}")
        if d.study.get("recipe"):
            lines.append(f"  its recipe   {recipe_text(d.study['recipe'])}")
    lines += [f"  {f.level}: {f.message}" for f in _findings(plan, decision)]
    return "\n".join(lines)


def study_text(study: dict[str, Any]) -> str:
    budget = study.get("budget") or {}
    confidence = study.get("confidence")
    parts = [f"study {study.get('id')}"]
    if confidence is not None:
        label = study.get("confidence_label")
        score = f"{float(confidence):.2f}"
        parts.append(f"confidence {label} ({score})" if label else f"confidence {score}")
    if budget.get("examples_seen") is not None:
        parts.append(
            f"{budget['examples_seen']} proxy examples in {budget.get('runs')} runs, "
            f"{float(budget.get('proxy_seconds') or 0):.0f} s"
        )
    return ", ".join(parts)


def recipe_text(recipe: dict[str, Any]) -> str:
    """A stored recipe in one line, in the order a reader compares them."""
    targets = recipe.get("target_modules") or "PEFT default"
    clip = recipe.get("max_grad_norm")
    warmup = (
        f"{recipe['warmup_steps']} warm-up steps"
        if recipe.get("warmup_steps") is not None
        else f"warm-up {recipe.get('warmup_ratio'):g}"
    )
    length = (
        f"{recipe['max_steps']} steps"
        if recipe.get("max_steps") is not None
        else f"{recipe.get('epochs'):g} epochs"
    )
    clipping = f"{clip:g}" if clip is not None else "none"
    return (
        f"targets {targets if isinstance(targets, str) else ','.join(targets)}, "
        f"packing {'on' if recipe.get('packing') else 'off'}, clip {clipping}, "
        f"{recipe.get('lr_scheduler')} with {warmup}, seq {recipe.get('max_seq_len')}, {length}"
    )


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
        lines.append(
            github_command(level, plan.path, _line(plan, finding), f"advisor check: {finding.message}")
        )
    answered = f"; answered by {study_text(decision.study)}" if decision.study is not None else ""
    lines.append(
        f"advisor check: {decision.outcome} (effective batch {_batch_text(plan)}, "
        f"LR {plan.learning_rate:.3g}){answered}"
    )
    return "\n".join(lines)


def github_command(level: str, path: str, line: int | None, message: str) -> str:
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
    if finding.key == "recipe":
        field = finding.message.split("recipe mismatch with ", 1)[-1].split(": ", 2)[1]
        return plan.lines.get(field) or plan.lines.get(f"training.{field}") or plan.lines.get("model")
    return plan.lines.get("model")


def render_sarif(plan: MappedConfig, decision: Decision, code: int) -> str:
    """SARIF 2.1.0, for GitHub code scanning (upload-sarif) and other SARIF viewers."""
    findings = _findings(plan, decision)
    used = sorted({RULES[(f.key, f.level)] for f in findings})
    results = [_sarif_result(plan, f) for f in findings]
    return sarif_document(results, used, decision.outcome, code, study=decision.study)


def sarif_document(
    results: list[dict[str, Any]],
    rules: list[tuple[str, str]],
    outcome: str,
    code: int,
    *,
    study: dict[str, Any] | None = None,
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
        "properties": {"outcome": outcome, "exitCode": code}
        | ({"answeredBy": study} if study is not None else {}),
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

    return Path(path).as_uri() if Path(path).is_absolute() else Path(path).as_posix()


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lora-advisor")
    except PackageNotFoundError:
        return "0+unknown"


RENDERERS = {"text": render_text, "json": render_json, "sarif": render_sarif, "github": render_github}
