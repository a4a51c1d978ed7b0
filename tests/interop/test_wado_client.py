"""WADO-RS through dicomweb-client against a real `dicomweb serve`."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.data import get_testdata_file
from pydicom.encaps import generate_frames
from pydicom.uid import (
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)

from dicomweb.pixels.transcode import FrameInfo, decode_frame
from tests.conftest import ServerProcess, free_port
from tests.dicomfactory import ct_dataset, new_uid

pytestmark = pytest.mark.slow


def test_retrieves_through_dicomweb_client(server: ServerProcess) -> None:
    client = DICOMwebClient(url=f"{server.url}/dicomweb")
    study, series = new_uid(), new_uid()
    stored = [ct_dataset(study, series, instance_number=n, seed=n) for n in (2, 1, 3)]
    client.store_instances(stored)

    retrieved = client.retrieve_study(study)
    assert [ds.InstanceNumber for ds in retrieved] == [1, 2, 3]
    by_uid = {ds.SOPInstanceUID: ds for ds in stored}
    for ds in retrieved:
        assert ds.PixelData == by_uid[ds.SOPInstanceUID].PixelData
        assert ds.PatientName == "Doe^Jane"

    metadata = client.retrieve_series_metadata(study, series)
    assert [m["00200013"]["Value"][0] for m in metadata] == [1, 2, 3]
    for item in metadata:
        uri = item["7FE00010"]["BulkDataURI"]
        # dicomweb-client sends "Host: 127.0.0.1" without the port, and URIs follow the
        # Host header; the path is what the server made.
        path = urlsplit(uri).path
        assert path.endswith(f"/instances/{item['00080018']['Value'][0]}/bulkdata/7FE00010")
        [value] = client.retrieve_bulkdata(f"{server.url}{path}")
        assert value == by_uid[item["00080018"]["Value"][0]].PixelData


def test_frames_through_dicomweb_client(server: ServerProcess) -> None:
    client = DICOMwebClient(url=f"{server.url}/dicomweb")
    path = get_testdata_file("emri_small_jpeg_2k_lossless.dcm", download=False)
    assert path is not None
    ds = pydicom.dcmread(path)
    client.store_instances([pydicom.dcmread(Path(str(path)))])
    expected = list(generate_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames)))
    uids = (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)

    frames = client.retrieve_instance_frames(*uids, frame_numbers=[3, 1, 10])
    assert frames == [expected[2], expected[0], expected[9]]
    # As OHIF asks: application/octet-stream with transfer-syntax=*.
    frames = client.retrieve_instance_frames(
        *uids, frame_numbers=[2], media_types=(("application/octet-stream", "*"),)
    )
    assert frames == [expected[1]]
    frames = client.retrieve_instance_frames(
        *uids, frame_numbers=[5], media_types=(("image/jp2", ds.file_meta.TransferSyntaxUID),)
    )
    assert frames == [expected[4]]


def test_transcoded_frames_and_instances_through_dicomweb_client(server: ServerProcess) -> None:
    # dicomweb-client 0.61 knows no image/jphc, so HTJ2K frames are tested in process.
    client = DICOMwebClient(url=f"{server.url}/dicomweb")
    ds = ct_dataset(rows=64, columns=64)
    client.store_instances([ds])
    uids = (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    info = FrameInfo.from_dataset(ds)
    for media_type, syntax in (
        ("image/jls", JPEGLSLossless),
        ("image/jp2", JPEG2000Lossless),
        ("image/jpeg", JPEGLosslessSV1),
        ("image/dicom-rle", RLELossless),
        ("application/octet-stream", ExplicitVRLittleEndian),
    ):
        [frame] = client.retrieve_instance_frames(
            *uids, frame_numbers=[1], media_types=((media_type, syntax),)
        )
        assert (decode_frame(frame, syntax, info) == ds.pixel_array).all(), media_type
    instance = client.retrieve_instance(
        *uids, media_types=(("application/dicom", JPEG2000Lossless),)
    )
    assert instance.file_meta.TransferSyntaxUID == JPEG2000Lossless
    assert (instance.pixel_array == ds.pixel_array).all()


def test_serve_with_a_storage_syntax(tmp_path: Path, database_url: str) -> None:
    server = ServerProcess(
        tmp_path / "data",
        database_url,
        free_port(),
        extra_args=("--store-transfer-syntax", HTJ2KLossless),
    )
    server.start()
    try:
        client = DICOMwebClient(url=f"{server.url}/dicomweb")
        ds = ct_dataset(rows=64, columns=64)
        client.store_instances([ds])
        url = (
            f"{server.url}/dicomweb/studies/{ds.StudyInstanceUID}/series/"
            f"{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}/frames/1"
        )
        accept = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
        response = httpx.get(url, headers={"accept": accept})
        assert f"transfer-syntax={HTJ2KLossless}" in response.headers["content-type"]
        [retrieved] = client.retrieve_study(ds.StudyInstanceUID)
        assert retrieved.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert retrieved.PixelData == ds.PixelData
    finally:
        server.stop()
