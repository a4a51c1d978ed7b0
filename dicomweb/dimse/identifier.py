"""C-FIND, C-MOVE and C-GET identifiers to the Query model, and results back to data sets."""

from __future__ import annotations

from typing import Any

from pydicom import Dataset
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.multival import MultiValue

from dicomweb.errors import BadRequest
from dicomweb.query import (
    BY_TAG,
    PATIENT_KEYWORDS,
    SEQUENCES,
    Attribute,
    ItemMatch,
    Level,
    Match,
    Query,
    SequenceKey,
    parse_match,
    rank,
)

LEVELS = {
    "PATIENT": Level.PATIENT,
    "STUDY": Level.STUDY,
    "SERIES": Level.SERIES,
    "IMAGE": Level.INSTANCE,
}
_QUERY_RETRIEVE_LEVEL = 0x00080052
_SPECIFIC_CHARACTER_SET = 0x00080005
_RETRIEVE_AE_TITLE = 0x00080054
# Keys that shape the answer rather than select it.
_NOT_MATCHED = {_QUERY_RETRIEVE_LEVEL, _SPECIFIC_CHARACTER_SET, _RETRIEVE_AE_TITLE}
# The unique key of each level (PS3.4 C.6.1.1 and C.6.2.1), returned even when not asked.
UNIQUE_KEYS = {
    Level.PATIENT: 0x00100020,
    Level.STUDY: 0x0020000D,
    Level.SERIES: 0x0020000E,
    Level.INSTANCE: 0x00080018,
}


class IdentifierError(BadRequest):
    """An identifier that cannot be a query (PS3.4 C.4.1.3: failure A900 or C000)."""


def to_query(identifier: Dataset, patient_root: bool) -> tuple[Query, list[int]]:
    """The Query an identifier asks for, and the tags of its keys in their order.

    Keys the index cannot match are returned empty (PS3.4 C.2.2.1.2 allows this).
    """
    name = str(identifier.get("QueryRetrieveLevel", "")).strip()
    level = LEVELS.get(name)
    if level is None or (level is Level.PATIENT and not patient_root):
        raise IdentifierError(f"Query/Retrieve Level {name!r} is not supported by this model")
    query = Query(level=level)
    requested: list[int] = []
    for element in identifier:
        tag = int(element.tag)
        if tag in _NOT_MATCHED or element.tag.group == 0x0002:
            continue
        requested.append(tag)
        query.include.add(tag)
        key = _key(tag, level)
        if key is None:
            continue
        try:
            match = _match(key, element)
        except BadRequest as exc:
            # A value QIDO-RS would refuse with 400: an unusable identifier (A900).
            raise IdentifierError(exc.detail) from None
        if match is not None:
            query.matches.append((key, match))
    if UNIQUE_KEYS[level] not in requested:
        requested.append(UNIQUE_KEYS[level])
    return query, requested


def _key(tag: int, level: Level) -> Attribute | SequenceKey | None:
    sequence = next((s for s in SEQUENCES if s.tag == tag), None)
    if sequence is not None:
        return sequence if rank(sequence.level) <= rank(level) else None
    attribute = BY_TAG.get(tag)
    if attribute is None or not attribute.matching:
        return None
    if level is Level.PATIENT:
        return attribute if attribute.keyword in PATIENT_KEYWORDS else None
    return attribute if rank(attribute.level) <= rank(level) else None


def _match(key: Attribute | SequenceKey, element: DataElement) -> Match | None:
    if isinstance(key, SequenceKey):
        items = list(element.value or [])
        if not items:
            return None
        matches: list[tuple[Attribute, Match]] = []
        for item_element in items[0]:
            attribute = next((a for a in key.items if a.tag == int(item_element.tag)), None)
            if attribute is not None:
                match = parse_match(attribute, _text(item_element))
                if match is not None:
                    matches.append((attribute, match))
        return ItemMatch(tuple(matches)) if matches else None
    return parse_match(key, _text(element))


def _text(element: DataElement) -> str:
    value = element.value
    if value is None:
        return ""
    if isinstance(value, MultiValue | list):
        return "\\".join(str(v) for v in value)
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return str(value)


def to_response(result: dict[str, Any], requested: list[int], level_name: str, aet: str) -> Dataset:
    """A C-FIND response identifier: the requested keys with the result's values."""
    model: dict[str, Any] = {"00080052": {"vr": "CS", "Value": [level_name]}}
    if _RETRIEVE_AE_TITLE in requested:
        model["00080054"] = {"vr": "AE", "Value": [aet]}
    if "00080005" in result:
        model["00080005"] = result["00080005"]
    for tag in requested:
        key = f"{tag:08X}"
        if key in result:
            model[key] = result[key]
        elif tag != _RETRIEVE_AE_TITLE:
            model[key] = {"vr": _vr(tag)}
    return Dataset.from_json(model)


def _vr(tag: int) -> str:
    try:
        return str(dictionary_VR(tag)).split(" or ")[0]
    except KeyError:
        return "UN"
