"""QIDO-RS query parameters: any query is answered or refused with a 400.

Queries are drawn from the keys QIDO-RS knows (keywords, tags, sequence paths, the
control parameters) and from random names, with values shaped for each VR (dates,
times, ranges, UID lists, wildcards, person names) and values that are not. Parsed
queries are turned into SQL and run; end to end, they are sent to the app.
"""

from __future__ import annotations

import gc
import string
import time
import tracemalloc

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from dicomweb.query import ATTRIBUTES, MAX_LIST_VALUES, MAX_TERMS, REQUEST_ATTRIBUTES, Level
from tests.fuzz.served import SERIES_UID, STUDY_UID, Served, check_response, end_to_end_examples
from tests.fuzz.targets import check_qido

_KEYWORDS = [a.keyword for a in ATTRIBUTES]
_SEQUENCE_KEYS = [
    f"{REQUEST_ATTRIBUTES.keyword}.{item.keyword}" for item in REQUEST_ATTRIBUTES.items
] + [f"{REQUEST_ATTRIBUTES.tag:08X}.{item.tag:08x}" for item in REQUEST_ATTRIBUTES.items]

keys = st.one_of(
    st.sampled_from(_KEYWORDS),
    st.sampled_from([f"{a.tag:08X}" for a in ATTRIBUTES] + [f"{a.tag:08x}" for a in ATTRIBUTES]),
    st.sampled_from(_SEQUENCE_KEYS),
    st.sampled_from(["limit", "offset", "fuzzymatching", "includefield", "LIMIT", "Offset"]),
    st.sampled_from(["charset", "accept", "PatientName.Foo", "a.b.c", "00100010.", "."]),
    st.text(max_size=20),
)

_digits = st.sampled_from(["0", "1", "9", "٣", "²", "０"])  # ASCII, Arabic-Indic, others
dates = st.one_of(
    st.dates().map(lambda d: d.strftime("%Y%m%d")),
    st.text(string.digits, min_size=0, max_size=10),
    st.lists(_digits, min_size=8, max_size=8).map("".join),
)
times = st.one_of(
    st.times().map(lambda t: t.strftime("%H%M%S.%f")),
    st.times().map(lambda t: t.strftime("%H:%M")),
    st.text(string.digits + ".:", max_size=14),
)
ranges = st.builds(
    lambda low, high, sep: f"{low}{sep}{high}",
    dates | times | st.just(""),
    dates | times | st.just(""),
    st.sampled_from(["-", "--", " - ", "-"]),
)
uids = st.from_regex(r"(0|[1-9][0-9]{0,5})(\.(0|[1-9][0-9]{0,5})){0,6}", fullmatch=True)
uid_lists = st.builds(
    lambda values, sep: sep.join(values),
    st.lists(uids | st.text(max_size=8), min_size=1, max_size=5),
    st.sampled_from([",", "\\", " , ", ",,"]),
)
numbers = st.one_of(
    st.integers(-(10**20), 10**20).map(str),
    st.sampled_from(["+7", "-0", "1.5", "1e3", " 1", "9" * 13, "9" * 5000, "", "²", "٣"]),
)
names = st.text(st.sampled_from([*"Doe^Jane=山田ü*?%_\\, .-", "^", "="]), min_size=0, max_size=20)
includefields = st.lists(
    st.sampled_from([*_KEYWORDS, "all", "ALL", "00081030", "0008103e", "Foo", "", "x.y"])
    | st.text(max_size=10),
    max_size=4,
).map(",".join)
values = st.one_of(
    dates, times, ranges, uid_lists, numbers, names, includefields,
    st.sampled_from(["true", "false", "TRUE", "yes", "*", "?", ",", "\\", "-", " ", ""]),
    st.text(max_size=30),
)  # fmt: skip
params = st.lists(st.tuples(keys, values), max_size=6)
levels = st.sampled_from([Level.STUDY, Level.SERIES, Level.INSTANCE])


@given(params, levels)
@example([("Modality", ",")], Level.SERIES)  # a code string list of no codes
@example([("limit", "²")], Level.STUDY)  # a digit to str.isdigit() only
@example([("limit", "9" * 5000)], Level.STUDY)  # too many digits for int()
@example([("offset", "9" * 30)], Level.STUDY)  # too large for a 64-bit integer
@example([("a\nb", "1")], Level.STUDY)  # an unsupported key that breaks a header
def test_parse_query(params: list[tuple[str, str]], level: Level) -> None:
    check_qido(params, level)


@pytest.mark.parametrize(
    ("key", "limit"),
    [
        ("StudyInstanceUID", MAX_LIST_VALUES),
        ("SeriesNumber", MAX_LIST_VALUES),
        ("Modality", MAX_TERMS),
        ("ModalitiesInStudy", MAX_TERMS),
    ],
)
def test_long_lists(key: str, limit: int) -> None:
    """Lists up to their limit run; longer ones, which a URL has room for, are refused
    (SQLite refused ModalitiesInStudy lists of over 1000 codes with a 500)."""
    assert check_qido([(key, ",".join(["1"] * limit))], Level.SERIES) is not None
    assert check_qido([(key, ",".join(["1"] * (limit + 1)))], Level.SERIES) is None
    assert check_qido([(key, ",".join(["1"] * 4096))], Level.SERIES) is None


@pytest.mark.parametrize("fuzzy", ["true", "false"])
def test_names_of_many_words(fuzzy: str) -> None:
    """Fuzzy matching makes a condition per word: SQLite refused over 1000 of them."""
    words = [("PatientName", "a " * MAX_TERMS), ("fuzzymatching", fuzzy)]
    assert check_qido(words, Level.STUDY) is not None
    too_many = [("PatientName", "a*" * (MAX_TERMS + 1)), ("fuzzymatching", fuzzy)]
    assert check_qido(too_many, Level.STUDY) is None


def test_statements_stay_small() -> None:
    """Each count of codes or words is a statement of its own, compiled and cached: the
    largest one allowed holds little memory (one of 500 codes held megabytes)."""
    check_qido([("StudyDate", "20200101")], Level.STUDY)  # the engine's own start-up
    longest = [
        ("ModalitiesInStudy", ",".join(f"M{i}" for i in range(MAX_TERMS))),
        ("PatientName", " ".join(f"w{i}" for i in range(MAX_TERMS))),
        ("fuzzymatching", "true"),
    ]
    gc.collect()
    tracemalloc.start()
    try:
        assert check_qido(longest, Level.STUDY) is not None
        gc.collect()
        retained = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert retained < 4 << 20


def test_long_values_stay_fast() -> None:
    """Values as long as a URL allows are parsed and run in little time."""
    started = time.monotonic()
    check_qido([("PatientName", "*" * 8000)], Level.STUDY)
    check_qido([("PatientName", "a*" * 4000)], Level.STUDY)
    check_qido([("PatientName", "?" * 8000), ("fuzzymatching", "true")], Level.STUDY)
    check_qido([("StudyDescription", "%_\\" * 2000)], Level.STUDY)
    assert time.monotonic() - started < 10


_PATHS = [
    "/studies",
    "/series",
    "/instances",
    f"/studies/{STUDY_UID}/series",
    f"/studies/{STUDY_UID}/instances",
    f"/studies/{STUDY_UID}/series/{SERIES_UID}/instances",
    "/studies/1.2.bad/series",
]
_ACCEPTS = ["application/dicom+json", "multipart/related; type=application/dicom+xml", "x/y"]


@settings(max_examples=end_to_end_examples() * 2)
@given(
    st.sampled_from(_PATHS),
    params,
    st.sampled_from([None, *_ACCEPTS]),
    st.booleans(),
)
def test_search(
    served: Served, path: str, params: list[tuple[str, str]], accept: str | None, in_query: bool
) -> None:
    headers = {}
    if accept is not None and in_query:
        params = [*params, ("accept", accept)]
    elif accept is not None:
        headers["accept"] = accept
    response = served.request("GET", f"/dicomweb{path}", params=params, headers=headers)
    check_response(response)


@settings(max_examples=end_to_end_examples())
@given(
    st.sampled_from(_PATHS),
    st.text(st.characters(exclude_categories=["Cc", "Cs"]), max_size=60)
    | st.text("%0123456789abcdefABCDEF&=;+,.*?-", max_size=30),
)
def test_search_raw_query(served: Served, path: str, query: str) -> None:
    """A query string as typed, stray percent signs and all (httpx escapes what it must;
    control characters cannot be sent in a URL at all)."""
    check_response(served.request("GET", f"/dicomweb{path}?{query}"))
