"""Query -> SQL on the indexed columns -> DICOM JSON results (QIDO-RS now, C-FIND later).

Text matching is case-sensitive except for person names, which are matched through
their folded keys in `name_key` (see query.name_keys). A wildcard with a literal
prefix also gets a range condition on that prefix, so both databases use an index.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import (
    ColumnElement,
    Row,
    Select,
    and_,
    exists,
    false,
    literal,
    or_,
    select,
    true,
)
from sqlalchemy.sql.elements import ColumnClause

from dicomweb.index import schema
from dicomweb.query import (
    BY_TAG,
    LEVEL_TAGS,
    PATIENT_NAME,
    REFERRING_PHYSICIAN_NAME,
    REQUEST_ATTRIBUTES,
    WORD,
    AnyOf,
    Attribute,
    ItemMatch,
    Level,
    Match,
    Query,
    Range,
    SequenceKey,
    SingleValue,
    Wildcard,
    fold,
    like_pattern,
    literal_prefix,
    name_group_key,
    name_words,
    rank,
)

p, st, se, i = schema.patient, schema.study, schema.series, schema.instance
nk, ra = schema.name_key, schema.request_attribute

# Above every character: `key < prefix + _TOP` bounds the keys that start with prefix.
_TOP = "\U0010ffff"
_SPECIFIC_CHARACTER_SET = "00080005"

# Attribute keyword -> the column holding it (times: their normalised key column).
_COLUMNS: dict[str, Any] = {
    "PatientID": p.c.patient_id,
    "IssuerOfPatientID": p.c.issuer_of_patient_id,
    "PatientBirthDate": p.c.patient_birth_date,
    "PatientSex": p.c.patient_sex,
    "StudyInstanceUID": st.c.study_instance_uid,
    "StudyDate": st.c.study_date,
    "StudyTime": st.c.time_key,
    "AccessionNumber": st.c.accession_number,
    "StudyID": st.c.study_id,
    "StudyDescription": st.c.study_description,
    "SeriesInstanceUID": se.c.series_instance_uid,
    "Modality": se.c.modality,
    "SeriesNumber": se.c.series_number,
    "SeriesDescription": se.c.series_description,
    "SeriesDate": se.c.series_date,
    "SeriesTime": se.c.series_time_key,
    "PerformedProcedureStepStartDate": se.c.performed_procedure_step_start_date,
    "PerformedProcedureStepStartTime": se.c.performed_procedure_step_start_time_key,
    "SOPInstanceUID": i.c.sop_instance_uid,
    "SOPClassUID": i.c.sop_class_uid,
    "InstanceNumber": i.c.instance_number,
}
_INTEGER_COLUMNS = frozenset({"series_number", "instance_number"})
_REQUEST_COLUMNS = {
    "ScheduledProcedureStepID": ra.c.scheduled_procedure_step_id,
    "RequestedProcedureID": ra.c.requested_procedure_id,
}


@dataclass(frozen=True, slots=True)
class _Returned:
    """A column returned as an attribute; `default` ones are returned unasked."""

    column: Any
    tag: str
    vr: str
    kind: str  # text, multi (backslash-separated), number, frames, name
    default: bool = True


_PATIENT_RETURNED = (
    _Returned(p.c.patient_name, "00100010", "PN", "name"),
    _Returned(p.c.patient_id, "00100020", "LO", "text"),
    _Returned(p.c.issuer_of_patient_id, "00100021", "LO", "text"),
    _Returned(p.c.patient_birth_date, "00100030", "DA", "text"),
    _Returned(p.c.patient_sex, "00100040", "CS", "text"),
    _Returned(p.c.number_of_studies.label("patient_studies"), "00201200", "IS", "number"),
    _Returned(p.c.number_of_series.label("patient_series"), "00201202", "IS", "number"),
    _Returned(p.c.number_of_instances.label("patient_instances"), "00201204", "IS", "number"),
)
_STUDY_RETURNED = (
    _Returned(st.c.study_date, "00080020", "DA", "text"),
    _Returned(st.c.study_time, "00080030", "TM", "text"),
    _Returned(st.c.accession_number, "00080050", "SH", "text"),
    _Returned(st.c.modalities_in_study, "00080061", "CS", "multi"),
    _Returned(st.c.referring_physician_name, "00080090", "PN", "name"),
    _Returned(st.c.study_description, "00081030", "LO", "text", default=False),
    _Returned(p.c.patient_name, "00100010", "PN", "name"),
    _Returned(p.c.patient_id, "00100020", "LO", "text"),
    _Returned(p.c.issuer_of_patient_id, "00100021", "LO", "text", default=False),
    _Returned(p.c.patient_birth_date, "00100030", "DA", "text"),
    _Returned(p.c.patient_sex, "00100040", "CS", "text"),
    _Returned(st.c.study_instance_uid, "0020000D", "UI", "text"),
    _Returned(st.c.study_id, "00200010", "SH", "text"),
    _Returned(st.c.number_of_series.label("study_series"), "00201206", "IS", "number"),
    _Returned(st.c.number_of_instances.label("study_instances"), "00201208", "IS", "number"),
)
_SERIES_RETURNED = (
    _Returned(se.c.series_date, "00080021", "DA", "text", default=False),
    _Returned(se.c.series_time, "00080031", "TM", "text", default=False),
    _Returned(se.c.modality, "00080060", "CS", "text"),
    _Returned(se.c.series_description, "0008103E", "LO", "text"),
    _Returned(se.c.series_instance_uid, "0020000E", "UI", "text"),
    _Returned(se.c.series_number, "00200011", "IS", "number"),
    _Returned(se.c.number_of_instances.label("series_instances"), "00201209", "IS", "number"),
    _Returned(se.c.performed_procedure_step_start_date, "00400244", "DA", "text"),
    _Returned(se.c.performed_procedure_step_start_time, "00400245", "TM", "text"),
)
_INSTANCE_RETURNED = (
    _Returned(i.c.sop_class_uid, "00080016", "UI", "text"),
    _Returned(i.c.sop_instance_uid, "00080018", "UI", "text"),
    _Returned(i.c.instance_number, "00200013", "IS", "number"),
    _Returned(i.c.number_of_frames, "00280008", "IS", "frames"),
    _Returned(i.c.rows, "00280010", "US", "number"),
    _Returned(i.c.columns, "00280011", "US", "number"),
)
_RETURNED = {
    Level.PATIENT: _PATIENT_RETURNED,
    Level.STUDY: _STUDY_RETURNED,
    Level.SERIES: _SERIES_RETURNED,
    Level.INSTANCE: _INSTANCE_RETURNED,
}
_STORED = {
    Level.STUDY: st.c.attributes.label("study_attributes"),
    Level.SERIES: se.c.attributes.label("series_attributes"),
    Level.INSTANCE: i.c.metadata,
}
_AVAILABILITY = {"vr": "CS", "Value": ["ONLINE"]}
_UTF8 = {"vr": "CS", "Value": ["ISO_IR 192"]}


@dataclass(frozen=True, slots=True)
class SearchResult:
    """Matches as DICOM JSON objects, in order, and whether more matched past the limit."""

    datasets: list[dict[str, Any]]
    more: bool


def build_select(query: Query) -> Select[Any]:
    """The SELECT for a query: its conditions, the deterministic order, limit + 1 rows."""
    columns = [r.column for r in _returned(query)]
    columns.extend(_STORED[level] for level in _LEVELS if _needs_stored(query, level))
    return _filtered(select(*columns), query)


def build_locate(query: Query) -> Select[Any]:
    """The instances a query's matches select, whatever its level, for retrieval.

    Rows: the fields of the Index's InstanceSummary.
    """
    instances = Query(
        Level.INSTANCE,
        study_instance_uid=query.study_instance_uid,
        series_instance_uid=query.series_instance_uid,
        matches=query.matches,
        fuzzy=query.fuzzy,
        limit=query.limit,
        offset=query.offset,
    )
    statement = select(
        st.c.study_instance_uid,
        se.c.series_instance_uid,
        i.c.sop_instance_uid,
        i.c.sop_class_uid,
        i.c.transfer_syntax_uid,
        i.c.number_of_frames,
        i.c.blob_key,
        i.c.size,
        i.c.sha256,
    )
    return _filtered(statement, instances)


def _filtered(statement: Select[Any], query: Query) -> Select[Any]:
    if query.level is Level.PATIENT:
        statement = statement.select_from(p)
    elif query.level is Level.STUDY:
        statement = statement.select_from(st.join(p, p.c.id == st.c.patient_pk))
    elif query.level is Level.SERIES:
        statement = statement.select_from(
            se.join(st, st.c.id == se.c.study_pk).join(p, p.c.id == st.c.patient_pk)
        )
    else:
        statement = statement.select_from(
            i.join(se, se.c.id == i.c.series_pk)
            .join(st, st.c.id == i.c.study_pk)
            .join(p, p.c.id == st.c.patient_pk)
        )
    conditions = list(_scope(query))
    conditions.extend(_conditions(query))
    return (
        statement.where(and_(true(), *conditions))
        .order_by(*_order(query))
        .limit(query.limit + 1)
        .offset(query.offset)
    )


def _scope(query: Query) -> Iterable[ColumnElement[bool]]:
    # A study row without instances (left by an instance whose series was indexed under
    # another study) is not a result.
    if query.level is Level.STUDY:
        yield st.c.number_of_instances > 0
    if query.level is Level.PATIENT:
        yield p.c.number_of_instances > 0
    if query.study_instance_uid is not None:
        yield st.c.study_instance_uid == query.study_instance_uid
    if query.series_instance_uid is not None:
        yield se.c.series_instance_uid == query.series_instance_uid


def _order(query: Query) -> list[Any]:
    if query.level is Level.PATIENT:
        return [p.c.id]
    study_order = [st.c.datetime_key.desc(), st.c.id.desc()]
    series_order = [se.c.series_number.is_(None), se.c.series_number, se.c.id]
    instance_order = [i.c.instance_number.is_(None), i.c.instance_number, i.c.id]
    if query.level is Level.STUDY:
        return study_order
    order: list[Any] = []
    if query.study_instance_uid is None:
        order.extend(study_order)
    if query.level is Level.SERIES:
        return order + series_order
    if query.series_instance_uid is None:
        order.extend(series_order)
    return order + instance_order


def _conditions(query: Query) -> Iterable[ColumnElement[bool]]:
    by_keyword = {key.keyword: match for key, match in query.matches}
    combined = _combined_date_time(by_keyword.get("StudyDate"), by_keyword.get("StudyTime"))
    if combined is not None:
        yield combined
    for key, match in query.matches:
        if combined is not None and key.keyword in ("StudyDate", "StudyTime"):
            continue
        if isinstance(key, SequenceKey):
            yield _sequence_condition(key, match)
        elif key.keyword in ("PatientName", "ReferringPhysicianName"):
            yield _name_condition(key, match, query.fuzzy, query.level)
        elif key.keyword == "ModalitiesInStudy" and isinstance(match, SingleValue | AnyOf):
            yield _modalities_contain(match)
        elif key.keyword == "ModalitiesInStudy":
            other = se.alias("modality_series")
            yield exists(
                select(literal(1)).where(
                    other.c.study_pk == st.c.id, _match(other.c.modality, match)
                )
            )
        else:
            yield _match(_COLUMNS[key.keyword], match)


def _modalities_contain(match: SingleValue | AnyOf) -> ColumnElement[bool]:
    """ModalitiesInStudy matching on the study's own list of modalities.

    A condition on the study row rather than a probe into its series: in the order of
    results, the first matches are found without leaving the study index scan.
    """
    values = (match.value,) if isinstance(match, SingleValue) else match.values
    padded = literal("\\") + st.c.modalities_in_study + literal("\\")
    return or_(*(padded.contains(f"\\{v}\\", autoescape=True) for v in values))


def _combined_date_time(date: Match | None, time: Match | None) -> ColumnElement[bool] | None:
    """StudyDate and StudyTime as one date-time range (PS3.4 C.2.2.2.5.1), when both given."""
    if date is None or time is None or not isinstance(time, Range):
        return None
    if isinstance(date, SingleValue):
        low_date: str | None = date.value
        high_date: str | None = date.value
    elif isinstance(date, Range):
        low_date, high_date = date.low, date.high
    else:
        return None
    conditions = []
    if low_date is not None:
        conditions.append(st.c.datetime_key >= low_date + (time.low or ""))
    if high_date is not None:
        conditions.append(st.c.datetime_key <= high_date + (time.high or _TOP))
    return and_(st.c.datetime_key != "", *conditions)


def _match(column: Any, match: Match) -> ColumnElement[bool]:
    if isinstance(match, SingleValue):
        return column == _typed(column, match.value)  # type: ignore[no-any-return]
    if isinstance(match, AnyOf):
        return column.in_([_typed(column, v) for v in match.values])  # type: ignore[no-any-return]
    if isinstance(match, Range):
        bounds = []
        if match.low is not None:
            bounds.append(column >= match.low)
        if match.high is not None:
            bounds.append(column <= match.high)
        return and_(*bounds)
    if isinstance(match, Wildcard):
        return _like(column, match.pattern)
    raise TypeError(f"{match!r} cannot match a single column")


def _typed(column: Any, value: str) -> Any:
    # IS values are stored as integers; the query parser has checked the digits.
    if isinstance(column, ColumnClause) and column.name in _INTEGER_COLUMNS:
        return int(value)
    return value


def _like(column: Any, pattern: str) -> ColumnElement[bool]:
    condition = column.like(like_pattern(pattern), escape="\\")
    prefix = literal_prefix(pattern)
    if prefix:
        condition = and_(column >= prefix, column < prefix + _TOP, condition)
    return condition  # type: ignore[no-any-return]


def _name_condition(
    attribute: Attribute, match: Match, fuzzy: bool, level: Level
) -> ColumnElement[bool]:
    tag = PATIENT_NAME if attribute.keyword == "PatientName" else REFERRING_PHYSICIAN_NAME

    def has_name(kind: ColumnElement[bool], condition: ColumnElement[bool]) -> ColumnElement[bool]:
        studies = select(nk.c.study_pk).where(nk.c.tag == tag, kind, condition)
        if level is Level.PATIENT:
            named = st.alias("named_study")
            return p.c.id.in_(select(named.c.patient_pk).where(named.c.id.in_(studies)))
        return st.c.id.in_(studies)

    if isinstance(match, AnyOf):
        return or_(
            *(_name_condition(attribute, SingleValue(v), fuzzy, level) for v in match.values)
        )
    if not isinstance(match, SingleValue | Wildcard):
        return false()
    value = match.value if isinstance(match, SingleValue) else match.pattern
    if fuzzy:
        words = name_words(value.replace("*", " ").replace("?", " "))
        return and_(
            true(),
            *(has_name(nk.c.kind == WORD, _like(nk.c.key, word + "*")) for word in words),
        )
    groups = value.split("=")
    if len(groups) == 1:
        return has_name(nk.c.kind < WORD, _name_match(groups[0], match))
    return and_(
        true(),
        *(
            has_name(nk.c.kind == kind, _name_match(group, match))
            for kind, group in enumerate(groups[:3])
            if group.strip()
        ),
    )


def _name_match(group: str, match: Match) -> ColumnElement[bool]:
    if isinstance(match, Wildcard) and ("*" in group or "?" in group):
        return _like(nk.c.key, fold(group))
    return nk.c.key == name_group_key(group)


def _sequence_condition(key: SequenceKey, match: Match) -> ColumnElement[bool]:
    assert key is REQUEST_ATTRIBUTES and isinstance(match, ItemMatch)
    conditions = [_match(_REQUEST_COLUMNS[a.keyword], m) for a, m in match.matches]
    return se.c.id.in_(select(ra.c.series_pk).where(*conditions))


def _returned_levels(query: Query) -> set[Level]:
    """Levels whose attributes the results carry (PS3.18 10.6.3.3)."""
    levels = {query.level}
    if query.level is not Level.STUDY and query.study_instance_uid is None:
        levels.add(Level.STUDY)
    if query.level is Level.INSTANCE and query.series_instance_uid is None:
        levels.add(Level.SERIES)
    return levels


def _needs_stored(query: Query, level: Level) -> bool:
    """Whether stored attributes of `level` are needed beyond the indexed columns."""
    if level is Level.PATIENT or rank(level) > rank(query.level):
        return False
    returned = level in _returned_levels(query)
    if returned and (query.include_all or (level is Level.SERIES)):
        # Series results carry their Request Attributes Sequence (PS3.18 Table 10.6.3-4).
        return True
    extra = {tag for tag in _wanted(query) if tag not in BY_TAG}
    if level is Level.INSTANCE:
        return bool(extra)
    return bool(extra & LEVEL_TAGS[level])


_LEVELS = (Level.PATIENT, Level.STUDY, Level.SERIES, Level.INSTANCE)
# Stored series attributes returned without being asked for.
_SERIES_DEFAULTS = frozenset({REQUEST_ATTRIBUTES.tag})


def _wanted(query: Query) -> set[int]:
    """Tags asked for by includefield or as matching keys."""
    return query.include | {key.tag for key, _ in query.matches}


def _returned(query: Query) -> list[_Returned]:
    """The columns the results carry, in the order of the SELECT.

    The default attributes of the levels a result describes, and any attribute of
    the query's level or above that was asked for (PS3.18 10.6.3.3).
    """
    levels = _returned_levels(query)
    wanted = _wanted(query)
    return [
        r
        for level in _LEVELS
        if rank(level) <= rank(query.level) and (level is not Level.PATIENT or level in levels)
        for r in _RETURNED[level]
        if (level in levels and (r.default or query.include_all)) or int(r.tag, 16) in wanted
    ]


def to_datasets(query: Query, rows: Sequence[Row[Any]]) -> SearchResult:
    """DICOM JSON objects of the first `query.limit` rows (keys unsorted)."""
    returned = _returned(query)
    stored_at = len(returned)
    wanted = None if query.include_all else _wanted(query) | _SERIES_DEFAULTS
    datasets = []
    for row in rows[: query.limit]:
        ds: dict[str, Any] = {}
        ascii_only = True
        for raw in row[stored_at:]:
            if raw is not None:
                ds.update(_stored_elements(raw, wanted))
                ascii_only = ascii_only and raw.isascii()
        for r, value in zip(returned, row, strict=False):
            if value is None or value == "":
                ds[r.tag] = {"vr": r.vr}
                continue
            if r.kind == "text":
                ds[r.tag] = {"vr": r.vr, "Value": [value]}
                ascii_only = ascii_only and value.isascii()
            elif r.kind == "name":
                ds[r.tag] = _name(value)
                ascii_only = ascii_only and value.isascii()
            elif r.kind == "multi":
                ds[r.tag] = {"vr": r.vr, "Value": value.split("\\")}
            elif r.kind == "frames" and value == 0:
                ds[r.tag] = {"vr": r.vr}  # not an image
            else:
                ds[r.tag] = {"vr": r.vr, "Value": [value]}
        ds["00080056"] = _AVAILABILITY
        if not ascii_only:
            ds[_SPECIFIC_CHARACTER_SET] = _UTF8
        datasets.append(ds)
    return SearchResult(datasets, len(rows) > query.limit)


def _stored_elements(raw: bytes, wanted: set[int] | None) -> dict[str, Any]:
    """Elements of stored DICOM JSON that were asked for; binary values are left out."""
    stored: dict[str, Any] = orjson.loads(raw)
    return {
        key: element
        for key, element in stored.items()
        if "BulkDataURI" not in element
        and "InlineBinary" not in element
        and (wanted is None or int(key, 16) in wanted)
    }


def _name(value: str) -> dict[str, Any]:
    groups = dict(zip(("Alphabetic", "Ideographic", "Phonetic"), value.split("="), strict=False))
    return {"vr": "PN", "Value": [{k: v for k, v in groups.items() if v}]}
