"""A signed link opened in the bundled viewer, in real Chromium, with --auth oauth2.

The viewer reads the link from `?token=` and sends it as a bearer token with every
DICOMweb request; the server lets it read that study and nothing else. Needs what the
viewer test needs (tests/viewer/test_ohif.py): Chromium, Node.js, playwright-core in
tests/viewer/node_modules and the installed viewer, all installed by scripts/test.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import httpx
import orjson
import pytest

from dicomweb.cli import import_paths, main
from dicomweb.config import Config
from dicomweb.sample import write_sample
from tests.conftest import ServerProcess, free_port
from tests.viewer.test_ohif import check_prerequisites, viewer_dir

pytestmark = pytest.mark.slow


def test_a_signed_link_opens_one_study_in_the_viewer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    node = check_prerequisites()
    sample = tmp_path / "sample"
    write_sample(sample, slices=20, size=128, syntaxes=["explicit"])
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'index.sqlite3'}"
    config = Config(data_dir=tmp_path / "data", database_url=database_url, dimse_port=0)
    assert asyncio.run(import_paths(config, [sample], quiet=True)) == 0
    server = ServerProcess(
        config.data_dir,
        database_url,
        free_port(),
        extra_args=("--auth", "oauth2", "--viewer-dir", str(viewer_dir())),
    )
    server.start()
    try:
        # Without a credential the server shows nothing.
        assert httpx.get(f"{server.url}/dicomweb/studies").status_code == 401
        study = _only_study(server)
        capsys.readouterr()
        argv = ["sign", "--study", study, "--expires", "10m", "--data-dir", str(config.data_dir)]
        assert main([*argv, "--base-url", server.url, "--json"]) == 0
        link = orjson.loads(capsys.readouterr().out)
        run = subprocess.run(
            [
                node,
                str(Path(__file__).with_name("viewer_link.mjs")),
                link["viewer_url"],
                str(tmp_path / "viewer.png"),
            ],
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
    finally:
        server.stop()
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert "error" not in report, report
    assert report["pixels"] is True
    # The viewer took the token out of its address bar.
    assert "token=" not in report["finalUrl"]
    responses = report["responses"]
    assert any(r["path"].endswith("/metadata") for r in responses)
    assert all(r["bearer"] for r in responses), responses
    assert [r for r in responses if r["status"] >= 400] == []
    assert {
        r["path"].split("/")[3] for r in responses if r["path"].startswith("/dicomweb/studies/")
    } == {study}


def _only_study(server: ServerProcess) -> str:
    """The sample study's UID, read from the index itself (the server needs a token)."""
    from dicomweb.index import Index
    from dicomweb.query import Level, Query

    async def find() -> str:
        index = await Index.open(server.database_url)
        try:
            result = await index.search(Query(Level.STUDY, limit=10))
        finally:
            await index.close()
        [dataset] = result.datasets
        return str(dataset["0020000D"]["Value"][0])

    return asyncio.run(find())
