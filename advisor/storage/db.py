"""Engine, sessions and the one transaction boundary.

Every read and write goes through `Database.transaction()`: it commits, rolls back, and translates
driver exceptions into advisor.storage.errors, so no caller ever sees a SQLAlchemy or psycopg error.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, make_url, text
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session

from advisor.storage.errors import Conflict, DatabaseCorrupt, DatabaseUnavailable, SchemaOutOfDate

SQLITE_BUSY_TIMEOUT_MS = 10_000  # writers queue behind each other for up to 10 s before reporting busy
PG_CONNECT_TIMEOUT_S = 3  # so /readyz answers quickly when PostgreSQL is down


def default_sqlite_url(data_dir: str | Path) -> str:
    path = Path(data_dir).expanduser().resolve() / "advisor.db"
    return f"sqlite:///{path}"


def normalize_url(url: str) -> str:
    """Relative SQLite paths depend on the working directory of whoever starts the process; pin them."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        path = Path(parsed.database).expanduser().resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        return parsed.set(database=str(path)).render_as_string(hide_password=False)
    if parsed.drivername == "postgresql":
        # psycopg 3 is the driver we ship; SQLAlchemy 2.0 reads a bare postgresql:// URL as psycopg2.
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    return url


def make_engine(url: str) -> Engine:
    url = normalize_url(url)
    backend = make_url(url).get_backend_name()
    if backend == "sqlite":
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
        )
        _sqlite_setup(engine)
        return engine
    connect_args: dict[str, Any] = (
        {"connect_timeout": PG_CONNECT_TIMEOUT_S} if backend == "postgresql" else {}
    )
    # pre_ping: after a database restart, pooled connections are dead; test them instead of failing a request.
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20, connect_args=connect_args)


def _sqlite_setup(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's implicit BEGIN is always DEFERRED).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the writer, nor it them
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")  # safe with WAL; FULL costs an fsync per commit
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # A DEFERRED transaction that reads and then writes can fail at once with "database is locked"
        # when another writer got in between (the busy timeout does not apply to that upgrade). Write
        # transactions therefore take the write lock up front and wait their turn instead.
        immediate = conn.get_execution_options().get("sqlite_immediate")
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


_CONSTRAINT = re.compile(r'(?:constraint "|UNIQUE constraint failed: )([\w.]+)')


class Database:
    """A database by URL: `transaction()` is the only way in."""

    def __init__(self, url: str) -> None:
        self.url = normalize_url(url)
        self.engine = make_engine(self.url)
        self._writer = self.engine.execution_options(sqlite_immediate=True)

    @property
    def backend(self) -> str:
        return self.engine.dialect.name

    @contextlib.contextmanager
    def transaction(self, *, write: bool = True) -> Iterator[Session]:
        """One unit of work: committed when the block ends, rolled back on any exception."""
        session = Session(self._writer if write else self.engine, expire_on_commit=False)
        try:
            yield session
            session.commit()
        except IntegrityError as exc:
            session.rollback()
            detail = str(exc.orig)
            match = _CONSTRAINT.search(detail)
            raise Conflict(
                f"conflicting write: {detail.splitlines()[0]}", constraint=match.group(1) if match else None
            ) from None
        except (OperationalError, DBAPIError) as exc:
            session.rollback()
            if isinstance(exc, OperationalError) or exc.connection_invalidated:
                raise DatabaseUnavailable(f"database unavailable: {str(exc.orig).splitlines()[0]}") from None
            raise
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def ping(self) -> None:
        with self.transaction(write=False) as session:
            session.execute(text("SELECT 1"))

    def integrity_problem(self) -> str | None:
        """What is wrong with an SQLite file (PRAGMA quick_check: every page read, a few milliseconds per
        MB), or None when it is sound; PostgreSQL checks its own pages. DatabaseUnavailable when the file
        cannot be reached at all (locked, missing folder)."""
        if self.backend != "sqlite":
            return None
        try:
            with self.engine.connect() as connection:
                rows = connection.exec_driver_sql("PRAGMA quick_check").fetchall()
        except OperationalError as exc:
            raise DatabaseUnavailable(f"database unavailable: {str(exc.orig).splitlines()[0]}") from None
        except DBAPIError as exc:  # "file is not a database", "database disk image is malformed"
            return str(exc.orig).splitlines()[0]
        problems = [str(row[0]) for row in rows if row[0] != "ok"]
        return "; ".join(problems[:3]) if problems else None

    def check_integrity(self) -> None:
        """Refuse to start on a damaged SQLite file, with one line naming it and the fix (a damaged file
        once gave a 115-line traceback at start, or, damaged mid-file, a ready service whose lists failed)."""
        problem = self.integrity_problem()
        if problem is not None:
            path = make_url(self.url).database
            raise DatabaseCorrupt(
                f"the SQLite database {path} is damaged ({problem}); stop every process using it, restore "
                "the file from a backup (or move it aside to start empty) and run `advisor db upgrade`"
            )

    def check_schema(self) -> None:
        """Refuse to start on a damaged database, or one whose schema is not this code's head revision."""
        self.check_integrity()
        self.check_revision()

    def check_revision(self) -> None:
        """Refuse to run against a database whose schema is not this code's head revision."""
        from advisor.storage.migrate import current_revision, head_revision

        try:
            current = current_revision(self.engine)
        except OperationalError as exc:
            raise DatabaseUnavailable(f"database unavailable: {str(exc.orig).splitlines()[0]}") from None
        head = head_revision()
        if current != head:
            raise SchemaOutOfDate(
                f"the database schema is at revision {current or 'none (empty database)'} but this "
                f"version of lora-advisor needs {head}. Run `advisor db upgrade` with the same "
                f"LORA_ADVISOR_DATABASE_URL ({make_url(self.url).render_as_string(hide_password=True)})."
            )

    def dispose(self) -> None:
        self.engine.dispose()
