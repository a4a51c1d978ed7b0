"""DICOM test data made with pydicom: small CT instances and multipart bodies."""

from __future__ import annotations

import io
import uuid
from collections.abc import Sequence

import numpy as np
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

BOUNDARY = "dicomweb-test-boundary"
CONTENT_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'


def new_uid() -> str:
    return generate_uid(prefix="1.2.826.0.1.3680043.8.498.")


def ct_dataset(
    study: str | None = None,
    series: str | None = None,
    sop: str | None = None,
    *,
    rows: int = 16,
    columns: int = 16,
    patient_id: str = "PAT-1",
    patient_name: str = "Doe^Jane",
    modality: str = "CT",
    instance_number: int = 1,
    seed: int = 0,
) -> Dataset:
    """A valid CT Image Storage instance with pseudo-random 16-bit pixels."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = sop or new_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study or new_uid()
    ds.SeriesInstanceUID = series or new_uid()
    ds.PatientID = patient_id
    ds.PatientName = patient_name
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "F"
    ds.StudyDate = "20260102"
    ds.StudyTime = "101500"
    ds.AccessionNumber = "ACC1"
    ds.StudyID = "1"
    ds.StudyDescription = "Chest"
    ds.ReferringPhysicianName = "House^Gregory"
    ds.Modality = modality
    ds.SeriesNumber = 1
    ds.SeriesDescription = "Axial"
    ds.InstanceNumber = instance_number
    ds.FrameOfReferenceUID = "1.2.3.4"
    ds.ImagePositionPatient = [0, 0, instance_number]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [0.5, 0.5]
    ds.Rows = rows
    ds.Columns = columns
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    rng = np.random.default_rng(seed)
    ds.PixelData = rng.integers(0, 4096, size=(rows, columns), dtype=np.uint16).tobytes()
    return ds


def to_bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def ct_instance(**kwargs: object) -> bytes:
    """A CT instance as Part 10 bytes."""
    return to_bytes(ct_dataset(**kwargs))  # type: ignore[arg-type]


def multipart(
    parts: Sequence[bytes],
    *,
    boundary: str = BOUNDARY,
    content_type: str | None = "application/dicom",
) -> bytes:
    """A multipart/related body with one part per item."""
    out = bytearray()
    for part in parts:
        out += f"--{boundary}\r\n".encode()
        if content_type is not None:
            out += f"Content-Type: {content_type}\r\n".encode()
        out += b"\r\n" + part + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out)


def random_boundary() -> str:
    return uuid.uuid4().hex
