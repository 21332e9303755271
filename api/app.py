"""The app factory. `create_app(settings)` refuses an out-of-date schema at start-up and, unless told
otherwise, runs `settings.workers` local worker processes for as long as the app lives."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

import advisor
from advisor.jobs.queue import Backoff
from advisor.jobs.worker import WorkerOptions, start_worker_processes, stop_worker_processes
from advisor.storage.db import Database
from api.access_log import redact_tokens_in_access_log
from api.dashboard import router as dashboard_router
from api.deps import Service
from api.docs import install_offline_docs
from api.middleware import ServiceMiddleware
from api.problems import install_problem_handlers, problem_responses
from api.routes import check, datasets, health, metrics, outcomes, recommendations, runs, studies, tokens
from api.security import RateLimiter, TokenAuth
from api.settings import Settings
from proxy_runs import torch_runner


def worker_options(settings: Settings) -> WorkerOptions:
    executor_options = {}
    if settings.executor == "ray":
        executor_options = {"address": settings.ray_address, "num_gpus": settings.ray_gpus_per_task}
    return WorkerOptions(
        lease_seconds=settings.lease_seconds,
        executor=settings.executor,
        backoff=Backoff(base_seconds=settings.retry_base_seconds),
        executor_options=executor_options,
        spool_dir=settings.data_dir / "spool",
        runner=torch_runner,  # the service's studies train with torch, imported by a worker when one starts
    )


def create_app(
    settings: Settings | None = None, *, db: Database | None = None, start_workers: bool = True
) -> FastAPI:
    settings = settings or Settings()
    db = db or Database(settings.url)
    registry = CollectorRegistry()
    service = Service(
        settings=settings,
        db=db,
        registry=registry,
        auth=TokenAuth(db, disabled=settings.auth_disabled, cache_seconds=settings.token_cache_seconds),
        limiter=RateLimiter(rate=settings.rate_limit_per_second, burst=settings.rate_limit_burst),
    )
    registry.register(metrics.QueueCollector(db))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db.check_schema()  # SchemaOutOfDate names the command that fixes it
        redact_tokens_in_access_log()  # after uvicorn configured logging, so its set-up keeps it
        if start_workers and settings.workers > 0:
            service.worker_processes = start_worker_processes(
                db.url, worker_options(settings), settings.workers
            )
        try:
            yield
        finally:
            stop_worker_processes(service.worker_processes)

    app = FastAPI(
        title="lora-advisor",
        version=advisor.__version__,
        lifespan=lifespan,
        description="Batch size and learning rate for LoRA fine-tunes, from proxy runs.",
        # Any route: ServiceMiddleware refuses a NUL character in any parameter or header with a 422.
        responses=problem_responses(422),
        docs_url=None,  # api/docs.py serves /docs and /redoc without a CDN
        redoc_url=None,
    )
    install_offline_docs(app)
    app.state.service = service
    install_problem_handlers(app)
    for module in (studies, runs, recommendations, datasets, outcomes, tokens, check, health, metrics):
        app.include_router(module.router)
    app.include_router(dashboard_router)
    app.add_middleware(
        ServiceMiddleware,
        registry=registry,
        max_body=settings.max_body_bytes,
        max_upload=settings.max_upload_bytes,
        upload_path=datasets.UPLOAD_PATH,
    )
    return app
