"""JSON request bodies and the DICOM JSON model.

`json_object` reads the JSON bodies of the server's own endpoints (/api/links,
/api/send): any body is an object or a 400. `json_to_xml` reads the DICOM JSON model
that the server stores and answers with: a model the server made always converts; any
other is converted or refused with ValueError, and what comes out is well-formed XML.
"""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.fuzz.served import STUDY_UID, Served, check_response, end_to_end_examples
from tests.fuzz.targets import check_dicom_json, check_json_body

_TAGS = [
    "00080005",  # Specific Character Set
    "00080016",
    "00080018",
    "00080000",  # a group length: left out of XML
    "00100010",  # PN
    "00081140",  # SQ
    "00091010",  # private creator
    "00091001",
    "00091101",
    "0009ff01",  # lower case
    "7FE00010",
    "FFFEE000",
]
_VRS = ["AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "LT", "OB", "OW"]
_VRS += ["PN", "SH", "SL", "SQ", "SS", "ST", "TM", "UI", "UL", "UN", "US", "UT", "UV", "SV"]

tags = st.one_of(
    st.sampled_from(_TAGS),
    st.integers(0, 0xFFFFFFFF).map(lambda t: f"{t:08X}"),
    st.text(max_size=9),
)
scalars = st.one_of(
    st.text(max_size=20),
    st.integers(-(2**64), 2**64),
    st.floats(),
    st.booleans(),
    st.none(),
)
person_names = st.dictionaries(
    st.sampled_from(["Alphabetic", "Ideographic", "Phonetic", "Other"]),
    st.text(st.sampled_from(list("Doe^Jane=山田 <&>\"'\r\n\x00\x1b")), max_size=12) | scalars,
    max_size=3,
)


def _element(datasets: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(
        st.fixed_dictionaries(
            {"vr": st.sampled_from(_VRS) | st.text(max_size=3)},
            optional={
                "Value": st.lists(scalars | person_names, max_size=3) | scalars,
                "BulkDataURI": st.text(max_size=20) | scalars,
                "InlineBinary": st.text(max_size=20) | scalars,
            },
        ),
        st.fixed_dictionaries(
            {"vr": st.just("SQ"), "Value": st.lists(datasets | st.none(), max_size=2)}
        ),
        st.fixed_dictionaries({"vr": st.just("PN"), "Value": st.lists(person_names, max_size=2)}),
        scalars,
    )


models = st.recursive(
    st.dictionaries(tags, _element(st.just({})), max_size=4),
    lambda datasets: st.dictionaries(tags, _element(datasets), max_size=4),
    max_leaves=12,
)
json_values = st.recursive(
    scalars, lambda children: st.lists(children) | st.dictionaries(st.text(), children)
)


@given(models)
@example({"00100010": {"vr": "PN", "Value": [{"Alphabetic": "\x00<&\ud800"}]}})
@example({"00091010": {"vr": "LO", "Value": [1]}, "00091001": {"vr": "LO", "Value": ["x"]}})
@example({"00280010": {"vr": "US", "Value": [float("nan"), float("inf")]}})
def test_json_to_xml(model: dict[str, Any]) -> None:
    check_dicom_json(model)


@given(models | json_values)
def test_json_body_round_trip(value: Any) -> None:
    """What orjson writes, json_object reads back: an object if it was one."""
    try:
        body = orjson.dumps(value)
    except TypeError:
        return  # orjson refuses it (an integer past 64 bits, a lone surrogate)
    parsed = check_json_body(body)
    assert (parsed is not None) == isinstance(value, dict)


@given(st.binary(max_size=200) | st.text(max_size=100).map(str.encode))
@example(b"\xef\xbb\xbf{}")  # a byte order mark
@example(b'{"a": "\\ud800"}')  # an escaped lone surrogate
@example(b"{" * 2000)
def test_json_body_bytes(body: bytes) -> None:
    check_json_body(body)


_API_BODY_LIMIT = 1024**2  # Config.max_api_body_bytes: the edge refuses longer bodies


@pytest.mark.parametrize(
    "unit", [b"[", b'{"a":', b'{"a":[', b'[{"00081140":{"vr":"SQ","Value":'], ids=str
)
def test_deep_nesting(unit: bytes) -> None:
    """A body of nothing but nesting, as long as the edge lets in, is refused at once.

    orjson reserves about 12 bytes per input byte before it reaches its depth limit of
    1024, so memory follows the body's length, which the edge bounds (see below).
    """
    body = unit * (_API_BODY_LIMIT // len(unit))
    started = time.monotonic()
    tracemalloc.start()
    try:
        assert check_json_body(body) is None
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * _API_BODY_LIMIT
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("declared", [True, False])
def test_long_bodies_are_refused_at_the_edge(served: Served, declared: bool) -> None:
    """A JSON body past the limit gets 413, before json_object reads it."""
    body = b"[" * (4 * _API_BODY_LIMIT)

    async def stream() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 65536):
            yield body[start : start + 65536]

    content = body if declared else stream()
    response = served.request("POST", "/api/links", content=content)
    check_response(response)
    assert response.status_code == 413


# --------------------------------------------------------------------------------------
# End to end: the endpoints that read JSON bodies
# --------------------------------------------------------------------------------------

_LINK_BODIES = st.fixed_dictionaries(
    {},
    optional={
        "study": st.sampled_from([STUDY_UID, "1.2", "x", ""]) | scalars,
        "expires": st.sampled_from(["1h", "30m", "0s", "-1h", "999999999d", "1e9s", ""]) | scalars,
    },
)
_SEND_BODIES = st.fixed_dictionaries(
    {},
    optional={
        "destination": st.sampled_from(["PEER", ""]) | scalars,
        "study": st.sampled_from([STUDY_UID, "x"]) | scalars,
        "series": st.sampled_from(["1.2", "x"]) | scalars,
        "instance": scalars,
    },
)


@settings(max_examples=end_to_end_examples())
@given(
    st.sampled_from(["/api/links", "/api/send"]),
    _LINK_BODIES | _SEND_BODIES | json_values,
    st.sampled_from(["application/json", "text/plain", None]),
)
def test_json_endpoints(served: Served, path: str, body: Any, content_type: str | None) -> None:
    try:
        content = orjson.dumps(body)
    except TypeError:
        content = b"{"
    headers = {} if content_type is None else {"content-type": content_type}
    check_response(served.request("POST", path, content=content, headers=headers))
