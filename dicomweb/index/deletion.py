"""Deleting a study, a series or an instance from the index, with its aggregates.

One transaction: the study row is locked first (on PostgreSQL; SQLite has one writer),
the instances go, then the series, study and patient they leave empty, and the counts
and ModalitiesInStudy of what remains are brought up to date. The blobs of the deleted
instances are returned for the caller to remove once the transaction has committed: a
crash in between leaves unreferenced blobs, which the start-up sweep removes.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import Connection, bindparam, delete, exists, select, update

from dicomweb.index import schema


@dataclass(frozen=True, slots=True)
class DeleteTarget:
    """A study, one of its series, or one instance of that series (UIDs validated)."""

    study_instance_uid: str
    series_instance_uid: str | None = None
    sop_instance_uid: str | None = None


@dataclass(frozen=True, slots=True)
class Deleted:
    """What a delete removed."""

    instances: int
    series: int
    studies: int
    patients: int
    bytes: int
    blob_keys: list[str] = field(repr=False)


def delete_target(conn: Connection, target: DeleteTarget) -> Deleted | None:
    """Remove what `target` names (a Writer function); None when nothing matches."""
    i, se, st, pa = schema.instance, schema.series, schema.study, schema.patient
    study = conn.execute(
        select(st.c.id, st.c.patient_pk)
        .where(st.c.study_instance_uid == target.study_instance_uid)
        .with_for_update()
    ).first()
    if study is None:
        return None
    condition = i.c.study_pk == study.id
    if target.series_instance_uid is not None:
        series_pk = conn.execute(
            select(se.c.id)
            .where(
                se.c.series_instance_uid == target.series_instance_uid,
                se.c.study_pk == study.id,
            )
            .with_for_update()
        ).scalar()
        if series_pk is None:
            return None
        condition = i.c.series_pk == series_pk
    if target.sop_instance_uid is not None:
        condition = condition & (i.c.sop_instance_uid == target.sop_instance_uid)
    removed = conn.execute(
        delete(i).where(condition).returning(i.c.series_pk, i.c.size, i.c.blob_key)
    ).all()
    if not removed:
        return None

    per_series = Counter(int(row.series_pk) for row in removed)
    conn.execute(
        update(se)
        .where(se.c.id == bindparam("pk"))
        .values(number_of_instances=se.c.number_of_instances - bindparam("n")),
        [{"pk": pk, "n": n} for pk, n in sorted(per_series.items())],
    )
    emptied = [
        int(pk)
        for pk in conn.execute(
            select(se.c.id)
            .where(se.c.id.in_(sorted(per_series)), ~exists().where(i.c.series_pk == se.c.id))
            .order_by(se.c.id)
        ).scalars()
    ]
    if emptied:
        conn.execute(
            delete(schema.request_attribute).where(
                schema.request_attribute.c.series_pk.in_(emptied)
            )
        )
        conn.execute(delete(se).where(se.c.id.in_(emptied)))

    study_emptied = conn.execute(select(~exists().where(i.c.study_pk == study.id))).scalar()
    if study_emptied:
        conn.execute(delete(schema.name_key).where(schema.name_key.c.study_pk == study.id))
        conn.execute(delete(st).where(st.c.id == study.id))
    else:
        conn.execute(
            update(st)
            .where(st.c.id == study.id)
            .values(
                number_of_instances=st.c.number_of_instances - len(removed),
                number_of_series=st.c.number_of_series - len(emptied),
                modalities_in_study=_modalities(conn, study.id),
                updated_at=datetime.now(UTC),
            )
        )
    conn.execute(
        update(pa)
        .where(pa.c.id == study.patient_pk)
        .values(
            number_of_instances=pa.c.number_of_instances - len(removed),
            number_of_series=pa.c.number_of_series - len(emptied),
            number_of_studies=pa.c.number_of_studies - int(bool(study_emptied)),
        )
    )
    patient_removed = conn.execute(
        delete(pa)
        .where(pa.c.id == study.patient_pk, ~exists().where(st.c.patient_pk == pa.c.id))
        .returning(pa.c.id)
    ).all()
    state = schema.index_state
    conn.execute(update(state).where(state.c.id == 1).values(deletions=state.c.deletions + 1))
    return Deleted(
        instances=len(removed),
        series=len(emptied),
        studies=int(bool(study_emptied)),
        patients=len(patient_removed),
        bytes=sum(int(row.size) for row in removed),
        blob_keys=[str(row.blob_key) for row in removed],
    )


def _modalities(conn: Connection, study_pk: int) -> str:
    """ModalitiesInStudy from the series that remain, as the ingest path writes it."""
    se = schema.series
    values = conn.execute(select(se.c.modality).where(se.c.study_pk == study_pk).distinct())
    return "\\".join(sorted({m for m in values.scalars() if m}))
