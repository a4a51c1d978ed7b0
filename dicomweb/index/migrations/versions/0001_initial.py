"""The first schema: patient, study, series and instance.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "patient",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("patient_id", sa.String(), nullable=False),
        sa.Column("issuer_of_patient_id", sa.String(), nullable=False),
        sa.Column("patient_name", sa.String()),
        sa.Column("patient_birth_date", sa.String()),
        sa.Column("patient_sex", sa.String()),
        sa.Column("number_of_studies", sa.Integer(), nullable=False),
        sa.Column("number_of_series", sa.Integer(), nullable=False),
        sa.Column("number_of_instances", sa.Integer(), nullable=False),
        sa.UniqueConstraint("patient_id", "issuer_of_patient_id", name="uq_patient_identity"),
    )
    op.create_table(
        "study",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("study_instance_uid", sa.String(64), nullable=False, unique=True),
        sa.Column("patient_pk", Id, sa.ForeignKey("patient.id"), nullable=False),
        sa.Column("study_date", sa.String()),
        sa.Column("study_time", sa.String()),
        sa.Column("accession_number", sa.String()),
        sa.Column("study_id", sa.String()),
        sa.Column("study_description", sa.String()),
        sa.Column("referring_physician_name", sa.String()),
        sa.Column("modalities_in_study", sa.String(), nullable=False),
        sa.Column("number_of_series", sa.Integer(), nullable=False),
        sa.Column("number_of_instances", sa.Integer(), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
    )
    op.create_index("ix_study_patient_pk", "study", ["patient_pk"])
    op.create_index("ix_study_study_date", "study", ["study_date"])
    op.create_index("ix_study_accession_number", "study", ["accession_number"])
    op.create_table(
        "series",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("series_instance_uid", sa.String(64), nullable=False, unique=True),
        sa.Column("study_pk", Id, sa.ForeignKey("study.id"), nullable=False),
        sa.Column("modality", sa.String()),
        sa.Column("series_number", sa.Integer()),
        sa.Column("series_description", sa.String()),
        sa.Column("series_date", sa.String()),
        sa.Column("series_time", sa.String()),
        sa.Column("performed_procedure_step_start_date", sa.String()),
        sa.Column("performed_procedure_step_start_time", sa.String()),
        sa.Column("number_of_instances", sa.Integer(), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
    )
    op.create_index("ix_series_study_pk", "series", ["study_pk"])
    op.create_index("ix_series_modality", "series", ["modality"])
    op.create_table(
        "instance",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("sop_instance_uid", sa.String(64), nullable=False, unique=True),
        sa.Column("series_pk", Id, sa.ForeignKey("series.id"), nullable=False),
        sa.Column("study_pk", Id, sa.ForeignKey("study.id"), nullable=False),
        sa.Column("sop_class_uid", sa.String(64), nullable=False),
        sa.Column("instance_number", sa.Integer()),
        sa.Column("transfer_syntax_uid", sa.String(64), nullable=False),
        sa.Column("number_of_frames", sa.Integer(), nullable=False),
        sa.Column("rows", sa.Integer()),
        sa.Column("columns", sa.Integer()),
        sa.Column("blob_key", sa.String(512), nullable=False, unique=True),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("frames", sa.LargeBinary()),
        sa.Column("metadata", sa.LargeBinary(), nullable=False),
        sa.Column("bulkdata", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
    )
    op.create_index("ix_instance_study_pk", "instance", ["study_pk"])
    op.create_index("ix_instance_series_number", "instance", ["series_pk", "instance_number"])


def downgrade() -> None:
    op.drop_table("instance")
    op.drop_table("series")
    op.drop_table("study")
    op.drop_table("patient")
