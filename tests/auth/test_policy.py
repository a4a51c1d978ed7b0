"""The permission table's pattern language, route resolution, and the security settings."""

from __future__ import annotations

import pytest
from starlette.routing import Mount, Route

from dicomweb.app import create_app
from dicomweb.auth.policy import Permission, StudyLimit, pattern_matches, resolve, rule_for
from dicomweb.config import Config, ConfigError

PATTERNS = [
    ("/dicomweb/**", "/dicomweb/studies", True),
    ("/dicomweb/**", "/dicomweb/studies/{study}/series/{series}", True),
    ("/dicomweb/**", "/dicomweb", False),
    ("/dicomweb/studies/{study}/**", "/dicomweb/studies/{study}", False),
    ("/dicomweb/studies/{study}/**", "/dicomweb/studies/{study}/metadata", True),
    ("/dicomweb/*/x", "/dicomweb/a/x", True),
    ("/dicomweb/*/x", "/dicomweb/a/b/x", False),
    ("/wado", "/wado", True),
    ("/wado", "/wado/x", False),
    ("/", "/", True),
    ("/", "/healthz", False),
]


@pytest.mark.parametrize(("rule", "pattern", "expected"), PATTERNS)
def test_patterns(rule: str, pattern: str, expected: bool) -> None:
    assert pattern_matches(rule, pattern) is expected


def test_methods_and_order() -> None:
    assert rule_for("HEAD", "/dicomweb/studies/{study}/metadata") == rule_for(
        "GET", "/dicomweb/studies/{study}/metadata"
    )
    stow = rule_for("POST", "/dicomweb/studies")
    assert stow is not None
    assert (stow.permission, stow.limit, stow.large_body) == (
        Permission.WRITE,
        StudyLimit.REFUSED,
        True,
    )
    # A future route under the service root: read, but never for a limited credential.
    future = rule_for("GET", "/dicomweb/workitems")
    assert future is not None
    assert (future.permission, future.limit) == (Permission.READ, StudyLimit.REFUSED)
    # Methods nobody decided on are not covered.
    assert rule_for("PUT", "/dicomweb/studies/{study}") is None
    assert rule_for("POST", "/dicomweb/workitems") is None


def _scope(method: str, path: str) -> dict[str, object]:
    return {"type": "http", "method": method, "path": path, "root_path": "", "headers": []}


def test_resolution_follows_the_router() -> None:
    app = create_app(Config())
    uid = "1.2.3"
    found = resolve(app.routes, _scope("GET", f"/dicomweb/studies/{uid}/series/4.5/metadata"))
    assert found is not None
    assert found.pattern == "/dicomweb/studies/{study}/series/{series}/metadata"
    assert found.name == "retrieve_metadata"
    assert dict(found.path_params) == {"study": uid, "series": "4.5"}
    # The method picks between routes of one path.
    stow = resolve(app.routes, _scope("POST", "/dicomweb/studies"))
    assert stow is not None and stow.name == "store_instances"
    assert resolve(app.routes, _scope("DELETE", "/dicomweb/studies")) is None
    mounted = [Mount("/static", app=lambda scope, receive, send: None), Route("/x", lambda r: r)]
    static = resolve(mounted, _scope("GET", "/static/app.js"))
    assert static is not None and static.pattern == "/static/{path:path}"


@pytest.mark.parametrize(
    ("value", "expected"),
    [("true", True), ("1", True), ("on", True), ("False", False), ("0", False), ("", False)],
)
def test_boolean_settings(value: str, expected: bool) -> None:
    environ = {"DICOMWEB_INSECURE_NO_AUTH": value}
    assert Config.from_sources(environ=environ).insecure_no_auth is expected


def test_boolean_settings_refuse_other_words() -> None:
    with pytest.raises(ConfigError):
        Config.from_sources(environ={"DICOMWEB_INSECURE_NO_AUTH": "maybe"})
