"""Model and dataset paths from requests, confined to configured roots.

A path may be relative to a root or absolute inside one; `..` is refused outright, and the resolved
path (symlinks followed) must still lie inside a root, so a link planted in a root cannot point out of it.
Hub ids (`name` or `org/name`, the hub's grammar) are accepted only when the service enables them, and
never for a value that exists on disk relative to a root or to the server's working directory
(advisor.hub_ids says why). Every refusal is the same error, whatever its reason.
"""

from __future__ import annotations

from pathlib import Path, PurePath

from advisor.errors import SpecError
from advisor.hub_ids import exists_under, is_hub_id, refused_path
from advisor.specs import MAX_NAME_CHARS, StudySpec


def path_inside_roots(value: str, roots: list[Path]) -> Path | None:
    """The real path (symlinks followed) that `value` names inside a root; None when it names none: missing,
    outside every root, holding `..`, or unreadable."""
    if ".." in PurePath(value).parts:
        return None
    candidate = Path(value).expanduser()
    real_roots = [root.resolve() for root in roots]
    bases = [candidate] if candidate.is_absolute() else [root / candidate for root in real_roots]
    for base in bases:
        try:
            if not base.exists():
                continue
            real = base.resolve()
        except (OSError, ValueError):  # a name too long for the file system, a loop of links, a NUL, …
            return None
        # The first existing base decides: a name that exists under one root but escapes it is refused,
        # not looked up again under the next root.
        return real if any(real.is_relative_to(root) for root in real_roots) else None
    return None


def confine(value: str, *, roots: list[Path], field: str, allow_hub: bool, kind: str) -> str:
    """The resolved path inside a root (or the hub id); the one refused-path SpecError naming `field`."""
    inside = path_inside_roots(value, roots)
    if inside is not None:
        return str(inside)
    if allow_hub and is_hub_id(value) and not exists_under(value, [*roots, Path.cwd()]):
        return value
    raise refused_path(field, value, kind=kind, allow_hub=allow_hub)


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
