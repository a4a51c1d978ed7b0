"""The byte-level reader: `read_fast_header`.

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
"""

from __future__ import annotations

import base64
import struct
from typing import Any, Final

import pydicom.valuerep
from pydicom import config
from pydicom.datadict import dictionary_VR, private_dictionary_VR
from pydicom.hooks import hooks, raw_element_value, raw_element_vr
from pydicom.uid import AllTransferSyntaxes, PrivateTransferSyntaxes

from dicomweb.fastheader.header import (
    _CACHE_LIMIT,
    _FRAME_TAGS,
    RECORD_INTEGER_KEYWORDS,
    RECORD_TEXT_KEYWORDS,
    BulkLocations,
    FastHeader,
    _tag,
)
from dicomweb.fastheader.values import (
    _CONVERTERS,
    _NUMBER_FORMATS,
    _TEXT_VRS,
    _Element,
    _integer,
    _numbers,
    _text,
    _ui_values,
    _Unhandled,
    _value,
)

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
    """Whether pydicom is configured as this package assumes."""
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

_public_vrs: dict[int, str | None] = {}
_private_vrs: dict[tuple[int, str], str] = {}


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
