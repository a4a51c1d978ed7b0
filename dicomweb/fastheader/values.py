"""Element values, per VR: to the DICOM JSON model, and to text() and integer().

What pydicom's value converters and ``DataElement.to_json_dict`` make of a raw value,
and what ``parsing._text`` and ``parsing._integer`` then read from pydicom's value.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, Final

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


class _Unhandled(Exception):
    """The data is valid or not, but this package cannot be sure to match pydicom."""


# A top-level element, kept to answer text() and integer() and for frame_header(): (VR,
# raw value or None for a sequence or a value sent as a BulkDataURI, text codec, whether
# the first of several numbers is made unsigned as hooks.raw_element_value does for LUT
# Descriptors, value offset, value length).
_Element = tuple[str, bytes | None, str, bool, int, int]


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
        return int(number)
    except (TypeError, ValueError, OverflowError):
        # As parsing._integer; OverflowError: an infinite float.
        return None
