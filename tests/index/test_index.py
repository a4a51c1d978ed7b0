"""The index on SQLite and PostgreSQL: migrations, adds, duplicates, concurrency."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime

import orjson
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config as AlembicConfig
from alembic.migration import MigrationContext
from sqlalchemy import Connection, MetaData, Table, insert, select

from dicomweb.index import AddResult, Index, InstanceRecord, schema
from dicomweb.index.engine import MIGRATIONS, create_engines
from dicomweb.index.records import PatientAttributes, SeriesAttributes, StudyAttributes
from dicomweb.query import (
    BY_KEYWORD,
    REQUEST_ATTRIBUTES,
    ItemMatch,
    Level,
    Query,
    Range,
    SingleValue,
    Wildcard,
)
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
    diff = await index._reader.run(
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
    (row,) = await index._fetch(select(schema.study))
    assert (row.number_of_series, row.number_of_instances) == (4, 40)
    assert row.modalities_in_study == "CT\\MR\\PT"
    counts = [r[0] for r in await index._fetch(select(schema.series.c.number_of_instances))]
    assert sorted(counts) == [10, 10, 10, 10]
    (patient,) = await index._fetch(select(schema.patient))
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
    (row,) = await index._fetch(
        select(schema.study).where(schema.study.c.study_instance_uid == study)
    )
    assert (row.number_of_series, row.number_of_instances) == (1, 2)


async def test_search_migration_fills_rows_indexed_before(database_url: str) -> None:
    """Rows written under revision 0001 become searchable after the upgrade to 0002."""

    def upgrade(conn: Connection, revision: str) -> None:
        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)

    def write_0001_rows(conn: Connection) -> None:
        now = datetime.now(UTC)
        patient = sa_table(conn, "patient")
        study = sa_table(conn, "study")
        series = sa_table(conn, "series")
        instance = sa_table(conn, "instance")
        conn.execute(
            insert(patient).values(
                id=1,
                patient_id="P9",
                issuer_of_patient_id="",
                patient_name="Old^Name",
                number_of_studies=1,
                number_of_series=1,
                number_of_instances=1,
            )
        )
        conn.execute(
            insert(study).values(
                id=1,
                study_instance_uid="1.2.3",
                patient_pk=1,
                study_date="20200101",
                study_time="1200",
                modalities_in_study="CT",
                number_of_series=1,
                number_of_instances=1,
                created_at=now,
                updated_at=now,
            )
        )
        conn.execute(
            insert(series).values(
                id=1,
                series_instance_uid="1.2.3.4",
                study_pk=1,
                modality="CT",
                number_of_instances=1,
                created_at=now,
            )
        )
        metadata = {
            "00101010": {"vr": "AS", "Value": ["042Y"]},
            "00400275": {
                "vr": "SQ",
                "Value": [{"00400009": {"vr": "SH", "Value": ["STEP7"]}}],
            },
        }
        conn.execute(
            insert(instance).values(
                sop_instance_uid="1.2.3.4.5",
                series_pk=1,
                study_pk=1,
                sop_class_uid="1.2",
                transfer_syntax_uid="1.2.840.10008.1.2.1",
                number_of_frames=1,
                blob_key="k",
                size=1,
                sha256="a" * 64,
                metadata=orjson.dumps(metadata),
                bulkdata=b"{}",
                created_at=now,
            )
        )

    _, writer = create_engines(database_url)
    await writer.run(upgrade, "0001")
    await writer.run(write_0001_rows)
    await writer.dispose()

    index = await Index.open(database_url)
    try:
        found = await index.search(
            Query(Level.STUDY, matches=[(BY_KEYWORD["PatientName"], Wildcard("old*"))])
        )
        assert [ds["0020000D"]["Value"] for ds in found.datasets] == [["1.2.3"]]
        everything = await index.search(Query(Level.STUDY, include_all=True))
        assert everything.datasets[0]["00101010"]["Value"] == ["042Y"]
        step = SingleValue("STEP7")
        item = ItemMatch(((REQUEST_ATTRIBUTES.items[0], step),))
        series = await index.search(Query(Level.SERIES, matches=[(REQUEST_ATTRIBUTES, item)]))
        assert [ds["0020000E"]["Value"] for ds in series.datasets] == [["1.2.3.4"]]
        by_time = await index.search(
            Query(Level.STUDY, matches=[(BY_KEYWORD["StudyTime"], Range("115000.000000", None))])
        )
        assert len(by_time.datasets) == 1
    finally:
        await index.close()


def sa_table(conn: Connection, name: str) -> Table:
    return Table(name, MetaData(), autoload_with=conn)


async def test_statistics_are_gathered_as_the_index_grows(index: Index) -> None:
    """After enough instances, the planner has statistics for the tables."""
    study = new_uid()
    series = new_uid()
    for _ in range(3):
        await index.add_instances([record(study, series) for _n in range(200)])
    assert index._analyzer is not None
    await index._analyzer

    def statistics(conn: Connection) -> int:
        if conn.dialect.name == "sqlite":
            found = conn.exec_driver_sql("SELECT count(*) FROM sqlite_stat1")
        else:
            found = conn.exec_driver_sql(
                "SELECT count(*) FROM pg_stats WHERE tablename = 'instance'"
            )
        return int(found.scalar_one())

    assert await index._reader.run(statistics) > 0


async def test_series_cache_follows_deletes_by_another_process(
    database_url: str, index: Index
) -> None:
    """A series deleted through another Index (another process) is not found in this
    one's cache, even where SQLite gives its key to a new series."""
    from dicomweb.index.deletion import DeleteTarget

    other = await Index.open(database_url)
    try:
        study, kept, deleted, fresh = new_uid(), new_uid(), new_uid(), new_uid()
        # The deleted series has the largest key, which SQLite gives to the next row.
        await index.add_instances([record(study, kept)])
        await index.add_instances([record(study, deleted, modality="MR")])
        removed = await other.delete(DeleteTarget(study, deleted))
        assert removed is not None and removed.series == 1
        await index.add_instances([record(study, fresh, modality="PT")])
        again = record(study, deleted, modality="MR")
        assert await index.add_instances([again]) == [AddResult.ADDED]
        i, se = schema.instance, schema.series
        ((placed,),) = await index._fetch(
            select(se.c.series_instance_uid)
            .join(i, i.c.series_pk == se.c.id)
            .where(i.c.sop_instance_uid == again.sop_instance_uid)
        )
        assert placed == deleted
    finally:
        await other.close()


def test_stored_instance_rows_are_read_by_position() -> None:
    """StoredInstance is built from a row by position: the select lists its fields in order."""
    from dicomweb.index.repository import StoredInstance, _stored_query

    selected = [column.name for column in _stored_query().selected_columns]
    assert selected == [field.name for field in dataclasses.fields(StoredInstance)]


async def test_get_instances_keeps_the_order_asked_for(index: Index) -> None:
    study, series = new_uid(), new_uid()
    records = [record(study, series) for _ in range(3)]
    for r in records:
        assert await index.add_instance(r) is AddResult.ADDED
    uids = [r.sop_instance_uid for r in reversed(records)]
    found = await index.get_instances([uids[0], new_uid(), *uids[1:]])
    assert [f.sop_instance_uid for f in found] == uids
    assert [f.blob_key for f in found] == [r.blob_key for r in reversed(records)]
    one = await index.get_instance(uids[1])
    assert one is not None and one == found[1]
    assert await index.get_instance(new_uid()) is None
