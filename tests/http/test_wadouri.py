"""WADO-URI (PS3.18 chapter 9) at /wado."""

from __future__ import annotations

import io
from urllib.parse import urlencode

import httpx
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom import Dataset
from pydicom.uid import ExplicitVRLittleEndian, HTJ2KLossless, JPEGBaseline8Bit

from tests.dicomfactory import ct_dataset, new_uid, to_bytes
from tests.http.test_wado import data_file, problem, store


def wado(ds: Dataset, **params: str) -> str:
    query = {
        "requestType": "WADO",
        "studyUID": ds.StudyInstanceUID,
        "seriesUID": ds.SeriesInstanceUID,
        "objectUID": ds.SOPInstanceUID,
        **params,
    }
    return f"/wado?{urlencode(query)}"


async def test_dicom_as_stored_is_byte_identical(client: httpx.AsyncClient) -> None:
    ds = ct_dataset()
    await store(client, ds)
    response = await client.get(wado(ds, contentType="application/dicom"))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/dicom"
    assert response.headers["content-length"] == str(len(response.content))
    assert response.content == to_bytes(ds)
    head = await client.head(wado(ds, contentType="application/dicom"))
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(to_bytes(ds)))


async def test_dicom_transcoded(client: httpx.AsyncClient) -> None:
    ds = ct_dataset(rows=64, columns=64)
    await store(client, ds)
    response = await client.get(
        wado(ds, contentType="application/dicom", transferSyntax=HTJ2KLossless)
    )
    assert response.status_code == 200, response.text
    sent = pydicom.dcmread(io.BytesIO(response.content))
    assert sent.file_meta.TransferSyntaxUID == HTJ2KLossless
    assert np.array_equal(sent.pixel_array, ds.pixel_array)


async def test_dicom_default_syntax(client: httpx.AsyncClient) -> None:
    # Implicit VR and lossless compressed data: Explicit VR Little Endian (PS3.18 9.4.2.4).
    for name in ("MR_small_implicit.dcm", "emri_small_RLE.dcm"):
        path = data_file(name)
        ds = pydicom.dcmread(path)
        await store(client, path)
        response = await client.get(wado(ds, contentType="application/dicom"))
        sent = pydicom.dcmread(io.BytesIO(response.content))
        assert sent.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian, name
        assert np.array_equal(sent.pixel_array, ds.pixel_array)
    # Lossy compressed data goes out as stored unless a syntax is named (PS3.18 8.7.3.4).
    path = data_file("SC_rgb_jpeg_dcmtk.dcm")
    ds = pydicom.dcmread(path)
    await store(client, path)
    response = await client.get(wado(ds, contentType="application/dicom"))
    assert response.content == path.read_bytes()
    named = await client.get(
        wado(ds, contentType="application/dicom", transferSyntax=ExplicitVRLittleEndian)
    )
    assert pydicom.dcmread(io.BytesIO(named.content)).file_meta.TransferSyntaxUID == (
        ExplicitVRLittleEndian
    )


async def test_jpeg_rendering(client: httpx.AsyncClient) -> None:
    path = data_file("emri_small.dcm")  # 10 frames of 64 x 64
    ds = pydicom.dcmread(path)
    await store(client, path)
    # image/jpeg is the default for images.
    for url in (wado(ds), wado(ds, contentType="image/jpeg", frameNumber="10")):
        response = await client.get(url)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "image/jpeg"
        image = Image.open(io.BytesIO(response.content))
        assert image.format == "JPEG" and image.size == (64, 64)
    response = await client.get(
        wado(
            ds,
            contentType="image/jpeg",
            rows="32",
            columns="32",
            windowCenter="600",
            windowWidth="1200",
            imageQuality="50",
        )
    )
    image = Image.open(io.BytesIO(response.content))
    assert image.size == (32, 32)
    path = data_file("SC_rgb_jpeg_dcmtk.dcm")
    colour = pydicom.dcmread(path)
    await store(client, path)
    image = Image.open(io.BytesIO((await client.get(wado(colour))).content))
    assert (image.mode, image.size) == ("RGB", (100, 100))


@pytest.mark.parametrize(
    ("params", "status", "says"),
    [
        ({"requestType": None}, 400, "requestType must be WADO"),
        ({"requestType": "WADO-RS"}, 400, "requestType must be WADO"),
        ({"objectUID": None}, 400, "objectUID parameter is required"),
        ({"seriesUID": "1.2.x"}, 400, "is not a valid UID"),
        ({"objectUID": "unknown"}, 404, "there is no instance"),
        ({"frameNumber": "2"}, 404, "frame 2 does not exist"),
        ({"frameNumber": "0"}, 400, "frameNumber must be a positive integer"),
        ({"windowCenter": "40"}, 400, "must be given together"),
        ({"windowCenter": "a", "windowWidth": "1"}, 400, "must be numbers"),
        ({"windowCenter": "1", "windowWidth": "0"}, 400, "windowWidth must be a positive"),
        ({"imageQuality": "101"}, 400, "imageQuality must be 1 to 100"),
        ({"transferSyntax": ExplicitVRLittleEndian}, 400, "transferSyntax applies to"),
        ({"contentType": "application/dicom", "rows": "5"}, 400, "rows applies to rendered"),
        ({"contentType": "application/dicom", "transferSyntax": "1.2.3.4"}, 406, "unknown"),
        ({"contentType": "application/dicom", "transferSyntax": "x"}, 400, "not a valid UID"),
        (
            {"contentType": "application/dicom", "transferSyntax": JPEGBaseline8Bit},
            406,
            "JPEG Baseline (Process 1) cannot encode",
        ),
        ({"contentType": "text/html"}, 406, "this server sends application/dicom"),
    ],
)
async def test_errors(
    client: httpx.AsyncClient, params: dict[str, str | None], status: int, says: str
) -> None:
    ds = ct_dataset()
    await store(client, ds)
    query = {
        "requestType": "WADO",
        "studyUID": ds.StudyInstanceUID,
        "seriesUID": ds.SeriesInstanceUID,
        "objectUID": ds.SOPInstanceUID,
        "contentType": "image/jpeg",
    }
    for name, value in params.items():
        if value is None:
            del query[name]
        else:
            query[name] = new_uid() if value == "unknown" else value
    assert says in problem(await client.get(f"/wado?{urlencode(query)}"), status)


async def test_instance_without_pixel_data(client: httpx.AsyncClient) -> None:
    path = data_file("rtplan.dcm")
    ds = pydicom.dcmread(path)
    await store(client, path)
    # Without contentType, a non-image is sent as DICOM.
    response = await client.get(wado(ds))
    assert response.headers["content-type"] == "application/dicom"
    assert pydicom.dcmread(io.BytesIO(response.content)).SOPInstanceUID == ds.SOPInstanceUID
    assert "no pixel data" in problem(await client.get(wado(ds, contentType="image/jpeg")), 406)
