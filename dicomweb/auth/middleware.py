"""The ASGI middleware in front of every route: edge checks, authorization, audit.

For each HTTP request, in order:

1. The edge (auth/edge.py): request line and header sizes (414, 431), body size (413),
   slow clients (408), security headers on every response.
2. The route the request reaches and its rule (auth/policy.py). A bearer credential
   (RFC 6750: the Authorization header, or the `access_token` query parameter, which is
   removed from the query string before the app sees it) is required unless the rule
   says PUBLIC:
   - none: 401 with `WWW-Authenticate: Bearer realm="dicomweb"`;
   - invalid, expired, not yet valid, wrong issuer or audience, bad signature, refused
     algorithm, tampered or expired link: 401 with `error="invalid_token"`;
   - a valid token without the rule's scope, or limited to other studies: 403 with
     `error="insufficient_scope"`.
   With `--auth none` (loopback only) nothing is required.
3. The grant goes in `scope["auth"]` (`request.auth`); qido.py narrows searches with it.
4. One audit line per request, whatever happened.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from typing import Any
from urllib.parse import parse_qsl, unquote

import orjson
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dicomweb.auth.edge import (
    BodyTooLarge,
    Watch,
    Watchdog,
    content_length,
    guarded_receive,
    guarded_send,
    oversized,
)
from dicomweb.auth.grant import OPEN, Grant
from dicomweb.auth.policy import Permission, Resolved, Rule, StudyLimit, resolve, rule_for
from dicomweb.auth.security import Security
from dicomweb.auth.tokens import KeysUnavailable, TokenError
from dicomweb.errors import (
    BadRequest,
    DicomwebError,
    Forbidden,
    HeaderFieldsTooLarge,
    PayloadTooLarge,
    RequestTimeout,
    ServiceUnavailable,
    Unauthorized,
    URITooLong,
)
from dicomweb.query import BY_KEYWORD, Level, Query, SingleValue

log = logging.getLogger(__name__)

REALM = 'Bearer realm="dicomweb"'
PROBLEM_JSON = "application/problem+json"
_ANONYMOUS = Grant("anonymous", "none")
_TOKEN_PARAMETER = b"access_token"
_PATIENT_CACHE = 4096


class SecurityMiddleware:
    """Edge, authorization and audit for an app; see the module docstring."""

    def __init__(self, app: ASGIApp, security: Security) -> None:
        self.app = app
        self.security = security
        self.watchdog = Watchdog(security.limits.client_timeout)
        # (patient ID, study UID) pairs found to belong together.
        self._patient_studies: OrderedDict[tuple[str, str], None] = OrderedDict()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            # No route takes WebSockets; refuse rather than let one past the checks.
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        exchange = _Exchange(scope)
        watch = self.watchdog.watch()
        send = guarded_send(send, scope.get("scheme", "http"), exchange.observe, watch)
        try:
            await self._handle(scope, receive, send, exchange, watch)
        except DicomwebError as refusal:
            if exchange.response_started:
                raise
            exchange.reason = refusal.detail
            await _refuse(refusal, scope, receive, send)
        except BaseException as exc:
            problem = _edge_problem(exc)
            if problem is None and watch.timed_out and _cancellation(exc):
                # The watchdog cancelled the request, not the server: take it back.
                task = asyncio.current_task()
                assert task is not None
                task.uncancel()
                problem = RequestTimeout("the client stalled for too long")
            if problem is None:
                exchange.status = exchange.status or 500
                raise
            exchange.reason = problem.detail
            if not exchange.response_started:
                await _refuse(problem, scope, receive, send)
            # Else the response cannot be changed any more: the connection just ends.
        finally:
            self.watchdog.release(watch)
            self.security.audit.write(exchange.record())

    async def _handle(
        self, scope: Scope, receive: Receive, send: Send, exchange: _Exchange, watch: Watch
    ) -> None:
        limits = self.security.limits
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        status = oversized(scope.get("raw_path") or b"", scope["query_string"], headers, limits)
        if status:
            what = "request line" if status == 414 else "request headers"
            error = URITooLong if status == 414 else HeaderFieldsTooLarge
            raise error(f"the {what} is over the server's limit")
        query_token = _take_query_token(scope)
        resolved = resolve(scope["app"].routes, scope)
        rule = None if resolved is None else rule_for(scope["method"], resolved.pattern)
        exchange.route(resolved, scope)
        if resolved is not None and rule is None and self.security.enabled:
            log.error("no access rule for %s %s", scope["method"], resolved.pattern)
            raise Forbidden("no access rule covers this route")
        grant = await self._authorize(scope, rule, resolved, query_token)
        exchange.grant = grant
        scope["auth"] = grant
        large = rule is not None and rule.large_body
        limit = None if large else limits.max_api_body_bytes
        length = content_length(headers)
        if limit is not None and length is not None and length > limit:
            raise PayloadTooLarge(f"the request body is over the limit of {limit} bytes")
        await self.app(scope, guarded_receive(receive, limit, watch), send)

    async def _authorize(
        self, scope: Scope, rule: Rule | None, resolved: Resolved | None, query_token: str | None
    ) -> Grant:
        if not self.security.enabled:
            return OPEN
        if rule is None or rule.permission is Permission.PUBLIC:
            return _ANONYMOUS
        credential = _bearer(scope, query_token)
        if credential is None:
            raise Unauthorized("this resource needs a bearer token", REALM)
        try:
            grant = await self.security.grant(credential)
        except TokenError as exc:
            challenge = _challenge("invalid_token", exc.description)
            raise Unauthorized(exc.description, challenge) from None
        except KeysUnavailable:
            raise ServiceUnavailable("the token issuer's keys cannot be fetched now") from None
        needed = self.security.scope_names[rule.permission]
        if rule.permission not in grant.permissions:
            detail = f"the token lacks the scope {needed}"
            raise Forbidden(detail, _challenge("insufficient_scope", detail, needed))
        if grant.limited and not await self._study_allowed(scope, grant, rule, resolved):
            detail = f"the {'link' if grant.kind == 'link' else 'token'} does not cover this"
            raise Forbidden(detail, _challenge("insufficient_scope", detail, needed))
        return grant

    async def _study_allowed(
        self, scope: Scope, grant: Grant, rule: Rule, resolved: Resolved | None
    ) -> bool:
        if rule.limit is StudyLimit.SEARCH:
            return True
        study: Any = None
        if rule.limit is StudyLimit.PATH and resolved is not None:
            study = resolved.path_params.get("study")
        elif rule.limit is StudyLimit.QUERY:
            study = _query_value(scope, "studyUID")
        if not isinstance(study, str):
            return False
        if grant.studies is not None and study not in grant.studies:
            return False
        if grant.patient_id is not None:
            return await self._patient_has(scope, grant.patient_id, study)
        return True

    async def _patient_has(self, scope: Scope, patient_id: str, study: str) -> bool:
        """Whether the index holds `study` under `patient_id` (positive answers cached)."""
        key = (patient_id, study)
        if key in self._patient_studies:
            return True
        query = Query(Level.STUDY, study_instance_uid=study, limit=1)
        query.matches.append((BY_KEYWORD["PatientID"], SingleValue(patient_id)))
        result = await scope["app"].state.index.search(query)
        if not result.datasets:
            return False
        self._patient_studies[key] = None
        if len(self._patient_studies) > _PATIENT_CACHE:
            self._patient_studies.popitem(last=False)
        return True


class _Exchange:
    """What the audit line of one request says."""

    def __init__(self, scope: Scope) -> None:
        self.started = time.perf_counter()
        self.method = scope["method"]
        self.path = scope["path"]
        client = scope.get("client")
        self.client = client[0] if client else None
        self.status = 0
        self.bytes = 0
        self.response_started = False
        self.grant: Grant | None = None
        self.reason: str | None = None
        self.fields: dict[str, Any] = {}

    def observe(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.response_started = True
        elif message["type"] == "http.response.body":
            self.bytes += len(message.get("body", b""))

    def route(self, resolved: Resolved | None, scope: Scope) -> None:
        query = scope["query_string"]
        if query:
            self.fields["query"] = query.decode("latin-1")[:1000]
        if resolved is None:
            return
        self.fields["route"] = resolved.pattern
        self.fields["transaction"] = resolved.name
        params = resolved.path_params
        if resolved.pattern == "/wado":
            params = {
                "study": _query_value(scope, "studyUID"),
                "series": _query_value(scope, "seriesUID"),
                "instance": _query_value(scope, "objectUID"),
            }
        for name in ("study", "series", "instance"):
            if params.get(name):
                self.fields[name] = params[name]

    def record(self) -> dict[str, Any]:
        grant = self.grant
        status = self.status
        if status in (401, 403):
            outcome = "denied"
        elif 0 < status < 400:
            outcome = "success"
        else:
            outcome = "failure"
        record: dict[str, Any] = {
            "kind": "http",
            "who": grant.subject if grant is not None else "anonymous",
            "auth": grant.kind if grant is not None else "none",
            "client": self.client,
            "method": self.method,
            "path": self.path,
            **self.fields,
            "status": status,
            "outcome": outcome,
            "bytes": self.bytes,
            "ms": round((time.perf_counter() - self.started) * 1000, 1),
        }
        if self.reason:
            record["reason"] = self.reason
        return record


def _take_query_token(scope: Scope) -> str | None:
    """Remove `access_token` from the query string; return its value (RFC 6750 2.3)."""
    query: bytes = scope["query_string"]
    if _TOKEN_PARAMETER not in query:
        return None
    kept, tokens = [], []
    for item in query.split(b"&"):
        name, _, value = item.partition(b"=")
        if name == _TOKEN_PARAMETER:
            tokens.append(unquote(value.decode("latin-1")))
        else:
            kept.append(item)
    if len(tokens) > 1:
        raise _invalid_request("access_token is given more than once")
    scope["query_string"] = b"&".join(kept)
    return tokens[0] if tokens else None


def _bearer(scope: Scope, query_token: str | None) -> str | None:
    header = None
    headers: list[tuple[bytes, bytes]] = scope["headers"]
    for name, value in headers:
        if name == b"authorization":
            header = value.decode("latin-1")
            break
    if header is not None:
        scheme, _, credential = header.partition(" ")
        if scheme.lower() == "bearer" and credential.strip():
            if query_token is not None:
                detail = "a token is given both in the header and in the query"
                raise _invalid_request(detail)
            return credential.strip()
    return query_token


def _query_value(scope: Scope, name: str) -> str | None:
    query: bytes = scope["query_string"]
    for key, value in parse_qsl(query.decode("latin-1")):
        if key == name:
            return value
    return None


def _challenge(error: str, description: str = "", scope: str = "") -> str:
    """A WWW-Authenticate value (RFC 6750 3): quotes and backslashes cannot occur."""
    parts = [REALM, f'error="{error}"']
    if description:
        parts.append(f'error_description="{_quotable(description)}"')
    if scope:
        parts.append(f'scope="{_quotable(scope)}"')
    return ", ".join(parts)


def _quotable(text: str) -> str:
    return "".join(c for c in text if 0x20 <= ord(c) <= 0x7E and c not in '"\\')


def _invalid_request(detail: str) -> BadRequest:
    error = BadRequest(detail)
    error.headers = {"WWW-Authenticate": _challenge("invalid_request", detail)}
    return error


def _edge_problem(exc: BaseException) -> DicomwebError | None:
    """The response for an edge error raised while the app ran (maybe in a group)."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _edge_problem(inner)
            if found is not None:
                return found
        return None
    if isinstance(exc, BodyTooLarge):
        return PayloadTooLarge(str(exc))
    return None


def _cancellation(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return any(_cancellation(inner) for inner in exc.exceptions)
    return isinstance(exc, asyncio.CancelledError)


async def _refuse(refusal: DicomwebError, scope: Scope, receive: Receive, send: Send) -> None:
    """The refusal as an RFC 9457 problem document, as the app's own errors are sent."""
    status = refusal.http_status
    body = {"type": "about:blank", "title": refusal.title, "status": status}
    body["detail"] = refusal.detail
    headers = {"Cache-Control": "no-store", **refusal.headers}
    if status in (408, 413, 414, 431):
        # The rest of the request is not read: the connection cannot carry another.
        headers["Connection"] = "close"
    response = Response(orjson.dumps(body), status, headers, media_type=PROBLEM_JSON)
    await response(scope, receive, send)
