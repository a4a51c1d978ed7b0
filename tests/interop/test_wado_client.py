"""WADO-RS through dicomweb-client against a real `dicomweb serve`."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.data import get_testdata_file
from pydicom.encaps import generate_frames

from tests.conftest import ServerProcess
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
