"""Hub ids, told apart from paths: the Hugging Face hub's repo-id grammar, and the rule that a value which
exists on disk is never a hub id.

Why the second rule: transformers and datasets both look on the local disk first, relative to the process's
working directory, before they ask the hub. A value accepted as a hub id by the API (whose working directory
holds no such file) was once read by a worker from *its* working directory: `outside/creds.jsonl` trained a
study on a file outside every configured root. So both sides refuse a "hub id" that names something on disk,
and every refusal reads the same, so that a submitter cannot probe the disk by comparing messages.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from advisor.errors import SpecError
from advisor.specs import StudySpec

# One segment as huggingface_hub.utils.validate_repo_id accepts it: ASCII letters, digits, `_`, `-`, `.`,
# 1–96 characters, starting and ending with a letter, digit or `_` (so `.` and `..` are never a segment).
_SEGMENT = r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?"
HUB_ID = re.compile(rf"(?:{_SEGMENT}/)?{_SEGMENT}")


def is_hub_id(value: str) -> bool:
    """`name` or `org/name` in the hub's grammar (which also forbids `--`, `..` and a `.git` ending)."""
    return (
        HUB_ID.fullmatch(value) is not None
        and "--" not in value
        and ".." not in value
        and not value.endswith(".git")
    )


def exists_under(value: str, directories: list[Path]) -> bool:
    """Whether `value` names anything (a dangling link included) relative to one of `directories`. An error
    reading the disk counts as existing: a value the disk cannot answer for is no safe hub id either."""
    for directory in directories:
        try:
            if (directory / value).exists() or (directory / value).is_symlink():
                return True
        except (OSError, ValueError):  # ValueError: a NUL character, which no file name holds
            return True
    return False


def refused_path(field: str, value: str, *, kind: str, allow_hub: bool) -> SpecError:
    """The one error for every refused model or dataset path, whatever the reason (missing, outside the
    roots, `..`, unreadable, on disk but offered as a hub id): the same words for each, so the answer says
    nothing about what lies on the server's disk, nor where its roots are; it says how the roots are set."""
    hub = " or a hub id (org/name) that names nothing on the server's disk" if allow_hub else ""
    return SpecError(
        field,
        f"not a usable {kind}: give a file or folder inside the configured {kind} roots{hub}",
        value=value,
        fix=f"upload it, or place it under the service's data dir ({kind}s/, where `advisor demo` writes; "
        f"LORA_ADVISOR_DATA_DIR) or a root set in LORA_ADVISOR_{kind.upper()}_ROOTS",
    )


def spec_references(spec: StudySpec) -> Iterator[tuple[str, str, str]]:
    """(field, value, kind) for every model and dataset the spec names."""
    yield "model", spec.model, "model"
    if spec.proxy_model is not None:
        yield "proxy_model", spec.proxy_model, "model"
    yield "dataset.path", spec.dataset.path, "dataset"
    if spec.dataset.eval_path is not None:
        yield "dataset.eval_path", spec.dataset.eval_path, "dataset"


def check_stored_references(spec: StudySpec, *, working_directory: Path) -> None:
    """For a worker, before it reads anything: a stored spec (confined by the API on submit) names local
    files by absolute paths and hub models and datasets by hub ids. A relative value that is not a hub id, or
    that exists relative to this worker's working directory, was never confined: SpecError, not retryable."""
    for field, value, kind in spec_references(spec):
        if Path(value).is_absolute():
            continue
        if not is_hub_id(value) or exists_under(value, [working_directory]):
            raise refused_path(field, value, kind=kind, allow_hub=True)
