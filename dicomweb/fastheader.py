"""Reading the header of a PS3.10 file straight from its bytes, without pydicom.

At ingest, `dicomweb.parsing` reads each stored file's header with pydicom, decodes
every value and builds the DICOM JSON model; that is most of ingest's CPU time. For the
common encodings this module does the same work directly on the bytes, and produces
exactly what the pydicom path produces:

* `FastHeader.model` equals the model `dicomweb.dicomjson.instance_json` builds from
  ``dcmread(stop_before_pixels=True)`` once every value has been decoded (as
  ``parsing._read_header`` does), without the pixel data entry;
* `FastHeader.bulk_locations` equals its bulk locations, pixel data excluded;
* `FastHeader.text` and `FastHeader.integer` equal ``parsing._text`` and
  ``parsing._integer`` on that data set.

`read_fast_header` returns None, never raises, for anything it does not handle with
certainty; the caller then uses pydicom, which also produces the proper error for
malformed input. Handled: a 128-byte preamble, ``DICM`` and an explicit VR little
endian group 0002; data sets in Implicit VR Little Endian, Explicit VR Little Endian
and the encapsulated transfer syntaxes; Specific Character Set absent, empty,
``ISO_IR 6``, ``ISO_IR 100`` or ``ISO_IR 192``. Not handled: Big Endian, Deflated,
private transfer syntaxes, code extensions, truncated or malformed data (lengths past
the end, values pydicom cannot convert or converts by guessing), elements out of
ascending order, command group elements, ambiguous VRs that pydicom resolves from
other data sets or leaves unresolved, and pydicom configurations other than the
defaults with ``reading_validation_mode = IGNORE`` (what `dicomweb.parsing` sets).

Every rule here copies a pydicom 3.0 behaviour, including the surprising ones; the
tests compare both paths on all of pydicom's test files.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
import pydicom.valuerep
from pydicom import Dataset, config
from pydicom.datadict import dictionary_VR, private_dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import FileMetaDataset
from pydicom.hooks import hooks, raw_element_value, raw_element_vr
from pydicom.tag import BaseTag
from pydicom.uid import UID, AllTransferSyntaxes, PrivateTransferSyntaxes

__all__ = ["RECORD_INTEGER_KEYWORDS", "RECORD_TEXT_KEYWORDS", "FastHeader", "read_fast_header"]

BulkLocations = dict[str, list[int] | None]

IMPLICIT_VR_LITTLE_ENDIAN: Final = "1.2.840.10008.1.2"

# Transfer syntaxes whose data set is Explicit VR Little Endian, not deflated.
_DEFLATE_SYNTAXES: Final = frozenset(
    {
        "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
        "1.2.840.10008.1.2.4.95",  # JPIP Referenced Deflate
        "1.2.840.10008.1.2.4.205",  # JPIP HTJ2K Referenced Deflate
    }
)
_EXPLICIT_LE_SYNTAXES: Final = frozenset(
    {
        str(uid)
        for uid in AllTransferSyntaxes
        if uid.is_little_endian and not uid.is_implicit_VR and str(uid) not in _DEFLATE_SYNTAXES
    }
    | {
        "1.2.840.10008.1.2.1.98",  # Encapsulated Uncompressed Explicit VR Little Endian
        "1.2.840.10008.1.2.4.94",  # JPIP Referenced
        "1.2.840.10008.1.2.4.110",  # JPEG XL Lossless
        "1.2.840.10008.1.2.4.111",  # JPEG XL JPEG Recompression
        "1.2.840.10008.1.2.4.112",  # JPEG XL
        "1.2.840.10008.1.2.8.1",  # Deflated Image Frame Compression (frames only)
    }
)

# Specific Character Set values handled, and the codec pydicom decodes text with.
# pydicom's default 'iso8859' is Python's ISO 8859-1, as is 'latin_1'.
_CHARSETS: Final = {
    "": "latin-1",
    "ISO_IR 6": "latin-1",
    "ISO_IR 100": "latin-1",
    "ISO_IR 192": "utf-8",
}

_ITEM: Final = 0xFFFEE000
_ITEM_END: Final = 0xFFFEE00D
_SEQUENCE_END: Final = 0xFFFEE0DD
_UNDEFINED: Final = 0xFFFFFFFF
_CHARSET_TAG: Final = 0x00080005
_PIXEL_REPRESENTATION: Final = 0x00280103
_PIXEL_DATA: Final = 0x7FE00010
_PIXEL_TAGS: Final = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})
_FIRST_PIXEL_TAG: Final = 0x7FE00008
_MAX_DEPTH: Final = 32

_EXPLICIT_HEADER: Final = struct.Struct("<HH2sH")
_IMPLICIT_HEADER: Final = struct.Struct("<HHL")
_UL: Final = struct.Struct("<L")

_LONG_VRS: Final = frozenset(
    {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}
)
_STANDARD_VRS: Final = _LONG_VRS | {
    *("AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO"),
    *("LT", "PN", "SH", "SL", "SS", "ST", "TM", "UI", "UL", "US"),
}
_VR_OF_BYTES: Final = {vr.encode(): vr for vr in _STANDARD_VRS}
# dicomweb.dicomjson.BINARY_VRS: values longer than the threshold become BulkDataURIs.
_BINARY_VRS: Final = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
_NUMBER_FORMATS: Final = {
    "US": ("H", 2),
    "SS": ("h", 2),
    "UL": ("L", 4),
    "SL": ("l", 4),
    "UV": ("Q", 8),
    "SV": ("q", 8),
    "FL": ("f", 4),
    "FD": ("d", 8),
}
# Integers orjson can write (it refuses wider ones).
_JSON_INT_MIN: Final = -(2**63)
_JSON_INT_MAX: Final = 2**64 - 1

# pydicom.tag._LUT_DESCRIPTOR_TAGS
_LUT_DESCRIPTORS: Final = frozenset({0x00281101, 0x00281102, 0x00281103, 0x00283002})
# pydicom.filewriter: the ambiguous VR elements pydicom resolves, and how.
_US_SS_BY_PIXEL_REPRESENTATION: Final = frozenset(
    {
        *(0x00189810, 0x00221452, 0x00280104, 0x00280105, 0x00280106, 0x00280107),
        *(0x00280108, 0x00280109, 0x00280110, 0x00280111, 0x00280120, 0x00280121),
        *(0x00281101, 0x00281102, 0x00281103, 0x00283002, 0x00409211, 0x00409216),
        *(0x00603004, 0x00603006),
    }
)
_OB_OW_BY_ENCODING: Final = frozenset({0x54000110, 0x54000112, 0x5400100A, 0x54001010})
_OVERLAY_DATA: Final = frozenset(g << 16 | 0x3000 for g in range(0x6000, 0x601F, 2))

# What dicomweb.pixels.frames.locate_frames reads from the header: SamplesPerPixel,
# PhotometricInterpretation, NumberOfFrames, Rows, Columns, BitsAllocated, Extended
# Offset Table and its lengths.
_FRAME_TAGS: Final = frozenset(
    {0x00280002, 0x00280004, 0x00280008, 0x00280010, 0x00280011, 0x00280100}
    | {0x7FE00001, 0x7FE00002}
)

# The attributes dicomweb.parsing.extract reads with _text and _integer. read_fast_header
# evaluates them once, and refuses a file for which one of them would raise.
RECORD_TEXT_KEYWORDS: Final = (
    *("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"),
    *("PatientID", "IssuerOfPatientID", "PatientName", "PatientBirthDate", "PatientSex"),
    *("StudyDate", "StudyTime", "AccessionNumber", "StudyID", "StudyDescription"),
    *("ReferringPhysicianName", "Modality", "SeriesDescription", "SeriesDate"),
    *("SeriesTime", "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime"),
)
RECORD_INTEGER_KEYWORDS: Final = (
    *("SeriesNumber", "InstanceNumber", "Rows", "Columns", "NumberOfFrames"),
    "BitsAllocated",
)


class _Unhandled(Exception):
    """The data is valid or not, but this module cannot be sure to match pydicom."""


# --------------------------------------------------------------------------------------
# The result
# --------------------------------------------------------------------------------------


# A top-level element, kept to answer text() and integer() and for frame_header(): (VR,
# raw value or None for a sequence or a value sent as a BulkDataURI, text codec, whether
# the first of several numbers is made unsigned as hooks.raw_element_value does for LUT
# Descriptors, value offset, value length).
_Element = tuple[str, bytes | None, str, bool, int, int]


@dataclass(frozen=True, slots=True)
class FastHeader:
    """The header of a PS3.10 file, as the pydicom path of `dicomweb.parsing` sees it."""

    transfer_syntax_uid: str
    """(0002,0010) Transfer Syntax UID, as ``parsing._text(ds.file_meta, ...)`` gives it."""
    model: dict[str, Any]
    """The DICOM JSON model that ``instance_json`` builds, without pixel data."""
    bulk_locations: BulkLocations
    """The bulk locations that ``instance_json`` returns, without pixel data."""
    pixel_data_offset: int | None
    """File offset of the top-level pixel data element's tag (where pydicom stopped)."""
    resource_path: str
    """The resource path given to read_fast_header, which `model`'s BulkDataURIs use."""
    _elements: dict[int, _Element] = field(repr=False, compare=False)
    _texts: dict[int, str | None] = field(repr=False, compare=False)
    _integers: dict[int, int | None] = field(repr=False, compare=False)
    # Per bulk value, in model order: its URI below <resource path>/bulkdata/, and its
    # location.
    _bulk: list[tuple[str, list[int] | None]] = field(repr=False, compare=False)
    _implicit: bool = field(repr=False, compare=False)

    def __contains__(self, keyword_or_tag: object) -> bool:
        """Whether the data set holds the element, as ``keyword in ds`` does."""
        if not isinstance(keyword_or_tag, str | int):
            return False
        tag = _tag(keyword_or_tag)
        return tag is not None and tag in self._elements

    def text(self, keyword_or_tag: str | int) -> str | None:
        """``parsing._text(ds, keyword)``: the value as text, None when absent or empty.

        Raises TypeError for a sequence, and ValueError for a binary value sent as a
        BulkDataURI (its bytes are not kept). read_fast_header makes sure neither
        happens for `RECORD_TEXT_KEYWORDS`.
        """
        tag = _tag(keyword_or_tag)
        if tag is None:
            return None
        if tag in self._texts:
            return self._texts[tag]
        element = self._elements.get(tag)
        return None if element is None else _text(element)

    def integer(self, keyword_or_tag: str | int) -> int | None:
        """``parsing._integer(ds, keyword)``: the value as an integer, None if it is not one.

        Like ``parsing._integer``, raises OverflowError for an infinite DS or floating
        point value; read_fast_header makes sure that does not happen for
        `RECORD_INTEGER_KEYWORDS`.
        """
        tag = _tag(keyword_or_tag)
        if tag is None:
            return None
        if tag in self._integers:
            return self._integers[tag]
        element = self._elements.get(tag)
        return None if element is None else _integer(element)

    def instance_json(
        self, pixel_data: tuple[str, str] | None, resource_path: str | None = None
    ) -> tuple[bytes, bytes]:
        """``dicomjson.instance_json(ds, resource_path, threshold, pixel_data)``.

        `resource_path` defaults to the one given to read_fast_header; another one can
        be given, such as one made of the UIDs that text() reads.
        """
        if resource_path is None or resource_path == self.resource_path:
            resource_path = self.resource_path
            model = dict(self.model)
            locations = dict(self.bulk_locations)
        else:
            model, locations = self._rebased(resource_path)
        if pixel_data is not None:
            tag, vr = pixel_data
            model[tag] = {"vr": vr, "BulkDataURI": f"{resource_path}/bulkdata/{tag}"}
            locations[tag] = None
        return orjson.dumps(model, option=orjson.OPT_SORT_KEYS), orjson.dumps(locations)

    def _rebased(self, resource_path: str) -> tuple[dict[str, Any], BulkLocations]:
        """The model and bulk locations for another resource path (copied on write)."""
        model = dict(self.model)
        locations: BulkLocations = {}
        for suffix, location in self._bulk:
            uri = f"{resource_path}/bulkdata/{suffix}"
            locations[uri.split("/bulkdata/", 1)[1]] = location
            parts = suffix.split("/")
            dataset = model
            for i in range(0, len(parts) - 1, 2):
                sequence = dataset[parts[i]] = dict(dataset[parts[i]])
                items = sequence["Value"] = list(sequence["Value"])
                index = int(parts[i + 1]) - 1
                dataset = items[index] = dict(items[index])
            dataset[parts[-1]] = {**dataset[parts[-1]], "BulkDataURI": uri}
        return model, locations

    def frame_header(self) -> Dataset:
        """A pydicom data set with what ``pixels.frames.locate_frames`` reads.

        It holds the transfer syntax, and as raw elements at their file positions the
        elements locate_frames reads and the last top-level element, where
        locate_frames then resumes its scan. ``locate_frames(fp, header.frame_header())``
        gives what ``locate_frames(fp, ds)`` gives for the pydicom path's data set. The
        last element's value may be left out: the data set is for locate_frames only.
        """
        tags = [tag for tag in self._elements if tag in _FRAME_TAGS]
        before_pixels = [tag for tag in self._elements if tag < _FIRST_PIXEL_TAG]
        if before_pixels and before_pixels[-1] not in tags:
            tags.append(before_pixels[-1])  # elements are in ascending order
        elements: dict[BaseTag, DataElement | RawDataElement] = {}
        for tag in tags:
            vr, raw, _, _, value_pos, length = self._elements[tag]
            elements[BaseTag(tag)] = RawDataElement(
                BaseTag(tag), vr, length, raw, value_pos, self._implicit, True
            )
        ds = Dataset(elements)
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = UID(self.transfer_syntax_uid)
        return ds


def read_fast_header(
    data: bytes | bytearray | memoryview,
    bulk_data_threshold: int,
    resource_path: str,
    *,
    record_positions: bool = False,
) -> FastHeader | None:
    """Read the header of the PS3.10 file `data`, or None if pydicom must do it.

    `data` is the file's bytes (bytes, or a memoryview such as one of an mmap). It may
    be only the start of the file when the result's `pixel_data_offset` is not None:
    everything before the pixel data was then in `data`. Otherwise, an element that
    ends where `data` ends is taken as the end of the data set. `bulk_data_threshold`
    and `resource_path` are those passed to ``instance_json``.

    With `record_positions` False (the default), top-level bulk locations are None, as
    the pydicom path of `dicomweb.parsing` records them: it decodes every value before
    ``instance_json`` runs, which loses the raw elements' positions. With
    `record_positions` True they are ``[value offset, value length]``, as
    ``instance_json`` records them on an undecoded data set.
    """
    if not _pydicom_is_default():
        return None
    try:
        return _Reader(data, bulk_data_threshold, resource_path, record_positions).read()
    except Exception:
        # _Unhandled, and anything malformed input can raise (struct.error, decoding
        # errors, IndexError, RecursionError): all mean "let pydicom do it".
        return None


def _pydicom_is_default() -> bool:
    """Whether pydicom is configured as this module assumes."""
    settings = config.settings
    return (
        settings.reading_validation_mode == config.IGNORE
        and settings.infer_sq_for_un_vr
        and config.replace_un_with_known_vr
        and config.assume_implicit_vr_switch
        and not config.convert_wrong_length_to_UN
        and not config.use_none_as_empty_text_VR_value
        and not config.datetime_conversion
        and not config.use_DS_numpy
        and not config.use_IS_numpy
        and pydicom.valuerep.DSclass is pydicom.valuerep.DSfloat
        and config.data_element_callback is None
        and hooks.raw_element_vr is raw_element_vr
        and hooks.raw_element_value is raw_element_value
        and not hooks.raw_element_kwargs
        and not PrivateTransferSyntaxes
    )


# --------------------------------------------------------------------------------------
# Dictionary look-ups, cached
# --------------------------------------------------------------------------------------

_CACHE_LIMIT: Final = 65536
_public_vrs: dict[int, str | None] = {}
_private_vrs: dict[tuple[int, str], str] = {}
_keyword_tags: dict[str, int | None] = {}


def _dictionary_vr(tag: int) -> str | None:
    """pydicom.datadict.dictionary_VR, None for tags it does not know."""
    try:
        return _public_vrs[tag]
    except KeyError:
        pass
    try:
        vr: str | None = dictionary_VR(tag)
    except KeyError:
        vr = None
    if len(_public_vrs) >= _CACHE_LIMIT:
        _public_vrs.clear()
    _public_vrs[tag] = vr
    return vr


def _private_dictionary_vr(tag: int, creator: str) -> str:
    key = (tag, creator)
    try:
        return _private_vrs[key]
    except KeyError:
        pass
    try:
        vr: str = private_dictionary_VR(tag, creator)
    except KeyError:
        vr = "UN"
    if len(_private_vrs) >= _CACHE_LIMIT:
        _private_vrs.clear()
    _private_vrs[key] = vr
    return vr


def _tag(keyword_or_tag: str | int) -> int | None:
    if isinstance(keyword_or_tag, int):
        return keyword_or_tag
    try:
        return _keyword_tags[keyword_or_tag]
    except KeyError:
        tag = tag_for_keyword(keyword_or_tag)
        if len(_keyword_tags) < _CACHE_LIMIT:
            _keyword_tags[keyword_or_tag] = tag
        return tag


# --------------------------------------------------------------------------------------
# Values to the JSON model (pydicom.values converters + DataElement.to_json_dict)
# --------------------------------------------------------------------------------------

# Each converter takes the non-empty raw value and the text codec of its data set and
# returns the JSON element; it raises _Unhandled where pydicom would fail, or would
# retry with other VRs, or where instance_json would crash.
_Converter = Callable[[bytes, str, str], dict[str, Any]]


def _json_multi_string(raw: bytes, codec: str, vr: str) -> dict[str, Any]:
    # AS CS DA DT TM: values.convert_string -> multi_string; trailing spaces and NULs
    # come off the whole value, not off each value.
    text = raw.decode("latin-1").rstrip(" \x00")
    if "\\" in text:
        return {"vr": vr, "Value": text.split("\\")}
    return {"vr": vr, "Value": [text]} if text else {"vr": vr}


def _json_ae(raw: bytes, codec: str, vr: str) -> dict[str, Any]:
    # convert_AE_string: str.strip() of each value (whitespace; not NULs).
    values = [value.strip() for value in raw.decode("latin-1").split("\\")]
    if len(values) > 1:
        return {"vr": vr, "Value": values}
    return {"vr": vr, "Value": values} if values[0] else {"vr": vr}


def _ui_values(raw: bytes) -> list[str]:
    # convert_UI strips trailing NULs and spaces, then UID() strips each value.
    return [value.strip() for value in raw.decode("latin-1").rstrip("\x00 ").split("\\")]


def _json_ui(raw: bytes, codec: str, vr: str) -> dict[str, Any]:
    values = _ui_values(raw)
    if len(values) > 1:
        return {"vr": vr, "Value": values}
    return {"vr": vr, "Value": values} if values[0] else {"vr": vr}


def _json_ur(raw: bytes, codec: str, vr: str) -> dict[str, Any]:
    # convert_UR_string: rstrip() of whitespace, never split.
    text = raw.decode("latin-1").rstrip()
    return {"vr": vr, "Value": [text]} if text else {"vr": vr}


def _decode_text(raw: bytes, codec: str) -> str:
    if b"\x1b" in raw:
        raise _Unhandled("code extensions")  # pydicom decodes per escape sequence
    # A UTF-8 decoding error propagates: pydicom would warn and use replacements.
    return raw.decode(codec)


def _json_text_multi(raw: bytes, codec: str, vr: str) -> dict[str, Any]:
    # SH LO UC: convert_text splits, then strips trailing NULs and spaces of each value.
    values = [value.rstrip("\x00 ") for value in _decode_text(raw, codec).split("\\")]
    if len(values) > 1:
        return {"vr": vr, "Value": values}
    return {"vr": vr, "Value": values} if values[0] else {"vr": vr}


def _json_text_single(raw: bytes, codec: str, vr: str) -> dict[str, Any]:
    # ST LT UT: convert_single_string; backslashes are text.
    text = _decode_text(raw, codec).rstrip("\x00 ")
    return {"vr": vr, "Value": [text]} if text else {"vr": vr}


def _person_names(raw: bytes, codec: str) -> list[list[str]]:
    """Each value's component groups, trailing empty groups removed (PersonName)."""
    names = []
    for value in _decode_text(raw.rstrip(b"\x00 "), codec).split("\\"):
        groups = value.split("=")
        while groups and not groups[-1]:
            groups.pop()
        names.append(groups)
    return names


def _json_pn(raw: bytes, codec: str, vr: str) -> dict[str, Any]:
    names = _person_names(raw, codec)
    if len(names) == 1 and not names[0]:
        return {"vr": vr}  # an empty PersonName has VM 0
    values = []
    for groups in names:
        if not groups:
            # to_json_dict reads components[0] of every value of a multi-valued PN.
            raise _Unhandled("instance_json fails on an empty name among several")
        name = {"Alphabetic": groups[0]}
        if len(groups) > 1:
            name["Ideographic"] = groups[1]
        if len(groups) > 2:
            name["Phonetic"] = groups[2]
        values.append(name)
    return {"vr": vr, "Value": values}


def _ds_values(raw: bytes) -> list[str]:
    # convert_DS_string: strip() the whole value, then multi_string.
    return raw.decode("latin-1").strip().rstrip(" \x00").split("\\")


def _json_ds(raw: bytes, codec: str, vr: str) -> dict[str, Any]:
    values = _ds_values(raw)
    if len(values) == 1 and values[0] == "":
        return {"vr": vr}
    numbers = []
    for value in values:
        if value.strip() == "":
            # DSfloat('') is '', and instance_json fails on float('').
            raise _Unhandled("empty DS value among several")
        # ValueError propagates: pydicom would retry the value as other VRs.
        numbers.append(float(value))
    return {"vr": vr, "Value": numbers}


def _is_number(value: str) -> tuple[str, int]:
    """(str(IS(value)), int(IS(value))), for text(), instance_json and integer()."""
    if len(value) > 64:
        raise _Unhandled("long IS value")  # int() and float() limits
    try:
        number = int(value)
    except ValueError:
        number = int(float(value))  # ValueError, OverflowError propagate
    text = value.strip()  # IS.original_string
    if number != float(value):
        # IS() returns an ISfloat for what a float does not hold exactly ('1.5', or
        # digits past 2**53): int() truncates it, and str() is the float's repr, not
        # the original string.
        number = int(float(value))
        text = str(float(value))
    if not _JSON_INT_MIN <= number <= _JSON_INT_MAX:
        raise _Unhandled("IS value too large for JSON")
    return text, number


def _is_values(raw: bytes) -> list[str]:
    # convert_IS_string: multi_string, without the strip() that DS gets.
    return raw.decode("latin-1").rstrip(" \x00").split("\\")


def _json_is(raw: bytes, codec: str, vr: str) -> dict[str, Any]:
    values = _is_values(raw)
    if len(values) == 1 and values[0] == "":
        return {"vr": vr}
    numbers = []
    for value in values:
        if value.strip() == "":
            raise _Unhandled("empty IS value")  # instance_json fails on int('')
        numbers.append(_is_number(value)[1])
    return {"vr": vr, "Value": numbers}


def _at_values(raw: bytes) -> list[int]:
    # convert_ATvalue: 4 bytes is one tag; otherwise the length is cut to a multiple
    # of 4 and the value is a list, possibly empty.
    count = len(raw) // 4
    words = struct.unpack_from(f"<{2 * count}H", raw)
    return [words[i] << 16 | words[i + 1] for i in range(0, 2 * count, 2)]


def _json_at(raw: bytes, codec: str, vr: str) -> dict[str, Any]:
    tags = _at_values(raw)
    if len(raw) != 4 and len(tags) == 1:
        # A one-tag list (5 to 7 bytes) makes to_json_dict format a list: it fails.
        raise _Unhandled("AT value of 5 to 7 bytes")
    if not tags:
        return {"vr": vr}
    return {"vr": vr, "Value": [f"{tag:08X}" for tag in tags]}


def _numbers(raw: bytes, vr: str) -> list[Any]:
    code, size = _NUMBER_FORMATS[vr]
    if len(raw) % size:
        raise _Unhandled("length not a multiple of the value size")  # pydicom raises
    return list(struct.unpack(f"<{len(raw) // size}{code}", raw))


_CONVERTERS: Final[dict[str, _Converter]] = {
    "AE": _json_ae,
    "AS": _json_multi_string,
    "AT": _json_at,
    "CS": _json_multi_string,
    "DA": _json_multi_string,
    "DS": _json_ds,
    "DT": _json_multi_string,
    "IS": _json_is,
    "LO": _json_text_multi,
    "LT": _json_text_single,
    "PN": _json_pn,
    "SH": _json_text_multi,
    "ST": _json_text_single,
    "TM": _json_multi_string,
    "UC": _json_text_multi,
    "UI": _json_ui,
    "UR": _json_ur,
    "UT": _json_text_single,
}
# VRs whose values are decoded with the data set's character set.
_TEXT_VRS: Final = frozenset({"LO", "LT", "PN", "SH", "ST", "UC", "UT"})


# --------------------------------------------------------------------------------------
# text() and integer(): parsing._text and parsing._integer on pydicom's decoded values
# --------------------------------------------------------------------------------------


def _value(element: _Element) -> object:
    """The element's value as pydicom decodes it, as far as _text and _integer can tell.

    Strings stand for str values (str, UID), lists for MultiValues and lists, bytes
    for bytes; DS and IS values are ("number", original string, number), a PersonName
    ("PN", str(name)) and a tag ("AT", tag).
    """
    vr, raw, codec, unsigned_first, _, _ = element
    if vr == "SQ":
        raise TypeError("text() and integer() do not support sequences")
    if raw is None:
        raise ValueError("the value is sent as a BulkDataURI and not kept")
    if not raw:
        return None
    values: list[Any]
    if vr in ("AS", "CS", "DA", "DT", "TM"):
        values = raw.decode("latin-1").rstrip(" \x00").split("\\")
    elif vr == "AE":
        values = [value.strip() for value in raw.decode("latin-1").split("\\")]
    elif vr == "UI":
        values = _ui_values(raw)
    elif vr == "UR":
        return raw.decode("latin-1").rstrip()
    elif vr in ("SH", "LO", "UC"):
        values = [value.rstrip("\x00 ") for value in _decode_text(raw, codec).split("\\")]
    elif vr in ("ST", "LT", "UT"):
        return _decode_text(raw, codec).rstrip("\x00 ")
    elif vr == "PN":
        values = [("PN", "=".join(groups)) for groups in _person_names(raw, codec)]
    elif vr == "DS":
        values = [
            value if value.strip() == "" else ("number", value.strip(), float(value))
            for value in _ds_values(raw)
        ]
    elif vr == "IS":
        values = [
            value if value.strip() == "" else ("number", *_is_number(value))
            for value in _is_values(raw)
        ]
    elif vr == "AT":
        tags = [("AT", tag) for tag in _at_values(raw)]
        return tags[0] if len(raw) == 4 else tags
    elif vr in _NUMBER_FORMATS:
        numbers = _numbers(raw, vr)
        if len(numbers) == 1:
            return numbers[0]
        if unsigned_first and numbers[0] < 0:
            numbers[0] += 65536
        return numbers
    else:
        return raw  # binary VRs
    return values[0] if len(values) == 1 else values


def _str(value: object) -> str:
    if isinstance(value, tuple):
        if value[0] == "AT":
            tag = value[1]
            return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"  # str(BaseTag)
        return str(value[1])  # str(PersonName), str(DSfloat), str(IS)
    return str(value)


def _text(element: _Element) -> str | None:
    value = _value(element)
    if value is None or value == "":
        return None
    if isinstance(value, tuple) and value[0] == "PN" and value[1] == "":
        return None  # PersonName('') == ''
    if isinstance(value, list):
        return "\\".join(_str(v) for v in value)
    return _str(value).rstrip("\x00 ")


def _integer(element: _Element) -> int | None:
    value = _value(element)
    if value is None or value == "":
        return None
    if isinstance(value, tuple):
        if value[0] == "PN":
            return None  # int(PersonName) is a TypeError
        number = value[1] if value[0] == "AT" else value[2]
    elif isinstance(value, list):
        return None  # int(list) is a TypeError
    else:
        number = value
    try:
        # As parsing._integer: OverflowError (an infinite float) is not caught.
        return int(number)
    except (TypeError, ValueError):
        return None


# --------------------------------------------------------------------------------------
# The reader
# --------------------------------------------------------------------------------------


class _Node:
    """A data set, for resolving 'US or SS' from (0028,0103) Pixel Representation."""

    __slots__ = ("has_pixel_data", "implicit", "parent", "pixel_representation", "state")

    def __init__(self, parent: _Node | None, implicit: bool) -> None:
        # The data set whose _pixel_rep pydicom copies to this one: only items of
        # sequences of defined length (raw elements when first accessed) get one.
        self.parent = parent
        self.implicit = implicit
        self.state = "absent"  # "absent", "empty", "int", or "other" (not one integer)
        self.pixel_representation = 0
        self.has_pixel_data = False

    def effective(self) -> int | None:
        """The ``_pixel_rep`` pydicom gives this data set, None if it sets none."""
        if self.state == "int":
            return self.pixel_representation
        if self.state == "other":
            raise _Unhandled("Pixel Representation is not one integer")
        return None if self.parent is None else self.parent.effective()

    def resolve(self) -> int:
        """The pixel_rep of filewriter._correct_ambiguous_vr_element for 'US or SS'."""
        inherited = self.effective()
        if inherited is not None:
            return inherited
        if self.state == "empty":
            return 1  # `ds.PixelRepresentation == 0` is False for None
        if self.has_pixel_data:
            raise _Unhandled("Pixel Data without Pixel Representation")  # pydicom fails
        return 0


class _Pending:
    """A 'US or SS' element, resolved once all Pixel Representations are known."""

    __slots__ = ("entry", "node", "raw", "tag", "top")

    def __init__(self, node: _Node, entry: dict[str, Any], raw: bytes, tag: int, top: bool):
        self.node = node
        self.entry = entry
        self.raw = raw
        self.tag = tag
        self.top = top


class _Reader:
    def __init__(
        self,
        data: bytes | bytearray | memoryview,
        threshold: int,
        resource_path: str,
        record_positions: bool,
    ) -> None:
        self.data: bytes | memoryview
        if isinstance(data, bytes):
            self.data = data
        else:
            view = memoryview(data)
            self.data = view if view.format == "B" and view.ndim == 1 else view.cast("B")
        self.size = len(self.data)
        self.threshold = threshold
        self.resource_path = resource_path
        self.record_positions = record_positions
        self.locations: BulkLocations = {}
        self.bulk: list[tuple[str, list[int] | None]] = []
        self.pending: list[_Pending] = []
        self.elements: dict[int, _Element] = {}
        self.pixel_data_offset: int | None = None

    def raw(self, start: int, stop: int) -> bytes:
        value = self.data[start:stop]
        return value.tobytes() if isinstance(value, memoryview) else value

    # -- file meta ----------------------------------------------------------------------

    def read(self) -> FastHeader:
        if self.size < 132 or self.raw(128, 132) != b"DICM":
            raise _Unhandled("no DICM prefix")  # pydicom refuses it (without force=True)
        pos, transfer_syntax = self.file_meta(132)
        if transfer_syntax == IMPLICIT_VR_LITTLE_ENDIAN:
            implicit = True
        elif transfer_syntax in _EXPLICIT_LE_SYNTAXES:
            implicit = False
        else:
            raise _Unhandled("transfer syntax")
        if pos < self.size:
            head = self.raw(pos, pos + 6)
            if head[:2] == b"\x00\x00":
                raise _Unhandled("command group elements")  # pydicom reads them apart
            # filereader._is_implicit_vr: pydicom reads the data set as it finds it.
            if implicit != (not (0x40 < head[4] < 0x5B and 0x40 < head[5] < 0x5B)):
                raise _Unhandled("the data set is not encoded as its transfer syntax says")
        node = _Node(None, implicit)
        model, _ = self.dataset(pos, self.size, implicit, "latin-1", node, "", 0)
        for pending in self.pending:
            self.resolve_us_ss(pending)
        for frame_tag in _FRAME_TAGS & self.elements.keys():
            if self.elements[frame_tag][1] is None:
                raise _Unhandled("a sequence where frame_header() needs a value")
        texts: dict[int, str | None] = {}
        integers: dict[int, int | None] = {}
        for keyword in RECORD_TEXT_KEYWORDS:
            tag = _tag(keyword)
            assert tag is not None
            element = self.elements.get(tag)
            texts[tag] = None if element is None else _text(element)
        for keyword in RECORD_INTEGER_KEYWORDS:
            tag = _tag(keyword)
            assert tag is not None
            element = self.elements.get(tag)
            integers[tag] = None if element is None else _integer(element)
        return FastHeader(
            transfer_syntax,
            model,
            self.locations,
            self.pixel_data_offset,
            self.resource_path,
            self.elements,
            texts,
            integers,
            self.bulk,
            implicit,
        )

    def file_meta(self, pos: int) -> tuple[int, str]:
        """Check group 0002; return where it ends and the Transfer Syntax UID."""
        data, size = self.data, self.size
        transfer_syntax: str | None = None
        last = -1
        while size - pos >= 8:
            group, element, vr_bytes, length = _EXPLICIT_HEADER.unpack_from(data, pos)
            if group != 2:
                break
            vr = _VR_OF_BYTES.get(vr_bytes)
            if vr is None or vr in ("SQ", "UN", "DS", "IS"):
                raise _Unhandled("file meta VR")
            tag = group << 16 | element
            if tag <= last:
                raise _Unhandled("file meta out of order")
            last = tag
            if vr in _LONG_VRS:
                if size - pos < 12:
                    raise _Unhandled("truncated file meta")
                (length,) = _UL.unpack_from(data, pos + 8)
                pos += 12
            else:
                pos += 8
            if length == _UNDEFINED or pos + length > size:
                raise _Unhandled("truncated file meta")
            # pydicom converts the first element, the group length and the transfer
            # syntax: numbers of a wrong length would make it fail.
            if vr in _NUMBER_FORMATS and length % _NUMBER_FORMATS[vr][1]:
                raise _Unhandled("file meta value length")
            if tag == 0x00020010:
                if vr != "UI":
                    raise _Unhandled("transfer syntax VR")
                values = _ui_values(self.raw(pos, pos + length))
                if len(values) != 1:
                    raise _Unhandled("multi-valued transfer syntax")
                transfer_syntax = values[0]
            pos += length
        if transfer_syntax is None:
            raise _Unhandled("no transfer syntax")
        if 0 < size - pos < 8:
            raise _Unhandled("trailing bytes")  # pydicom ignores them
        return pos, transfer_syntax

    # -- data sets ----------------------------------------------------------------------

    def dataset(
        self,
        pos: int,
        end: int,
        implicit: bool,
        codec: str,
        node: _Node,
        path: str,
        depth: int,
        *,
        delimited: bool = False,
    ) -> tuple[dict[str, Any], int]:
        """Read elements from `pos` up to `end`, or up to an item delimiter.

        Depth 0 is the top-level data set, which ends at the end of the file or before
        pixel data. `path` is where the data set is below <resource path>/bulkdata/,
        such as "00081140/2/". Returns the data set's JSON model and where it ended.
        """
        if depth > _MAX_DEPTH:
            raise _Unhandled("nesting too deep")
        data = self.data
        is_view = isinstance(data, memoryview)
        top = depth == 0
        model: dict[str, Any] = {}
        creators: dict[int, object] = {}
        charset_may_change = True  # no value decoded with the character set yet
        last = -1
        explicit_unpack = _EXPLICIT_HEADER.unpack_from
        implicit_unpack = _IMPLICIT_HEADER.unpack_from
        ul_unpack = _UL.unpack_from
        long_vrs = _LONG_VRS
        vr_of_bytes = _VR_OF_BYTES
        converters = _CONVERTERS
        binary_vrs = _BINARY_VRS
        standard_vrs = _STANDARD_VRS
        threshold = self.threshold
        elements = self.elements
        base = f"{self.resource_path}/bulkdata/"
        while True:
            if pos >= end:
                if delimited or pos != end:
                    raise _Unhandled("the data set ends early")
                return model, pos
            if end - pos < 8:
                raise _Unhandled("truncated element header")
            vr: str | None
            if implicit:
                group, element, length = implicit_unpack(data, pos)
                vr = None
                value_pos = pos + 8
            else:
                group, element, vr_bytes, length = explicit_unpack(data, pos)
                if group == 0xFFFE:
                    vr = None
                    (length,) = ul_unpack(data, pos + 4)
                    value_pos = pos + 8
                else:
                    vr = vr_of_bytes.get(vr_bytes)
                    if vr is None:
                        # pydicom switches to implicit VR, or guesses a 2-byte length
                        raise _Unhandled("unknown VR")
                    if vr in long_vrs:
                        if end - pos < 12:
                            raise _Unhandled("truncated element header")
                        (length,) = ul_unpack(data, pos + 8)
                        value_pos = pos + 12
                    else:
                        value_pos = pos + 8
            tag = group << 16 | element
            if group == 0xFFFE:
                if tag == _ITEM_END and delimited and length == 0:
                    return model, value_pos
                raise _Unhandled("item or delimiter out of place")
            if top and tag in _PIXEL_TAGS:
                self.pixel_data_offset = pos
                return model, pos
            if tag <= last:
                raise _Unhandled("elements out of order")  # pydicom keeps file order
            last = tag
            if tag == _PIXEL_DATA:
                node.has_pixel_data = True
            key = f"{tag:08X}"

            if length == _UNDEFINED:
                if tag in (_CHARSET_TAG, _PIXEL_REPRESENTATION):
                    raise _Unhandled("a sequence where a value belongs")
                vr = self.undefined_length_vr(tag, vr, value_pos, end)
                # read_sequence in the generator: no Pixel Representation is handed down
                items, pos = self.sequence(
                    value_pos, None, end, implicit, codec, None, f"{path}{key}/", depth
                )
                model[key] = {"vr": "SQ", "Value": items} if items else {"vr": "SQ"}
                charset_may_change = False
                if top:
                    elements[tag] = ("SQ", None, codec, False, value_pos, length)
                continue

            pos = value_pos + length
            if pos > end:
                raise _Unhandled("value past the end")
            if vr is None:
                vr = self.implicit_vr(tag, creators)
            elif vr == "UN":
                vr = self.un_vr(tag, length, creators)
            if tag == _CHARSET_TAG and vr != "CS":
                raise _Unhandled("Specific Character Set VR")
            if tag == _PIXEL_REPRESENTATION:
                node.state = "other"  # unless it is a number, below

            if vr in binary_vrs or vr not in standard_vrs:
                if vr not in binary_vrs:
                    vr = self.ambiguous_vr(tag, vr, node)
                if vr in binary_vrs:
                    if length > threshold:
                        suffix = path + key
                        uri = base + suffix
                        model[key] = {"vr": vr, "BulkDataURI": uri}
                        location = [value_pos, length] if top and self.record_positions else None
                        self.locations[uri.split("/bulkdata/", 1)[1]] = location
                        self.bulk.append((suffix, location))
                        if top:
                            kept = None
                            if tag in _FRAME_TAGS:
                                kept = data[value_pos:pos]
                                if is_view:
                                    kept = kept.tobytes()  # type: ignore[union-attr]
                            elements[tag] = (vr, kept, codec, False, value_pos, length)  # type: ignore[assignment]
                        continue
                    raw = data[value_pos:pos]
                    if is_view:
                        raw = raw.tobytes()  # type: ignore[union-attr]
                    if raw:
                        model[key] = {"vr": vr, "InlineBinary": base64.b64encode(raw).decode()}
                    else:
                        model[key] = {"vr": vr}
                    if top:
                        elements[tag] = (vr, raw, codec, False, value_pos, length)  # type: ignore[assignment]
                    continue
                # 'US or SS': resolved at the end, when all Pixel Representations are known
                raw = data[value_pos:pos]
                if is_view:
                    raw = raw.tobytes()  # type: ignore[union-attr]
                entry: dict[str, Any] = {"vr": vr}
                model[key] = entry
                self.pending.append(_Pending(node, entry, raw, tag, top))  # type: ignore[arg-type]
                if top:
                    elements[tag] = (vr, raw, codec, False, value_pos, length)  # type: ignore[assignment]
                continue

            if vr == "SQ":
                if length:
                    items, _ = self.sequence(
                        value_pos, length, pos, implicit, codec, node, f"{path}{key}/", depth
                    )
                else:
                    items = []
                model[key] = {"vr": "SQ", "Value": items} if items else {"vr": "SQ"}
                charset_may_change = False
                if top:
                    elements[tag] = ("SQ", None, codec, False, value_pos, length)
                continue

            raw = data[value_pos:pos]
            if is_view:
                raw = raw.tobytes()  # type: ignore[union-attr]
            unsigned_first = False
            if not raw:
                model[key] = {"vr": vr}
            elif vr in converters:
                model[key] = converters[vr](raw, codec, vr)  # type: ignore[arg-type]
            else:
                numbers = _numbers(raw, vr)  # type: ignore[arg-type]
                if tag in _LUT_DESCRIPTORS and len(numbers) > 1:
                    # hooks.raw_element_value: the first LUT Descriptor value is unsigned
                    unsigned_first = True
                    if numbers[0] < 0:
                        numbers[0] += 65536
                model[key] = {"vr": vr, "Value": numbers}
            if top:
                elements[tag] = (vr, raw, codec, unsigned_first, value_pos, length)  # type: ignore[assignment]

            if vr in _TEXT_VRS:
                charset_may_change = False
            if tag == _CHARSET_TAG:
                if not charset_may_change or vr != "CS":
                    # pydicom decodes values read before (0008,0005) inconsistently
                    raise _Unhandled("Specific Character Set after text")
                codec = self.charset(raw)  # type: ignore[arg-type]
            elif tag == _PIXEL_REPRESENTATION:
                self.pixel_representation(node, vr, raw)  # type: ignore[arg-type]
            elif group & 1 and 0x10 <= element < 0x100:
                creators[tag] = _value((vr, raw, codec, False, 0, 0))  # type: ignore[arg-type]
                charset_may_change = False

    def sequence(
        self,
        pos: int,
        length: int | None,
        limit: int,
        implicit: bool,
        codec: str,
        parent: _Node | None,
        path: str,
        depth: int,
    ) -> tuple[list[dict[str, Any]], int]:
        """Read the items of the sequence value at `pos`; `length` None is undefined.

        `limit` is where the bytes the sequence may use end; `parent` is the data set
        whose Pixel Representation the items inherit (None: they inherit none).
        """
        data = self.data
        end = limit if length is None else pos + length
        items: list[dict[str, Any]] = []
        while True:
            if length is not None and pos == end:
                return items, pos
            if end - pos < 8:
                raise _Unhandled("truncated sequence")
            group, element, item_length = _IMPLICIT_HEADER.unpack_from(data, pos)
            tag = group << 16 | element
            if tag == _SEQUENCE_END and length is None and item_length == 0:
                return items, pos + 8
            if tag != _ITEM:
                raise _Unhandled("not an item")
            start = pos + 8
            # filereader._is_implicit_vr: an item of an explicit VR sequence is read as
            # implicit VR when its first element's VR is not two capital letters.
            item_implicit = implicit
            if not implicit and end - start >= 6:
                first_vr = data[start + 4 : start + 6]
                item_implicit = not (0x40 < first_vr[0] < 0x5B and 0x40 < first_vr[1] < 0x5B)
            node = _Node(parent, item_implicit)
            item_path = f"{path}{len(items) + 1}/"
            if item_length == _UNDEFINED:
                model, pos = self.dataset(
                    start, end, item_implicit, codec, node, item_path, depth + 1, delimited=True
                )
            else:
                pos = start + item_length
                if pos > end:
                    raise _Unhandled("item past the end of its sequence")
                model, _ = self.dataset(
                    start, pos, item_implicit, codec, node, item_path, depth + 1
                )
            items.append(model)

    # -- VRs ----------------------------------------------------------------------------

    def undefined_length_vr(self, tag: int, vr: str | None, value_pos: int, end: int) -> str:
        """The VR of an element of undefined length: only sequences are handled."""
        if vr is None:
            # Implicit VR: the public dictionary, else a sequence if an item follows.
            dictionary = _dictionary_vr(tag)
            if dictionary == "SQ":
                return "SQ"
            if dictionary is None and end - value_pos >= 4:
                group, element = struct.unpack_from("<HH", self.data, value_pos)
                if group << 16 | element == _ITEM:
                    return "SQ"
        elif vr in ("SQ", "UN"):
            return "SQ"  # config.settings.infer_sq_for_un_vr
        raise _Unhandled("undefined length value")  # e.g. encapsulated pixel data

    def implicit_vr(self, tag: int, creators: dict[int, object]) -> str:
        """hooks.raw_element_vr for an implicit VR element."""
        vr = _dictionary_vr(tag)
        if vr is not None:
            return vr
        if tag >> 16 & 1:
            return self.private_vr(tag, creators)
        if tag & 0xFFFF == 0:
            return "UL"  # a group length
        return "UN"  # pydicom warns, then uses UN

    def un_vr(self, tag: int, length: int, creators: dict[int, object]) -> str:
        """hooks.raw_element_vr for an explicit UN: a known tag gets its own VR."""
        if tag >> 16 & 1:
            return self.private_vr(tag, creators)
        if length < 0xFFFF:
            vr = _dictionary_vr(tag)
            if vr is not None:
                return vr
        return "UN"

    @staticmethod
    def private_vr(tag: int, creators: dict[int, object]) -> str:
        """hooks._private_vr_for_tag, with the creators met so far in the data set."""
        element = tag & 0xFFFF
        if 0x10 <= element < 0x100:
            return "LO"  # a private creator
        if element & 0xFF00:
            creator = creators.get(tag & 0xFFFF0000 | element >> 8)
            if isinstance(creator, list):
                raise _Unhandled("multi-valued private creator")  # pydicom warns
            if isinstance(creator, str) and creator:
                return _private_dictionary_vr(tag, creator)
        return "UN"

    @staticmethod
    def ambiguous_vr(tag: int, vr: str, node: _Node) -> str:
        """filewriter._correct_ambiguous_vr_element; 'US or SS' is resolved later."""
        if vr == "US or SS" and tag in _US_SS_BY_PIXEL_REPRESENTATION:
            return vr
        if vr == "OB or OW":
            if tag in _OVERLAY_DATA:
                return "OW"
            if (tag == _PIXEL_DATA or tag in _OB_OW_BY_ENCODING) and node.implicit:
                return "OW"
        # The rest depends on BitsAllocated, LUTDescriptor... or stays ambiguous.
        raise _Unhandled(f"VR {vr}")

    @staticmethod
    def pixel_representation(node: _Node, vr: str, raw: bytes) -> None:
        value = _value((vr, raw, "latin-1", False, 0, 0))
        if value is None:
            node.state = "empty"
        elif type(value) is int:
            node.state = "int"
            node.pixel_representation = value
        else:
            node.state = "other"

    def resolve_us_ss(self, pending: _Pending) -> None:
        vr = "US" if pending.node.resolve() == 0 else "SS"
        entry = pending.entry
        entry["vr"] = vr
        if pending.raw:
            # No LUT Descriptor fix here: hooks.raw_element_value saw bytes.
            entry["Value"] = _numbers(pending.raw, vr)
        if pending.top:
            _, raw, codec, _, value_pos, length = self.elements[pending.tag]
            self.elements[pending.tag] = (vr, raw, codec, False, value_pos, length)

    @staticmethod
    def charset(raw: bytes) -> str:
        value = raw.decode("latin-1").rstrip(" \x00")
        codec = _CHARSETS.get(value)
        if codec is None:
            raise _Unhandled(f"Specific Character Set {value!r}")
        return codec
