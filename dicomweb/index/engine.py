"""Engines, the write path and migrations. SQLite and PostgreSQL differ only here.

Writes are plain synchronous functions of a SQLAlchemy Connection, run inside one
transaction by a Writer: on SQLite in a worker thread over the sqlite3 driver (a
transaction costs one thread hop instead of one per statement), on PostgreSQL through
asyncpg with `AsyncConnection.run_sync`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from alembic import command
from alembic.config import Config as AlembicConfig
from anyio import CapacityLimiter, to_thread
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

MIGRATIONS = Path(__file__).parent / "migrations"
# Any constant: PostgreSQL replicas starting together migrate one at a time.
_MIGRATION_LOCK = 0x44494357

T = TypeVar("T")

_POSTGRES_SESSION = {"max_parallel_workers_per_gather": "0", "jit": "off"}
_SQLITE_READERS = 16


class Writer(Protocol):
    """Runs a synchronous function of a Connection inside one write transaction."""

    async def run(self, fn: Callable[..., T], *args: Any) -> T: ...

    async def dispose(self) -> None: ...


class Reader(Protocol):
    """Runs a synchronous function of a Connection for a read."""

    async def run(self, fn: Callable[..., T], *args: Any) -> T: ...

    async def dispose(self) -> None: ...


class ThreadReader:
    """SQLite: each read in one worker thread on a pooled sqlite3 connection.

    One thread hop per read: an async driver hops to its connection's thread for every
    statement, the checkout's and the return's too, and that costs more than the
    index lookups themselves.
    """

    def __init__(self, engine: Engine, connections: int) -> None:
        self.engine = engine
        self._limiter = CapacityLimiter(connections)

    def _read(self, fn: Callable[..., T], *args: Any) -> T:
        with self.engine.connect() as conn:
            return fn(conn, *args)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await to_thread.run_sync(self._read, fn, *args, limiter=self._limiter)

    async def dispose(self) -> None:
        await to_thread.run_sync(self.engine.dispose)


class AsyncReader:
    """PostgreSQL: reads on the pooled asyncpg engine."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        async with self.engine.connect() as conn:
            return await conn.run_sync(fn, *args)

    async def dispose(self) -> None:
        await self.engine.dispose()


class ThreadWriter:
    """SQLite: one writer at a time, in a worker thread, on the sqlite3 driver."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._limiter = CapacityLimiter(1)

    def _transaction(self, fn: Callable[..., T], *args: Any) -> T:
        with self.engine.begin() as conn:
            return fn(conn, *args)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await to_thread.run_sync(self._transaction, fn, *args, limiter=self._limiter)

    async def dispose(self) -> None:
        await to_thread.run_sync(self.engine.dispose)


class AsyncWriter:
    """PostgreSQL: transactions on the pooled asyncpg engine."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        async with self.engine.begin() as conn:
            return await conn.run_sync(fn, *args)

    async def dispose(self) -> None:
        await self.engine.dispose()


def create_engines(url: str) -> tuple[Reader, Writer]:
    """Return (reader, writer) for a database URL.

    SQLite gets WAL, full fsync on commit (an acknowledged instance survives power
    loss), a busy timeout for other processes, and a writer that begins with BEGIN
    IMMEDIATE, so a write transaction holds the lock from its first statement rather
    than failing to upgrade a read lock.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        engine = create_async_engine(
            url,
            pool_size=10,
            max_overflow=10,
            pool_pre_ping=True,
            # Index lookups of a few ms: starting parallel workers or JIT-compiling a
            # plan costs more than the query itself.
            connect_args={"server_settings": _POSTGRES_SESSION},
        )
        return AsyncReader(engine), AsyncWriter(engine)
    if parsed.database:
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    sync_url = parsed.set(drivername="sqlite")
    # As many connections as reads run at once: a connection made and closed per read
    # would cost its pragmas each time.
    reader = create_engine(sync_url, pool_size=_SQLITE_READERS, max_overflow=0)
    _configure_sqlite(reader, immediate=False)
    writer = create_engine(sync_url, pool_size=1, max_overflow=0)
    _configure_sqlite(writer, immediate=True)
    return ThreadReader(reader, _SQLITE_READERS), ThreadWriter(writer)


def _configure_sqlite(engine: Engine, *, immediate: bool) -> None:
    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # The driver must not issue its own BEGIN; the "begin" hook below does.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in (
            "journal_mode=WAL",
            "synchronous=FULL",
            "busy_timeout=30000",
            "foreign_keys=ON",
            # LIKE is case-sensitive, as matching is (PS3.4 C.2.2.2.4); person names
            # are matched through folded keys instead.
            "case_sensitive_like=ON",
        ):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


# PostgreSQL's serialization failure and deadlock: the transaction may be run again.
_RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})


class ConcurrentChange(Exception):
    """A row a write transaction counted on was deleted by another one meanwhile."""


def is_retryable(exc: BaseException) -> bool:
    """Whether a write transaction that raised `exc` may succeed when run again.

    A unique-key race between concurrent first inserts, a row or a foreign key to a row
    another writer deleted, a deadlock on PostgreSQL, or a database file busy with
    another process on SQLite.
    """
    if isinstance(exc, IntegrityError | OperationalError | ConcurrentChange):
        return True
    return (
        isinstance(exc, DBAPIError) and getattr(exc.orig, "sqlstate", None) in _RETRYABLE_SQLSTATES
    )


def insert(dialect_name: str, table: Any) -> postgresql.Insert | sqlite.Insert:
    """An INSERT that supports ON CONFLICT DO NOTHING on both databases."""
    if dialect_name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def analyze(connection: Connection) -> None:
    """Gather planner statistics (a Writer function)."""
    if connection.dialect.name == "sqlite":
        # Sampled: a bounded cost whatever the size of the tables.
        connection.exec_driver_sql("PRAGMA analysis_limit=1000")
    connection.exec_driver_sql("ANALYZE")


async def migrate(writer: Writer) -> None:
    """Bring the schema to the newest Alembic revision."""
    await writer.run(_upgrade)


def _upgrade(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, "head")
