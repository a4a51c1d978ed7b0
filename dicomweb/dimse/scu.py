"""Sending stored instances with C-STORE: C-MOVE and C-GET sub-operations, `dicomweb send`."""

from __future__ import annotations

import io
import logging
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom import Dataset, dcmread
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, build_context, evt
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext

from dicomweb.dimse.peers import Peer
from dicomweb.index.repository import InstanceSummary
from dicomweb.pixels.transcode import TranscodeError, transcode_instance

log = logging.getLogger(__name__)

NATIVE = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
_MAX_CONTEXTS = 128


class SendError(RuntimeError):
    """The destination could not be reached or refused the association."""


@dataclass(frozen=True, slots=True)
class SendResult:
    """What the destination answered for one instance."""

    sop_instance_uid: str
    status: int | None  # None: no answer (association lost, nothing acceptable)
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status is not None and (self.status == 0 or self.status >> 12 == 0xB)


def no_delay(event: evt.Event) -> None:
    """EVT_CONN_OPEN handler: send small PDUs at once.

    Without TCP_NODELAY, Nagle's algorithm holds a C-STORE's last PDU until the
    previous one is acknowledged, which caps an association near 20 instances/s.
    """
    sock = event.assoc.dul.socket
    if sock is not None and sock.socket is not None:
        sock.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


NO_DELAY: list[Any] = [(evt.EVT_CONN_OPEN, no_delay)]


def storage_contexts(located: Iterable[InstanceSummary]) -> list[PresentationContext]:
    """One context per SOP class, offering its stored syntaxes and the native ones."""
    syntaxes: dict[str, list[str]] = {}
    for item in located:
        offered = syntaxes.setdefault(item.sop_class_uid, [])
        for syntax in (item.transfer_syntax_uid, *NATIVE):
            if syntax not in offered:
                offered.append(syntax)
    return [build_context(UID(cls), ts) for cls, ts in list(syntaxes.items())[:_MAX_CONTEXTS]]


def accepted_syntaxes(assoc: Association) -> dict[str, set[str]]:
    """Transfer syntaxes the peer accepted for us to send in, by SOP class.

    Only contexts where this side may act as the Storage SCU count (on a C-GET
    association the requester takes the SCP role for the classes it proposed so).
    """
    accepted: dict[str, set[str]] = {}
    for context in assoc.accepted_contexts:
        if not context.as_scu:
            continue
        if context.abstract_syntax is None:
            continue
        syntaxes = accepted.setdefault(str(context.abstract_syntax), set())
        syntaxes.update(str(ts) for ts in context.transfer_syntax)
    return accepted


def dataset_for(path: Path, item: InstanceSummary, accepted: dict[str, set[str]]) -> Dataset:
    """The instance as a data set the peer accepted: as stored, else transcoded.

    Explicit and Implicit VR Little Endian convert into each other when pynetdicom
    encodes; any other difference is transcoded to Explicit VR Little Endian.
    """
    offered = accepted.get(item.sop_class_uid, set())
    stored = item.transfer_syntax_uid
    if stored in offered or (stored in NATIVE and offered & set(NATIVE)):
        return dcmread(path)
    target = ExplicitVRLittleEndian if ExplicitVRLittleEndian in offered else None
    if target is None and ImplicitVRLittleEndian in offered:
        target = ExplicitVRLittleEndian  # pynetdicom converts it to Implicit VR
    if target is None:
        raise TranscodeError(
            f"the peer accepts none of the syntaxes {stored} can be sent in "
            f"for SOP Class {item.sop_class_uid}"
        )
    return dcmread(io.BytesIO(transcode_instance(path, target)))


def _associate(peer: Peer, calling_aet: str, located: Sequence[InstanceSummary]) -> Association:
    """An association to `peer` proposing what `located` needs (storage_contexts)."""
    return AE(ae_title=calling_aet).associate(
        peer.host,
        peer.port,
        contexts=storage_contexts(located),
        ae_title=peer.aet,
        evt_handlers=NO_DELAY,
    )


def probe(peer: Peer, calling_aet: str, located: Sequence[InstanceSummary]) -> dict[str, set[str]]:
    """What a destination accepts, learnt by associating and releasing at once.

    A C-MOVE handler does not see the association pynetdicom opens to the destination,
    so this decides beforehand which instances need transcoding.
    """
    assoc = _associate(peer, calling_aet, located)
    if not assoc.is_established:
        return {}
    try:
        return accepted_syntaxes(assoc)
    finally:
        assoc.release()


def send(
    peer: Peer,
    calling_aet: str,
    located: Sequence[InstanceSummary],
    path_of: Callable[[InstanceSummary], Path],
    progress: Callable[[SendResult], None] | None = None,
) -> list[SendResult]:
    """C-STORE every instance to `peer` on one association; one result per instance."""
    assoc = _associate(peer, calling_aet, located)
    if not assoc.is_established:
        raise SendError(f"could not associate with {peer}")
    results: list[SendResult] = []
    try:
        accepted = accepted_syntaxes(assoc)
        for item in located:
            result = _send_one(assoc, item, path_of(item), accepted)
            results.append(result)
            if progress is not None:
                progress(result)
    finally:
        if assoc.is_established:
            assoc.release()
    return results


def _send_one(
    assoc: Association, item: InstanceSummary, path: Path, accepted: dict[str, set[str]]
) -> SendResult:
    if not assoc.is_established:
        return SendResult(item.sop_instance_uid, None, "association lost")
    try:
        dataset = dataset_for(path, item, accepted)
    except (TranscodeError, OSError) as exc:
        return SendResult(item.sop_instance_uid, None, str(exc))
    try:
        answer = assoc.send_c_store(dataset)
    except (ValueError, AttributeError, RuntimeError) as exc:
        return SendResult(item.sop_instance_uid, None, str(exc))
    status = answer.get("Status")
    if status is None:
        return SendResult(item.sop_instance_uid, None, "no response")
    return SendResult(item.sop_instance_uid, int(status), str(answer.get("ErrorComment", "")))
