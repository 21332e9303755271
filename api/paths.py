"""Model and dataset paths from requests, confined to configured roots.

A path may be relative to a root or absolute inside one; `..` is refused outright, and the resolved
path (symlinks followed) must still lie inside a root, so a link planted in a root cannot point out of it.
Hub ids (org/name) are accepted only when the service enables them.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePath

from advisor.errors import SpecError
from advisor.specs import MAX_NAME_CHARS, StudySpec

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def confine(value: str, *, roots: list[Path], field: str, allow_hub: bool, kind: str) -> str:
    """The resolved path inside a root (or the hub id); SpecError naming `field` otherwise."""
    if ".." in PurePath(value).parts:
        raise SpecError(
            field,
            "'..' is not allowed in paths",
            value=value,
            fix="give a path inside one of the configured roots",
        )
    candidate = Path(value).expanduser()
    real_roots = [root.resolve() for root in roots]
    bases = [candidate] if candidate.is_absolute() else [root / candidate for root in real_roots]
    for base in bases:
        try:
            if not base.exists():
                continue
            real = base.resolve()
        except OSError as error:  # a name too long for the file system, a loop of links, …
            raise SpecError(
                field,
                f"{kind} path cannot be used: {error.strerror or error}",
                value=value,
                fix="give a shorter path inside one of the configured roots",
            ) from error
        if any(real.is_relative_to(root) for root in real_roots):
            return str(real)
        raise SpecError(
            field,
            f"{kind} path resolves outside the configured roots",
            value=value,
            fix="place it under one of the roots (symlinks pointing out of a root are refused)",
        )
    if allow_hub and not candidate.is_absolute() and HUB_ID.match(value):
        return value
    where = ", ".join(str(root) for root in real_roots) or "(none configured)"
    hub = "" if allow_hub else "; hub ids are disabled (LORA_ADVISOR_ALLOW_HUB_IDS)"
    raise SpecError(
        field,
        f"{kind} not found under the configured roots {where}{hub}",
        value=value,
        fix=f"upload it or place it under a root set in LORA_ADVISOR_{kind.upper()}_ROOTS",
    )


def confine_spec(
    spec: StudySpec, *, model_roots: list[Path], dataset_roots: list[Path], allow_hub: bool
) -> StudySpec:
    """The spec with every path replaced by its confined, resolved form."""
    model = confine(spec.model, roots=model_roots, field="model", allow_hub=allow_hub, kind="model")
    if len(model) > MAX_NAME_CHARS:  # the root it resolved against made it longer than the store keeps
        raise SpecError(
            "model",
            f"resolves to a path of {len(model)} characters; at most {MAX_NAME_CHARS} are stored",
            value=spec.model,
            fix="use a shorter model folder name or a root closer to /",
        )
    proxy = (
        None
        if spec.proxy_model is None
        else confine(
            spec.proxy_model, roots=model_roots, field="proxy_model", allow_hub=allow_hub, kind="model"
        )
    )
    data = spec.dataset
    path = confine(data.path, roots=dataset_roots, field="dataset.path", allow_hub=allow_hub, kind="dataset")
    eval_path = (
        None
        if data.eval_path is None
        else confine(
            data.eval_path,
            roots=dataset_roots,
            field="dataset.eval_path",
            allow_hub=allow_hub,
            kind="dataset",
        )
    )
    dataset = data.model_copy(update={"path": path, "eval_path": eval_path})
    return spec.model_copy(update={"model": model, "proxy_model": proxy, "dataset": dataset})
