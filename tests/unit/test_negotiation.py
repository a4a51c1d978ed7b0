"""Content negotiation for data set responses (QIDO-RS results, STOW-RS responses)."""

from __future__ import annotations

import pytest

from dicomweb.errors import NotAcceptable
from dicomweb.negotiation import DICOM_JSON, DICOM_XML, parse_accept, response_media_type

XML_MULTIPART = 'multipart/related; type="application/dicom+xml"'


@pytest.mark.parametrize("accept", [None, "", "   "])
def test_absent_or_empty_accept_gives_dicom_json(accept: str | None) -> None:
    assert response_media_type(accept) == DICOM_JSON


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ("application/dicom+json", DICOM_JSON),
        ("application/dicom+xml", DICOM_XML),
        ("APPLICATION/DICOM+XML", DICOM_XML),
        ("application/json", DICOM_JSON),
        ("application/json;q=0.8, application/dicom+xml;q=0.7", DICOM_JSON),
        ("image/png, application/json", DICOM_JSON),
    ],
)
def test_explicit_types(accept: str, expected: str) -> None:
    assert response_media_type(accept) == expected


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ("application/dicom+xml;q=0.9, application/dicom+json;q=0.5", DICOM_XML),
        ("application/dicom+json;q=0.5, application/dicom+xml;q=0.9", DICOM_XML),
        ("application/dicom+xml;q=0.5, application/dicom+json", DICOM_JSON),
        ("application/dicom+xml; q=0.9, application/dicom+json; q=1", DICOM_JSON),
        ("application/dicom+json;Q=0.1, application/dicom+xml;Q=0.2", DICOM_XML),
        ("application/dicom+json;q=0.001, application/dicom+xml;q=0.01", DICOM_XML),
        ("*/*;q=0.1, application/dicom+xml", DICOM_XML),
        ("application/*;q=0.3, application/dicom+xml;q=0.4", DICOM_XML),
    ],
)
def test_q_values_order_the_choice(accept: str, expected: str) -> None:
    assert response_media_type(accept) == expected


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ("application/dicom+xml, application/dicom+json", DICOM_XML),
        ("application/dicom+json, application/dicom+xml", DICOM_JSON),
        ("application/dicom+xml;q=0.5, application/dicom+json;q=0.5", DICOM_XML),
    ],
)
def test_equal_q_keeps_header_order(accept: str, expected: str) -> None:
    assert response_media_type(accept) == expected


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ("application/dicom+xml;q=0, application/dicom+json;q=0.1", DICOM_JSON),
        ("application/dicom+json;q=0, application/dicom+xml;q=0.1", DICOM_XML),
        (
            "application/dicom+json;q=0.0, application/json;q=0.000, application/dicom+xml;q=0.2",
            DICOM_XML,
        ),
    ],
)
def test_q_zero_excludes(accept: str, expected: str) -> None:
    assert response_media_type(accept) == expected


@pytest.mark.parametrize(
    "accept",
    [
        "application/dicom+xml;q=0",
        "application/dicom+json;q=0, application/dicom+xml;q=0",
        "*/*;q=0",
    ],
)
def test_only_q_zero_is_not_acceptable(accept: str) -> None:
    with pytest.raises(NotAcceptable):
        response_media_type(accept)


def test_q_zero_is_not_overridden_by_a_wildcard() -> None:
    assert response_media_type("application/dicom+json;q=0, */*") == DICOM_XML


@pytest.mark.parametrize(
    "accept",
    ["*/*", "application/*", "text/html, */*;q=0.1", "image/jpeg, application/*;q=0.2"],
)
def test_wildcards_give_dicom_json(accept: str) -> None:
    assert response_media_type(accept) == DICOM_JSON


@pytest.mark.parametrize(
    "accept",
    [
        XML_MULTIPART,
        'multipart/related;type="application/dicom+xml"',
        'multipart/related ; type = "application/dicom+xml"',
        'Multipart/Related; Type="Application/DICOM+XML"',
        f"{XML_MULTIPART}, application/dicom+json;q=0.5",
        f"application/dicom+json;q=0.5, {XML_MULTIPART};q=0.6",
    ],
)
def test_multipart_related_with_xml_type_gives_xml(accept: str) -> None:
    assert response_media_type(accept) == DICOM_XML


def test_multipart_related_with_unquoted_xml_type_gives_xml() -> None:
    assert response_media_type("multipart/related; type=application/dicom+xml") == DICOM_XML


def test_multipart_related_without_xml_type_falls_through() -> None:
    accept = 'multipart/related; type="application/dicom", application/dicom+json;q=0.2'
    assert response_media_type(accept) == DICOM_JSON
    with pytest.raises(NotAcceptable):
        response_media_type('multipart/related; type="application/dicom"')


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        # A comma inside a quoted parameter does not start a new media range ...
        (f'{XML_MULTIPART}; x="a,b", application/dicom+json;q=0.5', DICOM_XML),
        # ... so a media type hidden inside quotes must not be picked up.
        ('text/plain; x="a,application/dicom+xml,b", application/dicom+json;q=0.1', DICOM_JSON),
    ],
)
def test_commas_inside_quoted_parameters(accept: str, expected: str) -> None:
    assert response_media_type(accept) == expected


@pytest.mark.parametrize(
    "accept",
    [
        "text/html",
        "image/png, text/plain;q=0.9",
        "text/*",
        "application/dicom",
        "application/xml",
        "application/dicom+xml;q=abc",
    ],
)
def test_only_unsupported_types_are_not_acceptable(accept: str) -> None:
    with pytest.raises(NotAcceptable) as info:
        response_media_type(accept)
    assert info.value.http_status == 406


def test_parse_accept_sorts_by_quality_and_strips_q() -> None:
    items = parse_accept(
        f"text/html;q=0.2, application/dicom+xml;level=1;q=0.9, */*;q=0.2, {XML_MULTIPART}"
    )
    assert [(i.media_type, i.quality) for i in items] == [
        ("multipart/related", 1.0),
        ("application/dicom+xml", 0.9),
        ("text/html", 0.2),
        ("*/*", 0.2),
    ]
    assert items[0].parameters == {"type": "application/dicom+xml"}
    assert items[1].parameters == {"level": "1"}


def test_parse_accept_skips_empty_ranges() -> None:
    items = parse_accept("application/dicom+json, , ,application/dicom+xml,")
    assert [i.media_type for i in items] == ["application/dicom+json", "application/dicom+xml"]
