"""The ingest path below HTTP: preamble handling, parsing in worker processes, refusals."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from dicomweb.errors import InstanceRejected
from dicomweb.ingest import Incoming
from dicomweb.parsing import extract
from dicomweb.status import Status
from dicomweb.storage import FilesystemBlobStore
from tests.dicomfactory import ct_dataset, to_bytes


def without_preamble(ds: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds)
    return buffer.getvalue()


def chunks(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


@pytest.mark.parametrize("size", [1, 7, 131, 132, 133, 65536])
@pytest.mark.parametrize("preamble", [True, False])
async def test_incoming_adds_missing_preamble(tmp_path: Path, size: int, preamble: bool) -> None:
    ds = ct_dataset()
    data = to_bytes(ds) if preamble else without_preamble(ds)
    store = FilesystemBlobStore(tmp_path)
    incoming = Incoming(store.stage())
    for chunk in chunks(data, size):
        await incoming.write(chunk)
    await incoming.close()
    await incoming.staged.finish()
    stored = incoming.staged.path.read_bytes()
    expected = data if preamble else bytes(128) + b"DICM" + data
    assert stored == expected
    assert pydicom.dcmread(io.BytesIO(stored)).SOPInstanceUID == ds.SOPInstanceUID
    await incoming.abort()


@pytest.mark.parametrize("data", [b"%PDF", b"%PDF-1.4" * 100, bytes(300)])
async def test_incoming_leaves_other_data_alone(tmp_path: Path, data: bytes) -> None:
    store = FilesystemBlobStore(tmp_path)
    incoming = Incoming(store.stage())
    for chunk in chunks(data, 3):
        await incoming.write(chunk)
    await incoming.close()
    await incoming.staged.finish()
    assert incoming.staged.path.read_bytes() == data
    await incoming.abort()


def test_extract_records_and_refusals(tmp_path: Path) -> None:
    ds = ct_dataset()
    data = to_bytes(ds)
    good = tmp_path / "good.dcm"
    good.write_bytes(data)
    for source in (good, data):
        record = extract(source, 1024)
        assert record.sop_instance_uid == ds.SOPInstanceUID
        assert record.series.modality == "CT"
        assert record.number_of_frames == 1

    with pytest.raises(InstanceRejected) as refused:
        extract(b"not dicom" * 50, 1024)
    assert refused.value.dicom_status is Status.CANNOT_UNDERSTAND

    no_uid = ct_dataset()
    del no_uid.SOPInstanceUID
    with pytest.raises(InstanceRejected) as refused:
        extract(to_bytes(no_uid), 1024)
    assert refused.value.dicom_status is Status.INVALID_UID
    assert refused.value.sop_class_uid == no_uid.SOPClassUID


async def test_seal_refused_by_name_leaves_nothing(tmp_path: Path) -> None:
    """A blob whose name() refuses it is not committed, and abort() removes it."""
    store = FilesystemBlobStore(tmp_path)
    staged = store.stage()
    await staged.write(b"x" * 5000)

    def refuse(source: Path | bytes, info: object) -> str:
        assert source == b"x" * 5000
        raise InstanceRejected(Status.CANNOT_UNDERSTAND, "no")

    with pytest.raises(InstanceRejected):
        await staged.seal(refuse)
    await staged.abort()
    assert list(store.tmp_dir.iterdir()) == []
    assert list(store.blob_dir.rglob("*")) == []
