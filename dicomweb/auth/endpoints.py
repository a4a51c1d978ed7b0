"""HTTP endpoints of the security layer: the built-in issuer's and signed links.

- GET /.well-known/openid-configuration (and /.well-known/oauth-authorization-server,
  RFC 8414): the issuer, its token endpoint and JWKS. 404 unless the built-in server
  is on.
- GET /oauth/jwks: the public keys tokens are signed with.
- POST /oauth/token: the client-credentials grant (RFC 6749 4.4).
- POST /api/links: a signed link to one study (admin).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import orjson
from anyio import to_thread
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from dicomweb.auth.issuer import AUTH_METHODS, TokenRequest
from dicomweb.auth.links import parse_duration
from dicomweb.errors import BadRequest, NotFound
from dicomweb.jsonbody import json_object
from dicomweb.resources import validate_uid

if TYPE_CHECKING:
    from dicomweb.auth.security import Security

FORM = "application/x-www-form-urlencoded"
# RFC 6749 5.1: token responses must not be cached.
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _security(request: Request) -> Security:
    security: Security = request.app.state.security
    return security


def _json(body: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


async def authorization_server_metadata(request: Request) -> Response:
    """The built-in issuer's metadata (OpenID Connect Discovery 1.0, RFC 8414)."""
    security = _security(request)
    if security.issuer is None:
        raise NotFound("this server does not issue tokens")
    base = security.base_url(str(request.base_url))
    metadata = {
        "issuer": security.issuer.issuer,
        "token_endpoint": f"{base}/oauth/token",
        "jwks_uri": f"{base}/oauth/jwks",
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": AUTH_METHODS,
        "scopes_supported": list(security.scope_names.values()),
        # No authorization endpoint: clients authenticate themselves, no user does.
        "response_types_supported": [],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
    }
    return _json(metadata)


async def jwks(request: Request) -> Response:
    """The public signing keys (RFC 7517 JWK Set)."""
    security = _security(request)
    if security.issuer is None:
        raise NotFound("this server does not issue tokens")
    keys = await to_thread.run_sync(security.issuer.keys.public_jwks)
    return Response(
        orjson.dumps(keys),
        media_type="application/jwk-set+json",
        # Short: clients see a new key soon after a rotation.
        headers={"Cache-Control": "max-age=300"},
    )


async def issue_token(request: Request) -> Response:
    """POST /oauth/token: the client-credentials grant."""
    security = _security(request)
    if security.issuer is None:
        raise NotFound("this server does not issue tokens")
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != FORM:
        body: dict[str, Any] = {
            "error": "invalid_request",
            "error_description": f"the request body must be {FORM}",
        }
        return _json(body, 400, NO_STORE)
    raw = await request.body()
    try:
        form = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, max_num_fields=32)
    except (UnicodeDecodeError, ValueError):
        body = {"error": "invalid_request", "error_description": "malformed form body"}
        return _json(body, 400, NO_STORE)
    token_request = TokenRequest(request.method, str(request.url), request.headers, form)
    issued = await to_thread.run_sync(security.issuer.issue, token_request)
    headers = dict(issued.headers)
    headers.update(NO_STORE)
    headers.pop("Content-Type", None)
    return _json(issued.body, issued.status, headers)


async def create_link(request: Request) -> Response:
    """POST /api/links with {"study": UID, "expires": "1h"}: a signed link to the study."""
    security = _security(request)
    body = await json_object(request)
    study = validate_uid(body.get("study"), "study")
    expires = body.get("expires", "1h")
    try:
        seconds = parse_duration(str(expires), security.config.link_max_seconds)
    except ValueError as exc:
        raise BadRequest(f"expires: {exc}") from None
    link = security.make_link(study, int(time.time()) + seconds, str(request.base_url))
    return _json(link, 201, {"Cache-Control": "no-store"})


ROUTES = [
    Route("/.well-known/openid-configuration", authorization_server_metadata, methods=["GET"]),
    Route(
        "/.well-known/oauth-authorization-server",
        authorization_server_metadata,
        methods=["GET"],
    ),
    Route("/oauth/jwks", jwks, methods=["GET"]),
    Route("/oauth/token", issue_token, methods=["POST"]),
    Route("/api/links", create_link, methods=["POST"]),
]
