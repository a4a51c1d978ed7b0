"""STOW-RS through the ASGI app: responses, statuses, stored bytes and bad input."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any
from xml.etree import ElementTree

import httpx
import orjson
import pytest
from pydicom.uid import CTImageStorage

from dicomweb.config import Config
from dicomweb.index import Index
from dicomweb.storage import FilesystemBlobStore
from tests.conftest import app_client
from tests.dicomfactory import (
    BOUNDARY,
    CONTENT_TYPE,
    ct_dataset,
    ct_instance,
    multipart,
    new_uid,
    to_bytes,
)

FAILED = "00081198"
REFERENCED = "00081199"
RETRIEVE_URL = "00081190"
FAILURE_REASON = "00081197"
SOP_INSTANCE = "00081155"


async def stow(
    client: httpx.AsyncClient, body: bytes, *, study: str | None = None, **headers: str
) -> httpx.Response:
    url = "/dicomweb/studies" + (f"/{study}" if study else "")
    sent = {"content-type": CONTENT_TYPE, "accept": "application/dicom+json"}
    sent.update({k.replace("_", "-"): v for k, v in headers.items()})
    return await client.post(url, content=body, headers=sent)


def failures(response: httpx.Response) -> list[tuple[str | None, int]]:
    items = response.json().get(FAILED, {}).get("Value", [])
    return [
        (item[SOP_INSTANCE].get("Value", [None])[0], item[FAILURE_REASON]["Value"][0])
        for item in items
    ]


def referenced(response: httpx.Response) -> list[dict[str, Any]]:
    return list(response.json().get(REFERENCED, {}).get("Value", []))


def state(client: httpx.AsyncClient) -> Any:
    return client.app.state  # type: ignore[attr-defined]


async def stored_bytes(client: httpx.AsyncClient, sop: str) -> bytes:
    index: Index = state(client).index
    blobs: FilesystemBlobStore = state(client).blobs
    stored = await index.get_instance(sop)
    assert stored is not None
    return blobs.blob_path(stored.blob_key).read_bytes()


async def test_store_one_instance(client: httpx.AsyncClient) -> None:
    ds = ct_dataset()
    data = to_bytes(ds)
    response = await stow(client, multipart([data]))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/dicom+json"
    [item] = referenced(response)
    assert item["00081150"]["Value"] == [CTImageStorage]
    assert item[SOP_INSTANCE]["Value"] == [ds.SOPInstanceUID]
    assert item[RETRIEVE_URL]["Value"] == [
        f"http://testserver/dicomweb/studies/{ds.StudyInstanceUID}"
        f"/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
    ]
    assert response.json()[RETRIEVE_URL]["Value"] == [
        f"http://testserver/dicomweb/studies/{ds.StudyInstanceUID}"
    ]
    assert FAILED not in response.json()
    assert await stored_bytes(client, ds.SOPInstanceUID) == data


async def test_store_many_into_one_study_url(client: httpx.AsyncClient) -> None:
    study, series = new_uid(), new_uid()
    datasets = [ct_dataset(study, series, instance_number=n, seed=n) for n in range(1, 6)]
    response = await stow(client, multipart([to_bytes(d) for d in datasets]), study=study)
    assert response.status_code == 200
    assert [i[SOP_INSTANCE]["Value"][0] for i in referenced(response)] == [
        d.SOPInstanceUID for d in datasets
    ]
    totals = await state(client).index.totals()
    assert (totals.studies, totals.series, totals.instances) == (1, 1, 5)
    for d in datasets:
        assert await stored_bytes(client, d.SOPInstanceUID) == to_bytes(d)


async def test_stored_metadata_and_frames(client: httpx.AsyncClient) -> None:
    ds = ct_dataset(rows=32, columns=16)
    response = await stow(client, multipart([to_bytes(ds)]))
    assert response.status_code == 200
    stored = await state(client).index.get_instance(ds.SOPInstanceUID)
    metadata = orjson.loads(stored.metadata)
    assert metadata["0020000D"] == {"vr": "UI", "Value": [ds.StudyInstanceUID]}
    assert metadata["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]}
    assert metadata["7FE00010"]["BulkDataURI"].endswith(
        f"instances/{ds.SOPInstanceUID}/bulkdata/7FE00010"
    )
    assert "InlineBinary" not in orjson.dumps(metadata["7FE00010"]).decode()
    [[offset, length]] = orjson.loads(stored.frames)
    blob = await stored_bytes(client, ds.SOPInstanceUID)
    assert length == 32 * 16 * 2
    assert blob[offset : offset + length] == ds.PixelData


async def test_aggregates(client: httpx.AsyncClient) -> None:
    study = new_uid()
    ct_series, mr_series = new_uid(), new_uid()
    parts = [
        to_bytes(ct_dataset(study, ct_series, instance_number=1)),
        to_bytes(ct_dataset(study, ct_series, instance_number=2)),
        to_bytes(ct_dataset(study, mr_series, modality="MR")),
        to_bytes(ct_dataset(patient_id="OTHER")),
    ]
    assert (await stow(client, multipart(parts))).status_code == 200
    index: Index = state(client).index
    from sqlalchemy import select

    from dicomweb.index import schema

    (row,) = await index._fetch(
        select(schema.study).where(schema.study.c.study_instance_uid == study)
    )
    assert (row.number_of_series, row.number_of_instances) == (2, 3)
    assert row.modalities_in_study == "CT\\MR"
    (patient,) = await index._fetch(
        select(schema.patient).where(schema.patient.c.id == row.patient_pk)
    )
    assert (patient.number_of_studies, patient.number_of_series) == (1, 2)
    assert patient.number_of_instances == 3
    (series,) = await index._fetch(
        select(schema.series).where(schema.series.c.series_instance_uid == ct_series)
    )
    assert series.number_of_instances == 2


async def test_identical_restore_is_acknowledged(client: httpx.AsyncClient) -> None:
    data = ct_instance()
    assert (await stow(client, multipart([data]))).status_code == 200
    again = await stow(client, multipart([data]))
    assert again.status_code == 200
    assert len(referenced(again)) == 1
    assert (await state(client).index.totals()).instances == 1


async def test_different_content_under_stored_uid_is_refused(client: httpx.AsyncClient) -> None:
    first = ct_dataset()
    assert (await stow(client, multipart([to_bytes(first)]))).status_code == 200
    second = ct_dataset(first.StudyInstanceUID, first.SeriesInstanceUID, first.SOPInstanceUID)
    second.PatientName = "Changed^Name"
    response = await stow(client, multipart([to_bytes(second)]))
    assert response.status_code == 409
    assert failures(response) == [(first.SOPInstanceUID, 0x0111)]
    assert await stored_bytes(client, first.SOPInstanceUID) == to_bytes(first)
    blob_files = list((state(client).blobs.blob_dir).rglob("*.dcm"))
    assert len(blob_files) == 1


async def test_study_mismatch(client: httpx.AsyncClient) -> None:
    study = new_uid()
    good = ct_dataset(study)
    other = ct_dataset()
    response = await stow(client, multipart([to_bytes(good), to_bytes(other)]), study=study)
    assert response.status_code == 202
    assert failures(response) == [(other.SOPInstanceUID, 0xA910)]
    assert [i[SOP_INSTANCE]["Value"][0] for i in referenced(response)] == [good.SOPInstanceUID]
    assert "differs from the request's study" in response.headers["warning"]

    only_bad = await stow(client, multipart([to_bytes(ct_dataset())]), study=study)
    assert only_bad.status_code == 409


async def test_non_dicom_parts(client: httpx.AsyncClient) -> None:
    response = await stow(client, multipart([b"%PDF-1.4 not dicom at all"]))
    assert response.status_code == 400
    assert failures(response) == [(None, 0xC000)]
    good = ct_dataset()
    mixed = await stow(client, multipart([b"\x00" * 200, to_bytes(good)]))
    assert mixed.status_code == 202
    assert failures(mixed) == [(None, 0xC000)]
    assert referenced(mixed)[0][SOP_INSTANCE]["Value"] == [good.SOPInstanceUID]


async def test_part_with_other_media_type(client: httpx.AsyncClient) -> None:
    response = await stow(client, multipart([ct_instance()], content_type="image/jpeg"))
    assert response.status_code == 400
    assert failures(response) == [(None, 0xC020)]
    assert (await state(client).index.totals()).instances == 0


async def test_parts_without_content_type_are_dicom(client: httpx.AsyncClient) -> None:
    response = await stow(client, multipart([ct_instance()], content_type=None))
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("attribute", "value"),
    [
        ("SOPInstanceUID", None),
        ("SOPInstanceUID", "1.2.abc"),
        ("StudyInstanceUID", "1." + "2" * 70),
        ("SeriesInstanceUID", ".1.2"),
        ("SOPClassUID", None),
        ("StudyInstanceUID", "../../etc"),
    ],
    ids=["missing-sop", "letters", "too-long", "leading-dot", "missing-class", "traversal"],
)
async def test_missing_or_malformed_uids(
    client: httpx.AsyncClient, attribute: str, value: str | None
) -> None:
    ds = ct_dataset()
    if value is None:
        delattr(ds, attribute)
    else:
        setattr(ds, attribute, value)
    response = await stow(client, multipart([to_bytes(ds)]))
    assert response.status_code == 409
    [(_, reason)] = failures(response)
    assert reason == 0xA920
    assert attribute in response.headers["warning"]
    assert (await state(client).index.totals()).instances == 0
    assert not list(state(client).blobs.blob_dir.rglob("*.dcm"))


async def test_truncated_data_set(client: httpx.AsyncClient) -> None:
    data = ct_instance(rows=64, columns=64)
    response = await stow(client, multipart([data[:-1000]]))
    assert response.status_code == 400
    assert failures(response)[0][1] == 0xC010
    assert not list(state(client).blobs.blob_dir.rglob("*.dcm"))
    assert not list(state(client).blobs.tmp_dir.iterdir())


async def test_truncated_body_keeps_complete_parts(client: httpx.AsyncClient) -> None:
    first, second = ct_dataset(), ct_dataset()
    body = multipart([to_bytes(first), to_bytes(second)])
    cut = body[: len(body) - 300]
    response = await stow(client, cut)
    assert response.status_code == 202
    assert [i[SOP_INSTANCE]["Value"][0] for i in referenced(response)] == [first.SOPInstanceUID]
    assert failures(response)[0][1] == 0xC010
    assert (await state(client).index.totals()).instances == 1
    assert not list(state(client).blobs.tmp_dir.iterdir())


async def test_truncated_body_with_nothing_complete(client: httpx.AsyncClient) -> None:
    body = multipart([ct_instance()])
    response = await stow(client, body[:200])
    assert response.status_code == 400
    assert failures(response) == [(None, 0xC010)]
    assert "ended early" in response.headers["warning"]
    assert not list(state(client).blobs.tmp_dir.iterdir())


@pytest.mark.parametrize(
    ("content_type", "status", "words"),
    [
        (None, 415, "missing"),
        ("application/dicom", 415, "not supported"),
        ('multipart/related; type="application/dicom+json"; boundary=x', 415, "dicom+json"),
        ('multipart/related; type="application/dicom"', 400, "boundary"),
        ("multipart/related; boundary=" + "b" * 80, 400, "boundary"),
    ],
    ids=["none", "not-multipart", "json-parts", "no-boundary", "long-boundary"],
)
async def test_bad_content_type(
    client: httpx.AsyncClient, content_type: str | None, status: int, words: str
) -> None:
    headers = {} if content_type is None else {"content-type": content_type}
    response = await client.post("/dicomweb/studies", content=b"x", headers=headers)
    assert response.status_code == status
    problem = response.json()
    assert problem["status"] == status
    assert words in problem["detail"]
    assert response.headers["content-type"] == "application/problem+json"


async def test_malformed_multipart(client: httpx.AsyncClient) -> None:
    response = await stow(client, b"this is not a multipart body at all\r\n")
    assert response.status_code == 400
    assert response.json()["title"].startswith(("Malformed", "Truncated"))


async def test_empty_multipart(client: httpx.AsyncClient) -> None:
    response = await stow(client, f"--{BOUNDARY}--\r\n".encode())
    assert response.status_code == 400
    assert "no parts" in response.json()["detail"]


async def test_invalid_study_in_url(client: httpx.AsyncClient) -> None:
    response = await stow(client, multipart([ct_instance()]), study="1.2.x")
    assert response.status_code == 400
    assert "StudyInstanceUID" in response.json()["detail"]


async def test_declared_length_over_limit(client: httpx.AsyncClient) -> None:
    limit = state(client).config.max_request_bytes
    response = await client.post(
        "/dicomweb/studies",
        content=b"x",
        headers={"content-type": CONTENT_TYPE, "content-length": str(limit + 1)},
    )
    assert response.status_code == 413


@pytest.fixture
def small_limit(config: Any) -> Any:
    from dataclasses import replace

    return replace(config, max_request_bytes=50_000)


async def test_streamed_body_over_limit(small_limit: Any) -> None:
    from dicomweb.app import create_app

    app = create_app(small_limit)
    first = ct_instance()

    async def body() -> AsyncIterator[bytes]:
        yield multipart([first])[: -len(f"--{BOUNDARY}--\r\n")]
        yield f"--{BOUNDARY}\r\n\r\n".encode()
        for _ in range(100):
            yield b"x" * 10_000

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            response = await c.post(
                "/dicomweb/studies", content=body(), headers={"content-type": CONTENT_TYPE}
            )
            assert response.status_code == 202
            assert failures(response) == [(None, 0xA770)]
            assert (await app.state.index.totals()).instances == 1

            async def only_junk() -> AsyncIterator[bytes]:
                yield f"--{BOUNDARY}\r\n\r\n".encode()
                for _ in range(100):
                    yield b"x" * 10_000

            response = await c.post(
                "/dicomweb/studies", content=only_junk(), headers={"content-type": CONTENT_TYPE}
            )
            assert response.status_code == 413


async def test_xml_response(client: httpx.AsyncClient) -> None:
    ds = ct_dataset()
    response = await stow(client, multipart([to_bytes(ds)]), accept="application/dicom+xml")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/dicom+xml")
    root = ElementTree.fromstring(response.content)
    uids = [v.text for v in root.iter("Value") if v.text == ds.SOPInstanceUID]
    assert uids == [ds.SOPInstanceUID]


async def test_unacceptable_response_type(client: httpx.AsyncClient) -> None:
    response = await stow(client, multipart([ct_instance()]), accept="image/png")
    assert response.status_code == 406
    assert (await state(client).index.totals()).instances == 0


async def test_health(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"index": "ok", "storage": "ok"}


async def test_start_up_sweep_removes_what_a_crash_left(config: Config) -> None:
    config = replace(config, sweep_grace_seconds=0)
    staging = config.data_dir / "tmp"
    staging.mkdir(parents=True)
    (staging / "crashed.part").write_bytes(b"partial")
    async for c in app_client(config):
        await state(c).maintenance
        assert list(staging.iterdir()) == []


async def test_worker_processes_leave_staging_files_alone(config: Config) -> None:
    """A worker of `serve --workers N` does not sweep: a sibling may be writing."""
    config = replace(config, sweep_grace_seconds=0, sweep_at_start=False)
    staging = config.data_dir / "tmp"
    staging.mkdir(parents=True)
    (staging / "sibling.part").write_bytes(b"being written")
    async for c in app_client(config):
        await state(c).maintenance
        assert [p.name for p in staging.iterdir()] == ["sibling.part"]
