"""Transcoding through HTTP: instances and frames in every syntax, q-values, refusals,
the lossy exception, storage in one syntax and the frame cache."""

from __future__ import annotations

import dataclasses
import io
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pydicom
import pytest
from numpy.typing import NDArray
from pydicom import Dataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)

from dicomweb.app import create_app
from dicomweb.config import Config
from dicomweb.pixels.transcode import FrameInfo, decode_frame
from dicomweb.transcoding import Transcoder
from tests.dicomfactory import ct_dataset, to_bytes
from tests.http.test_wado import (
    AS_STORED,
    DICOM_MULTIPART,
    OCTET,
    data_file,
    instance_url,
    parts_of,
    problem,
    store,
)

# Every lossless syntax this server writes, and the frame media type of each.
LOSSLESS = [
    pytest.param(ExplicitVRLittleEndian, OCTET, id="explicit"),
    pytest.param(DeflatedExplicitVRLittleEndian, OCTET, id="deflated"),
    pytest.param(RLELossless, "image/dicom-rle", id="rle"),
    pytest.param(JPEGLossless, "image/jpeg", id="jpeg-p14"),
    pytest.param(JPEGLosslessSV1, "image/jpeg", id="jpeg-sv1"),
    pytest.param(JPEGLSLossless, "image/jls", id="jpeg-ls"),
    pytest.param(JPEG2000Lossless, "image/jp2", id="j2k"),
    pytest.param(HTJ2KLossless, "image/jphc", id="htj2k"),
    pytest.param(HTJ2KLosslessRPCL, "image/jphc", id="htj2k-rpcl"),
]


def ct_64(**kwargs: Any) -> Dataset:
    return ct_dataset(rows=64, columns=64, **kwargs)


def read(body: bytes) -> Dataset:
    return pydicom.dcmread(io.BytesIO(body))


def frames_of(ds: Dataset) -> NDArray[Any]:
    """The decoded frames of `ds`, frames first."""
    pixels = ds.pixel_array
    return pixels if int(ds.get("NumberOfFrames") or 1) > 1 else pixels[None]


def transcoder(client: httpx.AsyncClient) -> Transcoder:
    found: Transcoder = client.app.state.transcoder  # type: ignore[attr-defined]
    return found


@pytest.mark.parametrize(("syntax", "media_type"), LOSSLESS)
@pytest.mark.parametrize("source", ["ct", "rgb"])
async def test_native_instance_round_trips_through_every_lossless_syntax(
    client: httpx.AsyncClient, source: str, syntax: str, media_type: str
) -> None:
    ds = ct_64() if source == "ct" else pydicom.dcmread(data_file("SC_rgb.dcm"))
    await store(client, to_bytes(ds) if source == "ct" else data_file("SC_rgb.dcm"))
    expected = ds.pixel_array

    response = await client.get(
        instance_url(ds), headers={"accept": f"{DICOM_MULTIPART}; transfer-syntax={syntax}"}
    )
    assert response.status_code == 200, response.text
    [(headers, body)] = await parts_of(response)
    assert headers["content-type"] == f"application/dicom; transfer-syntax={syntax}"
    sent = read(body)
    assert sent.file_meta.TransferSyntaxUID == syntax
    assert sent.SOPInstanceUID == ds.SOPInstanceUID
    assert np.array_equal(sent.pixel_array, expected)

    # The same frame through /frames, in the syntax's frame media type.
    accept = f'multipart/related; type="{media_type}"; transfer-syntax={syntax}'
    response = await client.get(f"{instance_url(ds)}/frames/1", headers={"accept": accept})
    [(headers, frame)] = await parts_of(response)
    assert headers["content-type"] == f"{media_type}; transfer-syntax={syntax}"
    info = FrameInfo.from_dataset(sent)
    assert np.array_equal(decode_frame(frame, syntax, info), expected)


COMPRESSED_LOSSLESS = [
    "emri_small_jpeg_2k_lossless.dcm",
    "emri_small_RLE.dcm",
    "emri_small_jpeg_ls_lossless.dcm",
    "SC_rgb_rle_2frame.dcm",
    "JPGLosslessP14SV1_1s_1f_8b.dcm",
    "693_J2KR.dcm",
]


@pytest.mark.parametrize("name", COMPRESSED_LOSSLESS)
async def test_compressed_instance_is_decompressed_by_default(
    client: httpx.AsyncClient, name: str
) -> None:
    path = data_file(name)
    ds = pydicom.dcmread(path)
    await store(client, path)
    for accept in (None, DICOM_MULTIPART):
        headers = {} if accept is None else {"accept": accept}
        response = await client.get(instance_url(ds), headers=headers)
        assert response.status_code == 200, response.text
        assert f"transfer-syntax={ExplicitVRLittleEndian}" in response.headers["content-type"]
        [(_, body)] = await parts_of(response)
        sent = read(body)
        assert sent.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert np.array_equal(sent.pixel_array, ds.pixel_array)
        assert int(response.headers["content-length"]) == len(response.content)


async def test_study_with_mixed_syntaxes_streams_each_in_the_default(
    client: httpx.AsyncClient,
) -> None:
    rle = pydicom.dcmread(data_file("emri_small_RLE.dcm"))
    native = ct_64(study=rle.StudyInstanceUID)
    await store(client, data_file("emri_small_RLE.dcm"), native)
    response = await client.get(f"{instance_url(rle).split('/series')[0]}")
    assert response.status_code == 200
    assert "content-length" not in response.headers  # transcoded parts: length unknown
    parts = await parts_of(response)
    assert {h["content-type"] for h, _ in parts} == {
        f"application/dicom; transfer-syntax={ExplicitVRLittleEndian}"
    }
    by_uid = {read(b).SOPInstanceUID: read(b) for _, b in parts}
    assert np.array_equal(by_uid[rle.SOPInstanceUID].pixel_array, rle.pixel_array)
    assert by_uid[native.SOPInstanceUID].PixelData == native.PixelData
    # The zip holds the same files.
    response = await client.get(
        f"{instance_url(rle).split('/series')[0]}", headers={"accept": "application/zip"}
    )
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        assert archive.testzip() is None
        members = {
            read(archive.read(n)).SOPInstanceUID: read(archive.read(n)) for n in archive.namelist()
        }
    assert members.keys() == by_uid.keys()
    for uid, member in members.items():
        assert member.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert member.PixelData == by_uid[uid].PixelData


FRAME_MEDIA_TYPES = [
    # media type (without transfer-syntax: its default), the syntax sent
    (OCTET, ExplicitVRLittleEndian),
    ("image/jpeg", JPEGLosslessSV1),
    ("image/jls", JPEGLSLossless),
    ("image/jp2", JPEG2000Lossless),
    ("image/jphc", HTJ2KLossless),
    ("image/dicom-rle", RLELossless),
]


@pytest.mark.parametrize(("media_type", "syntax"), FRAME_MEDIA_TYPES)
async def test_frames_of_a_multiframe_compressed_instance_in_each_media_type(
    client: httpx.AsyncClient, media_type: str, syntax: str
) -> None:
    path = data_file("emri_small_jpeg_2k_lossless.dcm")  # 10 frames, 12 bits in 16
    ds = pydicom.dcmread(path)
    await store(client, path)
    expected = frames_of(ds)
    info = FrameInfo.from_dataset(ds)
    for accept in (
        f'multipart/related; type="{media_type}"',
        f'multipart/related; type="{media_type}"; transfer-syntax={syntax}',
    ):
        response = await client.get(f"{instance_url(ds)}/frames/3,10,1", headers={"accept": accept})
        assert response.status_code == 200, response.text
        assert f'type="{media_type}"' in response.headers["content-type"]
        parts = await parts_of(response)
        assert [h["content-type"] for h, _ in parts] == [
            f"{media_type}; transfer-syntax={syntax}"
        ] * 3
        for (_, frame), number in zip(parts, (3, 10, 1), strict=True):
            assert np.array_equal(decode_frame(frame, syntax, info), expected[number - 1])


async def test_q_values_choose_between_transcoding_and_as_stored(
    client: httpx.AsyncClient,
) -> None:
    ds = ct_64()
    await store(client, ds)
    frame = f"{instance_url(ds)}/frames/1"
    htj2k = f'multipart/related; type="image/jphc"; transfer-syntax={HTJ2KLossless}'
    cases = {
        f"{htj2k}, {AS_STORED};q=0.5": HTJ2KLossless,
        f"{htj2k};q=0.5, {AS_STORED}": ExplicitVRLittleEndian,
        f"{htj2k}, {AS_STORED}": ExplicitVRLittleEndian,  # equal: no work wins
        # Baseline JPEG cannot hold 12-bit data: the next preference is taken.
        f'multipart/related; type="image/jpeg"; transfer-syntax={JPEGBaseline8Bit}, '
        f'multipart/related; type="image/dicom-rle";q=0.3': RLELossless,
    }
    for accept, syntax in cases.items():
        response = await client.get(frame, headers={"accept": accept})
        assert response.status_code == 200, (accept, response.text)
        [(headers, _)] = await parts_of(response)
        assert headers["content-type"].endswith(f"transfer-syntax={syntax}"), accept


@pytest.mark.parametrize(
    ("path", "accept", "says"),
    [
        (
            "/frames/1",
            f'multipart/related; type="image/jpeg"; transfer-syntax={JPEGBaseline8Bit}',
            "JPEG Baseline (Process 1) cannot encode MONOCHROME2 pixels with 1 sample(s), 16",
        ),
        ("/frames/1", f"{AS_STORED[:-1]}1.2.3.4", "an unknown transfer syntax (1.2.3.4)"),
        ("", f"{DICOM_MULTIPART}; transfer-syntax=1.2.3.4", "an unknown transfer syntax"),
        ("", f"{DICOM_MULTIPART}; transfer-syntax=1.2.840.10008.1.2.2", "not used with web"),
        ("/frames/1", 'multipart/related; type="image/jpx"', "cannot produce it"),
        ("/frames/1", 'multipart/related; type="video/mp4"', "cannot produce it"),
        ("/frames/1", "image/png", "none of the accepted media types"),
    ],
)
async def test_not_acceptable(client: httpx.AsyncClient, path: str, accept: str, says: str) -> None:
    ds = ct_64()
    await store(client, ds)
    response = await client.get(f"{instance_url(ds)}{path}", headers={"accept": accept})
    assert says in problem(response, 406)


async def test_lossy_frames_are_sent_as_stored_unless_native_is_named(
    client: httpx.AsyncClient,
) -> None:
    path = data_file("SC_rgb_jpeg_dcmtk.dcm")  # JPEG baseline: lossy
    ds = pydicom.dcmread(path)
    await store(client, path)
    url = f"{instance_url(ds)}/frames/1"
    octet = 'multipart/related; type="application/octet-stream"'
    [(headers, frame)] = await parts_of(await client.get(url, headers={"accept": octet}))
    assert headers["content-type"] == f"image/jpeg; transfer-syntax={JPEGBaseline8Bit}"
    [stored_frame] = list(pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=1))
    assert frame == stored_frame
    named = f"{octet}; transfer-syntax={ExplicitVRLittleEndian}"
    [(headers, frame)] = await parts_of(await client.get(url, headers={"accept": named}))
    assert headers["content-type"] == f"{OCTET}; transfer-syntax={ExplicitVRLittleEndian}"
    assert frame == ds.pixel_array.tobytes()  # RGB, as pydicom decodes it


async def test_transcoded_frames_are_cached(client: httpx.AsyncClient) -> None:
    path = data_file("emri_small_jpeg_2k_lossless.dcm")
    ds = pydicom.dcmread(path)
    await store(client, path)
    cache = transcoder(client).cache
    url = f"{instance_url(ds)}/frames/2"
    accept = {"accept": 'multipart/related; type="application/octet-stream"'}
    hits, misses = cache.hits, cache.misses
    first = await client.get(url, headers=accept)
    assert (cache.hits, cache.misses) == (hits, misses + 1)
    second = await client.get(url, headers=accept)
    assert (cache.hits, cache.misses) == (hits + 1, misses + 1)
    assert second.status_code == 200
    assert (await parts_of(first))[0][1] == (await parts_of(second))[0][1]
    assert len(cache) == 1 and cache.size == 64 * 64 * 2
    # Another target syntax is another entry.
    await client.get(url, headers={"accept": 'multipart/related; type="image/jphc"'})
    assert len(cache) == 2


@pytest.fixture
async def htj2k_client(config: Config) -> AsyncIterator[httpx.AsyncClient]:
    """A server that stores new instances as HTJ2K lossless."""
    app = create_app(dataclasses.replace(config, store_transfer_syntax=HTJ2KLossless))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            c.app = app  # type: ignore[attr-defined]
            yield c


async def test_store_transfer_syntax_stores_htj2k(htj2k_client: httpx.AsyncClient) -> None:
    client = htj2k_client
    ds = ct_64()
    await store(client, ds)
    as_stored = await client.get(
        instance_url(ds), headers={"accept": f"{DICOM_MULTIPART}; transfer-syntax=*"}
    )
    [(headers, body)] = await parts_of(as_stored)
    assert headers["content-type"] == f"application/dicom; transfer-syntax={HTJ2KLossless}"
    stored = read(body)
    assert stored.file_meta.TransferSyntaxUID == HTJ2KLossless
    assert np.array_equal(stored.pixel_array, ds.pixel_array)

    default = await client.get(instance_url(ds))
    [(headers, body)] = await parts_of(default)
    assert headers["content-type"] == f"application/dicom; transfer-syntax={ExplicitVRLittleEndian}"
    sent = read(body)
    assert sent.PixelData == ds.PixelData  # pixel-identical to what was sent in
    assert sent.SOPInstanceUID == ds.SOPInstanceUID

    [(headers, _)] = await parts_of(
        await client.get(f"{instance_url(ds)}/frames/1", headers={"accept": AS_STORED})
    )
    assert headers["content-type"] == f"image/jphc; transfer-syntax={HTJ2KLossless}"
    # Storing the same instance again is a duplicate, not a conflict: encoding is stable.
    await store(client, ds)


@pytest.mark.parametrize("kind", ["one-bit", "lossy-jpeg", "no-pixels"])
async def test_instances_the_storage_syntax_cannot_hold_are_stored_as_received(
    htj2k_client: httpx.AsyncClient, kind: str
) -> None:
    client = htj2k_client
    if kind == "one-bit":
        ds = ct_64()
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 1, 1, 0
        ds.PixelData = bytes(64 * 64 // 8)
        ds["PixelData"].VR = "OB"
        raw: bytes | Path = to_bytes(ds)
    elif kind == "lossy-jpeg":
        raw = data_file("SC_rgb_jpeg_dcmtk.dcm")
        ds = pydicom.dcmread(raw)
    else:
        raw = data_file("rtplan.dcm")
        ds = pydicom.dcmread(raw)
    await store(client, raw)  # succeeds (200)
    response = await client.get(
        instance_url(ds), headers={"accept": f"{DICOM_MULTIPART}; transfer-syntax=*"}
    )
    [(_, body)] = await parts_of(response)
    received = raw.read_bytes() if isinstance(raw, Path) else raw
    if kind == "no-pixels":
        # Received in Implicit VR: kept so, and sent in Explicit VR.
        assert read(body).file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    else:
        assert body == received
