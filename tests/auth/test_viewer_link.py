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
from typing import Any

import httpx
import orjson
import pytest

from dicomweb.cli import import_paths, main
from dicomweb.config import Config
from dicomweb.sample import write_sample
from tests.auth.conftest import Issuer
from tests.conftest import ServerProcess, free_port
from tests.viewer.test_ohif import check_prerequisites, viewer_dir

pytestmark = pytest.mark.slow


def test_a_signed_link_opens_one_study_in_the_viewer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The built-in issuer: the viewer has no login; without a credential its study list
    gets 401 and shows nothing, and a signed link opens its study."""
    server, config = _start_server(tmp_path)
    try:
        # Without a credential the server shows nothing.
        assert httpx.get(f"{server.url}/dicomweb/studies").status_code == 401
        report, study = _open_link(server, config, tmp_path, capsys, issuer=None)
    finally:
        server.stop()
    _check_link(report, study)
    searches = report["studyList"]["searches"]
    assert any(s["path"] == "/dicomweb/studies" and s["status"] == 401 for s in searches)
    assert [s for s in searches if s["status"] < 400] == []
    assert "Sample CT phantom" not in report["studyList"]["text"]


def test_the_viewer_logs_in_at_the_identity_provider(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], issuer: Issuer
) -> None:
    """An external issuer and a viewer client: the study list sends the browser to the
    issuer's authorization endpoint (code flow with PKCE), while a signed link still
    opens its study without a login. The login itself needs an identity provider that
    authenticates users, which this test does not have."""
    server, config = _start_server(
        tmp_path, "--oauth-issuer", issuer.url, "--viewer-client-id", "ohif-viewer"
    )
    try:
        report, study = _open_link(server, config, tmp_path, capsys, issuer=issuer.url)
    finally:
        server.stop()
    first = report["studyList"]
    # Sent to log in before asking the server anything.
    assert first["searches"] == []
    assert first["authorization"]["path"] == "/realms/test/protocol/auth"
    params = first["authorization"]["params"]
    assert params["response_type"] == "code"
    assert params["client_id"] == "ohif-viewer"
    assert params["redirect_uri"] == f"{server.url}/callback"
    assert params["scope"] == "openid dicomweb.read"
    assert params["code_challenge_method"] == "S256"
    assert len(params["code_challenge"]) >= 43
    assert params["state"]
    _check_link(report, study)


def _start_server(tmp_path: Path, *auth_args: str) -> tuple[ServerProcess, Config]:
    check_prerequisites()
    sample = tmp_path / "sample"
    write_sample(sample, slices=20, size=128, syntaxes=["explicit"])
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'index.sqlite3'}"
    config = Config(data_dir=tmp_path / "data", database_url=database_url, dimse_port=0)
    assert asyncio.run(import_paths(config, [sample], quiet=True)) == 0
    server = ServerProcess(
        config.data_dir,
        database_url,
        free_port(),
        extra_args=("--auth", "oauth2", *auth_args, "--viewer-dir", str(viewer_dir())),
    )
    server.start()
    return server, config


def _open_link(
    server: ServerProcess,
    config: Config,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    issuer: str | None,
) -> tuple[dict[str, Any], str]:
    """Opens the study list without a credential, then a signed link to the sample study."""
    study = _only_study(server)
    capsys.readouterr()
    argv = ["sign", "--study", study, "--expires", "10m", "--data-dir", str(config.data_dir)]
    assert main([*argv, "--base-url", server.url, "--json"]) == 0
    link = orjson.loads(capsys.readouterr().out)
    run = subprocess.run(
        [
            check_prerequisites(),
            str(Path(__file__).with_name("viewer_link.mjs")),
            link["viewer_url"],
            str(tmp_path / "viewer.png"),
            json.dumps({"root": server.url, "issuer": issuer}),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])
    assert "error" not in report, report
    return report, study


def _check_link(report: dict[str, Any], study: str) -> None:
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
