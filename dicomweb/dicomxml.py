"""DICOM JSON Model (PS3.18 F.2) to Native DICOM Model XML (PS3.19 A.1).

The server keeps metadata as DICOM JSON, so `application/dicom+xml` responses are
produced from that JSON rather than from a parsed data set. Encoding rules follow
PS3.19 Table A.1.5-2 and the A.1.6 schema:

* attributes appear in tag order; Group Length (gggg,0000) attributes are left out;
* an empty attribute is a `DicomAttribute` with no children;
* Private Data Elements carry `privateCreator` and are tagged `gggg00ee` (the block
  is not sent); the Private Creator Data Elements themselves are therefore not
  written (as dcm4che does). A Private Data Element whose creator is missing keeps
  its full tag and has no `privateCreator`;
* `keyword` is written for public tags known to pydicom's data dictionary only.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any
from xml.sax.saxutils import escape

from pydicom.datadict import keyword_for_tag
from pydicom.valuerep import format_number_as_ds

NAMESPACE = "http://dicom.nema.org/PS3.19/models/NativeDICOM"
DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>\n'

_TAG = re.compile(r"[0-9A-Fa-f]{8}")
# Characters that XML 1.0 does not allow; replaced by U+FFFD.
_INVALID_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_TEXT_ENTITIES = {"\r": "&#13;"}
_ATTR_ENTITIES = {'"': "&quot;", "\t": "&#9;", "\n": "&#10;", "\r": "&#13;"}
_PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")
_PN_COMPONENTS = ("FamilyName", "GivenName", "MiddleName", "NamePrefix", "NameSuffix")
_DS_MAX_LENGTH = 16


def json_to_xml(dataset: Mapping[str, Any], *, namespace: bool = False) -> bytes:
    """Return one DICOM JSON Model object as a UTF-8 Native DICOM Model document.

    With `namespace`, the root declares the schema's default namespace
    (`xmlns="http://dicom.nema.org/PS3.19/models/NativeDICOM"`); like dcm4che and
    DCMTK, the default is to leave it out.
    """
    out: list[str] = [DECLARATION, "<NativeDicomModel"]
    if namespace:
        out.append(f' xmlns="{NAMESPACE}"')
    out.append(' xml:space="preserve">')
    _write_dataset(out, dataset)
    out.append("</NativeDicomModel>\n")
    return "".join(out).encode("utf-8")


def multipart_xml_parts(
    datasets: Iterable[Mapping[str, Any]], *, namespace: bool = False
) -> Iterator[bytes]:
    """Yield one XML document per data set, for a multipart/related response."""
    for dataset in datasets:
        yield json_to_xml(dataset, namespace=namespace)


def _write_dataset(out: list[str], dataset: Mapping[str, Any]) -> None:
    """Append the DicomAttribute elements of one data set (or item), in tag order."""
    elements: list[tuple[int, Mapping[str, Any]]] = []
    for key, element in dataset.items():
        if not isinstance(key, str) or _TAG.fullmatch(key) is None:
            raise ValueError(f"invalid DICOM JSON tag: {key!r}")
        if not isinstance(element, Mapping):
            raise ValueError(f"DICOM JSON attribute {key} is not an object")
        elements.append((int(key, 16), element))
    elements.sort(key=lambda pair: pair[0])
    creators = _private_creators(elements)
    for tag, element in elements:
        group, elem = tag >> 16, tag & 0xFFFF
        if elem == 0:
            continue  # Group Length: not allowed in the Native DICOM Model (A.1.1)
        private = group % 2 == 1
        if private and 0x0010 <= elem <= 0x00FF:
            continue  # Private Creator: conveyed by privateCreator instead
        _write_attribute(out, tag, element, creators.get(tag) if private else None)


def _private_creators(elements: list[tuple[int, Mapping[str, Any]]]) -> dict[int, str]:
    """Map each Private Data Element tag to its Private Creator, when present."""
    reserved: dict[int, str] = {}
    for tag, element in elements:
        if (tag >> 16) % 2 == 1 and 0x0010 <= (tag & 0xFFFF) <= 0x00FF:
            values = element.get("Value")
            if isinstance(values, list) and values and isinstance(values[0], str):
                reserved[tag] = values[0].strip(" ")  # LO: padding is not significant
    creators: dict[int, str] = {}
    for tag, _ in elements:
        elem = tag & 0xFFFF
        if (tag >> 16) % 2 == 1 and elem >= 0x1000:
            creator = reserved.get((tag & 0xFFFF0000) | (elem >> 8))
            if creator is not None:
                creators[tag] = creator
    return creators


def _write_attribute(
    out: list[str], tag: int, element: Mapping[str, Any], creator: str | None
) -> None:
    """Append one DicomAttribute element."""
    vr = element.get("vr")
    if not isinstance(vr, str):
        raise ValueError(f"DICOM JSON attribute {tag:08X} has no vr")
    shown_tag = tag & 0xFFFF00FF if creator is not None else tag
    out.append(f'<DicomAttribute tag="{shown_tag:08X}" vr="{_attr(vr)}"')
    if (tag >> 16) % 2 == 0:
        keyword = keyword_for_tag(tag)
        if keyword:
            out.append(f' keyword="{_attr(keyword)}"')
    if creator is not None:
        out.append(f' privateCreator="{_attr(creator)}"')

    values = element.get("Value")
    if values:
        if not isinstance(values, list):
            raise ValueError(f"Value of DICOM JSON attribute {tag:08X} is not an array")
        out.append(">")
        if vr == "SQ":
            _write_items(out, values)
        elif vr == "PN":
            _write_person_names(out, values)
        else:
            for number, value in enumerate(values, 1):
                out.append(f'<Value number="{number}">{_text(_value_text(value, vr))}</Value>')
    elif "BulkDataURI" in element:
        uri = element["BulkDataURI"]
        out.append(f'><BulkData uri="{_attr(str(uri))}"/>')
    elif element.get("InlineBinary"):
        data = element["InlineBinary"]
        out.append(f"><InlineBinary>{_text(str(data))}</InlineBinary>")
    else:
        out.append("/>")  # zero length: no Value, Item, PersonName, ...
        return
    out.append("</DicomAttribute>")


def _write_items(out: list[str], items: list[Any]) -> None:
    """Append the Item elements of a sequence."""
    for number, item in enumerate(items, 1):
        if item is None:
            item = {}
        if not isinstance(item, Mapping):
            raise ValueError("DICOM JSON sequence item is not an object")
        if not item:
            out.append(f'<Item number="{number}"/>')
            continue
        out.append(f'<Item number="{number}">')
        _write_dataset(out, item)
        out.append("</Item>")


def _write_person_names(out: list[str], names: list[Any]) -> None:
    """Append PersonName elements, each split into groups and components."""
    for number, name in enumerate(names, 1):
        if name is None:
            name = {}
        elif isinstance(name, str):  # lenient: a bare string is the Alphabetic group
            name = {"Alphabetic": name}
        if not isinstance(name, Mapping):
            raise ValueError("DICOM JSON person name is not an object")
        out.append(f'<PersonName number="{number}">')
        for group in _PN_GROUPS:
            text = name.get(group)
            if not text:
                continue
            components = str(text).split("^", len(_PN_COMPONENTS) - 1)
            if not any(components):
                continue
            out.append(f"<{group}>")
            for component, value in zip(_PN_COMPONENTS, components, strict=False):
                if value:
                    out.append(f"<{component}>{_text(value)}</{component}>")
            out.append(f"</{group}>")
        out.append("</PersonName>")


def _value_text(value: Any, vr: str) -> str:
    """Return the character data of one Value (numbers in DICOM string form)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value.upper() if vr == "AT" else value
    if isinstance(value, bool):
        raise ValueError(f"unexpected boolean value for VR {vr}")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _float_text(value, vr)
    raise ValueError(f"unexpected {type(value).__name__} value for VR {vr}")


def _float_text(value: float, vr: str) -> str:
    """Format a JSON number; DS and IS stay within their DICOM lexical forms."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if vr in ("IS", "DS") and value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    text = repr(value)
    if vr == "DS" and len(text) > _DS_MAX_LENGTH:
        text = format_number_as_ds(value)
    return text


def _clean(text: str) -> str:
    """Replace characters that cannot appear in an XML 1.0 document."""
    return _INVALID_XML.sub("\ufffd", text)


def _text(text: str) -> str:
    """Escape character data; CR is kept as a reference so parsers preserve it."""
    return escape(_clean(text), _TEXT_ENTITIES)


def _attr(text: str) -> str:
    """Escape a double-quoted attribute value."""
    return escape(_clean(text), _ATTR_ENTITIES)
