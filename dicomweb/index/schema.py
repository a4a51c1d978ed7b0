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
# Matched text: byte order on PostgreSQL too, so that LIKE 'abc%' and the prefix range
# that accompanies it use the index whatever the database's locale.
Text = String().with_variant(String(collation="C"), "postgresql")

patient = Table(
    "patient",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("patient_id", Text, nullable=False),
    Column("issuer_of_patient_id", Text, nullable=False),
    Column("patient_name", String()),
    Column("patient_birth_date", Text),
    Column("patient_sex", Text),
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
    Column("study_date", Text, index=True),
    Column("study_time", Text),
    Column("accession_number", Text, index=True),
    Column("study_id", Text),
    Column("study_description", Text),
    Column("referring_physician_name", String()),
    Column("modalities_in_study", String(), nullable=False),
    # StudyDate and StudyTime as YYYYMMDDHHMMSS.FFFFFF ('' without a date): the order of
    # search results and combined date-time range matching (PS3.4 C.2.2.2.5.1).
    Column("datetime_key", Text, nullable=False, server_default=""),
    Column("time_key", Text),
    # The Patient and Study level attributes of its first instance (DICOM JSON, orjson).
    Column("attributes", LargeBinary),
    Column("number_of_series", Integer, nullable=False),
    Column("number_of_instances", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_study_order", "datetime_key", "id"),
)

series = Table(
    "series",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("series_instance_uid", String(64), nullable=False, unique=True),
    Column("study_pk", Id, ForeignKey("study.id"), nullable=False, index=True),
    Column("modality", Text, index=True),
    Column("series_number", Integer),
    Column("series_description", Text),
    Column("series_date", Text),
    Column("series_time", Text),
    Column("performed_procedure_step_start_date", Text),
    Column("performed_procedure_step_start_time", Text),
    Column("number_of_instances", Integer, nullable=False),
    Column("series_time_key", Text),
    Column("performed_procedure_step_start_time_key", Text),
    # The Series level attributes of its first instance (DICOM JSON, orjson).
    Column("attributes", LargeBinary),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_series_study_modality", "study_pk", "modality"),
)

# Person names of a study, as matched: one row per component group (kind 0, 1, 2:
# alphabetic, ideographic, phonetic) and per word for fuzzy matching (kind 3).
name_key = Table(
    "name_key",
    metadata,
    Column("study_pk", Id, ForeignKey("study.id"), nullable=False, index=True),
    Column("tag", Integer, nullable=False),
    Column("kind", Integer, nullable=False),
    Column("key", Text, nullable=False),
    Index("ix_name_key_lookup", "tag", "key", "kind"),
)

# Items of a series' Request Attributes Sequence, for sequence matching.
request_attribute = Table(
    "request_attribute",
    metadata,
    Column("series_pk", Id, ForeignKey("series.id"), nullable=False, index=True),
    Column("scheduled_procedure_step_id", Text, index=True),
    Column("requested_procedure_id", Text, index=True),
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

# One row (id 1). `deletions` grows with every delete transaction: a process that caches
# primary keys of series compares it with the value it saw, since a deleted row's key
# may be given to a new row on SQLite.
index_state = Table(
    "index_state",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("deletions", BigInteger, nullable=False),
)
