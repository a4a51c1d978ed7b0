"""Transcoding for retrieve and ingest: what can be sent in which transfer syntax, the
work itself in worker threads, and a cache of transcoded frames.

The codec work is `pixels.transcode`'s; this module decides and schedules it. A choice
is made from what the index knows (stored transfer syntax, the Image Pixel attributes
in the stored metadata) before any pixel is read, so a request that cannot be served
is refused before its response starts. Nothing here imports Starlette: C-GET and
C-MOVE can send through the same functions.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pydicom
from anyio import CapacityLimiter, to_thread
from pydicom.uid import UID

from dicomweb.errors import NotAcceptable
from dicomweb.lru import SizedLRU
from dicomweb.negotiation import (
    LOSSY_CAPABLE,
    LOSSY_SYNTAXES,
    NATIVE_LITTLE_ENDIAN,
    NOT_ON_THE_WEB,
    Wanted,
)
from dicomweb.pixels.codecs import SYNTAXES, Kind
from dicomweb.pixels.transcode import (
    FrameInfo,
    TranscodeError,
    can_decode,
    transcode_frame,
    transcode_instance,
    transcode_refusal,
)
from dicomweb.resources import is_valid_uid

log = logging.getLogger(__name__)

T = TypeVar("T")

# The syntax one stored transfer syntax goes out in for a choice of representation,
# given whether the stored pixel data is lossy; None if the choice cannot carry it.
Target = Callable[[Wanted, str, bool], str | None]

_PIXEL_TAGS = ("7FE00010", "7FE00008", "7FE00009")
_LOSSY_IMAGE_COMPRESSION = "00282110"


def syntax_name(transfer_syntax: str) -> str:
    """The name of a transfer syntax, for messages."""
    if is_valid_uid(transfer_syntax):
        name = str(UID(transfer_syntax).name)
        if name != transfer_syntax:
            return name
    return "an unknown transfer syntax"


def is_lossy(transfer_syntax: str, lossy_image_compression: str | None) -> bool:
    """Whether pixel data stored in `transfer_syntax` is held in lossy compressed form.

    `lossy_image_compression` is the instance's Lossy Image Compression (0028,2110); it
    decides for the syntaxes that hold reversible or irreversible codestreams.
    """
    if transfer_syntax in LOSSY_SYNTAXES:
        return True
    return transfer_syntax in LOSSY_CAPABLE and lossy_image_compression == "01"


@dataclass(frozen=True, slots=True)
class Stored:
    """What choosing a representation needs to know of one stored instance.

    `info` is None when the metadata was not read (only the transfer syntax is known)
    or when it does not describe the pixel data completely.
    """

    sop_instance_uid: str
    transfer_syntax_uid: str
    lossy: bool = False
    has_pixel_data: bool = True
    info: FrameInfo | None = None

    @classmethod
    def from_metadata(cls, sop_instance_uid: str, transfer_syntax: str, metadata: bytes) -> Stored:
        """The description of an instance, from its stored DICOM JSON."""
        model: dict[str, Any] = orjson.loads(metadata)
        has_pixel_data = any(tag in model for tag in _PIXEL_TAGS)
        info = None
        if has_pixel_data:
            try:
                info = FrameInfo.from_json(model)
            except TranscodeError:
                info = None
        values = model.get(_LOSSY_IMAGE_COMPRESSION, {}).get("Value") or [None]
        flag = values[0] if isinstance(values[0], str) else None
        lossy = is_lossy(transfer_syntax, flag) if has_pixel_data else False
        return cls(sop_instance_uid, transfer_syntax, lossy, has_pixel_data, info)


def needs_transcoding(stored: str, target: str, *, values_only: bool) -> bool:
    """Whether data stored in `stored` must be re-encoded to be sent in `target`.

    Frames and bulk data carry values only, whose bytes are the same in every native
    little-endian syntax; a whole instance must be in the syntax asked for.
    """
    if stored == target:
        return False
    return not (values_only and stored in NATIVE_LITTLE_ENDIAN and target in NATIVE_LITTLE_ENDIAN)


def refusal(source: Stored, target: str, *, values_only: bool) -> str | None:
    """Why `source` cannot be sent in `target`, or None if it can (as it is or
    transcoded)."""
    stored = source.transfer_syntax_uid
    if target in NOT_ON_THE_WEB:
        return "that transfer syntax is not used with web services (PS3.18 8.7.3)"
    if not needs_transcoding(stored, target, values_only=values_only):
        return None
    target_syntax = SYNTAXES.get(target)
    if target_syntax is None or (
        target_syntax.encoder is None and target_syntax.kind is not Kind.NATIVE
    ):
        return "this server cannot produce it"
    if stored not in SYNTAXES:
        return "this server cannot decode the stored data"
    if not source.has_pixel_data:
        return None  # only the encoding of the data set changes
    if source.info is not None:
        return transcode_refusal(stored, target, source.info)
    if target_syntax.kind is Kind.NATIVE and not values_only:
        # Native output takes any pixels; only the decoder matters.
        return None if can_decode(stored) else "no decoder for the stored data is installed"
    return "the instance's Image Pixel attributes do not describe its pixel data"


def needs_description(
    transfer_syntax: str, choices: Iterable[Wanted], target: Target, *, values_only: bool
) -> bool:
    """Whether choosing among `choices` for an instance stored in `transfer_syntax` needs
    its metadata: to know whether it is lossy, to check that a compressed target can
    carry its pixels, or (`values_only`: frames) to describe the frames to transcode.
    Whole instances go to native targets without it, which is the common case."""
    if transfer_syntax in LOSSY_CAPABLE:
        return True
    lossy = transfer_syntax in LOSSY_SYNTAXES
    for choice in choices:
        sent = target(choice, transfer_syntax, lossy)
        if sent is None or not needs_transcoding(transfer_syntax, sent, values_only=values_only):
            continue
        syntax = SYNTAXES.get(sent)
        if values_only or (syntax is not None and syntax.kind is not Kind.NATIVE):
            return True
    return False


def choose(
    choices: Sequence[Wanted], sources: Sequence[Stored], target: Target, *, values_only: bool
) -> tuple[Wanted, dict[str, str]]:
    """The representation to send, and per SOP Instance UID the syntax it goes out in.

    `choices` come best first (by q-value, then header order). The first quality level
    with a choice that can carry every instance wins; within it, a choice that needs no
    transcoding is preferred, as it costs nothing. NotAcceptable, saying why the most
    preferred choice failed, when none can.
    """
    reason: str | None = None
    for _, group in groupby(choices, key=lambda c: c.quality):
        feasible: tuple[Wanted, dict[str, str]] | None = None
        for choice in group:
            plan, why = _plan(choice, sources, target, values_only=values_only)
            if plan is None:
                reason = reason or why
                continue
            transcodes = any(
                needs_transcoding(
                    s.transfer_syntax_uid, plan[s.sop_instance_uid], values_only=values_only
                )
                for s in sources
            )
            if not transcodes:
                return choice, plan
            feasible = feasible or (choice, plan)
        if feasible is not None:
            return feasible
    raise NotAcceptable(reason or "none of the accepted media types can carry this resource")


def _plan(
    choice: Wanted, sources: Sequence[Stored], target: Target, *, values_only: bool
) -> tuple[dict[str, str] | None, str | None]:
    plan: dict[str, str] = {}
    for source in sources:
        sent = target(choice, source.transfer_syntax_uid, source.lossy)
        if sent is None:
            return None, None
        why = refusal(source, sent, values_only=values_only)
        if why is not None:
            stored = source.transfer_syntax_uid
            return None, (
                f"the data is stored as {syntax_name(stored)} ({stored}) and cannot be sent "
                f"as {syntax_name(sent)} ({sent[:64]}): {why}; "
                "ask for transfer-syntax=* to receive it as stored"
            )
        plan[source.sop_instance_uid] = sent
    return plan, None


# Transcoded frames by (blob key, frame number, target syntax).
FrameCache = SizedLRU[tuple[str, int, str], bytes]


class Transcoder:
    """Runs transcoding in worker threads, as many at a time as there are cores (more
    would only hold more frames in memory), and caches transcoded frames."""

    def __init__(self, cache_bytes: int, workers: int | None = None) -> None:
        self.cache = FrameCache(cache_bytes)
        self._limiter = CapacityLimiter(workers or os.cpu_count() or 1)

    async def run(self, work: Callable[..., T], *args: Any) -> T:
        """`work(*args)` in a worker thread, within the limit."""
        return await to_thread.run_sync(work, *args, limiter=self._limiter)

    async def frame(
        self,
        key: tuple[str, int],
        read: Callable[[], Awaitable[bytes]],
        source: str,
        target: str,
        info: FrameInfo,
    ) -> bytes:
        """Frame `key` (blob key, frame number) in `target`: from the cache, else read
        (`read` gives its bytes as stored in `source`) and transcoded."""
        cache_key = (*key, target)
        cached = self.cache.get(cache_key)
        if cached is not None:
            return cached
        data = await read()
        encoded, _ = await self.run(transcode_frame, data, source, target, info)
        self.cache.put(cache_key, encoded, len(encoded))
        return encoded

    async def instance(self, data: bytes, target: str) -> bytes:
        """A whole PS3.10 file in `target`."""
        return await self.run(transcode_instance, data, target)


# Ingest


def storage_syntax_problem(transfer_syntax: str) -> str | None:
    """Why instances cannot be stored in `transfer_syntax`, or None if they can."""
    syntax = SYNTAXES.get(transfer_syntax)
    writable = sorted(
        s.uid for s in SYNTAXES.values() if s.kind is not Kind.BIG_ENDIAN and not s.is_lossy
    )
    if syntax is None or syntax.kind is Kind.BIG_ENDIAN:
        return (
            f"{transfer_syntax!r} is not a transfer syntax this server writes; "
            f"use one of {', '.join(writable)}"
        )
    if syntax.is_lossy:
        return f"{syntax.name} is lossy: stored instances would lose information"
    if not syntax.available():
        return f"no encoder for {syntax.name} is installed"
    return None


def recode_for_storage(source: Path, target: str) -> tuple[bytes | None, str]:
    """The received PS3.10 file at `source` encoded in `target` for storage, or None and
    the reason it is stored as received. CPU work for a worker thread.

    Stored as received: data already in `target`, without pixel data, in lossy
    compressed form (re-encoding it would keep its losses, grow it and lose the
    original codestream), pixels the target cannot encode, and data that cannot be
    decoded or parsed (ingest then judges it as it would any other).
    """
    raw = source.read_bytes()
    try:
        ds = pydicom.dcmread(io.BytesIO(raw), stop_before_pixels=True)
        syntax = str(ds.file_meta.get("TransferSyntaxUID", ""))
    except Exception as exc:
        # pydicom reports malformed input with many exception types; ingest refuses it.
        return None, f"it cannot be parsed ({type(exc).__name__})"
    if syntax == target:
        return None, "it is in that transfer syntax already"
    if "Rows" not in ds or "Columns" not in ds:
        return None, "it has no pixel data"
    if is_lossy(syntax, str(ds.get("LossyImageCompression", "")) or None):
        return None, f"its pixel data is lossy compressed ({syntax_name(syntax)})"
    try:
        info = FrameInfo.from_dataset(ds)
    except TranscodeError as exc:
        return None, str(exc)
    reason = transcode_refusal(syntax, target, info)
    if reason is not None:
        return None, reason
    try:
        return transcode_instance(raw, target), ""
    except TranscodeError as exc:
        return None, str(exc)
