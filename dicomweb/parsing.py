"""Parsing a stored instance's header into its index record: CPU work, run in a thread.

The fast reader (the fastheader package) handles the common encodings; pydicom reads the rest.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import BinaryIO, Protocol

import orjson
import pydicom
from pydicom import Dataset, config
from pydicom.errors import InvalidDicomError

from dicomweb.dicomjson import instance_json, raw_positions
from dicomweb.errors import InstanceRejected, InvalidUID
from dicomweb.fastheader import read_fast_header
from dicomweb.index import InstanceRecord
from dicomweb.index.records import PatientAttributes, SeriesAttributes, StudyAttributes
from dicomweb.pixels.frames import FrameLayoutError, FrameTable, locate_frames
from dicomweb.query import Level, level_attributes
from dicomweb.resources import InstanceKey, is_valid_uid, validate_uid
from dicomweb.status import Status

# The fast reader gets the first _FAST_HEAD bytes; a header longer than that is read
# whole when the file is at most _FAST_WHOLE_FILE bytes, else pydicom reads it.
_FAST_HEAD = 64 * 1024
_FAST_WHOLE_FILE = 16 * 1024 * 1024

# What modalities send is kept as sent: invalid values are not a reason to refuse an
# instance, and pydicom's warnings about them would only fill the log.
config.settings.reading_validation_mode = config.IGNORE

_PIXEL_TAGS = {
    "PixelData": "7FE00010",
    "FloatPixelData": "7FE00008",
    "DoubleFloatPixelData": "7FE00009",
}


class _Header(Protocol):
    """What extract needs of a parsed header; FastHeader and _PydicomHeader provide it."""

    @property
    def transfer_syntax_uid(self) -> str | None: ...

    def __contains__(self, keyword: object) -> bool: ...

    def text(self, keyword: str) -> str | None: ...

    def integer(self, keyword: str) -> int | None: ...

    def frame_header(self) -> Dataset: ...

    def instance_json(
        self, pixel_data: tuple[str, str] | None, resource_path: str
    ) -> tuple[bytes, bytes]: ...


class _PydicomHeader:
    """A header parsed by pydicom: every case the fast reader leaves to it."""

    def __init__(self, ds: Dataset, positions: dict[int, list[int]], threshold: int) -> None:
        self._ds = ds
        self._positions = positions
        self._threshold = threshold
        self.transfer_syntax_uid = _text(ds.file_meta, "TransferSyntaxUID")

    def __contains__(self, keyword: object) -> bool:
        return isinstance(keyword, str | int) and keyword in self._ds

    def text(self, keyword: str) -> str | None:
        return _text(self._ds, keyword)

    def integer(self, keyword: str) -> int | None:
        return _integer(self._ds, keyword)

    def frame_header(self) -> Dataset:
        return self._ds

    def instance_json(
        self, pixel_data: tuple[str, str] | None, resource_path: str
    ) -> tuple[bytes, bytes]:
        try:
            return instance_json(
                self._ds, resource_path, self._threshold, pixel_data, self._positions
            )
        except Exception as exc:
            # A value pydicom keeps but cannot convert (a DS "1,5", an IS "1A").
            raise InstanceRejected(
                Status.CANNOT_UNDERSTAND, f"a value cannot be represented: {exc}"[:300]
            ) from None


def _read(fp: BinaryIO, data: bytes | None, bulk_data_threshold: int) -> _Header:
    """The header of the file, by the fast reader where it can, else by pydicom.

    `data` is the whole file when it is in memory; a file is read in part first, whole
    only when its header did not fit.
    """
    if data is None:
        head = fp.read(_FAST_HEAD)
        fast = read_fast_header(head, bulk_data_threshold, "", record_positions=True)
        if fast is not None and (fast.pixel_data_offset is not None or len(head) < _FAST_HEAD):
            return fast
        if len(head) == _FAST_HEAD and fp.seek(0, io.SEEK_END) <= _FAST_WHOLE_FILE:
            fp.seek(0)
            data = fp.read()
    if data is not None:
        fast = read_fast_header(data, bulk_data_threshold, "", record_positions=True)
        if fast is not None:
            return fast
    fp.seek(0)
    ds, positions = _read_header(fp)
    return _PydicomHeader(ds, positions, bulk_data_threshold)


def extract(source: Path | bytes, bulk_data_threshold: int) -> InstanceRecord:
    """Parse the header of a PS3.10 file and build its index record (CPU work).

    The record's blob key, size and hash are left empty: the caller knows them.
    """
    with open(source, "rb") if isinstance(source, Path) else io.BytesIO(source) as fp:
        header = _read(fp, None if isinstance(source, Path) else source, bulk_data_threshold)
        sop_class = header.text("SOPClassUID")
        sop_instance = header.text("SOPInstanceUID")

        def reject(status: Status, detail: str) -> InstanceRejected:
            return InstanceRejected(
                status,
                detail,
                sop_class if sop_class and is_valid_uid(sop_class) else None,
                sop_instance if sop_instance and is_valid_uid(sop_instance) else None,
            )

        try:
            key = InstanceKey(
                header.text("StudyInstanceUID") or "",
                header.text("SeriesInstanceUID") or "",
                sop_instance or "",
            )
            validate_uid(sop_class, "SOPClassUID")
            transfer_syntax = validate_uid(header.transfer_syntax_uid, "TransferSyntaxUID")
        except InvalidUID as exc:
            raise reject(Status.INVALID_UID, exc.detail) from None
        try:
            frames = locate_frames(fp, header.frame_header())
        except FrameLayoutError as exc:
            raise reject(Status.TRUNCATED_DATA_SET, f"pixel data: {exc}") from None
    assert sop_class is not None
    metadata, bulkdata = header.instance_json(_pixel_element(header, frames), key.path)
    model = orjson.loads(metadata)
    study_attributes = orjson.dumps(level_attributes(model, Level.STUDY))
    series_attributes = orjson.dumps(level_attributes(model, Level.SERIES))
    return InstanceRecord(
        patient=PatientAttributes(
            patient_id=header.text("PatientID") or "",
            issuer_of_patient_id=header.text("IssuerOfPatientID") or "",
            patient_name=header.text("PatientName"),
            patient_birth_date=header.text("PatientBirthDate"),
            patient_sex=header.text("PatientSex"),
        ),
        study=StudyAttributes(
            study_instance_uid=key.study_instance_uid,
            study_date=header.text("StudyDate"),
            study_time=header.text("StudyTime"),
            accession_number=header.text("AccessionNumber"),
            study_id=header.text("StudyID"),
            study_description=header.text("StudyDescription"),
            referring_physician_name=header.text("ReferringPhysicianName"),
            attributes=study_attributes,
        ),
        series=SeriesAttributes(
            series_instance_uid=key.series_instance_uid,
            modality=header.text("Modality"),
            series_number=header.integer("SeriesNumber"),
            series_description=header.text("SeriesDescription"),
            series_date=header.text("SeriesDate"),
            series_time=header.text("SeriesTime"),
            performed_procedure_step_start_date=header.text("PerformedProcedureStepStartDate"),
            performed_procedure_step_start_time=header.text("PerformedProcedureStepStartTime"),
            attributes=series_attributes,
        ),
        sop_instance_uid=key.sop_instance_uid,
        sop_class_uid=sop_class,
        instance_number=header.integer("InstanceNumber"),
        transfer_syntax_uid=transfer_syntax,
        number_of_frames=_number_of_frames(header, frames),
        rows=header.integer("Rows"),
        columns=header.integer("Columns"),
        blob_key="",
        size=0,
        sha256="",
        frames=None if frames is None else orjson.dumps(frames.to_json()),
        metadata=metadata,
        bulkdata=bulkdata,
    )


def _read_header(fp: BinaryIO) -> tuple[Dataset, dict[int, list[int]]]:
    try:
        ds = pydicom.dcmread(fp, stop_before_pixels=True)
    except InvalidDicomError:
        raise InstanceRejected(
            Status.CANNOT_UNDERSTAND, "not a DICOM Part 10 file (no DICM prefix or file meta)"
        ) from None
    except EOFError:
        raise InstanceRejected(Status.TRUNCATED_DATA_SET, "the data set ends early") from None
    except Exception as exc:
        # pydicom reports malformed input with many exception types; all mean the same.
        raise InstanceRejected(
            Status.CANNOT_UNDERSTAND, f"the data set cannot be parsed: {exc}"[:300]
        ) from None
    if "TransferSyntaxUID" not in ds.file_meta:
        raise InstanceRejected(Status.CANNOT_UNDERSTAND, "the file meta has no TransferSyntaxUID")
    positions = raw_positions(ds)
    try:
        # Parse every element now, so a malformed value fails here and not later; the
        # file meta too, which is read as sent (a Transfer Syntax UID may be a sequence).
        for elem in ds.file_meta.iterall():
            _ = elem.value
        for elem in ds.iterall():
            _ = elem.value
    except Exception as exc:
        raise InstanceRejected(
            Status.CANNOT_UNDERSTAND, f"the data set cannot be parsed: {exc}"[:300]
        ) from None
    if not isinstance(ds.file_meta.TransferSyntaxUID, str):
        raise InstanceRejected(Status.CANNOT_UNDERSTAND, "the TransferSyntaxUID is not a UID")
    return ds, positions


def _text(ds: Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value).rstrip("\x00 ")


def _integer(ds: Dataset, keyword: str) -> int | None:
    value = ds.get(keyword)
    try:
        return None if value is None or value == "" else int(value)
    except (TypeError, ValueError, OverflowError):
        # OverflowError: an infinite DS or floating point value.
        return None


def _number_of_frames(header: _Header, frames: FrameTable | None) -> int:
    if frames is not None:
        return len(frames.frames)
    # Frames that cannot be located (deflated data sets): an image has Rows.
    return (header.integer("NumberOfFrames") or 1) if "Rows" in header else 0


def _pixel_element(header: _Header, frames: FrameTable | None) -> tuple[str, str] | None:
    """The (tag, VR) of the pixel data element the header parse stopped before."""
    keyword = frames.pixel_keyword if frames is not None else "PixelData"
    if frames is None and "Rows" not in header:
        return None
    tag = _PIXEL_TAGS[keyword]
    if keyword != "PixelData":
        return tag, "OF" if keyword == "FloatPixelData" else "OD"
    encapsulated = frames.encapsulated if frames is not None else False
    if encapsulated or (header.integer("BitsAllocated") or 16) <= 8:
        return tag, "OB"
    return tag, "OW"
