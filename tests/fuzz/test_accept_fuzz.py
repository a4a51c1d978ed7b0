"""Accept headers: any header negotiates a representation or gives 406, nothing else.

Headers are lists of media ranges with random parameters, quoting, q-values (in range,
out of range, not numbers) and separators in odd places.
"""

from __future__ import annotations

import time

from hypothesis import example, given
from hypothesis import strategies as st

from dicomweb.negotiation import parse_accept
from tests.fuzz.targets import check_accept

_TYPES = [
    "application/dicom+json",
    "application/json",
    "application/dicom+xml",
    "application/dicom",
    "application/octet-stream",
    "application/zip",
    "application/*",
    "multipart/related",
    "multipart/*",
    "*/*",
    "*",
    "image/jpeg",
    "image/jls",
    "image/x-dicom-rle",
    "video/mp4",
    "text/html",
    "",
]
_PARAMETER_NAMES = ["type", "transfer-syntax", "q", "Q", "charset", "boundary", ""]
_PARAMETER_VALUES = [
    "application/dicom",
    "application/dicom+xml",
    "application/octet-stream",
    "image/jpeg",
    "*",
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.4.100",
    "0",
    "0.5",
    "1",
    "1.0001",
    "-1",
    "nan",
    "inf",
    "1e999",
    "1_0",
    "",
]

q_values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(_PARAMETER_VALUES),
    st.text(max_size=6),
)
parameters = st.builds(
    lambda name, value, quoted, space: (
        f"{space}{name}{space}={space}" + (f'"{value}"' if quoted else value)
    ),
    st.sampled_from(_PARAMETER_NAMES) | st.text(max_size=6),
    st.sampled_from(_PARAMETER_VALUES) | q_values,
    st.booleans(),
    st.sampled_from(["", " ", "\t"]),
)
media_ranges = st.builds(
    lambda media_type, params: ";".join([media_type, *params]),
    st.sampled_from(_TYPES) | st.text(max_size=12),
    st.lists(parameters, max_size=3),
)
headers = st.one_of(
    st.lists(media_ranges, max_size=5).map(",".join),
    st.lists(media_ranges, max_size=5).map(", ".join),
    st.lists(st.sampled_from([*',;="\\ q=*/', "application/dicom+json"]), max_size=40).map("".join),
    st.text(max_size=40),
)


@given(headers | st.none())
@example('multipart/related; type="application/dicom+xml, application/dicom+json')
@example("application/dicom+json; q=nan, application/dicom+xml; q=1e999")
@example('*/*; q="0.5\\"')
def test_accept(value: str | None) -> None:
    check_accept(value)


def test_long_header_stays_fast() -> None:
    """A header as long as the server lets in is parsed in linear time."""
    value = ",".join(["application/dicom+json;q=0.5;type=x"] * 1000)
    started = time.monotonic()
    check_accept(value)
    check_accept('"' * 32_000)
    check_accept(";" * 32_000)
    assert len(parse_accept(value)) == 1000
    assert time.monotonic() - started < 5
