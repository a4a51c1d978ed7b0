"""Search: name keys, request attribute items, normalised time keys, level attributes.

On PostgreSQL, matched text columns get the "C" collation so that prefix matches use
their indexes whatever the database's locale. Rows indexed before are filled in from
their stored columns and their first instance's metadata.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from typing import Any

import orjson
import sqlalchemy as sa
from alembic import op

from dicomweb.query import (
    PATIENT_NAME,
    REFERRING_PHYSICIAN_NAME,
    Level,
    datetime_key,
    level_attributes,
    name_keys,
    normalize_time,
    request_items,
)

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Text = sa.String().with_variant(sa.String(collation="C"), "postgresql")

_MATCHED_COLUMNS = {
    "patient": ("patient_id", "issuer_of_patient_id", "patient_birth_date", "patient_sex"),
    "study": ("study_date", "study_time", "accession_number", "study_id", "study_description"),
    "series": (
        "modality",
        "series_description",
        "series_date",
        "series_time",
        "performed_procedure_step_start_date",
        "performed_procedure_step_start_time",
    ),
}


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        for table, columns in _MATCHED_COLUMNS.items():
            for column in columns:
                op.execute(f'ALTER TABLE {table} ALTER COLUMN {column} TYPE VARCHAR COLLATE "C"')
    with op.batch_alter_table("study") as batch:
        batch.add_column(sa.Column("datetime_key", Text, nullable=False, server_default=""))
        batch.add_column(sa.Column("time_key", Text))
        batch.add_column(sa.Column("attributes", sa.LargeBinary()))
    with op.batch_alter_table("series") as batch:
        batch.add_column(sa.Column("series_time_key", Text))
        batch.add_column(sa.Column("performed_procedure_step_start_time_key", Text))
        batch.add_column(sa.Column("attributes", sa.LargeBinary()))
    op.create_index("ix_study_order", "study", ["datetime_key", "id"])
    op.create_index("ix_series_study_modality", "series", ["study_pk", "modality"])
    op.create_table(
        "name_key",
        sa.Column("study_pk", Id, sa.ForeignKey("study.id"), nullable=False),
        sa.Column("tag", sa.Integer(), nullable=False),
        sa.Column("kind", sa.Integer(), nullable=False),
        sa.Column("key", Text, nullable=False),
    )
    op.create_index("ix_name_key_study_pk", "name_key", ["study_pk"])
    op.create_index("ix_name_key_lookup", "name_key", ["tag", "key", "kind"])
    op.create_table(
        "request_attribute",
        sa.Column("series_pk", Id, sa.ForeignKey("series.id"), nullable=False),
        sa.Column("scheduled_procedure_step_id", Text),
        sa.Column("requested_procedure_id", Text),
    )
    op.create_index("ix_request_attribute_series_pk", "request_attribute", ["series_pk"])
    op.create_index(
        "ix_request_attribute_scheduled_procedure_step_id",
        "request_attribute",
        ["scheduled_procedure_step_id"],
    )
    op.create_index(
        "ix_request_attribute_requested_procedure_id",
        "request_attribute",
        ["requested_procedure_id"],
    )
    _fill_studies(bind)
    _fill_series(bind)


def _first_metadata(bind: sa.Connection, column: str, pk: int) -> dict[str, Any]:
    row = bind.execute(
        sa.text(f"SELECT metadata FROM instance WHERE {column} = :pk ORDER BY id LIMIT 1"),
        {"pk": pk},
    ).first()
    return {} if row is None else dict(orjson.loads(row[0]))


def _fill_studies(bind: sa.Connection) -> None:
    studies = bind.execute(
        sa.text(
            "SELECT study.id, study_date, study_time, referring_physician_name, patient_name "
            "FROM study JOIN patient ON patient.id = study.patient_pk"
        )
    ).all()
    for pk, date, time, referring, patient_name in studies:
        attributes = level_attributes(_first_metadata(bind, "study_pk", pk), Level.STUDY)
        bind.execute(
            sa.text(
                "UPDATE study SET datetime_key = :d, time_key = :t, attributes = :a WHERE id = :pk"
            ),
            {
                "d": datetime_key(date, time),
                "t": normalize_time(time),
                "a": orjson.dumps(attributes),
                "pk": pk,
            },
        )
        names = [
            {"pk": pk, "tag": tag, "kind": kind, "key": key}
            for tag, value in ((PATIENT_NAME, patient_name), (REFERRING_PHYSICIAN_NAME, referring))
            for kind, key in name_keys(value)
        ]
        if names:
            bind.execute(
                sa.text(
                    "INSERT INTO name_key (study_pk, tag, kind, key) "
                    "VALUES (:pk, :tag, :kind, :key)"
                ),
                names,
            )


def _fill_series(bind: sa.Connection) -> None:
    rows = bind.execute(
        sa.text("SELECT id, series_time, performed_procedure_step_start_time FROM series")
    ).all()
    for pk, series_time, step_time in rows:
        attributes = level_attributes(_first_metadata(bind, "series_pk", pk), Level.SERIES)
        bind.execute(
            sa.text(
                "UPDATE series SET series_time_key = :s, "
                "performed_procedure_step_start_time_key = :p, attributes = :a WHERE id = :pk"
            ),
            {
                "s": normalize_time(series_time),
                "p": normalize_time(step_time),
                "a": orjson.dumps(attributes),
                "pk": pk,
            },
        )
        items = [
            {"pk": pk, "step": step, "procedure": procedure}
            for step, procedure in request_items(attributes)
        ]
        if items:
            bind.execute(
                sa.text(
                    "INSERT INTO request_attribute "
                    "(series_pk, scheduled_procedure_step_id, requested_procedure_id) "
                    "VALUES (:pk, :step, :procedure)"
                ),
                items,
            )


def downgrade() -> None:
    op.drop_table("request_attribute")
    op.drop_table("name_key")
    op.drop_index("ix_series_study_modality", "series")
    op.drop_index("ix_study_order", "study")
    with op.batch_alter_table("series") as batch:
        batch.drop_column("attributes")
        batch.drop_column("performed_procedure_step_start_time_key")
        batch.drop_column("series_time_key")
    with op.batch_alter_table("study") as batch:
        batch.drop_column("attributes")
        batch.drop_column("time_key")
        batch.drop_column("datetime_key")
