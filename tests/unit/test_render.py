"""The rendering pipeline (pixels/render.py, lut.py): golden values computed by hand for
tiny synthetic frames, and the files pydicom ships."""

from __future__ import annotations

import base64
import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pydicom
import pytest
from numpy.typing import NDArray
from PIL import Image, ImageSequence
from pydicom import Dataset
from pydicom.data import get_testdata_file
from pydicom.encaps import generate_frames
from pydicom.pixels.processing import apply_color_lut
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit

from dicomweb.dicomjson import instance_json
from dicomweb.pixels.codestream import declared_size
from dicomweb.pixels.frameinfo import FrameInfo
from dicomweb.pixels.lut import LINEAR, LINEAR_EXACT, PRESETS, SIGMOID, Window
from dicomweb.pixels.metadata import bulk_paths
from dicomweb.pixels.render import (
    GIF,
    JPEG,
    PNG,
    RenderError,
    Viewport,
    decode_stored_frame,
    encode_animation,
    encode_image,
    render_frame,
    render_stored_frame,
)

Json = dict[str, Any]


def grey(
    rows: int,
    columns: int,
    *,
    bits: int = 16,
    stored: int | None = None,
    signed: int = 0,
    photometric: str = "MONOCHROME2",
    frames: int = 1,
) -> FrameInfo:
    return FrameInfo(rows, columns, 1, bits, stored or bits, signed, photometric, 0, frames)


def ds_value(vr: str, *values: object) -> Json:
    return {"vr": vr, "Value": list(values)}


def inline(vr: str, data: bytes) -> Json:
    return {"vr": vr, "InlineBinary": base64.b64encode(data).decode()}


def row(values: list[float], dtype: str = "u2") -> NDArray[Any]:
    return np.array([values], dtype=dtype)


def data_file(name: str) -> Path:
    path = get_testdata_file(name, download=False)
    assert path is not None, f"{name} is not installed"
    return Path(str(path))


def metadata_of(ds: Dataset) -> Json:
    model, _ = instance_json(ds, "x", 1 << 30, None)
    loaded: Json = orjson.loads(model)
    return loaded


# Window functions (PS3.3 C.11.2.1.2), output 0..255, rounded half up


def test_linear_window_of_center_128_width_256_is_the_identity() -> None:
    # low edge c - 0.5 - (w-1)/2 = 0, high edge c - 0.5 + (w-1)/2 = 255;
    # y = ((x - 127.5) / 255 + 0.5) * 255 = x
    pixels = np.arange(256, dtype=np.uint16).reshape(16, 16)
    image = render_frame(pixels, grey(16, 16), {}, window=(128, 256))
    assert np.array_equal(image, pixels.astype(np.uint8))


def test_linear_exact_window() -> None:
    # y = ((x - 100) / 200 + 0.5) * 255 between 0 and 200: 63.75, 127.5, 191.25
    pixels = row([0, 50, 100, 150, 200, 201])
    image = render_frame(pixels, grey(1, 6), {}, window=(100, 200), function=LINEAR_EXACT)
    assert image.tolist() == [[0, 64, 128, 191, 255, 255]]


def test_sigmoid_window() -> None:
    # y = 255 / (1 + exp(-4 (x - c) / w)) with c = 10, w = 4: exp(-(x - 10))
    pixels = row([0, 9, 10, 11, 20])
    image = render_frame(pixels, grey(1, 5), {}, window=(10, 4), function=SIGMOID)
    expected = [math.floor(255 / (1 + math.exp(-(x - 10))) + 0.5) for x in (0, 9, 10, 11, 20)]
    assert expected == [0, 69, 128, 186, 255]
    assert image.tolist() == [expected]


def test_linear_window_of_width_1_is_a_threshold() -> None:
    # both edges at c - 0.5 = 9.5
    image = render_frame(row([8, 9, 10, 11]), grey(1, 4), {}, window=(10, 1))
    assert image.tolist() == [[0, 0, 255, 255]]


@pytest.mark.parametrize(
    ("window", "function"),
    [((40, 0.5), LINEAR), ((40, 0), SIGMOID), ((40, -3), LINEAR_EXACT), ((40, 10), "CUBIC")],
)
def test_invalid_windows(window: tuple[float, float], function: str) -> None:
    with pytest.raises(RenderError):
        render_frame(row([1]), grey(1, 1), {}, window=window, function=function)


# Modality LUT


def test_rescale_to_hounsfield_units() -> None:
    # HU = stored - 1024: -1024, 0, 40, 1024; LINEAR_EXACT 40/400:
    # ((HU - 40) / 400 + 0.5) * 255 = 0 (clipped), 102, 127.5, 255 (clipped)
    metadata = {"00281052": ds_value("DS", -1024), "00281053": ds_value("DS", 1)}
    pixels = row([0, 1024, 1064, 2048])
    image = render_frame(pixels, grey(1, 4), metadata, window=(40, 400), function=LINEAR_EXACT)
    assert image.tolist() == [[0, 102, 128, 255]]


def test_rescale_slope() -> None:
    # 2 * stored - 10 = 0, 10, 50; LINEAR_EXACT 25/50: (v / 50) * 255 = 0, 51, 255
    metadata = {"00281052": ds_value("DS", "-10"), "00281053": ds_value("DS", "2")}
    image = render_frame(
        row([5, 10, 30]), grey(1, 3), metadata, window=(25, 50), function=LINEAR_EXACT
    )
    assert image.tolist() == [[0, 51, 255]]


def test_modality_lut_sequence() -> None:
    # 4 entries from stored value 10: 10 -> 0, 11 -> 100, 12 -> 200, 13 -> 300; values
    # outside take the end entries. LINEAR_EXACT 150/300: v / 300 * 255
    item = {
        "00283002": ds_value("US", 4, 10, 16),
        "00283006": inline("OW", np.array([0, 100, 200, 300], "<u2").tobytes()),
    }
    metadata = {"00283000": {"vr": "SQ", "Value": [item]}}
    pixels = row([8, 10, 11, 12, 13, 14])
    image = render_frame(pixels, grey(1, 6), metadata, window=(150, 300), function=LINEAR_EXACT)
    assert image.tolist() == [[0, 0, 85, 170, 255, 255]]


# VOI from the instance


def test_instance_window_and_function() -> None:
    metadata = {
        "00281050": ds_value("DS", 10, 99),
        "00281051": ds_value("DS", 4, 99),
        "00281056": ds_value("CS", "SIGMOID"),
    }
    image = render_frame(row([9, 10, 11]), grey(1, 3), metadata)
    assert image.tolist() == [[69, 128, 186]]


def test_request_window_wins_over_the_instance_window() -> None:
    metadata = {"00281050": ds_value("DS", 10), "00281051": ds_value("DS", 4)}
    image = render_frame(
        row([0, 100, 200]), grey(1, 3), metadata, window=(100, 200), function=LINEAR_EXACT
    )
    assert image.tolist() == [[0, 128, 255]]


def test_voi_lut_sequence() -> None:
    # 3 entries of 8 bits from 0: 0 -> 0, 1 -> 128, 2 -> 255, scaled by 255 / 255
    item = {"00283002": ds_value("US", 3, 0, 8), "00283006": ds_value("US", 0, 128, 255)}
    metadata = {"00283010": {"vr": "SQ", "Value": [item]}}
    image = render_frame(row([0, 1, 2, 5]), grey(1, 4), metadata)
    assert image.tolist() == [[0, 128, 255, 255]]


def test_window_from_the_pixel_range_when_the_instance_has_none() -> None:
    # range 100..300: LINEAR_EXACT center 200, width 200
    image = render_frame(row([100, 200, 300]), grey(1, 3), {})
    assert image.tolist() == [[0, 128, 255]]


def test_enhanced_image_functional_groups() -> None:
    # shared rescale (-1000), per-frame windows: frame 2 has 0/100
    def group(**items: Json) -> Json:
        return {tag: {"vr": "SQ", "Value": [item]} for tag, item in items.items()}

    shared = group(**{"00289145": {"00281052": ds_value("DS", -1000)}})
    frames = [
        group(**{"00289132": {"00281050": ds_value("DS", 500), "00281051": ds_value("DS", 10)}}),
        group(**{"00289132": {"00281050": ds_value("DS", 0), "00281051": ds_value("DS", 100)}}),
    ]
    metadata = {
        "52009229": {"vr": "SQ", "Value": [shared]},
        "52009230": {"vr": "SQ", "Value": frames},
        "00281056": ds_value("CS", "LINEAR_EXACT"),
    }
    image = render_frame(row([950, 1000, 1050]), grey(1, 3, frames=2), metadata, frame_number=2)
    assert image.tolist() == [[0, 128, 255]]


# Presentation, sign and bits


def test_monochrome1_is_inverted() -> None:
    info = grey(1, 3, photometric="MONOCHROME1")
    image = render_frame(row([0, 100, 200]), info, {}, window=(100, 200), function=LINEAR_EXACT)
    assert image.tolist() == [[255, 127, 0]]


def test_presentation_lut_shape_inverse() -> None:
    metadata = {"20500020": ds_value("CS", "INVERSE")}
    image = render_frame(
        row([0, 200]), grey(1, 2), metadata, window=(100, 200), function=LINEAR_EXACT
    )
    assert image.tolist() == [[255, 0]]


def test_signed_values() -> None:
    # LINEAR_EXACT 0/2000: (x / 2000 + 0.5) * 255
    pixels = row([-1000, -500, 0, 1000], "i2")
    info = grey(1, 4, signed=1)
    image = render_frame(pixels, info, {}, window=(0, 2000), function=LINEAR_EXACT)
    assert image.tolist() == [[0, 64, 128, 255]]


def test_bits_above_bits_stored_are_not_pixel_data() -> None:
    # 12 of 16 bits: 0xF005 is 5 unsigned; 0x0FFF is -1 signed (sign bit 11).
    # LINEAR_EXACT 0/20: (x / 20 + 0.5) * 255 = 191.25 for 5, 114.75 for -1
    window: dict[str, Any] = {"window": (0, 20), "function": LINEAR_EXACT}
    unsigned = render_frame(row([0xF005, 5]), grey(1, 2, stored=12), {}, **window)
    assert unsigned.tolist() == [[191, 191]]
    signed_pixels = np.array([[0x0FFF, 0xFFFF]], dtype="<u2").view("<i2")
    signed = render_frame(signed_pixels, grey(1, 2, stored=12, signed=1), {}, **window)
    assert signed.tolist() == [[115, 115]]


@pytest.mark.parametrize(("signed", "low"), [(0, 0), (1, -2048)])
def test_a_table_of_bits_stored_values_renders_as_the_full_width_table(
    signed: int, low: int
) -> None:
    # Every 12-bit value, as 12 and as 16 bits stored: the same display values.
    values = np.arange(low, low + 4096).astype("<i2" if signed else "<u2").reshape(1, -1)
    for window in ((100, 700), (-600, 1500), (low + 5, 1)):
        twelve = render_frame(values, grey(1, 4096, stored=12, signed=signed), {}, window=window)
        sixteen = render_frame(values, grey(1, 4096, stored=16, signed=signed), {}, window=window)
        assert twelve.tolist() == sixteen.tolist()
        assert len(set(twelve[0].tolist())) > 1


def test_eight_bit_and_float_grey() -> None:
    image = render_frame(row([0, 128, 255], "u1"), grey(1, 3, bits=8), {}, window=(128, 256))
    assert image.tolist() == [[0, 128, 255]]
    info = FrameInfo(1, 3, 1, 32, 32, 0, "MONOCHROME2", 0, 1, "FloatPixelData")
    floats = render_frame(row([0, 0.5, 1], "f4"), info, {}, window=(0.5, 1), function=LINEAR_EXACT)
    assert floats.tolist() == [[0, 128, 255]]


def test_presets() -> None:
    assert PRESETS["lung"] == Window(-600, 1500)
    assert PRESETS["brain"] == Window(40, 80)
    assert PRESETS["bone"] == Window(400, 1800)
    image = render_frame(row([-600], "i2"), grey(1, 1, signed=1), {}, window=PRESETS["lung"])
    assert image.tolist() == [[128]]


# Colour


def test_rgb_is_kept_and_wide_samples_keep_their_top_bits() -> None:
    rgb = np.array([[[255, 0, 0], [0, 128, 255]]], dtype=np.uint8)
    info = FrameInfo(1, 2, 3, 8, 8, 0, "RGB", 0, 1)
    assert np.array_equal(render_frame(rgb, info, {}), rgb)
    wide = np.array([[[4095, 16, 2048]]], dtype=np.uint16)
    info12 = FrameInfo(1, 1, 3, 16, 12, 0, "RGB", 0, 1)
    assert render_frame(wide, info12, {}).tolist() == [[[255, 1, 128]]]


def test_ybr_full_is_decoded_to_rgb() -> None:
    # R = Y + 1.402 (Cr - 128); G = Y - 0.344136 (Cb - 128) - 0.714136 (Cr - 128);
    # B = Y + 1.772 (Cb - 128). (76, 85, 255): R 254.05, G 0.10, B -0.20
    ybr = np.array([[[128, 128, 128], [76, 85, 255]]], dtype=np.uint8)
    info = FrameInfo(1, 2, 3, 8, 8, 0, "YBR_FULL", 0, 1)
    image = render_stored_frame(ybr.tobytes(), ExplicitVRLittleEndian, info, {})
    assert image.tolist() == [[[128, 128, 128], [254, 0, 0]]]


def test_planar_configuration_1() -> None:
    rgb = np.array([[[255, 0, 0], [0, 128, 255]]], dtype=np.uint8)
    planar = np.moveaxis(rgb, 2, 0).tobytes()  # all red, then green, then blue samples
    info = FrameInfo(1, 2, 3, 8, 8, 0, "RGB", 1, 1)
    image = render_stored_frame(planar, ExplicitVRLittleEndian, info, {})
    assert np.array_equal(image, rgb)


def test_ybr_full_422() -> None:
    # two pixels share Cb and Cr: Y1 Y2 Cb Cr; grey (Cb = Cr = 128) keeps Y
    data = bytes([100, 200, 128, 128])
    info = FrameInfo(1, 2, 3, 8, 8, 0, "YBR_FULL_422", 0, 1)
    image = render_stored_frame(data, ExplicitVRLittleEndian, info, {})
    assert image.tolist() == [[[100, 100, 100], [200, 200, 200]]]


def palette_metadata(entries: int, first: int, red: bytes, green: bytes, blue: bytes) -> Json:
    descriptor = ds_value("US", entries, first, 16)
    return {
        "00281101": descriptor,
        "00281102": descriptor,
        "00281103": descriptor,
        "00281201": inline("OW", red),
        "00281202": inline("OW", green),
        "00281203": inline("OW", blue),
    }


def test_palette_color() -> None:
    # entries for indices 1..3; 16-bit entries scaled by 255 / 65535
    def lut(*values: int) -> bytes:
        return np.array(values, "<u2").tobytes()

    metadata = palette_metadata(3, 1, lut(65535, 0, 0), lut(0, 65535, 32896), lut(0, 0, 65535))
    info = FrameInfo(1, 4, 1, 8, 8, 0, "PALETTE COLOR", 0, 1)
    image = render_frame(row([1, 2, 3, 9], "u1"), info, metadata)
    assert image.tolist() == [[[255, 0, 0], [0, 255, 0], [0, 128, 255], [0, 128, 255]]]


def test_palette_data_from_bulk_data() -> None:
    red = np.array([0, 65535], "<u2").tobytes()
    metadata = palette_metadata(2, 0, red, red, red)
    metadata["00281201"] = {
        "vr": "OW",
        "BulkDataURI": "studies/1/series/2/instances/3/bulkdata/00281201",
    }
    assert bulk_paths(metadata) == ["00281201"]
    info = FrameInfo(1, 2, 1, 8, 8, 0, "PALETTE COLOR", 0, 1)
    with pytest.raises(RenderError, match="not provided"):
        render_frame(row([0, 1], "u1"), info, metadata)
    image = render_frame(row([0, 1], "u1"), info, metadata, bulk={"00281201": red})
    assert image.tolist() == [[[0, 0, 0], [255, 255, 255]]]


def test_segmented_palette() -> None:
    # discrete 0, then a linear segment of 2 steps to 65535: 0, 32767.5, 65535
    segments = np.array([0, 1, 0, 1, 2, 65535], "<u2").tobytes()
    descriptor = ds_value("US", 3, 0, 16)
    metadata = {f"0028110{n}": descriptor for n in (1, 2, 3)}
    metadata |= {f"0028122{n}": inline("OW", segments) for n in (1, 2, 3)}
    info = FrameInfo(1, 3, 1, 8, 8, 0, "PALETTE COLOR", 0, 1)
    image = render_frame(row([0, 1, 2], "u1"), info, metadata)
    assert image[..., 0].tolist() == [[0, 128, 255]]


# Overlays


def test_overlay_is_burned_in_white() -> None:
    # a 2 x 2 plane at row 2, column 2 (1-based): bits 1 0 0 1, little-endian bit order
    metadata = {
        "60000010": ds_value("US", 2),
        "60000011": ds_value("US", 2),
        "60000050": ds_value("SS", 2, 2),
        "60000100": ds_value("US", 1),
        "60000102": ds_value("US", 0),
        "60003000": inline("OW", bytes([0b1001, 0])),
    }
    pixels = np.zeros((4, 4), dtype=np.uint16)
    plain = render_frame(pixels, grey(4, 4), metadata, window=(1000, 10))
    burned = render_frame(pixels, grey(4, 4), metadata, window=(1000, 10), overlays=True)
    assert plain.max() == 0
    assert np.argwhere(burned == 255).tolist() == [[1, 1], [2, 2]]


# Geometry


def gradient(rows: int, columns: int) -> NDArray[np.uint16]:
    return np.arange(rows * columns, dtype=np.uint16).reshape(rows, columns)


def test_rows_and_columns_are_maxima_keeping_the_aspect_ratio() -> None:
    pixels, info = gradient(50, 100), grey(50, 100)
    assert render_frame(pixels, info, {}, rows=10).shape == (10, 20)
    assert render_frame(pixels, info, {}, columns=10).shape == (5, 10)
    assert render_frame(pixels, info, {}, rows=10, columns=10).shape == (5, 10)


def test_viewport_fits_the_source_region() -> None:
    pixels, info = gradient(50, 100), grey(50, 100)
    assert render_frame(pixels, info, {}, viewport=Viewport(40, 40)).shape == (20, 40)
    assert render_frame(pixels, info, {}, viewport=Viewport(400, 400)).shape == (200, 400)
    region = Viewport(10, 10, sx=20, sy=10, sw=20, sh=20)
    assert render_frame(pixels, info, {}, viewport=region).shape == (10, 10)


def test_viewport_region_without_scaling_is_exact() -> None:
    pixels, info = gradient(4, 6), grey(4, 6)
    whole = render_frame(pixels, info, {}, window=(128, 256))
    part = render_frame(pixels, info, {}, window=(128, 256), viewport=Viewport(3, 2, 2, 1, 3, 2))
    assert np.array_equal(part, whole[1:3, 2:5])


def test_negative_sw_and_sh_flip() -> None:
    pixels, info = gradient(4, 6), grey(4, 6)
    whole = render_frame(pixels, info, {}, window=(128, 256))
    mirrored = render_frame(pixels, info, {}, window=(128, 256), viewport=Viewport(6, 4, 0, 0, -6))
    assert np.array_equal(mirrored, whole[:, ::-1])
    flipped = render_frame(
        pixels, info, {}, window=(128, 256), viewport=Viewport(6, 4, 0, 0, None, -4)
    )
    assert np.array_equal(flipped, whole[::-1, :])


def test_region_parameter() -> None:
    pixels, info = gradient(4, 8), grey(4, 8)
    whole = render_frame(pixels, info, {}, window=(128, 256))
    part = render_frame(pixels, info, {}, window=(128, 256), region=(0.5, 0.0, 1.0, 0.5))
    assert np.array_equal(part, whole[:2, 4:])


@pytest.mark.parametrize(
    "viewport",
    [
        lambda: Viewport(0, 10),
        lambda: Viewport(10, 100000),
        lambda: Viewport(10, 10, sx=-1),
        lambda: Viewport(10, 10, sx=500),
    ],
)
def test_viewport_errors(viewport: Any) -> None:
    with pytest.raises(RenderError):
        render_frame(gradient(4, 4), grey(4, 4), {}, viewport=viewport())


def test_annotation_writes_text() -> None:
    metadata = {
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]},
        "00080060": ds_value("CS", "CT"),
    }
    pixels = np.zeros((128, 128), dtype=np.uint16)
    plain = render_frame(pixels, grey(128, 128), metadata, window=(1000, 10))
    for kind in ("patient", "technique"):
        written = render_frame(
            pixels, grey(128, 128), metadata, window=(1000, 10), annotation=(kind,)
        )
        # antialiased white text: a few dozen bright pixels
        assert plain.max() == 0 and (written > 200).sum() > 20


# Encoding


@pytest.mark.parametrize("media_type", [JPEG, PNG, GIF])
@pytest.mark.parametrize("shape", [(30, 40), (30, 40, 3)])
def test_each_media_type_decodes_to_the_size(media_type: str, shape: tuple[int, ...]) -> None:
    image = np.random.default_rng(1).integers(0, 256, size=shape, dtype=np.uint8)
    data = encode_image(image, media_type)
    with Image.open(io.BytesIO(data)) as picture:
        assert picture.format == media_type.split("/")[1].upper()
        assert picture.size == (40, 30)
        if media_type == PNG:
            assert np.array_equal(np.asarray(picture), image)  # lossless


def test_jpeg_quality() -> None:
    image = np.random.default_rng(2).integers(0, 256, size=(64, 64), dtype=np.uint8)
    assert len(encode_image(image, JPEG, 20)) < len(encode_image(image, JPEG))
    with pytest.raises(RenderError):
        encode_image(image, "image/webp")


def test_animation() -> None:
    frames = [np.full((8, 10), value, dtype=np.uint8) for value in (0, 100, 200)]
    data = encode_animation(frames, 40)
    with Image.open(io.BytesIO(data)) as picture:
        assert picture.format == "GIF"
        assert sum(1 for _ in ImageSequence.Iterator(picture)) == 3
        assert picture.size == (10, 8)
        assert picture.info["duration"] == 40


# Decompression bombs


def sof_of(frame: bytes) -> int:
    return frame.index(b"\xff\xc0")


def test_a_codestream_larger_than_the_instance_is_not_decoded() -> None:
    ds = pydicom.dcmread(data_file("SC_rgb_jpeg_dcmtk.dcm"))
    assert ds.file_meta.TransferSyntaxUID == JPEGBaseline8Bit
    frame = bytearray(next(generate_frames(ds.PixelData, number_of_frames=1)))
    info = FrameInfo.from_dataset(ds)
    assert declared_size(bytes(frame)) == (100, 100)
    position = sof_of(bytes(frame)) + 5
    frame[position : position + 4] = (60000).to_bytes(2, "big") * 2
    assert declared_size(bytes(frame)) == (60000, 60000)
    with pytest.raises(RenderError, match="declares 60000 x 60000"):
        decode_stored_frame(bytes(frame), JPEGBaseline8Bit, info)


# Files pydicom ships


def first_frame(ds: Dataset, info: FrameInfo) -> bytes:
    if ds.file_meta.TransferSyntaxUID.is_encapsulated:
        return next(generate_frames(ds.PixelData, number_of_frames=info.number_of_frames))
    return bytes(ds.PixelData[: info.native_frame_length])


def render_file(name: str, **options: Any) -> tuple[Dataset, NDArray[np.uint8]]:
    ds = pydicom.dcmread(data_file(name))
    info = FrameInfo.from_dataset(ds)
    syntax = ds.file_meta.TransferSyntaxUID
    return ds, render_stored_frame(first_frame(ds, info), syntax, info, metadata_of(ds), **options)


def linear_window(values: NDArray[Any], center: float, width: float) -> NDArray[np.uint8]:
    """PS3.3 C.11.2.1.2.1 written out element by element, independently of the tables."""
    out = np.empty(values.shape, dtype=np.uint8)
    for index, x in np.ndenumerate(values.astype(np.float64)):
        if x <= center - 0.5 - (width - 1) / 2:
            y = 0.0
        elif x > center - 0.5 + (width - 1) / 2:
            y = 255.0
        else:
            y = ((x - (center - 0.5)) / (width - 1) + 0.5) * 255
        out[index] = math.floor(y + 0.5)
    return out


def test_ct_small_with_a_request_window() -> None:
    ds, image = render_file("CT_small.dcm", window=(40, 400))
    hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert image.shape == (128, 128)
    assert np.array_equal(image, linear_window(hu, 40, 400))


def test_mr_small_uses_its_own_window() -> None:
    ds, image = render_file("MR_small.dcm")
    expected = linear_window(ds.pixel_array, float(ds.WindowCenter), float(ds.WindowWidth))
    assert np.array_equal(image, expected)


@pytest.mark.parametrize(
    "name",
    [
        "SC_rgb.dcm",
        "SC_rgb_rle.dcm",
        "SC_rgb_jpeg_dcmtk.dcm",  # JPEG baseline, YBR_FULL
        "SC_rgb_jpeg_gdcm.dcm",
        "SC_ybr_full_422_uncompressed.dcm",
        "SC_rgb_small_odd.dcm",
        "US1_UNCR.dcm",
        "US1_J2KR.dcm",  # JPEG 2000, YBR_RCT
    ],
)
def test_colour_files_match_pydicom(name: str) -> None:
    ds, image = render_file(name)
    assert np.array_equal(image, ds.pixel_array)  # pydicom converts YBR to RGB too


@pytest.mark.parametrize("name", ["examples_palette.dcm", "OBXXXX1A.dcm"])
def test_palette_files_match_pydicom(name: str) -> None:
    ds, image = render_file(name)
    rgb = apply_color_lut(ds.pixel_array, ds)
    scale = 255.0 / 65535.0 if rgb.max() > 255 else 1.0
    assert np.array_equal(image, np.floor(rgb * scale + 0.5).astype(np.uint8))


def test_modality_and_voi_lut_files() -> None:
    for name in ("mlut_18.dcm", "vlut_04.dcm"):
        ds, image = render_file(name)
        assert image.shape == (ds.Rows, ds.Columns)
        assert image.min() == 0 and image.max() == 255


def test_overlay_file() -> None:
    ds, plain = render_file("examples_overlay.dcm")
    _, burned = render_file("examples_overlay.dcm", overlays=True)
    mask = ds.overlay_array(0x6000).astype(bool)
    assert (burned[mask] == 255).all()
    assert np.array_equal(burned[~mask], plain[~mask])
