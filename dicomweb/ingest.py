"""The one ingest path: STOW-RS, `dicomweb import` and C-STORE all store through here.

stage (the caller streams bytes in) -> parse the header only -> validate -> extract
index attributes, metadata JSON and frame offsets -> commit the blob (fsync, atomic
link) -> commit the index rows. A crash before the blob commit leaves a staging file,
one between the two commits an unindexed blob; the start-up sweep removes both.
"""

from __future__ import annotations

import asyncio
import io
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

import orjson
import pydicom
from anyio import CapacityLimiter, to_thread
from pydicom import Dataset, config
from pydicom.errors import InvalidDicomError
from sqlalchemy.exc import SQLAlchemyError

from dicomweb.dicomjson import instance_json
from dicomweb.errors import InstanceRejected, InvalidUID
from dicomweb.index import AddResult, Index, InstanceRecord
from dicomweb.index.records import PatientAttributes, SeriesAttributes, StudyAttributes
from dicomweb.pixels.frames import FrameLayoutError, FrameTable, locate_frames
from dicomweb.resources import InstanceKey, is_valid_uid, validate_uid
from dicomweb.status import Status
from dicomweb.storage import BlobStore, StagedBlob

log = logging.getLogger(__name__)

# What modalities send is kept as sent: invalid values are not a reason to refuse an
# instance, and pydicom's warnings about them would only fill the log.
config.settings.reading_validation_mode = config.IGNORE

_PIXEL_TAGS = {
    "PixelData": "7FE00010",
    "FloatPixelData": "7FE00008",
    "DoubleFloatPixelData": "7FE00009",
}
_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class StoreOutcome:
    """What happened to one instance; STOW-RS and C-STORE report it."""

    status: Status
    detail: str
    sop_class_uid: str | None = None
    sop_instance_uid: str | None = None
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    duplicate: bool = False

    @property
    def stored(self) -> bool:
        return not self.status.is_failure

    @property
    def key(self) -> InstanceKey | None:
        if self.study_instance_uid and self.series_instance_uid and self.sop_instance_uid:
            return InstanceKey(
                self.study_instance_uid, self.series_instance_uid, self.sop_instance_uid
            )
        return None


class _Rejected(InstanceRejected):
    """A rejection that knows which instance it was about, as far as it got."""

    def __init__(
        self,
        status: Status,
        detail: str = "",
        sop_class: str | None = None,
        sop_instance: str | None = None,
    ) -> None:
        super().__init__(status, detail)
        self.sop_class_uid = sop_class
        self.sop_instance_uid = sop_instance


class Ingestor:
    """Stores instances: blobs first, then the index."""

    def __init__(
        self, blobs: BlobStore, index: Index, *, bulk_data_threshold: int, workers: int
    ) -> None:
        self.blobs = blobs
        self.index = index
        self._threshold = bulk_data_threshold
        self._limiter = CapacityLimiter(workers)

    def receive(self) -> Incoming:
        """Start receiving the bytes of one instance."""
        return Incoming(self.blobs.stage())

    async def store(self, incoming: Incoming, *, expected_study: str | None = None) -> StoreOutcome:
        """Store what was received. Never raises for bad data: the outcome says."""
        staged = incoming.staged
        try:
            await incoming.close()
            return await self._store(staged, expected_study)
        except _Rejected as exc:
            await staged.abort()
            return StoreOutcome(
                exc.dicom_status, exc.detail, exc.sop_class_uid, exc.sop_instance_uid
            )
        except OSError as exc:
            await staged.abort()
            log.exception("storage failed")
            return StoreOutcome(Status.OUT_OF_RESOURCES, f"storage failed: {exc.strerror}")
        except BaseException:
            await staged.abort()
            raise

    async def _store(self, staged: StagedBlob, expected_study: str | None) -> StoreOutcome:
        record = await self._extract(staged)
        study = record.study.study_instance_uid
        if expected_study is not None and study != expected_study:
            raise _Rejected(
                Status.STUDY_INSTANCE_UID_MISMATCH,
                f"StudyInstanceUID {study} differs from the request's study {expected_study}",
                record.sop_class_uid,
                record.sop_instance_uid,
            )
        created = await staged.commit(record.blob_key)
        try:
            result = await self.index.add_instance(record)
        except (SQLAlchemyError, OSError) as exc:
            # The committed blob has no index row; the sweep removes it.
            log.exception("indexing %s failed", record.sop_instance_uid)
            raise _Rejected(
                Status.PROCESSING_FAILURE,
                f"the index could not record the instance ({type(exc).__name__})",
                record.sop_class_uid,
                record.sop_instance_uid,
            ) from exc
        if result is AddResult.CONFLICT:
            if created:
                await self.blobs.delete(record.blob_key)
            raise _Rejected(
                Status.DUPLICATE_SOP_INSTANCE,
                "",
                record.sop_class_uid,
                record.sop_instance_uid,
            )
        return StoreOutcome(
            Status.SUCCESS,
            "already stored" if result is AddResult.DUPLICATE else "stored",
            record.sop_class_uid,
            record.sop_instance_uid,
            study,
            record.series.series_instance_uid,
            duplicate=result is AddResult.DUPLICATE,
        )

    async def _extract(self, staged: StagedBlob) -> InstanceRecord:
        """Flush the staged bytes and parse them; both at once when they are in memory."""
        memory = staged.memory()
        if memory is None:
            info = await staged.finish()
            record = await to_thread.run_sync(
                extract, staged.path, self._threshold, limiter=self._limiter
            )
        else:
            # Wait for both before going on: an abort must not race the flush.
            flushed, parsed = await asyncio.gather(
                staged.finish(),
                to_thread.run_sync(extract, memory, self._threshold, limiter=self._limiter),
                return_exceptions=True,
            )
            if isinstance(flushed, BaseException):
                raise flushed
            if isinstance(parsed, BaseException):
                raise parsed
            info, record = flushed, parsed
        key = InstanceKey(
            record.study.study_instance_uid,
            record.series.series_instance_uid,
            record.sop_instance_uid,
        )
        return replace(
            record, blob_key=blob_key(key, info.sha256), size=info.size, sha256=info.sha256
        )

    async def store_file(self, path: Path) -> StoreOutcome:
        """Store a file from the local filesystem (the `import` command)."""
        incoming = self.receive()
        try:
            with open(path, "rb") as f:  # noqa: ASYNC230 - reads go to a thread below
                while chunk := await to_thread.run_sync(f.read, _CHUNK):
                    await incoming.write(chunk)
        except BaseException:
            await incoming.abort()
            raise
        return await self.store(incoming)


class Incoming:
    """The bytes of one instance as they arrive, on their way into a staged blob.

    A data set that starts with its file meta but lacks the 128-byte preamble and
    "DICM" prefix (pydicom writes data sets made in memory so) gets them, so that every
    stored file is a complete PS3.10 file.
    """

    def __init__(self, staged: StagedBlob) -> None:
        self.staged = staged
        self._head: bytearray | None = bytearray()

    async def write(self, chunk: bytes) -> None:
        if self._head is None:
            await self.staged.write(chunk)
            return
        self._head += chunk
        if len(self._head) >= len(_PREAMBLE):
            await self.close()

    async def abort(self) -> None:
        """Drop what was received."""
        self._head = None
        await self.staged.abort()

    async def close(self) -> None:
        """Pass on what is held back; called once all bytes were written."""
        if self._head is None:
            return
        head = bytes(self._head)
        self._head = None
        if head[128:132] != b"DICM" and head[:2] == b"\x02\x00":
            await self.staged.write(_PREAMBLE)
        await self.staged.write(head)


def extract(source: Path | bytes, bulk_data_threshold: int) -> InstanceRecord:
    """Parse the header of a PS3.10 file and build its index record (CPU work).

    The record's blob key, size and hash are left empty: the caller knows them.
    """
    with open(source, "rb") if isinstance(source, Path) else io.BytesIO(source) as fp:
        ds = _read_header(fp)
        sop_class = _text(ds, "SOPClassUID")
        sop_instance = _text(ds, "SOPInstanceUID")

        def reject(status: Status, detail: str) -> _Rejected:
            return _Rejected(
                status,
                detail,
                sop_class if sop_class and is_valid_uid(sop_class) else None,
                sop_instance if sop_instance and is_valid_uid(sop_instance) else None,
            )

        try:
            key = InstanceKey(
                _text(ds, "StudyInstanceUID") or "",
                _text(ds, "SeriesInstanceUID") or "",
                sop_instance or "",
            )
            validate_uid(sop_class, "SOPClassUID")
            transfer_syntax = validate_uid(
                _text(ds.file_meta, "TransferSyntaxUID"), "TransferSyntaxUID"
            )
        except InvalidUID as exc:
            raise reject(Status.INVALID_UID, exc.detail) from None
        try:
            frames = locate_frames(fp, ds)
        except FrameLayoutError as exc:
            raise reject(Status.TRUNCATED_DATA_SET, f"pixel data: {exc}") from None
    assert sop_class is not None
    number_of_frames = _number_of_frames(ds, frames)
    metadata, bulkdata = instance_json(
        ds, key.path, bulk_data_threshold, _pixel_element(ds, frames)
    )
    return InstanceRecord(
        patient=PatientAttributes(
            patient_id=_text(ds, "PatientID") or "",
            issuer_of_patient_id=_text(ds, "IssuerOfPatientID") or "",
            patient_name=_text(ds, "PatientName"),
            patient_birth_date=_text(ds, "PatientBirthDate"),
            patient_sex=_text(ds, "PatientSex"),
        ),
        study=StudyAttributes(
            study_instance_uid=key.study_instance_uid,
            study_date=_text(ds, "StudyDate"),
            study_time=_text(ds, "StudyTime"),
            accession_number=_text(ds, "AccessionNumber"),
            study_id=_text(ds, "StudyID"),
            study_description=_text(ds, "StudyDescription"),
            referring_physician_name=_text(ds, "ReferringPhysicianName"),
        ),
        series=SeriesAttributes(
            series_instance_uid=key.series_instance_uid,
            modality=_text(ds, "Modality"),
            series_number=_integer(ds, "SeriesNumber"),
            series_description=_text(ds, "SeriesDescription"),
            series_date=_text(ds, "SeriesDate"),
            series_time=_text(ds, "SeriesTime"),
            performed_procedure_step_start_date=_text(ds, "PerformedProcedureStepStartDate"),
            performed_procedure_step_start_time=_text(ds, "PerformedProcedureStepStartTime"),
        ),
        sop_instance_uid=key.sop_instance_uid,
        sop_class_uid=sop_class,
        instance_number=_integer(ds, "InstanceNumber"),
        transfer_syntax_uid=transfer_syntax,
        number_of_frames=number_of_frames,
        rows=_integer(ds, "Rows"),
        columns=_integer(ds, "Columns"),
        blob_key="",
        size=0,
        sha256="",
        frames=None if frames is None else _frames_json(frames),
        metadata=metadata,
        bulkdata=bulkdata,
    )


_PREAMBLE = bytes(128) + b"DICM"


def blob_key(key: InstanceKey, sha256: str) -> str:
    """Where an instance's file lives: its UIDs, and its content hash so that different
    data under one SOP Instance UID never overwrites a stored file."""
    return (
        f"{key.study_instance_uid}/{key.series_instance_uid}/"
        f"{key.sop_instance_uid}.{sha256[:16]}.dcm"
    )


def _read_header(fp: BinaryIO) -> Dataset:
    try:
        ds = pydicom.dcmread(fp, stop_before_pixels=True)
    except InvalidDicomError:
        raise _Rejected(
            Status.CANNOT_UNDERSTAND, "not a DICOM Part 10 file (no DICM prefix or file meta)"
        ) from None
    except EOFError:
        raise _Rejected(Status.TRUNCATED_DATA_SET, "the data set ends early") from None
    except Exception as exc:
        # pydicom reports malformed input with many exception types; all mean the same.
        raise _Rejected(
            Status.CANNOT_UNDERSTAND, f"the data set cannot be parsed: {exc}"[:300]
        ) from None
    if "TransferSyntaxUID" not in ds.file_meta:
        raise _Rejected(Status.CANNOT_UNDERSTAND, "the file meta has no TransferSyntaxUID")
    try:
        # Parse every element now, so a malformed value fails here and not later.
        for elem in ds.iterall():
            _ = elem.value
    except Exception as exc:
        raise _Rejected(
            Status.CANNOT_UNDERSTAND, f"the data set cannot be parsed: {exc}"[:300]
        ) from None
    return ds


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
    except (TypeError, ValueError):
        return None


def _number_of_frames(ds: Dataset, frames: FrameTable | None) -> int:
    if frames is not None:
        return len(frames.frames)
    # Frames that cannot be located (deflated data sets): an image has Rows.
    return (_integer(ds, "NumberOfFrames") or 1) if "Rows" in ds else 0


def _pixel_element(ds: Dataset, frames: FrameTable | None) -> tuple[str, str] | None:
    """The (tag, VR) of the pixel data element the header parse stopped before."""
    keyword = frames.pixel_keyword if frames is not None else "PixelData"
    if frames is None and "Rows" not in ds:
        return None
    tag = _PIXEL_TAGS[keyword]
    if keyword != "PixelData":
        return tag, "OF" if keyword == "FloatPixelData" else "OD"
    encapsulated = frames.encapsulated if frames is not None else False
    if encapsulated or (_integer(ds, "BitsAllocated") or 16) <= 8:
        return tag, "OB"
    return tag, "OW"


def _frames_json(frames: FrameTable) -> bytes:
    return orjson.dumps(frames.to_json())
