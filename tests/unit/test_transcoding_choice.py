"""Choosing a transfer syntax for retrieve, the frame cache, and the storage syntax."""

from __future__ import annotations

import pytest
from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    ImplicitVRLittleEndian,
    JPEG2000MCLossless,
    JPEGBaseline8Bit,
    RLELossless,
)

from dicomweb.cli import main
from dicomweb.config import Config, ConfigError
from dicomweb.errors import NotAcceptable
from dicomweb.negotiation import Wanted, instance_syntax, pixel_syntax
from dicomweb.pixels.transcode import FrameInfo
from dicomweb.transcoding import (
    Stored,
    choose,
    is_lossy,
    needs_description,
    refusal,
    storage_syntax_problem,
)

MULTIPART = "multipart/related"
DICOM = "application/dicom"
CT = FrameInfo(64, 64, 1, 16, 12, 0, "MONOCHROME2", 0, 1)


def dicom(syntax: str | None, quality: float = 1.0) -> Wanted:
    return Wanted(MULTIPART, DICOM, syntax, quality)


def ct(sop: str = "1.2.3", syntax: str = ExplicitVRLittleEndian) -> Stored:
    return Stored(sop, syntax, info=CT)


def test_the_highest_quality_that_can_be_sent_wins() -> None:
    # The client prefers HTJ2K: transcoding is worth it.
    choice, plan = choose(
        [dicom(HTJ2KLossless, 1.0), dicom("*", 0.5)], [ct()], instance_syntax, values_only=False
    )
    assert choice.transfer_syntax == HTJ2KLossless
    assert plan == {"1.2.3": HTJ2KLossless}
    # A preferred choice that cannot be produced gives way to the next.
    choice, plan = choose(
        [dicom(JPEGBaseline8Bit, 1.0), dicom(RLELossless, 0.8)],
        [ct()],
        instance_syntax,
        values_only=False,
    )
    assert plan == {"1.2.3": RLELossless}


def test_among_equal_qualities_no_transcoding_wins() -> None:
    choice, plan = choose(
        [dicom(HTJ2KLossless), dicom("*")], [ct()], instance_syntax, values_only=False
    )
    assert choice.transfer_syntax == "*"
    assert plan == {"1.2.3": ExplicitVRLittleEndian}


def test_every_instance_must_fit_the_choice() -> None:
    small = Stored(
        "1.2.4", ExplicitVRLittleEndian, info=FrameInfo(8, 8, 1, 16, 12, 0, "MONOCHROME2", 0, 1)
    )
    with pytest.raises(NotAcceptable, match="at least 32 rows"):
        # JPEG 2000 needs 32 x 32 pixels: one small instance spoils the choice.
        choose([dicom(JPEG2000)], [ct(), small], instance_syntax, values_only=False)
    _, plan = choose(
        [dicom(JPEG2000), dicom(HTJ2KLossless, 0.5)],
        [ct(), small],
        instance_syntax,
        values_only=False,
    )
    assert set(plan.values()) == {HTJ2KLossless}


@pytest.mark.parametrize(
    ("target", "says"),
    [
        (JPEGBaseline8Bit, "cannot encode MONOCHROME2 pixels with 1 sample(s), 16 bits"),
        ("1.2.3.4", "an unknown transfer syntax (1.2.3.4)"),
        ("foo", "an unknown transfer syntax (foo)"),
        (ImplicitVRLittleEndian, "not used with web services"),
        (ExplicitVRBigEndian, "not used with web services"),
        (JPEG2000MCLossless, "cannot produce it"),
    ],
)
def test_refusals_say_why(target: str, says: str) -> None:
    with pytest.raises(NotAcceptable) as raised:
        choose([dicom(target)], [ct()], instance_syntax, values_only=False)
    assert says in raised.value.detail
    assert "Explicit VR Little Endian (1.2.840.10008.1.2.1)" in raised.value.detail


def test_frames_need_their_description_to_be_transcoded() -> None:
    undescribed = Stored("1.2.3", RLELossless)
    assert refusal(undescribed, ExplicitVRLittleEndian, values_only=False) is None
    assert refusal(undescribed, ExplicitVRLittleEndian, values_only=True) is not None
    assert not needs_description(RLELossless, [dicom(None)], instance_syntax, values_only=False)
    assert needs_description(
        RLELossless, [dicom(HTJ2KLossless)], instance_syntax, values_only=False
    )
    octet = Wanted(MULTIPART, "application/octet-stream", None)
    assert needs_description(RLELossless, [octet], pixel_syntax, values_only=True)
    # Whether JPEG 2000 data is lossy is in its metadata.
    assert needs_description(JPEG2000, [dicom("*")], instance_syntax, values_only=False)


def test_lossy_forms() -> None:
    assert is_lossy(JPEGBaseline8Bit, None)
    assert not is_lossy(JPEG2000, None)
    assert is_lossy(JPEG2000, "01")
    assert is_lossy(HTJ2K, "01")
    assert not is_lossy(RLELossless, "01")  # decoded once, now held losslessly


@pytest.mark.parametrize(
    ("syntax", "says"),
    [
        (HTJ2K, "lossy"),
        (JPEGBaseline8Bit, "lossy"),
        (ExplicitVRBigEndian, "not a transfer syntax this server writes"),
        ("1.2.3.4", "not a transfer syntax this server writes"),
    ],
)
def test_store_transfer_syntax_is_checked_with_the_settings(syntax: str, says: str) -> None:
    problem = storage_syntax_problem(syntax)
    assert problem is not None and says in problem
    with pytest.raises(ConfigError, match=says):
        Config.from_sources({"store_transfer_syntax": syntax})


def test_store_transfer_syntax_from_the_environment() -> None:
    config = Config.from_sources({}, {"DICOMWEB_STORE_TRANSFER_SYNTAX": HTJ2KLossless})
    assert config.store_transfer_syntax == HTJ2KLossless
    assert Config.from_sources({}, {"DICOMWEB_FRAME_CACHE_BYTES": "1000"}).frame_cache_bytes == 1000
    assert storage_syntax_problem(RLELossless) is None


def test_serve_refuses_a_lossy_storage_syntax(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--store-transfer-syntax", JPEG2000]) == 2
    assert "JPEG 2000 is lossy" in capsys.readouterr().err
