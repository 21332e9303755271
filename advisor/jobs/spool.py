"""Finished results kept on local disk while the database is down, so an outage never costs a study's work.

A worker that finishes a job writes its result under the lease it holds. When the database stays down past
the lease (a 45-second PostgreSQL outage once dropped a finished study's result after 30 s, and the study
ran again from scratch), the result waits here, one JSON file per (job, attempt), written atomically, and
the worker stores it as soon as the database answers again, before it leases anything new. Whether the
write is accepted is still the lease protocol's decision (`queue.complete` checks the attempt): a job
another worker leased meanwhile rejects the late result as stale, and the file is dropped.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from advisor.jobs.queue import JobResult, Lease
from advisor.records import RunRecord
from advisor.storage.jsonsafe import json_safe

log = logging.getLogger("advisor.worker")


@dataclasses.dataclass(frozen=True)
class SpooledResult:
    lease: Lease
    result: JobResult
    path: Path


class ResultSpool:
    """A folder of results waiting for the database."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def put(self, lease: Lease, result: JobResult) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self.folder / f"job-{lease.job_id}-attempt-{lease.attempt}.json"
        document = {"lease": dataclasses.asdict(lease), "result": _result_json(result)}
        with tempfile.NamedTemporaryFile("w", dir=self.folder, delete=False, suffix=".part") as tmp:
            json.dump(json_safe(document), tmp)
        os.replace(tmp.name, target)  # a crash mid-write never leaves a half result under the final name
        return target

    def pending(self) -> Iterator[SpooledResult]:
        """Spooled results, oldest first; an unreadable file is logged and moved aside, never retried."""
        if not self.folder.is_dir():
            return
        for path in sorted(self.folder.glob("job-*.json"), key=lambda p: p.stat().st_mtime):
            try:
                document = json.loads(path.read_text(encoding="utf-8"))
                yield SpooledResult(Lease(**document["lease"]), _result_from_json(document["result"]), path)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.error("spooled result %s is unreadable (%s); moved to %s.bad", path, exc, path.name)
                path.replace(path.with_suffix(".bad"))

    @staticmethod
    def remove(spooled: SpooledResult) -> None:
        spooled.path.unlink(missing_ok=True)


def _result_json(result: JobResult) -> dict[str, Any]:
    values = dataclasses.asdict(result)
    values["runs"] = [run.model_dump(mode="json") for run in result.runs]
    return values


def _result_from_json(values: dict[str, Any]) -> JobResult:
    return JobResult(**{**values, "runs": [RunRecord.model_validate(run) for run in values["runs"]]})
