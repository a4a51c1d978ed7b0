"""The built-in authorization server: clients, the token endpoint, keys and their rotation."""

from __future__ import annotations

import asyncio
import base64
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import orjson
import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient

from dicomweb.cli import main
from dicomweb.config import Config
from tests.auth.conftest import auth_config, bearer, open_client, store_study
from tests.conftest import ServerProcess, free_port
from tests.dicomfactory import ct_dataset, new_uid

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture
def builtin_config(tmp_path: Path) -> Config:
    return auth_config(tmp_path)


@pytest.fixture
async def client(builtin_config: Config) -> AsyncIterator[httpx.AsyncClient]:
    async for client in open_client(builtin_config):
        yield client


def register(
    config: Config, capsys: pytest.CaptureFixture[str], scopes: str, *extra: str
) -> dict[str, str]:
    """`dicomweb clients add ... --json`, in process; its answer."""
    name = f"client-{new_uid()[-8:]}"
    argv = ["clients", "add", name, "--scopes", scopes, "--data-dir", str(config.data_dir)]
    assert main([*argv, *extra, "--json"]) == 0
    answer: dict[str, str] = orjson.loads(capsys.readouterr().out)
    return answer


async def token_for(client: httpx.AsyncClient, registered: dict[str, str], **form: str) -> str:
    response = await client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", **form},
        auth=(registered["client_id"], registered["client_secret"]),
    )
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


async def test_discovery_names_the_token_endpoint_and_keys(client: httpx.AsyncClient) -> None:
    metadata = (await client.get("/.well-known/openid-configuration")).json()
    assert metadata["issuer"] == "http://127.0.0.1:8080"
    assert metadata["token_endpoint"] == "http://127.0.0.1/oauth/token"
    assert metadata["jwks_uri"] == "http://127.0.0.1/oauth/jwks"
    assert metadata["grant_types_supported"] == ["client_credentials"]
    assert "client_secret_basic" in metadata["token_endpoint_auth_methods_supported"]
    rfc8414 = (await client.get("/.well-known/oauth-authorization-server")).json()
    assert rfc8414 == metadata
    keys = (await client.get("/oauth/jwks")).json()["keys"]
    assert [k["kty"] for k in keys] == ["RSA"]
    assert "d" not in keys[0]


async def test_client_credentials_with_basic_and_form(
    client: httpx.AsyncClient, builtin_config: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    registered = register(builtin_config, capsys, "dicomweb.read,dicomweb.write")
    response = await client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(registered["client_id"], registered["client_secret"]),
    )
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    issued = response.json()
    assert issued["token_type"] == "Bearer"
    assert issued["expires_in"] == 3600
    assert issued["scope"] == "dicomweb.read dicomweb.write"
    study, _, _ = await store_study(client, issued["access_token"])

    form = {
        "grant_type": "client_credentials",
        "client_id": registered["client_id"],
        "client_secret": registered["client_secret"],
        "scope": "dicomweb.read",
    }
    by_form = await client.post("/oauth/token", data=form)
    assert by_form.status_code == 200
    reader = by_form.json()["access_token"]
    found = await client.get("/dicomweb/studies", headers=bearer(reader))
    assert study in found.text
    refused = await client.post("/dicomweb/studies", headers=bearer(reader))
    assert refused.status_code == 403


async def test_token_endpoint_errors(
    client: httpx.AsyncClient, builtin_config: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    registered = register(builtin_config, capsys, "dicomweb.read")
    grant = {"grant_type": "client_credentials"}
    wrong = await client.post("/oauth/token", data=grant, auth=(registered["client_id"], "x"))
    assert wrong.status_code == 401
    assert wrong.json()["error"] == "invalid_client"
    assert wrong.headers["www-authenticate"].startswith("Basic")
    unknown = await client.post("/oauth/token", data=grant, auth=("nobody", "x"))
    assert unknown.status_code == 401
    auth = (registered["client_id"], registered["client_secret"])
    cases = [
        ({"grant_type": "password"}, "unsupported_grant_type"),
        ({**grant, "scope": "dicomweb.admin"}, "invalid_scope"),
        ({**grant, "scope": "dicomweb.everything"}, "invalid_scope"),
    ]
    for form, error in cases:
        response = await client.post("/oauth/token", data=form, auth=auth)
        assert (response.status_code, response.json()["error"]) == (400, error)
    repeated = await client.post(
        "/oauth/token",
        content="grant_type=client_credentials&scope=a&scope=b",
        auth=auth,
        headers=FORM,
    )
    assert repeated.json()["error"] == "invalid_request"
    as_json = await client.post("/oauth/token", json=grant, auth=auth)
    assert (as_json.status_code, as_json.json()["error"]) == (400, "invalid_request")


async def test_plain_http_off_loopback_is_refused(
    builtin_config: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    """RFC 6749 2.3.1: client secrets travel over TLS (or stay on this machine)."""
    registered = register(builtin_config, capsys, "dicomweb.read")
    async for client in open_client(builtin_config):
        client.base_url = httpx.URL("http://pacs.example.org")
        response = await client.post(
            "/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=(registered["client_id"], registered["client_secret"]),
        )
        assert (response.status_code, response.json()["error"]) == (400, "insecure_transport")


async def test_study_limited_client(
    client: httpx.AsyncClient, builtin_config: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    writer = await token_for(client, register(builtin_config, capsys, "dicomweb.write"))
    mine, _, _ = await store_study(client, writer)
    other, _, _ = await store_study(client, writer)
    limited = register(builtin_config, capsys, "dicomweb.read", "--study", mine)
    token = await token_for(client, limited)
    found = await client.get("/dicomweb/studies", headers=bearer(token))
    assert mine in found.text and other not in found.text
    assert (
        await client.get(f"/dicomweb/studies/{other}", headers=bearer(token))
    ).status_code == 403


async def test_keys_rotate_without_invalidating_tokens(
    client: httpx.AsyncClient, builtin_config: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    registered = register(builtin_config, capsys, "dicomweb.read")
    before = await token_for(client, registered)
    assert main(["keys", "rotate", "--data-dir", str(builtin_config.data_dir)]) == 0
    # The server reads the key directory again within a second.
    await asyncio.sleep(1.1)
    keys = (await client.get("/oauth/jwks")).json()["keys"]
    assert len(keys) == 2
    after = await token_for(client, registered)
    assert _kid(after) != _kid(before)
    assert _kid(after) in {k["kid"] for k in keys}
    for token in (before, after):
        assert (await client.get("/dicomweb/studies", headers=bearer(token))).status_code == 204


async def test_old_keys_retire_once_their_tokens_expired(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = auth_config(tmp_path, token_lifetime_seconds=1, oauth_clock_skew_seconds=0)
    registered = register(config, capsys, "dicomweb.read")
    async for client in open_client(config):
        first = await token_for(client, registered)
        main(["keys", "rotate", "--data-dir", str(config.data_dir)])
        await asyncio.sleep(1.2)
        main(["keys", "rotate", "--data-dir", str(config.data_dir)])
        await asyncio.sleep(1.1)
        kids = {k["kid"] for k in (await client.get("/oauth/jwks")).json()["keys"]}
        assert _kid(first) not in kids
        newest = await token_for(client, registered)
        assert kids == {_kid(newest)}
        assert (await client.get("/dicomweb/studies", headers=bearer(first))).status_code == 401


async def test_signing_key_rotates_by_age(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = auth_config(tmp_path, signing_key_days=1 / 86400)
    registered = register(config, capsys, "dicomweb.read")
    async for client in open_client(config):
        first = await token_for(client, registered)
        await asyncio.sleep(1.1)
        second = await token_for(client, registered)
        assert _kid(first) != _kid(second)
        for token in (first, second):
            response = await client.get("/dicomweb/studies", headers=bearer(token))
            assert response.status_code == 204


def test_clients_list_and_remove(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = ["--data-dir", str(tmp_path / "data")]
    assert main(["clients", "add", "ci", "--scopes", "dicomweb.read", *data, "--json"]) == 0
    added = orjson.loads(capsys.readouterr().out)
    assert len(added["client_secret"]) >= 43
    stored = (tmp_path / "data" / "auth" / "clients.json").read_text()
    assert added["client_secret"] not in stored
    assert (tmp_path / "data" / "auth" / "clients.json").stat().st_mode & 0o077 == 0
    assert main(["clients", "add", "ci", "--scopes", "dicomweb.read", *data]) == 2
    assert main(["clients", "add", "x", "--scopes", "dicomweb.root", *data]) == 2
    capsys.readouterr()
    assert main(["clients", "list", *data, "--json"]) == 0
    listed = orjson.loads(capsys.readouterr().out)
    assert [c["name"] for c in listed] == ["ci"]
    assert "client_secret" not in listed[0] and "secret_sha256" not in listed[0]
    assert main(["clients", "remove", "ci", *data]) == 0
    assert main(["clients", "list", *data, "--json"]) == 0
    assert orjson.loads(capsys.readouterr().out.splitlines()[-1]) == []


def _kid(token: str) -> str:
    header = token.split(".")[0]
    return str(orjson.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["kid"])


@pytest.fixture
def oauth_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A real `dicomweb serve --auth oauth2` with the built-in issuer, on loopback."""
    database = f"sqlite+aiosqlite:///{tmp_path / 'index.sqlite3'}"
    server = ServerProcess(
        tmp_path / "data", database, free_port(), extra_args=("--auth", "oauth2")
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.slow
def test_dicomweb_client_end_to_end_with_the_builtin_issuer(
    oauth_server: ServerProcess,
) -> None:
    add = subprocess.run(
        [
            sys.executable,
            "-m",
            "dicomweb",
            "clients",
            "add",
            "script",
            "--scopes",
            "dicomweb.read,dicomweb.write",
            "--data-dir",
            str(oauth_server.data_dir),
            "--json",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    registered = orjson.loads(add.stdout)
    metadata = httpx.get(f"{oauth_server.url}/.well-known/openid-configuration").json()
    issued = httpx.post(
        metadata["token_endpoint"],
        data={"grant_type": "client_credentials"},
        auth=(registered["client_id"], registered["client_secret"]),
    )
    assert issued.status_code == 200, issued.text
    token = issued.json()["access_token"]

    client = DICOMwebClient(
        f"{oauth_server.url}/dicomweb", headers={"Authorization": f"Bearer {token}"}
    )
    study = new_uid()
    datasets = [ct_dataset(study, instance_number=n, seed=n) for n in range(2)]
    stored = client.store_instances(datasets=datasets)
    assert len(stored.ReferencedSOPSequence) == 2
    found = client.search_for_studies(search_filters={"StudyInstanceUID": study})
    assert [pydicom.Dataset.from_json(r).StudyInstanceUID for r in found] == [study]
    retrieved = client.retrieve_study(study)
    assert {ds.SOPInstanceUID for ds in retrieved} == {ds.SOPInstanceUID for ds in datasets}

    anonymous = DICOMwebClient(f"{oauth_server.url}/dicomweb")
    with pytest.raises(requests.HTTPError) as refused:
        anonymous.search_for_studies()
    assert refused.value.response.status_code == 401
    assert refused.value.response.headers["WWW-Authenticate"] == 'Bearer realm="dicomweb"'
