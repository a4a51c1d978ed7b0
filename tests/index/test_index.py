"""The index on SQLite and PostgreSQL: migrations, adds, duplicates, concurrency."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import select

from dicomweb.index import AddResult, Index, InstanceRecord, schema
from dicomweb.index.records import PatientAttributes, SeriesAttributes, StudyAttributes
from tests.dicomfactory import new_uid


def record(
    study: str, series: str, sop: str | None = None, *, modality: str = "CT", sha: str = "a"
) -> InstanceRecord:
    sop = sop or new_uid()
    return InstanceRecord(
        patient=PatientAttributes("P1", "", "Doe^Jane", "19700101", "F"),
        study=StudyAttributes(study, "20260101", "120000", "A1", "1", "Chest", None),
        series=SeriesAttributes(series, modality, 1, "Axial", None, None, None, None),
        sop_instance_uid=sop,
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        instance_number=1,
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        number_of_frames=1,
        rows=2,
        columns=2,
        blob_key=f"{study}/{series}/{sop}.{sha * 16}.dcm",
        size=100,
        sha256=sha * 64,
        frames=b"[[1,8]]",
        metadata=b"{}",
        bulkdata=b"{}",
    )


@pytest.fixture
async def index(database_url: str) -> Index:
    idx = await Index.open(database_url)
    yield idx  # type: ignore[misc]
    await idx.close()


async def test_migrations_match_schema(index: Index) -> None:
    async with index._reader.connect() as conn:
        diff = await conn.run_sync(
            lambda sync: compare_metadata(MigrationContext.configure(sync), schema.metadata)
        )
    assert diff == []


async def test_open_twice_is_idempotent(database_url: str, index: Index) -> None:
    again = await Index.open(database_url)
    await again.close()
    assert (await index.totals()).instances == 0


async def test_add_duplicate_conflict(index: Index) -> None:
    study, series = new_uid(), new_uid()
    first = record(study, series)
    assert await index.add_instance(first) is AddResult.ADDED
    assert await index.add_instance(first) is AddResult.DUPLICATE
    changed = dataclasses.replace(first, sha256="b" * 64, blob_key=first.blob_key + "x")
    assert await index.add_instance(changed) is AddResult.CONFLICT
    stored = await index.get_instance(first.sop_instance_uid)
    assert stored is not None
    assert (stored.sha256, stored.blob_key) == (first.sha256, first.blob_key)
    assert (stored.study_instance_uid, stored.series_instance_uid) == (study, series)
    totals = await index.totals()
    assert (totals.patients, totals.studies, totals.series, totals.instances) == (1, 1, 1, 1)
    assert totals.bytes == 100


async def test_referenced_blobs(index: Index) -> None:
    r = record(new_uid(), new_uid())
    await index.add_instance(r)
    assert await index.referenced_blobs([r.blob_key, "x/y/z.dcm"]) == {r.blob_key}
    assert await index.referenced_blobs([]) == set()


async def test_concurrent_adds_keep_aggregates_exact(index: Index) -> None:
    """Many writers into the same new study and patient at once (races on PostgreSQL)."""
    study = new_uid()
    series = [new_uid() for _ in range(4)]
    modalities = ["CT", "MR", "CT", "PT"]
    records = [record(study, series[n % 4], modality=modalities[n % 4]) for n in range(40)]
    results = await asyncio.gather(*(index.add_instance(r) for r in records))
    assert results == [AddResult.ADDED] * 40
    async with index._reader.connect() as conn:
        row = (await conn.execute(select(schema.study))).one()
        assert (row.number_of_series, row.number_of_instances) == (4, 40)
        assert row.modalities_in_study == "CT\\MR\\PT"
        counts = (await conn.execute(select(schema.series.c.number_of_instances))).scalars()
        assert sorted(counts) == [10, 10, 10, 10]
        patient = (await conn.execute(select(schema.patient))).one()
        assert (patient.number_of_studies, patient.number_of_series) == (1, 4)
        assert patient.number_of_instances == 40


async def test_concurrent_same_instance(index: Index) -> None:
    r = record(new_uid(), new_uid())
    results = await asyncio.gather(*(index.add_instance(r) for _ in range(8)))
    assert sorted(x.value for x in results) == ["added"] + ["duplicate"] * 7
    assert (await index.totals()).instances == 1


async def test_healthy(index: Index) -> None:
    assert await index.healthy()


async def test_duplicates_found_after_reopen(database_url: str, index: Index) -> None:
    """A new process knows no series yet: a re-store still finds the stored instance."""
    first = record(new_uid(), new_uid())
    assert await index.add_instance(first) is AddResult.ADDED
    reopened = await Index.open(database_url)
    try:
        assert await reopened.add_instance(first) is AddResult.DUPLICATE
        changed = dataclasses.replace(first, sha256="b" * 64, blob_key=first.blob_key + "x")
        assert await reopened.add_instance(changed) is AddResult.CONFLICT
        assert (await reopened.totals()).instances == 1
    finally:
        await reopened.close()


async def test_series_reused_under_another_study(index: Index) -> None:
    """Inconsistent data: an instance names a known series but another study. It joins
    the series (and its study) rather than failing."""
    study, series = new_uid(), new_uid()
    assert await index.add_instance(record(study, series)) is AddResult.ADDED
    stray = record(new_uid(), series)
    assert await index.add_instance(stray) is AddResult.ADDED
    stored = await index.get_instance(stray.sop_instance_uid)
    assert stored is not None
    assert (stored.study_instance_uid, stored.series_instance_uid) == (study, series)
    async with index._reader.connect() as conn:
        row = (
            await conn.execute(
                select(schema.study).where(schema.study.c.study_instance_uid == study)
            )
        ).one()
        assert (row.number_of_series, row.number_of_instances) == (1, 2)
