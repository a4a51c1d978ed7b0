"""Tables of the index (SQLAlchemy Core). Alembic migrations create them; keep both in step."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    UniqueConstraint,
)

metadata = MetaData()

# SQLite only autoincrements INTEGER PRIMARY KEY; PostgreSQL wants BIGINT at scale.
Id = BigInteger().with_variant(Integer(), "sqlite")

patient = Table(
    "patient",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("patient_id", String(), nullable=False),
    Column("issuer_of_patient_id", String(), nullable=False),
    Column("patient_name", String()),
    Column("patient_birth_date", String()),
    Column("patient_sex", String()),
    Column("number_of_studies", Integer, nullable=False),
    Column("number_of_series", Integer, nullable=False),
    Column("number_of_instances", Integer, nullable=False),
    UniqueConstraint("patient_id", "issuer_of_patient_id", name="uq_patient_identity"),
)

study = Table(
    "study",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("study_instance_uid", String(64), nullable=False, unique=True),
    Column("patient_pk", Id, ForeignKey("patient.id"), nullable=False, index=True),
    Column("study_date", String(), index=True),
    Column("study_time", String()),
    Column("accession_number", String(), index=True),
    Column("study_id", String()),
    Column("study_description", String()),
    Column("referring_physician_name", String()),
    Column("modalities_in_study", String(), nullable=False),
    Column("number_of_series", Integer, nullable=False),
    Column("number_of_instances", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

series = Table(
    "series",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("series_instance_uid", String(64), nullable=False, unique=True),
    Column("study_pk", Id, ForeignKey("study.id"), nullable=False, index=True),
    Column("modality", String(), index=True),
    Column("series_number", Integer),
    Column("series_description", String()),
    Column("series_date", String()),
    Column("series_time", String()),
    Column("performed_procedure_step_start_date", String()),
    Column("performed_procedure_step_start_time", String()),
    Column("number_of_instances", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

instance = Table(
    "instance",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("sop_instance_uid", String(64), nullable=False, unique=True),
    Column("series_pk", Id, ForeignKey("series.id"), nullable=False),
    Column("study_pk", Id, ForeignKey("study.id"), nullable=False, index=True),
    Column("sop_class_uid", String(64), nullable=False),
    Column("instance_number", Integer),
    Column("transfer_syntax_uid", String(64), nullable=False),
    Column("number_of_frames", Integer, nullable=False),
    Column("rows", Integer),
    Column("columns", Integer),
    Column("blob_key", String(512), nullable=False, unique=True),
    Column("size", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    # Per frame, the (offset, length) ranges of its bytes in the blob (orjson);
    # null when frames cannot be located without decoding (deflated data).
    Column("frames", LargeBinary),
    # The instance's DICOM JSON (PS3.18 F.2, orjson) with BulkDataURIs for large values.
    Column("metadata", LargeBinary, nullable=False),
    # BulkDataURI path -> [offset, length] in the blob, or null where it needs a parse.
    Column("bulkdata", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_instance_series_number", "series_pk", "instance_number"),
)
