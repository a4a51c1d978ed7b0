"""What ingest hands to the index, and what the index answers."""

from __future__ import annotations

import enum
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PatientAttributes:
    patient_id: str
    issuer_of_patient_id: str
    patient_name: str | None
    patient_birth_date: str | None
    patient_sex: str | None


@dataclass(frozen=True, slots=True)
class StudyAttributes:
    study_instance_uid: str
    study_date: str | None
    study_time: str | None
    accession_number: str | None
    study_id: str | None
    study_description: str | None
    referring_physician_name: str | None
    # Its Patient and Study level attributes as DICOM JSON (see query.level_attributes).
    attributes: bytes = b"{}"


@dataclass(frozen=True, slots=True)
class SeriesAttributes:
    series_instance_uid: str
    modality: str | None
    series_number: int | None
    series_description: str | None
    series_date: str | None
    series_time: str | None
    performed_procedure_step_start_date: str | None
    performed_procedure_step_start_time: str | None
    # Its Series level attributes as DICOM JSON.
    attributes: bytes = b"{}"


@dataclass(frozen=True, slots=True)
class InstanceRecord:
    """Everything the index keeps of one instance, extracted once at ingest."""

    patient: PatientAttributes
    study: StudyAttributes
    series: SeriesAttributes
    sop_instance_uid: str
    sop_class_uid: str
    instance_number: int | None
    transfer_syntax_uid: str
    number_of_frames: int
    rows: int | None
    columns: int | None
    blob_key: str
    size: int
    sha256: str
    frames: bytes | None
    metadata: bytes
    bulkdata: bytes


class AddResult(enum.Enum):
    """How the index took an instance."""

    ADDED = "added"
    # The SOP Instance UID was stored already with the same content.
    DUPLICATE = "duplicate"
    # The SOP Instance UID was stored already with different content; nothing changed.
    CONFLICT = "conflict"
