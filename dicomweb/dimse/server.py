"""The DIMSE listener: a pynetdicom AE whose handlers call the async core.

pynetdicom runs each association in its own thread. Handlers reach the index, the
blob store and the ingest path through an anyio BlockingPortal opened by the caller on
the event loop that owns them (DESIGN.md: database connections belong to that loop).
"""

from __future__ import annotations

import copy
import logging
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anyio.from_thread import BlockingPortal
from pydicom import Dataset
from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import AE, _config, evt
from pynetdicom.presentation import PresentationContext, StoragePresentationContexts
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)
from pynetdicom.transport import ThreadedAssociationServer

from dicomweb.auth.audit import AuditLog
from dicomweb.dimse.identifier import IdentifierError, to_query, to_response
from dicomweb.dimse.peers import Allowed, Peer, admits, host_admitted
from dicomweb.dimse.scu import (
    NO_DELAY,
    accepted_syntaxes,
    dataset_for,
    no_delay,
    probe,
    storage_contexts,
)
from dicomweb.index import Index
from dicomweb.index.repository import InstanceSummary
from dicomweb.ingest import Ingestor
from dicomweb.pixels.transcode import TranscodeError
from dicomweb.status import Status
from dicomweb.storage import FilesystemBlobStore

log = logging.getLogger(__name__)

# What C-STORE accepts: every syntax the ingest path stores as received. pynetdicom
# accepts, of the syntaxes proposed in one context, the first in this list: Explicit VR
# first (what the web serves), then lossless compression (the sender's work, no loss),
# then the legacy native syntaxes, and lossy ones last, so that a sender offering lossy
# compression beside uncompressed data is never asked to compress with loss.
STORE_TRANSFER_SYNTAXES: tuple[str, ...] = (
    ExplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    RLELossless,
    JPEGLosslessSV1,
    JPEGLossless,
    JPEGLSLossless,
    JPEG2000Lossless,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    ImplicitVRLittleEndian,
    ExplicitVRBigEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLSNearLossless,
    JPEG2000,
    HTJ2K,
)
NATIVE = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
FIND_MODELS = {
    PatientRootQueryRetrieveInformationModelFind: True,
    StudyRootQueryRetrieveInformationModelFind: False,
}
MOVE_MODELS = {
    PatientRootQueryRetrieveInformationModelMove: True,
    StudyRootQueryRetrieveInformationModelMove: False,
}
GET_MODELS = {
    PatientRootQueryRetrieveInformationModelGet: True,
    StudyRootQueryRetrieveInformationModelGet: False,
}
# C-FIND results are read from the index this many at a time.
_PAGE = 500
# PS3.7 C.4.2.1.4: the number of sub-operations is a US value.
MAX_SUBOPERATIONS = 65535
_MAX_CONTEXTS = 128
_ERROR_COMMENT = 64  # LO


@dataclass
class Core:
    """What the handlers call: the same objects the HTTP side uses."""

    ingestor: Ingestor
    index: Index
    blobs: FilesystemBlobStore
    portal: BlockingPortal


class DimseServer:
    """Verification, Storage and Query/Retrieve (FIND, MOVE, GET) SCP."""

    def __init__(
        self,
        core: Core,
        *,
        aet: str,
        host: str,
        port: int,
        peers: dict[str, Peer],
        allowed: list[Allowed],
        audit: AuditLog | None = None,
        shared_port: bool = False,
    ) -> None:
        """`shared_port`: other listener processes of this server bind the same port."""
        self.core = core
        self.shared_port = shared_port
        # One audit line per operation (auth/audit.py); the policy stays AE-title based.
        self.audit = audit or AuditLog()
        self.aet = aet
        self.host = host
        self.port = port
        self.peers = peers
        self.allowed = allowed
        self.ae = build_ae(aet, allowed)
        self._server: ThreadedAssociationServer | None = None

    def start(self) -> None:
        """Listen; returns once the socket is bound (port 0 picks a free port)."""
        # Received data sets go to a temporary file, never whole into memory.
        _config.STORE_RECV_CHUNKED_DATASET = True
        handlers: list[Any] = [
            (evt.EVT_CONN_OPEN, self._on_open),
            (evt.EVT_ESTABLISHED, self._on_established),
            (evt.EVT_C_ECHO, self.audit.dimse("C-ECHO", self._on_echo)),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_C_FIND, self.audit.dimse("C-FIND", self._on_find)),
            (evt.EVT_C_MOVE, self.audit.dimse("C-MOVE", self._on_move)),
            (evt.EVT_C_GET, self.audit.dimse("C-GET", self._on_get)),
        ]
        server = self.ae.make_server(
            (self.host, self.port),
            evt_handlers=handlers,
            server_class=SharedPortServer if self.shared_port else ThreadedAssociationServer,
        )
        server.contexts = _ContextList(server.contexts)
        # What AE.start_server does, which cannot choose the server class: the AE lists
        # the server (its shutdown() removes it from there) and a thread serves it.
        self.ae._servers.append(server)
        threading.Thread(target=server.serve_forever, name="dimse-acceptor", daemon=True).start()
        self._server = server
        self.port = int(server.server_address[1])
        log.info("DIMSE listening on %s:%d as %s", self.host, self.port, self.aet)

    def stop(self) -> None:
        """Stop accepting, and end the associations in progress."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        self.ae.shutdown()

    # Policy

    def _on_open(self, event: evt.Event) -> None:
        no_delay(event)
        host = str(event.assoc.requestor.address)
        if not host_admitted(self.allowed, host):
            log.warning("DIMSE connection from %s refused: host not allowed", host)
            event.assoc.abort()

    def _on_established(self, event: evt.Event) -> None:
        calling = event.assoc.requestor.ae_title.strip()
        host = str(event.assoc.requestor.address)
        if not admits(self.allowed, calling, host):
            log.warning("DIMSE association from %s@%s refused: not allowed", calling, host)
            event.assoc.abort()

    # Services

    def _on_echo(self, _event: evt.Event) -> int:
        return 0x0000

    def _on_store(self, event: evt.Event) -> Dataset:
        path = Path(event.dataset_path)
        try:
            outcome = self.core.portal.call(self.core.ingestor.store_file, path)
        except Exception:
            log.exception("C-STORE failed")
            self.audit.dimse_store(event, Status.PROCESSING_FAILURE)
            return _status(Status.PROCESSING_FAILURE, "the instance could not be stored")
        self.audit.dimse_store(
            event,
            Status.SUCCESS if outcome.stored else outcome.status,
            study=outcome.study_instance_uid,
            series=outcome.series_instance_uid,
            instance=outcome.sop_instance_uid,
        )
        if outcome.stored:
            return _status(Status.SUCCESS)
        return _status(outcome.status, outcome.detail)

    def _on_find(self, event: evt.Event) -> Iterator[tuple[int | Dataset, Dataset | None]]:
        patient_root = FIND_MODELS[event.request.AffectedSOPClassUID]
        identifier = event.identifier
        try:
            query, requested = to_query(identifier, patient_root)
        except IdentifierError as exc:
            yield _failure(0xA900, exc.detail)
            return
        level_name = str(identifier.QueryRetrieveLevel).strip()
        query.limit = _PAGE
        while True:
            if event.is_cancelled:
                yield 0xFE00, None
                return
            result = self.core.portal.call(self.core.index.search, query)
            for dataset in result.datasets:
                if event.is_cancelled:
                    yield 0xFE00, None
                    return
                yield 0xFF00, to_response(dataset, requested, level_name, self.aet)
            if not result.more:
                return
            query.offset += query.limit

    def _on_move(self, event: evt.Event) -> Iterator[Any]:
        destination = _text(event.move_destination or "")
        peer = self.peers.get(destination)
        if peer is None:
            log.warning("C-MOVE to unknown destination %r", destination)
            yield None, None
            return
        patient_root = MOVE_MODELS[event.request.AffectedSOPClassUID]
        located = self._locate(event.identifier, patient_root)
        accepted = probe(peer, self.aet, located) if located else {}
        yield (
            peer.host,
            peer.port,
            {"contexts": storage_contexts(located), "evt_handlers": NO_DELAY},
        )
        yield len(located)
        yield from self._sub_operations(event, located, accepted)

    def _on_get(self, event: evt.Event) -> Iterator[Any]:
        patient_root = GET_MODELS[event.request.AffectedSOPClassUID]
        located = self._locate(event.identifier, patient_root)
        yield len(located)
        yield from self._sub_operations(event, located, accepted_syntaxes(event.assoc))

    def _sub_operations(
        self, event: evt.Event, located: list[InstanceSummary], accepted: dict[str, set[str]]
    ) -> Iterator[Any]:
        for item in located:
            if event.is_cancelled:
                yield 0xFE00, None
                return
            try:
                dataset = dataset_for(self.core.blobs.blob_path(item.blob_key), item, accepted)
            except (TranscodeError, OSError) as exc:
                # Counted as a failed sub-operation; the others go on.
                log.warning("C-STORE sub-operation for %s: %s", item.sop_instance_uid, exc)
                dataset = _unsendable(item)
            yield 0xFF00, dataset

    def _locate(self, identifier: Dataset, patient_root: bool) -> list[InstanceSummary]:
        try:
            query, _ = to_query(identifier, patient_root)
        except IdentifierError as exc:
            # pynetdicom answers an exception in the handler with C511 (unable to process).
            raise ValueError(f"identifier: {exc.detail}") from None
        query.limit = MAX_SUBOPERATIONS
        located: list[InstanceSummary] = self.core.portal.call(self.core.index.locate, query)
        return located


class _ContextList(list[PresentationContext]):
    """The supported contexts, copied cheaply for each association.

    pynetdicom deep-copies the server's contexts for every association it accepts:
    with every storage class and its transfer syntaxes that took about 10 ms, most of
    an association's cost. Negotiation only sets attributes of the copies, so a
    shallow copy of each context with its own list of syntaxes is enough (UIDs are
    immutable).
    """

    def __deepcopy__(self, memo: dict[int, Any]) -> list[PresentationContext]:
        copies = []
        for context in self:
            twin = copy.copy(context)
            twin._transfer_syntax = list(context._transfer_syntax)
            copies.append(twin)
        return copies


MAXIMUM_PDU_RECEIVED = 1024 * 1024


class SharedPortServer(ThreadedAssociationServer):
    """An association server whose port other processes of the same user may bind too
    (SO_REUSEPORT): the kernel hands each new connection to one of them."""

    def server_bind(self) -> None:
        assert self.socket is not None
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()


def build_ae(aet: str, allowed: list[Allowed]) -> AE:
    """The AE with every presentation context the server accepts."""
    ae = AE(ae_title=aet)
    ae.require_called_aet = True
    if allowed:
        ae.require_calling_aet = sorted({entry.aet for entry in allowed})
    ae.maximum_associations = 32
    # Peers split data sets into PDUs of at most this length. pynetdicom's default
    # (16 KiB) makes 32 PDUs of a 512 KiB CT slice, each a turn of its reactor loop;
    # a PDU is read whole into memory, so the length also bounds memory per association.
    ae.maximum_pdu_size = MAXIMUM_PDU_RECEIVED
    ae.add_supported_context(Verification)
    for context in StoragePresentationContexts:
        # SCU and SCP roles: C-GET sends its results as C-STORE on the same association.
        assert context.abstract_syntax is not None
        ae.add_supported_context(
            context.abstract_syntax, STORE_TRANSFER_SYNTAXES, scu_role=True, scp_role=True
        )
    for model in (*FIND_MODELS, *MOVE_MODELS, *GET_MODELS):
        ae.add_supported_context(model, NATIVE)
    return ae


def _unsendable(item: InstanceSummary) -> Dataset:
    """A data set no accepted context fits: pynetdicom counts its sub-operation failed."""
    ds = Dataset()
    ds.SOPClassUID = item.sop_class_uid
    ds.SOPInstanceUID = item.sop_instance_uid
    return ds


def _status(status: int, comment: str = "") -> Dataset:
    ds = Dataset()
    ds.Status = int(status)
    if comment:
        ds.ErrorComment = comment[:_ERROR_COMMENT]
    return ds


def _failure(status: int, comment: str) -> tuple[Dataset, None]:
    return _status(status, comment), None


def _text(value: bytes | str) -> str:
    return (value.decode("ascii", "replace") if isinstance(value, bytes) else value).strip()
