"""Retrieve Rendered and thumbnails through the ASGI app (rendered.py)."""

from __future__ import annotations

import dataclasses
import io
import math

import httpx
import numpy as np
import pydicom
import pytest
from numpy.typing import NDArray
from PIL import Image, ImageSequence
from pydicom import Dataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import generate_uid

from dicomweb.config import Config
from dicomweb.rendercache import RenderCache
from dicomweb.rendered import Renderer
from tests.conftest import app_client
from tests.dicomfactory import ct_dataset, new_uid
from tests.http.test_wado import ROOT, data_file, instance_url, problem, store

ANY = {"accept": "*/*"}


def picture(response: httpx.Response, media_type: str = "image/jpeg") -> Image.Image:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == media_type
    image = Image.open(io.BytesIO(response.content))
    assert image.format == media_type.split("/")[1].upper()
    return image


def frame_count(image: Image.Image) -> int:
    return sum(1 for _ in ImageSequence.Iterator(image))


def pixels(response: httpx.Response) -> NDArray[np.uint8]:
    return np.asarray(picture(response, "image/png"))


def ct_series(count: int, *, rows: int = 32, columns: int = 64) -> list[Dataset]:
    study, series = new_uid(), new_uid()
    return [
        ct_dataset(study, series, instance_number=n, rows=rows, columns=columns, seed=n)
        for n in range(1, count + 1)
    ]


def multiframe(frames: int = 4, rows: int = 16, columns: int = 16) -> Dataset:
    ds = ct_dataset(rows=rows, columns=columns)
    ds.NumberOfFrames = frames
    stack = np.stack([np.full((rows, columns), 500 * n, dtype=np.uint16) for n in range(frames)])
    ds.PixelData = stack.tobytes()
    return ds


def series_url(ds: Dataset) -> str:
    return f"{ROOT}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"


def renderer(client: httpx.AsyncClient) -> Renderer:
    found: Renderer = client.app.state.renderer  # type: ignore[attr-defined]
    return found


# Media types


@pytest.mark.parametrize(
    ("headers", "query", "media_type"),
    [
        ({}, "", "image/jpeg"),
        (ANY, "", "image/jpeg"),
        ({"accept": "image/png"}, "", "image/png"),
        ({"accept": "image/gif"}, "", "image/gif"),
        ({"accept": "image/*"}, "", "image/jpeg"),
        ({"accept": "image/webp, image/png;q=0.5"}, "", "image/png"),
        ({"accept": "image/jpeg;q=0, */*"}, "", "image/png"),
        (ANY, "?accept=image%2Fpng", "image/png"),  # the parameter wins over the header
        ({"accept": "image/gif"}, "?accept=image/jpeg", "image/jpeg"),
    ],
)
async def test_rendered_instance_media_types(
    client: httpx.AsyncClient, headers: dict[str, str], query: str, media_type: str
) -> None:
    ds = ct_dataset(rows=24, columns=40)
    await store(client, ds)
    response = await client.get(f"{instance_url(ds)}/rendered{query}", headers=headers)
    assert picture(response, media_type).size == (40, 24)
    assert response.headers["cache-control"] == "private, max-age=86400"
    assert response.headers["etag"].startswith('"')


async def test_unacceptable_media_types(client: httpx.AsyncClient) -> None:
    ds = ct_dataset()
    await store(client, ds)
    for accept in ("application/dicom", "image/webp", "text/html"):
        response = await client.get(f"{instance_url(ds)}/rendered", headers={"accept": accept})
        assert "image/jpeg" in problem(response, 406)


async def test_instance_without_pixel_data_is_not_rendered(client: httpx.AsyncClient) -> None:
    ds = ct_dataset()
    for keyword in ("PixelData", "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit"):
        delattr(ds, keyword)
    await store(client, ds)
    response = await client.get(f"{instance_url(ds)}/rendered")
    assert "no pixel data" in problem(response, 406)


# Pixels through HTTP


async def test_window_preset_and_rescale(client: httpx.AsyncClient) -> None:
    ds = ct_dataset(rows=1, columns=4)
    ds.PixelData = np.array([[0, 1024, 1064, 2048]], dtype=np.uint16).tobytes()
    ds.BitsStored = 16
    ds.HighBit = 15
    await store(client, ds)
    url = f"{instance_url(ds)}/rendered?accept=image/png"
    # HU -1024, 0, 40, 1024 through LINEAR_EXACT 40/400
    exact = await client.get(f"{url}&window=40,400,linear-exact")
    assert pixels(exact).tolist() == [[0, 102, 128, 255]]
    # lung: LINEAR -600/1500; 0 HU -> ((0 + 600.5) / 1499 + 0.5) * 255 = 229.65
    lung = await client.get(f"{url}&window=lung")
    assert pixels(lung).tolist() == [[55, 230, 236, 255]]
    assert (await client.get(f"{url}&preset=lung")).content == lung.content
    assert (await client.get(f"{url}&window=-600,1500,LINEAR")).content == lung.content


async def test_instance_window_is_the_default(client: httpx.AsyncClient) -> None:
    ds = ct_dataset(rows=1, columns=3)
    ds.PixelData = np.array([[1024, 1064, 1104]], dtype=np.uint16).tobytes()
    ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = 40, 80, "LINEAR_EXACT"
    await store(client, ds)
    response = await client.get(f"{instance_url(ds)}/rendered", headers={"accept": "image/png"})
    assert pixels(response).tolist() == [[0, 128, 255]]


async def test_viewport_scales_and_flips(client: httpx.AsyncClient) -> None:
    ds = ct_dataset(rows=20, columns=40)
    await store(client, ds)
    url = f"{instance_url(ds)}/rendered?accept=image/png"
    assert pixels(await client.get(f"{url}&viewport=80,80")).shape == (40, 80)
    assert pixels(await client.get(f"{url}&viewport=10,10")).shape == (5, 10)
    whole = pixels(await client.get(url))
    mirrored = pixels(await client.get(f"{url}&viewport=40,20,0,0,-40,"))
    assert np.array_equal(mirrored, whole[:, ::-1])
    turned = pixels(await client.get(f"{url}&viewport=40,20,,,-40,-20"))
    assert np.array_equal(turned, whole[::-1, ::-1])
    part = pixels(await client.get(f"{url}&viewport=10,5,5,10,10,5"))
    assert np.array_equal(part, whole[10:15, 5:15])


async def test_quality_and_annotation(client: httpx.AsyncClient) -> None:
    ds = ct_dataset(rows=128, columns=128)
    await store(client, ds)
    url = f"{instance_url(ds)}/rendered"
    default = await client.get(url)
    low = await client.get(f"{url}?quality=10")
    assert len(low.content) < len(default.content)
    plain = pixels(await client.get(f"{url}?accept=image/png"))
    annotated = await client.get(f"{url}?accept=image/png&annotation=patient,technique")
    assert not np.array_equal(pixels(annotated), plain)
    assert annotated.headers["etag"] != default.headers["etag"]


# Each is a 400: malformed, out of range, unknown or repeated.
PARAMETER_ERRORS = (
    "window=abc",
    "window=40",
    "window=40,0",
    "window=40,400,cubic",
    "window=1,2,3,4",
    "window=nowhere",
    "preset=lung&window=40,400",
    "window=40,400&window=50,400",
    "viewport=0,10",
    "viewport=10",
    "viewport=10,10,1,1,0,5",
    "viewport=100000,100",
    "viewport=a,b",
    "viewport=10,10,-1,0,,",
    "viewport=10,10,500,0,,",
    "quality=0",
    "quality=101",
    "quality=high",
    "annotation=weather",
    "overlays=maybe",
)


async def test_parameter_errors(client: httpx.AsyncClient) -> None:
    ds = ct_dataset()
    await store(client, ds)
    for query in PARAMETER_ERRORS:
        response = await client.get(f"{instance_url(ds)}/rendered?{query}")
        assert response.status_code == 400, query
        problem(response, 400)


# Multi-frame images and frames


async def test_multiframe_instance(client: httpx.AsyncClient) -> None:
    ds = multiframe(4)
    await store(client, ds)
    url = f"{instance_url(ds)}/rendered"
    animation = picture(await client.get(url), "image/gif")
    assert frame_count(animation) == 4
    first = picture(await client.get(url, headers={"accept": "image/jpeg"}))
    assert first.size == (16, 16)


async def test_rendered_frames(client: httpx.AsyncClient) -> None:
    ds = multiframe(4)
    await store(client, ds)
    base = instance_url(ds)
    # frame 3 holds 1000, -24 HU: LINEAR 0/2000 gives ((-24 + 0.5) / 1999 + 0.5) * 255
    one = pixels(await client.get(f"{base}/frames/3/rendered?accept=image/png&window=0,2000"))
    assert one.shape == (16, 16)
    assert np.unique(one).tolist() == [math.floor(((-24 + 0.5) / 1999 + 0.5) * 255 + 0.5)]
    two = picture(await client.get(f"{base}/frames/4,1/rendered"), "image/gif")
    assert frame_count(two) == 2
    response = await client.get(f"{base}/frames/1,2/rendered", headers={"accept": "image/jpeg"})
    assert "animated GIF" in problem(response, 406)
    problem(await client.get(f"{base}/frames/9/rendered"), 404)
    problem(await client.get(f"{base}/frames/0/rendered"), 400)


async def test_animation_limits(config: Config) -> None:
    small = dataclasses.replace(config, render_max_frames=3)
    async for client in app_client(small):
        ds = multiframe(4)
        await store(client, ds)
        response = await client.get(f"{instance_url(ds)}/rendered")
        assert "more than 3" in problem(response, 413)
        ok = await client.get(f"{instance_url(ds)}/frames/1,2,3/rendered")
        assert frame_count(picture(ok, "image/gif")) == 3


# Study and series: the representative image


async def test_rendered_study_and_series_show_the_representative_image(
    client: httpx.AsyncClient,
) -> None:
    study = new_uid()
    first, second = new_uid(), new_uid()
    datasets = []
    # series numbered 2 stored first; the first series (number 1) has 3 instances
    for series, number, count in ((second, 2, 2), (first, 1, 3)):
        for instance in (3, 1, 2)[:count]:
            ds = ct_dataset(study, series, instance_number=instance, seed=10 * number + instance)
            ds.SeriesNumber = number
            datasets.append(ds)
    await store(client, *datasets)
    middle = next(d for d in datasets if d.SeriesInstanceUID == first and d.InstanceNumber == 2)
    expected = (await client.get(f"{instance_url(middle)}/rendered?accept=image/png")).content
    study_url = f"{ROOT}/studies/{study}"
    response = await client.get(f"{study_url}/rendered?accept=image/png")
    assert response.content == expected
    assert response.headers["cache-control"] == "private, no-cache"
    # series 2 holds instances 1 and 3: the middle of two is the second
    series_middle = next(
        d for d in datasets if d.SeriesInstanceUID == second and d.InstanceNumber == 3
    )
    of_series = await client.get(f"{study_url}/series/{second}/rendered?accept=image/png")
    of_instance = await client.get(f"{instance_url(series_middle)}/rendered?accept=image/png")
    assert of_series.content == of_instance.content
    problem(await client.get(f"{ROOT}/studies/{new_uid()}/rendered"), 404)
    problem(await client.get(f"{study_url}/series/{new_uid()}/rendered"), 404)
    problem(await client.get(f"{ROOT}/studies/1.2.x/rendered"), 400)


# Thumbnails


async def test_thumbnails_at_each_level(client: httpx.AsyncClient) -> None:
    datasets = ct_series(3, rows=32, columns=64)
    frames = multiframe(5, rows=40, columns=20)
    frames.StudyInstanceUID = datasets[0].StudyInstanceUID
    frames.SeriesInstanceUID = datasets[0].SeriesInstanceUID
    frames.InstanceNumber = 9
    await store(client, *datasets, frames)
    study_url = f"{ROOT}/studies/{datasets[0].StudyInstanceUID}"
    for url, size in (
        (f"{study_url}/thumbnail", (128, 64)),
        (f"{series_url(datasets[0])}/thumbnail", (128, 64)),
        (f"{instance_url(datasets[0])}/thumbnail", (128, 64)),
        (f"{instance_url(frames)}/thumbnail", (64, 128)),
        (f"{instance_url(frames)}/frames/2/thumbnail", (64, 128)),
        (f"{instance_url(datasets[0])}/thumbnail?viewport=32,32", (32, 16)),
    ):
        response = await client.get(url, headers=ANY)
        assert picture(response).size == size, url
    # the series has four images: the representative is the third (Instance Number 3)
    series = await client.get(f"{series_url(datasets[0])}/thumbnail?accept=image/png")
    third = await client.get(f"{instance_url(datasets[2])}/thumbnail?accept=image/png")
    assert series.content == third.content
    # an instance's thumbnail is its middle frame
    middle = await client.get(f"{instance_url(frames)}/thumbnail?accept=image/png")
    frame3 = await client.get(f"{instance_url(frames)}/frames/3/thumbnail?accept=image/png")
    assert middle.content == frame3.content
    # thumbnails carry no patient information: annotation is ignored
    url = f"{instance_url(frames)}/thumbnail?accept=image/png&annotation=patient"
    assert (await client.get(url)).content == middle.content


# Caching


async def test_etag_and_cache(client: httpx.AsyncClient, config: Config) -> None:
    ds = ct_dataset()
    await store(client, ds)
    url = f"{instance_url(ds)}/rendered?window=40,400"
    first = await client.get(url)
    cache = renderer(client).cache
    assert (cache.misses, cache.hits) == (1, 0)
    again = await client.get(url)
    assert again.content == first.content
    assert (cache.misses, cache.hits) == (1, 1)
    etag = first.headers["etag"]
    assert again.headers["etag"] == etag
    not_modified = await client.get(url, headers={"if-none-match": etag})
    assert not_modified.status_code == 304
    assert not_modified.content == b""
    assert (cache.misses, cache.hits) == (1, 1)  # answered without the cache
    other = await client.get(f"{instance_url(ds)}/rendered?window=50,400")
    assert other.headers["etag"] != etag
    # the disk keeps what the memory holds, for other processes and restarts
    directory = config.data_dir / "cache" / "rendered"
    assert len(list(directory.glob("*/*"))) == 2
    [path] = [p for p in directory.glob("*/*") if p.name.startswith(etag.strip('"'))]
    fresh = RenderCache(directory, 1 << 20, 1 << 20)
    assert await fresh.get(path.name) == first.content
    assert (fresh.disk_hits, fresh.misses) == (1, 0)


async def test_oversize_images_are_refused(config: Config) -> None:
    small = dataclasses.replace(config, render_max_pixels=1000)
    async for client in app_client(small):
        ds = ct_dataset(rows=40, columns=40)
        await store(client, ds)
        response = await client.get(f"{instance_url(ds)}/rendered")
        assert "past the limit of 1000" in problem(response, 413)
        response = await client.get(f"{instance_url(ds)}/thumbnail")
        problem(response, 413)


async def test_decompression_bomb_is_not_decoded(client: httpx.AsyncClient) -> None:
    ds = pydicom.dcmread(data_file("SC_rgb_jpeg_dcmtk.dcm"))
    frame = bytearray(next(generate_frames(ds.PixelData, number_of_frames=1)))
    sof = frame.index(b"\xff\xc0") + 5
    frame[sof : sof + 4] = (60000).to_bytes(2, "big") * 2
    ds.PixelData = encapsulate([bytes(frame)])
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    await store(client, ds)
    response = await client.get(f"{instance_url(ds)}/rendered")
    assert "declares 60000 x 60000" in problem(response, 400)


# Files pydicom ships


@pytest.mark.parametrize(
    ("name", "size"),
    [
        ("CT_small.dcm", (128, 128)),
        ("MR_small.dcm", (64, 64)),
        ("MR_small_bigendian.dcm", (64, 64)),
        ("MR_small_RLE.dcm", (64, 64)),
        ("MR_small_jp2klossless.dcm", (64, 64)),
        ("SC_rgb_rle.dcm", (100, 100)),
        ("SC_rgb_jpeg_dcmtk.dcm", (100, 100)),
        ("US1_UNCR.dcm", (640, 480)),
        ("examples_palette.dcm", (800, 350)),
    ],
)
async def test_pydicom_files(client: httpx.AsyncClient, name: str, size: tuple[int, int]) -> None:
    path = data_file(name)
    await store(client, path)
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    response = await client.get(f"{instance_url(ds)}/rendered", headers={"accept": "image/png"})
    assert picture(response, "image/png").size == size


async def test_big_endian_renders_as_little_endian(client: httpx.AsyncClient) -> None:
    await store(client, data_file("MR_small_bigendian.dcm"))
    little = pydicom.dcmread(data_file("MR_small.dcm"))
    little.SOPInstanceUID = little.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    await store(client, little)
    big = pydicom.dcmread(data_file("MR_small_bigendian.dcm"), stop_before_pixels=True)
    png = {"accept": "image/png"}
    expected = await client.get(f"{instance_url(little)}/rendered", headers=png)
    response = await client.get(f"{instance_url(big)}/rendered", headers=png)
    assert np.array_equal(pixels(response), pixels(expected))


async def test_overlays_from_bulk_data(client: httpx.AsyncClient) -> None:
    path = data_file("examples_overlay.dcm")
    await store(client, path)
    ds = pydicom.dcmread(path)
    url = f"{instance_url(ds)}/rendered?accept=image/png"
    plain = pixels(await client.get(url))
    burned = pixels(await client.get(f"{url}&overlays=true"))
    mask = ds.overlay_array(0x6000).astype(bool)
    assert (burned[mask] == 255).all()
    assert np.array_equal(burned[~mask], plain[~mask])


async def test_palette_lut_from_bulk_data(client: httpx.AsyncClient) -> None:
    # 4096 16-bit entries (8 KiB) are a BulkDataURI in the stored metadata
    ds = ct_dataset(rows=2, columns=2)
    ds.PhotometricInterpretation = "PALETTE COLOR"
    del ds.RescaleIntercept, ds.RescaleSlope
    ds.PixelData = np.array([[0, 1000], [2000, 4095]], dtype=np.uint16).tobytes()
    ramp = (np.arange(4096, dtype=np.uint16) * 16).tobytes()
    for colour in ("Red", "Green", "Blue"):
        setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [4096, 0, 16])
        setattr(ds, f"{colour}PaletteColorLookupTableData", ramp)
    await store(client, ds)
    response = await client.get(f"{instance_url(ds)}/rendered", headers={"accept": "image/png"})
    # entry v * 16 of 65535, in 8 bits: floor(v * 16 * 255 / 65535 + 0.5)
    expected = [[round(v * 16 * 255 / 65535) for v in r] for r in ((0, 1000), (2000, 4095))]
    assert pixels(response)[..., 0].tolist() == expected
