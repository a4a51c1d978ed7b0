"""Native DICOM Model XML (PS3.19 A.1) produced from pydicom's DICOM JSON Model."""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET
from typing import Any

from pydicom import Dataset
from pydicom.dataelem import DataElement
from pydicom.sequence import Sequence

from dicomweb.dicomxml import NAMESPACE, json_to_xml, multipart_xml_parts

XML_SPACE = "{http://www.w3.org/XML/1998/namespace}space"
BULK_URI = "https://example.test/studies/1.2.3/bulkdata/7FE00010?a=1&b=2"


def _dataset() -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.StudyInstanceUID = "1.2.840.113619.2.1.1"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.PixelSpacing = ["0.5", "0.25"]
    ds.SliceThickness = "2"
    ds.InstanceNumber = "12"
    ds.PatientName = "Yamada^Tarou=山田^太郎=やまだ^たろう"
    ds.ReferringPhysicianName = ["Doe^John^Q^Dr^Jr", "Roe^Jane"]
    ds.StudyDescription = "CT <head> & neck > 1"
    ds.AccessionNumber = ""
    ds.FrameIncrementPointer = [0x00181063, 0x0020000D]
    ds.ReferencedSeriesSequence = Sequence([Dataset(), Dataset()])
    ds.ReferencedSeriesSequence[0].SeriesInstanceUID = "1.2.3.1"
    instance = Dataset()
    instance.ReferencedSOPInstanceUID = "1.2.3.1.1"
    ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence = Sequence([instance])
    ds.ReferencedSeriesSequence[1].SeriesInstanceUID = "1.2.3.2"
    ds.ProcedureCodeSequence = Sequence()
    block = ds.private_block(0x0009, "ACME 1.0", create=True)
    block.add_new(0x01, "LO", "private value")
    block.add_new(0x02, "US", 7)
    ds.add(DataElement(0x00091203, "LO", "orphan"))  # block 0x12 has no creator
    ds.add(DataElement(0x00431029, "OB", b"\x00\x01\x02\xff"))
    ds.add(DataElement(0x7FE00010, "OB", bytes(range(256)) * 8))
    return ds


def _json(ds: Dataset) -> dict[str, Any]:
    def handler(elem: DataElement) -> str:
        assert elem.tag == 0x7FE00010
        return BULK_URI

    result: dict[str, Any] = ds.to_json_dict(
        bulk_data_threshold=1024, bulk_data_element_handler=handler
    )
    return result


def _root(ds: Dataset) -> ET.Element:
    document = json_to_xml(_json(ds))
    assert document.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    return ET.fromstring(document)


def _attribute(parent: ET.Element, tag: str) -> ET.Element:
    found = parent.findall(f"DicomAttribute[@tag='{tag}']")
    assert len(found) == 1, tag
    return found[0]


def _values(attribute: ET.Element) -> list[str | None]:
    values = attribute.findall("Value")
    assert [v.get("number") for v in values] == [str(i) for i in range(1, len(values) + 1)]
    assert list(attribute) == values
    return [v.text for v in values]


def _components(group: ET.Element | None) -> dict[str, str | None]:
    assert group is not None
    return {child.tag: child.text for child in group}


def test_root_and_tag_order() -> None:
    root = _root(_dataset())
    assert root.tag == "NativeDicomModel"
    assert root.get(XML_SPACE) == "preserve"
    tags = [a.get("tag") for a in root]
    assert all(a.tag == "DicomAttribute" for a in root)
    assert tags[:3] == ["00080005", "00080008", "00080050"]
    assert tags[-1] == "7FE00010"
    public = [t for t in tags if t is not None and int(t[:4], 16) % 2 == 0]
    assert public == sorted(public)


def test_strings_and_keywords() -> None:
    root = _root(_dataset())
    uid = _attribute(root, "0020000D")
    assert uid.attrib == {"tag": "0020000D", "vr": "UI", "keyword": "StudyInstanceUID"}
    assert _values(uid) == ["1.2.840.113619.2.1.1"]
    image_type = _attribute(root, "00080008")
    assert image_type.get("vr") == "CS"
    assert image_type.get("keyword") == "ImageType"
    assert _values(image_type) == ["ORIGINAL", "PRIMARY", "AXIAL"]


def test_numbers_keep_dicom_string_form() -> None:
    root = _root(_dataset())
    assert _values(_attribute(root, "00280030")) == ["0.5", "0.25"]
    assert _values(_attribute(root, "00180050")) == ["2"]
    assert _values(_attribute(root, "00200013")) == ["12"]
    assert _attribute(root, "00200013").get("vr") == "IS"


def test_escaping() -> None:
    document = json_to_xml(_json(_dataset()))
    assert b"CT &lt;head&gt; &amp; neck &gt; 1" in document
    root = ET.fromstring(document)
    assert _values(_attribute(root, "00081030")) == ["CT <head> & neck > 1"]
    bulk = _attribute(root, "7FE00010").find("BulkData")
    assert bulk is not None
    assert bulk.attrib == {"uri": BULK_URI}


def test_person_name_groups_and_components() -> None:
    root = _root(_dataset())
    patient = _attribute(root, "00100010")
    assert patient.get("vr") == "PN"
    assert patient.get("keyword") == "PatientName"
    (name,) = list(patient)
    assert name.tag == "PersonName"
    assert name.get("number") == "1"
    assert [g.tag for g in name] == ["Alphabetic", "Ideographic", "Phonetic"]
    expected = [
        {"FamilyName": "Yamada", "GivenName": "Tarou"},
        {"FamilyName": "山田", "GivenName": "太郎"},
        {"FamilyName": "やまだ", "GivenName": "たろう"},
    ]
    assert [_components(g) for g in name] == expected

    physicians = _attribute(root, "00080090").findall("PersonName")
    assert [p.get("number") for p in physicians] == ["1", "2"]
    assert [g.tag for g in physicians[0]] == ["Alphabetic"]
    assert _components(physicians[0].find("Alphabetic")) == {
        "FamilyName": "Doe",
        "GivenName": "John",
        "MiddleName": "Q",
        "NamePrefix": "Dr",
        "NameSuffix": "Jr",
    }
    assert _components(physicians[1].find("Alphabetic")) == {
        "FamilyName": "Roe",
        "GivenName": "Jane",
    }


def test_non_ascii_is_utf8() -> None:
    document = json_to_xml(_json(_dataset()))
    assert "山田".encode() in document
    assert "<FamilyName>山田</FamilyName>".encode() in document


def test_sequences_and_items() -> None:
    root = _root(_dataset())
    sequence = _attribute(root, "00081115")
    assert sequence.get("vr") == "SQ"
    assert sequence.get("keyword") == "ReferencedSeriesSequence"
    items = list(sequence)
    assert [i.tag for i in items] == ["Item", "Item"]
    assert [i.get("number") for i in items] == ["1", "2"]
    assert _values(_attribute(items[0], "0020000E")) == ["1.2.3.1"]
    assert _values(_attribute(items[1], "0020000E")) == ["1.2.3.2"]
    nested = _attribute(items[0], "0008114A").findall("Item")
    assert [i.get("number") for i in nested] == ["1"]
    assert _values(_attribute(nested[0], "00081155")) == ["1.2.3.1.1"]
    assert root.find("DicomAttribute/Item/DicomAttribute/Item/DicomAttribute") is not None


def test_empty_attributes_have_no_children() -> None:
    root = _root(_dataset())
    for tag in ("00080050", "00081032"):  # empty SH, empty SQ
        attribute = _attribute(root, tag)
        assert list(attribute) == []
        assert attribute.text is None
    assert _attribute(root, "00081032").get("vr") == "SQ"


def test_attribute_tag_values() -> None:
    root = _root(_dataset())
    pointer = _attribute(root, "00280009")
    assert pointer.get("vr") == "AT"
    assert _values(pointer) == ["00181063", "0020000D"]


def test_private_attributes() -> None:
    root = _root(_dataset())
    # Private Data Elements are gggg00ee with the creator conveyed explicitly;
    # the Private Creator Data Element itself is not written.
    assert root.findall("DicomAttribute[@tag='00090010']") == []
    assert root.findall("DicomAttribute[Value='ACME 1.0']") == []
    private = [a for a in root if a.get("privateCreator") == "ACME 1.0"]
    assert [a.get("tag") for a in private] == ["00090001", "00090002"]
    assert private[0].attrib == {
        "tag": "00090001",
        "vr": "LO",
        "privateCreator": "ACME 1.0",
    }
    assert _values(private[0]) == ["private value"]
    assert private[1].get("vr") == "US"
    assert _values(private[1]) == ["7"]
    orphan = _attribute(root, "00091203")
    assert orphan.attrib == {"tag": "00091203", "vr": "LO"}
    assert all(a.get("keyword") is None for a in root if int(a.get("tag", "0")[:4], 16) % 2)


def test_inline_binary_and_bulk_data() -> None:
    root = _root(_dataset())
    inline = _attribute(root, "00431029")
    assert inline.get("vr") == "OB"
    (binary,) = list(inline)
    assert binary.tag == "InlineBinary"
    assert binary.text is not None
    assert base64.b64decode(binary.text) == b"\x00\x01\x02\xff"
    pixels = _attribute(root, "7FE00010")
    assert pixels.get("keyword") == "PixelData"
    assert [c.tag for c in pixels] == ["BulkData"]


def test_json_edge_cases() -> None:
    model: dict[str, Any] = {
        "00080008": {"vr": "CS", "Value": ["MPG", None, "XR3"]},
        "00181030": {"vr": "LO", "Value": ["a\r\nb\x01"]},
        "00280000": {"vr": "UL", "Value": [4]},  # group length: dropped
        "00280009": {"vr": "AT", "Value": ["0018106a"]},
        "00280030": {"vr": "DS", "Value": [0.30000000000000004, 1e-20]},
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "^Given"}, {}]},
        "00081115": {"vr": "SQ", "Value": [{}]},
    }
    root = ET.fromstring(json_to_xml(model))
    assert [a.get("tag") for a in root] == [
        "00080008",
        "00081115",
        "00100010",
        "00181030",
        "00280009",
        "00280030",
    ]
    assert _values(_attribute(root, "00080008")) == ["MPG", None, "XR3"]
    assert _values(_attribute(root, "00181030")) == ["a\r\nb\ufffd"]
    assert _values(_attribute(root, "00280009")) == ["0018106A"]
    spacing = _values(_attribute(root, "00280030"))
    assert spacing[1] == "1e-20"
    assert spacing[0] is not None
    assert len(spacing[0]) <= 16
    assert float(spacing[0]) == 0.3
    names = _attribute(root, "00100010").findall("PersonName")
    assert _components(names[0].find("Alphabetic")) == {"GivenName": "Given"}
    assert list(names[1]) == []
    (item,) = list(_attribute(root, "00081115"))
    assert item.attrib == {"number": "1"}
    assert list(item) == []


def test_namespace_option() -> None:
    root = ET.fromstring(json_to_xml({}, namespace=True))
    assert root.tag == f"{{{NAMESPACE}}}NativeDicomModel"
    assert root.get(XML_SPACE) == "preserve"
    assert list(root) == []


def test_multipart_xml_parts() -> None:
    models = [
        {"0020000D": {"vr": "UI", "Value": ["1.2.3"]}},
        {"0020000D": {"vr": "UI", "Value": ["4.5.6"]}},
    ]
    parts = list(multipart_xml_parts(iter(models)))
    assert len(parts) == 2
    for part, uid in zip(parts, ["1.2.3", "4.5.6"], strict=True):
        assert part.startswith(b"<?xml")
        root = ET.fromstring(part)
        assert _values(_attribute(root, "0020000D")) == [uid]
