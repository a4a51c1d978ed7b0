"""The viewer's generated configuration under each authentication mode, and the viewer
behind --auth oauth2 without a token, through the ASGI app (a stand-in for the OHIF build).

The browser side (OHIF starting its login, a signed link opening its study, the study
list without a token) is in test_viewer_link.py.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from dicomweb.auth.security import check_security_settings
from dicomweb.cli import build_parser
from dicomweb.config import Config, ConfigError
from dicomweb.viewer import app_config_js
from tests.auth.conftest import Issuer, auth_config, bearer, open_client, store_study
from tests.http.test_viewer import INDEX, NAVIGATION, generated_config, make_build

VIEWER_CLIENT = "ohif-viewer"


def oidc_clients(script: str) -> list[dict[str, Any]]:
    """The `oidc` entries app-config.js hands to OHIF (before the page's origin is added)."""
    start = script.rindex("})(") + len("})(")
    end = script.rindex(");\n")
    clients: list[dict[str, Any]] = json.loads(script[start:end])
    return clients


async def viewer_client(config: Config, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    build = make_build(tmp_path / "viewer")
    async for client in open_client(replace(config, viewer_dir=str(build))):
        yield client


@pytest.fixture
async def oidc_viewer(tmp_path: Path, issuer: Issuer) -> AsyncIterator[httpx.AsyncClient]:
    config = auth_config(tmp_path, oauth_issuer=issuer.url, viewer_client_id=VIEWER_CLIENT)
    async for client in viewer_client(config, tmp_path):
        yield client


@pytest.fixture
async def builtin_viewer(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async for client in viewer_client(auth_config(tmp_path), tmp_path):
        yield client


def test_without_authentication_the_viewer_has_no_login() -> None:
    script = app_config_js(Config())
    config = generated_config(script)
    assert "oidc" not in config
    assert oidc_clients(script) == []
    assert config["dicomweb"] == {"auth": "none", "login": "not needed"}


async def test_with_an_identity_provider_the_viewer_logs_in_there(
    oidc_viewer: httpx.AsyncClient, issuer: Issuer
) -> None:
    response = await oidc_viewer.get("/app-config.js")
    assert response.status_code == 200
    config = generated_config(response.text)
    # Set in the browser, and only on a page without a signed link (test_viewer_link.py).
    assert "oidc" not in config
    assert oidc_clients(response.text) == [
        {
            "authority": issuer.url,
            "client_id": VIEWER_CLIENT,
            "redirect_uri": "/callback",
            "post_logout_redirect_uri": "/",
            "response_type": "code",
            "scope": "openid dicomweb.read",
        }
    ]
    assert "client.redirect_uri = origin + client.redirect_uri" in response.text
    assert "window.config.oidc = clients" in response.text
    assert config["dicomweb"] == {"auth": "oauth2", "login": "oidc", "issuer": issuer.url}


async def test_the_viewer_scope_is_a_setting(tmp_path: Path, issuer: Issuer) -> None:
    config = auth_config(
        tmp_path,
        oauth_issuer=issuer.url,
        viewer_client_id=VIEWER_CLIENT,
        viewer_scope="openid dicomweb.read dicomweb.write",
    )
    [client] = oidc_clients(app_config_js(config))
    assert client["scope"] == "openid dicomweb.read dicomweb.write"


async def test_the_identity_provider_returns_to_a_route_of_the_viewer(
    oidc_viewer: httpx.AsyncClient,
) -> None:
    response = await oidc_viewer.get("/callback?code=abc&state=xyz", headers=NAVIGATION)
    assert response.status_code == 200
    assert response.content == INDEX


async def test_an_identity_provider_without_a_viewer_client(tmp_path: Path, issuer: Issuer) -> None:
    script = app_config_js(auth_config(tmp_path, oauth_issuer=issuer.url))
    assert oidc_clients(script) == []
    status = generated_config(script)["dicomweb"]
    assert isinstance(status, dict)
    assert status["login"] == "not available"
    assert "--viewer-client-id" in status["reason"]


async def test_with_the_builtin_issuer_the_viewer_says_login_is_not_available(
    builtin_viewer: httpx.AsyncClient,
) -> None:
    response = await builtin_viewer.get("/app-config.js")
    assert response.status_code == 200
    config = generated_config(response.text)
    assert "oidc" not in config
    assert oidc_clients(response.text) == []
    status = config["dicomweb"]
    assert isinstance(status, dict)
    assert status["auth"] == "oauth2"
    assert status["login"] == "not available"
    assert "built-in authorization server" in status["reason"]
    assert "signed link" in status["signedLinks"]


def test_a_viewer_client_needs_an_external_issuer(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="viewer_client_id"):
        check_security_settings(auth_config(tmp_path, viewer_client_id=VIEWER_CLIENT))


def test_viewer_client_flags_and_variables() -> None:
    args = build_parser().parse_args(
        ["serve", "--viewer-client-id", "ohif", "--viewer-scope", "openid x"]
    )
    assert (args.viewer_client_id, args.viewer_scope) == ("ohif", "openid x")
    config = Config.from_sources(environ={"DICOMWEB_VIEWER_CLIENT_ID": "ohif"})
    assert config.viewer_client_id == "ohif"
    assert config.viewer_scope == "openid dicomweb.read"


async def refused_without_a_token(client: httpx.AsyncClient) -> None:
    """The page and its configuration load; the study list's first search is refused."""
    page = await client.get("/", headers=NAVIGATION)
    assert page.status_code == 200
    assert page.content == INDEX
    assert (await client.get("/app-config.js")).status_code == 200
    studies = await client.get("/dicomweb/studies", params={"limit": "101", "offset": "0"})
    assert studies.status_code == 401
    assert studies.headers["www-authenticate"].startswith("Bearer")


async def test_with_the_builtin_issuer_dicomweb_needs_a_token(
    builtin_viewer: httpx.AsyncClient,
) -> None:
    await refused_without_a_token(builtin_viewer)


async def test_with_an_identity_provider_dicomweb_needs_the_users_token(
    oidc_viewer: httpx.AsyncClient, issuer: Issuer
) -> None:
    await refused_without_a_token(oidc_viewer)
    # With the user's token (what OHIF sends once logged in) the list loads.
    study, _, _ = await store_study(oidc_viewer, issuer.token())
    found = await oidc_viewer.get("/dicomweb/studies", headers=bearer(issuer.token()))
    assert found.status_code == 200
    assert [s["0020000D"]["Value"][0] for s in found.json()] == [study]
