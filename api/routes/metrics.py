"""Prometheus metrics: request counts and latencies, plus queue depth read from the database at scrape."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.concurrency import run_in_threadpool

from advisor.jobs.worker import WORKER_SEEN_WITHIN
from advisor.storage import repository as repo
from advisor.storage.db import Database
from advisor.storage.errors import StorageError
from api.deps import ServiceDep

router = APIRouter(tags=["metrics"])


class QueueCollector(Collector):
    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> Iterator[GaugeMetricFamily]:
        jobs = GaugeMetricFamily("advisor_jobs", "jobs by state", labels=["state"])
        workers = GaugeMetricFamily("advisor_workers_alive", "workers that polled in the last 30 s")
        try:
            with self.db.transaction(write=False) as session:
                for state, count in repo.job_counts(session).items():
                    jobs.add_metric([state], count)
                workers.add_metric([], repo.live_workers(session, seen_within=WORKER_SEEN_WITHIN))
        except StorageError:
            return  # a scrape during an outage shows request metrics only; /readyz reports the outage
        yield jobs
        yield workers


@router.get("/metrics", include_in_schema=False)
async def metrics(service: ServiceDep) -> Response:
    data = await run_in_threadpool(generate_latest, service.registry)
    return Response(data, media_type=CONTENT_TYPE_LATEST)
