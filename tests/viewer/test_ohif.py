"""The bundled OHIF viewer in real headless Chromium against a real `dicomweb serve`.

The server holds the sample studies (`dicomweb sample`): a 300-slice uncompressed CT
series, and JPEG 2000 and HTJ2K series, each its own study. `ohif.mjs` drives the
browser (playwright-core from tests/viewer/node_modules, Debian's /usr/bin/chromium)
and reports; this test checks the report and the screenshots' pixels.

Prerequisites are installed by scripts/test: the viewer (`dicomweb viewer install`),
Chromium (apt package chromium) and playwright-core (`npm ci` in tests/viewer). A
missing one fails the test with what to run: it is never skipped.

Screenshots and the timings go to test-artifacts/viewer/ (or $DICOMWEB_TEST_ARTIFACTS).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from pydicom.uid import ExplicitVRLittleEndian, HTJ2KLossless, JPEG2000Lossless

from dicomweb.cli import import_paths
from dicomweb.config import Config
from dicomweb.sample import write_sample
from dicomweb.viewer_install import default_viewer_dir
from tests.conftest import ServerProcess, free_port

pytestmark = pytest.mark.slow

HERE = Path(__file__).parent
REPO = HERE.parent.parent
CHROMIUM = Path("/usr/bin/chromium")
PERFORMANCE_SLICES = 300
COMPRESSED_SLICES = 40
SIZE = 512
DESCRIPTION = "Sample CT phantom ({})"
TITLES = {
    "explicit": "Explicit VR Little Endian",
    "jpeg2000": "JPEG 2000 Lossless",
    "htj2k": "HTJ2K Lossless",
}


def artifacts_dir() -> Path:
    directory = Path(os.environ.get("DICOMWEB_TEST_ARTIFACTS", REPO / "test-artifacts")) / "viewer"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    return directory


def viewer_dir() -> Path:
    return Path(os.environ.get("DICOMWEB_TEST_VIEWER_DIR") or default_viewer_dir())


def check_prerequisites() -> str:
    """The node executable; fails (not skips) with what to install when something is missing."""
    node = shutil.which("node")
    missing = []
    if node is None:
        missing.append("node (apt-get install nodejs npm)")
    if not CHROMIUM.is_file():
        missing.append(f"{CHROMIUM} (apt-get install chromium)")
    if not (HERE / "node_modules" / "playwright-core").is_dir():
        missing.append("playwright-core (npm ci --prefix tests/viewer)")
    if not (viewer_dir() / "index.html").is_file():
        missing.append(f"the OHIF viewer in {viewer_dir()} (dicomweb viewer install)")
    assert not missing, "scripts/test installs these; missing: " + "; ".join(missing)
    assert node is not None
    return node


@pytest.fixture(scope="module")
def sample_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sample")
    write_sample(root, slices=PERFORMANCE_SLICES, size=SIZE, syntaxes=["explicit"])
    write_sample(root, slices=COMPRESSED_SLICES, size=SIZE, syntaxes=["jpeg2000", "htj2k"])
    return root


def studies_by_description(url: str) -> dict[str, str]:
    response = httpx.get(f"{url}/dicomweb/studies", params={"includefield": "StudyDescription"})
    response.raise_for_status()
    return {s["00081030"]["Value"][0]: s["0020000D"]["Value"][0] for s in response.json()}


def check_image(screenshot: str, box: dict[str, float], label: str) -> None:
    """The viewport's pixels in the screenshot show the phantom, windowed at 40/400.

    The centre of every plane is soft tissue (40 to 45 HU: mid-grey, about 128), and the
    body is surrounded by air (black). A blank, garbled or wrongly windowed image fails.
    """
    image = Image.open(screenshot).convert("L")
    left, top = round(box["x"]), round(box["y"])
    crop = image.crop((left, top, left + round(box["width"]), top + round(box["height"])))
    pixels = np.asarray(crop, dtype=np.float64)
    rows, columns = pixels.shape
    centre = pixels[rows // 2 - 15 : rows // 2 + 15, columns // 2 - 15 : columns // 2 + 15]
    assert 105 <= np.median(centre) <= 155, f"{label}: centre grey {np.median(centre):.0f}"
    body = (pixels > 60).mean()
    air = (pixels < 15).mean()
    assert body > 0.05, f"{label}: only {body:.0%} of the viewport shows the body"
    assert air > 0.10, f"{label}: only {air:.0%} of the viewport is air"


def test_ohif_viewer_end_to_end(
    tmp_path: Path, sample_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    node = check_prerequisites()
    artifacts = artifacts_dir()
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'index.sqlite3'}"
    config = Config(data_dir=tmp_path / "data", database_url=database_url, dimse_port=0)
    assert asyncio.run(import_paths(config, [sample_data], quiet=True)) == 0
    server = ServerProcess(
        tmp_path / "data",
        database_url,
        free_port(),
        extra_args=("--viewer-dir", str(viewer_dir())),
    )
    server.start()
    try:
        uids = studies_by_description(server.url)
        counts = {"explicit": PERFORMANCE_SLICES}
        studies = [
            {
                "name": name,
                "uid": uids[DESCRIPTION.format(title)],
                "description": DESCRIPTION.format(title),
                "slices": counts.get(name, COMPRESSED_SLICES),
            }
            for name, title in TITLES.items()
        ]
        plan = {
            "url": server.url,
            "artifacts": str(artifacts),
            "chromium": str(CHROMIUM),
            "studies": studies,
            "performanceStudy": "explicit",
            "mprStudy": "explicit",
        }
        plan_path = tmp_path / "plan.json"
        plan_path.write_text(json.dumps(plan))
        run = subprocess.run(
            [node, str(HERE / "ohif.mjs"), str(plan_path)],
            cwd=HERE,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    finally:
        server.stop()
    (artifacts / "browser.log").write_text(run.stderr)
    assert run.returncode == 0, run.stderr[-5000:]
    report: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])
    (artifacts / "report.json").write_text(json.dumps(report, indent=2))
    assert "error" not in report, report["error"]

    # A blob: URL the viewer revoked before an image of it loaded (timing, under load):
    # not a request to the server, whose requests are all checked below.
    errors = [
        e
        for e in report["consoleErrors"]
        if not (e["url"].startswith("blob:") and "ERR_FILE_NOT_FOUND" in e["text"])
    ]
    assert errors == []
    assert report["pageErrors"] == []
    assert report["failedRequests"] == []
    assert report["errorResponses"] == []
    assert report["crossOriginIsolated"] is True

    study_list = report["studyList"]
    assert all(study_list["visible"].values()), study_list["visible"]
    opened = study_list["openedByClick"]
    assert f"StudyInstanceUIDs={studies[0]['uid']}" in opened["url"]
    check_image(opened["screenshot"], opened["boxes"][0], "opened by a click")
    for study in report["studies"]:
        check_image(study["screenshot"], study["boxes"][0], study["name"])
    for plane, box in zip(("axial", "sagittal", "coronal"), report["mpr"]["boxes"], strict=True):
        check_image(report["mpr"]["screenshot"], box, f"MPR {plane}")

    requests = [json.loads(key) for key in report["requests"]]
    frames = [r for r in requests if "/frames/" in r["path"]]
    assert {r["accept"] for r in frames} == {
        "multipart/related; type=application/octet-stream; transfer-syntax=*"
    }
    # Each series was sent in its stored syntax (no transcoding) and decoded in the browser.
    syntaxes = {r["contentType"].rsplit("transfer-syntax=", 1)[-1].strip() for r in frames}
    assert syntaxes == {ExplicitVRLittleEndian, JPEG2000Lossless, HTJ2KLossless}
    assert any(r["path"].endswith("/metadata") for r in requests)
    assert any("/thumbnail?" in r["path"] for r in requests)
    assert any("00100020=" in r["path"] for r in requests), "no query for prior studies"

    performance = report["performance"]
    assert performance["imagesLoaded"] >= PERFORMANCE_SLICES
    assert performance["imagesFailed"] == []
    timings = {
        "series": f"{PERFORMANCE_SLICES} slices, {SIZE}x{SIZE}, Explicit VR Little Endian",
        "metadata_requested_ms": performance["metadataRequestedMs"],
        "metadata_received_ms": performance["metadataReceivedMs"],
        "first_frame_requested_ms": performance["firstFrameRequestedMs"],
        "first_image_ms": performance["firstImageMs"],
        "all_slices_ms": performance["allSlicesMs"],
        "browser_run_s": report["seconds"],
    }
    (artifacts / "timings.json").write_text(json.dumps(timings, indent=2) + "\n")
    with capsys.disabled():
        print(
            f"\nOHIF viewer: first image {timings['first_image_ms']} ms, all "
            f"{PERFORMANCE_SLICES} slices {timings['all_slices_ms']} ms after navigation; "
            f"screenshots and timings in {artifacts}"
        )
