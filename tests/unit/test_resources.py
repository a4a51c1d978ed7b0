"""UID validation and instance keys: the guard in front of storage paths and URLs."""

from __future__ import annotations

import pytest

from dicomweb.errors import BadRequest, InvalidUID
from dicomweb.resources import (
    InstanceKey,
    is_valid_uid,
    service_url,
    study_path,
    validate_uid,
)

STUDY = "1.2.840.113619.2.55.3.604688119"
SERIES = "1.2.840.113619.2.55.3.604688119.1"
SOP = "1.2.840.113619.2.55.3.604688119.1.1"

UID_64 = "1.2.840." + "1" * 56
UID_65 = UID_64 + "1"

VALID = ["1", "0", "1.2", "2.25.329800735698586629295641978511506172918", UID_64, STUDY]
INVALID = [
    UID_65,
    ".1.2",
    "1.2.",
    "1..2",
    ".",
    "1.2a",
    "abc",
    "1. 2",
    " 1.2",
    "1.2 ",
    "1.2\n",
    "1.2\x00",
    "1/2",
    "../../etc",
    "../../etc/passwd",
    "1.2/../3",
    "-1.2",
    "1,2",
    "１.２",  # full-width digits are not ASCII digits
    "١.٢",  # Arabic-Indic digits
]


def test_uid_lengths_used_here() -> None:
    assert len(UID_64) == 64
    assert len(UID_65) == 65


@pytest.mark.parametrize("uid", VALID)
def test_valid_uids(uid: str) -> None:
    assert is_valid_uid(uid)
    assert validate_uid(uid, "StudyInstanceUID") == uid


@pytest.mark.parametrize("uid", INVALID)
def test_invalid_uids(uid: str) -> None:
    assert not is_valid_uid(uid)
    with pytest.raises(InvalidUID) as info:
        validate_uid(uid, "SeriesInstanceUID")
    assert "SeriesInstanceUID" in str(info.value)
    assert "SeriesInstanceUID" in info.value.detail


@pytest.mark.parametrize("value", ["", None, 1.2, 12, b"1.2", ["1.2"], object()])
def test_missing_or_non_string_uids(value: object) -> None:
    with pytest.raises(InvalidUID) as info:
        validate_uid(value, "SOPInstanceUID")
    assert "SOPInstanceUID" in str(info.value)


def test_empty_string_is_not_valid() -> None:
    assert not is_valid_uid("")


def test_invalid_uid_is_a_400() -> None:
    with pytest.raises(BadRequest) as info:
        validate_uid("x")
    assert info.value.http_status == 400
    assert "UID" in str(info.value)


def test_very_long_value_is_shortened_in_the_message() -> None:
    value = "9" * 10_000
    with pytest.raises(InvalidUID) as info:
        validate_uid(value, "StudyInstanceUID")
    assert "StudyInstanceUID" in str(info.value)
    assert len(str(info.value)) < 200


def test_instance_key_path() -> None:
    key = InstanceKey(STUDY, SERIES, SOP)
    assert key.path == f"studies/{STUDY}/series/{SERIES}/instances/{SOP}"
    assert key.path.split("/")[1::2] == [STUDY, SERIES, SOP]


@pytest.mark.parametrize(
    ("study", "series", "sop", "name"),
    [
        ("../../etc", SERIES, SOP, "StudyInstanceUID"),
        (STUDY, "1..2", SOP, "SeriesInstanceUID"),
        (STUDY, SERIES, UID_65, "SOPInstanceUID"),
        (STUDY, SERIES, "", "SOPInstanceUID"),
        (STUDY, None, SOP, "SeriesInstanceUID"),
    ],
)
def test_instance_key_validates_every_uid(study: str, series: str, sop: str, name: str) -> None:
    with pytest.raises(InvalidUID) as info:
        InstanceKey(study, series, sop)
    assert name in str(info.value)


def test_study_path() -> None:
    assert study_path(STUDY) == f"studies/{STUDY}"
    with pytest.raises(InvalidUID, match="StudyInstanceUID"):
        study_path("1.2/../../3")


@pytest.mark.parametrize("base", ["http://example.org", "http://example.org/"])
def test_service_url(base: str) -> None:
    assert service_url(base) == "http://example.org/dicomweb"
