"""Sample data: a synthetic CT volume written as PS3.10 files, one study per transfer syntax.

`dicomweb sample DIR` writes them and `dicomweb import DIR` stores them, so a new
server has something to show in the viewer. The volume is a phantom of simple shapes
in Hounsfield units (body, lungs, heart, aorta, spine) with a little noise, on a
regular grid with a Frame of Reference, so that multiplanar reconstruction works.

Compressed studies are encoded with the server's own transcoding module
(`pixels/transcode.py`), the code that serves transcoded frames.

UIDs derive from the parameters (pydicom's `generate_uid` with entropy sources), so
generating and importing the same sample twice stores each instance once.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import (
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    JPEG2000Lossless,
    generate_uid,
)

__all__ = ["SYNTAXES", "SampleSyntax", "write_sample"]


@dataclass(frozen=True, slots=True)
class SampleSyntax:
    """A transfer syntax the sample can be written in, by a short name."""

    name: str
    uid: str
    title: str


SYNTAXES: Final = {
    s.name: s
    for s in (
        SampleSyntax("explicit", ExplicitVRLittleEndian, "Explicit VR Little Endian"),
        SampleSyntax("jpeg2000", JPEG2000Lossless, "JPEG 2000 Lossless"),
        SampleSyntax("htj2k", HTJ2KLossless, "HTJ2K Lossless"),
    )
}

_FIELD_OF_VIEW_MM: Final = 360.0
_SLICE_SPACING_MM: Final = 1.0
_INTERCEPT: Final = -1024
_MAX_STORED: Final = 4095  # 12 bits stored


def _ellipse(
    x: NDArray[np.float32],
    y: NDArray[np.float32],
    centre: tuple[float, float],
    semi: tuple[float, float],
) -> NDArray[np.bool_]:
    return ((x - centre[0]) / semi[0]) ** 2 + ((y - centre[1]) / semi[1]) ** 2 <= 1.0


def phantom_slice(
    z: float, length: float, x: NDArray[np.float32], y: NDArray[np.float32], seed: int
) -> NDArray[np.int16]:
    """Hounsfield units of the axial slice at `z` mm of a trunk `length` mm long.

    `x` and `y` are the patient coordinates (mm) of each pixel. Organs are ellipsoids
    whose cross sections shrink towards their ends, so the coronal and sagittal planes
    of a reconstruction show their shapes.
    """
    t = z / length  # 0 (feet end) to 1 (head end)
    hu = np.full(x.shape, -1000, dtype=np.int16)
    body = _ellipse(x, y, (0, 0), (165 - 20 * t, 115 - 10 * t))
    hu[body] = -90  # subcutaneous fat
    hu[_ellipse(x, y, (0, 0), (150 - 20 * t, 100 - 10 * t))] = 40  # soft tissue
    lung_extent = max(0.0, 1 - ((t - 0.65) / 0.45) ** 2)
    if lung_extent:
        scale = np.sqrt(lung_extent)
        for side in (-1, 1):
            hu[_ellipse(x, y, (side * 70, -5), (50 * scale, 70 * scale))] = -850
    heart_extent = max(0.0, 1 - ((t - 0.45) / 0.15) ** 2)
    if heart_extent:
        scale = np.sqrt(heart_extent)
        hu[_ellipse(x, y, (15, -25), (48 * scale, 40 * scale))] = 45
        hu[_ellipse(x, y, (25, -25), (20 * scale, 16 * scale))] = 250  # contrast
    hu[_ellipse(x, y, (22, 42), (13, 13))] = 280  # descending aorta
    hu[_ellipse(x, y, (0, 62), (22, 17))] = 650  # vertebral body
    hu[_ellipse(x, y, (0, 85), (8, 7))] = 20  # spinal canal
    rng = np.random.default_rng(seed)
    noise = (rng.standard_normal(x.shape, dtype=np.float32) * 6).astype(np.int16)
    return np.where(body, hu + noise, hu).astype(np.int16)


def _uid(*parts: object) -> UID:
    return generate_uid(entropy_srcs=["dicomweb-sample", *map(str, parts)])


def _dataset(
    syntax: SampleSyntax, index: int, slices: int, size: int, hu: NDArray[np.int16]
) -> Dataset:
    study = _uid("study", syntax.name, slices, size)
    spacing = _FIELD_OF_VIEW_MM / size
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = _uid("instance", syntax.name, slices, size, index)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = _uid("series", syntax.name, slices, size)
    ds.FrameOfReferenceUID = _uid("frame-of-reference", syntax.name, slices, size)
    ds.PatientName = "Sample^Phantom"
    ds.PatientID = "DICOMWEB-SAMPLE"
    ds.PatientBirthDate = "19800101"
    ds.PatientSex = "O"
    ds.StudyDate = "20250101"
    ds.StudyTime = "120000"
    ds.SeriesDate = "20250101"
    ds.SeriesTime = "120000"
    ds.AccessionNumber = f"SAMPLE-{syntax.name.upper()}"
    ds.StudyID = "1"
    ds.StudyDescription = f"Sample CT phantom ({syntax.title})"
    ds.ReferringPhysicianName = ""
    ds.Modality = "CT"
    ds.Manufacturer = "dicomweb sample"
    ds.BodyPartExamined = "CHEST"
    ds.SeriesNumber = 1
    ds.SeriesDescription = f"Axial {slices} x {size}x{size} ({syntax.title})"
    ds.InstanceNumber = index + 1
    ds.PatientPosition = "HFS"
    # Slices run from the feet up, so that z grows with the instance number.
    z = index * _SLICE_SPACING_MM
    # The position is the centre of the first pixel (PS3.3 C.7.6.2.1.1).
    corner = -_FIELD_OF_VIEW_MM / 2 + spacing / 2
    ds.ImagePositionPatient = [corner, corner, z]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SliceLocation = z
    ds.SliceThickness = _SLICE_SPACING_MM
    ds.PixelSpacing = [spacing, spacing]
    ds.KVP = 120
    ds.Rows = size
    ds.Columns = size
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = _INTERCEPT
    ds.RescaleSlope = 1
    ds.RescaleType = "HU"
    ds.WindowCenter = 40
    ds.WindowWidth = 400
    stored = np.clip(hu.astype(np.int32) - _INTERCEPT, 0, _MAX_STORED).astype("<u2")
    ds.PixelData = stored.tobytes()
    return ds


def _encoded(ds: Dataset, syntax: SampleSyntax) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    raw = buffer.getvalue()
    if syntax.uid == ExplicitVRLittleEndian:
        return raw
    # Imported here: the codec table loads every codec library, which the command
    # line should not pay for when it only lists the sample's syntaxes.
    from dicomweb.pixels.transcode import transcode_instance

    return transcode_instance(raw, syntax.uid)


def write_sample(
    directory: Path,
    *,
    slices: int = 100,
    size: int = 256,
    syntaxes: Sequence[str] = tuple(SYNTAXES),
    jobs: int = 2,
    progress: Callable[[int], Any] | None = None,
) -> list[Path]:
    """Write one study per transfer syntax named in `syntaxes`, each one series of
    `slices` axial CT slices of `size` x `size` pixels; return the files written.

    Files go to `directory/<syntax>/<n>.dcm`. Encoding runs in `jobs` threads (the
    codecs release the GIL); `progress` is called with the number of files done.
    """
    if slices < 1 or not 32 <= size <= 2048:
        raise ValueError("slices must be at least 1 and size between 32 and 2048")
    chosen = [SYNTAXES[name] for name in syntaxes]
    centres = (np.arange(size, dtype=np.float32) + 0.5) * (_FIELD_OF_VIEW_MM / size)
    x, y = np.meshgrid(centres - _FIELD_OF_VIEW_MM / 2, centres - _FIELD_OF_VIEW_MM / 2)
    length = slices * _SLICE_SPACING_MM

    def write(job: tuple[SampleSyntax, int]) -> Path:
        syntax, index = job
        hu = phantom_slice(index * _SLICE_SPACING_MM, length, x, y, seed=index)
        path = directory / syntax.name / f"{index + 1:04d}.dcm"
        path.write_bytes(_encoded(_dataset(syntax, index, slices, size, hu), syntax))
        return path

    for syntax in chosen:
        (directory / syntax.name).mkdir(parents=True, exist_ok=True)
    jobs_list = [(syntax, index) for syntax in chosen for index in range(slices)]
    written: list[Path] = []
    with ThreadPoolExecutor(max(1, jobs)) as pool:
        for path in pool.map(write, jobs_list):
            written.append(path)
            if progress is not None:
                progress(len(written))
    return written
