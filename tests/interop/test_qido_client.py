"""QIDO-RS through dicomweb-client against a real `dicomweb serve`."""

from __future__ import annotations

import pytest
from dicomweb_client.api import DICOMwebClient

from tests.conftest import ServerProcess
from tests.dicomfactory import ct_dataset, new_uid

pytestmark = pytest.mark.slow


def test_searches_through_dicomweb_client(server: ServerProcess) -> None:
    client = DICOMwebClient(url=f"{server.url}/dicomweb")
    study = new_uid()
    series = new_uid()
    stored = [
        ct_dataset(study, series, instance_number=n, patient_id="PAT-Q", patient_name="Żółw^Ada")
        for n in (1, 2, 3)
    ]
    for ds in stored:
        ds.SpecificCharacterSet = "ISO_IR 192"
    other = ct_dataset(patient_id="PAT-OTHER", patient_name="Doe^John")
    client.store_instances([*stored, other])

    found = client.search_for_studies(search_filters={"PatientID": "PAT-Q"})
    assert [s["0020000D"]["Value"][0] for s in found] == [study]
    assert found[0]["00100010"]["Value"][0]["Alphabetic"] == "Żółw^Ada"
    assert found[0]["00201208"]["Value"] == [3]

    fuzzy = client.search_for_studies(
        search_filters={"PatientName": "ada zo"}, fuzzymatching=True, fields=["StudyDescription"]
    )
    assert [s["0020000D"]["Value"][0] for s in fuzzy] == [study]
    assert fuzzy[0]["00081030"]["Value"] == ["Chest"]
    assert client.search_for_studies(search_filters={"PatientName": "ada zo"}) == []

    assert len(client.search_for_studies()) == 2
    page = client.search_for_studies(limit=1, offset=1)
    assert len(page) == 1

    series_found = client.search_for_series(study_instance_uid=study)
    assert [s["0020000E"]["Value"][0] for s in series_found] == [series]
    instances = client.search_for_instances(study_instance_uid=study, series_instance_uid=series)
    assert [i["00200013"]["Value"][0] for i in instances] == [1, 2, 3]
    assert {i["00080018"]["Value"][0] for i in instances} == {d.SOPInstanceUID for d in stored}
    modality_ct = client.search_for_series(search_filters={"Modality": "CT", "PatientID": "PAT-Q"})
    assert len(modality_ct) == 1
    assert client.search_for_instances(search_filters={"InstanceNumber": 2, "PatientID": "PAT-Q"})
