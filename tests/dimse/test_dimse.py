"""The DIMSE bridge against real peers: DCMTK tools and pynetdicom, with a real server.

What arrives over DIMSE is visible to DICOMweb and the other way round.
"""

from __future__ import annotations

import asyncio
import io
import re
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pydicom
import pytest
from pydicom import Dataset
from pydicom.data import get_testdata_file
from pynetdicom import AE, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from tests.conftest import ServerProcess, free_port
from tests.dicomfactory import CONTENT_TYPE, ct_dataset, multipart, new_uid, to_bytes
from tests.http.test_wado import parts_of

pytestmark = pytest.mark.slow

AET = "DICOMWEB"
# pydicom's test files and the storescu option that proposes each one's transfer syntax.
FILES = {
    "CT_small.dcm": "-xe",
    "MR_small_implicit.dcm": "-xi",  # stays Implicit VR: storescu sends what it is offered
    "MR_small_RLE.dcm": "-xr",
    "MR_small_jp2klossless.dcm": "-xv",
    "JPEG-LL.dcm": "-xs",
    "SC_rgb_jpeg_dcmtk.dcm": "-xy",
    "MR_small_bigendian.dcm": "-xb",
}


class Dimse:
    """A running server's DIMSE address and HTTP client."""

    def __init__(self, server: ServerProcess, port: int) -> None:
        self.server = server
        self.port = port
        self.http = httpx.Client(base_url=f"{server.url}/dicomweb", timeout=30)

    def tool(
        self, name: str, *options: str, files: tuple[str, ...] = ()
    ) -> subprocess.CompletedProcess[str]:
        """Run a DCMTK tool against the server: options, then peer and port, then files."""
        return subprocess.run(
            [name, "-aec", AET, *options, "127.0.0.1", str(self.port), *files],
            capture_output=True,
            text=True,
            timeout=60,
        )

    def associate(self, *contexts: str, calling: str = "TESTSCU") -> object:
        ae = AE(ae_title=calling)
        for context in contexts:
            ae.add_requested_context(context)
        assoc = ae.associate("127.0.0.1", self.port, ae_title=AET)
        assert assoc.is_established
        return assoc


def start(tmp_path: Path, database_url: str, *extra: str) -> tuple[ServerProcess, int]:
    port = free_port()
    server = ServerProcess(
        tmp_path / "data",
        database_url,
        free_port(),
        extra_args=("--dimse-port", str(port), *extra),
    )
    server.start()
    return server, port


@pytest.fixture
def dimse(tmp_path: Path, database_url: str) -> Iterator[Dimse]:
    server, port = start(tmp_path, database_url, "--dimse-peer", f"DEST={_dest_address()}")
    dimse = Dimse(server, port)
    try:
        yield dimse
    finally:
        dimse.http.close()
        server.stop()


_DEST_PORT = free_port()


def _dest_address() -> str:
    return f"127.0.0.1:{_DEST_PORT}"


def test_echo_and_called_aet(dimse: Dimse) -> None:
    assert dimse.tool("echoscu").returncode == 0
    wrong = subprocess.run(
        ["echoscu", "-aec", "SOMEONE", "127.0.0.1", str(dimse.port)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert wrong.returncode != 0
    assert "Called AE Title Not Recognized" in wrong.stderr + wrong.stdout


def test_allow_list(tmp_path: Path, database_url: str) -> None:
    server, port = start(tmp_path, database_url, "--dimse-allow", "GOODSCU")
    try:
        good = ["echoscu", "-aet", "GOODSCU", "-aec", AET, "127.0.0.1", str(port)]
        assert subprocess.run(good, capture_output=True, timeout=30).returncode == 0
        bad = subprocess.run(
            ["echoscu", "-aet", "BADSCU", "-aec", AET, "127.0.0.1", str(port)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert bad.returncode != 0
        assert "Calling AE Title Not Recognized" in bad.stderr + bad.stdout
    finally:
        server.stop()


def _elements(ds: Dataset) -> dict[int, object]:
    """Element values, without what a sender may drop: trailing padding, group lengths."""
    return {
        int(tag): ds[tag].value
        for tag in ds.keys()  # noqa: SIM118 - keys() does not decode elements
        if tag != 0xFFFCFFFC and tag.element != 0
    }


def _data_set_bytes(part10: bytes) -> bytes:
    """The data set after the file meta information (group 0002, Explicit VR LE)."""
    assert part10[128:132] == b"DICM"
    position = 132
    while struct.unpack_from("<H", part10, position)[0] == 0x0002:
        vr = part10[position + 4 : position + 6]
        if vr in (b"OB", b"OW", b"UN", b"UT", b"SQ", b"UC", b"UR"):
            length = struct.unpack_from("<I", part10, position + 8)[0]
            position += 12 + length
        else:
            length = struct.unpack_from("<H", part10, position + 6)[0]
            position += 8 + length
    return part10[position:]


def test_storescu_then_qido_and_wado(dimse: Dimse, tmp_path: Path) -> None:
    paths = []
    for name, option in FILES.items():
        # The MR_small variants share their UIDs: give each its own instance.
        ds = pydicom.dcmread(get_testdata_file(name))  # type: ignore[arg-type]
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = new_uid()
        path = tmp_path / name
        ds.save_as(path)
        result = dimse.tool("storescu", option, "-R", files=(str(path),))
        assert result.returncode == 0, f"{name}: {result.stderr}"
        paths.append(path)
    for path in paths:
        original = pydicom.dcmread(path)
        study = original.StudyInstanceUID
        found = dimse.http.get("/instances", params={"SOPInstanceUID": original.SOPInstanceUID})
        assert found.status_code == 200, path.name
        (instance,) = found.json()
        series = instance["0020000E"]["Value"][0]
        response = dimse.http.get(
            f"/studies/{study}/series/{series}/instances/{original.SOPInstanceUID}",
            headers={"accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
        )
        assert response.status_code == 200, path.name
        ((_, part),) = asyncio.run(parts_of(response))
        received = pydicom.dcmread(io.BytesIO(part))
        stored = original.file_meta.TransferSyntaxUID
        # PS3.18 Table 8.7.3-2 has neither Implicit VR nor Big Endian for the web.
        native = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.2")
        expected = "1.2.840.10008.1.2.1" if stored in native else stored
        assert received.file_meta.TransferSyntaxUID == expected
        if stored == "1.2.840.10008.1.2.2":  # byte-swapped values: compare the pixels
            assert (received.pixel_array == original.pixel_array).all()
            del received.PixelData, original.PixelData
        assert _elements(received) == _elements(original), path.name


def test_pynetdicom_store_is_kept_byte_for_byte(
    dimse: Dimse, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The data set sent is the data set served; only the file meta is the receiver's."""
    from pynetdicom import _config

    # Send the file's data set as it is encoded, not re-encoded by pynetdicom.
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)
    ds = pydicom.dcmread(get_testdata_file("MR_small_jp2klossless.dcm"))  # type: ignore[arg-type]
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = new_uid()
    path = tmp_path / "j2k.dcm"
    ds.save_as(path)
    ae = AE(ae_title="BYTESCU")
    ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", dimse.port, ae_title=AET)
    assert assoc.send_c_store(path).Status == 0
    assoc.release()
    url = (
        f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}"
    )
    response = dimse.http.get(
        url, headers={"accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}
    )
    ((_, part),) = asyncio.run(parts_of(response))
    assert _data_set_bytes(part) == _data_set_bytes(path.read_bytes())


def _store_by_stow(dimse: Dimse, count: int, **kwargs: object) -> list[Dataset]:
    study = new_uid()
    series = new_uid()
    datasets = [ct_dataset(study, series, instance_number=n, **kwargs) for n in range(count)]  # type: ignore[arg-type]
    response = dimse.http.post(
        "/studies",
        content=multipart([to_bytes(ds) for ds in datasets]),
        headers={"content-type": CONTENT_TYPE},
    )
    assert response.status_code == 200, response.text
    return datasets


def test_findscu_levels_wildcards_and_ranges(dimse: Dimse) -> None:
    stored = _store_by_stow(dimse, 2, patient_id="FIND-1", patient_name="Fischer^Anna")
    study = stored[0].StudyInstanceUID

    def find(*keys: str, model: str = "-S") -> str:
        result = dimse.tool("findscu", model, *(arg for key in keys for arg in ("-k", key)))
        assert result.returncode == 0, result.stderr
        return result.stdout + result.stderr

    out = find("QueryRetrieveLevel=PATIENT", "PatientID=FIND-*", "PatientName=", model="-P")
    assert "Fischer^Anna" in out and "FIND-1" in out
    out = find("QueryRetrieveLevel=STUDY", "PatientName=fisch*", "StudyInstanceUID=")
    assert study in out
    out = find("QueryRetrieveLevel=STUDY", "StudyDate=20260101-20260131", "StudyInstanceUID=")
    assert study in out
    out = find("QueryRetrieveLevel=STUDY", "StudyDate=-20251231", "StudyInstanceUID=")
    assert study not in out
    out = find("QueryRetrieveLevel=SERIES", f"StudyInstanceUID={study}", "Modality=C?")
    assert stored[0].SeriesInstanceUID in out
    out = find(
        "QueryRetrieveLevel=IMAGE",
        f"StudyInstanceUID={study}",
        f"SeriesInstanceUID={stored[0].SeriesInstanceUID}",
        "SOPInstanceUID=",
        "InstanceNumber=1",
    )
    assert stored[1].SOPInstanceUID in out and stored[0].SOPInstanceUID not in out


def test_deleted_instances_leave_find(dimse: Dimse) -> None:
    stored = _store_by_stow(dimse, 3, patient_id="DEL-1")
    study, series = stored[0].StudyInstanceUID, stored[0].SeriesInstanceUID
    gone = stored[1].SOPInstanceUID
    response = dimse.http.delete(f"/studies/{study}/series/{series}/instances/{gone}")
    assert response.status_code == 200

    def find(level: str, *keys: str) -> str:
        args = ("-k", f"QueryRetrieveLevel={level}", "-k", f"StudyInstanceUID={study}")
        result = dimse.tool("findscu", "-S", *args, *(a for k in keys for a in ("-k", k)))
        assert result.returncode == 0, result.stderr
        return result.stdout + result.stderr

    out = find("IMAGE", f"SeriesInstanceUID={series}", "SOPInstanceUID=")
    assert gone not in out and stored[0].SOPInstanceUID in out
    out = find("STUDY", "NumberOfStudyRelatedInstances=")
    assert re.search(r"IS \[2 ?\] .* NumberOfStudyRelatedInstances", out)

    assert dimse.http.delete(f"/studies/{study}").status_code == 200
    assert study not in find("STUDY", "PatientID=")
    out = find("SERIES", "SeriesInstanceUID=")
    assert series not in out


def test_find_with_pynetdicom_returns_requested_keys(dimse: Dimse) -> None:
    stored = _store_by_stow(dimse, 1, patient_id="PN-1", patient_name="Ölund^Åsa")
    assoc = dimse.associate(
        StudyRootQueryRetrieveInformationModelFind, PatientRootQueryRetrieveInformationModelFind
    )
    try:
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "STUDY"
        identifier.PatientName = "ölund*"
        identifier.StudyInstanceUID = ""
        identifier.NumberOfStudyRelatedInstances = ""
        identifier.ReferringPhysicianName = ""
        responses = list(
            assoc.send_c_find(identifier, StudyRootQueryRetrieveInformationModelFind)  # type: ignore[attr-defined]
        )
        pending = [ds for status, ds in responses if status.Status == 0xFF00]
        assert len(pending) == 1
        (found,) = pending
        assert found.StudyInstanceUID == stored[0].StudyInstanceUID
        assert str(found.PatientName) == "Ölund^Åsa"
        assert found.NumberOfStudyRelatedInstances == 1
        assert "ReferringPhysicianName" in found
        assert "StudyDate" not in found  # only the requested keys come back
        assert responses[-1][0].Status == 0x0000

        bad = Dataset()
        bad.QueryRetrieveLevel = "PATIENT"
        bad.PatientID = ""
        (status, _), *_ = assoc.send_c_find(bad, StudyRootQueryRetrieveInformationModelFind)  # type: ignore[attr-defined]
        assert status.Status == 0xA900
    finally:
        assoc.release()  # type: ignore[attr-defined]


def test_find_cancel(dimse: Dimse) -> None:
    for _ in range(6):
        _store_by_stow(dimse, 1, patient_id="MANY")
    assoc = dimse.associate(StudyRootQueryRetrieveInformationModelFind)
    try:
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "SERIES"
        identifier.SeriesInstanceUID = ""
        identifier.PatientID = "MANY"
        statuses = []
        responses = assoc.send_c_find(identifier, StudyRootQueryRetrieveInformationModelFind)  # type: ignore[attr-defined]
        for status, _ in responses:
            statuses.append(status.Status)
            if len(statuses) == 1:
                context = assoc._get_valid_context(  # type: ignore[attr-defined]
                    StudyRootQueryRetrieveInformationModelFind, "", "scu"
                )
                assoc.send_c_cancel(1, context.context_id)  # type: ignore[attr-defined]
        assert statuses[-1] in (0xFE00, 0x0000)
        assert len(statuses) <= 7
    finally:
        assoc.release()  # type: ignore[attr-defined]


class Receiver:
    """A pynetdicom Storage SCP that keeps what it receives."""

    def __init__(self, port: int, aet: str = "DEST", accept: tuple[str, ...] = ()) -> None:
        self.received: dict[str, Dataset] = {}
        ae = AE(ae_title=aet)
        from pynetdicom import StoragePresentationContexts

        for context in StoragePresentationContexts:
            if accept:
                ae.add_supported_context(context.abstract_syntax, list(accept))
            else:
                ae.add_supported_context(context.abstract_syntax)
        self.ae = ae
        self.server = ae.start_server(
            ("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, self._store)]
        )

    def _store(self, event: evt.Event) -> int:
        if event.dataset_path is not None:
            ds = pydicom.dcmread(event.dataset_path)
        else:
            ds = event.dataset
            ds.file_meta = event.file_meta
        self.received[ds.SOPInstanceUID] = ds
        return 0x0000

    def stop(self) -> None:
        self.server.shutdown()


def test_stow_then_movescu_and_getscu(dimse: Dimse, tmp_path: Path) -> None:
    stored = _store_by_stow(dimse, 3)
    study = stored[0].StudyInstanceUID
    receiver = Receiver(_DEST_PORT)
    try:
        result = dimse.tool(
            "movescu",
            "-S",
            "-aem",
            "DEST",
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            f"StudyInstanceUID={study}",
        )
        assert result.returncode == 0, result.stderr
        assert set(receiver.received) == {ds.SOPInstanceUID for ds in stored}
        for ds in stored:
            assert receiver.received[ds.SOPInstanceUID].PixelData == ds.PixelData
    finally:
        receiver.stop()

    unknown = dimse.tool(
        "movescu",
        "-S",
        "-aem",
        "NOWHERE",
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        f"StudyInstanceUID={study}",
    )
    assert "MoveDestinationUnknown" in unknown.stdout + unknown.stderr

    target = tmp_path / "get"
    target.mkdir()
    result = dimse.tool(
        "getscu",
        "-S",
        "-k",
        "QueryRetrieveLevel=SERIES",
        "-k",
        f"StudyInstanceUID={study}",
        "-k",
        f"SeriesInstanceUID={stored[0].SeriesInstanceUID}",
        "-od",
        str(target),
    )
    assert result.returncode == 0, result.stderr
    got = {pydicom.dcmread(p).SOPInstanceUID for p in target.iterdir()}
    assert got == {ds.SOPInstanceUID for ds in stored}


def test_move_transcodes_for_a_destination_that_takes_only_native(
    dimse: Dimse, tmp_path: Path
) -> None:
    path = tmp_path / "rle.dcm"
    ds = pydicom.dcmread(get_testdata_file("MR_small_RLE.dcm"))  # type: ignore[arg-type]
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = new_uid()
    ds.save_as(path)
    assert dimse.tool("storescu", "-xr", "-R", files=(str(path),)).returncode == 0
    original = pydicom.dcmread(path)
    receiver = Receiver(_DEST_PORT, accept=("1.2.840.10008.1.2.1",))
    try:
        assoc = dimse.associate(StudyRootQueryRetrieveInformationModelMove)
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "STUDY"
        identifier.StudyInstanceUID = original.StudyInstanceUID
        responses = list(
            assoc.send_c_move(identifier, "DEST", StudyRootQueryRetrieveInformationModelMove)  # type: ignore[attr-defined]
        )
        assoc.release()  # type: ignore[attr-defined]
        assert responses[-1][0].Status == 0x0000
        received = receiver.received[original.SOPInstanceUID]
        assert received.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
        assert (received.pixel_array == original.pixel_array).all()
    finally:
        receiver.stop()


def test_concurrent_associations_while_http_runs(dimse: Dimse) -> None:
    per_association = 15
    sent: list[str] = []
    errors: list[str] = []
    lock = threading.Lock()

    def store_many() -> None:
        ae = AE(ae_title="LOADSCU")
        ae.add_requested_context(CTImageStorage)
        assoc = ae.associate("127.0.0.1", dimse.port, ae_title=AET)
        try:
            study = new_uid()
            for n in range(per_association):
                ds = ct_dataset(study, instance_number=n, seed=n)
                status = assoc.send_c_store(ds)
                if status.Status != 0:
                    errors.append(f"0x{status.Status:04X}")
                with lock:
                    sent.append(ds.SOPInstanceUID)
        finally:
            assoc.release()

    threads = [threading.Thread(target=store_many) for _ in range(4)]
    for thread in threads:
        thread.start()
    while any(t.is_alive() for t in threads):
        assert dimse.http.get("/studies").status_code in (200, 204)
        time.sleep(0.01)
    assert not errors
    found = dimse.http.get("/instances", params={"limit": "1000"}).json()
    assert {i["00080018"]["Value"][0] for i in found} == set(sent)


def test_dropped_association_leaves_nothing(dimse: Dimse, tmp_path: Path) -> None:
    ds = ct_dataset(rows=2048, columns=2048)  # 8 MiB of pixel data
    sent: list[int] = []
    dropped: list[bool] = []

    def count(event: evt.Event) -> None:
        # After 2 MiB of the data set, the peer goes away.
        if type(event.pdu).__name__ == "P_DATA_TF":
            sent.append(len(event.pdu))
            if sum(sent) >= 2 * 1024 * 1024 and not dropped:
                dropped.append(True)
                # The connection drops: no A-ABORT, no A-RELEASE, like a pulled cable.
                event.assoc.dul.socket.socket.shutdown(socket.SHUT_RDWR)

    ae = AE(ae_title="DROPSCU")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate(
        "127.0.0.1",
        dimse.port,
        ae_title=AET,
        max_pdu=16382,
        evt_handlers=[(evt.EVT_PDU_SENT, count)],
    )
    assert assoc.is_established
    status = assoc.send_c_store(ds)
    assert "Status" not in status
    assert dropped
    assert sum(sent) < 8 * 1024 * 1024  # the data set was cut short
    time.sleep(0.5)
    response = dimse.http.get("/instances", params={"SOPInstanceUID": ds.SOPInstanceUID})
    assert response.status_code == 204
    blobs = dimse.server.data_dir / "blobs"
    stored = list(blobs.rglob("*.dcm")) if blobs.exists() else []
    assert not [p for p in stored if ds.SOPInstanceUID in p.name]
    assert dimse.tool("echoscu").returncode == 0  # the listener is still there


def test_echo_with_pynetdicom(dimse: Dimse) -> None:
    assoc = dimse.associate(Verification)
    status = assoc.send_c_echo()  # type: ignore[attr-defined]
    # Peers may send PDUs of up to 1 MiB: a 512 KiB slice in one PDU, not 32.
    assert assoc.acceptor.maximum_length == 1024 * 1024  # type: ignore[attr-defined]
    assoc.release()  # type: ignore[attr-defined]
    assert status.Status == 0


def test_send_by_command_and_http(dimse: Dimse) -> None:
    stored = _store_by_stow(dimse, 2)
    study = stored[0].StudyInstanceUID
    receiver = Receiver(_DEST_PORT)
    try:
        command = subprocess.run(
            [
                sys.executable,
                "-m",
                "dicomweb",
                "send",
                "--data-dir",
                str(dimse.server.data_dir),
                "--database-url",
                dimse.server.database_url,
                "--study",
                study,
                "--to",
                f"DEST@{_dest_address()}",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert command.returncode == 0, command.stderr
        assert "sent 2, failed 0" in command.stdout
        assert set(receiver.received) == {ds.SOPInstanceUID for ds in stored}

        receiver.received.clear()
        response = dimse.http.post(
            f"{dimse.server.url}/api/send",
            json={"destination": "DEST", "study": study, "instance": stored[1].SOPInstanceUID},
        )
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/x-ndjson"
        lines = [orjson.loads(line) for line in response.text.splitlines()]
        assert lines[0] == {"sop_instance_uid": stored[1].SOPInstanceUID, "status": 0}
        assert lines[-1]["sent"] == 1 and lines[-1]["failed"] == 0
        assert set(receiver.received) == {stored[1].SOPInstanceUID}
    finally:
        receiver.stop()
    unknown = dimse.http.post(
        f"{dimse.server.url}/api/send", json={"destination": "NOWHERE", "study": study}
    )
    assert unknown.status_code == 400
    malformed = dimse.http.post(f"{dimse.server.url}/api/send", content=b"[1")
    assert malformed.status_code == 400
    missing = dimse.http.post(
        f"{dimse.server.url}/api/send", json={"destination": "DEST", "study": new_uid()}
    )
    assert missing.status_code == 404


def test_explicit_vr_is_preferred_and_lossy_last(dimse: Dimse) -> None:
    ae = AE(ae_title="PREFSCU")
    ae.add_requested_context(
        CTImageStorage,
        ["1.2.840.10008.1.2", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1"],
    )
    ae.add_requested_context(CTImageStorage, ["1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.70"])
    assoc = ae.associate("127.0.0.1", dimse.port, ae_title=AET)
    try:
        accepted = [str(cx.transfer_syntax[0]) for cx in assoc.accepted_contexts]
    finally:
        assoc.release()
    assert accepted == ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2.4.70"]


def _wait_for_echo(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        echo = subprocess.run(
            ["echoscu", "-aec", AET, "127.0.0.1", str(port)], capture_output=True, timeout=30
        )
        if echo.returncode == 0:
            return
        time.sleep(0.2)
    raise AssertionError(f"no C-ECHO answer on port {port}")


def test_dimse_command_runs_the_listener_alone(tmp_path: Path, database_url: str) -> None:
    port = free_port()
    listener = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dicomweb",
            "dimse",
            "--data-dir",
            str(tmp_path / "data"),
            "--database-url",
            database_url,
            "--dimse-port",
            str(port),
            "--log-level",
            "warning",
        ]
    )
    try:
        _wait_for_echo(port)
        path = Path(get_testdata_file("CT_small.dcm"))  # type: ignore[arg-type]
        store = subprocess.run(
            ["storescu", "-aec", AET, "127.0.0.1", str(port), str(path)],
            capture_output=True,
            timeout=60,
        )
        assert store.returncode == 0
    finally:
        listener.terminate()
        assert listener.wait(30) == 0
    # What the listener stored is there for the HTTP server on the same data.
    server = ServerProcess(tmp_path / "data", database_url, free_port())
    server.start()
    try:
        sop = pydicom.dcmread(path).SOPInstanceUID
        found = httpx.get(f"{server.url}/dicomweb/instances", params={"SOPInstanceUID": sop})
        assert found.status_code == 200
    finally:
        server.stop()


def test_several_workers_share_one_listener(tmp_path: Path, database_url: str) -> None:
    server, port = start(tmp_path, database_url, "--workers", "2")
    try:
        _wait_for_echo(port)
        ds = ct_dataset()
        assoc = AE(ae_title="WORKSCU")
        assoc.add_requested_context(CTImageStorage)
        association = assoc.associate("127.0.0.1", port, ae_title=AET)
        assert association.send_c_store(ds).Status == 0
        association.release()
        found = httpx.get(
            f"{server.url}/dicomweb/instances", params={"SOPInstanceUID": ds.SOPInstanceUID}
        )
        assert found.status_code == 200
    finally:
        server.stop()
    # Stopping the server stops its listener too.
    refused = subprocess.run(
        ["echoscu", "-aec", AET, "127.0.0.1", str(port)], capture_output=True, timeout=30
    )
    assert refused.returncode != 0


def test_find_with_an_unusable_value_fails_with_a900(dimse: Dimse) -> None:
    codes = "\\".join(f"M{n}" for n in range(40))  # more codes than a list match takes
    result = dimse.tool(
        "findscu", "-v", "-S", "-k", "QueryRetrieveLevel=STUDY", "-k", f"ModalitiesInStudy={codes}"
    )
    # DCMTK's name for A900 (Identifier does not match SOP Class).
    assert "Final Find Response (Error: DataSetDoesNotMatchSOPClass)" in result.stderr


def _listening_sockets(port: int) -> int:
    """How many sockets listen on `port` (IPv4), from /proc/net/tcp."""
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        if state == "0A" and int(local.split(":")[1], 16) == port:
            count += 1
    return count


def test_several_listener_processes_share_the_port(tmp_path: Path, database_url: str) -> None:
    """`--dimse-processes 3`: three processes listen on one port and the kernel spreads
    associations over them; everything each of them stores is in the one index."""
    server, port = start(tmp_path, database_url, "--dimse-processes", "3")
    dimse = Dimse(server, port)
    try:
        # The server answers once every listener listens.
        assert _listening_sockets(port) == 3
        study = new_uid()
        folders = []
        for n in range(8):
            folder = tmp_path / f"send{n}"
            folder.mkdir()
            for k in range(3):
                ds = ct_dataset(study, instance_number=n * 3 + k, seed=n * 3 + k)
                ds.save_as(folder / f"{k}.dcm", enforce_file_format=True)
            folders.append(folder)
        senders = [
            subprocess.Popen(
                ["storescu", "-aec", AET, "127.0.0.1", str(port), *map(str, folder.iterdir())],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            for folder in folders
        ]
        for sender in senders:
            output, _ = sender.communicate(timeout=120)
            assert sender.returncode == 0, output
        found = dimse.http.get(f"/studies/{study}/instances").json()
        assert len(found) == 24
        assert dimse.tool("echoscu").returncode == 0
    finally:
        dimse.http.close()
        server.stop()
    assert _listening_sockets(port) == 0  # the extra listeners stop with the server


def test_workers_have_one_listener_that_stops_with_them(tmp_path: Path, database_url: str) -> None:
    server, port = start(tmp_path, database_url, "--workers", "2")
    dimse = Dimse(server, port)
    try:
        deadline = time.monotonic() + 30
        while dimse.tool("echoscu").returncode != 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _listening_sockets(port) == 1
    finally:
        dimse.http.close()
        server.stop()
    assert _listening_sockets(port) == 0
