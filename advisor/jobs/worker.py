"""The worker loop: lease a job, keep the lease alive from a heartbeat thread, run the job function on an
executor, then write its result (or failure) under the attempt it holds.

Database outages are waited out: the loop backs off and keeps polling, and a write that cannot reach the
database is retried until the lease would have expired (after which another attempt owns the job).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from typing import Any

from advisor.jobs import queue
from advisor.jobs.control import JobCanceled, JobControl, LeaseLost, PermanentJobError
from advisor.jobs.executors import Executor, make_executor
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
        self._last_touch = 0.0

    def run_forever(self, stop: threading.Event) -> None:
        log.info("worker %s started (executor %s)", self.worker_id, self.executor.name)
        while not stop.is_set():
            try:
                self._touch()
                worked = self.run_once()
            except DatabaseUnavailable as exc:
                log.warning("database unavailable, retrying: %s", exc)
                worked = False
            if not worked:
                stop.wait(self.options.poll_seconds)
        self._leave()

    def run_once(self) -> bool:
        """Lease and run one job; False when none was due."""
        lease = queue.claim(self.db, worker_id=self.worker_id, lease_seconds=self.options.lease_seconds)
        if lease is None:
            return False
        # Warm start: the study reads what this database already knows about similar contexts.
        control = JobControl(store=DatabaseKnowledgeStore(self.db))
        done = threading.Event()
        beat = threading.Thread(target=self._heartbeat_loop, args=(lease, control, done), daemon=True)
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
            self._write(lambda: queue.mark_canceled(self.db, lease=lease), lease)
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
            self._write(
                lambda: queue.fail(
                    self.db, lease=lease, error=error, retryable=retryable, backoff=self.options.backoff
                ),
                lease,
            )
            return
        self._write(lambda: queue.complete(self.db, lease=lease, result=result), lease)

    def _write(self, write: Callable[[], object], lease: queue.Lease) -> None:
        """Retry a final write through a database outage, but no longer than the lease lasts."""
        deadline = time.monotonic() + lease.lease_seconds
        while True:
            try:
                write()
                return
            except StaleAttempt as exc:
                log.warning("%s", exc)
                return
            except DatabaseUnavailable:
                if time.monotonic() > deadline:
                    log.error(
                        "job %s attempt %s: result not stored, database down past the lease",
                        lease.job_id,
                        lease.attempt,
                    )
                    return
                time.sleep(min(1.0, self.options.poll_seconds))

    def _heartbeat_loop(self, lease: queue.Lease, control: JobControl, done: threading.Event) -> None:
        interval = lease.lease_seconds / 3  # two missed beats still leave the lease alive
        while not done.wait(interval):
            try:
                if queue.heartbeat(self.db, lease=lease, progress=control.fraction, message=control.message):
                    control.canceled.set()
            except StaleAttempt:
                control.lost.set()
                return
            except DatabaseUnavailable as exc:
                log.warning("heartbeat failed, will retry: %s", exc)

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


def worker_process_main(database_url: str, options: WorkerOptions) -> None:
    """Entry point of one worker process: runs until SIGTERM or SIGINT."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    db = Database(database_url)
    try:
        Worker(db, options=options).run_forever(stop)
    finally:
        db.dispose()


def start_worker_processes(database_url: str, options: WorkerOptions, count: int) -> list[Any]:
    # spawn, not fork: the parent may hold database connections and threads (uvicorn's), which fork copies.
    context = multiprocessing.get_context("spawn")
    processes = []
    for index in range(count):
        process = context.Process(
            target=worker_process_main,
            args=(database_url, options),
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
