"""`FolderShelf`: paused runs kept as files in a folder that every worker reads, so a promoted run resumes in
whichever worker process trains its next rung.

`CheckpointShelf` (proxy_runs/resume.py) keeps paused runs in the memory of the one process that trains them.
When a study's runs train in several worker processes (`ParallelRunner`), the run a worker paused at rung 0
is promoted to a worker chosen by the pool, so the checkpoint must be where every worker can read it: a
private temporary folder on this machine (or, for workers on several machines, a folder they all mount).

One file per paused run (`<key digest>.pt`, written to a temporary name and renamed into place, so a reader
never sees half a file) and a small sidecar (`.json`: examples seen, loss at the pause, bytes) that the
study reads to plan without loading any checkpoint. The folder is created by `tempfile.mkdtemp` (mode 0700)
and holds only files this shelf wrote, which is why loading them in full (pickled loop state) is safe.

Room: `capacity_bytes` of files. When full, a run with a lower loss at its pause takes the place of the
highest, as in `CheckpointShelf`. Workers put concurrently without a lock, so the folder can exceed the
capacity by at most one checkpoint per worker writing at that moment.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Hashable
from pathlib import Path
from typing import Any, Self

import torch

from proxy_runs.resume import RunCheckpoint, pause_loss


def key_digest(key: Hashable) -> str:
    """A file name for a shelf key (a tuple of the spec's fingerprint and the config): stable across
    processes, unlike hash()."""
    return hashlib.sha256(repr(key).encode()).hexdigest()[:32]


class FolderShelf:
    """Paused runs by key, as files under `folder`, within `capacity_bytes`. The study's process owns the
    folder (`create`, `close`); workers receive the shelf itself (it pickles as its path and capacity)."""

    def __init__(self, folder: Path, capacity_bytes: int) -> None:
        self.folder = Path(folder)
        self.capacity_bytes = capacity_bytes

    @classmethod
    def create(cls, capacity_bytes: int, parent: Path | None = None) -> FolderShelf:
        return cls(Path(tempfile.mkdtemp(prefix="advisor-shared-paused-runs-", dir=parent)), capacity_bytes)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Delete the folder and every paused run in it."""
        shutil.rmtree(self.folder, ignore_errors=True)

    # Workers -----------------------------------------------------------------------------------------

    def put(self, key: Hashable, checkpoint: RunCheckpoint) -> bool:
        """Keep `checkpoint` under `key` if there is room, or in place of a run that paused with a higher
        loss; False when it is kept nowhere (that run will restart)."""
        self._drop(key_digest(key))
        if checkpoint.nbytes > self.capacity_bytes:
            return False
        loss = pause_loss(checkpoint)
        while self._used_bytes() + checkpoint.nbytes > self.capacity_bytes:
            kept = self._sidecars()
            worst = max(kept, key=lambda digest: kept[digest]["loss"], default=None)
            if worst is None or kept[worst]["loss"] <= loss:
                return False
            self._drop(worst)
        digest = key_digest(key)
        self._write(digest, ".pt", lambda path: torch.save(checkpoint, path))
        sidecar = {"examples_seen": checkpoint.examples_seen, "loss": loss, "nbytes": checkpoint.nbytes}
        self._write(digest, ".json", lambda path: path.write_text(json.dumps(sidecar)))
        return True

    def take(self, key: Hashable) -> RunCheckpoint | None:
        """The checkpoint under `key`, removed (a run resumes once); None without one."""
        digest = key_digest(key)
        path = self.folder / f"{digest}.pt"
        if not (self.folder / f"{digest}.json").exists() or not path.exists():
            return None
        checkpoint: RunCheckpoint = torch.load(path, weights_only=False)  # only files this shelf wrote
        self._drop(digest)
        return checkpoint

    # The study -----------------------------------------------------------------------------------------

    def paused_at(self, key: Hashable) -> int:
        """Examples the run under `key` had seen when it paused; 0 without a checkpoint (it would restart)."""
        sidecar = self._sidecars().get(key_digest(key))
        return int(sidecar["examples_seen"]) if sidecar else 0

    def keep_only(self, keys: set[Hashable]) -> None:
        """Drop every paused run not under `keys`: runs that were not promoted will never resume."""
        wanted = {key_digest(key) for key in keys}
        for digest in set(self._sidecars()) - wanted:
            self._drop(digest)

    def __len__(self) -> int:
        return len(self._sidecars())

    # Files ---------------------------------------------------------------------------------------------

    def _sidecars(self) -> dict[str, dict[str, Any]]:
        found = {}
        for path in self.folder.glob("*.json"):
            try:
                found[path.stem] = json.loads(path.read_text())
            except (OSError, ValueError):  # taken or dropped by another worker meanwhile
                continue
        return found

    def _used_bytes(self) -> int:
        return sum(int(sidecar["nbytes"]) for sidecar in self._sidecars().values())

    def _write(self, digest: str, suffix: str, write: Any) -> None:
        handle, temporary = tempfile.mkstemp(dir=self.folder, prefix=".writing-", suffix=suffix)
        os.close(handle)
        write(Path(temporary))
        os.replace(temporary, self.folder / f"{digest}{suffix}")

    def _drop(self, digest: str) -> None:
        for suffix in (".json", ".pt"):  # the sidecar first: a reader never finds it without its file
            (self.folder / f"{digest}{suffix}").unlink(missing_ok=True)
