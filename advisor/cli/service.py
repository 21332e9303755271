"""Service subcommands of `advisor`: serve, worker, db, token (create, list, revoke). Each `add_*` takes
the subparsers object.

Heavy imports (FastAPI, uvicorn, SQLAlchemy models) happen inside the handlers, so `advisor --help`
stays instant.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from advisor.storage.db import Database
    from api.settings import Settings

EXIT_OK, EXIT_USAGE = 0, 2


def _settings(args: argparse.Namespace) -> Settings:
    from api.settings import Settings

    overrides = {
        name: getattr(args, name)
        for name in ("host", "port", "workers", "executor", "database_url")
        if getattr(args, name, None) is not None
    }
    return Settings(**overrides)


def _check_schema(url: str) -> Database:
    from advisor.storage.db import Database

    db = Database(url)
    db.check_schema()  # SchemaOutOfDate (an AdvisorError) prints its fix and exits 2 via cli.main
    return db


def _wait_for_database(url: str, pause_seconds: float = 2.0) -> Database:
    """A worker started while the database is down waits for it, as a running worker waits out an outage
    (a supervisor restarting it in a loop would only add noise); a wrong schema or a damaged file still
    stops it at once."""
    from advisor.storage.errors import DatabaseUnavailable

    while True:
        try:
            return _check_schema(url)
        except DatabaseUnavailable as exc:
            print(f"waiting for the database: {exc}", file=sys.stderr)
            time.sleep(pause_seconds)


# serve ----------------------------------------------------------------------------------------------


def add_serve(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("serve", help="run the REST API (and local workers) on 127.0.0.1:8000")
    parser.add_argument("--host", help="bind address (default 127.0.0.1; LORA_ADVISOR_HOST)")
    parser.add_argument("--port", type=int, help="port (default 8000; LORA_ADVISOR_PORT)")
    parser.add_argument("--workers", type=int, help="embedded local worker processes (default 1; 0: none)")
    parser.add_argument("--executor", choices=["local", "ray"], help="where jobs run (default local)")
    parser.add_argument("--database-url", help="SQLAlchemy URL (default SQLite under LORA_ADVISOR_DATA_DIR)")
    parser.set_defaults(handler=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    import uvicorn
    from pydantic import ValidationError

    from api.app import create_app

    try:
        settings = _settings(args)
    except ValidationError as exc:
        print(f"error: {exc.errors()[0]['msg']}", file=sys.stderr)
        return EXIT_USAGE
    db = _check_schema(settings.url)
    app = create_app(settings, db=db)
    print(
        f"lora-advisor on http://{settings.host}:{settings.port} (docs at /docs), "
        f"database {db.engine.url.render_as_string(hide_password=True)}",
        file=sys.stderr,
    )
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info")
    return EXIT_OK


# worker ---------------------------------------------------------------------------------------------


def add_worker(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("worker", help="run standalone workers against a shared database")
    parser.add_argument("--concurrency", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--executor", choices=["local", "ray"], help="where jobs run (default local)")
    parser.add_argument("--database-url", help="SQLAlchemy URL, e.g. postgresql://user@db/advisor")
    parser.set_defaults(handler=run_worker)


def run_worker(args: argparse.Namespace) -> int:
    import signal
    import threading

    from advisor.jobs.worker import Worker, start_worker_processes, stop_worker_processes
    from api.app import worker_options

    settings = _settings(args)
    db = _wait_for_database(settings.url)
    options = worker_options(settings)
    if args.concurrency <= 1:  # in this process, so kill -9 of the command kills the worker itself
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        Worker(db, options=options).run_forever(stop)
        return EXIT_OK
    processes = start_worker_processes(settings.url, options, args.concurrency)
    try:
        for process in processes:
            process.join()
    except KeyboardInterrupt:
        pass
    finally:
        stop_worker_processes(processes)
    return EXIT_OK


# db ---------------------------------------------------------------------------------------------------


def add_db(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("db", help="database schema: upgrade, downgrade, current")
    actions = parser.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    up = actions.add_parser("upgrade", help="apply migrations (default: to the newest)")
    up.add_argument("--revision", default="head")
    down = actions.add_parser("downgrade", help="revert migrations to REVISION ('base' empties the database)")
    down.add_argument("--revision", required=True)
    actions.add_parser("current", help="print the database's revision and this code's head")
    for sub in (up, down, parser):
        sub.add_argument("--database-url", help="SQLAlchemy URL (default from LORA_ADVISOR_* settings)")
    parser.set_defaults(handler=run_db)


def run_db(args: argparse.Namespace) -> int:
    from advisor.storage import migrate
    from advisor.storage.db import Database

    url = _settings(args).url
    if args.db_command == "upgrade":
        migrate.upgrade(url, args.revision)
    elif args.db_command == "downgrade":
        migrate.downgrade(url, args.revision)
    db = Database(url)
    try:
        current, head = migrate.current_revision(db.engine), migrate.head_revision()
    finally:
        db.dispose()
    state = "up to date" if current == head else "out of date: run `advisor db upgrade`"
    print(f"database {current or 'empty'}, code head {head} ({state})")
    return EXIT_OK


# token ------------------------------------------------------------------------------------------------


def add_token(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("token", help="API bearer tokens: create, list, revoke")
    actions = parser.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="make a token and print it once (only its hash is stored)")
    create.add_argument(
        "--scopes", default="read", help="comma-separated: read, submit, admin (default read)"
    )
    create.add_argument("--name", required=True, help="who or what uses it, e.g. ci-hook")
    listing = actions.add_parser("list", help="every token: id, prefix, name, scopes, created, revoked")
    revoke = actions.add_parser("revoke", help="revoke a token by id: it stops working within a second")
    revoke.add_argument("id", type=_row_id, help="the token's id, as `advisor token list` shows it")
    for sub in (create, listing, revoke):
        sub.add_argument("--database-url", help="SQLAlchemy URL (default from LORA_ADVISOR_* settings)")
    parser.set_defaults(handler=run_token)


def _row_id(text: str) -> int:
    """An id a row can have (1 … MAX_ROW_ID); argparse reports anything else as a usage error."""
    from advisor.storage.models import MAX_ROW_ID

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= MAX_ROW_ID:
        raise argparse.ArgumentTypeError(f"{value} is not a token id (they run from 1 to {MAX_ROW_ID})")
    return value


def run_token(args: argparse.Namespace) -> int:
    handlers = {"create": _create_token, "list": _list_tokens, "revoke": _revoke_token}
    return handlers[args.token_command](args)


def _create_token(args: argparse.Namespace) -> int:
    from api.security import create_token, parse_scopes

    try:
        scopes = parse_scopes(args.scopes)
    except ValueError as exc:
        print(f"error: --scopes: {exc}", file=sys.stderr)
        return EXIT_USAGE
    db = _check_schema(_settings(args).url)
    token_id, token = create_token(db, name=args.name, scopes=scopes)
    print(token)
    print(
        f"token {token_id} ({args.name}, scopes {','.join(scopes)}): store it now, it is not shown again",
        file=sys.stderr,
    )
    return EXIT_OK


def _list_tokens(args: argparse.Namespace) -> int:
    from api.security import list_tokens

    db = _check_schema(_settings(args).url)
    print(f"{'id':>5}  {'prefix':<10}  {'scopes':<18}  {'created (UTC)':<16}  {'revoked (UTC)':<16}  name")
    for info in list_tokens(db):
        revoked = f"{info.revoked_at:%Y-%m-%d %H:%M}" if info.revoked_at else "-"
        print(
            f"{info.id:>5}  {info.prefix:<10}  {','.join(info.scopes):<18}  "
            f"{info.created_at:%Y-%m-%d %H:%M}  {revoked:<16}  {info.name}"
        )
    return EXIT_OK


def _revoke_token(args: argparse.Namespace) -> int:
    from advisor.storage.errors import NotFound
    from api.security import REVOCATION_CHECK_SECONDS, revoke_token

    db = _check_schema(_settings(args).url)
    try:
        info = revoke_token(db, token_id=args.id)
    except NotFound:
        print(f"error: no token {args.id}; `advisor token list` shows their ids", file=sys.stderr)
        return EXIT_USAGE
    print(
        f"token {info.id} ({info.name}, {info.prefix}…) revoked; running servers refuse it within "
        f"{REVOCATION_CHECK_SECONDS:g} s",
        file=sys.stderr,
    )
    return EXIT_OK
