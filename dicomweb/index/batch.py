"""Indexing a batch of instances in one transaction, with set-based statements.

A batch costs about a dozen statements whatever its size, so concurrent ingests that
are grouped into one transaction (group commit) share the statement and commit costs.
Rows are created with INSERT ... ON CONFLICT DO NOTHING and the others are read with
SELECT ... FOR UPDATE in key order, which orders concurrent writers on PostgreSQL.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Table, bindparam, select, tuple_, update

from dicomweb.index import schema
from dicomweb.index.engine import insert
from dicomweb.index.records import AddResult, InstanceRecord

Key = tuple[str, ...]


@dataclass
class _Rows:
    """Rows of one level touched by a batch."""

    ids: dict[Key, int] = field(default_factory=dict)
    created: set[Key] = field(default_factory=set)
    # Current values of the extra columns asked for, for every row.
    values: dict[Key, dict[str, Any]] = field(default_factory=dict)


class SeriesCache:
    """Primary keys of series already indexed, so that most batches skip looking them up.

    Rows are never deleted in this version; a stale entry would fail the instance insert
    on its foreign key, and the caller clears the cache before trying again.
    """

    def __init__(self, capacity: int = 10_000) -> None:
        self._capacity = capacity
        self._rows: dict[str, tuple[int, int, int]] = {}

    def get(self, series_instance_uid: str) -> tuple[int, int, int] | None:
        """(series, study, patient) primary keys."""
        return self._rows.get(series_instance_uid)

    def put(self, series_instance_uid: str, keys: tuple[int, int, int]) -> None:
        if len(self._rows) >= self._capacity:
            self._rows.pop(next(iter(self._rows)))
        self._rows[series_instance_uid] = keys

    def clear(self) -> None:
        self._rows.clear()


def add_batch(
    conn: Connection, records: Sequence[InstanceRecord], cache: SeriesCache
) -> list[AddResult]:
    """Index `records` and update the aggregates; one result per record, in order."""
    now = datetime.now(UTC)
    known = {r.series.series_instance_uid: cache.get(r.series.series_instance_uid) for r in records}
    if all(keys is not None for keys in known.values()):
        return _add_to_known_series(conn, records, known, now)  # type: ignore[arg-type]
    rows = conn.execute(
        select(schema.instance.c.sop_instance_uid, schema.instance.c.sha256).where(
            schema.instance.c.sop_instance_uid.in_(sorted({r.sop_instance_uid for r in records}))
        )
    )
    stored = {row.sop_instance_uid: row.sha256 for row in rows}
    results: list[AddResult] = []
    added: list[InstanceRecord] = []
    for r in records:
        sha = stored.get(r.sop_instance_uid)
        if sha is None:
            stored[r.sop_instance_uid] = r.sha256
            added.append(r)
            results.append(AddResult.ADDED)
        else:
            results.append(AddResult.DUPLICATE if sha == r.sha256 else AddResult.CONFLICT)
    if added:
        _add_new(conn, conn.dialect.name, added, now, cache)
    return results


def _add_to_known_series(
    conn: Connection,
    records: Sequence[InstanceRecord],
    known: dict[str, tuple[int, int, int]],
    now: datetime,
) -> list[AddResult]:
    """The common case: more instances of series indexed before. Insert what is new,
    then three counter updates; no row to create and no modality to add."""
    inserted = {
        row.sop_instance_uid
        for row in conn.execute(
            _insert_new_instances(conn.dialect.name),
            [_instance_row(r, *known[r.series.series_instance_uid][:2], now) for r in records],
        )
    }
    missing = sorted({r.sop_instance_uid for r in records} - inserted)
    stored: dict[str, str] = {}
    if missing:
        rows = conn.execute(
            select(schema.instance.c.sop_instance_uid, schema.instance.c.sha256).where(
                schema.instance.c.sop_instance_uid.in_(missing)
            )
        )
        stored = {row.sop_instance_uid: row.sha256 for row in rows}
    results: list[AddResult] = []
    added: list[InstanceRecord] = []
    for r in records:
        uid = r.sop_instance_uid
        if uid in inserted and uid not in stored:
            stored[uid] = r.sha256
            added.append(r)
            results.append(AddResult.ADDED)
        else:
            results.append(AddResult.DUPLICATE if stored[uid] == r.sha256 else AddResult.CONFLICT)
    series_delta: dict[int, dict[str, int]] = {}
    study_delta: dict[int, dict[str, int]] = {}
    patient_delta: dict[int, dict[str, int]] = {}
    for r in added:
        series_pk, study_pk, patient_pk = known[r.series.series_instance_uid]
        _bump(series_delta, series_pk, "number_of_instances")
        _bump(study_delta, study_pk, "number_of_instances")
        _bump(patient_delta, patient_pk, "number_of_instances")
    _increment(conn, schema.series, series_delta, {})
    _increment(conn, schema.study, study_delta, {pk: {"updated_at": now} for pk in study_delta})
    _increment(conn, schema.patient, patient_delta, {})
    return results


def _patient_key(r: InstanceRecord) -> Key:
    return (r.patient.patient_id, r.patient.issuer_of_patient_id)


def _study_key(r: InstanceRecord) -> Key:
    return (r.study.study_instance_uid,)


def _series_key(r: InstanceRecord) -> Key:
    return (r.series.series_instance_uid,)


def _add_new(
    conn: Connection,
    dialect: str,
    added: list[InstanceRecord],
    now: datetime,
    cache: SeriesCache,
) -> None:
    # The first record of a patient, study or series gives its attributes.
    first: dict[tuple[str, Key], InstanceRecord] = {}
    for r in added:
        for level, key in (("p", _patient_key(r)), ("st", _study_key(r)), ("se", _series_key(r))):
            first.setdefault((level, key), r)

    def firsts(level: str) -> dict[Key, InstanceRecord]:
        return {key: r for (lv, key), r in first.items() if lv == level}

    patients = _get_or_create(
        conn,
        dialect,
        schema.patient,
        ("patient_id", "issuer_of_patient_id"),
        {k: _patient_row(r) for k, r in firsts("p").items()},
    )
    studies = _get_or_create(
        conn,
        dialect,
        schema.study,
        ("study_instance_uid",),
        {k: _study_row(r, patients.ids[_patient_key(r)], now) for k, r in firsts("st").items()},
        extra=("modalities_in_study", "patient_pk"),
    )
    series = _get_or_create(
        conn,
        dialect,
        schema.series,
        ("series_instance_uid",),
        {k: _series_row(r, studies.ids[_study_key(r)], now) for k, r in firsts("se").items()},
        extra=("study_pk", "modality"),
    )
    conn.execute(
        schema.instance.insert(),
        [
            _instance_row(r, series.ids[_series_key(r)], studies.ids[_study_key(r)], now)
            for r in added
        ],
    )

    series_delta: dict[int, dict[str, int]] = {}
    study_delta: dict[int, dict[str, int]] = {}
    patient_delta: dict[int, dict[str, int]] = {}
    for r in added:
        _bump(series_delta, series.ids[_series_key(r)], "number_of_instances")
        _bump(study_delta, studies.ids[_study_key(r)], "number_of_instances")
        _bump(patient_delta, patients.ids[_patient_key(r)], "number_of_instances")
    modalities = {studies.ids[k]: v["modalities_in_study"] for k, v in studies.values.items()}
    for key in series.created:
        study_pk = series.values[key]["study_pk"]
        patient_pk = _patient_of(studies, study_pk)
        _bump(study_delta, study_pk, "number_of_series")
        _bump(patient_delta, patient_pk, "number_of_series")
        modality = series.values[key]["modality"]
        if modality:
            modalities[study_pk] = _add_modality(modalities[study_pk], modality)
    for key in studies.created:
        _bump(patient_delta, studies.values[key]["patient_pk"], "number_of_studies")

    _increment(conn, schema.series, series_delta, {})
    _increment(
        conn,
        schema.study,
        study_delta,
        {pk: {"modalities_in_study": modalities[pk], "updated_at": now} for pk in study_delta},
    )
    _increment(conn, schema.patient, patient_delta, {})
    for key, series_pk in series.ids.items():
        study_pk = int(series.values[key]["study_pk"])
        cache.put(key[0], (series_pk, study_pk, _patient_of(studies, study_pk)))


def _patient_of(studies: _Rows, study_pk: int) -> int:
    for key, pk in studies.ids.items():
        if pk == study_pk:
            return int(studies.values[key]["patient_pk"])
    raise KeyError(study_pk)


def _bump(deltas: dict[int, dict[str, int]], pk: int, column: str) -> None:
    row = deltas.setdefault(pk, {})
    row[column] = row.get(column, 0) + 1


def _increment(
    conn: Connection,
    table: Table,
    deltas: dict[int, dict[str, int]],
    assign: dict[int, dict[str, Any]],
) -> None:
    """Add the deltas to counter columns (and assign other values), one statement per shape."""
    shapes: dict[tuple[tuple[str, ...], tuple[str, ...]], list[dict[str, Any]]] = {}
    for pk in sorted(deltas):
        counters = tuple(sorted(deltas[pk]))
        values = tuple(sorted(assign.get(pk, {})))
        params = {"pk": pk}
        params.update({f"d_{c}": deltas[pk][c] for c in counters})
        params.update({f"v_{c}": assign[pk][c] for c in values})
        shapes.setdefault((counters, values), []).append(params)
    for (counters, values), params_list in shapes.items():
        conn.execute(_update_statement(table, counters, values), params_list)


@functools.cache
def _insert_new_instances(dialect: str) -> Any:
    return (
        insert(dialect, schema.instance)
        .on_conflict_do_nothing(index_elements=["sop_instance_uid"])
        .returning(schema.instance.c.sop_instance_uid)
    )


@functools.cache
def _update_statement(table: Table, counters: tuple[str, ...], values: tuple[str, ...]) -> Any:
    # Built once per shape: constructing statements costs more than running them.
    return (
        update(table)
        .where(table.c.id == bindparam("pk"))
        .values(
            {c: table.c[c] + bindparam(f"d_{c}") for c in counters}
            | {c: bindparam(f"v_{c}") for c in values}
        )
    )


def _get_or_create(
    conn: Connection,
    dialect: str,
    table: Table,
    key_columns: tuple[str, ...],
    wanted: dict[Key, dict[str, Any]],
    extra: tuple[str, ...] = (),
) -> _Rows:
    """The rows with the `wanted` keys, inserted when missing, locked otherwise."""
    columns = [table.c[c] for c in key_columns]
    ordered = sorted(wanted)
    result = _Rows()
    inserted = conn.execute(
        insert(dialect, table)
        .on_conflict_do_nothing(index_elements=list(key_columns))
        .returning(table.c.id, *columns),
        [wanted[k] for k in ordered],
    )
    for row in inserted:
        key = tuple(getattr(row, c) for c in key_columns)
        result.ids[key] = int(row.id)
        result.created.add(key)
        result.values[key] = {c: wanted[key][c] for c in extra}
    missing = [k for k in ordered if k not in result.ids]
    if missing:
        match = (
            columns[0].in_([k[0] for k in missing])
            if len(columns) == 1
            else tuple_(*columns).in_(missing)
        )
        rows = conn.execute(
            select(table.c.id, *columns, *(table.c[c] for c in extra))
            .where(match)
            .order_by(*columns)
            .with_for_update()
        )
        for row in rows:
            key = tuple(getattr(row, c) for c in key_columns)
            result.ids[key] = int(row.id)
            result.values[key] = {c: getattr(row, c) for c in extra}
    return result


def _patient_row(r: InstanceRecord) -> dict[str, Any]:
    return {
        "patient_id": r.patient.patient_id,
        "issuer_of_patient_id": r.patient.issuer_of_patient_id,
        "patient_name": r.patient.patient_name,
        "patient_birth_date": r.patient.patient_birth_date,
        "patient_sex": r.patient.patient_sex,
        "number_of_studies": 0,
        "number_of_series": 0,
        "number_of_instances": 0,
    }


def _study_row(r: InstanceRecord, patient_pk: int, now: datetime) -> dict[str, Any]:
    return {
        "study_instance_uid": r.study.study_instance_uid,
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
    }


def _series_row(r: InstanceRecord, study_pk: int, now: datetime) -> dict[str, Any]:
    return {
        "series_instance_uid": r.series.series_instance_uid,
        "study_pk": study_pk,
        "modality": r.series.modality,
        "series_number": r.series.series_number,
        "series_description": r.series.series_description,
        "series_date": r.series.series_date,
        "series_time": r.series.series_time,
        "performed_procedure_step_start_date": r.series.performed_procedure_step_start_date,
        "performed_procedure_step_start_time": r.series.performed_procedure_step_start_time,
        "number_of_instances": 0,
        "created_at": now,
    }


def _instance_row(
    r: InstanceRecord, series_pk: int, study_pk: int, now: datetime
) -> dict[str, Any]:
    return {
        "sop_instance_uid": r.sop_instance_uid,
        "series_pk": series_pk,
        "study_pk": study_pk,
        "sop_class_uid": r.sop_class_uid,
        "instance_number": r.instance_number,
        "transfer_syntax_uid": r.transfer_syntax_uid,
        "number_of_frames": r.number_of_frames,
        "rows": r.rows,
        "columns": r.columns,
        "blob_key": r.blob_key,
        "size": r.size,
        "sha256": r.sha256,
        "frames": r.frames,
        "metadata": r.metadata,
        "bulkdata": r.bulkdata,
        "created_at": now,
    }


def _add_modality(current: str, modality: str) -> str:
    values = [m for m in current.split("\\") if m]
    if modality not in values:
        values.append(modality)
    return "\\".join(sorted(values))
