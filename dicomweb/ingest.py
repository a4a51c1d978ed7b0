"""The one ingest path: STOW-RS, `dicomweb import` and C-STORE all store through here.

stage (the caller streams bytes in) -> parse the header only -> validate -> extract
index attributes, metadata JSON and frame offsets -> commit the blob (fsync, atomic
link) -> commit the index rows. A crash before the blob commit leaves a staging file,
one between the two commits an unindexed blob; the start-up sweep removes both.
"""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass, replace
from pathlib import Path

from anyio import CapacityLimiter, to_thread
from sqlalchemy.exc import SQLAlchemyError

from dicomweb.errors import InstanceRejected
from dicomweb.index import AddResult, Index, InstanceRecord
from dicomweb.parsing import extract
from dicomweb.resources import InstanceKey
from dicomweb.status import Status
from dicomweb.storage import BlobInfo, BlobStore, StagedBlob
from dicomweb.transcoding import recode_for_storage

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
_PREAMBLE = bytes(128) + b"DICM"


@dataclass(frozen=True, slots=True)
class StoreOutcome:
    """What happened to one instance; STOW-RS and C-STORE report it."""

    status: Status
    detail: str
    sop_class_uid: str | None = None
    sop_instance_uid: str | None = None
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    duplicate: bool = False

    @property
    def stored(self) -> bool:
        return not self.status.is_failure

    @property
    def key(self) -> InstanceKey | None:
        if self.study_instance_uid and self.series_instance_uid and self.sop_instance_uid:
            return InstanceKey(
                self.study_instance_uid, self.series_instance_uid, self.sop_instance_uid
            )
        return None


class Ingestor:
    """Stores instances: blobs first, then the index."""

    def __init__(
        self,
        blobs: BlobStore,
        index: Index,
        *,
        bulk_data_threshold: int,
        store_transfer_syntax: str = "",
    ) -> None:
        """`store_transfer_syntax`, when given, is the syntax new instances are stored
        in (Config.store_transfer_syntax, checked there); empty: as received."""
        self.blobs = blobs
        self.index = index
        self._threshold = bulk_data_threshold
        self._store_syntax = store_transfer_syntax
        # Re-encoding is CPU work: as many at once as there are cores.
        self._recoders = CapacityLimiter(os.cpu_count() or 1) if store_transfer_syntax else None

    def receive(self) -> Incoming:
        """Start receiving the bytes of one instance."""
        return Incoming(self.blobs.stage())

    async def store(self, incoming: Incoming, *, expected_study: str | None = None) -> StoreOutcome:
        """Store what was received. Never raises for bad data: the outcome says."""
        staged = incoming.staged
        try:
            await incoming.close()
            if self._store_syntax:
                staged = await self._recoded(staged)
            return await self._store(staged, expected_study)
        except InstanceRejected as exc:
            await staged.abort()
            return StoreOutcome(
                exc.dicom_status, exc.detail, exc.sop_class_uid, exc.sop_instance_uid
            )
        except OSError as exc:
            await staged.abort()
            log.exception("storage failed")
            return StoreOutcome(Status.OUT_OF_RESOURCES, f"storage failed: {exc.strerror}")
        except BaseException:
            await staged.abort()
            raise

    async def _store(self, staged: StagedBlob, expected_study: str | None) -> StoreOutcome:
        records: list[InstanceRecord] = []

        def name(source: Path | bytes, info: BlobInfo) -> str:
            # Runs in the blob store's worker thread, between flush and commit.
            record = _checked(extract(source, self._threshold), expected_study)
            key = InstanceKey(
                record.study.study_instance_uid,
                record.series.series_instance_uid,
                record.sop_instance_uid,
            )
            records.append(
                replace(
                    record, blob_key=blob_key(key, info.sha256), size=info.size, sha256=info.sha256
                )
            )
            return records[0].blob_key

        _, created = await staged.seal(name)
        record = records[0]
        study = record.study.study_instance_uid
        try:
            result = await self.index.add_instance(record)
        except (SQLAlchemyError, OSError) as exc:
            # The committed blob has no index row; the sweep removes it.
            log.exception("indexing %s failed", record.sop_instance_uid)
            raise InstanceRejected(
                Status.PROCESSING_FAILURE,
                f"the index could not record the instance ({type(exc).__name__})",
                record.sop_class_uid,
                record.sop_instance_uid,
            ) from exc
        if result is not AddResult.ADDED and created:
            # The instance was stored before, with its own file.
            await self.blobs.delete([record.blob_key])
        if result is AddResult.CONFLICT:
            raise InstanceRejected(
                Status.DUPLICATE_SOP_INSTANCE,
                "",
                record.sop_class_uid,
                record.sop_instance_uid,
            )
        return StoreOutcome(
            Status.SUCCESS,
            "already stored" if result is AddResult.DUPLICATE else "stored",
            record.sop_class_uid,
            record.sop_instance_uid,
            study,
            record.series.series_instance_uid,
            duplicate=result is AddResult.DUPLICATE,
        )

    async def _recoded(self, staged: StagedBlob) -> StagedBlob:
        """The received instance re-encoded in the storage transfer syntax, as a new
        staged blob; `staged` itself when it is kept as received (see
        `recode_for_storage` for when)."""
        await staged.finish()
        recoded, reason = await to_thread.run_sync(
            recode_for_storage, staged.path, self._store_syntax, limiter=self._recoders
        )
        if recoded is None:
            log.debug("instance stored as received: %s", reason)
            return staged
        replacement = self.blobs.stage()
        try:
            await replacement.write(recoded)
        except BaseException:
            await replacement.abort()
            raise
        await staged.abort()
        return replacement

    async def store_file(self, path: Path) -> StoreOutcome:
        """Store a file from the local filesystem (the `import` command)."""
        incoming = self.receive()
        try:
            with open(path, "rb") as f:  # noqa: ASYNC230 - reads go to a thread below
                while chunk := await to_thread.run_sync(f.read, _CHUNK):
                    await incoming.write(chunk)
        except BaseException:
            await incoming.abort()
            raise
        return await self.store(incoming)


class Incoming:
    """The bytes of one instance as they arrive, on their way into a staged blob.

    A data set that starts with its file meta but lacks the 128-byte preamble and
    "DICM" prefix (pydicom writes data sets made in memory so) gets them, so that every
    stored file is a complete PS3.10 file.
    """

    def __init__(self, staged: StagedBlob) -> None:
        self.staged = staged
        self._head: bytearray | None = bytearray()

    async def write(self, chunk: bytes) -> None:
        if self._head is None:
            await self.staged.write(chunk)
            return
        if not self._head and len(chunk) >= len(_PREAMBLE):
            # The usual case: the first chunk is long enough to decide on.
            self._head = None
            await self._begin(chunk)
            return
        self._head += chunk
        if len(self._head) >= len(_PREAMBLE):
            await self.close()

    async def _begin(self, head: bytes) -> None:
        if head[128:132] != b"DICM" and head[:2] == b"\x02\x00":
            await self.staged.write(_PREAMBLE)
        await self.staged.write(head)

    async def abort(self) -> None:
        """Drop what was received."""
        self._head = None
        await self.staged.abort()

    async def close(self) -> None:
        """Pass on what is held back; called once all bytes were written."""
        if self._head is None:
            return
        head = bytes(self._head)
        self._head = None
        await self._begin(head)


def _checked(record: InstanceRecord, expected_study: str | None) -> InstanceRecord:
    study = record.study.study_instance_uid
    if expected_study is not None and study != expected_study:
        raise InstanceRejected(
            Status.STUDY_INSTANCE_UID_MISMATCH,
            f"StudyInstanceUID {study} differs from the request's study {expected_study}",
            record.sop_class_uid,
            record.sop_instance_uid,
        )
    return record


def blob_key(key: InstanceKey, sha256: str) -> str:
    """Where an instance's file lives: its UIDs, its content hash and a part of its own.

    Every write gets a file no other write shares, so removing the file of a deleted
    instance can never remove the file a concurrent store of the same data indexes.
    """
    return (
        f"{key.study_instance_uid}/{key.series_instance_uid}/"
        f"{key.sop_instance_uid}.{sha256[:16]}.{secrets.token_hex(4)}.dcm"
    )
