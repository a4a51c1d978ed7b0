"""Engines and migrations. The differences between SQLite and PostgreSQL live here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import Connection, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

MIGRATIONS = Path(__file__).parent / "migrations"
# Any constant: PostgreSQL replicas starting together migrate one at a time.
_MIGRATION_LOCK = 0x44494357


def create_engines(url: str) -> tuple[AsyncEngine, AsyncEngine]:
    """Return (read engine, write engine) for a database URL.

    SQLite gets WAL, full fsync on commit, a busy timeout for other processes, and a
    separate single-connection writer that begins with BEGIN IMMEDIATE, so a write
    transaction holds the lock from its first statement rather than failing to upgrade.
    PostgreSQL uses one pooled engine for both.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        engine = create_async_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)
        return engine, engine
    if parsed.database:
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    reader = create_async_engine(url, pool_size=4, max_overflow=4)
    writer = create_async_engine(url, pool_size=1, max_overflow=0)
    _configure_sqlite(reader, immediate=False)
    _configure_sqlite(writer, immediate=True)
    return reader, writer


def _configure_sqlite(engine: AsyncEngine, *, immediate: bool) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # The driver must not issue its own BEGIN; the "begin" hook below does.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in (
            "journal_mode=WAL",
            "synchronous=FULL",
            "busy_timeout=30000",
            "foreign_keys=ON",
        ):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def insert(dialect_name: str, table: Any) -> postgresql.Insert | sqlite.Insert:
    """An INSERT that supports ON CONFLICT DO NOTHING on both databases."""
    if dialect_name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


async def migrate(engine: AsyncEngine) -> None:
    """Bring the schema to the newest Alembic revision."""
    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
        await conn.run_sync(_upgrade)


def _upgrade(connection: Connection) -> None:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, "head")
