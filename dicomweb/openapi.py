"""An OpenAPI 3.1 document of the server's operations (capabilities.py describes them).

Paths are route patterns (`{path:path}` written `{path}`); every path also has an
`options` operation, which the OPTIONS route answers for any path. HEAD is left out:
every GET answers it. With authentication on, the security schemes say how a token is
had (the built-in issuer's client credentials grant, or the external issuer's OpenID
Connect discovery) and each operation the scope its permission needs (auth/policy.py);
public operations have an empty security requirement.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from dicomweb.auth.policy import Permission, rule_for
from dicomweb.wadl import Param

if TYPE_CHECKING:
    from dicomweb.auth.security import Security
    from dicomweb.capabilities import Operation

OPENAPI_VERSION = "3.1.0"
_PROBLEM = "application/problem+json"
_WITH_BODY = frozenset({200, 201, 202, 206})
_TYPES = {"xs:int": "integer", "xs:boolean": "boolean"}
_PATH_PARAMETER = re.compile(r"\{(\w+)(?::\w+)?\}")


def openapi_document(
    operations: list[Operation],
    *,
    server: str,
    security: Security | None,
    version: str,
    path_words: Mapping[str, str],
) -> dict[str, Any]:
    """The document for `operations`, served at `server` (its base URL); `path_words`
    describe path parameters by name."""
    taken = {op.id for op in operations}
    paths: dict[str, dict[str, Any]] = {}
    options: Operation | None = None
    for op in operations:
        if op.method == "OPTIONS":
            options = op
            continue
        item = paths.setdefault(openapi_path(op.pattern), {})
        if op.path_parameters:
            item.setdefault("parameters", _path_parameters(op.path_parameters, path_words))
        item[op.method.lower()] = _operation(op, security)
    if options is not None:
        # Its own path too, should no other route have it.
        own = paths.setdefault(openapi_path(options.pattern), {})
        if options.path_parameters:
            own.setdefault("parameters", _path_parameters(options.path_parameters, path_words))
        for path, item in paths.items():
            answer = _operation(options, security)
            answer["operationId"] = unique_id(f"Options {path}", taken)
            item["options"] = answer
    document: dict[str, Any] = {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "dicomweb",
            "version": version,
            "summary": "A DICOMweb origin server (DICOM PS3.18)",
            "description": "Every GET also answers HEAD. OPTIONS on any path gives its "
            "methods (Allow) and a WADL description (PS3.18 8.9, Annex H); "
            "GET /dicomweb the description of the whole service.",
            "license": {"name": "MIT", "identifier": "MIT"},
        },
        "servers": [{"url": server}],
        "paths": paths,
        "components": {
            "schemas": {
                "Problem": {
                    "type": "object",
                    "description": "RFC 9457 problem details",
                    "properties": {
                        "type": {"type": "string"},
                        "title": {"type": "string"},
                        "status": {"type": "integer"},
                        "detail": {"type": "string"},
                    },
                }
            }
        },
    }
    if security is not None:
        document["components"]["securitySchemes"] = _security_schemes(security, server)
    return document


def openapi_path(pattern: str) -> str:
    """A route pattern as an OpenAPI path: `{name:convertor}` becomes `{name}`."""
    return _PATH_PARAMETER.sub(r"{\1}", pattern)


def unique_id(title: str, taken: set[str]) -> str:
    """`title` as an identifier (CamelCase words), numbered if it is taken already."""
    base = "".join(w[:1].upper() + w[1:] for w in re.findall(r"[A-Za-z0-9]+", title)) or "Op"
    candidate, number = base, 1
    while candidate in taken:
        number += 1
        candidate = f"{base}{number}"
    taken.add(candidate)
    return candidate


def _path_parameters(names: list[str], words: Mapping[str, str]) -> list[dict[str, Any]]:
    return [
        {
            "name": name,
            "in": "path",
            "required": True,
            "description": words.get(name, ""),
            "schema": {"type": "string"},
        }
        for name in names
    ]


def _operation(op: Operation, security: Security | None) -> dict[str, Any]:
    endpoint = op.endpoint
    produces = op.produces
    found: dict[str, Any] = {
        "operationId": op.id,
        "summary": op.title,
        "tags": [endpoint.tag],
    }
    if op.doc:
        found["description"] = op.doc
    # Accept, Content-Type and Authorization are not parameters in OpenAPI: the media
    # types are the responses' and the request body's content.
    parameters = [_parameter(p) for p in (*endpoint.query, *endpoint.headers)]
    if parameters:
        found["parameters"] = parameters
    if endpoint.accepts:
        found["requestBody"] = {
            "required": True,
            "content": {media_type: {} for media_type in endpoint.accepts},
        }
    responses: dict[str, Any] = {}
    for status in endpoint.statuses:
        response: dict[str, Any] = {"description": HTTPStatus(status).phrase}
        if status in _WITH_BODY and produces:
            response["content"] = {media_type: {} for media_type in produces}
        responses[str(status)] = response
    responses["default"] = {
        "description": "An error",
        "content": {_PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }
    found["responses"] = responses
    if security is not None:
        found["security"] = _requirement(op, security)
    return found


def _parameter(param: Param) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": _TYPES.get(param.type, "string")}
    if param.options:
        schema["enum"] = list(param.options)
    if param.repeating:
        schema = {"type": "array", "items": schema}
    found: dict[str, Any] = {
        "name": param.name,
        "in": param.style,
        "required": param.required,
        "schema": schema,
    }
    if param.doc:
        found["description"] = param.doc
    return found


def _requirement(op: Operation, security: Security) -> list[dict[str, list[str]]]:
    """The security requirement of an operation: none for public ones."""
    if op.method == "OPTIONS":
        return []
    rule = rule_for(op.method, op.pattern)
    if rule is None or rule.permission is Permission.PUBLIC:
        # No rule: the route is refused to everyone; nothing to ask for.
        return []
    scope = security.scope_names[rule.permission]
    return [{"oauth2": [scope]}, {"bearer": []}]


def _security_schemes(security: Security, server: str) -> dict[str, Any]:
    config = security.config
    if config.oauth_issuer:
        discovery = config.oauth_issuer.rstrip("/") + "/.well-known/openid-configuration"
        oauth: dict[str, Any] = {"type": "openIdConnect", "openIdConnectUrl": discovery}
    else:
        scopes = {name: f"the {p.value} permission" for p, name in security.scope_names.items()}
        flow = {"tokenUrl": f"{server}/oauth/token", "scopes": scopes}
        oauth = {"type": "oauth2", "flows": {"clientCredentials": flow}}
    oauth["description"] = "Tokens carry the scopes: " + ", ".join(
        f"{name} ({p.value})" for p, name in security.scope_names.items()
    )
    bearer = {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "A JWT access token, or a signed link to one study, in the "
        "Authorization header or the access_token query parameter (RFC 6750)",
    }
    return {"oauth2": oauth, "bearer": bearer}
