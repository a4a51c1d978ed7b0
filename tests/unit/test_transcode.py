"""Transcoding between transfer syntaxes, checked against pydicom's own decoding."""

from __future__ import annotations

import io
import threading
import warnings
import zlib
from dataclasses import replace
from pathlib import Path
from typing import Any

import imagecodecs
import numpy as np
import pydicom
import pytest
from _pytest.mark.structures import ParameterSet
from numpy.typing import NDArray
from pydicom import Dataset
from pydicom.data import get_testdata_file
from pydicom.dataset import FileMetaDataset
from pydicom.encaps import generate_frames, parse_basic_offsets
from pydicom.pixels.decoders.base import get_decoder
from pydicom.uid import UID, generate_uid

from dicomweb.pixels.transcode import (
    FrameInfo,
    TranscodeError,
    can_decode,
    can_encode,
    decode_frame,
    encode_frame,
    transcode_frame,
    transcode_instance,
)

IMPLICIT = "1.2.840.10008.1.2"
EXPLICIT = "1.2.840.10008.1.2.1"
DEFLATED = "1.2.840.10008.1.2.1.99"
BIG_ENDIAN = "1.2.840.10008.1.2.2"
RLE = "1.2.840.10008.1.2.5"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
JPEG_EXTENDED = "1.2.840.10008.1.2.4.51"
JPEG_LOSSLESS = "1.2.840.10008.1.2.4.57"
JPEG_LOSSLESS_SV1 = "1.2.840.10008.1.2.4.70"
JPEG_LS = "1.2.840.10008.1.2.4.80"
JPEG_LS_NEAR = "1.2.840.10008.1.2.4.81"
J2K_LOSSLESS = "1.2.840.10008.1.2.4.90"
J2K = "1.2.840.10008.1.2.4.91"
HTJ2K_LOSSLESS = "1.2.840.10008.1.2.4.201"
HTJ2K_RPCL = "1.2.840.10008.1.2.4.202"
HTJ2K = "1.2.840.10008.1.2.4.203"

LOSSLESS = [
    pytest.param(IMPLICIT, id="implicit"),
    pytest.param(EXPLICIT, id="explicit"),
    pytest.param(DEFLATED, id="deflated"),
    pytest.param(RLE, id="rle"),
    pytest.param(JPEG_LOSSLESS, id="jpeg-p14"),
    pytest.param(JPEG_LOSSLESS_SV1, id="jpeg-sv1"),
    pytest.param(JPEG_LS, id="jpeg-ls"),
    pytest.param(J2K_LOSSLESS, id="j2k"),
    pytest.param(HTJ2K_LOSSLESS, id="htj2k"),
    pytest.param(HTJ2K_RPCL, id="htj2k-rpcl"),
]

# Uncompressed sources, by pixel format.
ROUND_TRIP_SOURCES = [
    pytest.param("vlut_04.dcm", id="mono8"),
    pytest.param("CT_small.dcm", id="mono16-signed"),
    pytest.param("693_UNCR.dcm", id="mono16-signed-14bit-512"),
    pytest.param("emri_small.dcm", id="mono16-unsigned-12bit-10frames"),
    pytest.param("MR_small_bigendian.dcm", id="mono16-big-endian"),
    pytest.param("SC_rgb.dcm", id="rgb8"),
    pytest.param("SC_rgb_2frame.dcm", id="rgb8-2frames"),
    pytest.param("SC_rgb_16bit.dcm", id="rgb16"),
    pytest.param("OBXXXX1A.dcm", id="palette8"),
]

# Files pydicom itself cannot decode: decoding them must fail cleanly.
UNDECODABLE = {"JPEG-lossy.dcm", "JPEG2000-embedded-sequence-delimiter.dcm"}


def data_file(name: str) -> Path:
    path = get_testdata_file(name, download=False)
    assert path is not None, f"{name} is missing from pydicom's test data"
    return Path(path)


def read(source: Path | bytes) -> Dataset:
    """A data set read as pydicom reads it, its warnings about the file ignored."""
    with warnings.catch_warnings():
        # Some test files draw warnings (say, implicit VR where explicit was declared).
        warnings.simplefilter("ignore")
        return pydicom.dcmread(source if isinstance(source, Path) else io.BytesIO(source))


def pixels_of(ds: Dataset) -> NDArray[np.generic]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ds.pixel_array


def _testdata_files() -> list[Path]:
    """pydicom's and pydicom-data's files, found locally.

    get_testdata_files() would try to download the pydicom-data files it lacks first.
    """
    folders = {data_file("CT_small.dcm").parent, data_file("693_UNCR.dcm").parent}
    return sorted(path for folder in folders for path in folder.glob("*.dcm"))


def _compressed_data_file() -> list[ParameterSet]:
    params = []
    for name in _testdata_files():
        try:
            ds = read(name) if name.stat().st_size < 8_000_000 else None
        except Exception:
            continue
        if ds is None or "PixelData" not in ds:
            continue
        syntax = ds.file_meta.get("TransferSyntaxUID")
        if syntax is not None and UID(syntax).is_compressed:
            params.append(pytest.param(name, id=f"{name.parent.name}/{name.name}"))
    return params


COMPRESSED_TESTDATA = _compressed_data_file()


def frames_of(ds: Dataset) -> list[bytes]:
    count = int(ds.get("NumberOfFrames", 1) or 1)
    return list(generate_frames(ds.PixelData, number_of_frames=count))


def assert_same_elements(actual: Dataset, expected: Dataset) -> None:
    assert set(actual.keys()) == set(expected.keys())
    for elem in expected:
        assert actual[elem.tag].value == elem.value, elem.tag


# --- Round trips ----------------------------------------------------------------------------


@pytest.mark.parametrize("target", LOSSLESS)
@pytest.mark.parametrize("name", ROUND_TRIP_SOURCES)
def test_lossless_round_trip_is_pixel_identical(name: str, target: str) -> None:
    source = read(data_file(name))
    expected = pixels_of(source)

    encoded = transcode_instance(data_file(name), target)
    ds = read(encoded)
    assert ds.file_meta.TransferSyntaxUID == target
    assert ds.SOPInstanceUID == source.SOPInstanceUID
    assert np.array_equal(pixels_of(ds), expected)
    assert ds.get("LossyImageCompression") == source.get("LossyImageCompression")

    back = read(transcode_instance(encoded, EXPLICIT))
    assert back.file_meta.TransferSyntaxUID == EXPLICIT
    assert np.array_equal(pixels_of(back), expected)


@pytest.mark.parametrize("target", LOSSLESS)
@pytest.mark.parametrize("name", ["CT_small.dcm", "SC_rgb.dcm"])
def test_frame_round_trip_is_pixel_identical(name: str, target: str) -> None:
    ds = read(data_file(name))
    info = FrameInfo.from_dataset(ds)
    expected = pixels_of(ds)

    data, encoded_info = encode_frame(expected, target, info)
    assert np.array_equal(decode_frame(data, target, encoded_info), expected)

    native, native_info = transcode_frame(data, target, EXPLICIT, encoded_info)
    assert native_info.photometric_interpretation == info.photometric_interpretation
    assert native == expected.astype(expected.dtype.newbyteorder("<")).tobytes()


UNUSUAL_FORMATS = [
    pytest.param(FrameInfo(40, 37, 1, 16, 8, 0, "MONOCHROME2", 0, 1), id="u16-8bits"),
    pytest.param(FrameInfo(40, 37, 1, 16, 8, 1, "MONOCHROME2", 0, 1), id="s16-8bits"),
    pytest.param(FrameInfo(40, 37, 1, 16, 12, 1, "MONOCHROME1", 0, 1), id="s16-12bits"),
    pytest.param(FrameInfo(40, 37, 1, 8, 6, 0, "MONOCHROME2", 0, 1), id="u8-6bits"),
    pytest.param(FrameInfo(40, 37, 1, 8, 8, 1, "MONOCHROME2", 0, 1), id="s8"),
    pytest.param(FrameInfo(40, 37, 3, 16, 12, 0, "RGB", 0, 1), id="rgb16-12bits"),
]


def random_pixels(info: FrameInfo, seed: int = 0) -> NDArray[np.generic]:
    """Pixels over the whole range Bits Stored allows."""
    bits = info.bits_stored
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1)) if info.pixel_representation else (0, 2**bits)
    values = np.random.default_rng(seed).integers(low, high, size=info.frame_shape)
    return values.astype(info.dtype)


@pytest.mark.parametrize("target", LOSSLESS)
@pytest.mark.parametrize("info", UNUSUAL_FORMATS)
def test_unusual_bit_depths_round_trip(info: FrameInfo, target: str) -> None:
    pixels = random_pixels(info)
    assert can_encode(target, info)
    data, encoded = encode_frame(pixels, target, info)
    # Lossless JPEG of 8 bits in 16 needs a precision of 9; the values are unchanged.
    assert encoded.bits_stored >= info.bits_stored
    assert np.array_equal(decode_frame(data, target, encoded), pixels)


@pytest.mark.parametrize("target", [RLE, JPEG_LOSSLESS_SV1, JPEG_LS, J2K_LOSSLESS, HTJ2K_RPCL])
def test_bits_above_bits_stored_are_dropped(target: str) -> None:
    info = FrameInfo(40, 37, 1, 16, 12, 1, "MONOCHROME2", 0, 1)
    pixels = random_pixels(info)
    # An overlay or garbage in the unused high bits: no pixel value (PS3.5 8.1.1).
    junk = (pixels.view(np.uint16) | np.uint16(0x5000)).view(np.int16)
    data, encoded = encode_frame(junk, target, info)
    assert np.array_equal(decode_frame(data, target, encoded), pixels)


@pytest.mark.parametrize("path", COMPRESSED_TESTDATA)
def test_decoding_equals_pydicom(path: Path) -> None:
    ds = read(path)
    syntax = ds.file_meta.TransferSyntaxUID
    info = FrameInfo.from_dataset(ds)
    frames = frames_of(ds)
    if path.name in UNDECODABLE:
        with pytest.raises(TranscodeError):
            decode_frame(frames[0], syntax, info)
        return
    assert can_decode(syntax)
    decoder = get_decoder(syntax)
    for index in sorted({0, len(frames) - 1}):
        expected, _ = decoder.as_array(ds, index=index)
        actual = decode_frame(frames[index], syntax, info)
        assert actual.dtype == expected.dtype
        assert np.array_equal(actual, expected)


def test_ybr_jpeg_decodes_to_rgb_for_native_targets() -> None:
    path = data_file("SC_rgb_dcmtk_+eb+cy+np.dcm")  # JPEG baseline, YBR_FULL_422
    ds = read(path)
    info = FrameInfo.from_dataset(ds)
    expected = pixels_of(ds)

    data, native_info = transcode_frame(frames_of(ds)[0], JPEG_BASELINE, EXPLICIT, info)
    assert native_info.photometric_interpretation == "RGB"
    assert data == expected.tobytes()

    out = read(transcode_instance(path, EXPLICIT))
    assert out.PhotometricInterpretation == "RGB"
    assert out.LossyImageCompression == "01"  # decoded JPEG baseline stays lossy
    assert np.array_equal(pixels_of(out), expected)


def test_lossless_targets_keep_ybr_full_samples() -> None:
    path = data_file("SC_ybr_full_uncompressed.dcm")
    raw: dict[str, Any] = {"as_rgb": False}  # the samples as stored, not converted to RGB
    ybr, _ = get_decoder(EXPLICIT).as_array(read(path), **raw)

    rle = transcode_instance(path, RLE)
    assert read(rle).PhotometricInterpretation == "YBR_FULL"
    stored, _ = get_decoder(RLE).as_array(read(rle), **raw)
    assert np.array_equal(stored, ybr)
    native = read(transcode_instance(rle, EXPLICIT))
    assert native.PhotometricInterpretation == "YBR_FULL"
    assert np.array_equal(get_decoder(EXPLICIT).as_array(native, **raw)[0], ybr)

    # Lossless JPEG cannot carry YBR_FULL here: the samples are stored as RGB instead.
    jpeg = read(transcode_instance(path, JPEG_LOSSLESS_SV1))
    assert jpeg.PhotometricInterpretation == "RGB"
    assert np.array_equal(pixels_of(jpeg), pixels_of(read(path)))


# --- Lossy targets --------------------------------------------------------------------------

LOSSY_CASES = [
    pytest.param("vlut_04.dcm", JPEG_BASELINE, "MONOCHROME2", "ISO_10918_1", id="mono8-jpeg"),
    pytest.param("vlut_04.dcm", JPEG_EXTENDED, "MONOCHROME2", "ISO_10918_1", id="mono8-jpeg12"),
    pytest.param("SC_rgb.dcm", JPEG_BASELINE, "YBR_FULL_422", "ISO_10918_1", id="rgb-jpeg"),
    pytest.param("emri_small.dcm", JPEG_EXTENDED, "MONOCHROME2", "ISO_10918_1", id="mr12-jpeg12"),
    pytest.param("CT_small.dcm", JPEG_LS_NEAR, "MONOCHROME2", "ISO_14495_1", id="ct-jls"),
    pytest.param("SC_rgb.dcm", JPEG_LS_NEAR, "RGB", "ISO_14495_1", id="rgb-jls"),
    pytest.param("CT_small.dcm", J2K, "MONOCHROME2", "ISO_15444_1", id="ct-j2k"),
    pytest.param("emri_small.dcm", J2K, "MONOCHROME2", "ISO_15444_1", id="mr12-j2k"),
    pytest.param("SC_rgb.dcm", J2K, "YBR_ICT", "ISO_15444_1", id="rgb-j2k"),
    pytest.param("CT_small.dcm", HTJ2K, "MONOCHROME2", "ISO_15444_15", id="ct-htj2k"),
    pytest.param("US1_UNCR.dcm", HTJ2K, "YBR_ICT", "ISO_15444_15", id="rgb-htj2k"),
]


@pytest.mark.parametrize(("name", "target", "photometric", "method"), LOSSY_CASES)
def test_lossy_targets_stay_close_and_say_so(
    name: str, target: str, photometric: str, method: str
) -> None:
    source = read(data_file(name))
    expected = pixels_of(source).astype(np.float64)

    ds = read(transcode_instance(data_file(name), target))
    assert ds.file_meta.TransferSyntaxUID == target
    assert ds.SOPInstanceUID == source.SOPInstanceUID
    assert ds.PhotometricInterpretation == photometric
    assert ds.LossyImageCompression == "01"
    assert ds.LossyImageCompressionMethod == method
    assert float(ds.LossyImageCompressionRatio) > 1

    error = np.abs(pixels_of(ds).astype(np.float64) - expected)
    value_range = float(expected.max() - expected.min())
    if target == JPEG_LS_NEAR:
        assert error.max() <= 2  # the NEAR parameter bounds every sample
    peak_snr = 10 * np.log10(value_range**2 / max(float((error**2).mean()), 1e-12))
    assert peak_snr > 25
    assert error.mean() < 0.05 * value_range


def test_lossy_after_lossy_appends_ratio_and_method() -> None:
    once = transcode_instance(data_file("SC_rgb.dcm"), JPEG_BASELINE)
    twice = read(transcode_instance(once, HTJ2K))
    assert twice.LossyImageCompression == "01"
    assert list(twice.LossyImageCompressionMethod) == ["ISO_10918_1", "ISO_15444_15"]
    assert len(twice.LossyImageCompressionRatio) == 2


# --- HTJ2K ----------------------------------------------------------------------------------


def markers(codestream: bytes) -> list[tuple[int, bytes]]:
    """The (marker, segment) pairs of a JPEG 2000 codestream, walked by SOT lengths."""
    found: list[tuple[int, bytes]] = []
    pos = 2  # after SOC
    while pos + 4 <= len(codestream):
        marker = int.from_bytes(codestream[pos : pos + 2], "big")
        if marker == 0xFFD9:  # EOC
            found.append((marker, b""))
            break
        length = int.from_bytes(codestream[pos + 2 : pos + 4], "big")
        segment = codestream[pos + 4 : pos + 2 + length]
        found.append((marker, segment))
        if marker == 0xFF90:  # SOT: Psot is the tile-part's whole length
            psot = int.from_bytes(segment[2:6], "big")
            pos += psot
        else:
            pos += 2 + length
    return found


def test_htj2k_rpcl_follows_ps35_10_18() -> None:
    ds = read(data_file("693_UNCR.dcm"))  # 512 x 512
    data, _ = encode_frame(pixels_of(ds), HTJ2K_RPCL, FrameInfo.from_dataset(ds))
    assert data[:2] == b"\xff\x4f"
    found = markers(data)
    kinds = [marker for marker, _ in found]
    cod = next(segment for marker, segment in found if marker == 0xFF52)
    progression, decompositions, transform = cod[1], cod[5], cod[9]
    assert progression == 2  # RPCL
    assert transform == 1  # reversible 5-3 wavelet: lossless
    assert -(-512 // 2**decompositions) <= 64  # the base resolution is at most 64 wide
    assert 0xFF55 in kinds[: kinds.index(0xFF90)]  # TLM in the main header
    assert kinds.count(0xFF90) == decompositions + 1  # one tile-part per resolution
    siz = next(segment for marker, segment in found if marker == 0xFF51)
    assert int.from_bytes(siz[:2], "big") & 0x4000  # Rsiz: an HTJ2K (Part 15) codestream


@pytest.mark.parametrize("target", [HTJ2K_LOSSLESS, HTJ2K_RPCL])
def test_htj2k_file_decodes_back_identically(target: str) -> None:
    path = data_file("693_UNCR.dcm")
    expected = pixels_of(read(path))
    ds = read(transcode_instance(path, target))
    assert np.array_equal(pixels_of(ds), expected)
    # A second, independent decoder (OpenJPH) agrees with pydicom's (OpenJPEG).
    (frame,) = frames_of(ds)
    assert np.array_equal(imagecodecs.htj2k_decode(frame), expected)


# --- Encapsulation, encodings and data sets -------------------------------------------------


def test_multiframe_output_has_a_basic_offset_table() -> None:
    ds = read(transcode_instance(data_file("emri_small.dcm"), J2K_LOSSLESS))
    offsets = parse_basic_offsets(ds.PixelData)
    assert len(offsets) == 10
    assert offsets == sorted(offsets)
    assert offsets[0] == 0


def test_implicit_vr_input_is_written_as_explicit_vr() -> None:
    path = data_file("MR_small_implicit.dcm")
    source = read(path)
    out = read(transcode_instance(path, EXPLICIT))
    assert out.file_meta.TransferSyntaxUID == EXPLICIT
    assert out.original_encoding == (False, True)  # (implicit VR, little endian)
    assert_same_elements(out, source)


@pytest.mark.parametrize("target", [EXPLICIT, DEFLATED, J2K_LOSSLESS])
def test_instances_without_pixel_data_only_change_encoding(target: str) -> None:
    path = data_file("rtplan.dcm")  # Implicit VR Little Endian, no pixel data
    out = transcode_instance(path, target)
    ds = read(out)
    assert ds.file_meta.TransferSyntaxUID == target
    assert_same_elements(ds, read(path))


def test_deflated_output_is_deflated() -> None:
    out = transcode_instance(data_file("CT_small.dcm"), DEFLATED)
    ds = read(out)
    assert ds.file_meta.TransferSyntaxUID == DEFLATED
    meta_end = 132 + 12 + int.from_bytes(out[140:144], "little")  # group length value
    inflated = zlib.decompress(out[meta_end:], wbits=-zlib.MAX_WBITS)
    assert len(inflated) > len(out) - meta_end


def test_big_endian_other_words_are_swapped() -> None:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = UID(BIG_ENDIAN)
    ds.file_meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.7")
    ds.SOPClassUID = UID("1.2.840.10008.5.1.4.1.1.7")
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.add_new(0x00283006, "OW", np.array([1, 2, 0x0304], ">u2").tobytes())  # LUT Data
    ds.add_new(0x00280010, "US", 7)
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)

    out = read(transcode_instance(buffer.getvalue(), EXPLICIT))
    assert np.frombuffer(out[0x00283006].value, "<u2").tolist() == [1, 2, 0x0304]
    assert out.Rows == 7


def test_uncompressed_frames_pass_through_untouched() -> None:
    ds = read(data_file("CT_small.dcm"))
    info = FrameInfo.from_dataset(ds)
    data, out_info = transcode_frame(ds.PixelData, EXPLICIT, IMPLICIT, info)
    assert data == ds.PixelData
    assert out_info == info


# --- FrameInfo ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["CT_small.dcm", "emri_small.dcm", "SC_rgb_2frame.dcm"])
def test_frame_info_from_json_matches_from_dataset(name: str) -> None:
    ds = read(data_file(name))
    metadata = ds.to_json_dict(bulk_data_element_handler=lambda _: "https://example/bulk")
    assert FrameInfo.from_json(metadata) == FrameInfo.from_dataset(ds)


def test_frame_info_from_json_takes_string_integers_and_defaults() -> None:
    metadata = {
        "00280010": {"vr": "US", "Value": [4]},
        "00280011": {"vr": "US", "Value": [5]},
        "00280100": {"vr": "US", "Value": [16]},
        "00280004": {"vr": "CS", "Value": ["MONOCHROME2"]},
        "00280008": {"vr": "IS", "Value": ["10"]},
    }
    info = FrameInfo.from_json(metadata)
    assert (info.samples_per_pixel, info.bits_stored, info.number_of_frames) == (1, 16, 10)
    assert info.pixel_representation == 0
    with pytest.raises(TranscodeError, match="0028,0010"):
        FrameInfo.from_json({k: v for k, v in metadata.items() if k != "00280010"})


def test_frame_info_marks_float_pixel_data() -> None:
    metadata = {
        "00280010": {"vr": "US", "Value": [2]},
        "00280011": {"vr": "US", "Value": [2]},
        "00280004": {"vr": "CS", "Value": ["MONOCHROME2"]},
        "7FE00008": {"vr": "OF", "BulkDataURI": "https://example/bulk"},
    }
    info = FrameInfo.from_json(metadata)
    assert (info.pixel_keyword, info.bits_allocated) == ("FloatPixelData", 32)
    pixels = np.array([[0.5, -1.0], [2.0, 3.25]], np.float32)
    data, _ = encode_frame(pixels, EXPLICIT, info)
    assert np.array_equal(decode_frame(data, EXPLICIT, info), pixels)


# --- Refusals -------------------------------------------------------------------------------

MONO16 = FrameInfo(64, 64, 1, 16, 12, 0, "MONOCHROME2", 0, 1)


@pytest.mark.parametrize(
    ("target", "info"),
    [
        pytest.param(JPEG_BASELINE, MONO16, id="jpeg-baseline-of-16-bit"),
        pytest.param(JPEG_EXTENDED, replace(MONO16, bits_stored=16), id="jpeg-12-of-16-bit"),
        pytest.param(JPEG_BASELINE, replace(MONO16, bits_allocated=8, bits_stored=8,
                     pixel_representation=1), id="jpeg-baseline-of-signed"),
        pytest.param(J2K, replace(MONO16, pixel_keyword="FloatPixelData", bits_allocated=32,
                     bits_stored=32), id="j2k-of-float"),
        pytest.param(JPEG_LS_NEAR, replace(MONO16, photometric_interpretation="PALETTE COLOR"),
                     id="near-lossless-of-palette"),
        pytest.param(RLE, replace(MONO16, bits_allocated=1, bits_stored=1), id="rle-of-1-bit"),
        pytest.param(J2K_LOSSLESS, replace(MONO16, rows=16), id="j2k-under-32-pixels"),
        pytest.param(HTJ2K, replace(MONO16, bits_allocated=32, bits_stored=32), id="htj2k-32-bit"),
        pytest.param(BIG_ENDIAN, MONO16, id="retired-big-endian"),
        pytest.param("1.2.3.4", MONO16, id="unknown-uid"),
    ],
)  # fmt: skip
def test_impossible_targets_raise_transcode_error(target: str, info: FrameInfo) -> None:
    assert not can_encode(target, info)
    pixels = np.zeros(info.frame_shape, info.dtype)
    with pytest.raises(TranscodeError):
        encode_frame(pixels, target, info)


def test_transcode_instance_refuses_impossible_targets() -> None:
    with pytest.raises(TranscodeError, match="JPEG Baseline"):
        transcode_instance(data_file("CT_small.dcm"), JPEG_BASELINE)
    with pytest.raises(TranscodeError, match="not supported"):
        transcode_instance(data_file("CT_small.dcm"), "1.2.3.4")
    with pytest.raises(TranscodeError, match="retired"):
        transcode_instance(data_file("CT_small.dcm"), BIG_ENDIAN)
    with pytest.raises(TranscodeError, match="not a readable DICOM file"):
        transcode_instance(b"not a DICOM file", EXPLICIT)


def test_bad_frames_raise_transcode_error() -> None:
    assert issubclass(TranscodeError, ValueError)
    assert not can_decode("1.2.3.4")
    with pytest.raises(TranscodeError):
        decode_frame(b"\xff\x4f\xff\x51 not a codestream", J2K_LOSSLESS, MONO16)
    with pytest.raises(TranscodeError, match="needs 8192 bytes"):
        decode_frame(b"\0" * 100, EXPLICIT, MONO16)
    with pytest.raises(TranscodeError):
        decode_frame(b"\0" * 8192, "1.2.3.4", MONO16)
    with pytest.raises(TranscodeError, match="shape"):
        encode_frame(np.zeros((2, 2), np.uint16), J2K_LOSSLESS, MONO16)
    with pytest.raises(TranscodeError, match="Bits Stored"):
        replace(MONO16, bits_stored=17)


def test_jpeg_2000_encoding_from_several_threads() -> None:
    """openjpeg's encoder is not thread-safe: concurrent encodes must not crash the process."""
    info = FrameInfo(
        rows=128,
        columns=128,
        samples_per_pixel=1,
        bits_allocated=16,
        bits_stored=12,
        pixel_representation=0,
        photometric_interpretation="MONOCHROME2",
        planar_configuration=0,
        number_of_frames=1,
    )
    pixels = np.random.default_rng(3).integers(0, 4096, (128, 128), dtype=np.uint16)
    results: list[bool] = []

    def work() -> None:
        for _ in range(5):
            data, _ = encode_frame(pixels, J2K_LOSSLESS, info)
            results.append(bool((decode_frame(data, J2K_LOSSLESS, info) == pixels).all()))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [True] * 20
