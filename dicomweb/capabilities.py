"""What the server offers, read from its own route table: OPTIONS on any resource, the
Capabilities Description of the service root, and an OpenAPI description.

- OPTIONS on any path (PS3.18 8.9, Retrieve Capabilities, and Annex H): `Allow` names
  the methods of the route the path belongs to (GET with HEAD, and OPTIONS), and the
  body describes that resource and every resource below it, as WADL
  (application/vnd.sun.wadl+xml, the default) or as the same tree in JSON when Accept
  prefers application/json. `Accept-Post` names what POST takes, where it is allowed.
- GET on the service root: the Capabilities Description of the whole service, as above.
- GET /openapi.json: an OpenAPI 3.1 description of every route (openapi.py).

Everything comes from `app.routes` when a request asks, so routes added later are
described at once. Words come from ENDPOINTS, one row per endpoint function; a route
whose endpoint has no row is still listed (its docstring's first line is its title),
and a test fails until the row is written. Answers depend on route patterns only, never
on the index: OPTIONS on a study says nothing about whether the study exists.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Mount, Route
from starlette.types import Scope

from dicomweb import __version__
from dicomweb.config import SERVICE_ROOT
from dicomweb.errors import NotFound
from dicomweb.negotiation import (
    DICOM,
    DICOM_JSON,
    DICOM_XML,
    FRAME_MEDIA_TYPES,
    OCTET_STREAM,
    ZIP,
    choose,
)
from dicomweb.openapi import openapi_document, unique_id
from dicomweb.pixels.render import GIF, JPEG, PNG
from dicomweb.query import ATTRIBUTES, SEQUENCES, Level, rank
from dicomweb.wadl import (
    WADL_MEDIA_TYPE,
    Application,
    Method,
    Param,
    Reply,
    Resource,
    to_json,
    to_xml,
)

JSON = "application/json"
_FORM = "application/x-www-form-urlencoded"
_NDJSON = "application/x-ndjson"
# Methods in the order Allow lists them; any other method follows, sorted.
_METHOD_ORDER = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
_PARAMETER = re.compile(r"\{(\w+)(?::\w+)?\}")
# Path parameters that name a level of the DICOM model, for the transaction names.
_LEVELS = {"study": "Study", "series": "Series", "instance": "Instance", "frames": "Frames"}
# Annex H, note: the Retrieve Capabilities transaction is left out of the description.
_SELF_DESCRIBING = frozenset({"answer_options", "retrieve_capabilities"})

# Words for path parameters, by name.
PATH_PARAMETERS: Mapping[str, str] = {
    "study": "Study Instance UID",
    "series": "Series Instance UID",
    "instance": "SOP Instance UID",
    "frames": "frame numbers from 1, comma-separated",
    "path": "the rest of the path: for bulk data a tag, or tag/item/tag... inside "
    "sequences (items from 1); for the viewer a file or one of its pages",
}


def _multipart(part_type: str) -> str:
    return f'multipart/related; type="{part_type}"'


@dataclass(frozen=True, slots=True)
class Endpoint:
    """The description of one endpoint function, for every route that uses it.

    `summary` may hold `{level}` (the deepest level the path names: Study, Series,
    Instance or Frames) and `{scope}` (every level it names, each followed by a space).
    """

    summary: str
    tag: str
    reference: str = ""
    doc: str = ""
    # Media types of the request body, and of the response body.
    accepts: tuple[str, ...] = ()
    produces: tuple[str, ...] = ()
    # Media types offered only at some levels, by level name ("study", "instance"...).
    by_level: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    query: tuple[Param, ...] = ()
    headers: tuple[Param, ...] = ()
    # Success statuses; 200, 201, 202 and 206 carry a body in a produced media type.
    statuses: tuple[int, ...] = (200,)


def _search_query(level: Level) -> tuple[Param, ...]:
    """QIDO-RS query parameters at `level`: qido.py's keys and the index's attributes."""
    keys = [
        Param(a.keyword, "query", doc=f"matching key ({a.hex[:4]},{a.hex[4:]}) {a.vr}")
        for a in ATTRIBUTES
        if a.matching and rank(a.level) <= rank(level)
    ]
    keys += [
        Param(f"{s.keyword}.{item.keyword}", "query", doc=f"matching key in {s.keyword} items")
        for s in SEQUENCES
        if rank(s.level) <= rank(level)
        for item in s.items
    ]
    return (
        *keys,
        Param(
            "includefield",
            "query",
            repeating=True,
            doc="attributes to return, keywords or tags (comma-separated or repeated), or all",
        ),
        Param("limit", "query", type="xs:int", doc="results per response, 1 to 1000 (the default)"),
        Param("offset", "query", type="xs:int", doc="results to skip, from 0"),
        Param("fuzzymatching", "query", type="xs:boolean", options=("true", "false")),
        Param("accept", "query", doc="a media type, instead of the Accept header"),
        Param("charset", "query", doc="ignored: results are always UTF-8"),
    )


def _render_query(*, thumbnail: bool) -> tuple[Param, ...]:
    """Rendering parameters (PS3.18 8.3.5; renderparams.py)."""
    annotation = Param(
        "annotation",
        "query",
        repeating=True,
        options=("patient", "technique"),
        doc="burned-in text, comma-separated or repeated",
    )
    return (
        Param("accept", "query", repeating=True, doc="media types, instead of the Accept header"),
        *(() if thumbnail else (annotation,)),
        Param("quality", "query", type="xs:int", doc="1 to 100, for image/jpeg"),
        Param("viewport", "query", doc="vw,vh or vw,vh,sx,sy,sw,sh"),
        Param("window", "query", doc="center,width[,function] or a preset name (extension)"),
        Param("preset", "query", doc="a preset window by name (extension)"),
        Param("overlays", "query", type="xs:boolean", doc="burn in overlay planes (extension)"),
        Param("charset", "query"),
    )


_WADO_URI_QUERY = (
    Param("requestType", "query", required=True, options=("WADO",)),
    Param("studyUID", "query", required=True),
    Param("seriesUID", "query", required=True),
    Param("objectUID", "query", required=True),
    Param(
        "contentType",
        "query",
        options=(DICOM, JPEG),
        doc="default: image/jpeg for images, application/dicom for other instances",
    ),
    Param("transferSyntax", "query", doc="for application/dicom"),
    Param("frameNumber", "query", type="xs:int"),
    Param("windowCenter", "query", doc="with windowWidth"),
    Param("windowWidth", "query"),
    Param("rows", "query", type="xs:int"),
    Param("columns", "query", type="xs:int"),
    Param("imageQuality", "query", type="xs:int", doc="1 to 100"),
)
_IF_NONE_MATCH = Param("If-None-Match", "header", doc="the ETag of a previous response: 304")
_RANGE = Param("Range", "header", doc="one byte range, for single-part octet-stream bodies")
_IF_RANGE = Param("If-Range", "header", doc="given: the whole value is sent")
_SEARCH = (DICOM_JSON, _multipart(DICOM_XML))
_RENDERED = (JPEG, PNG, GIF)
_FRAMES = tuple(_multipart(t) for t in dict.fromkeys(FRAME_MEDIA_TYPES.values()))
_CAPABILITIES = (WADL_MEDIA_TYPE, JSON)
# Success statuses whose response has a body in one of the produced media types.
_WITH_BODY = frozenset({200, 201, 202, 206})


def _search(title: str, level: Level) -> Endpoint:
    return Endpoint(
        title,
        "QIDO-RS",
        "PS3.18 10.6",
        doc="Matching keys by keyword or by tag (00100010).",
        produces=_SEARCH,
        query=_search_query(level),
        statuses=(200, 204),
    )


# The description table: one row per endpoint function (a route's name).
ENDPOINTS: Mapping[str, Endpoint] = {
    "store_instances": Endpoint(
        "Store {scope}Instances",
        "STOW-RS",
        "PS3.18 10.5",
        accepts=(_multipart(DICOM),),
        produces=(DICOM_JSON, DICOM_XML),
        statuses=(200, 202),
    ),
    "search_studies": _search("Search for Studies", Level.STUDY),
    "search_series": _search("Search for {scope}Series", Level.SERIES),
    "search_instances": _search("Search for {scope}Instances", Level.INSTANCE),
    "retrieve_instances": Endpoint(
        "Retrieve {level}",
        "WADO-RS",
        "PS3.18 10.4",
        doc="Parts may name a transfer-syntax (8.7.3); * sends them as stored.",
        produces=(_multipart(DICOM),),
        by_level={"study": (ZIP,), "series": (ZIP,)},
    ),
    "retrieve_metadata": Endpoint(
        "Retrieve {level} Metadata",
        "WADO-RS",
        "PS3.18 10.4",
        produces=(DICOM_JSON, _multipart(DICOM_XML)),
        headers=(_IF_NONE_MATCH,),
        statuses=(200, 304),
    ),
    "retrieve_pixel_data": Endpoint(
        "Retrieve {level} Pixel Data",
        "WADO-RS",
        "PS3.18 10.4",
        produces=_FRAMES,
        by_level={"instance": (OCTET_STREAM,)},
    ),
    "retrieve_frames": Endpoint("Retrieve Frames", "WADO-RS", "PS3.18 10.4", produces=_FRAMES),
    "retrieve_bulkdata": Endpoint(
        "Retrieve Bulkdata",
        "WADO-RS",
        "PS3.18 10.4",
        doc="The BulkDataURIs of the metadata; pixel data follows the frame media types.",
        produces=tuple(dict.fromkeys((_multipart(OCTET_STREAM), OCTET_STREAM, *_FRAMES))),
        headers=(_RANGE, _IF_RANGE),
        statuses=(200, 206),
    ),
    "retrieve_rendered": Endpoint(
        "Retrieve Rendered {level}",
        "WADO-RS",
        "PS3.18 10.4",
        doc="Study and series: their representative image. Several frames: image/gif.",
        produces=_RENDERED,
        query=_render_query(thumbnail=False),
        headers=(_IF_NONE_MATCH,),
        statuses=(200, 304),
    ),
    "retrieve_thumbnail": Endpoint(
        "Retrieve {level} Thumbnail",
        "WADO-RS",
        "PS3.18 10.4",
        produces=_RENDERED,
        query=_render_query(thumbnail=True),
        headers=(_IF_NONE_MATCH,),
        statuses=(200, 304),
    ),
    "retrieve_wado_uri": Endpoint(
        "Retrieve DICOM Instance or Rendered Instance (WADO-URI)",
        "WADO-URI",
        "PS3.18 9",
        produces=(DICOM, JPEG),
        query=_WADO_URI_QUERY,
    ),
    "answer_options": Endpoint(
        "Retrieve Capabilities of a resource",
        "Capabilities",
        "PS3.18 8.9, Annex H",
        doc="Allow names the methods; the body describes the resource and those below it.",
        produces=_CAPABILITIES,
    ),
    "retrieve_capabilities": Endpoint(
        "Retrieve Capabilities of the service",
        "Capabilities",
        "PS3.18 8.9, Annex H",
        doc="The same description as OPTIONS on the service root.",
        produces=_CAPABILITIES,
    ),
    "openapi_description": Endpoint("This OpenAPI description", "Capabilities", produces=(JSON,)),
    "healthz": Endpoint(
        "Health check: the index and the storage",
        "Server",
        produces=(JSON,),
        statuses=(200, 503),
    ),
    "send_instances": Endpoint(
        "Send stored instances to a DICOM peer with C-STORE",
        "Admin",
        doc='Body: {"destination", "study", and optionally "series", "instance"}.',
        accepts=(JSON,),
        produces=(_NDJSON,),
    ),
    "delete_resource": Endpoint(
        "Delete {level}",
        "Delete",
        doc="An extension (PS3.18 defines no delete): the index rows and the files go.",
        produces=(JSON,),
    ),
    "get_stats": Endpoint(
        "What the server holds: counts and bytes, per modality and per day",
        "Admin",
        produces=(JSON,),
    ),
    "create_link": Endpoint(
        "Sign a link to one study",
        "Admin",
        doc='Body: {"study": UID, "expires": "1h"}.',
        accepts=(JSON,),
        produces=(JSON,),
        statuses=(201,),
    ),
    "authorization_server_metadata": Endpoint(
        "Authorization server metadata",
        "Security",
        "RFC 8414, OpenID Connect Discovery 1.0",
        doc="404 unless the built-in authorization server is on.",
        produces=(JSON,),
    ),
    "jwks": Endpoint(
        "Token signing keys", "Security", "RFC 7517", produces=("application/jwk-set+json",)
    ),
    "issue_token": Endpoint(
        "Token endpoint: client credentials grant",
        "Security",
        "RFC 6749 4.4",
        accepts=(_FORM,),
        produces=(JSON,),
    ),
    "serve_viewer": Endpoint(
        "The OHIF viewer: its files, and index.html for its pages",
        "Viewer",
        doc="Any GET that no other route takes.",
        produces=("text/html", "text/javascript", "application/wasm"),
        statuses=(200, 304),
    ),
}


# The route table


@dataclass(frozen=True, slots=True)
class RouteInfo:
    """One route: its full pattern (mount prefixes joined), methods and name."""

    pattern: str
    methods: frozenset[str]
    name: str
    # The function the route calls, for a title when ENDPOINTS has no row.
    endpoint: object = None


def route_table(routes: Iterable[BaseRoute], prefix: str = "") -> list[RouteInfo]:
    """Every route of `routes`, mounts walked, in routing order."""
    found: list[RouteInfo] = []
    for route in routes:
        if isinstance(route, Mount):
            if route.routes:
                found += route_table(route.routes, prefix + route.path)
            else:
                # A mounted application (static files) answers GET and HEAD.
                name = route.name or type(route.app).__name__
                pattern = prefix + route.path + "/{path:path}"
                found.append(RouteInfo(pattern, frozenset({"GET", "HEAD"}), name, route.app))
        elif isinstance(route, Route):
            methods = frozenset(route.methods or {"GET", "HEAD"})
            found.append(RouteInfo(prefix + route.path, methods, route.name, route.endpoint))
    return found


class OptionsRoute(Route):
    """Takes OPTIONS requests to any path, and nothing else.

    For another method it does not match at all (rather than partially, as a Route
    does), so that it never answers in place of the 404 or 405 the router would give.
    """

    def __init__(self, path: str, endpoint: Any) -> None:
        super().__init__(path, endpoint, methods=["OPTIONS"], include_in_schema=False)

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope.get("method") != "OPTIONS":
            return Match.NONE, {}
        return super().matches(scope)


def target_pattern(routes: Iterable[BaseRoute], scope: Scope, prefix: str = "") -> str | None:
    """The full pattern of the route a request's path belongs to, whatever its method:
    the first route (in routing order) whose path matches. None: no route has it."""
    for route in routes:
        if isinstance(route, OptionsRoute):
            continue
        match, child = route.matches(scope)
        if match is Match.NONE:
            continue
        if isinstance(route, Mount):
            if not route.routes:
                return prefix + route.path + "/{path:path}"
            # The router gives the path to the mount alone, as here.
            return target_pattern(route.routes, {**scope, **child}, prefix + route.path)
        if isinstance(route, Route):
            return prefix + route.path
        return None
    return None


def allowed_methods(table: Iterable[RouteInfo], pattern: str) -> list[str]:
    """The methods of every route with `pattern`, HEAD with GET, and OPTIONS."""
    methods = {"OPTIONS"}
    for route in table:
        if route.pattern == pattern:
            methods |= route.methods
    if "GET" in methods:
        methods.add("HEAD")
    return sorted(methods, key=_method_key)


def _method_key(method: str) -> tuple[int, str]:
    order = _METHOD_ORDER.index(method) if method in _METHOD_ORDER else len(_METHOD_ORDER)
    return order, method


# Operations: a route and one of its methods, described


@dataclass(frozen=True, slots=True)
class Operation:
    """One method of one route, with the words of its endpoint."""

    method: str
    pattern: str
    name: str
    id: str
    title: str
    endpoint: Endpoint

    @property
    def path_parameters(self) -> list[str]:
        """Names of the path's template parameters, in order."""
        return [m[1] for m in _PARAMETER.finditer(self.pattern)]

    @property
    def produces(self) -> tuple[str, ...]:
        """Media types of the response body at this route's level."""
        level = _levels(self.pattern)
        extra = self.endpoint.by_level.get(level[-1].lower(), ()) if level else ()
        return (*self.endpoint.produces, *extra)

    @property
    def doc(self) -> str:
        """The reference to the standard (or RFC) and any note."""
        return ": ".join(t for t in (self.endpoint.reference, self.endpoint.doc) if t)


def operations(table: Iterable[RouteInfo]) -> list[Operation]:
    """Every route's methods (HEAD left out: GET covers it), described, ids unique."""
    found: list[Operation] = []
    taken: set[str] = set()
    for route in table:
        for method in sorted(route.methods - {"HEAD"}, key=_method_key):
            endpoint = ENDPOINTS.get(route.name) or _undescribed(route)
            levels = _levels(route.pattern)
            title = endpoint.summary.format(
                level=levels[-1] if levels else "", scope="".join(f"{lv} " for lv in levels)
            )
            op_id = unique_id(title, taken)
            found.append(Operation(method, route.pattern, route.name, op_id, title, endpoint))
    return found


def undescribed(table: Iterable[RouteInfo]) -> list[str]:
    """Names of routes whose endpoint has no row in ENDPOINTS."""
    return sorted({route.name for route in table if route.name not in ENDPOINTS})


def _levels(pattern: str) -> list[str]:
    return [_LEVELS[m[1]] for m in _PARAMETER.finditer(pattern) if m[1] in _LEVELS]


def _undescribed(route: RouteInfo) -> Endpoint:
    doc = getattr(route.endpoint, "__doc__", None) or route.name
    return Endpoint(doc.strip().splitlines()[0], "Other")


# The Capabilities Description (Annex H)


def _segments(pattern: str) -> list[str]:
    return [s for s in pattern.split("/") if s]


def description(table: Iterable[RouteInfo], target: str, server: str) -> Application:
    """The WADL tree for the resource at `target` (a full route pattern) and every
    resource below it. Under the service root, `base` is the service's URL; elsewhere
    the server's. `server` is the server's base URL, without a final slash."""
    root = _segments(SERVICE_ROOT)
    wanted = _segments(target)
    under_service = wanted[: len(root)] == root
    base = server + (SERVICE_ROOT if under_service else "") + "/"
    skip = len(root) if under_service else 0
    top = Resource("")
    for operation in operations(table):
        segments = _segments(operation.pattern)
        if segments[: len(wanted)] != wanted or operation.name in _SELF_DESCRIBING:
            continue
        node = top
        for segment in segments[skip:] or [""]:
            node = node.child(_PARAMETER.sub(r"{\1}", segment))
            if not node.params:
                node.params = [
                    Param(m[1], "template", required=True, doc=PATH_PARAMETERS.get(m[1], ""))
                    for m in _PARAMETER.finditer(segment)
                ]
        node.methods.append(_wadl_method(operation))
    return Application(f"dicomweb {__version__}", base, top.children)


def _wadl_method(operation: Operation) -> Method:
    endpoint = operation.endpoint
    produces = operation.produces
    params = list(endpoint.query) + list(endpoint.headers)
    if produces:
        # As PS3.18 (2017) 6.8 showed it: Accept, with the media types as options.
        params.append(Param("Accept", "header", default=produces[0], options=produces))
    with_body = tuple(s for s in endpoint.statuses if s in _WITH_BODY)
    without = tuple(s for s in endpoint.statuses if s not in _WITH_BODY)
    replies = [Reply(with_body, produces)] if with_body else []
    if without:
        replies.append(Reply(without))
    return Method(
        operation.method,
        operation.id,
        operation.title,
        operation.doc,
        tuple(params),
        endpoint.accepts,
        tuple(replies),
    )


# HTTP


def _server(request: Request) -> str:
    """The server's external base URL: public_url, else the request's own."""
    base = str(request.base_url).rstrip("/")
    security = getattr(request.app.state, "security", None)
    return base if security is None else str(security.base_url(base))


def _described(request: Request, table: list[RouteInfo], target: str) -> Response:
    """The description of `target` in the media type Accept prefers."""
    application = description(table, target, _server(request))
    # PS3.18 Table 8.7.3-1: the default media type when none acceptable is offered.
    chosen = choose(request.headers.get("accept"), list(_CAPABILITIES)) or WADL_MEDIA_TYPE
    body = orjson.dumps(to_json(application)) if chosen == JSON else to_xml(application)
    return Response(body, media_type=chosen, headers={"Vary": "Accept"})


async def answer_options(request: Request) -> Response:
    """OPTIONS on any path: Allow, Accept-Post, and the description of its resource."""
    routes = request.app.routes
    target = target_pattern(routes, request.scope)
    if target is None:
        raise NotFound(f"no resource at {request.url.path}")
    table = route_table(routes)
    response = _described(request, table, target)
    allowed = allowed_methods(table, target)
    response.headers["Allow"] = ", ".join(allowed)
    if "POST" in allowed:
        takes = {
            t
            for op in operations(table)
            if op.pattern == target and op.method == "POST"
            for t in op.endpoint.accepts
        }
        if takes:
            response.headers["Accept-Post"] = ", ".join(sorted(takes))
    return response


async def retrieve_capabilities(request: Request) -> Response:
    """GET the service root: its Capabilities Description (PS3.18 Annex H)."""
    return _described(request, route_table(request.app.routes), SERVICE_ROOT)


async def openapi_description(request: Request) -> Response:
    """GET /openapi.json: OpenAPI 3.1 for every route."""
    security = getattr(request.app.state, "security", None)
    document = openapi_document(
        operations(route_table(request.app.routes)),
        server=_server(request),
        security=security if security is not None and security.enabled else None,
        version=__version__,
        path_words=PATH_PARAMETERS,
    )
    return Response(orjson.dumps(document), media_type=JSON)
