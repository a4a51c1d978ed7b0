"""The Query model shared by QIDO-RS and C-FIND, and the value normalisation behind it.

A query is a level, an optional scope (the study or series in the URL), and a list of
(attribute, match) pairs. Matches follow PS3.4 C.2.2.2: single value, list of values
(UIDs or code strings), wildcard (`*` and `?`), range (dates and times, open at either
end), and sequence matching. How the index evaluates them lives in index/search.py.
"""

from __future__ import annotations

import enum
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Protocol

from dicomweb.errors import BadRequest
from dicomweb.resources import is_valid_uid


class Level(enum.Enum):
    # QIDO-RS searches studies, series and instances; C-FIND also patients.
    PATIENT = "patient"
    STUDY = "study"
    SERIES = "series"
    INSTANCE = "instance"


_LEVEL_RANK = {Level.PATIENT: -1, Level.STUDY: 0, Level.SERIES: 1, Level.INSTANCE: 2}


def rank(level: Level) -> int:
    """-1 for patient, 0 for study, 1 for series, 2 for instance."""
    return _LEVEL_RANK[level]


@dataclass(frozen=True, slots=True)
class Attribute:
    """An attribute the index can match or return at a level."""

    keyword: str
    tag: int
    vr: str
    level: Level
    matching: bool = True

    @property
    def hex(self) -> str:
        return f"{self.tag:08X}"


@dataclass(frozen=True, slots=True)
class SequenceKey:
    """A sequence whose items can be matched on some of their attributes."""

    keyword: str
    tag: int
    level: Level
    items: tuple[Attribute, ...]


S, SE, IN = Level.STUDY, Level.SERIES, Level.INSTANCE

# What the index holds per level; `matching=False` ones are returned, never matched.
ATTRIBUTES: tuple[Attribute, ...] = (
    Attribute("PatientName", 0x00100010, "PN", S),
    Attribute("PatientID", 0x00100020, "LO", S),
    Attribute("IssuerOfPatientID", 0x00100021, "LO", S),
    Attribute("PatientBirthDate", 0x00100030, "DA", S),
    Attribute("PatientSex", 0x00100040, "CS", S),
    Attribute("StudyInstanceUID", 0x0020000D, "UI", S),
    Attribute("StudyDate", 0x00080020, "DA", S),
    Attribute("StudyTime", 0x00080030, "TM", S),
    Attribute("AccessionNumber", 0x00080050, "SH", S),
    Attribute("StudyID", 0x00200010, "SH", S),
    Attribute("StudyDescription", 0x00081030, "LO", S),
    Attribute("ReferringPhysicianName", 0x00080090, "PN", S),
    Attribute("ModalitiesInStudy", 0x00080061, "CS", S),
    Attribute("NumberOfStudyRelatedSeries", 0x00201206, "IS", S, matching=False),
    Attribute("NumberOfStudyRelatedInstances", 0x00201208, "IS", S, matching=False),
    Attribute("SeriesInstanceUID", 0x0020000E, "UI", SE),
    Attribute("Modality", 0x00080060, "CS", SE),
    Attribute("SeriesNumber", 0x00200011, "IS", SE),
    Attribute("SeriesDescription", 0x0008103E, "LO", SE),
    Attribute("SeriesDate", 0x00080021, "DA", SE),
    Attribute("SeriesTime", 0x00080031, "TM", SE),
    Attribute("PerformedProcedureStepStartDate", 0x00400244, "DA", SE),
    Attribute("PerformedProcedureStepStartTime", 0x00400245, "TM", SE),
    Attribute("NumberOfSeriesRelatedInstances", 0x00201209, "IS", SE, matching=False),
    Attribute("SOPInstanceUID", 0x00080018, "UI", IN),
    Attribute("SOPClassUID", 0x00080016, "UI", IN),
    Attribute("InstanceNumber", 0x00200013, "IS", IN),
    Attribute("Rows", 0x00280010, "US", IN, matching=False),
    Attribute("Columns", 0x00280011, "US", IN, matching=False),
    Attribute("NumberOfFrames", 0x00280008, "IS", IN, matching=False),
)

REQUEST_ATTRIBUTES = SequenceKey(
    "RequestAttributesSequence",
    0x00400275,
    SE,
    (
        Attribute("ScheduledProcedureStepID", 0x00400009, "SH", SE),
        Attribute("RequestedProcedureID", 0x00401001, "SH", SE),
    ),
)
SEQUENCES: tuple[SequenceKey, ...] = (REQUEST_ATTRIBUTES,)

BY_KEYWORD = {a.keyword: a for a in ATTRIBUTES}
# The study level attributes that are the patient's (PS3.4 C.6.1.1.2).
PATIENT_KEYWORDS = frozenset(
    {"PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex"}
)
PATIENT_NAME = 0x00100010
REFERRING_PHYSICIAN_NAME = 0x00080090
BY_TAG = {a.tag: a for a in ATTRIBUTES}


@dataclass(frozen=True, slots=True)
class SingleValue:
    value: str


@dataclass(frozen=True, slots=True)
class AnyOf:
    """List of UID matching, or several code string values: any of them matches."""

    values: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Wildcard:
    """A value with `*` (any run of characters) and `?` (any one character)."""

    pattern: str


@dataclass(frozen=True, slots=True)
class Range:
    """Inclusive bounds as sortable keys (see date_key and time_key); None is open."""

    low: str | None
    high: str | None


@dataclass(frozen=True, slots=True)
class ItemMatch:
    """Sequence matching: an item matches when all its keys match."""

    matches: tuple[tuple[Attribute, Match], ...]


Match = SingleValue | AnyOf | Wildcard | Range | ItemMatch


@dataclass
class Query:
    """What to find, at which level, and which attributes to return."""

    level: Level
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    matches: list[tuple[Attribute | SequenceKey, Match]] = field(default_factory=list)
    fuzzy: bool = False
    include: set[int] = field(default_factory=set)
    include_all: bool = False
    limit: int = 100
    offset: int = 0


# The most values a list match may hold: databases limit the terms of one expression
# (SQLite: a depth of 1000).
MAX_LIST_VALUES = 500
# The most codes in a code string list, and words in a fuzzy name match. Each becomes a
# condition of its own, so every count makes another statement, and compiled statements
# are cached (SQLAlchemy keeps hundreds per engine): 500 codes cost megabytes each.
MAX_TERMS = 16


def _split_list(attribute: Attribute, value: str, limit: int = MAX_LIST_VALUES) -> list[str]:
    """The values of a list match ("a,b" or "a\\b"), stripped; BadRequest if too many."""
    values = re.split(r"[\\,]", value)
    if len(values) > limit:
        raise BadRequest(
            f"{attribute.keyword}: a list of more than {limit} values is not supported"
        )
    return [v.strip() for v in values]


def parse_match(attribute: Attribute, value: str) -> Match | None:
    """The match a query value asks for; None for universal matching (return only).

    Raises BadRequest when the value cannot be a value of the attribute's VR.
    """
    value = value.strip(" ")
    if value in ("", "*"):
        return None
    vr = attribute.vr
    if vr == "UI":
        uids = tuple(_split_list(attribute, value))
        for uid in uids:
            if not is_valid_uid(uid):
                raise BadRequest(f"{attribute.keyword}: {uid!r} is not a valid UID")
        return AnyOf(uids) if len(uids) > 1 else SingleValue(uids[0])
    if vr == "DA":
        return _range(attribute, value, date_key)
    if vr == "TM":
        return _range(attribute, value, time_key)
    if vr == "IS":
        numbers = tuple(_split_list(attribute, value))
        for number in numbers:
            if not re.fullmatch(r"[+-]?\d{1,12}", number):
                raise BadRequest(f"{attribute.keyword}: {number!r} is not an integer")
        values = tuple(str(int(n)) for n in numbers)
        return AnyOf(values) if len(values) > 1 else SingleValue(values[0])
    if vr == "PN":
        # Fuzzy matching makes a condition per word (wildcards split words).
        words = name_words(value.replace("*", " ").replace("?", " "))
        if len(words) > MAX_TERMS:
            raise BadRequest(
                f"{attribute.keyword}: a name of more than {MAX_TERMS} words is not supported"
            )
    if "*" in value or "?" in value:
        return Wildcard(value)
    if vr == "CS":
        codes = tuple(v for v in _split_list(attribute, value, MAX_TERMS) if v)
        if not codes:
            raise BadRequest(f"{attribute.keyword}: {value!r} holds no code string")
        return AnyOf(codes) if len(codes) > 1 else SingleValue(codes[0])
    return SingleValue(value)


def _range(attribute: Attribute, value: str, key: KeyFunction) -> Match:
    if "-" not in value:
        low = key(attribute, value, high=False)
        if attribute.vr == "TM":
            # A time names a period as long as its precision: 1030 is 10:30:00-10:30:59.
            return Range(low, key(attribute, value, high=True))
        return SingleValue(low)
    if value.count("-") > 1 or value == "-":
        raise BadRequest(f"{attribute.keyword}: {value!r} is not a {attribute.vr} range")
    low, high = value.split("-")
    return Range(
        key(attribute, low, high=False) if low else None,
        key(attribute, high, high=True) if high else None,
    )


class KeyFunction(Protocol):
    """Type of date_key and time_key."""

    def __call__(self, attribute: Attribute, value: str, *, high: bool) -> str: ...


_DATE = re.compile(r"(\d{4})(\d{2})(\d{2})")
_TIME = re.compile(r"(\d{2})(\d{2})?(\d{2})?(?:\.(\d{1,6}))?")


def date_key(attribute: Attribute, value: str, *, high: bool = False) -> str:
    """A DA query value, checked: YYYYMMDD."""
    match = _DATE.fullmatch(value.strip())
    if match is None or not (1 <= int(match[2]) <= 12 and 1 <= int(match[3]) <= 31):
        raise BadRequest(f"{attribute.keyword}: {value!r} is not a date (YYYYMMDD)")
    return value.strip()


def time_key(attribute: Attribute, value: str, *, high: bool = False) -> str:
    """A TM query value as a full HHMMSS.FFFFFF key.

    Omitted components of a low bound are zero; of a high bound, their largest value,
    so that `-1030` includes 10:30:59 (PS3.4 C.2.2.2.5).
    """
    key = normalize_time(value, high=high)
    if key is None:
        raise BadRequest(f"{attribute.keyword}: {value!r} is not a time (HHMMSS.FFFFFF)")
    return key


def normalize_time(value: str | None, *, high: bool = False) -> str | None:
    """A stored or queried TM value as HHMMSS.FFFFFF; None when it is not a time."""
    if not value:
        return None
    match = _TIME.fullmatch(value.strip().replace(":", ""))
    if match is None:
        return None
    hours, minutes, seconds, fraction = match.groups()
    if int(hours) > 23 or int(minutes or 0) > 59 or int(seconds or 0) > 60:
        return None
    fill = "59" if high else "00"
    return (
        f"{hours}{minutes or fill}{seconds or fill}."
        f"{(fraction or '').ljust(6, '9' if high else '0')}"
    )


def datetime_key(date: str | None, time: str | None) -> str:
    """The sort and range key of a date and time: YYYYMMDDHHMMSS.FFFFFF, '' without a date."""
    if not date:
        return ""
    return date.strip() + (normalize_time(time) or "")


# Person names: case folded and NFKC normalised; trailing empty components dropped.
_WORD_SPLIT = re.compile(r"[\s^=,.\-]+")


def fold(value: str) -> str:
    """Case-insensitive form of a name or name pattern."""
    return unicodedata.normalize("NFKC", value).casefold()


def name_group_key(group: str) -> str:
    """One component group of a PN as it is matched: folded, trailing '^' removed."""
    return fold(group).rstrip("^ ")


def name_words(value: str) -> list[str]:
    """The words of a PN for fuzzy matching: folded, without diacritics."""
    plain = "".join(
        c for c in unicodedata.normalize("NFKD", fold(value)) if not unicodedata.combining(c)
    )
    return [w for w in _WORD_SPLIT.split(plain) if w]


def name_keys(value: str | None) -> list[tuple[int, str]]:
    """(kind, key) rows of a stored PN: kinds 0-2 are its component groups, 3 its words."""
    if not value:
        return []
    keys: list[tuple[int, str]] = []
    for kind, group in enumerate(value.split("=")[:3]):
        key = name_group_key(group)
        if key:
            keys.append((kind, key))
    keys.extend((WORD, word) for word in dict.fromkeys(name_words(value)))
    return keys


WORD = 3


def like_pattern(pattern: str) -> str:
    """A DICOM wildcard pattern as an SQL LIKE pattern with escape character '\\'."""
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def literal_prefix(pattern: str) -> str:
    """The characters of a wildcard pattern before its first wildcard."""
    return re.split(r"[*?]", pattern, maxsplit=1)[0]


# Attributes kept per study and per series (from their first instance) for includefield:
# the Patient, General Study and Patient Study modules, and the General Series, Frame of
# Reference and General Equipment modules with the Performed Procedure Step summary.
STUDY_LEVEL_TAGS = frozenset(
    {
        *(0x00100010, 0x00100020, 0x00100021, 0x00100022, 0x00100024, 0x00100030),
        *(0x00100032, 0x00100040, 0x00100200, 0x00101001, 0x00101002, 0x00101005),
        *(0x00101060, 0x00101090, 0x00102160, 0x00102201, 0x00102292, 0x00102297),
        *(0x00102299, 0x00104000, 0x00120062, 0x00120063),
        *(0x0020000D, 0x00080020, 0x00080030, 0x00080050, 0x00080051, 0x00080090),
        *(0x00080096, 0x0008009C, 0x00080201, 0x00081030, 0x00081032, 0x00081048),
        *(0x00081060, 0x00081080, 0x00200010, 0x00101010, 0x00101020, 0x00101030),
        *(0x00102180, 0x001021B0, 0x00102203, 0x00321033, 0x00401012),
    }
)
SERIES_LEVEL_TAGS = frozenset(
    {
        *(0x0020000E, 0x00080060, 0x00200011, 0x0008103E, 0x0008103F, 0x00080021),
        *(0x00080031, 0x00200060, 0x00081050, 0x00081070, 0x00181030, 0x00180015),
        *(0x00185100, 0x00200052, 0x00201040, 0x00080070, 0x00080080, 0x00081010),
        *(0x00081040, 0x00081090, 0x00181000, 0x00181020, 0x00400244, 0x00400245),
        *(0x00400253, 0x00400254, 0x00400275, 0x00081111, 0x00102210),
    }
)
LEVEL_TAGS = {Level.STUDY: STUDY_LEVEL_TAGS, Level.SERIES: SERIES_LEVEL_TAGS}


def level_attributes(metadata: dict[str, Any], level: Level) -> dict[str, Any]:
    """The elements of an instance's DICOM JSON that belong to the study or series level."""
    tags = LEVEL_TAGS[level]
    return {
        key: element
        for key, element in metadata.items()
        if int(key, 16) in tags and "BulkDataURI" not in element
    }


def request_items(series_attributes: dict[str, Any]) -> list[tuple[str | None, str | None]]:
    """(ScheduledProcedureStepID, RequestedProcedureID) of each Request Attributes item."""
    items = series_attributes.get(f"{REQUEST_ATTRIBUTES.tag:08X}", {}).get("Value", [])
    return [(_first(item, "00400009"), _first(item, "00401001")) for item in items]


def _first(item: dict[str, Any], tag: str) -> str | None:
    values = item.get(tag, {}).get("Value") or [None]
    value = values[0]
    return value if isinstance(value, str) else None
