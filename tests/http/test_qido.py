"""QIDO-RS: every matching kind at every level, bad parameters, paging, media types.

One data set of five studies (names in Latin-1, ISO 2022 Japanese and Korean, UTF-8) is
stored by STOW-RS; the matching table runs against it on SQLite and on PostgreSQL.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from xml.etree import ElementTree

import httpx
import pytest
from pydicom import Dataset

from tests.dicomfactory import CONTENT_TYPE, ct_dataset, multipart, new_uid, to_bytes

ROOT = "/dicomweb"


@dataclass
class Study:
    """One stored study: its UID and those of its series and instances by label."""

    uid: str
    series: dict[str, str] = field(default_factory=dict)
    instances: dict[str, str] = field(default_factory=dict)


def _instance(study: str, series: str, **attributes: Any) -> Dataset:
    ds = ct_dataset(study, series, modality=attributes.pop("Modality", "CT"))
    charset = attributes.pop("SpecificCharacterSet", "ISO_IR 100")
    ds.SpecificCharacterSet = charset
    for keyword, value in attributes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    return ds


STUDIES: dict[str, dict[str, Any]] = {
    "A": {
        "PatientName": "Doe^Jane",
        "PatientID": "PAT-1",
        "PatientBirthDate": "19700101",
        "PatientSex": "F",
        "PatientAge": "055Y",
        "StudyDate": "20260102",
        "StudyTime": "101500",
        "AccessionNumber": "ACC-A",
        "StudyDescription": "Chest CT",
        "ReferringPhysicianName": "House^Gregory",
    },
    "B": {
        "PatientName": "Müller^Jürgen",
        "PatientID": "PAT-2",
        "PatientBirthDate": "19851231",
        "PatientSex": "M",
        "StudyDate": "20251231",
        "StudyTime": "2300",
        "AccessionNumber": "ACC_B%",
        "StudyDescription": "Head",
        "ReferringPhysicianName": "Wilson^James",
    },
    "C": {
        "SpecificCharacterSet": ["", "ISO 2022 IR 87"],
        "PatientName": "Yamada^Tarou=山田^太郎=やまだ^たろう",
        "PatientID": "PAT-3",
        "ReferringPhysicianName": None,
        "StudyDescription": "Other",
        "StudyDate": "20240615",
        "StudyTime": "080000",
        "AccessionNumber": "ACC-C",
        "Modality": "US",
    },
    "D": {
        "SpecificCharacterSet": ["", "ISO 2022 IR 149"],
        "PatientName": "Hong^Gildong=洪^吉洞=홍^길동",
        "PatientID": "PAT-4",
        "StudyDescription": "Other",
        "StudyDate": "20260102",
        "StudyTime": "181500",
        "AccessionNumber": "ACC-D",
        "ReferringPhysicianName": "House^Gregory",
    },
    "E": {
        "SpecificCharacterSet": "ISO_IR 192",
        "PatientName": "Wang^XiaoDong=王^小東",
        "PatientID": "PAT-5",
        "ReferringPhysicianName": None,
        "StudyDescription": "Other",
        "StudyDate": None,
        "StudyTime": None,
        "AccessionNumber": "ACC-E",
        "Modality": "SR",
    },
}


async def store(client: httpx.AsyncClient) -> dict[str, Study]:
    """The five studies; A has a CT series of two instances and an MR series."""
    stored: dict[str, Study] = {}
    parts: list[bytes] = []
    for label, attributes in STUDIES.items():
        study = Study(new_uid())
        stored[label] = study
        series_list = [("main", attributes.get("Modality", "CT"), 1)]
        if label == "A":
            series_list.append(("mr", "MR", 2))
        for name, modality, number in series_list:
            series = new_uid()
            study.series[name] = series
            count = 2 if (label, name) == ("A", "main") else 1
            for n in range(1, count + 1):
                ds = _instance(study.uid, series, **dict(attributes, Modality=modality))
                ds.StudyID = label
                ds.SeriesNumber = number
                ds.SeriesDescription = f"{label} {name}"
                ds.InstanceNumber = n
                ds.PerformedProcedureStepStartDate = "20260102" if label == "A" else "20200101"
                if (label, name) == ("A", "main"):
                    item = Dataset()
                    item.ScheduledProcedureStepID = "SPS1"
                    item.RequestedProcedureID = "RP1"
                    ds.RequestAttributesSequence = [item]
                study.instances[f"{name}{n}"] = ds.SOPInstanceUID
                parts.append(to_bytes(ds))
    response = await client.post(
        f"{ROOT}/studies", content=multipart(parts), headers={"content-type": CONTENT_TYPE}
    )
    assert response.status_code == 200, response.text
    return stored


def values(dataset: dict[str, Any], tag: str) -> list[Any]:
    return list(dataset.get(tag, {}).get("Value", []))


def labels(response: httpx.Response) -> list[str]:
    """The StudyID (our label) of each result, in order."""
    if response.status_code == 204:
        return []
    assert response.status_code == 200, response.text
    return [values(ds, "00200010")[0] for ds in response.json()]


# (query string, expected labels in order); StudyID holds the label.
STUDY_CASES: list[tuple[str, list[str]]] = [
    ("", ["D", "A", "B", "C", "E"]),
    ("PatientID=PAT-1", ["A"]),
    ("00100020=PAT-1", ["A"]),
    ("PatientID=PAT-*", ["D", "A", "B", "C", "E"]),
    ("PatientID=PAT-?", ["D", "A", "B", "C", "E"]),
    ("PatientID=pat-1", []),
    ("PatientID=*", ["D", "A", "B", "C", "E"]),
    ("PatientName=doe^jane", ["A"]),
    ("PatientName=DOE*", ["A"]),
    ("PatientName=Doe^Jane^^", ["A"]),
    ("PatientName=*jane", ["A"]),
    ("PatientName=Doe", []),
    ("PatientName=müller*", ["B"]),
    ("PatientName=MÜLLER^JÜRGEN", ["B"]),
    ("PatientName=山田^太郎", ["C"]),
    ("PatientName=やまだ*", ["C"]),
    ("PatientName=Yamada^Tarou", ["C"]),
    ("PatientName=Yamada^Tarou=山田^太郎", ["C"]),
    ("PatientName=Yamada^Tarou=洪^吉洞", []),
    ("PatientName=洪^吉洞", ["D"]),
    ("PatientName=홍*", ["D"]),
    ("PatientName=王*", ["E"]),
    ("PatientName=jur mul&fuzzymatching=true", ["B"]),
    ("PatientName=TAR&fuzzymatching=true", ["C"]),
    ("PatientName=xyz&fuzzymatching=true", []),
    ("PatientName=jane&fuzzymatching=false", []),
    ("StudyDate=20260102", ["D", "A"]),
    ("StudyDate=20251201-20251231", ["B"]),
    ("StudyDate=-20241231", ["C"]),
    ("StudyDate=20260101-", ["D", "A"]),
    ("StudyDate=20260102&StudyTime=1000-1200", ["A"]),
    ("StudyDate=20251231-20260102&StudyTime=2200-1100", ["A", "B"]),
    ("StudyTime=1800-1900", ["D"]),
    ("StudyTime=2300", ["B"]),
    ("StudyTime=-0900", ["C"]),
    ("AccessionNumber=ACC_B%25", ["B"]),
    ("AccessionNumber=ACC_*", ["B"]),
    ("AccessionNumber=ACC?A", ["A"]),
    ("AccessionNumber=ACC%25", []),
    ("ModalitiesInStudy=MR", ["A"]),
    ("ModalitiesInStudy=CT", ["D", "A", "B"]),
    ("ModalitiesInStudy=US,SR", ["C", "E"]),
    ("ModalitiesInStudy=US%5CSR", ["C", "E"]),
    ("ModalitiesInStudy=M*", ["A"]),
    ("ReferringPhysicianName=house*", ["D", "A"]),
    ("StudyDescription=Chest*", ["A"]),
    ("StudyDescription=chest*", []),
    ("PatientBirthDate=19800101-19901231", ["B"]),
    ("PatientSex=M", ["B"]),
    ("StudyID=A", ["A"]),
    ("PatientID=PAT-1&StudyDate=20260102", ["A"]),
    ("PatientID=PAT-1&StudyDate=20251231", []),
]


async def test_study_matching_table(client: httpx.AsyncClient) -> None:
    await store(client)
    failures = []
    for query, expected in STUDY_CASES:
        got = labels(await client.get(f"{ROOT}/studies?{query}"))
        if got != expected:
            failures.append(f"{query}: expected {expected}, got {got}")
    assert not failures, "\n".join(failures)


async def test_uid_list_matching(client: httpx.AsyncClient) -> None:
    stored = await store(client)
    a, b, c = stored["A"].uid, stored["B"].uid, stored["C"].uid
    assert labels(await client.get(f"{ROOT}/studies?StudyInstanceUID={a},{b}")) == ["A", "B"]
    assert labels(await client.get(f"{ROOT}/studies?StudyInstanceUID={a}%5C{c}")) == ["A", "C"]
    response = await client.get(
        f"{ROOT}/studies", params=[("StudyInstanceUID", a), ("StudyInstanceUID", c)]
    )
    assert labels(response) == ["A", "C"]


async def test_series_and_instance_levels(client: httpx.AsyncClient) -> None:
    stored = await store(client)
    a = stored["A"]

    async def series_descriptions(path: str) -> list[str]:
        response = await client.get(f"{ROOT}{path}")
        if response.status_code == 204:
            return []
        assert response.status_code == 200, response.text
        return [values(ds, "0008103E")[0] for ds in response.json()]

    cases = [
        (f"/studies/{a.uid}/series", ["A main", "A mr"]),
        ("/series?Modality=MR", ["A mr"]),
        ("/series?Modality=CT,MR&PatientID=PAT-1", ["A main", "A mr"]),
        ("/series?SeriesNumber=2", ["A mr"]),
        ("/series?SeriesDescription=*mr", ["A mr"]),
        ("/series?RequestAttributesSequence.ScheduledProcedureStepID=SPS1", ["A main"]),
        ("/series?00400275.00401001=RP1", ["A main"]),
        ("/series?RequestAttributesSequence.RequestedProcedureID=RP*", ["A main"]),
        (
            "/series?RequestAttributesSequence.RequestedProcedureID=RP1"
            "&RequestAttributesSequence.ScheduledProcedureStepID=SPS2",
            [],
        ),
        ("/series?PerformedProcedureStepStartDate=20260101-", ["A main", "A mr"]),
        (f"/studies/{a.uid}/series?Modality=US", []),
        (f"/series?SeriesInstanceUID={a.series['mr']}", ["A mr"]),
    ]
    failures = []
    for path, expected in cases:
        got = await series_descriptions(path)
        if got != expected:
            failures.append(f"{path}: expected {expected}, got {got}")
    assert not failures, "\n".join(failures)

    main = a.series["main"]
    response = await client.get(f"{ROOT}/studies/{a.uid}/series/{main}/instances")
    assert [values(ds, "00080018")[0] for ds in response.json()] == [
        a.instances["main1"],
        a.instances["main2"],
    ]
    response = await client.get(f"{ROOT}/studies/{a.uid}/series/{main}/instances?InstanceNumber=2")
    assert [values(ds, "00080018")[0] for ds in response.json()] == [a.instances["main2"]]
    response = await client.get(f"{ROOT}/studies/{a.uid}/instances")
    found = response.json()
    assert len(found) == 3
    # Study-scoped instance results carry their series attributes (PS3.18 10.6.3.3).
    assert {values(ds, "0020000E")[0] for ds in found} == set(a.series.values())
    response = await client.get(f"{ROOT}/instances?SOPInstanceUID={a.instances['mr1']}")
    (only,) = response.json()
    assert values(only, "0020000D") == [a.uid]
    assert values(only, "00080060") == ["MR"]
    assert values(only, "00280010") == [16]
    assert values(only, "00081190")[0].endswith(
        f"/dicomweb/studies/{a.uid}/series/{a.series['mr']}/instances/{a.instances['mr1']}"
    )
    response = await client.get(f"{ROOT}/instances?SOPClassUID=1.2.840.10008.5.1.4.1.1.2&limit=1")
    assert len(response.json()) == 1


async def test_study_return_attributes(client: httpx.AsyncClient) -> None:
    stored = await store(client)
    response = await client.get(f"{ROOT}/studies?PatientID=PAT-1")
    (a,) = response.json()
    assert values(a, "0020000D") == [stored["A"].uid]
    assert values(a, "00100010") == [{"Alphabetic": "Doe^Jane"}]
    assert values(a, "00080061") == ["CT", "MR"]
    assert values(a, "00201206") == [2]
    assert values(a, "00201208") == [3]
    assert values(a, "00080056") == ["ONLINE"]
    assert values(a, "00081190") == [f"http://testserver/dicomweb/studies/{stored['A'].uid}"]
    assert "00081030" not in a  # StudyDescription is not a default return attribute
    assert "00080005" not in a  # plain ASCII needs no character set

    response = await client.get(f"{ROOT}/studies?PatientID=PAT-1&includefield=00081030,PatientAge")
    (a,) = response.json()
    assert values(a, "00081030") == ["Chest CT"]
    assert values(a, "00101010") == ["055Y"]
    response = await client.get(
        f"{ROOT}/studies",
        params=[
            ("PatientID", "PAT-1"),
            ("includefield", "StudyDescription"),
            ("includefield", "Modality"),
        ],
    )
    (a,) = response.json()
    assert values(a, "00081030") == ["Chest CT"]
    assert "00080060" not in a  # series level attributes are not returned for studies
    (a,) = (await client.get(f"{ROOT}/studies?PatientID=PAT-1&includefield=all")).json()
    assert values(a, "00101010") == ["055Y"]
    assert values(a, "00081030") == ["Chest CT"]
    assert values(a, "00100030") == ["19700101"]

    (c,) = (await client.get(f"{ROOT}/studies?PatientID=PAT-3")).json()
    assert values(c, "00100010") == [
        {"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎", "Phonetic": "やまだ^たろう"}
    ]
    assert values(c, "00080005") == ["ISO_IR 192"]
    (d,) = (await client.get(f"{ROOT}/studies?PatientName=홍^길동")).json()
    assert values(d, "00100010")[0]["Ideographic"] == "洪^吉洞"


async def test_paging_and_warnings(client: httpx.AsyncClient) -> None:
    await store(client)
    response = await client.get(f"{ROOT}/studies?limit=2")
    assert labels(response) == ["D", "A"]
    assert "additional results" in response.headers["warning"].lower()
    response = await client.get(f"{ROOT}/studies?limit=2&offset=2")
    assert labels(response) == ["B", "C"]
    assert "warning" in response.headers
    response = await client.get(f"{ROOT}/studies?limit=2&offset=4")
    assert labels(response) == ["E"]
    assert "warning" not in response.headers
    response = await client.get(f"{ROOT}/studies?offset=10")
    assert response.status_code == 204
    assert response.content == b""

    response = await client.get(f"{ROOT}/studies?Modality=CT&NoSuchKey=1&PatientID=PAT-1")
    assert labels(response) == ["A"]
    warning = response.headers["warning"]
    assert warning.startswith("299 ")
    assert "Modality" in warning and "NoSuchKey" in warning
    response = await client.get(f"{ROOT}/studies?limit=100000")
    assert labels(response) == ["D", "A", "B", "C", "E"]
    assert "maximum" in response.headers["warning"]


@pytest.mark.parametrize(
    "query",
    [
        "limit=abc",
        "limit=0",
        "limit=-1",
        "offset=-1",
        "offset=x",
        "fuzzymatching=maybe",
        "StudyDate=2026-01",
        "StudyDate=20261340",
        "StudyDate=2026010",
        "StudyDate=20260101-20260102-20260103",
        "StudyTime=25",
        "StudyTime=12x",
        "StudyInstanceUID=1.2.abc",
        "StudyInstanceUID=1.2,",
        "includefield=NotAKeyword",
        "PatientID=A&PatientID=B",
    ],
)
async def test_bad_parameters(client: httpx.AsyncClient, query: str) -> None:
    response = await client.get(f"{ROOT}/studies?{query}")
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["detail"]


@pytest.mark.parametrize(
    "path",
    [
        "/studies/1.2.abc/series",
        "/studies/1.2/series/x/instances",
        "/series?SeriesNumber=two",
        "/instances?InstanceNumber=1.5",
        "/series?PerformedProcedureStepStartTime=99",
    ],
)
async def test_bad_parameters_below_study_level(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(f"{ROOT}{path}")
    assert response.status_code == 400, response.text


async def test_media_types(client: httpx.AsyncClient) -> None:
    await store(client)
    xml_type = 'multipart/related; type="application/dicom+xml"'
    response = await client.get(f"{ROOT}/studies?PatientID=PAT-3", headers={"accept": xml_type})
    assert response.status_code == 200
    media_type = response.headers["content-type"]
    assert media_type.startswith("multipart/related")
    boundary = media_type.split("boundary=")[1]
    parts = response.content.split(f"--{boundary}".encode())[1:-1]
    assert len(parts) == 1
    head, body = parts[0].split(b"\r\n\r\n", 1)
    assert b"application/dicom+xml" in head
    root = ElementTree.fromstring(body.strip())
    name = root.find("./DicomAttribute[@tag='00100010']/PersonName/Ideographic/FamilyName")
    assert name is not None and name.text == "山田"

    response = await client.get(f"{ROOT}/studies", headers={"accept": "application/pdf"})
    assert response.status_code == 406
    response = await client.get(f"{ROOT}/studies?accept=application/dicom%2Bjson")
    assert response.headers["content-type"] == "application/dicom+json"
    response = await client.get(f"{ROOT}/studies", headers={"accept": "application/json"})
    assert response.status_code == 200


async def test_empty_index_has_no_content(client: httpx.AsyncClient) -> None:
    for path in ("/studies", "/series", "/instances"):
        response = await client.get(f"{ROOT}{path}")
        assert response.status_code == 204


async def test_series_results_carry_requested_study_attributes(client: httpx.AsyncClient) -> None:
    stored = await store(client)
    a = stored["A"]
    response = await client.get(
        f"{ROOT}/studies/{a.uid}/series", params={"includefield": "StudyDescription,PatientAge"}
    )
    found = response.json()
    assert [values(ds, "00081030") for ds in found] == [["Chest CT"], ["Chest CT"]]
    assert [values(ds, "00101010") for ds in found] == [["055Y"], ["055Y"]]
    assert "00100010" not in found[0]  # study attributes only when asked, for a study's series
    # Request Attributes Sequence is a series return attribute (PS3.18 Table 10.6.3-4).
    (main,) = [ds for ds in found if values(ds, "0020000E") == [a.series["main"]]]
    (item,) = values(main, "00400275")
    assert item["00400009"]["Value"] == ["SPS1"]
    assert item["00401001"]["Value"] == ["RP1"]
    response = await client.get(
        f"{ROOT}/studies/{a.uid}/series/{a.series['main']}/instances",
        params={"includefield": "SeriesDescription"},
    )
    assert {values(ds, "0008103E")[0] for ds in response.json()} == {"A main"}
