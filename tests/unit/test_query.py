"""The Query model: value parsing per VR, time keys, person name keys, LIKE escaping."""

from __future__ import annotations

import pytest

from dicomweb.errors import BadRequest
from dicomweb.query import (
    BY_KEYWORD,
    AnyOf,
    Range,
    SingleValue,
    Wildcard,
    datetime_key,
    like_pattern,
    literal_prefix,
    name_keys,
    normalize_time,
    parse_match,
)


@pytest.mark.parametrize(
    ("keyword", "value", "expected"),
    [
        ("PatientID", "", None),
        ("PatientID", "*", None),
        ("PatientID", "A1", SingleValue("A1")),
        ("PatientID", "A*", Wildcard("A*")),
        ("PatientID", "A?", Wildcard("A?")),
        ("StudyInstanceUID", "1.2", SingleValue("1.2")),
        ("StudyInstanceUID", "1.2,1.3", AnyOf(("1.2", "1.3"))),
        ("StudyInstanceUID", "1.2\\1.3", AnyOf(("1.2", "1.3"))),
        ("Modality", "CT\\MR", AnyOf(("CT", "MR"))),
        ("Modality", "CT,MR", AnyOf(("CT", "MR"))),
        ("SeriesNumber", "007", SingleValue("7")),
        ("SeriesNumber", "1,2", AnyOf(("1", "2"))),
        ("StudyDate", "20260101", SingleValue("20260101")),
        ("StudyDate", "20260101-20260131", Range("20260101", "20260131")),
        ("StudyDate", "-20260131", Range(None, "20260131")),
        ("StudyDate", "20260101-", Range("20260101", None)),
        ("StudyTime", "10", Range("100000.000000", "105959.999999")),
        ("StudyTime", "1030-", Range("103000.000000", None)),
        ("StudyTime", "-1030", Range(None, "103059.999999")),
        ("StudyTime", "101530.5-", Range("101530.500000", None)),
    ],
)
def test_parse_match(keyword: str, value: str, expected: object) -> None:
    assert parse_match(BY_KEYWORD[keyword], value) == expected


@pytest.mark.parametrize(
    ("keyword", "value"),
    [
        ("StudyInstanceUID", "1.2.x"),
        ("StudyInstanceUID", "1.2,,1.3"),
        ("StudyDate", "2026"),
        ("StudyDate", "20261301"),
        ("StudyDate", "2026*"),
        ("StudyDate", "-"),
        ("StudyTime", "24"),
        ("StudyTime", "1261"),
        ("StudyTime", "10:3"),
        ("SeriesNumber", "1*"),
        ("SeriesNumber", "x"),
    ],
)
def test_parse_match_refuses_malformed_values(keyword: str, value: str) -> None:
    with pytest.raises(BadRequest, match=keyword):
        parse_match(BY_KEYWORD[keyword], value)


def test_single_time_value_is_the_period_it_names() -> None:
    assert parse_match(BY_KEYWORD["StudyTime"], "1030") == Range("103000.000000", "103059.999999")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1015", "101500.000000"),
        ("101530", "101530.000000"),
        ("101530.25", "101530.250000"),
        ("10:15:30", "101530.000000"),
        ("", None),
        ("noon", None),
    ],
)
def test_normalize_time(value: str, expected: str | None) -> None:
    assert normalize_time(value) == expected


def test_datetime_key_orders_studies_without_a_date_last() -> None:
    assert datetime_key("20260101", "1015") == "20260101101500.000000"
    assert datetime_key(None, "1015") == ""
    assert datetime_key("20260101", None) < datetime_key("20260101", "0000")


def test_name_keys_cover_groups_and_words() -> None:
    keys = name_keys("Yamada^Tarou=山田^太郎=やまだ^たろう")
    assert (0, "yamada^tarou") in keys
    assert (1, "山田^太郎") in keys
    assert (2, "やまだ^たろう") in keys
    assert {k for kind, k in keys if kind == 3} >= {"yamada", "tarou", "山田", "太郎"}
    assert name_keys("DOE^JANE^^^") == [(0, "doe^jane"), (3, "doe"), (3, "jane")]
    assert (3, "muller") in name_keys("Müller^Jürgen")
    assert name_keys(None) == []


def test_like_pattern_escapes_sql_metacharacters() -> None:
    assert like_pattern("A_B%C\\D*E?") == "A\\_B\\%C\\\\D%E_"
    assert literal_prefix("ABC*D?") == "ABC"
    assert literal_prefix("*ABC") == ""
