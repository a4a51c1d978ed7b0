"""Values of an instance's DICOM JSON metadata (PS3.18 F.2) that rendering reads.

Rendering needs a few attributes beyond the Image Pixel module: rescale, windows, LUTs,
overlays and some text for annotations. Enhanced multi-frame images keep some of them in
functional groups, so lookups can go through a frame's functional groups first.

Binary values (LUT data, overlay data) arrive inline (`InlineBinary`, `Value`) or, when
longer than the bulk data threshold, as a `BulkDataURI`; the caller reads those from
storage and passes them in `bulk`, keyed by the path after `/bulkdata/`.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from dicomweb.pixels.frameinfo import TranscodeError

__all__ = ["Attributes", "RenderError", "bulk_paths", "is_overlay_data"]

SHARED_GROUPS: Final = "52009229"
PER_FRAME_GROUPS: Final = "52009230"
_BULKDATA: Final = "/bulkdata/"
# Attributes whose binary values rendering may read, as tags at any depth.
_BINARY_TAGS: Final = frozenset({"00283006", "00281201", "00281202", "00281203"})
_PALETTE_SEGMENTED: Final = frozenset({"00281221", "00281222", "00281223"})


class RenderError(TranscodeError):
    """The pixels or their description cannot be rendered (a 400 to HTTP clients)."""


Json = dict[str, Any]


@dataclass(frozen=True)
class Attributes:
    """An instance's DICOM JSON, read for one frame.

    `bulk` holds the values of BulkDataURIs, keyed by their path (`tag[/item/tag...]`);
    `byteorder` is that of binary words in the stored data set ('>' for Explicit VR
    Big Endian).
    """

    metadata: Json
    frame_number: int = 1
    bulk: Mapping[str, bytes] = field(default_factory=dict)
    byteorder: str = "<"

    def groups(self) -> Iterator[Json]:
        """Where a frame's attribute may be: its per-frame and the shared functional
        groups of an enhanced image, then the top level."""
        per_frame = _items(self.metadata.get(PER_FRAME_GROUPS))
        if 0 < self.frame_number <= len(per_frame):
            yield per_frame[self.frame_number - 1]
        shared = _items(self.metadata.get(SHARED_GROUPS))
        if shared:
            yield shared[0]

    def macro(self, sequence: str) -> Json | None:
        """The first item of a functional group macro's sequence for this frame."""
        for group in self.groups():
            items = _items(group.get(sequence))
            if items:
                return items[0]
        return None

    def numbers(self, tag: str, *, within: str | None = None) -> list[float]:
        """The numeric values of `tag`: from the frame's functional group macro
        `within` if it has them, else the top level."""
        source = self.macro(within) if within else None
        for data_set in (source, self.metadata):
            if data_set is not None:
                values = _numbers(data_set.get(tag))
                if values:
                    return values
        return []

    def number(self, tag: str, default: float, *, within: str | None = None) -> float:
        """The first numeric value of `tag`, or `default`."""
        values = self.numbers(tag, within=within)
        return values[0] if values else default

    def text(self, tag: str, data_set: Json | None = None) -> str:
        """The values of `tag` as one string (person names in their alphabetic form)."""
        attribute = (self.metadata if data_set is None else data_set).get(tag)
        values = attribute.get("Value") if isinstance(attribute, dict) else None
        if not isinstance(values, list):
            return ""
        parts = []
        for value in values:
            if isinstance(value, dict):
                value = value.get("Alphabetic", "")
            parts.append(str(value))
        return "\\".join(parts).strip()

    def words(self, tag: str, data_set: Json, dtype: str = "u2") -> NDArray[Any]:
        """The value of a binary or US/SS attribute as an array of `dtype` words."""
        attribute = data_set.get(tag)
        if not isinstance(attribute, dict):
            raise RenderError(f"({tag[:4]},{tag[4:]}) is missing")
        if isinstance(attribute.get("Value"), list):
            return np.asarray(attribute["Value"]).astype(dtype)
        return np.frombuffer(self.binary(tag, attribute), f"{self.byteorder}{dtype}")

    def binary(self, tag: str, attribute: Json) -> bytes:
        """The bytes of a binary attribute, inline or read through its BulkDataURI."""
        if "InlineBinary" in attribute:
            try:
                return base64.b64decode(attribute["InlineBinary"], validate=True)
            except (binascii.Error, ValueError, TypeError):
                raise RenderError(f"({tag[:4]},{tag[4:]}) has malformed InlineBinary") from None
        uri = attribute.get("BulkDataURI")
        if isinstance(uri, str) and _BULKDATA in uri:
            value = self.bulk.get(uri.split(_BULKDATA, 1)[1])
            if value is not None:
                return value
        raise RenderError(f"the value of ({tag[:4]},{tag[4:]}) was not provided")


def bulk_paths(metadata: Json, *, overlays: bool = False) -> list[str]:
    """The BulkDataURI paths (`tag[/item/tag...]`) whose values rendering may need:
    LUT data, palettes and, with `overlays`, overlay data."""
    paths: list[str] = []
    _collect(metadata, overlays, paths)
    return paths


def _collect(data_set: Json, overlays: bool, paths: list[str]) -> None:
    for tag, attribute in data_set.items():
        if not isinstance(attribute, dict):
            continue
        if attribute.get("vr") == "SQ":
            for item in _items(attribute):
                _collect(item, overlays, paths)
            continue
        wanted = tag in _BINARY_TAGS or tag in _PALETTE_SEGMENTED
        wanted = wanted or (overlays and is_overlay_data(tag))
        uri = attribute.get("BulkDataURI")
        if wanted and isinstance(uri, str) and _BULKDATA in uri:
            paths.append(uri.split(_BULKDATA, 1)[1])


def is_overlay_data(tag: str) -> bool:
    """Whether `tag` is Overlay Data (60xx,3000) of one of the 16 overlay groups."""
    return len(tag) == 8 and tag.startswith("60") and tag.endswith("3000") and _even_group(tag)


def _even_group(tag: str) -> bool:
    try:
        return int(tag[:4], 16) % 2 == 0
    except ValueError:
        return False


def _items(attribute: object) -> list[Json]:
    if not isinstance(attribute, dict):
        return []
    values = attribute.get("Value")
    if not isinstance(values, list):
        return []
    return [item for item in values if isinstance(item, dict)]


def _numbers(attribute: object) -> list[float]:
    if not isinstance(attribute, dict):
        return []
    values = attribute.get("Value")
    if not isinstance(values, list):
        return []
    numbers: list[float] = []
    for value in values:
        # DS and IS values arrive as JSON numbers or, from some writers, as strings.
        try:
            numbers.append(float(value))
        except (TypeError, ValueError):
            return []
    return numbers
