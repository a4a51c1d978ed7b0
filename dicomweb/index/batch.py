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

import orjson
from sqlalchemy import Connection, Table, bindparam, select, tuple_, update

from dicomweb.index import schema
from dicomweb.index.engine import ConcurrentChange, insert
from dicomweb.index.records import AddResult, InstanceRecord
from dicomweb.query import (
    PATIENT_NAME,
    REFERRING_PHYSICIAN_NAME,
    datetime_key,
    name_keys,
    normalize_time,
    request_items,
)

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

    The cache holds for one value of the index's deletion counter (`index_state`): a
    batch that finds the counter changed starts afresh, since a deleted series' key can
    be given to a new series on SQLite. A delete committed after the batch read the
    counter fails the instance insert on its foreign key (PostgreSQL never reuses keys;
    SQLite has one writer at a time), and the caller clears the cache and tries again.
    """

    def __init__(self, capacity: int = 10_000) -> None:
        self._capacity = capacity
        self._rows: dict[str, tuple[int, int, int]] = {}
        self._deletions: int | None = None

    def check(self, deletions: int) -> None:
        """Forget everything if rows were deleted since the cache was filled."""
        if deletions != self._deletions:
            self._rows.clear()
            self._deletions = deletions

    def get(self, series_instance_uid: str) -> tuple[int, int, int] | None:
        """(series, study, patient) primary keys."""
        return self._rows.get(series_instance_uid)

    def put(self, series_instance_uid: str, keys: tuple[int, int, int]) -> None:
        if len(self._rows) >= self._capacity:
            self._rows.pop(next(iter(self._rows)))
        self._rows[series_instance_uid] = keys

    def clear(self) -> None:
        self._rows.clear()
        self._deletions = None


SeriesKeys = dict[str, tuple[int, int, int]]


@dataclass
class _Created:
    """Rows a batch created, which the aggregates count besides the instances."""

    # (study, patient, modality) of each new series
    series: list[tuple[int, int, str | None]] = field(default_factory=list)
    # patient of each new study
    study_patients: list[int] = field(default_factory=list)
    # ModalitiesInStudy as it was, for the studies that get a new series
    modalities: dict[int, str] = field(default_factory=dict)


def add_batch(
    conn: Connection, records: Sequence[InstanceRecord], cache: SeriesCache
) -> list[AddResult]:
    """Index `records` and update the aggregates; one result per record, in order.

    The series rows come from `cache` when it knows them all (the common case: more
    instances of series indexed before), else they are found or created with their
    studies and patients. Instances are inserted with ON CONFLICT DO NOTHING; those
    that were there already are duplicates or conflicts by their hash.
    """
    now = datetime.now(UTC)
    cache.check(conn.execute(_deletions()).scalar_one())
    wanted = {r.series.series_instance_uid for r in records}
    cached = {uid: cache.get(uid) for uid in wanted}
    if all(keys is not None for keys in cached.values()):
        keys: SeriesKeys = {uid: k for uid, k in cached.items() if k is not None}
        created = _Created()
    else:
        keys, created = _find_or_create_series(conn, records, now)
        for uid, series_keys in keys.items():
            cache.put(uid, series_keys)
    results, added = _insert_instances(conn, records, keys, now)
    _update_aggregates(conn, added, keys, created, now)
    return results


def _insert_instances(
    conn: Connection, records: Sequence[InstanceRecord], keys: SeriesKeys, now: datetime
) -> tuple[list[AddResult], list[InstanceRecord]]:
    inserted = {
        row.sop_instance_uid
        for row in conn.execute(
            _insert_new_instances(conn.dialect.name),
            [_instance_row(r, *keys[r.series.series_instance_uid][:2], now) for r in records],
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
    return results, added


def _update_aggregates(
    conn: Connection,
    added: list[InstanceRecord],
    keys: SeriesKeys,
    created: _Created,
    now: datetime,
) -> None:
    series_delta: dict[int, dict[str, int]] = {}
    study_delta: dict[int, dict[str, int]] = {}
    patient_delta: dict[int, dict[str, int]] = {}
    for r in added:
        series_pk, study_pk, patient_pk = keys[r.series.series_instance_uid]
        _bump(series_delta, series_pk, "number_of_instances")
        _bump(study_delta, study_pk, "number_of_instances")
        _bump(patient_delta, patient_pk, "number_of_instances")
    modalities = dict(created.modalities)
    for study_pk, patient_pk, modality in created.series:
        _bump(study_delta, study_pk, "number_of_series")
        _bump(patient_delta, patient_pk, "number_of_series")
        if modality:
            modalities[study_pk] = _add_modality(modalities[study_pk], modality)
    for patient_pk in created.study_patients:
        _bump(patient_delta, patient_pk, "number_of_studies")
    assign: dict[int, dict[str, Any]] = {pk: {"updated_at": now} for pk in study_delta}
    for study_pk, value in modalities.items():
        assign.setdefault(study_pk, {})["modalities_in_study"] = value
    _increment(conn, schema.series, series_delta, {})
    _increment(conn, schema.study, study_delta, assign)
    _increment(conn, schema.patient, patient_delta, {})


def _patient_key(r: InstanceRecord) -> Key:
    return (r.patient.patient_id, r.patient.issuer_of_patient_id)


def _study_key(r: InstanceRecord) -> Key:
    return (r.study.study_instance_uid,)


def _series_key(r: InstanceRecord) -> Key:
    return (r.series.series_instance_uid,)


def _find_or_create_series(
    conn: Connection, records: Sequence[InstanceRecord], now: datetime
) -> tuple[SeriesKeys, _Created]:
    """(series, study, patient) keys of the records' series, creating missing rows."""
    # The first record of a patient, study or series gives its attributes.
    patient_rows: dict[Key, dict[str, Any]] = {}
    for r in records:
        patient_rows.setdefault(_patient_key(r), _patient_row(r))
    patients = _get_or_create(
        conn, schema.patient, ("patient_id", "issuer_of_patient_id"), patient_rows
    )
    study_rows: dict[Key, dict[str, Any]] = {}
    for r in records:
        study_rows.setdefault(_study_key(r), _study_row(r, patients.ids[_patient_key(r)], now))
    studies = _get_or_create(
        conn,
        schema.study,
        ("study_instance_uid",),
        study_rows,
        extra=("modalities_in_study", "patient_pk"),
    )
    series_rows: dict[Key, dict[str, Any]] = {}
    for r in records:
        series_rows.setdefault(_series_key(r), _series_row(r, studies.ids[_study_key(r)], now))
    series = _get_or_create(
        conn, schema.series, ("series_instance_uid",), series_rows, extra=("study_pk", "modality")
    )

    _add_search_rows(conn, records, studies, series)
    patient_of = {studies.ids[k]: int(v["patient_pk"]) for k, v in studies.values.items()}
    # A series indexed before under another study (inconsistent data) keeps its study.
    others = {int(v["study_pk"]) for v in series.values.values()} - set(patient_of)
    if others:
        rows = conn.execute(
            select(schema.study.c.id, schema.study.c.patient_pk).where(
                schema.study.c.id.in_(sorted(others))
            )
        )
        patient_of.update({int(row.id): int(row.patient_pk) for row in rows})
    keys: SeriesKeys = {}
    for key, series_pk in series.ids.items():
        study_pk = int(series.values[key]["study_pk"])
        keys[key[0]] = (series_pk, study_pk, patient_of[study_pk])
    created = _Created(
        series=[
            (int(series.values[k]["study_pk"]), keys[k[0]][2], series.values[k]["modality"])
            for k in sorted(series.created)
        ],
        study_patients=[int(studies.values[k]["patient_pk"]) for k in sorted(studies.created)],
    )
    # A new series belongs to one of the batch's studies, created or locked above.
    modalities_of = {
        studies.ids[k]: str(v["modalities_in_study"]) for k, v in studies.values.items()
    }
    created.modalities = {study_pk: modalities_of[study_pk] for study_pk, _, _ in created.series}
    return keys, created


def _add_search_rows(
    conn: Connection, records: Sequence[InstanceRecord], studies: _Rows, series: _Rows
) -> None:
    """The name keys of new studies and the request attribute items of new series.

    A row's attributes come from the first record that names it, as in the row itself.
    """
    first_of_study: dict[Key, InstanceRecord] = {}
    first_of_series: dict[Key, InstanceRecord] = {}
    for r in records:
        first_of_study.setdefault(_study_key(r), r)
        first_of_series.setdefault(_series_key(r), r)
    names = [
        {"study_pk": studies.ids[key], "tag": tag, "kind": kind, "key": name}
        for key in sorted(studies.created)
        for tag, value in (
            (PATIENT_NAME, first_of_study[key].patient.patient_name),
            (REFERRING_PHYSICIAN_NAME, first_of_study[key].study.referring_physician_name),
        )
        for kind, name in name_keys(value)
    ]
    requests = [
        {
            "series_pk": series.ids[key],
            "scheduled_procedure_step_id": step,
            "requested_procedure_id": procedure,
        }
        for key in sorted(series.created)
        for step, procedure in request_items(orjson.loads(first_of_series[key].series.attributes))
    ]
    if names:
        conn.execute(insert(conn.dialect.name, schema.name_key), names)
    if requests:
        conn.execute(insert(conn.dialect.name, schema.request_attribute), requests)


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
def _deletions() -> Any:
    return select(schema.index_state.c.deletions).where(schema.index_state.c.id == 1)


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
        insert(conn.dialect.name, table)
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
        if len(result.ids) < len(ordered):
            # Deleted after the insert saw it and before the lock was ours (PostgreSQL).
            raise ConcurrentChange(f"a {table.name} row was deleted meanwhile")
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
        "datetime_key": datetime_key(r.study.study_date, r.study.study_time),
        "time_key": normalize_time(r.study.study_time),
        "attributes": r.study.attributes,
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
        "series_time_key": normalize_time(r.series.series_time),
        "performed_procedure_step_start_time_key": normalize_time(
            r.series.performed_procedure_step_start_time
        ),
        "attributes": r.series.attributes,
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
