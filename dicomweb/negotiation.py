"""Content negotiation: Accept headers to the representation a response uses."""

from __future__ import annotations

from dataclasses import dataclass

from dicomweb.errors import NotAcceptable
from dicomweb.multipart import parse_content_type, split_unquoted

DICOM_JSON = "application/dicom+json"
DICOM_XML = "application/dicom+xml"


@dataclass(frozen=True, slots=True)
class AcceptItem:
    media_type: str
    parameters: dict[str, str]
    quality: float
    position: int


def parse_accept(value: str | None) -> list[AcceptItem]:
    """The media ranges of an Accept header, best first (header order among equal q)."""
    if not value or not value.strip():
        return [AcceptItem("*/*", {}, 1.0, 0)]
    items = []
    for position, raw in enumerate(split_unquoted(value, ",")):
        if not raw.strip():
            continue
        media_type, params = parse_content_type(raw)
        try:
            quality = float(params.pop("q", "1"))
        except ValueError:
            quality = 0.0
        if not 0.0 <= quality <= 1.0:
            quality = 0.0
        items.append(AcceptItem(media_type, params, quality, position))
    return sorted(items, key=lambda item: -item.quality)


def _specificity(item: AcceptItem, candidate: str) -> int:
    """How specifically `item` names `candidate` (0: not at all)."""
    if item.media_type == candidate or (
        candidate == DICOM_JSON and item.media_type == "application/json"
    ):
        return 3
    if item.media_type == "multipart/related":
        part_type = item.parameters.get("type", "").strip().lower()
        return 3 if part_type == candidate == DICOM_XML else 0
    if item.media_type == "application/*":
        return 2
    if item.media_type == "*/*":
        return 1
    return 0


def choose(accept: str | None, candidates: list[str]) -> str | None:
    """The candidate the Accept header prefers, or None if it accepts none of them.

    Each candidate takes the quality of the most specific range that names it (RFC 9110
    12.5.1); the highest quality wins, then the earliest range in the header, then the
    order of `candidates`.
    """
    items = parse_accept(accept)
    best: tuple[float, int, int] | None = None
    chosen = None
    for preference, candidate in enumerate(candidates):
        matches = [(_specificity(i, candidate), i) for i in items]
        matches = [(s, i) for s, i in matches if s > 0]
        if not matches:
            continue
        top = max(s for s, _ in matches)
        item = min((i for s, i in matches if s == top), key=lambda i: i.position)
        if item.quality <= 0:
            continue
        score = (item.quality, -item.position, -preference)
        if best is None or score > best:
            best, chosen = score, candidate
    return chosen


def response_media_type(accept: str | None) -> str:
    """Choose application/dicom+json or application/dicom+xml for a data set response.

    multipart/related; type="application/dicom+xml" selects XML too (PS3.18 8.7.3).
    """
    chosen = choose(accept, [DICOM_JSON, DICOM_XML])
    if chosen is None:
        raise NotAcceptable(
            f"none of the accepted media types can be produced; use {DICOM_JSON} or {DICOM_XML}"
        )
    return chosen
