"""The Index: one class over SQLite and PostgreSQL, created once per process."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from anyio import to_thread
from sqlalchemy import Connection, Row, Select, bindparam, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import Executable

from dicomweb.index import schema
from dicomweb.index.batch import SeriesCache, add_batch
from dicomweb.index.deletion import Deleted, DeleteTarget, delete_target
from dicomweb.index.engine import (
    ConcurrentChange,
    Reader,
    Writer,
    analyze,
    create_engines,
    is_retryable,
    migrate,
)
from dicomweb.index.records import AddResult, InstanceRecord
from dicomweb.index.search import SearchResult, build_locate, build_select, to_datasets
from dicomweb.index.stats import Stats, Totals, collect, count_totals
from dicomweb.query import Query

log = logging.getLogger(__name__)

# Concurrent first inserts of one study or patient on PostgreSQL can collide on a
# unique key; the loser retries and then finds the winner's row.
_ATTEMPTS = 5
_MAX_BATCH = 200
_FIRST_ANALYZE = 500
_MAX_ANALYZE_INTERVAL = 200_000


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
class InstanceSummary:
    """What a retrieve needs to know of an instance before it reads the instance."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    number_of_frames: int
    blob_key: str
    size: int
    sha256: str


class Index:
    """Reads and writes of the index. Writers are serialised on SQLite (one writer)."""

    def __init__(self, reader: Reader, writer: Writer) -> None:
        self._reader = reader
        self._writer = writer
        self._pending: list[tuple[InstanceRecord, asyncio.Future[AddResult]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._series = SeriesCache()
        # Planner statistics are refreshed as the index grows (see _count_added).
        self._added_since_analyze = 0
        self._analyze_after = _FIRST_ANALYZE
        self._analyzer: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, url: str) -> Index:
        """Connect and migrate the schema to the newest revision."""
        reader, writer = create_engines(url)
        await migrate(writer)
        return cls(reader, writer)

    async def close(self) -> None:
        if self._flusher is not None:
            await self._flusher
        if self._analyzer is not None:
            await self._analyzer
        await self._writer.dispose()
        await self._reader.dispose()

    async def healthy(self) -> bool:
        """Whether the database answers."""
        try:
            await self._fetch(text("SELECT 1"))
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
                results = await self._writer.run(add_batch, records, self._series)
                self._count_added(sum(r is AddResult.ADDED for r in results))
                return results
            except (DBAPIError, ConcurrentChange) as exc:
                self._series.clear()
                if attempt == _ATTEMPTS or not is_retryable(exc):
                    raise
                log.info("index write retried after %s", _cause(exc))
                await asyncio.sleep(0.02 * attempt)
        raise AssertionError("unreachable")

    async def delete(self, target: DeleteTarget) -> Deleted | None:
        """Remove a study, series or instance and update the aggregates.

        None when nothing matches. The caller removes the returned blobs.
        """
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                deleted = await self._writer.run(delete_target, target)
                break
            except DBAPIError as exc:
                # A deadlock with a writer adding to the same study, on PostgreSQL.
                if attempt == _ATTEMPTS or not is_retryable(exc):
                    raise
                log.info("index delete retried after %s", _cause(exc))
                await asyncio.sleep(0.02 * attempt)
        # This process's writers forget the series they knew (others see the counter).
        self._series.clear()
        return deleted

    def _count_added(self, added: int) -> None:
        """Refresh planner statistics whenever the index has grown enough.

        Without statistics (PostgreSQL before autovacuum gets to a bulk load, SQLite
        always) the planners guess, and a guess can turn an index lookup into a scan
        of every study. The threshold doubles, so statistics keep up with growth at a
        cost that shrinks relative to it.
        """
        self._added_since_analyze += added
        if self._added_since_analyze < self._analyze_after:
            return
        if self._analyzer is not None and not self._analyzer.done():
            return
        self._added_since_analyze = 0
        self._analyze_after = min(self._analyze_after * 2, _MAX_ANALYZE_INTERVAL)
        self._analyzer = asyncio.create_task(self.analyze())

    async def analyze(self) -> None:
        """Update the planner statistics of the index tables."""
        try:
            await self._writer.run(analyze)
        except (DBAPIError, OSError):
            log.exception("index statistics could not be updated")

    async def referenced_blobs(self, keys: Sequence[str]) -> set[str]:
        """Which of `keys` belong to indexed instances."""
        if not keys:
            return set()
        rows = await self._fetch(
            select(schema.instance.c.blob_key).where(schema.instance.c.blob_key.in_(keys))
        )
        return {row.blob_key for row in rows}

    async def get_instance(self, sop_instance_uid: str) -> StoredInstance | None:
        """The stored instance with this SOP Instance UID, if any."""
        rows = await self._fetch(_STORED_BY_UIDS, {"uids": [sop_instance_uid]})
        return _stored(rows[0]) if rows else None

    async def version(
        self, study_instance_uid: str, series_instance_uid: str | None = None
    ) -> tuple[int, int] | None:
        """What identifies the current content of a study or of one of its series: its
        number of instances and the index's delete counter. None when it does not exist.

        Stored instances never change: an add raises the count and a delete raises the
        counter, so equal versions mean equal content, in any process.
        """
        if series_instance_uid is None:
            rows = await self._fetch(_STUDY_VERSION, {"study": study_instance_uid})
        else:
            parameters = {"study": study_instance_uid, "series": series_instance_uid}
            rows = await self._fetch(_SERIES_VERSION, parameters)
        if not rows:
            return None
        row: Any = rows[0]
        return int(row[0]), int(row[1] or 0)

    async def list_instances(
        self,
        study_instance_uid: str,
        series_instance_uid: str | None = None,
        sop_instance_uid: str | None = None,
    ) -> list[InstanceSummary]:
        """The instances of a study, of one of its series, or one instance of that series.

        Ordered for retrieval: series by Series Number, then UID; instances by Instance
        Number, then UID (absent numbers last). Empty when nothing matches, also when
        the series is not in the study or the instance not in the series.
        """
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
            )
            .join(se, se.c.id == i.c.series_pk)
            .join(st, st.c.id == i.c.study_pk)
            .where(st.c.study_instance_uid == study_instance_uid)
            .order_by(
                se.c.series_number.is_(None),
                se.c.series_number,
                se.c.series_instance_uid,
                i.c.instance_number.is_(None),
                i.c.instance_number,
                i.c.sop_instance_uid,
            )
        )
        if series_instance_uid is not None:
            query = query.where(se.c.series_instance_uid == series_instance_uid)
        if sop_instance_uid is not None:
            query = query.where(i.c.sop_instance_uid == sop_instance_uid)
        return [InstanceSummary(**row._asdict()) for row in await self._fetch(query)]

    async def get_instances(self, sop_instance_uids: Sequence[str]) -> list[StoredInstance]:
        """The stored instances with these SOP Instance UIDs, in the order given.

        Unknown UIDs are left out. Callers pass a few hundred at a time: each instance
        brings its metadata along.
        """
        if not sop_instance_uids:
            return []
        rows = await self._fetch(_STORED_BY_UIDS, {"uids": list(sop_instance_uids)})
        found = {row.sop_instance_uid: _stored(row) for row in rows}
        return [found[uid] for uid in sop_instance_uids if uid in found]

    async def get_metadata(self, sop_instance_uids: Sequence[str]) -> list[bytes]:
        """The stored DICOM JSON of these instances, in the order given (unknown UIDs left out).

        Only the metadata column is read: a metadata response needs nothing else.
        """
        if not sop_instance_uids:
            return []
        i = schema.instance
        query = select(i.c.sop_instance_uid, i.c.metadata).where(
            i.c.sop_instance_uid.in_(sop_instance_uids)
        )
        found = {row.sop_instance_uid: row.metadata for row in await self._fetch(query)}
        return [found[uid] for uid in sop_instance_uids if uid in found]

    async def search(self, query: Query) -> SearchResult:
        """The instances, series or studies that match `query`, as DICOM JSON."""
        rows = await self._fetch(build_select(query))
        return await to_thread.run_sync(to_datasets, query, rows)

    async def locate(self, query: Query) -> list[InstanceSummary]:
        """The instances under the query's matches, in the order of a search."""
        rows = await self._fetch(build_locate(query))
        return [InstanceSummary(**row._asdict()) for row in rows]

    async def stats(self) -> Stats:
        """Counts and bytes, in all and per modality and day of receipt."""
        return await self._reader.run(collect)

    async def totals(self) -> Totals:
        """How much the index holds."""
        return await self._reader.run(count_totals)

    async def _fetch(
        self, statement: Executable, parameters: dict[str, Any] | None = None
    ) -> Sequence[Row[Any]]:
        """Every row of a read."""
        return await self._reader.run(_all_rows, statement, parameters)


def _all_rows(
    conn: Connection, statement: Executable, parameters: dict[str, Any] | None
) -> Sequence[Row[Any]]:
    return conn.execute(statement, parameters).all()


def _cause(exc: Exception) -> str:
    return type(getattr(exc, "orig", exc)).__name__


def _stored(row: Any) -> StoredInstance:
    # By position: _stored_query selects the fields in their order (a test checks).
    return StoredInstance(*row)


def _stored_query() -> Select[Any]:
    """Every StoredInstance column, joined to the instance's series and study."""
    i, se, st = schema.instance, schema.series, schema.study
    return (
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
    )


# Built once: frame and bulk data requests look up one instance each, and building the
# statement cost more than running it.
_STORED_BY_UIDS = _stored_query().where(
    schema.instance.c.sop_instance_uid.in_(bindparam("uids", expanding=True))
)


def _version_queries() -> tuple[Select[Any], Select[Any]]:
    """The version of a study, and of a series of a study (Index.version)."""
    st, se, state = schema.study, schema.series, schema.index_state
    deletions = select(state.c.deletions).where(state.c.id == 1).scalar_subquery()
    study = select(st.c.number_of_instances, deletions).where(
        st.c.study_instance_uid == bindparam("study")
    )
    series = (
        select(se.c.number_of_instances, deletions)
        .join(st, st.c.id == se.c.study_pk)
        .where(se.c.series_instance_uid == bindparam("series"))
        .where(st.c.study_instance_uid == bindparam("study"))
    )
    return study, series


# Asked on every metadata request.
_STUDY_VERSION, _SERIES_VERSION = _version_queries()
