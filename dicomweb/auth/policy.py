"""Which permission each route needs: one table, matched against route patterns.

A request is matched to a route the way Starlette routes it (the same route objects,
in the same order), and the route's method and full path pattern (mount prefixes
joined, e.g. `/dicomweb/studies/{study}/series`) are looked up in RULES; the first rule
that matches wins. A route no rule matches is refused at run time, and a test over
`app.routes` fails, so a new route cannot be reached before someone decides who may
use it. The conformance statement (section 7) shows this table; a test keeps the two
the same.

Patterns: segments separated by `/`; `*` matches one segment, a final `**` one or more.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.routing import BaseRoute, Match, Mount, Route
from starlette.types import Scope


class Permission(enum.Enum):
    """What a route needs; every permission but PUBLIC is a scope of the token."""

    PUBLIC = "public"
    READ = "read"
    WRITE = "write"
    DELETE = "delete"
    ADMIN = "admin"


class StudyLimit(enum.Enum):
    """How a credential limited to some studies (or one patient) applies to a route."""

    # The {study} path parameter must be one of the allowed studies.
    PATH = "path"
    # Results are filtered to the allowed studies (qido.py calls auth.limit_query).
    SEARCH = "search"
    # The studyUID query parameter (WADO-URI) must be one of the allowed studies.
    QUERY = "query"
    # A limited credential cannot use the route at all.
    REFUSED = "refused"
    # Nothing to limit: public routes.
    NONE = "-"


@dataclass(frozen=True, slots=True)
class Rule:
    """Requests with one of `methods` ("*": any) to a route matching `pattern`."""

    methods: frozenset[str]
    pattern: str
    permission: Permission
    limit: StudyLimit
    # STOW-RS bodies are limited by max_request_bytes (and checked by stow.py); any
    # other body by max_api_body_bytes.
    large_body: bool = False

    def applies(self, method: str, pattern: str) -> bool:
        """Whether this rule covers `method` on a route whose pattern is `pattern`."""
        if "*" not in self.methods and _method(method) not in self.methods:
            return False
        return pattern_matches(self.pattern, pattern)


def _rule(methods: str, pattern: str, permission: Permission, limit: StudyLimit, **kw: Any) -> Rule:
    return Rule(frozenset(methods.split()), pattern, permission, limit, **kw)


P, R, W, D, A = (
    Permission.PUBLIC,
    Permission.READ,
    Permission.WRITE,
    Permission.DELETE,
    Permission.ADMIN,
)

# The table. GET covers HEAD. Order matters: the first match wins.
RULES: tuple[Rule, ...] = (
    _rule("GET", "/healthz", P, StudyLimit.NONE),
    # Capabilities (capabilities.py): the routes described, from their patterns only.
    _rule("OPTIONS", "/{path:path}", P, StudyLimit.NONE),
    _rule("GET", "/dicomweb", P, StudyLimit.NONE),
    _rule("GET", "/openapi.json", P, StudyLimit.NONE),
    _rule("GET", "/.well-known/openid-configuration", P, StudyLimit.NONE),
    _rule("GET", "/.well-known/oauth-authorization-server", P, StudyLimit.NONE),
    _rule("GET", "/oauth/jwks", P, StudyLimit.NONE),
    _rule("POST", "/oauth/token", P, StudyLimit.NONE),
    _rule("GET", "/dicomweb/studies", R, StudyLimit.SEARCH),
    _rule("GET", "/dicomweb/series", R, StudyLimit.SEARCH),
    _rule("GET", "/dicomweb/instances", R, StudyLimit.SEARCH),
    _rule("GET", "/dicomweb/studies/{study}", R, StudyLimit.PATH),
    _rule("GET", "/dicomweb/studies/{study}/**", R, StudyLimit.PATH),
    _rule("GET", "/dicomweb/**", R, StudyLimit.REFUSED),
    _rule("POST", "/dicomweb/studies", W, StudyLimit.REFUSED, large_body=True),
    _rule("POST", "/dicomweb/studies/{study}", W, StudyLimit.PATH, large_body=True),
    _rule("DELETE", "/dicomweb/studies/{study}", D, StudyLimit.PATH),
    _rule("DELETE", "/dicomweb/studies/{study}/**", D, StudyLimit.PATH),
    _rule("DELETE", "/dicomweb/**", D, StudyLimit.REFUSED),
    _rule("GET", "/wado", R, StudyLimit.QUERY),
    _rule("*", "/api/**", A, StudyLimit.REFUSED),
    # The viewer's static files (its catch-all route): no data, only the application.
    _rule("GET", "/", P, StudyLimit.NONE),
    _rule("GET", "/{path:path}", P, StudyLimit.NONE),
)


def _method(method: str) -> str:
    return "GET" if method == "HEAD" else method


def pattern_matches(rule: str, pattern: str) -> bool:
    """Whether a rule pattern (with `*` and `**`) covers a route pattern."""
    wanted = rule.strip("/").split("/")
    given = pattern.strip("/").split("/")
    for position, segment in enumerate(wanted):
        if segment == "**":
            return len(given) > position
        if position >= len(given) or (segment != "*" and segment != given[position]):
            return False
    return len(given) == len(wanted)


@functools.lru_cache(maxsize=1024)
def rule_for(method: str, pattern: str) -> Rule | None:
    """The first rule covering `method` on a route pattern, or None."""
    return next((rule for rule in RULES if rule.applies(method, pattern)), None)


@dataclass(frozen=True, slots=True)
class Resolved:
    """The route a request reaches: its full pattern, name and path parameters."""

    pattern: str
    name: str
    path_params: Mapping[str, Any]


def resolve(routes: Iterable[BaseRoute], scope: Scope) -> Resolved | None:
    """The route Starlette would hand this request to, or None (404, 405, redirect).

    `scope` is not changed: matching works on a copy, as the router's own does later.
    """
    return _resolve(routes, dict(scope), "")


def _resolve(routes: Iterable[BaseRoute], scope: dict[str, Any], prefix: str) -> Resolved | None:
    for route in routes:
        match, child = route.matches(scope)
        if match is not Match.FULL:
            continue
        if isinstance(route, Mount):
            inner = {**scope, **child}
            if route.routes:
                return _resolve(route.routes, inner, prefix + route.path)
            name = route.name or type(route.app).__name__
            return Resolved(prefix + route.path + "/{path:path}", name, inner["path_params"])
        if isinstance(route, Route):
            return Resolved(prefix + route.path, route.name, child["path_params"])
        # Another kind of route (Host, WebSocketRoute): no rule can name it.
        return Resolved(f"<{type(route).__name__}>", type(route).__name__, {})
    return None


def route_patterns(routes: Iterable[BaseRoute], prefix: str = "") -> Iterator[tuple[str, str]]:
    """(method, full pattern) of every route, HEAD left out: what RULES must cover."""
    for route in routes:
        if isinstance(route, Mount):
            if route.routes:
                yield from route_patterns(route.routes, prefix + route.path)
            else:
                # A mounted application (static files) answers GET and HEAD.
                yield "GET", prefix + route.path + "/{path:path}"
        elif isinstance(route, Route):
            for method in sorted(route.methods or {"GET"}):
                if method != "HEAD":
                    yield method, prefix + route.path
        else:
            yield "GET", f"<{type(route).__name__}>"
