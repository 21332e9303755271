"""The worker loop: lease a job, keep the lease alive from a heartbeat thread, run the job function on an
executor, then write its result (or failure) under the attempt it holds.

Database outages are waited out: the loop backs off and keeps polling, and a write that cannot reach the
database is retried for as long as the lease lasts. A finished result that still cannot be written waits in
the worker's spool on local disk (`advisor.jobs.spool`) and is stored as soon as the database answers again,
before the worker leases anything new; the lease protocol decides whether it is still accepted.

A worker process started by a server dies with it: it asks Linux for SIGTERM when its parent dies
(PR_SET_PDEATHSIG) and, where that is not available, notices the parent is gone at its next poll.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import math
import multiprocessing
import os
import signal
import socket
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from advisor.jobs import queue
from advisor.jobs.control import JobCanceled, JobControl, LeaseLost, PermanentJobError, RunnerFactory
from advisor.jobs.executors import Executor, make_executor
from advisor.jobs.heartbeat import keep_lease
from advisor.jobs.spool import ResultSpool
from advisor.storage import repository as repo
from advisor.storage.db import Database
from advisor.storage.errors import DatabaseUnavailable, StaleAttempt
from advisor.storage.knowledge_store import DatabaseKnowledgeStore

log = logging.getLogger("advisor.worker")


@dataclasses.dataclass(frozen=True)
class WorkerOptions:
    lease_seconds: float = 30.0
    poll_seconds: float = 1.0
    backoff: queue.Backoff = dataclasses.field(default_factory=queue.Backoff)
    executor: str = "local"
    executor_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    # Where finished results wait out a database outage; None: a folder in the system's temporary directory.
    spool_dir: Path | None = None
    # What trains a study's proxy runs (`proxy_runs.torch_runner` from the entry points); None: this worker
    # runs only jobs that bring their own (`synthetic`). A module-level callable: options travel to spawned
    # worker processes by pickling. The `ray` executor calls it with a Ray cluster's address (executors.py).
    runner: RunnerFactory | None = None


def default_spool_dir() -> Path:
    return Path(tempfile.gettempdir()) / "lora-advisor-spool"


class Worker:
    def __init__(
        self,
        db: Database,
        *,
        options: WorkerOptions,
        worker_id: str | None = None,
        executor: Executor | None = None,
    ) -> None:
        self.db = db
        self.options = options
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.executor = executor or make_executor(options.executor, **options.executor_options)
        self.spool = ResultSpool(options.spool_dir or default_spool_dir())
        self._last_touch = 0.0
        self._outage_seen, self._back_at = False, -math.inf

    def _in_outage_grace(self) -> bool:
        """Within one lease of the database coming back. Every lease expired during the outage, yet the
        workers holding them are alive: they renew at their next heartbeat (a third of a lease) or store
        their spooled result. Taking those jobs meanwhile would run studies again from scratch."""
        return time.monotonic() - self._back_at < self.options.lease_seconds

    def run_forever(self, stop: threading.Event) -> None:
        log.info("worker %s started (executor %s)", self.worker_id, self.executor.name)
        while not stop.is_set():
            try:
                self._touch()
                if self._outage_seen:  # the database is back: note when, for the grace period
                    self._outage_seen, self._back_at = False, time.monotonic()
                self.store_spooled_results()  # what finished during an outage goes in before new work
                worked = self.run_once()
            except DatabaseUnavailable as exc:
                log.warning("database unavailable, retrying: %s", exc)
                self._outage_seen = True
                worked = False
            if not worked:
                stop.wait(self.options.poll_seconds)
        self._leave()

    def run_once(self) -> bool:
        """Lease and run one job; False when none was due."""
        lease = queue.claim(
            self.db,
            worker_id=self.worker_id,
            lease_seconds=self.options.lease_seconds,
            take_expired=not self._in_outage_grace(),
        )
        if lease is None:
            return False
        # Warm start: the study reads what this database already knows about similar contexts.
        control = JobControl(store=DatabaseKnowledgeStore(self.db), runner=self.options.runner)
        done = threading.Event()
        beat = threading.Thread(
            target=keep_lease,
            args=(self.db, lease, control, done),
            kwargs={"on_outage": self._note_outage},
            daemon=True,
        )
        beat.start()
        try:
            self._execute(lease, control)
        finally:
            done.set()
            beat.join()
        return True

    def _execute(self, lease: queue.Lease, control: JobControl) -> None:
        try:
            result = self.executor.execute(lease.function, lease.payload, control)
        except LeaseLost:
            log.warning("job %s attempt %s: lease lost, dropping the attempt", lease.job_id, lease.attempt)
            return
        except JobCanceled:
            if not self._write(lambda: queue.mark_canceled(self.db, lease=lease), lease):
                log.error("job %s attempt %s: cancel not stored, database down", lease.job_id, lease.attempt)
            return
        except Exception as exc:
            cause = getattr(exc, "cause", None) or exc  # a Ray task error wraps the job's own exception
            retryable = not isinstance(cause, PermanentJobError)
            # A permanent error says what to fix in the user's input; a traceback would bury it.
            error = (
                str(cause)
                if not retryable
                else f"{type(cause).__name__}: {cause}\n{traceback.format_exc(limit=5)}"
            )
            log.warning("job %s attempt %s failed (%s)", lease.job_id, lease.attempt, cause)
            failed = self._write(
                lambda: queue.fail(
                    self.db, lease=lease, error=error, retryable=retryable, backoff=self.options.backoff
                ),
                lease,
            )
            if not failed:  # the expired lease makes the job claimable again: a retry, nothing lost
                log.error("job %s attempt %s: failure not stored, database down", lease.job_id, lease.attempt)
            return
        stored = self._write(lambda: queue.complete(self.db, lease=lease, result=result), lease)
        if not stored:
            path = self.spool.put(lease, result)
            log.error(
                "job %s attempt %s: database down past the lease; result kept at %s until it returns",
                lease.job_id,
                lease.attempt,
                path,
            )

    def store_spooled_results(self) -> int:
        """Write the results spooled during an outage; how many the database took (a stale one is dropped:
        another attempt owns its job). Raises DatabaseUnavailable while the database is still down."""
        stored = 0
        for spooled in self.spool.pending():
            try:
                queue.complete(self.db, lease=spooled.lease, result=spooled.result)
                stored += 1
                log.info(
                    "job %s attempt %s: spooled result stored", spooled.lease.job_id, spooled.lease.attempt
                )
            except StaleAttempt as exc:
                log.warning("spooled result dropped: %s", exc)
            self.spool.remove(spooled)
        return stored

    def _write(self, write: Callable[[], object], lease: queue.Lease) -> bool:
        """Retry a final write through a database outage, but no longer than the lease lasts. True when the
        write was made or is moot (another attempt owns the job); False when the database stayed down."""
        deadline = time.monotonic() + lease.lease_seconds
        while True:
            try:
                write()
                return True
            except StaleAttempt as exc:
                log.warning("%s", exc)
                return True
            except DatabaseUnavailable:
                self._outage_seen = True
                if time.monotonic() > deadline:
                    return False
                time.sleep(min(1.0, self.options.poll_seconds))

    def _note_outage(self) -> None:
        # Once the database is back, this worker too must leave the leases that expired meanwhile to their
        # holders for a while (`_in_outage_grace`).
        self._outage_seen = True

    def _touch(self) -> None:
        # Announce liveness for /readyz at most every few seconds, not on every poll.
        if time.monotonic() - self._last_touch < min(5.0, self.options.lease_seconds / 3):
            return
        with self.db.transaction() as session:
            repo.touch_worker(
                session,
                worker_id=self.worker_id,
                host=socket.gethostname(),
                pid=os.getpid(),
                executor=self.executor.name,
            )
        self._last_touch = time.monotonic()

    def _leave(self) -> None:
        try:
            with self.db.transaction() as session:
                repo.remove_worker(session, worker_id=self.worker_id)
        except DatabaseUnavailable:
            pass


WORKER_SEEN_WITHIN = dt.timedelta(seconds=30)  # /readyz counts a worker alive if it polled this recently


# processes ----------------------------------------------------------------------------------------


def worker_process_main(database_url: str, options: WorkerOptions, parent_pid: int | None = None) -> None:
    """Entry point of one worker process: runs until SIGTERM or SIGINT, or until `parent_pid` (the server
    that started it) dies: `kill -9` of `advisor serve` once left its worker leasing jobs as an orphan."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if parent_pid is not None:
        _die_with_parent(parent_pid, stop)
    db = Database(database_url)
    try:
        Worker(db, options=options).run_forever(stop)
    finally:
        db.dispose()


PR_SET_PDEATHSIG = 1  # prctl(2): the signal the kernel sends this process when its parent dies


def _die_with_parent(parent_pid: int, stop: threading.Event) -> None:
    """SIGTERM from the kernel when the parent dies (Linux), and a watch thread for other systems or a
    parent that died before the request was made."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the watch thread alone
        pass

    def watch() -> None:
        while not stop.wait(1.0):
            if os.getppid() != parent_pid:  # re-parented: the server is gone
                log.warning("server process %s is gone; worker stopping", parent_pid)
                stop.set()

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def start_worker_processes(database_url: str, options: WorkerOptions, count: int) -> list[Any]:
    # spawn, not fork: the parent may hold database connections and threads (uvicorn's), which fork copies.
    context = multiprocessing.get_context("spawn")
    processes = []
    for index in range(count):
        process = context.Process(
            target=worker_process_main,
            args=(database_url, options, os.getpid()),
            name=f"advisor-worker-{index}",
            daemon=True,
        )
        process.start()
        processes.append(process)
    return processes


def stop_worker_processes(processes: list[Any], *, timeout: float = 10.0) -> None:
    for process in processes:
        if process.is_alive():
            process.terminate()  # SIGTERM: the worker finishes its poll and deregisters
    for process in processes:
        process.join(timeout)
        if process.is_alive():
            process.kill()
