"""The sample studies (sample.py) and `dicomweb sample`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest

from dicomweb.sample import SYNTAXES, write_sample


def test_one_study_per_syntax(tmp_path: Path) -> None:
    files = write_sample(tmp_path, slices=3, size=64)
    assert len(files) == 3 * len(SYNTAXES)
    studies = set()
    for name, syntax in SYNTAXES.items():
        datasets = [pydicom.dcmread(p) for p in sorted((tmp_path / name).iterdir())]
        assert [str(ds.file_meta.TransferSyntaxUID) for ds in datasets] == [syntax.uid] * 3
        assert len({ds.SeriesInstanceUID for ds in datasets}) == 1
        studies |= {ds.StudyInstanceUID for ds in datasets}
        assert datasets[0].StudyDescription == f"Sample CT phantom ({syntax.title})"
        positions = [float(ds.ImagePositionPatient[2]) for ds in datasets]
        assert positions == sorted(positions) and len(set(positions)) == 3
        assert [int(ds.InstanceNumber) for ds in datasets] == [1, 2, 3]
    assert len(studies) == len(SYNTAXES)


def test_compressed_studies_hold_the_same_pixels(tmp_path: Path) -> None:
    write_sample(tmp_path, slices=2, size=64)
    for index in ("0001", "0002"):
        arrays = [
            pydicom.dcmread(tmp_path / name / f"{index}.dcm").pixel_array for name in SYNTAXES
        ]
        for array in arrays[1:]:
            assert np.array_equal(array, arrays[0])
    ds = pydicom.dcmread(tmp_path / "explicit" / "0002.dcm")
    hu = ds.pixel_array.astype(np.int32) * int(ds.RescaleSlope) + int(ds.RescaleIntercept)
    assert hu[0, 0] == -1000  # air in the corner
    assert 20 <= np.median(hu[28:36, 28:36]) <= 60  # soft tissue at the centre


def test_uids_repeat_for_the_same_parameters(tmp_path: Path) -> None:
    first = write_sample(tmp_path / "a", slices=1, size=32, syntaxes=["explicit"])
    second = write_sample(tmp_path / "b", slices=1, size=32, syntaxes=["explicit"])
    other = write_sample(tmp_path / "c", slices=2, size=32, syntaxes=["explicit"])
    assert first[0].read_bytes() == second[0].read_bytes()
    uid = pydicom.dcmread(first[0]).SOPInstanceUID
    assert pydicom.dcmread(other[0]).SOPInstanceUID != uid


@pytest.mark.parametrize(("slices", "size"), [(0, 64), (1, 16), (1, 4096)])
def test_bad_parameters(tmp_path: Path, slices: int, size: int) -> None:
    with pytest.raises(ValueError, match="slices"):
        write_sample(tmp_path, slices=slices, size=size)


def test_sample_command_then_import(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "dicomweb", *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    sample = run(
        "sample", str(tmp_path / "in"), "--slices", "2", "--size", "64", "--syntax", "htj2k"
    )
    assert sample.returncode == 0, sample.stderr
    assert f"dicomweb import {tmp_path / 'in'}" in sample.stdout
    imported = run("import", str(tmp_path / "in"), "--data-dir", str(tmp_path / "data"), "--quiet")
    assert imported.returncode == 0, imported.stdout
    assert "stored 2, duplicates 0, failed 0" in imported.stdout
    bad = run("sample", str(tmp_path / "x"), "--size", "8")
    assert bad.returncode == 2
