"""DELETE of studies, series and instances, and what the server reports it holds."""

from __future__ import annotations

import asyncio
import hashlib
import sys
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import Connection, func, select

from dicomweb.config import Config
from dicomweb.index import schema
from tests.dicomfactory import CONTENT_TYPE, ct_dataset, multipart, new_uid, to_bytes
from tests.http.test_wado import store

ROOT = "/dicomweb"
JSON = {"accept": "application/dicom+json"}


def blob_files(config: Config) -> set[Path]:
    return {p for p in (config.data_dir / "blobs").rglob("*") if p.is_file()}


async def qido(client: httpx.AsyncClient, path: str, **params: str) -> list[dict[str, Any]]:
    response = await client.get(f"{ROOT}/{path}", params=params, headers=JSON)
    assert response.status_code in (200, 204), response.text
    return [] if response.status_code == 204 else list(response.json())


def value(item: dict[str, Any], tag: str) -> Any:
    return item[tag]["Value"][0]


def check_aggregates(conn: Connection) -> list[Any]:
    """Assert that every count equals what it counts; the stored instances' blob keys
    and hashes."""
    i, se, st, pa = schema.instance, schema.series, schema.study, schema.patient
    series_counts = dict(
        conn.execute(select(i.c.series_pk, func.count()).group_by(i.c.series_pk)).all()
    )
    for row in conn.execute(select(se.c.id, se.c.number_of_instances)):
        assert series_counts.get(row.id, 0) == row.number_of_instances > 0
    for row in conn.execute(select(st.c.id, st.c.number_of_instances, st.c.number_of_series)):
        instances = len(conn.execute(select(i.c.id).where(i.c.study_pk == row.id)).all())
        series = len(conn.execute(select(se.c.id).where(se.c.study_pk == row.id)).all())
        assert (instances, series) == (row.number_of_instances, row.number_of_series) != (0, 0)
    for row in conn.execute(select(pa.c.id, pa.c.number_of_studies)):
        studies = len(conn.execute(select(st.c.id).where(st.c.patient_pk == row.id)).all())
        assert studies == row.number_of_studies > 0
    return list(conn.execute(select(i.c.blob_key, i.c.sha256)).all())


async def consistent(client: httpx.AsyncClient, config: Config) -> None:
    """Aggregates equal what they count; every indexed instance has its whole file and
    every file its instance."""
    index = client.app.state.index  # type: ignore[attr-defined]
    stored = await index._reader.run(check_aggregates)
    blobs = config.data_dir / "blobs"
    for key, sha256 in stored:
        assert hashlib.sha256((blobs / key).read_bytes()).hexdigest() == sha256
    assert {blobs / key for key, _ in stored} == blob_files(config)


@pytest.fixture
async def stored(client: httpx.AsyncClient) -> dict[str, Any]:
    """Patient A: a study with a CT and an MR series of two instances each, and a second
    one-instance study; patient B: one study."""
    study, other, third = new_uid(), new_uid(), new_uid()
    ct, mr = new_uid(), new_uid()
    datasets = [
        ct_dataset(study, ct, instance_number=1),
        ct_dataset(study, ct, instance_number=2),
        ct_dataset(study, mr, modality="MR", instance_number=1),
        ct_dataset(study, mr, modality="MR", instance_number=2),
        ct_dataset(other),
        ct_dataset(third, patient_id="PAT-2", patient_name="Roe^Richard"),
    ]
    await store(client, *datasets)
    return {"study": study, "other": other, "third": third, "ct": ct, "mr": mr, "ds": datasets}


async def test_delete_instance_updates_search_and_retrieve(
    client: httpx.AsyncClient, config: Config, stored: dict[str, Any]
) -> None:
    study, ct = stored["study"], stored["ct"]
    gone = stored["ds"][0].SOPInstanceUID
    files = blob_files(config)
    response = await client.delete(f"{ROOT}/studies/{study}/series/{ct}/instances/{gone}")
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["instances"], body["series"], body["studies"], body["patients"]) == (1, 0, 0, 0)
    assert body["bytes"] == len(to_bytes(stored["ds"][0]))
    assert len(files - blob_files(config)) == 1

    wado = await client.get(f"{ROOT}/studies/{study}/series/{ct}/instances/{gone}/metadata")
    assert wado.status_code == 404
    (found,) = await qido(client, "studies", StudyInstanceUID=study)
    assert value(found, "00201208") == 3  # NumberOfStudyRelatedInstances
    assert value(found, "00201206") == 2  # NumberOfStudyRelatedSeries
    series = await qido(client, f"studies/{study}/series", SeriesInstanceUID=ct)
    assert value(series[0], "00201209") == 1  # NumberOfSeriesRelatedInstances
    metadata = await client.get(f"{ROOT}/studies/{study}/metadata")
    assert {value(m, "00080018") for m in metadata.json()} == {
        d.SOPInstanceUID for d in stored["ds"][1:4]
    }
    again = await client.delete(f"{ROOT}/studies/{study}/series/{ct}/instances/{gone}")
    assert again.status_code == 404
    assert gone in again.json()["detail"]
    await consistent(client, config)


async def test_delete_series_updates_modalities(
    client: httpx.AsyncClient, config: Config, stored: dict[str, Any]
) -> None:
    study, mr = stored["study"], stored["mr"]
    (before,) = await qido(client, "studies", StudyInstanceUID=study)
    assert before["00080061"]["Value"] == ["CT", "MR"]
    response = await client.delete(f"{ROOT}/studies/{study}/series/{mr}")
    assert response.status_code == 200
    assert (response.json()["instances"], response.json()["series"]) == (2, 1)

    (after,) = await qido(client, "studies", StudyInstanceUID=study)
    assert after["00080061"]["Value"] == ["CT"]
    assert value(after, "00201206") == 1
    assert await qido(client, "studies", ModalitiesInStudy="MR") == []
    assert await qido(client, f"studies/{study}/series", Modality="MR") == []
    assert (await client.get(f"{ROOT}/studies/{study}/series/{mr}")).status_code == 404
    assert (await client.get(f"{ROOT}/studies/{study}/series/{stored['ct']}")).status_code == 200
    await consistent(client, config)


async def test_delete_study_and_the_patient_it_leaves_empty(
    client: httpx.AsyncClient, config: Config, stored: dict[str, Any]
) -> None:
    response = await client.delete(f"{ROOT}/studies/{stored['study']}")
    assert response.status_code == 200
    assert (response.json()["studies"], response.json()["patients"]) == (1, 0)
    remaining = {value(s, "0020000D") for s in await qido(client, "studies")}
    assert remaining == {stored["other"], stored["third"]}
    assert await qido(client, "instances", StudyInstanceUID=stored["study"]) == []
    await consistent(client, config)

    response = await client.delete(f"{ROOT}/studies/{stored['third']}")
    assert (response.json()["studies"], response.json()["patients"]) == (1, 1)
    stats = (await client.get("/api/stats")).json()
    assert (stats["patients"], stats["studies"], stats["instances"]) == (1, 1, 1)
    await consistent(client, config)


async def test_delete_then_store_again(
    client: httpx.AsyncClient, config: Config, stored: dict[str, Any]
) -> None:
    study, mr = stored["study"], stored["mr"]
    assert (await client.delete(f"{ROOT}/studies/{study}/series/{mr}")).status_code == 200
    # A new series, then the deleted one again: each instance lands in its own series.
    fresh = ct_dataset(study, new_uid(), modality="PT")
    await store(client, fresh)
    await store(client, stored["ds"][2])
    for series_uid, modality in ((fresh.SeriesInstanceUID, "PT"), (mr, "MR")):
        (found,) = await qido(client, f"studies/{study}/series", SeriesInstanceUID=series_uid)
        assert value(found, "00080060") == modality
        assert value(found, "00201209") == 1
    (found,) = await qido(client, "studies", StudyInstanceUID=study)
    assert found["00080061"]["Value"] == ["CT", "MR", "PT"]
    await consistent(client, config)


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("studies/1.2.3", 404),
        ("studies/{study}/series/1.2.3", 404),
        ("studies/{study}/series/{ct}/instances/1.2.3", 404),
        # A series of another study is not in this one.
        ("studies/{other}/series/{ct}", 404),
        ("studies/1.2.x", 400),
        ("studies/{study}/series/{ct}/instances/" + "1" * 65, 400),
    ],
)
async def test_delete_of_what_is_not_there(
    client: httpx.AsyncClient, stored: dict[str, Any], path: str, status: int
) -> None:
    files = await qido(client, "instances")
    response = await client.delete(f"{ROOT}/" + path.format(**stored))
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["detail"]
    assert len(await qido(client, "instances")) == len(files)


async def test_deletes_racing_stores_of_the_same_study(
    client: httpx.AsyncClient, config: Config
) -> None:
    study = new_uid()
    series = [new_uid() for _ in range(3)]
    instances = [
        to_bytes(ct_dataset(study, series[n % 3], instance_number=n, seed=n)) for n in range(12)
    ]

    async def stow(part: bytes) -> None:
        response = await client.post(
            f"{ROOT}/studies", content=multipart([part]), headers={"content-type": CONTENT_TYPE}
        )
        assert response.status_code == 200, response.text

    async def remove() -> None:
        for path in (f"studies/{study}/series/{series[1]}", f"studies/{study}"):
            await asyncio.sleep(0.005)
            response = await client.delete(f"{ROOT}/{path}")
            assert response.status_code in (200, 404), response.text

    for _ in range(3):
        await asyncio.gather(*(stow(p) for p in instances), remove(), remove())
        await consistent(client, config)
        # Storing again after the race gives the whole study.
        await asyncio.gather(*(stow(p) for p in instances))
        found = await qido(client, f"studies/{study}/instances")
        assert len(found) == len(instances)
        await consistent(client, config)


async def test_stats_per_modality_and_day(
    client: httpx.AsyncClient, config: Config, stored: dict[str, Any]
) -> None:
    response = await client.get("/api/stats")
    assert response.status_code == 200
    stats = response.json()
    sizes = [len(to_bytes(d)) for d in stored["ds"]]
    assert (stats["patients"], stats["studies"], stats["series"]) == (2, 3, 4)
    assert (stats["instances"], stats["bytes"]) == (6, sum(sizes))
    modalities = {m["modality"]: m for m in stats["modalities"]}
    assert set(modalities) == {"CT", "MR"}
    assert (modalities["MR"]["studies"], modalities["MR"]["series"]) == (1, 1)
    assert modalities["MR"]["instances"] == 2 and modalities["MR"]["bytes"] == sum(sizes[2:4])
    assert (modalities["CT"]["studies"], modalities["CT"]["instances"]) == (3, 4)
    (day,) = stats["days"]
    assert len(day["day"]) == 10 and day["instances"] == 6 and day["bytes"] == sum(sizes)

    where = ["--data-dir", str(config.data_dir), "--database-url", config.database_url]
    as_json = await run_cli("stats", "--json", *where)
    assert orjson.loads(as_json) == stats
    text = (await run_cli("stats", *where)).decode()
    assert "2 patients, 3 studies, 4 series, 6 instances" in text
    assert any(line.split()[:4] == ["MR", "1", "1", "2"] for line in text.splitlines())


async def run_cli(*args: str) -> bytes:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dicomweb", *args, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await process.communicate()
    assert process.returncode == 0
    return out


async def test_a_file_gone_before_it_is_read_is_404(
    client: httpx.AsyncClient, config: Config, stored: dict[str, Any]
) -> None:
    # As when a delete commits between a request's index lookup and its read.
    ds = stored["ds"][0]
    for path in blob_files(config):
        if ds.SOPInstanceUID in path.name:
            path.unlink()
    instance = f"{ROOT}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
    response = await client.get(f"{instance}/instances/{ds.SOPInstanceUID}/rendered")
    assert response.status_code == 404
    assert "deleted" in response.json()["detail"]
