"""The heartbeat that keeps a leased job alive while it runs: one loop, for workers and the CLI."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from advisor.jobs import queue
from advisor.jobs.control import JobControl
from advisor.storage.db import Database
from advisor.storage.errors import DatabaseUnavailable, StaleAttempt

log = logging.getLogger("advisor.worker")


def keep_lease(
    db: Database,
    lease: queue.Lease,
    control: JobControl,
    done: threading.Event,
    *,
    on_outage: Callable[[], None] | None = None,
) -> None:
    """Renew `lease` every third of its length until `done` is set, carrying the job's progress to the
    database; two missed beats still leave the lease alive.

    A cancel through the service (POST /v1/studies/{id}/cancel) sets `control.canceled`, and a newer attempt
    holding the job sets `control.lost`: the job stops at its next check. A database outage is retried at
    the next beat; `on_outage` hears of it (a busy worker learns of an outage only here)."""
    while not done.wait(lease.lease_seconds / 3):
        try:
            if queue.heartbeat(db, lease=lease, progress=control.fraction, message=control.message):
                control.canceled.set()
        except StaleAttempt:
            control.lost.set()
            return
        except DatabaseUnavailable as exc:
            log.warning("heartbeat failed, will retry: %s", exc)
            if on_outage is not None:
                on_outage()
