"""The Index: one class over SQLite and PostgreSQL, created once per process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from dicomweb.index import schema
from dicomweb.index.engine import create_engines, insert, migrate
from dicomweb.index.records import AddResult, InstanceRecord

log = logging.getLogger(__name__)

# Concurrent first inserts of one study or patient on PostgreSQL can collide on a
# unique key; the loser retries and then finds the winner's row.
_ATTEMPTS = 5


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

    def __init__(self, reader: AsyncEngine, writer: AsyncEngine) -> None:
        self._reader = reader
        self._writer = writer
        self.dialect = writer.dialect.name
        self._write_lock = asyncio.Lock() if self.dialect == "sqlite" else None

    @classmethod
    async def open(cls, url: str) -> Index:
        """Connect and migrate the schema to the newest revision."""
        reader, writer = create_engines(url)
        await migrate(writer)
        return cls(reader, writer)

    async def close(self) -> None:
        await self._writer.dispose()
        if self._reader is not self._writer:
            await self._reader.dispose()

    @contextlib.asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        if self._write_lock is None:
            async with self._writer.begin() as conn:
                yield conn
            return
        async with self._write_lock, self._writer.begin() as conn:
            yield conn

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
        """Index one instance and update the aggregates, in one transaction."""
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                async with self._write() as conn:
                    return await self._add(conn, record)
            except IntegrityError:
                if attempt == _ATTEMPTS:
                    raise
                await asyncio.sleep(0.01 * attempt)
        raise AssertionError("unreachable")

    async def _add(self, conn: AsyncConnection, r: InstanceRecord) -> AddResult:
        existing = (
            await conn.execute(
                select(schema.instance.c.sha256).where(
                    schema.instance.c.sop_instance_uid == r.sop_instance_uid
                )
            )
        ).first()
        if existing is not None:
            return AddResult.DUPLICATE if existing.sha256 == r.sha256 else AddResult.CONFLICT

        now = datetime.now(UTC)
        patient_pk, _ = await self._get_or_create(
            conn,
            schema.patient,
            {
                "patient_id": r.patient.patient_id,
                "issuer_of_patient_id": r.patient.issuer_of_patient_id,
            },
            {
                "patient_name": r.patient.patient_name,
                "patient_birth_date": r.patient.patient_birth_date,
                "patient_sex": r.patient.patient_sex,
                "number_of_studies": 0,
                "number_of_series": 0,
                "number_of_instances": 0,
            },
        )
        study_pk, new_study = await self._get_or_create(
            conn,
            schema.study,
            {"study_instance_uid": r.study.study_instance_uid},
            {
                "patient_pk": patient_pk,
                "study_date": r.study.study_date,
                "study_time": r.study.study_time,
                "accession_number": r.study.accession_number,
                "study_id": r.study.study_id,
                "study_description": r.study.study_description,
                "referring_physician_name": r.study.referring_physician_name,
                "modalities_in_study": "",
                "number_of_series": 0,
                "number_of_instances": 0,
                "created_at": now,
                "updated_at": now,
            },
        )
        series_pk, new_series = await self._get_or_create(
            conn,
            schema.series,
            {"series_instance_uid": r.series.series_instance_uid},
            {
                "study_pk": study_pk,
                "modality": r.series.modality,
                "series_number": r.series.series_number,
                "series_description": r.series.series_description,
                "series_date": r.series.series_date,
                "series_time": r.series.series_time,
                "performed_procedure_step_start_date": (
                    r.series.performed_procedure_step_start_date
                ),
                "performed_procedure_step_start_time": (
                    r.series.performed_procedure_step_start_time
                ),
                "number_of_instances": 0,
                "created_at": now,
            },
        )
        await conn.execute(
            schema.instance.insert().values(
                sop_instance_uid=r.sop_instance_uid,
                series_pk=series_pk,
                study_pk=study_pk,
                sop_class_uid=r.sop_class_uid,
                instance_number=r.instance_number,
                transfer_syntax_uid=r.transfer_syntax_uid,
                number_of_frames=r.number_of_frames,
                rows=r.rows,
                columns=r.columns,
                blob_key=r.blob_key,
                size=r.size,
                sha256=r.sha256,
                frames=r.frames,
                metadata=r.metadata,
                bulkdata=r.bulkdata,
                created_at=now,
            )
        )
        await conn.execute(
            update(schema.series)
            .where(schema.series.c.id == series_pk)
            .values(number_of_instances=schema.series.c.number_of_instances + 1)
        )
        study_values: dict[str, Any] = {
            "number_of_instances": schema.study.c.number_of_instances + 1,
            "number_of_series": schema.study.c.number_of_series + int(new_series),
            "updated_at": now,
        }
        if new_series and r.series.modality:
            current = (
                await conn.execute(
                    select(schema.study.c.modalities_in_study).where(schema.study.c.id == study_pk)
                )
            ).scalar_one()
            study_values["modalities_in_study"] = _add_modality(current, r.series.modality)
        await conn.execute(
            update(schema.study).where(schema.study.c.id == study_pk).values(**study_values)
        )
        await conn.execute(
            update(schema.patient)
            .where(schema.patient.c.id == patient_pk)
            .values(
                number_of_studies=schema.patient.c.number_of_studies + int(new_study),
                number_of_series=schema.patient.c.number_of_series + int(new_series),
                number_of_instances=schema.patient.c.number_of_instances + 1,
            )
        )
        return AddResult.ADDED

    async def _get_or_create(
        self,
        conn: AsyncConnection,
        table: Any,
        key: dict[str, Any],
        values: dict[str, Any],
    ) -> tuple[int, bool]:
        """Return (primary key, created), locking the row for the rest of the transaction."""
        created = (
            await conn.execute(
                insert(self.dialect, table)
                .values(**key, **values)
                .on_conflict_do_nothing(index_elements=list(key))
                .returning(table.c.id)
            )
        ).first()
        if created is not None:
            return int(created.id), True
        query = select(table.c.id).where(*(table.c[k] == v for k, v in key.items()))
        found = (await conn.execute(query.with_for_update())).one()
        return int(found.id), False

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


def _add_modality(current: str, modality: str) -> str:
    values = [m for m in current.split("\\") if m]
    if modality not in values:
        values.append(modality)
    return "\\".join(sorted(values))
