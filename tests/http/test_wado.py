"""WADO-RS through the ASGI app: instances, metadata, frames, bulk data and pixel data."""

from __future__ import annotations

import io
import zipfile
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import httpx
import numpy as np
import pydicom
import pytest
from pydicom import Dataset
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate, generate_frames
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    JPEG2000,
    MPEG4HP41,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
)

from dicomweb.config import Config
from dicomweb.multipart import PartHeaders, parse_content_type, read_related
from tests.conftest import app_client
from tests.dicomfactory import CONTENT_TYPE, ct_dataset, multipart, new_uid, to_bytes

ROOT = "/dicomweb"
SERVICE = "http://testserver/dicomweb"
DICOM_MULTIPART = 'multipart/related; type="application/dicom"'
AS_STORED = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
OCTET = "application/octet-stream"

Part = tuple[dict[str, str], bytes]


def data_file(name: str) -> Path:
    """A file from pydicom's test files or the pydicom-data package (no download)."""
    path = get_testdata_file(name, download=False)
    assert path is not None, f"{name} is not installed"
    return Path(str(path))


async def store(client: httpx.AsyncClient, *instances: Dataset | bytes | Path) -> None:
    parts = [
        i.read_bytes() if isinstance(i, Path) else i if isinstance(i, bytes) else to_bytes(i)
        for i in instances
    ]
    response = await client.post(
        f"{ROOT}/studies",
        content=multipart(parts),
        headers={"content-type": CONTENT_TYPE, "accept": "application/dicom+json"},
    )
    assert response.status_code == 200, response.text


async def parts_of(response: httpx.Response) -> list[Part]:
    """The parts of a multipart/related response, read with the server's own parser."""
    media_type, params = parse_content_type(response.headers["content-type"])
    assert media_type == "multipart/related"

    async def body() -> AsyncIterator[bytes]:
        yield response.content

    parts: list[Part] = []
    headers: dict[str, str] = {}
    chunks: list[bytes] = []
    async for event in read_related(body(), params["boundary"]):
        if isinstance(event, PartHeaders):
            headers = {name.lower(): value for name, value in event.headers}
            chunks = []
        elif event is None:
            parts.append((headers, b"".join(chunks)))
        else:
            chunks.append(event)
    return parts


def instance_url(ds: Dataset) -> str:
    return (
        f"{ROOT}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}"
    )


def problem(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    detail: str = response.json()["detail"]
    return detail


def native_frames(ds: Dataset) -> list[bytes]:
    count = int(ds.get("NumberOfFrames") or 1)
    size = ds.Rows * ds.Columns * ds.SamplesPerPixel * ds.BitsAllocated // 8
    return [ds.PixelData[n * size : (n + 1) * size] for n in range(count)]


def stored_frames(ds: Dataset) -> list[bytes]:
    """Each frame's bytes as pydicom finds them in the file."""
    if ds.file_meta.TransferSyntaxUID.is_encapsulated:
        count = int(ds.get("NumberOfFrames") or 1)
        return list(generate_frames(ds.PixelData, number_of_frames=count))
    return native_frames(ds)


def study_of_two_series() -> tuple[str, list[Dataset]]:
    """A study whose series and instances were stored out of their numbering order."""
    study = new_uid()
    second, first = new_uid(), new_uid()
    datasets = []
    for series, series_number in ((second, 2), (first, 1)):
        for number in (3, 1, 2):
            ds = ct_dataset(study, series, instance_number=number, seed=number + series_number)
            ds.SeriesNumber = series_number
            datasets.append(ds)
    return study, datasets


def in_retrieve_order(datasets: Sequence[Dataset]) -> list[Dataset]:
    return sorted(datasets, key=lambda d: (d.SeriesNumber, d.InstanceNumber))


# Retrieve instances


async def test_retrieve_instance_is_byte_identical(client: httpx.AsyncClient) -> None:
    ds = ct_dataset()
    await store(client, ds)
    response = await client.get(instance_url(ds), headers={"accept": DICOM_MULTIPART})
    assert response.status_code == 200
    assert int(response.headers["content-length"]) == len(response.content)
    content_type = response.headers["content-type"]
    assert content_type.startswith(DICOM_MULTIPART)
    assert f"transfer-syntax={ExplicitVRLittleEndian}" in content_type
    [(headers, body)] = await parts_of(response)
    assert headers["content-type"] == f"application/dicom; transfer-syntax={ExplicitVRLittleEndian}"
    assert body == to_bytes(ds)


async def test_retrieve_study_and_series_in_order(client: httpx.AsyncClient) -> None:
    study, datasets = study_of_two_series()
    await store(client, *datasets)
    response = await client.get(f"{ROOT}/studies/{study}")
    assert response.status_code == 200
    bodies = [body for _, body in await parts_of(response)]
    assert bodies == [to_bytes(d) for d in in_retrieve_order(datasets)]

    series = datasets[0].SeriesInstanceUID
    response = await client.get(f"{ROOT}/studies/{study}/series/{series}")
    bodies = [body for _, body in await parts_of(response)]
    expected = [d for d in in_retrieve_order(datasets) if d.SeriesInstanceUID == series]
    assert bodies == [to_bytes(d) for d in expected]


async def test_retrieve_zip(client: httpx.AsyncClient) -> None:
    study, datasets = study_of_two_series()
    await store(client, *datasets)
    response = await client.get(f"{ROOT}/studies/{study}", headers={"accept": "application/zip"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/zip"
    assert response.headers["content-disposition"] == f'attachment; filename="{study}.zip"'
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        assert archive.testzip() is None
        names = archive.namelist()
        expected = in_retrieve_order(datasets)
        assert names == [f"{d.SeriesInstanceUID}/{d.SOPInstanceUID}.dcm" for d in expected]
        for name, ds in zip(names, expected, strict=True):
            assert archive.read(name) == to_bytes(ds)

    series = datasets[0].SeriesInstanceUID
    response = await client.get(
        f"{ROOT}/studies/{study}/series/{series}",
        headers={"accept": "application/zip; transfer-syntax=*"},
    )
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        assert len(archive.namelist()) == 3


@pytest.mark.parametrize(
    "accept",
    [
        None,
        "*/*",
        DICOM_MULTIPART,
        f"{DICOM_MULTIPART}; transfer-syntax=*",
        f"{DICOM_MULTIPART}; transfer-syntax={ExplicitVRLittleEndian}",
        "multipart/related; type=application/dicom",
        "application/zip;q=0.5, multipart/related; type=application/dicom",
        "image/png, */*;q=0.1",
    ],
)
async def test_accepted_retrieve_media_types(client: httpx.AsyncClient, accept: str | None) -> None:
    ds = ct_dataset()
    await store(client, ds)
    headers = {} if accept is None else {"accept": accept}
    response = await client.get(instance_url(ds), headers=headers)
    assert response.status_code == 200
    [(_, body)] = await parts_of(response)
    assert body == to_bytes(ds)


@pytest.mark.parametrize(
    ("accept", "says"),
    [
        (f"{DICOM_MULTIPART}; transfer-syntax={JPEG2000}", "Explicit VR Little Endian"),
        (f"{DICOM_MULTIPART}; transfer-syntax=foo", "an unknown transfer syntax (foo)"),
        ("application/dicom+json", "none of the accepted media types"),
        ("application/zip", "none of the accepted media types"),
        ('multipart/related; type="image/jpeg"', "none of the accepted media types"),
    ],
)
async def test_unacceptable_instance_retrieve(
    client: httpx.AsyncClient, accept: str, says: str
) -> None:
    ds = ct_dataset()
    await store(client, ds)
    detail = problem(await client.get(instance_url(ds), headers={"accept": accept}), 406)
    assert says in detail


async def test_lossy_instance_is_sent_as_stored_by_default(
    client: httpx.AsyncClient,
) -> None:
    # PS3.18 8.7.3: without a transfer-syntax, data held only in lossy compressed form
    # goes out as stored rather than decompressed.
    path = data_file("JPEG2000.dcm")  # JPEG 2000 with Lossy Image Compression "01"
    ds = pydicom.dcmread(path)
    assert ds.LossyImageCompression == "01"
    await store(client, path)
    for accept in (None, DICOM_MULTIPART, f"{DICOM_MULTIPART}; transfer-syntax=*"):
        headers = {} if accept is None else {"accept": accept}
        response = await client.get(instance_url(ds), headers=headers)
        [(part, body)] = await parts_of(response)
        assert part["content-type"] == f"application/dicom; transfer-syntax={JPEG2000}"
        assert body == path.read_bytes()
    # Asked for by name, it is decompressed.
    response = await client.get(
        instance_url(ds),
        headers={"accept": f"{DICOM_MULTIPART}; transfer-syntax={ExplicitVRLittleEndian}"},
    )
    [(part, body)] = await parts_of(response)
    decoded = pydicom.dcmread(io.BytesIO(body))
    assert decoded.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert np.array_equal(decoded.pixel_array, ds.pixel_array)


async def test_implicit_vr_instance_is_sent_in_explicit_vr(client: httpx.AsyncClient) -> None:
    # PS3.18 8.7.3: Implicit VR Little Endian is not used on the web.
    path = data_file("MR_small_implicit.dcm")
    ds = pydicom.dcmread(path)
    await store(client, path)
    for accept in (None, f"{DICOM_MULTIPART}; transfer-syntax=*"):
        headers = {} if accept is None else {"accept": accept}
        response = await client.get(instance_url(ds), headers=headers)
        [(part, body)] = await parts_of(response)
        assert (
            part["content-type"] == f"application/dicom; transfer-syntax={ExplicitVRLittleEndian}"
        )
        assert int(response.headers["content-length"]) == len(response.content)
        # The file meta names Explicit VR Little Endian, and the data set has VR fields:
        # its first element's tag is followed by its VR.
        meta_end = 144 + int.from_bytes(body[140:144], "little")
        syntax_element = b"\x10\x00UI\x14\x00" + ExplicitVRLittleEndian.encode() + b"\x00"
        assert syntax_element in body[:meta_end]
        first = next(iter(ds))
        tag = first.tag.group.to_bytes(2, "little") + first.tag.element.to_bytes(2, "little")
        assert body[meta_end : meta_end + 6] == tag + first.VR.encode()
        sent = pydicom.dcmread(io.BytesIO(body))
        assert sent.original_encoding == (False, True)  # explicit VR, little endian
        assert set(sent.keys()) == set(ds.keys())
        for elem in ds:
            assert sent[elem.tag].value == elem.value, elem.tag
    detail = problem(
        await client.get(
            instance_url(ds),
            headers={"accept": f"{DICOM_MULTIPART}; transfer-syntax=1.2.840.10008.1.2"},
        ),
        406,
    )
    assert "not used with web services" in detail
    # Frames are the same bytes in either little-endian syntax.
    response = await client.get(
        f"{instance_url(ds)}/frames/1",
        headers={"accept": 'multipart/related; type="application/octet-stream"'},
    )
    [(headers, frame)] = await parts_of(response)
    assert headers["content-type"] == f"{OCTET}; transfer-syntax={ExplicitVRLittleEndian}"
    assert frame == ds.PixelData


async def test_unknown_and_mismatched_resources(client: httpx.AsyncClient) -> None:
    ds = ct_dataset()
    other = ct_dataset()
    await store(client, ds, other)
    study, series, sop = ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID
    unknown = new_uid()
    not_found = [
        f"{ROOT}/studies/{unknown}",
        f"{ROOT}/studies/{study}/series/{unknown}",
        f"{ROOT}/studies/{study}/series/{other.SeriesInstanceUID}",
        f"{ROOT}/studies/{other.StudyInstanceUID}/series/{series}/instances/{sop}",
        f"{ROOT}/studies/{study}/series/{series}/instances/{other.SOPInstanceUID}",
        f"{ROOT}/studies/{unknown}/metadata",
        f"{ROOT}/studies/{study}/series/{unknown}/metadata",
        f"{ROOT}/studies/{study}/series/{other.SeriesInstanceUID}/instances/{sop}/metadata",
        f"{ROOT}/studies/{study}/series/{series}/instances/{unknown}/frames/1",
        f"{ROOT}/studies/{study}/series/{unknown}/instances/{sop}/frames/1",
        f"{ROOT}/studies/{study}/series/{series}/instances/{unknown}/bulkdata/7FE00010",
        f"{ROOT}/studies/{unknown}/pixeldata",
    ]
    for url in not_found:
        assert "there is no" in problem(await client.get(url), 404), url
    for url in (
        f"{ROOT}/studies/1.2.abc",
        f"{ROOT}/studies/{study}/series/1..2/metadata",
        f"{ROOT}/studies/{study}/series/{series}/instances/{'1' * 65}/frames/1",
        f"{ROOT}/studies/{study}/series/{series}/instances/x/bulkdata/7FE00010",
    ):
        assert "is not a valid UID" in problem(await client.get(url), 400), url


# Metadata


def attribute(item: dict[str, Any], tag: str) -> Any:
    return item[tag]["Value"][0]


async def test_metadata_matches_the_instance(client: httpx.AsyncClient) -> None:
    path = data_file("CT_small.dcm")
    ds = pydicom.dcmread(path)
    await store(client, path)
    response = await client.get(f"{instance_url(ds)}/metadata")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/dicom+json"
    [item] = response.json()
    assert attribute(item, "0020000D") == ds.StudyInstanceUID
    assert attribute(item, "00080018") == ds.SOPInstanceUID
    assert attribute(item, "00100010")["Alphabetic"] == str(ds.PatientName)
    assert attribute(item, "00280010") == ds.Rows
    assert item["00280030"]["Value"] == [float(v) for v in ds.PixelSpacing]
    base = f"{SERVICE}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
    uri = f"{base}/instances/{ds.SOPInstanceUID}/bulkdata"
    assert item["7FE00010"] == {"vr": "OW", "BulkDataURI": f"{uri}/7FE00010"}
    assert item["00431029"] == {"vr": "OB", "BulkDataURI": f"{uri}/00431029"}


def bulk_uris(item: Any) -> list[tuple[str, list[str]]]:
    """(BulkDataURI, keyword path) of every bulk value, nested ones too."""
    found: list[tuple[str, list[str]]] = []

    def walk(data: dict[str, Any], trail: list[str]) -> None:
        for tag, element in data.items():
            if "BulkDataURI" in element:
                found.append((element["BulkDataURI"], [*trail, tag]))
            for number, child in enumerate(element.get("Value", []), start=1):
                if element["vr"] == "SQ":
                    walk(child, [*trail, tag, str(number)])

    walk(item, [])
    return found


def value_at(ds: Dataset, trail: list[str]) -> bytes:
    current = ds
    for position in range(0, len(trail) - 1, 2):
        current = current[int(trail[position], 16)].value[int(trail[position + 1]) - 1]
    value: bytes = current[int(trail[-1], 16)].value
    return value


def with_nested_bulk_data() -> Dataset:
    ds = ct_dataset()
    icon = Dataset()
    icon.Rows, icon.Columns, icon.SamplesPerPixel = 64, 64, 1
    icon.BitsAllocated, icon.BitsStored, icon.HighBit = 8, 8, 7
    icon.PixelRepresentation, icon.PhotometricInterpretation = 0, "MONOCHROME2"
    icon.PixelData = bytes(range(256)) * 16
    ds.IconImageSequence = DicomSequence([icon])
    block = ds.private_block(0x0011, "DICOMWEB TEST", create=True)
    block.add_new(0x01, "OB", bytes(reversed(range(256))) * 8)
    return ds


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "nested"])
async def test_every_bulkdata_uri_resolves(client: httpx.AsyncClient, name: str) -> None:
    if name == "nested":
        ds = with_nested_bulk_data()
        await store(client, ds)
    else:
        ds = pydicom.dcmread(data_file(name))
        await store(client, data_file(name))
    [item] = (await client.get(f"{instance_url(ds)}/metadata")).json()
    uris = bulk_uris(item)
    assert len(uris) >= (3 if name == "nested" else 1)
    for uri, trail in uris:
        assert uri.startswith(SERVICE + "/")
        path = uri.removeprefix("http://testserver")
        single = await client.get(path, headers={"accept": OCTET})
        assert single.status_code == 200, single.text
        assert single.headers["content-type"] == OCTET
        assert single.content == value_at(ds, trail), trail
        [(headers, body)] = await parts_of(await client.get(path))
        assert headers["content-type"].startswith(OCTET)
        assert body == value_at(ds, trail)


async def test_series_and_study_metadata(client: httpx.AsyncClient) -> None:
    study, datasets = study_of_two_series()
    await store(client, *datasets)
    items = (await client.get(f"{ROOT}/studies/{study}/metadata")).json()
    assert [attribute(i, "00080018") for i in items] == [
        d.SOPInstanceUID for d in in_retrieve_order(datasets)
    ]
    series = datasets[0].SeriesInstanceUID
    items = (await client.get(f"{ROOT}/studies/{study}/series/{series}/metadata")).json()
    assert {attribute(i, "0020000E") for i in items} == {series}
    assert len(items) == 3


async def test_metadata_as_xml(client: httpx.AsyncClient) -> None:
    study, datasets = study_of_two_series()
    await store(client, *datasets)
    response = await client.get(
        f"{ROOT}/studies/{study}/metadata",
        headers={"accept": 'multipart/related; type="application/dicom+xml"'},
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(
        'multipart/related; type="application/dicom+xml"'
    )
    parts = await parts_of(response)
    expected = in_retrieve_order(datasets)
    assert len(parts) == len(expected)
    for (headers, body), ds in zip(parts, expected, strict=True):
        assert headers["content-type"] == "application/dicom+xml"
        root = ElementTree.fromstring(body)
        sop = root.find("DicomAttribute[@tag='00080018']/Value")
        assert sop is not None and sop.text == ds.SOPInstanceUID
        bulk = root.find("DicomAttribute[@tag='7FE00010']/BulkData")
        assert bulk is not None
        assert bulk.get("uri") == f"http://testserver{instance_url(ds)}/bulkdata/7FE00010"


async def test_metadata_etag(client: httpx.AsyncClient) -> None:
    study, series = new_uid(), new_uid()
    await store(client, ct_dataset(study, series, instance_number=1))
    url = f"{ROOT}/studies/{study}/series/{series}/metadata"
    first = await client.get(url)
    etag = first.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"')
    assert first.headers["vary"] == "Accept"
    for header in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        cached = await client.get(url, headers={"if-none-match": header})
        assert cached.status_code == 304, header
        assert cached.content == b""
        assert cached.headers["etag"] == etag
    assert (await client.get(url, headers={"if-none-match": '"other"'})).status_code == 200
    xml = await client.get(
        url, headers={"accept": 'multipart/related; type="application/dicom+xml"'}
    )
    assert xml.headers["etag"] != etag
    await store(client, ct_dataset(study, series, instance_number=2))
    changed = await client.get(url, headers={"if-none-match": etag})
    assert changed.status_code == 200
    assert changed.headers["etag"] != etag
    assert len(changed.json()) == 2


async def test_metadata_is_served_whole_from_the_cache_until_it_changes(
    client: httpx.AsyncClient,
) -> None:
    study, series = new_uid(), new_uid()
    first, second = (ct_dataset(study, series, instance_number=n) for n in (1, 2))
    await store(client, first, second)
    cache = client.app.state.metadata_cache  # type: ignore[attr-defined]
    url = f"{ROOT}/studies/{study}/series/{series}/metadata"
    miss = await client.get(url)
    hit = await client.get(url)
    assert (cache.misses, cache.hits) == (1, 1)
    assert hit.content == miss.content and hit.headers["etag"] == miss.headers["etag"]
    assert int(hit.headers["content-length"]) == len(hit.content)
    assert (
        await client.get(url, headers={"if-none-match": hit.headers["etag"]})
    ).status_code == 304
    head = await client.head(url)
    assert head.content == b"" and head.headers["content-length"] == hit.headers["content-length"]
    # The BulkDataURIs carry the service URL the request names.
    other_host = await client.get(url, headers={"host": "pacs.example.org"})
    assert b"http://pacs.example.org/dicomweb/studies/" in other_host.content
    assert b"http://testserver/" not in other_host.content
    # A new instance and a deleted one change what the cache answers.
    third = ct_dataset(study, series, instance_number=3)
    await store(client, third)
    assert len((await client.get(url)).json()) == 3
    response = await client.delete(
        f"{ROOT}/studies/{study}/series/{series}/instances/{first.SOPInstanceUID}"
    )
    assert response.status_code == 200
    items = (await client.get(url)).json()
    assert [attribute(i, "00080018") for i in items] == [
        second.SOPInstanceUID,
        third.SOPInstanceUID,
    ]
    study_items = (await client.get(f"{ROOT}/studies/{study}/metadata")).json()
    assert study_items == items
    await client.delete(f"{ROOT}/studies/{study}")
    assert (await client.get(url)).status_code == 404
    assert (await client.get(f"{ROOT}/studies/{study}/metadata")).status_code == 404


async def test_metadata_cache_of_one_process_sees_what_another_stored(
    client: httpx.AsyncClient, config: Config
) -> None:
    """Each process caches for itself; the version it checks lives in the index."""
    study, series = new_uid(), new_uid()
    await store(client, ct_dataset(study, series, instance_number=1))
    url = f"{ROOT}/studies/{study}/series/{series}/metadata"
    assert len((await client.get(url)).json()) == 1
    async for other in app_client(config):
        await store(other, ct_dataset(study, series, instance_number=2))
        assert len((await other.get(url)).json()) == 2
        assert len((await client.get(url)).json()) == 2
        gone = (await other.get(url)).json()[0]
        sop = attribute(gone, "00080018")
        deleted = await other.delete(f"{ROOT}/studies/{study}/series/{series}/instances/{sop}")
        assert deleted.status_code == 200
        await store(other, ct_dataset(study, series, instance_number=3))
        # Two instances again, but not the same two.
        items = (await client.get(url)).json()
        assert sop not in {attribute(i, "00080018") for i in items}
        assert len(items) == 2


# Frames


FRAME_FILES = [
    # name, stored transfer syntax, part media type
    ("MR_small.dcm", ExplicitVRLittleEndian, OCTET),
    ("emri_small.dcm", ExplicitVRLittleEndian, OCTET),
    ("liver.dcm", ExplicitVRLittleEndian, OCTET),
    ("emri_small_jpeg_2k_lossless.dcm", JPEG2000Lossless, "image/jp2"),
    ("JPEG2000.dcm", JPEG2000, "image/jp2"),
    ("SC_rgb_rle_2frame.dcm", RLELossless, "image/dicom-rle"),
    ("emri_small_RLE.dcm", RLELossless, "image/dicom-rle"),
    ("emri_small_jpeg_ls_lossless.dcm", "1.2.840.10008.1.2.4.80", "image/jls"),
    ("SC_rgb_jpeg_dcmtk.dcm", "1.2.840.10008.1.2.4.50", "image/jpeg"),
]


def odd_order(count: int) -> list[int]:
    """A frame list out of order and with repeats: 3,1,2,1 for three frames or more."""
    return [min(3, count), 1, min(2, count), 1, count]


@pytest.mark.parametrize(
    ("name", "syntax", "media_type"), FRAME_FILES, ids=[f[0] for f in FRAME_FILES]
)
async def test_frames_as_stored(
    client: httpx.AsyncClient, name: str, syntax: str, media_type: str
) -> None:
    path = data_file(name)
    ds = pydicom.dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == syntax
    await store(client, path)
    expected = stored_frames(ds)
    numbers = odd_order(len(expected))
    url = f"{instance_url(ds)}/frames/{','.join(map(str, numbers))}"
    for accept in (
        AS_STORED,
        f'multipart/related; type="{media_type}"',
        f'multipart/related; type="{media_type}"; transfer-syntax={syntax}',
        'multipart/related; type="*/*"',
        "*/*",
        None,
    ):
        response = await client.get(url, headers={} if accept is None else {"accept": accept})
        assert response.status_code == 200, (accept, response.text)
        assert f'type="{media_type}"' in response.headers["content-type"]
        parts = await parts_of(response)
        assert [body for _, body in parts] == [expected[n - 1] for n in numbers]
        for headers, _ in parts:
            assert headers["content-type"] == f"{media_type}; transfer-syntax={syntax}"


@pytest.mark.parametrize("name", ["emri_small_jpeg_2k_lossless.dcm", "SC_rgb_rle_2frame.dcm"])
async def test_compressed_frames_are_decompressed_for_native_requests(
    client: httpx.AsyncClient, name: str
) -> None:
    ds = pydicom.dcmread(data_file(name))
    await store(client, data_file(name))
    count = int(ds.get("NumberOfFrames") or 1)
    url = f"{instance_url(ds)}/frames/{count},1"
    expected = ds.pixel_array if count > 1 else ds.pixel_array[None]
    native = 'multipart/related; type="application/octet-stream"'
    for accept in (native, f"{native}; transfer-syntax={ExplicitVRLittleEndian}"):
        response = await client.get(url, headers={"accept": accept})
        parts = await parts_of(response)
        for headers, _ in parts:
            assert headers["content-type"] == f"{OCTET}; transfer-syntax={ExplicitVRLittleEndian}"
        frames = [body for _, body in parts]
        assert frames == [expected[count - 1].tobytes(), expected[0].tobytes()], accept


async def test_frame_list_errors(client: httpx.AsyncClient) -> None:
    path = data_file("emri_small.dcm")
    ds = pydicom.dcmread(path)
    await store(client, path)
    url = f"{instance_url(ds)}/frames"
    for frames in ("0", "1,0", "a", "1,,2", "-1", "1.5", "1;2", " "):
        assert "is not a frame list" in problem(await client.get(f"{url}/{frames}"), 400), frames
    assert "frame 11 does not exist" in problem(await client.get(f"{url}/1,11,12"), 404)
    assert (await client.get(f"{url}/10,1")).status_code == 200


async def test_frames_of_an_instance_without_pixel_data(client: httpx.AsyncClient) -> None:
    ds = ct_dataset()
    del ds.PixelData
    for keyword in ("Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit"):
        delattr(ds, keyword)
    await store(client, ds)
    assert "no pixel data" in problem(await client.get(f"{instance_url(ds)}/frames/1"), 404)
    assert "no pixel data" in problem(await client.get(f"{instance_url(ds)}/pixeldata"), 404)


async def test_big_endian_frames_are_sent_little_endian(client: httpx.AsyncClient) -> None:
    # Explicit VR Big Endian is not used on the web (PS3.18 8.7.3): frames are swapped.
    path = data_file("MR_small_bigendian.dcm")
    ds = pydicom.dcmread(path)
    await store(client, path)
    url = f"{instance_url(ds)}/frames/1"
    expected = ds.pixel_array.astype(ds.pixel_array.dtype.newbyteorder("<")).tobytes()
    for accept in (None, AS_STORED):
        response = await client.get(url, headers={} if accept is None else {"accept": accept})
        [(headers, body)] = await parts_of(response)
        assert headers["content-type"] == f"{OCTET}; transfer-syntax={ExplicitVRLittleEndian}"
        assert body == expected
    whole = await client.get(instance_url(ds))
    [(_, body)] = await parts_of(whole)
    sent = pydicom.dcmread(io.BytesIO(body))
    assert sent.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert np.array_equal(sent.pixel_array, ds.pixel_array)


async def test_deflated_instance_frames_and_pixel_data(client: httpx.AsyncClient) -> None:
    path = data_file("image_dfl.dcm")
    ds = pydicom.dcmread(path)
    await store(client, path)
    response = await client.get(f"{instance_url(ds)}/frames/1,1")
    assert [body for _, body in await parts_of(response)] == [ds.PixelData] * 2
    single = await client.get(f"{instance_url(ds)}/pixeldata", headers={"accept": OCTET})
    assert single.content == ds.PixelData


def one_bit_segmentation(rows: int, columns: int, frames: int) -> tuple[Dataset, list[bytes]]:
    """A multi-frame 1-bit instance whose frames start inside bytes, and each frame
    packed on its own."""
    ds = ct_dataset(rows=rows, columns=columns)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 1, 1, 0
    ds.NumberOfFrames = frames
    rng = np.random.default_rng(7)
    bits = rng.integers(0, 2, size=rows * columns * frames, dtype=np.uint8)
    packed = np.packbits(bits, bitorder="little").tobytes()
    ds.PixelData = packed + b"\0" * (len(packed) % 2)
    ds["PixelData"].VR = "OB"
    size = rows * columns
    expected = [
        np.packbits(bits[n * size : (n + 1) * size], bitorder="little").tobytes()
        for n in range(frames)
    ]
    return ds, expected


async def test_one_bit_frames_are_repacked(client: httpx.AsyncClient) -> None:
    ds, expected = one_bit_segmentation(5, 5, 3)
    await store(client, ds)
    response = await client.get(f"{instance_url(ds)}/frames/2,3,1")
    assert [body for _, body in await parts_of(response)] == [expected[1], expected[2], expected[0]]


# Pixel data and bulk data


async def test_instance_pixel_data(client: httpx.AsyncClient) -> None:
    native = data_file("SC_rgb_small_odd.dcm")
    compressed = data_file("emri_small_jpeg_2k_lossless.dcm")
    await store(client, native, compressed)
    ds = pydicom.dcmread(native)
    # The odd-length value keeps its padding byte, as pydicom reads it.
    for url in (f"{instance_url(ds)}/pixeldata", f"{instance_url(ds)}/bulkdata/7FE00010"):
        [(headers, body)] = await parts_of(await client.get(url))
        assert headers["content-type"] == f"{OCTET}; transfer-syntax={ExplicitVRLittleEndian}"
        assert body == ds.PixelData
        assert len(body) % 2 == 0
    ds = pydicom.dcmread(compressed)
    native_only = 'multipart/related; type="application/octet-stream"'
    for url in (f"{instance_url(ds)}/pixeldata", f"{instance_url(ds)}/bulkdata/7FE00010"):
        # Decompressed: all frames as one native value.
        [(headers, body)] = await parts_of(await client.get(url, headers={"accept": native_only}))
        assert headers["content-type"] == f"{OCTET}; transfer-syntax={ExplicitVRLittleEndian}"
        assert body == ds.pixel_array.tobytes()
        single = await client.get(url, headers={"accept": OCTET})
        assert single.content == ds.pixel_array.tobytes()
        assert single.headers["content-length"] == str(len(single.content))
        response = await client.get(url, headers={"accept": AS_STORED})
        parts = await parts_of(response)
        assert [body for _, body in parts] == stored_frames(ds)
        assert {h["content-type"] for h, _ in parts} == {
            f"image/jp2; transfer-syntax={JPEG2000Lossless}"
        }
        single = await client.get(url, headers={"accept": f"{OCTET}; transfer-syntax=*"})
        assert "10 frames" in problem(single, 406)


async def test_study_pixel_data(client: httpx.AsyncClient) -> None:
    study, datasets = study_of_two_series()
    await store(client, *datasets)
    response = await client.get(f"{ROOT}/studies/{study}/pixeldata")
    parts = await parts_of(response)
    expected = in_retrieve_order(datasets)
    assert [body for _, body in parts] == [d.PixelData for d in expected]
    assert [h["content-location"] for h, _ in parts] == [
        f"http://testserver{instance_url(d)}/pixeldata" for d in expected
    ]
    series = datasets[0].SeriesInstanceUID
    response = await client.get(f"{ROOT}/studies/{study}/series/{series}/pixeldata")
    assert len(await parts_of(response)) == 3


async def test_bulkdata_errors(client: httpx.AsyncClient) -> None:
    ds = ct_dataset()
    await store(client, ds)
    url = f"{instance_url(ds)}/bulkdata"
    for path in ("7FE0", "7FE00010/1", "7FE00010/0/00100010", "zz000010", "7FE00010/x/7FE00010"):
        assert "is not a bulk data path" in problem(await client.get(f"{url}/{path}"), 400), path
    assert "no bulk data at 00100010" in problem(await client.get(f"{url}/00100010"), 404)
    detail = problem(await client.get(f"{url}/7FE00010", headers={"accept": "image/png"}), 406)
    assert "offered" in detail
    lower = await client.get(f"{url}/7fe00010", headers={"accept": OCTET})
    assert lower.content == ds.PixelData


# Ranges


async def bulk(client: httpx.AsyncClient, ds: Dataset, **headers: str) -> httpx.Response:
    sent = {"accept": OCTET} | {name.replace("_", "-"): v for name, v in headers.items()}
    return await client.get(f"{instance_url(ds)}/bulkdata/7FE00010", headers=sent)


async def test_ranges(client: httpx.AsyncClient) -> None:
    ds = ct_dataset(rows=32, columns=32)
    await store(client, ds)
    value = ds.PixelData
    size = len(value)
    whole = await bulk(client, ds)
    assert whole.status_code == 200
    assert whole.headers["accept-ranges"] == "bytes"
    assert whole.content == value
    cases = {
        "bytes=0-99": (0, 100),
        "bytes=100-": (100, size),
        "bytes=-500": (size - 500, size),
        f"bytes=-{size + 10}": (0, size),
        f"bytes=10-{size + 100}": (10, size),
        f"bytes={size - 1}-{size - 1}": (size - 1, size),
        "BYTES=5-9": (5, 10),
    }
    for header, (start, stop) in cases.items():
        response = await bulk(client, ds, range=header)
        assert response.status_code == 206, header
        assert response.headers["content-range"] == f"bytes {start}-{stop - 1}/{size}"
        assert response.headers["content-length"] == str(stop - start)
        assert response.content == value[start:stop], header
    for header in (f"bytes={size}-", f"bytes={size + 5}-{size + 10}", "bytes=-0"):
        response = await bulk(client, ds, range=header)
        assert problem(response, 416)
        assert response.headers["content-range"] == f"bytes */{size}"
    for header in ("bytes=0-1,5-6", "bytes=abc", "items=0-1", "bytes=9-5", "bytes=-", "bytes=1"):
        response = await bulk(client, ds, range=header)
        assert response.status_code == 200, header
        assert response.content == value
    stale = await bulk(client, ds, range="bytes=0-9", if_range='"old"')
    assert stale.status_code == 200
    assert stale.content == value


async def test_head_sends_headers_only(client: httpx.AsyncClient) -> None:
    ds = ct_dataset()
    await store(client, ds)
    response = await client.head(instance_url(ds))
    assert response.status_code == 200
    assert response.content == b""
    assert int(response.headers["content-length"]) > len(to_bytes(ds))
    response = await client.head(f"{instance_url(ds)}/metadata")
    assert response.status_code == 200
    assert response.headers["etag"]


async def test_video_pixel_data_is_one_stream(client: httpx.AsyncClient) -> None:
    ds = ct_dataset(rows=16, columns=16)
    ds.file_meta.TransferSyntaxUID = MPEG4HP41
    ds.NumberOfFrames = 4
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    stream = b"\x00\x00\x00\x01" + bytes(range(256)) * 5
    ds.PixelData = encapsulate([stream[:600], stream[600:]])
    ds["PixelData"].VR = "OB"
    await store(client, ds)
    response = await client.get(f"{instance_url(ds)}/pixeldata")
    [(headers, body)] = await parts_of(response)
    assert headers["content-type"] == f"video/mp4; transfer-syntax={MPEG4HP41}"
    assert body == stream
    assert "video stream" in problem(await client.get(f"{instance_url(ds)}/frames/1"), 400)


async def test_frames_of_several_fragments(client: httpx.AsyncClient) -> None:
    source = pydicom.dcmread(data_file("emri_small_jpeg_2k_lossless.dcm"))
    frames = stored_frames(source)
    source.PixelData = encapsulate(frames, fragments_per_frame=3, has_bot=True)
    source.SOPInstanceUID = new_uid()
    source.file_meta.MediaStorageSOPInstanceUID = source.SOPInstanceUID
    await store(client, source)
    response = await client.get(f"{instance_url(source)}/frames/4,2,4")
    assert [body for _, body in await parts_of(response)] == [frames[3], frames[1], frames[3]]
