"""Signed links: read on one study for a while, and nothing else."""

from __future__ import annotations

import base64
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import orjson
import pytest

from dicomweb.auth.links import LinkSigner, parse_duration
from dicomweb.cli import main
from dicomweb.config import Config
from tests.auth.conftest import Issuer, bearer, store_study
from tests.dicomfactory import new_uid


async def admin_link(client: httpx.AsyncClient, issuer: Issuer, study: str) -> dict[str, str]:
    response = await client.post(
        "/api/links",
        json={"study": study, "expires": "2h"},
        headers=bearer(issuer.token("dicomweb.admin")),
    )
    assert response.status_code == 201, response.text
    link: dict[str, str] = response.json()
    return link


async def test_a_link_opens_one_study_and_nothing_else(
    client: httpx.AsyncClient, issuer: Issuer
) -> None:
    writer = issuer.token()
    study, series, sop = await store_study(client, writer)
    other, _, _ = await store_study(client, writer)
    link = await admin_link(client, issuer, study)
    assert abs(int(link["expires"]) - (time.time() + 7200)) < 60
    viewer = urlsplit(link["viewer_url"])
    assert viewer.path == "/viewer"
    assert parse_qs(viewer.query) == {"StudyInstanceUIDs": [study], "token": [link["token"]]}
    opened = bearer(link["token"])

    # What the viewer asks for, with the link as its bearer token.
    found = await client.get("/dicomweb/studies", headers=opened)
    assert [ds["0020000D"]["Value"][0] for ds in found.json()] == [study]
    series_url = f"/dicomweb/studies/{study}/series"
    assert (await client.get(series_url, headers=opened)).status_code == 200
    metadata = f"/dicomweb/studies/{study}/series/{series}/metadata"
    assert (await client.get(metadata, headers=opened)).status_code == 200
    frames = f"/dicomweb/studies/{study}/series/{series}/instances/{sop}/frames/1"
    assert (await client.get(frames, headers=opened)).status_code == 200
    # The study URL carries the link as access_token.
    assert (await client.get(link["study_url"].replace("http://127.0.0.1", ""))).status_code == 200

    for method, url in [
        ("GET", f"/dicomweb/studies/{other}/metadata"),
        ("GET", "/dicomweb/series"),  # a search outside a study is filtered, not refused
        ("POST", f"/dicomweb/studies/{study}"),
        ("POST", "/api/links"),
        ("POST", "/api/send"),
    ]:
        response = await client.request(method, url, headers=opened)
        expected = 200 if url == "/dicomweb/series" else 403
        assert response.status_code == expected, (method, url, response.text)
        if expected == 200:
            assert other not in response.text
        else:
            assert 'error="insufficient_scope"' in response.headers["www-authenticate"]


async def test_tampered_links_are_refused(client: httpx.AsyncClient, issuer: Issuer) -> None:
    study, _, _ = await store_study(client, issuer.token())
    other, _, _ = await store_study(client, issuer.token())
    token = (await admin_link(client, issuer, study))["token"]
    prefix, payload, signature = token.split(".")
    forged_payload = (
        base64.urlsafe_b64encode(orjson.dumps({"study": other, "exp": int(time.time()) + 3600}))
        .rstrip(b"=")
        .decode()
    )
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    for tampered in (
        f"{prefix}.{forged_payload}.{signature}",  # another study, same signature
        f"{prefix}.{payload}.{flipped}",
        f"{prefix}.{payload}",
        f"{prefix}.{payload}.{signature}x",
        f"{prefix}..",
    ):
        response = await client.get(f"/dicomweb/studies/{other}/metadata", headers=bearer(tampered))
        assert response.status_code == 401, tampered
        assert 'error="invalid_token"' in response.headers["www-authenticate"]


async def test_expired_links_are_refused(
    client: httpx.AsyncClient, issuer: Issuer, oauth_config: Config
) -> None:
    study, _, _ = await store_study(client, issuer.token())
    # Signed with the server's own link key (the data directory), expired a second ago.
    signer = LinkSigner(oauth_config.data_dir / "auth" / "link.key")
    expired = signer.sign(study, int(time.time()) - 1)
    response = await client.get(f"/dicomweb/studies/{study}/metadata", headers=bearer(expired))
    assert response.status_code == 401
    assert "expired" in response.headers["www-authenticate"]
    soon = signer.sign(study, int(time.time()) + 1)
    assert (await client.get(f"/dicomweb/studies/{study}", headers=bearer(soon))).status_code == 200


async def test_sign_command(
    client: httpx.AsyncClient,
    issuer: Issuer,
    oauth_config: Config,
    capsys: pytest.CaptureFixture[str],
) -> None:
    study, _, _ = await store_study(client, issuer.token())
    data = ["--data-dir", str(oauth_config.data_dir)]
    base = ["--base-url", "https://pacs.example.org"]
    assert main(["sign", "--study", study, "--expires", "30m", *data, *base, "--json"]) == 0
    link = orjson.loads(capsys.readouterr().out)
    assert link["viewer_url"].startswith("https://pacs.example.org/viewer?StudyInstanceUIDs=")
    response = await client.get(
        f"/dicomweb/studies/{study}/metadata", headers=bearer(link["token"])
    )
    assert response.status_code == 200
    assert main(["sign", "--study", study, "--expires", "1h", *data]) == 0
    assert capsys.readouterr().out.startswith("http://127.0.0.1:8080/viewer?")
    for refused in (["--expires", "forever"], ["--expires", "400d"], ["--study", "1.2.x"]):
        argv = ["sign", "--study", study, *data, *refused]
        assert main(argv) == 2


async def test_only_admins_make_links(client: httpx.AsyncClient, issuer: Issuer) -> None:
    reader = bearer(issuer.token("dicomweb.read"))
    body = {"study": new_uid()}
    assert (await client.post("/api/links", json=body, headers=reader)).status_code == 403
    admin = bearer(issuer.token("dicomweb.admin"))
    bad = await client.post("/api/links", json={"study": "x", "expires": "1h"}, headers=admin)
    assert bad.status_code == 400
    too_long = await client.post(
        "/api/links", json={"study": new_uid(), "expires": "90d"}, headers=admin
    )
    assert too_long.status_code == 400


def test_durations() -> None:
    assert [parse_duration(t, 10**7) for t in ("90", "90s", "30m", "1h", "2d", "1w")] == [
        90,
        90,
        1800,
        3600,
        172800,
        604800,
    ]
    for text in ("0", "-1h", "1y", "h", ""):
        with pytest.raises(ValueError):
            parse_duration(text, 10**7)


def test_the_link_key_is_private_and_shared(tmp_path: Path) -> None:
    first = LinkSigner(tmp_path / "auth" / "link.key")
    token = first.sign(new_uid(), int(time.time()) + 60)
    assert (tmp_path / "auth" / "link.key").stat().st_mode & 0o077 == 0
    # Another process with the same data directory accepts it.
    assert LinkSigner(tmp_path / "auth" / "link.key").verify(token)
