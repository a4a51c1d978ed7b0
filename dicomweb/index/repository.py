"""The Index: one class over SQLite and PostgreSQL, created once per process."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from dicomweb.index import schema
from dicomweb.index.batch import SeriesCache, add_batch
from dicomweb.index.engine import Writer, create_engines, migrate
from dicomweb.index.records import AddResult, InstanceRecord

log = logging.getLogger(__name__)

# Concurrent first inserts of one study or patient on PostgreSQL can collide on a
# unique key; the loser retries and then finds the winner's row.
_ATTEMPTS = 5
_MAX_BATCH = 200


@dataclass(frozen=True, slots=True)
class StoredInstance:
    """An instance as the index knows it."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    number_of_frames: int
    blob_key: str
    size: int
    sha256: str
    frames: bytes | None
    metadata: bytes
    bulkdata: bytes


@dataclass(frozen=True, slots=True)
class Totals:
    patients: int
    studies: int
    series: int
    instances: int
    bytes: int


class Index:
    """Reads and writes of the index. Writers are serialised on SQLite (one writer)."""

    def __init__(self, reader: AsyncEngine, writer: Writer) -> None:
        self._reader = reader
        self._writer = writer
        self._pending: list[tuple[InstanceRecord, asyncio.Future[AddResult]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._series = SeriesCache()

    @classmethod
    async def open(cls, url: str) -> Index:
        """Connect and migrate the schema to the newest revision."""
        reader, writer = create_engines(url)
        await migrate(writer)
        return cls(reader, writer)

    async def close(self) -> None:
        if self._flusher is not None:
            await self._flusher
        await self._writer.dispose()
        await self._reader.dispose()

    async def healthy(self) -> bool:
        """Whether the database answers."""
        try:
            async with self._reader.connect() as conn:
                await conn.execute(text("SELECT 1"))
            return True
        except (DBAPIError, OSError):
            log.exception("index health check failed")
            return False

    async def add_instance(self, record: InstanceRecord) -> AddResult:
        """Index one instance and update the aggregates.

        Instances arriving while a transaction runs are grouped into the next one
        (group commit), so concurrent ingests share statement and commit costs.
        """
        future: asyncio.Future[AddResult] = asyncio.get_running_loop().create_future()
        self._pending.append((record, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await asyncio.shield(future)

    async def _flush(self) -> None:
        while self._pending:
            batch = self._pending[:_MAX_BATCH]
            del self._pending[:_MAX_BATCH]
            try:
                results = await self.add_instances([record for record, _ in batch])
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)

    async def add_instances(self, records: Sequence[InstanceRecord]) -> list[AddResult]:
        """Index `records` in one transaction; one result per record, in order."""
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                return await self._writer.run(add_batch, records, self._series)
            except (IntegrityError, OperationalError) as exc:
                self._series.clear()
                # A unique-key race or a deadlock with another writer on PostgreSQL, or
                # a busy database file held by another process on SQLite: try again.
                if attempt == _ATTEMPTS:
                    raise
                log.info("index write retried after %s", type(exc.orig).__name__)
                await asyncio.sleep(0.02 * attempt)
        raise AssertionError("unreachable")

    async def referenced_blobs(self, keys: Sequence[str]) -> set[str]:
        """Which of `keys` belong to indexed instances."""
        if not keys:
            return set()
        async with self._reader.connect() as conn:
            rows = await conn.execute(
                select(schema.instance.c.blob_key).where(schema.instance.c.blob_key.in_(keys))
            )
            return {row.blob_key for row in rows}

    async def get_instance(self, sop_instance_uid: str) -> StoredInstance | None:
        """The stored instance with this SOP Instance UID, if any."""
        i, se, st = schema.instance, schema.series, schema.study
        query = (
            select(
                st.c.study_instance_uid,
                se.c.series_instance_uid,
                i.c.sop_instance_uid,
                i.c.sop_class_uid,
                i.c.transfer_syntax_uid,
                i.c.number_of_frames,
                i.c.blob_key,
                i.c.size,
                i.c.sha256,
                i.c.frames,
                i.c.metadata,
                i.c.bulkdata,
            )
            .join(se, se.c.id == i.c.series_pk)
            .join(st, st.c.id == i.c.study_pk)
            .where(i.c.sop_instance_uid == sop_instance_uid)
        )
        async with self._reader.connect() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else _stored(row)

    async def totals(self) -> Totals:
        """How much the index holds."""
        async with self._reader.connect() as conn:
            row = (
                await conn.execute(
                    select(
                        select(func.count()).select_from(schema.patient).scalar_subquery(),
                        select(func.count()).select_from(schema.study).scalar_subquery(),
                        select(func.count()).select_from(schema.series).scalar_subquery(),
                        select(func.count()).select_from(schema.instance).scalar_subquery(),
                        select(func.coalesce(func.sum(schema.instance.c.size), 0))
                        .select_from(schema.instance)
                        .scalar_subquery(),
                    )
                )
            ).one()
        return Totals(*(int(v) for v in row))


def _stored(row: Any) -> StoredInstance:
    return StoredInstance(**row._asdict())
