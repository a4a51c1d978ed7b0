"""The command line: `dicomweb import` and configuration from flags and environment."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from dicomweb.cli import main
from tests.dicomfactory import ct_dataset, to_bytes


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dicomweb", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


def write_folder(root: Path) -> list[Path]:
    (root / "a" / "b").mkdir(parents=True)
    files = []
    for n in range(3):
        path = root / "a" / f"ct{n}.dcm"
        path.write_bytes(to_bytes(ct_dataset(seed=n)))
        files.append(path)
    (root / "a" / "b" / "copy.dcm").write_bytes(files[0].read_bytes())
    (root / "a" / "b" / "notes.txt").write_text("not DICOM")
    return files


def test_import_folder(tmp_path: Path, database_url: str) -> None:
    write_folder(tmp_path / "in")
    data = tmp_path / "data"
    result = run(
        "import",
        str(tmp_path / "in"),
        "--data-dir",
        str(data),
        "--database-url",
        database_url,
        "--quiet",
    )
    assert result.returncode == 1, result.stderr
    assert "stored 3, duplicates 1, failed 1 (of 5 files)" in result.stdout
    assert "notes.txt: not a DICOM Part 10 file" in result.stdout
    assert len(list((data / "blobs").rglob("*.dcm"))) == 3

    again = run(
        "import",
        str(tmp_path / "in" / "a"),
        "--data-dir",
        str(data),
        "--database-url",
        database_url,
        "--quiet",
    )
    assert "stored 0, duplicates 4, failed 1" in again.stdout


def test_import_pydicom_test_files(tmp_path: Path, database_url: str) -> None:
    names = ["CT_small.dcm", "MR_small_RLE.dcm", "JPEG2000.dcm", "emri_small_jpeg_2k_lossless.dcm"]
    folder = tmp_path / "in"
    folder.mkdir()
    for name in names:
        path = get_testdata_file(name)
        assert path is not None
        (folder / name).write_bytes(Path(path).read_bytes())
    data = tmp_path / "data"
    code = main(
        ["import", str(folder), "--data-dir", str(data), "--database-url", database_url, "--quiet"]
    )
    assert code == 0
    assert len(list((data / "blobs").rglob("*.dcm"))) == len(names)


def test_import_missing_path(tmp_path: Path) -> None:
    result = run("import", str(tmp_path / "nope"), "--data-dir", str(tmp_path / "d"))
    assert result.returncode == 2
    assert "no such file or folder" in result.stderr


def test_import_uses_environment(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "x.dcm").write_bytes(to_bytes(ct_dataset()))
    import os

    env = dict(os.environ, DICOMWEB_DATA_DIR=str(tmp_path / "envdata"))
    result = run("import", str(folder), "--quiet", env=env)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "envdata" / "index.sqlite3").exists()


@pytest.mark.parametrize("flag", ["--port=notanumber", "--port=70000"])
def test_bad_setting_is_reported(tmp_path: Path, flag: str) -> None:
    result = run("serve", "--data-dir", str(tmp_path), flag)
    assert result.returncode != 0
    assert "port" in result.stderr


def test_dimse_processes_must_be_at_least_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", "--data-dir", str(tmp_path), "--dimse-processes", "0"]) == 2
    assert "dimse_processes" in capsys.readouterr().err
