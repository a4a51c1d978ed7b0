"""A small, blocking DICOM upper-layer client: associate, C-ECHO, C-FIND, release.

Used by bench/dimse.py to time C-FIND. pynetdicom would do, but its
association and DUL threads poll every millisecond: with eight associations
open, the client alone used about a third of a CPU while idle, on a
two-CPU machine it shares with the server under test, and each round trip
waited for those polls. This client does only what the benchmark needs, with
plain blocking sockets: a thread per association that sleeps in recv() until
the peer answers, one sendall() per message, TCP_NODELAY on.

Scope (PS3.8, PS3.7): one A-ASSOCIATE-RQ proposing one presentation context
per abstract syntax with the given transfer syntaxes; P-DATA-TF with one PDV
per PDU, fragmented to the peer's maximum PDU length; command sets in Implicit
VR Little Endian; data sets in the accepted transfer syntax (Explicit or
Implicit VR Little Endian), encoded and decoded with pydicom; A-RELEASE,
A-ABORT. No extended negotiation, no role selection, no asynchronous
operations (one outstanding request per association).
"""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from io import BytesIO
from typing import BinaryIO

from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
VERIFICATION = "1.2.840.10008.1.1"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
PATIENT_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.1.1"
# pydicom's UID root, as in bench/common.py; the version name is free text.
IMPLEMENTATION_CLASS_UID = "1.2.826.0.1.3680043.8.498.1.1"
IMPLEMENTATION_VERSION = "DWBENCH_SCU"
OUR_MAX_PDU = 65536  # what we accept; the peer sends PDUs up to this size
_DEFAULT_PEER_PDU = 16384  # used when the peer says 0 (no limit), to stay reasonable

# PDU types
_ASSOCIATE_RQ, _ASSOCIATE_AC, _ASSOCIATE_RJ = 0x01, 0x02, 0x03
_P_DATA, _RELEASE_RQ, _RELEASE_RP, _ABORT = 0x04, 0x05, 0x06, 0x07

# Command fields
C_ECHO_RQ, C_ECHO_RSP = 0x0030, 0x8030
C_FIND_RQ, C_FIND_RSP = 0x0020, 0x8020
_NO_DATA_SET = 0x0101
PENDING = (0xFF00, 0xFF01)


class DimseError(RuntimeError):
    """The association could not be made, or the peer broke the protocol."""


# --------------------------------------------------------------------------
# Encoding helpers
# --------------------------------------------------------------------------


def _item(kind: int, data: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(data)) + data


def _pdu(kind: int, data: bytes) -> bytes:
    return struct.pack(">BBI", kind, 0, len(data)) + data


def _ae(title: str) -> bytes:
    raw = title.encode("ascii")
    if not 0 < len(raw) <= 16:
        raise ValueError(f"AE title {title!r} must be 1 to 16 characters")
    return raw.ljust(16, b" ")


def _uid_value(uid: str) -> bytes:
    raw = uid.encode("ascii")
    return raw + b"\x00" if len(raw) % 2 else raw


def _element(tag: int, value: bytes) -> bytes:
    """One Implicit VR Little Endian element of group 0000."""
    return struct.pack("<HHI", tag >> 16, tag & 0xFFFF, len(value)) + value


def encode_command(
    command_field: int,
    sop_class: str,
    message_id: int,
    has_data_set: bool,
    priority: int | None = None,
) -> bytes:
    """A command set (PS3.7 E.1), group length first, Implicit VR Little Endian."""
    body = _element(0x00000002, _uid_value(sop_class))
    body += _element(0x00000100, struct.pack("<H", command_field))
    body += _element(0x00000110, struct.pack("<H", message_id))
    if priority is not None:
        body += _element(0x00000700, struct.pack("<H", priority))
    body += _element(0x00000800, struct.pack("<H", 0x0001 if has_data_set else _NO_DATA_SET))
    return _element(0x00000000, struct.pack("<I", len(body))) + body


def decode_command(data: bytes) -> dict[int, bytes]:
    """The elements of a command set, by tag (raw values)."""
    out: dict[int, bytes] = {}
    pos = 0
    while pos + 8 <= len(data):
        group, elem, length = struct.unpack_from("<HHI", data, pos)
        pos += 8
        out[(group << 16) | elem] = data[pos : pos + length]
        pos += length
    return out


def _us(cmd: dict[int, bytes], tag: int) -> int | None:
    raw = cmd.get(tag)
    return struct.unpack("<H", raw[:2])[0] if raw and len(raw) >= 2 else None


def encode_data_set(ds: Dataset, transfer_syntax: str) -> bytes:
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = transfer_syntax == ImplicitVRLittleEndian
    write_dataset(fp, ds)
    return fp.getvalue()


def decode_data_set(data: bytes, transfer_syntax: str) -> Dataset:
    return read_dataset(BytesIO(data), transfer_syntax == ImplicitVRLittleEndian, True)


# --------------------------------------------------------------------------
# Association
# --------------------------------------------------------------------------


@dataclass
class Message:
    command: dict[int, bytes]
    data_set: bytes | None
    context_id: int

    @property
    def command_field(self) -> int | None:
        return _us(self.command, 0x00000100)

    @property
    def status(self) -> int | None:
        return _us(self.command, 0x00000900)

    @property
    def error_comment(self) -> str:
        return self.command.get(0x00000902, b"").decode("ascii", "replace").strip(" \x00")


@dataclass
class FindResult:
    status: int | None  # the final status
    matches: int  # pending responses
    first: Dataset | None  # the first match's identifier (decoded), if any
    error_comment: str = ""


@dataclass
class Association:
    sock: socket.socket
    reader: BinaryIO
    # abstract syntax -> (presentation context id, accepted transfer syntax)
    contexts: dict[str, tuple[int, str]]
    peer_max_pdu: int
    message_id: int = 0
    closed: bool = False
    rejected: dict[str, int] = field(default_factory=dict)  # abstract syntax -> result

    @classmethod
    def open(
        cls,
        host: str,
        port: int,
        calling_aet: str,
        called_aet: str,
        abstract_syntaxes: Sequence[str],
        transfer_syntaxes: Sequence[str] = (ExplicitVRLittleEndian, ImplicitVRLittleEndian),
        timeout: float = 30.0,
    ) -> Association:
        """Connect and negotiate; raises DimseError when rejected or aborted."""
        sock = socket.create_connection((host, port), timeout=timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            reader = sock.makefile("rb")
            proposed: dict[int, str] = {}
            items = _item(0x10, APPLICATION_CONTEXT.encode("ascii"))
            for n, abstract in enumerate(abstract_syntaxes):
                context_id = 2 * n + 1
                proposed[context_id] = abstract
                sub = _item(0x30, abstract.encode("ascii"))
                for ts in transfer_syntaxes:
                    sub += _item(0x40, ts.encode("ascii"))
                items += _item(0x20, bytes((context_id, 0, 0, 0)) + sub)
            user = _item(0x51, struct.pack(">I", OUR_MAX_PDU))
            user += _item(0x52, IMPLEMENTATION_CLASS_UID.encode("ascii"))
            user += _item(0x55, IMPLEMENTATION_VERSION.encode("ascii"))
            items += _item(0x50, user)
            header = struct.pack(">HH", 1, 0) + _ae(called_aet) + _ae(calling_aet) + bytes(32)
            sock.sendall(_pdu(_ASSOCIATE_RQ, header + items))

            kind, body = _read_pdu(reader)
            if kind == _ASSOCIATE_RJ:
                result, source, reason = body[1], body[2], body[3]
                raise DimseError(
                    f"association rejected by {called_aet}: result {result}, source {source}, "
                    f"reason {reason}"
                )
            if kind == _ABORT:
                raise DimseError(f"association aborted by {called_aet} (A-ABORT)")
            if kind != _ASSOCIATE_AC:
                raise DimseError(f"unexpected PDU type {kind:#04x} instead of A-ASSOCIATE-AC")
            contexts: dict[str, tuple[int, str]] = {}
            rejected: dict[str, int] = {}
            peer_max = 0
            pos = 68  # protocol version, reserved, AE titles, reserved
            while pos + 4 <= len(body):
                item_type, _, length = struct.unpack_from(">BBH", body, pos)
                data = body[pos + 4 : pos + 4 + length]
                pos += 4 + length
                if item_type == 0x21:
                    context_id, result = data[0], data[2]
                    abstract = proposed.get(context_id)
                    if abstract is None:
                        continue
                    if result != 0:
                        rejected[abstract] = result
                        continue
                    for sub_type, sub_data in _sub_items(data[4:]):
                        if sub_type == 0x40:
                            ts = sub_data.decode("ascii").rstrip("\x00 ")
                            contexts[abstract] = (context_id, ts)
                elif item_type == 0x50:
                    for sub_type, sub_data in _sub_items(data):
                        if sub_type == 0x51:
                            peer_max = struct.unpack(">I", sub_data[:4])[0]
            return cls(sock, reader, contexts, peer_max or _DEFAULT_PEER_PDU, rejected=rejected)
        except BaseException:
            sock.close()
            raise

    # Messages

    def _next_id(self) -> int:
        self.message_id = self.message_id % 0xFFFF + 1
        return self.message_id

    def _context(self, abstract: str) -> tuple[int, str]:
        try:
            return self.contexts[abstract]
        except KeyError:
            raise DimseError(
                f"no accepted presentation context for {abstract} "
                f"(rejected: {self.rejected.get(abstract)})"
            ) from None

    def send_message(self, context_id: int, command: bytes, data_set: bytes | None) -> None:
        """One DIMSE message as P-DATA-TF PDUs, written with a single sendall()."""
        room = self.peer_max_pdu - 6  # PDV item: 4 bytes length, context id, header
        chunks: list[bytes] = []
        for payload, is_command in ((command, True), (data_set, False)):
            if payload is None:
                continue
            for start in range(0, max(len(payload), 1), room):
                last = start + room >= len(payload)
                control = (0x01 if is_command else 0x00) | (0x02 if last else 0x00)
                fragment = payload[start : start + room]
                pdv = struct.pack(">IBB", len(fragment) + 2, context_id, control) + fragment
                chunks.append(_pdu(_P_DATA, pdv))
        self.sock.sendall(b"".join(chunks))

    def receive_message(self) -> Message:
        command = bytearray()
        data_set = bytearray()
        command_done = False
        expects_data = False
        context = 0
        while True:
            kind, body = _read_pdu(self.reader)
            if kind == _ABORT:
                self.closed = True
                raise DimseError("association aborted by the peer (A-ABORT)")
            if kind == _RELEASE_RQ:
                self.closed = True
                raise DimseError("the peer released the association mid-operation")
            if kind != _P_DATA:
                raise DimseError(f"unexpected PDU type {kind:#04x} during an operation")
            pos = 0
            while pos + 6 <= len(body):
                length, context, control = struct.unpack_from(">IBB", body, pos)
                fragment = body[pos + 6 : pos + 4 + length]
                pos += 4 + length
                if control & 0x01:
                    command += fragment
                    if control & 0x02:
                        command_done = True
                        parsed = decode_command(bytes(command))
                        expects_data = _us(parsed, 0x00000800) != _NO_DATA_SET
                        if not expects_data:
                            return Message(parsed, None, context)
                else:
                    data_set += fragment
                    if control & 0x02 and command_done:
                        return Message(decode_command(bytes(command)), bytes(data_set), context)

    # Services

    def echo(self) -> int | None:
        context_id, _ = self._context(VERIFICATION)
        cmd = encode_command(C_ECHO_RQ, VERIFICATION, self._next_id(), has_data_set=False)
        self.send_message(context_id, cmd, None)
        reply = self.receive_message()
        if reply.command_field != C_ECHO_RSP:
            raise DimseError(f"expected C-ECHO-RSP, got command {reply.command_field}")
        return reply.status

    def find(self, identifier: Dataset, model: str = STUDY_ROOT_FIND) -> FindResult:
        """Send a C-FIND-RQ and read every response; counts the pending ones.

        Only the first match's identifier is decoded (the checks need no more,
        and decoding them all would cost the client CPU the server could use).
        """
        context_id, ts = self._context(model)
        message_id = self._next_id()
        cmd = encode_command(C_FIND_RQ, model, message_id, has_data_set=True, priority=0)
        self.send_message(context_id, cmd, encode_data_set(identifier, ts))
        matches = 0
        first: Dataset | None = None
        while True:
            reply = self.receive_message()
            if reply.command_field != C_FIND_RSP:
                raise DimseError(f"expected C-FIND-RSP, got command {reply.command_field}")
            responding = _us(reply.command, 0x00000120)
            if responding != message_id:
                raise DimseError(f"C-FIND-RSP for message {responding}, expected {message_id}")
            status = reply.status
            if status in PENDING:
                matches += 1
                if first is None and reply.data_set is not None:
                    first = decode_data_set(reply.data_set, ts)
                continue
            return FindResult(status, matches, first, reply.error_comment)

    def release(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.sock.sendall(_pdu(_RELEASE_RQ, bytes(4)))
            while True:
                kind, _ = _read_pdu(self.reader)
                if kind in (_RELEASE_RP, _ABORT):
                    break
        except (OSError, DimseError):
            pass
        finally:
            self.close()

    def abort(self) -> None:
        if not self.closed:
            self.closed = True
            with contextlib.suppress(OSError):
                self.sock.sendall(_pdu(_ABORT, bytes(4)))
        self.close()

    def close(self) -> None:
        try:
            self.reader.close()
        finally:
            self.sock.close()

    def __enter__(self) -> Association:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:
            self.release()
        else:
            self.abort()


def _sub_items(data: bytes) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    pos = 0
    while pos + 4 <= len(data):
        kind, _, length = struct.unpack_from(">BBH", data, pos)
        out.append((kind, data[pos + 4 : pos + 4 + length]))
        pos += 4 + length
    return out


def _read_exact(reader: BinaryIO, count: int) -> bytes:
    data = reader.read(count)
    if data is None or len(data) != count:
        raise DimseError("connection closed by the peer")
    return data


def _read_pdu(reader: BinaryIO) -> tuple[int, bytes]:
    kind, _, length = struct.unpack(">BBI", _read_exact(reader, 6))
    return kind, _read_exact(reader, length)
