"""Bearer JWTs of an external issuer: keys, rotation, claims, scopes and study limits."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import orjson
from joserfc.jwk import ECKey

from dicomweb.config import Config
from tests.auth.conftest import (
    ALL_SCOPES,
    Issuer,
    auth_config,
    bearer,
    hs256_token,
    open_client,
    rsa_key,
    store_study,
)
from tests.dicomfactory import new_uid

STUDIES = "/dicomweb/studies"


def studies_found(response: httpx.Response) -> set[str]:
    if response.status_code == 204:
        return set()
    assert response.status_code == 200, response.text
    return {ds["0020000D"]["Value"][0] for ds in response.json()}


async def test_key_rotation_is_followed_without_a_restart(tmp_path: Path, issuer: Issuer) -> None:
    config = auth_config(tmp_path, oauth_issuer=issuer.url, jwks_refresh_min_seconds=0)
    async for client in open_client(config):
        old = issuer.token()
        assert (await client.get(STUDIES, headers=bearer(old))).status_code == 204
        assert (issuer.discovery_hits, issuer.jwks_hits) == (1, 1)
        # Tokens of the same key are checked against the cached keys: no fetch.
        assert (await client.get(STUDIES, headers=bearer(issuer.token()))).status_code == 204
        assert issuer.jwks_hits == 1

        # The issuer rotates: a new key signs, the old one is withdrawn.
        issuer.keys = [rsa_key()]
        new = issuer.token()
        assert (await client.get(STUDIES, headers=bearer(new))).status_code == 204
        assert issuer.jwks_hits == 2
        # The withdrawn key is gone from the server's keys too.
        response = await client.get(STUDIES, headers=bearer(old))
        assert response.status_code == 401
        assert 'error="invalid_token"' in response.headers["www-authenticate"]


async def test_unknown_key_ids_do_not_hammer_the_issuer(tmp_path: Path, issuer: Issuer) -> None:
    config = auth_config(tmp_path, oauth_issuer=issuer.url, jwks_refresh_min_seconds=60)
    async for client in open_client(config):
        assert (await client.get(STUDIES, headers=bearer(issuer.token()))).status_code == 204
        stranger = rsa_key()
        for _ in range(20):
            response = await client.get(STUDIES, headers=bearer(issuer.token(key=stranger)))
            assert response.status_code == 401
        # The first fetch, and none for the made-up key ids within the minute.
        assert issuer.jwks_hits == 1


async def test_issuer_down_at_first_use_is_503_then_recovers(
    tmp_path: Path, issuer: Issuer
) -> None:
    config = auth_config(tmp_path, oauth_issuer=issuer.url, jwks_refresh_min_seconds=0)
    async for client in open_client(config):
        issuer.down = True
        response = await client.get(STUDIES, headers=bearer(issuer.token()))
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/problem+json"
        issuer.down = False
        assert (await client.get(STUDIES, headers=bearer(issuer.token()))).status_code == 204


async def test_issuer_down_later_keeps_the_cached_keys(tmp_path: Path, issuer: Issuer) -> None:
    config = auth_config(
        tmp_path, oauth_issuer=issuer.url, jwks_cache_seconds=0, jwks_refresh_min_seconds=0
    )
    async for client in open_client(config):
        assert (await client.get(STUDIES, headers=bearer(issuer.token()))).status_code == 204
        issuer.down = True
        assert (await client.get(STUDIES, headers=bearer(issuer.token()))).status_code == 204


async def test_hs256_signed_with_the_public_key_is_refused(
    client: httpx.AsyncClient, issuer: Issuer
) -> None:
    """The HS/RS confusion: a MAC keyed with the issuer's public key as a secret."""
    assert (await client.get(STUDIES, headers=bearer(issuer.token()))).status_code == 204
    public_pem = issuer.keys[0].as_pem(private=False)
    claims = {"iss": issuer.url, "aud": "dicomweb", "exp": int(time.time()) + 60}
    forged = hs256_token(public_pem, {**claims, "scope": ALL_SCOPES}, str(issuer.keys[0].kid))
    response = await client.get(STUDIES, headers=bearer(forged))
    assert response.status_code == 401
    assert "algorithm" in response.headers["www-authenticate"]


async def test_an_ec_key_can_sign(client: httpx.AsyncClient, issuer: Issuer) -> None:
    ec = ECKey.generate_key("P-256", parameters={"alg": "ES256", "use": "sig"}, auto_kid=True)
    issuer.keys.append(ec)
    response = await client.get(STUDIES, headers=bearer(issuer.token(key=ec)))
    assert response.status_code == 204
    # The EC key under an RSA algorithm name is refused.
    forged = issuer.token(key=issuer.keys[0], header={"kid": ec.kid})
    assert (await client.get(STUDIES, headers=bearer(forged))).status_code == 401


async def test_claims_within_the_clock_skew_are_accepted(
    client: httpx.AsyncClient, issuer: Issuer
) -> None:
    now = int(time.time())
    for token in (issuer.token(exp=now - 10), issuer.token(nbf=now + 10)):
        assert (await client.get(STUDIES, headers=bearer(token))).status_code == 204
    for token in (issuer.token(exp=None), issuer.token(aud=None), issuer.token(iss=None)):
        assert (await client.get(STUDIES, headers=bearer(token))).status_code == 401


async def test_audience_lists_and_malformed_tokens(
    client: httpx.AsyncClient, issuer: Issuer
) -> None:
    token = issuer.token(aud=["account", "dicomweb"])
    assert (await client.get(STUDIES, headers=bearer(token))).status_code == 204
    for garbage in ("abc", "a.b.c", "eyJhbGciOiJSUzI1NiJ9.e30.", ""):
        response = await client.get(STUDIES, headers={"Authorization": f"Bearer {garbage}"})
        assert response.status_code == 401
    basic = await client.get(STUDIES, headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert basic.status_code == 401
    assert basic.headers["www-authenticate"] == 'Bearer realm="dicomweb"'


async def test_scopes_from_configured_claims(tmp_path: Path, issuer: Issuer) -> None:
    """Keycloak realm roles, and renamed scopes as an identity provider may require."""
    config = auth_config(
        tmp_path,
        oauth_issuer=issuer.url,
        oauth_scope_claims="realm_access.roles",
        oauth_subject_claim="preferred_username",
        scope_read="pacs-reader",
    )
    async for client in open_client(config):
        token = issuer.token(
            scope=None, realm_access={"roles": ["pacs-reader"]}, preferred_username="jane"
        )
        assert (await client.get(STUDIES, headers=bearer(token))).status_code == 204
        plain = issuer.token("dicomweb.read")
        assert (await client.get(STUDIES, headers=bearer(plain))).status_code == 403


async def test_scp_list_as_azure_ad_sends_it(client: httpx.AsyncClient, issuer: Issuer) -> None:
    token = issuer.token(scope=None, scp=["dicomweb.read"])
    assert (await client.get(STUDIES, headers=bearer(token))).status_code == 204


async def test_study_limited_token(client: httpx.AsyncClient, issuer: Issuer) -> None:
    writer = issuer.token()
    mine, series, sop = await store_study(client, writer)
    other, _, _ = await store_study(client, writer)
    limited = bearer(issuer.token("dicomweb.read dicomweb.write", dicomweb_studies=[mine]))

    assert studies_found(await client.get(STUDIES, headers=limited)) == {mine}
    by_uid = await client.get(STUDIES, params={"StudyInstanceUID": other}, headers=limited)
    assert studies_found(by_uid) == set()
    assert (
        await client.get(f"/dicomweb/series?StudyInstanceUID={other}", headers=limited)
    ).status_code == 204
    assert (await client.get(f"{STUDIES}/{mine}/metadata", headers=limited)).status_code == 200
    refused = await client.get(f"{STUDIES}/{other}/metadata", headers=limited)
    assert refused.status_code == 403
    assert 'error="insufficient_scope"' in refused.headers["www-authenticate"]
    # STOW-RS must name the study in the URL, and only that one.
    assert (await client.post(STUDIES, headers=limited)).status_code == 403
    assert (await client.post(f"{STUDIES}/{other}", headers=limited)).status_code == 403
    assert (await client.post(f"{STUDIES}/{mine}", headers=limited)).status_code == 415
    wado = {"requestType": "WADO", "studyUID": other, "seriesUID": series, "objectUID": sop}
    assert (await client.get("/wado", params=wado, headers=limited)).status_code == 403


async def test_patient_limited_token(client: httpx.AsyncClient, issuer: Issuer) -> None:
    writer = issuer.token()
    hers, _, _ = await store_study(client, writer, patient_id="PAT-A")
    his, _, _ = await store_study(client, writer, patient_id="PAT-B")
    limited = bearer(issuer.token("dicomweb.read", dicomweb_patient_id="PAT-A"))
    assert studies_found(await client.get(STUDIES, headers=limited)) == {hers}
    assert (await client.get(f"{STUDIES}/{hers}/metadata", headers=limited)).status_code == 200
    assert (await client.get(f"{STUDIES}/{his}/metadata", headers=limited)).status_code == 403
    # A study that does not exist is not the patient's either.
    assert (await client.get(f"{STUDIES}/{new_uid()}", headers=limited)).status_code == 403


async def test_token_in_the_query(client: httpx.AsyncClient, issuer: Issuer) -> None:
    token = issuer.token()
    await store_study(client, token)
    response = await client.get(STUDIES, params={"access_token": token, "limit": "5"})
    assert response.status_code == 200
    # The token is not a query key: no Warning about an unsupported one.
    assert "warning" not in response.headers
    both = await client.get(STUDIES, params={"access_token": token}, headers=bearer(token))
    assert both.status_code == 400
    assert 'error="invalid_request"' in both.headers["www-authenticate"]


async def test_public_routes_need_no_token(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).status_code == 200
    # With an external issuer, the built-in server's routes are absent.
    assert (await client.get("/.well-known/openid-configuration")).status_code == 404


async def test_audit_lines_name_who_what_and_outcome(tmp_path: Path, issuer: Issuer) -> None:
    audit = tmp_path / "audit.jsonl"
    config = auth_config(tmp_path, oauth_issuer=issuer.url, audit_log=str(audit))
    async for client in open_client(config):
        token = issuer.token(sub="radiologist-7")
        study, series, sop = await store_study(client, token)
        url = f"{STUDIES}/{study}/series/{series}/instances/{sop}/metadata"
        await client.get(url, headers=bearer(token))
        await client.get(url)
    lines = [orjson.loads(line) for line in audit.read_bytes().splitlines()]
    assert [line["status"] for line in lines] == [200, 200, 401]
    stored, read, denied = lines
    assert stored["who"] == "radiologist-7"
    assert stored["transaction"] == "store_instances"
    assert read["transaction"] == "retrieve_metadata"
    assert (read["study"], read["series"], read["instance"]) == (study, series, sop)
    assert read["outcome"] == "success"
    assert denied["outcome"] == "denied" and denied["who"] == "anonymous"
    assert token not in audit.read_text()


async def test_settings_refuse_symmetric_algorithms(tmp_path: Path) -> None:
    from dicomweb.auth.security import check_security_settings
    from dicomweb.config import ConfigError

    for algorithms in ("HS256", "RS256,none", ""):
        config = Config(auth="oauth2", oauth_algorithms=algorithms)
        try:
            check_security_settings(config)
        except ConfigError:
            continue
        raise AssertionError(f"{algorithms!r} was accepted")
