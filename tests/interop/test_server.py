"""A real `dicomweb serve` (uvicorn) with real clients: dicomweb-client, restarts, kill -9."""

from __future__ import annotations

import asyncio
import hashlib
import io
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from sqlalchemy import select

from dicomweb.index import Index, schema
from tests.conftest import ServerProcess, free_port
from tests.dicomfactory import CONTENT_TYPE, ct_dataset, multipart, new_uid, to_bytes

pytestmark = pytest.mark.slow

REFERENCED = "00081199"
SOP_INSTANCE = "00081155"


def encoded_like_dicomweb_client(ds: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds)
    return buffer.getvalue()


async def stored_rows(database_url: str) -> list[tuple[str, str, str, int]]:
    index = await Index.open(database_url)
    try:
        rows = await index._fetch(
            select(
                schema.instance.c.sop_instance_uid,
                schema.instance.c.blob_key,
                schema.instance.c.sha256,
                schema.instance.c.size,
            )
        )
        return [tuple(r) for r in rows]  # type: ignore[misc]
    finally:
        await index.close()


def test_dicomweb_client_round_trip(server: ServerProcess) -> None:
    client = DICOMwebClient(url=f"{server.url}/dicomweb")
    study = new_uid()
    # Read back from files, as a script would: these carry the PS3.10 preamble.
    datasets = [
        pydicom.dcmread(io.BytesIO(to_bytes(ct_dataset(study, instance_number=n, seed=n))))
        for n in range(3)
    ]
    response = client.store_instances(datasets=datasets, study_instance_uid=study)
    stored = {item.ReferencedSOPInstanceUID for item in response.ReferencedSOPSequence}
    assert stored == {ds.SOPInstanceUID for ds in datasets}
    assert "FailedSOPSequence" not in response
    # dicomweb-client sends "Host: 127.0.0.1" without the port; URLs follow the Host header.
    assert response.RetrieveURL.endswith(f"127.0.0.1/dicomweb/studies/{study}")
    rows = {sop: key for sop, key, _, _ in asyncio.run(stored_rows(server.database_url))}
    for ds in datasets:
        blob = server.data_dir / "blobs" / rows[ds.SOPInstanceUID]
        assert blob.read_bytes() == encoded_like_dicomweb_client(ds)


def test_data_sets_made_in_memory_get_a_preamble(server: ServerProcess) -> None:
    """pydicom writes a data set made in memory without preamble and "DICM"; the server
    stores it as a complete PS3.10 file with the same data set."""
    client = DICOMwebClient(url=f"{server.url}/dicomweb")
    ds = ct_dataset()
    client.store_instances(datasets=[ds])
    [(_, key, _, _)] = asyncio.run(stored_rows(server.database_url))
    sent = encoded_like_dicomweb_client(ds)
    assert sent[128:132] != b"DICM"
    assert (server.data_dir / "blobs" / key).read_bytes() == bytes(128) + b"DICM" + sent


def test_dicomweb_client_sees_failures(server: ServerProcess) -> None:
    client = DICOMwebClient(url=f"{server.url}/dicomweb")
    ds = ct_dataset()
    client.store_instances(datasets=[ds])
    changed = ct_dataset(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    changed.PatientName = "Other^Name"
    with pytest.raises(Exception, match="409"):
        client.store_instances(datasets=[changed])


def test_data_survives_restart(server: ServerProcess) -> None:
    ds = ct_dataset()
    body = multipart([to_bytes(ds)])
    headers = {"content-type": CONTENT_TYPE}
    assert httpx.post(f"{server.url}/dicomweb/studies", content=body, headers=headers).is_success
    server.stop()
    server.start()
    again = httpx.post(f"{server.url}/dicomweb/studies", content=body, headers=headers)
    assert again.status_code == 200
    changed = ct_dataset(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, seed=9)
    conflict = httpx.post(
        f"{server.url}/dicomweb/studies",
        content=multipart([to_bytes(changed)]),
        headers=headers,
    )
    assert conflict.status_code == 409
    rows = asyncio.run(stored_rows(server.database_url))
    assert [r[0] for r in rows] == [ds.SOPInstanceUID]


def _upload_until_killed(
    url: str,
    study: str,
    acknowledged: dict[str, str],
    lock: threading.Lock,
    stop: threading.Event,
    seed: int,
) -> None:
    rng = random.Random(seed)
    with httpx.Client(timeout=30) as client:
        while not stop.is_set():
            series = new_uid()
            datasets = [
                ct_dataset(study, series, rows=256, columns=256, seed=rng.randrange(1 << 30))
                for _ in range(rng.randint(1, 6))
            ]
            parts = {ds.SOPInstanceUID: to_bytes(ds) for ds in datasets}
            try:
                response = client.post(
                    f"{url}/dicomweb/studies",
                    content=multipart(list(parts.values())),
                    headers={"content-type": CONTENT_TYPE, "accept": "application/dicom+json"},
                )
            except httpx.TransportError:
                return
            if response.status_code != 200:
                continue
            with lock:
                for item in response.json()[REFERENCED]["Value"]:
                    sop = item[SOP_INSTANCE]["Value"][0]
                    acknowledged[sop] = hashlib.sha256(parts[sop]).hexdigest()


def _blob_files(data_dir: Path) -> set[str]:
    root = data_dir / "blobs"
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("round_", range(2))
def test_kill_during_concurrent_upload(server: ServerProcess, round_: int) -> None:
    """SIGKILL mid-upload: every acknowledged instance is intact and indexed, and nothing
    half-written is visible or left behind once the server is back."""
    acknowledged: dict[str, str] = {}
    lock = threading.Lock()
    stop = threading.Event()
    study = new_uid()
    threads = [
        threading.Thread(
            target=_upload_until_killed,
            args=(server.url, study, acknowledged, lock, stop, 100 * round_ + n),
        )
        for n in range(8)
    ]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 20
    while len(acknowledged) < 40 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(random.Random(round_).uniform(0.05, 0.5))
    server.kill()
    stop.set()
    for t in threads:
        t.join(30)
    assert len(acknowledged) >= 40

    server.start()
    rows = {
        sop: (key, sha, size)
        for sop, key, sha, size in asyncio.run(stored_rows(server.database_url))
    }
    for sop, sha in acknowledged.items():
        assert sop in rows, f"acknowledged instance {sop} is not indexed"
        assert rows[sop][1] == sha
    for key, sha, size in rows.values():
        data = (server.data_dir / "blobs" / key).read_bytes()
        assert len(data) == size
        assert hashlib.sha256(data).hexdigest() == sha

    # The start-up sweep (grace 0 in tests) removes staging files and unindexed blobs.
    indexed = {key for key, _, _ in rows.values()}
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        leftovers = list((server.data_dir / "tmp").iterdir())
        if not leftovers and _blob_files(server.data_dir) == indexed:
            break
        time.sleep(0.1)
    assert list((server.data_dir / "tmp").iterdir()) == []
    assert _blob_files(server.data_dir) == indexed


def test_several_worker_processes(tmp_path: Path, database_url: str) -> None:
    """`--workers 2`: two processes share the data directory and the index; the
    supervising process sweeps once before the workers start, and they never sweep."""
    data_dir = tmp_path / "data"
    (data_dir / "tmp").mkdir(parents=True)
    (data_dir / "tmp" / "left-by-a-crash.part").write_bytes(b"partial")
    server = ServerProcess(data_dir, database_url, free_port(), extra_args=("--workers", "2"))
    server.start()
    try:
        assert list((data_dir / "tmp").iterdir()) == []
        study = new_uid()
        datasets = [ct_dataset(study, instance_number=n, seed=n) for n in range(12)]

        def post(ds: pydicom.Dataset) -> tuple[int, str]:
            response = httpx.post(
                f"{server.url}/dicomweb/studies",
                content=multipart([to_bytes(ds)]),
                headers={"content-type": CONTENT_TYPE},
                timeout=60,
            )
            return response.status_code, response.headers.get("warning", response.text[:200])

        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(post, datasets))
        assert [status for status, _ in answers] == [200] * 12, answers
        rows = asyncio.run(stored_rows(server.database_url))
        assert sorted(r[0] for r in rows) == sorted(ds.SOPInstanceUID for ds in datasets)
    finally:
        server.stop()
