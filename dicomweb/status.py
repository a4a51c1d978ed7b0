"""DICOM status codes shared by STOW-RS (PS3.18 Annex I) and DIMSE (PS3.4, PS3.7)."""

from __future__ import annotations

from enum import IntEnum


class Status(IntEnum):
    """Per-instance outcome codes, used both as Failure/Warning Reason and DIMSE status."""

    SUCCESS = 0x0000
    # Warnings (PS3.18 Table I.2-1, PS3.4 B.2.3)
    COERCION_OF_DATA_ELEMENTS = 0xB000
    ELEMENTS_DISCARDED = 0xB006
    DATA_SET_DOES_NOT_MATCH_SOP_CLASS_WARNING = 0xB007
    # Failures (PS3.18 Table I.2-2, PS3.7 C.4)
    PROCESSING_FAILURE = 0x0110
    DUPLICATE_SOP_INSTANCE = 0x0111
    OUT_OF_RESOURCES = 0xA700
    # Implementation-specific A7xx: the request body passed the configured limit.
    OUT_OF_RESOURCES_REQUEST_TOO_LARGE = 0xA770
    # Implementation-specific A9xx: the Study Instance UID differs from the request URL.
    STUDY_INSTANCE_UID_MISMATCH = 0xA910
    # Implementation-specific A9xx: a required UID is missing or not a valid UID.
    INVALID_UID = 0xA920
    CANNOT_UNDERSTAND = 0xC000
    # Implementation-specific Cxxx: the part ended before the data set did.
    TRUNCATED_DATA_SET = 0xC010
    # Implementation-specific Cxxx: the part is not application/dicom.
    UNSUPPORTED_MEDIA_TYPE_PART = 0xC020

    @property
    def is_failure(self) -> bool:
        return not (self is Status.SUCCESS or 0xB000 <= self <= 0xBFFF)

    @property
    def is_warning(self) -> bool:
        return 0xB000 <= self <= 0xBFFF


MEANINGS: dict[Status, str] = {
    Status.SUCCESS: "Success",
    Status.COERCION_OF_DATA_ELEMENTS: "Coercion of data elements",
    Status.ELEMENTS_DISCARDED: "Elements discarded",
    Status.DATA_SET_DOES_NOT_MATCH_SOP_CLASS_WARNING: "Data set does not match SOP Class",
    Status.PROCESSING_FAILURE: "Processing failure",
    Status.DUPLICATE_SOP_INSTANCE: (
        "Duplicate SOP Instance: a different data set with this SOP Instance UID is stored"
    ),
    Status.OUT_OF_RESOURCES: "Refused: out of resources",
    Status.OUT_OF_RESOURCES_REQUEST_TOO_LARGE: (
        "Refused: out of resources (request body or part over the configured limit)"
    ),
    Status.STUDY_INSTANCE_UID_MISMATCH: (
        "Error: Study Instance UID does not match the study of the request URL"
    ),
    Status.INVALID_UID: "Error: a required UID is missing or malformed",
    Status.CANNOT_UNDERSTAND: "Error: cannot understand (not a DICOM data set)",
    Status.TRUNCATED_DATA_SET: "Error: cannot understand (data set truncated)",
    Status.UNSUPPORTED_MEDIA_TYPE_PART: "Error: cannot understand (part is not application/dicom)",
}
