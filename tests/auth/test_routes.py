"""Every route and method against every kind of credential (RFC 6750 responses).

The routes come from the app itself, so a route added later is covered at once; its
permission comes from the one table in auth/policy.py, which must cover it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import pytest

from dicomweb.app import create_app
from dicomweb.auth.policy import RULES, Permission, Rule, StudyLimit, route_patterns, rule_for
from dicomweb.config import Config
from tests.auth.conftest import ALL_SCOPES, Issuer, bearer, rsa_key, store_study, unsigned_token
from tests.dicomfactory import new_uid
from tests.test_conformance import table_after

SCOPE_OF = {
    Permission.READ: "dicomweb.read",
    Permission.WRITE: "dicomweb.write",
    Permission.DELETE: "dicomweb.delete",
    Permission.ADMIN: "dicomweb.admin",
}


def all_routes() -> list[tuple[str, str]]:
    return sorted(set(route_patterns(create_app(Config()).routes)))


def test_every_route_has_a_rule() -> None:
    """A route added without deciding who may use it fails here (add a row to RULES)."""
    unmapped = [(m, p) for m, p in all_routes() if rule_for(m, p) is None]
    assert unmapped == []


def test_the_rules_table_is_the_documented_one() -> None:
    documented = [row[:4] for row in table_after("Permissions (checked)")]
    expected = [
        [
            " ".join(sorted(rule.methods)).replace("*", "any"),
            f"`{rule.pattern}`",
            rule.permission.value,
            rule.limit.value,
        ]
        for rule in RULES
    ]
    assert documented == expected


@dataclass(frozen=True)
class Case:
    """A credential and what every route must answer to it."""

    name: str
    token: Callable[[Issuer, str], str | None]
    # Given the rule, whether the request is refused: (status, RFC 6750 error) or None.
    refusal: Callable[[Rule], tuple[int, str | None] | None]


def _invalid(rule: Rule) -> tuple[int, str | None] | None:
    return None if rule.permission is Permission.PUBLIC else (401, "invalid_token")


def _wrong_scope_token(issuer: Issuer, needed: str) -> str:
    return issuer.token(" ".join(s for s in ALL_SCOPES.split() if s != needed))


def _other_study_refusal(rule: Rule) -> tuple[int, str | None] | None:
    if rule.permission is Permission.PUBLIC or rule.limit is StudyLimit.SEARCH:
        return None
    return 403, "insufficient_scope"


NOW = int(time.time())
CASES = [
    Case(
        "no token",
        lambda issuer, needed: None,
        lambda rule: None if rule.permission is Permission.PUBLIC else (401, None),
    ),
    Case("expired", lambda i, n: i.token(exp=int(time.time()) - 120), _invalid),
    Case(
        "not yet valid",
        lambda i, n: i.token(nbf=int(time.time()) + 600, iat=int(time.time())),
        _invalid,
    ),
    Case("wrong issuer", lambda i, n: i.token(iss="https://elsewhere.example.org"), _invalid),
    Case("wrong audience", lambda i, n: i.token(aud="another-api"), _invalid),
    Case(
        "bad signature",
        # Signed by a key the issuer does not publish, under the kid of one it does.
        lambda i, n: i.token(key=rsa_key(), header={"kid": i.keys[0].kid}),
        _invalid,
    ),
    Case(
        "alg none",
        lambda i, n: unsigned_token(
            {"iss": i.url, "aud": "dicomweb", "exp": int(time.time()) + 300, "scope": ALL_SCOPES}
        ),
        _invalid,
    ),
    Case(
        "wrong scope",
        _wrong_scope_token,
        lambda rule: None if rule.permission is Permission.PUBLIC else (403, "insufficient_scope"),
    ),
    Case("right scope", lambda i, needed: i.token(needed), lambda rule: None),
    Case(
        "study-limited token on another study",
        lambda i, n: i.token(ALL_SCOPES, dicomweb_studies=[new_uid()]),
        _other_study_refusal,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_every_route_answers_every_credential(
    case: Case, client: httpx.AsyncClient, issuer: Issuer
) -> None:
    study, series, sop = await store_study(client, issuer.token())
    failures = []
    for method, pattern in all_routes():
        rule = rule_for(method, pattern)
        assert rule is not None
        needed = SCOPE_OF.get(rule.permission, "dicomweb.read")
        token = case.token(issuer, needed)
        url, params = _request_target(pattern, study, series, sop)
        response = await client.request(
            method, url, params=params, headers=bearer(token) if token else {}
        )
        refusal = case.refusal(rule)
        problem = _check(response, refusal, needed)
        limited_search = case.name.startswith("study-limited") and rule.limit is StudyLimit.SEARCH
        # Searches answer, but without the study the token does not cover.
        if problem is None and limited_search and study in response.text:
            problem = f"found the study it does not cover ({response.status_code})"
        if problem:
            failures.append(f"{method} {pattern}: {problem}")
    assert failures == []


def _check(
    response: httpx.Response, refusal: tuple[int, str | None] | None, needed: str
) -> str | None:
    challenge = response.headers.get("www-authenticate", "")
    if refusal is None:
        if response.status_code in (401, 403):
            return f"refused with {response.status_code}: {response.text[:200]}"
        return None
    status, error = refusal
    if response.status_code != status:
        return f"{response.status_code} instead of {status}: {response.text[:200]}"
    if response.headers.get("content-type") != "application/problem+json":
        return "the refusal is not application/problem+json"
    if not challenge.startswith('Bearer realm="dicomweb"'):
        return f"WWW-Authenticate is {challenge!r}"
    if error is None and "error=" in challenge:
        return "a request without credentials got an error code (RFC 6750 3.1)"
    if error is not None and f'error="{error}"' not in challenge:
        return f"WWW-Authenticate is {challenge!r}, not error={error}"
    if error == "insufficient_scope" and f'scope="{needed}"' not in challenge:
        return f"WWW-Authenticate does not name the scope: {challenge!r}"
    return None


def _request_target(pattern: str, study: str, series: str, sop: str) -> tuple[str, dict[str, str]]:
    values = {
        "study": study,
        "series": series,
        "instance": sop,
        "frames": "1",
        "path": "7FE00010" if "bulkdata" in pattern else "index.html",
    }
    url = re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: values[m[1]], pattern)
    params = {}
    if pattern == "/wado":
        params = {"requestType": "WADO", "studyUID": study, "seriesUID": series, "objectUID": sop}
    return url, params
