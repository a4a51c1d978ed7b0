"""Capabilities: OPTIONS on every route, the service's WADL (PS3.18 8.9, Annex H) and
the OpenAPI description, all checked against the app's own route table, so that a route
added later is covered at once."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from xml.etree import ElementTree as ET

import httpx
import pytest
from openapi_spec_validator import validate
from starlette.routing import BaseRoute, Mount, Route

from dicomweb.app import create_app
from dicomweb.capabilities import ENDPOINTS, route_table, undescribed
from dicomweb.config import Config
from dicomweb.openapi import openapi_path
from tests.auth.conftest import auth_config
from tests.conftest import app_client

WADL = "application/vnd.sun.wadl+xml"
NS = {"w": "http://wadl.dev.java.net/2009/02"}
# The routes that give the description, which Annex H leaves out of it.
CAPABILITIES = {("GET", "/dicomweb"), ("GET", "/dicomweb/")}
VALUES = {"study": "1.2.3", "series": "4.5", "instance": "6.7", "frames": "1"}


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return Config(
        data_dir=tmp_path / "data",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'index.sqlite3'}",
        dimse_port=0,
    )


@pytest.fixture
async def client(config: Config) -> AsyncIterator[httpx.AsyncClient]:
    async for c in app_client(config):
        yield c


def app_routes(routes: list[BaseRoute], prefix: str = "") -> dict[str, set[str]]:
    """Full pattern -> methods, walking mounts: the route table as Starlette has it."""
    found: dict[str, set[str]] = {}
    for route in routes:
        if isinstance(route, Mount):
            for pattern, methods in app_routes(list(route.routes), prefix + route.path).items():
                found.setdefault(pattern, set()).update(methods)
        elif isinstance(route, Route):
            found.setdefault(prefix + route.path, set()).update(route.methods or ())
    return found


def operations_of(routes: dict[str, set[str]]) -> set[tuple[str, str]]:
    return {(m, p) for p, methods in routes.items() for m in methods if m != "HEAD"}


def concrete(pattern: str) -> str:
    """A request path the pattern matches, and no route before it."""

    def value(match: re.Match[str]) -> str:
        if match[1] == "path":
            return "7FE00010" if "/bulkdata/" in pattern else "index.html"
        return VALUES.get(match[1], "x")

    return re.sub(r"\{(\w+)(?::\w+)?\}", value, pattern)


def wadl_operations(document: ET.Element) -> set[tuple[str, str]]:
    """(method, full path) of every method in a WADL document."""
    resources = document.findall("w:resources", NS)
    assert len(resources) == 1
    base = resources[0].attrib["base"].removeprefix("http://testserver").rstrip("/")
    found: set[tuple[str, str]] = set()

    def walk(element: ET.Element, path: str) -> None:
        for resource in element.findall("w:resource", NS):
            here = f"{path}/{resource.attrib['path']}"
            for method in resource.findall("w:method", NS):
                found.add((method.attrib["name"], here))
            walk(resource, here)

    walk(resources[0], base)
    return found


def json_operations(tree: dict[str, object]) -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    base = str(tree["base"]).removeprefix("http://testserver").rstrip("/")

    def walk(resources: object, path: str) -> None:
        assert isinstance(resources, list)
        for resource in resources:
            here = f"{path}/{resource['path']}"
            found.update((m["name"], here) for m in resource["methods"])
            walk(resource["resources"], here)

    walk(tree["resources"], base)
    return found


async def test_options_on_every_route_lists_its_methods(client: httpx.AsyncClient) -> None:
    routes = app_routes(client.app.routes)  # type: ignore[attr-defined]
    failures = []
    for pattern, methods in routes.items():
        expected = methods | {"OPTIONS"} | ({"HEAD"} if "GET" in methods else set())
        response = await client.options(concrete(pattern))
        allow = {m.strip() for m in response.headers.get("allow", "").split(",") if m.strip()}
        if response.status_code != 200 or allow != expected:
            failures.append(f"{pattern}: {response.status_code} Allow {sorted(allow)}")
            continue
        assert response.headers["content-type"] == WADL
        ET.fromstring(response.content)
        if "POST" in methods:
            assert "accept-post" in response.headers, pattern
    assert failures == []


async def test_service_root_wadl_lists_every_resource(client: httpx.AsyncClient) -> None:
    response = await client.get("/dicomweb")
    assert response.status_code == 200
    assert response.headers["content-type"] == WADL
    document = ET.fromstring(response.content)
    assert document.tag == "{http://wadl.dev.java.net/2009/02}application"
    resources = document.findall("w:resources", NS)
    assert [r.attrib["base"] for r in resources] == ["http://testserver/dicomweb/"]
    routes = app_routes(client.app.routes)  # type: ignore[attr-defined]
    expected = {
        (m, openapi_path(p))
        for m, p in operations_of(routes)
        if p.startswith("/dicomweb/") and (m, p) not in CAPABILITIES and m != "OPTIONS"
    }
    assert wadl_operations(document) == expected
    ids = [m.attrib["id"] for m in document.iter("{http://wadl.dev.java.net/2009/02}method")]
    assert len(ids) == len(set(ids))
    assert "SearchForStudies" in ids and "RetrieveStudyMetadata" in ids
    # The Retrieve Capabilities transaction: OPTIONS on the service root, same document.
    for root in ("/dicomweb", "/dicomweb/"):
        options = await client.options(root)
        assert options.status_code == 200
        assert options.content == response.content


async def test_wadl_says_what_a_method_takes_and_gives(client: httpx.AsyncClient) -> None:
    document = ET.fromstring((await client.options("/dicomweb/studies")).content)
    methods = {m.attrib["id"]: m for m in document.iter(f"{{{NS['w']}}}method")}
    search = methods["SearchForStudies"]
    queried = {p.attrib["name"] for p in search.findall("w:request/w:param[@style='query']", NS)}
    assert {"PatientName", "StudyDate", "includefield", "limit", "offset"} <= queried
    given = {r.attrib["mediaType"] for r in search.findall("w:response/w:representation", NS)}
    assert given == {"application/dicom+json", 'multipart/related; type="application/dicom+xml"'}
    store = methods["StoreInstances"]
    taken = [r.attrib["mediaType"] for r in store.findall("w:request/w:representation", NS)]
    assert taken == ['multipart/related; type="application/dicom"']
    template = document.find(".//w:resource[@path='{study}']/w:param", NS)
    assert template is not None and template.attrib["style"] == "template"


async def test_options_describes_the_resource_and_those_below(client: httpx.AsyncClient) -> None:
    response = await client.options("/dicomweb/studies/1.2.3/series/4.5")
    assert response.headers["allow"] == "GET, HEAD, DELETE, OPTIONS"
    found = wadl_operations(ET.fromstring(response.content))
    series = "/dicomweb/studies/{study}/series/{series}"
    assert ("GET", series) in found and ("GET", f"{series}/metadata") in found
    assert all(path.startswith(series) for _, path in found)
    outside = await client.options("/healthz")
    document = ET.fromstring(outside.content)
    assert document.find("w:resources", NS).attrib["base"] == "http://testserver/"  # type: ignore[union-attr]
    assert wadl_operations(document) == {("GET", "/healthz")}


async def test_json_form_and_the_default(client: httpx.AsyncClient) -> None:
    wadl = ET.fromstring((await client.get("/dicomweb")).content)
    as_json = await client.options("/dicomweb", headers={"accept": "application/json"})
    assert as_json.headers["content-type"] == "application/json"
    assert as_json.headers["vary"] == "Accept"
    tree = as_json.json()
    assert tree["base"] == "http://testserver/dicomweb/"
    assert json_operations(tree) == wadl_operations(wadl)
    # WADL is the default media type: sent when nothing acceptable is offered.
    for accept in ("image/png", "*/*", f"{WADL}, application/json;q=0.5"):
        response = await client.get("/dicomweb", headers={"accept": accept})
        assert response.status_code == 200
        assert response.headers["content-type"] == WADL
    # A browser opening the service root gets the description, not the viewer.
    navigation = {"accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    assert (await client.get("/dicomweb", headers=navigation)).headers["content-type"] == WADL


async def test_public_url_is_the_base(tmp_path: Path, config: Config) -> None:
    public = replace(config, public_url="https://pacs.example.org")
    async for client in app_client(public):
        tree = (await client.get("/dicomweb", headers={"accept": "application/json"})).json()
        assert tree["base"] == "https://pacs.example.org/dicomweb/"
        document = (await client.get("/openapi.json")).json()
        assert document["servers"] == [{"url": "https://pacs.example.org"}]


async def test_paths_without_a_route_and_other_methods(client: httpx.AsyncClient) -> None:
    missing = await client.options("/dicomweb/nothing-here")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    # OPTIONS takes no other method's 405 from the router.
    refused = await client.put("/healthz")
    assert refused.status_code == 405
    assert "GET" in refused.headers["allow"]
    assert (await client.put("/dicomweb/studies")).headers["allow"] != "OPTIONS"


def test_every_route_has_a_description(config: Config) -> None:
    """A route whose endpoint has no row fails here: add it to capabilities.ENDPOINTS."""
    table = route_table(create_app(config).routes)
    assert undescribed(table) == []
    # And no row describes a route that is gone.
    assert set(ENDPOINTS) <= {route.name for route in table}


async def test_openapi_validates_and_covers_every_route(client: httpx.AsyncClient) -> None:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    document = response.json()
    validate(document)
    assert document["openapi"].startswith("3.1")
    routes = app_routes(client.app.routes)  # type: ignore[attr-defined]
    paths = document["paths"]
    missing = [
        (m, p)
        for m, p in sorted(operations_of(routes))
        if m.lower() not in paths.get(openapi_path(p), {})
    ]
    assert missing == []
    # OPTIONS answers on every path.
    assert all("options" in item for item in paths.values())
    search = paths["/dicomweb/studies"]["get"]
    names = {p["name"] for p in search["parameters"]}
    assert {"PatientName", "includefield", "limit", "offset", "fuzzymatching"} <= names
    assert "application/dicom+json" in search["responses"]["200"]["content"]
    stow = paths["/dicomweb/studies"]["post"]["requestBody"]["content"]
    assert list(stow) == ['multipart/related; type="application/dicom"']
    rendered = paths["/dicomweb/studies/{study}/series/{series}/instances/{instance}/rendered"]
    assert {"viewport", "window", "quality"} <= {p["name"] for p in rendered["get"]["parameters"]}
    # Authentication is off: no security requirements.
    assert "securitySchemes" not in document["components"]


async def test_oauth2_capabilities_need_no_token(tmp_path: Path) -> None:
    config = auth_config(tmp_path)
    async for client in app_client(config, "http://127.0.0.1"):
        assert (await client.get("/dicomweb/studies")).status_code == 401
        for path in ("/dicomweb/studies", "/dicomweb/studies/1.2.3", "/api/send", "/dicomweb"):
            response = await client.options(path)
            assert response.status_code == 200, path
            assert "allow" in response.headers
        assert (await client.get("/dicomweb")).status_code == 200
        openapi = await client.get("/openapi.json")
        assert openapi.status_code == 200
        document = openapi.json()
        validate(document)
        schemes = document["components"]["securitySchemes"]
        flow = schemes["oauth2"]["flows"]["clientCredentials"]
        assert flow["tokenUrl"] == "http://127.0.0.1/oauth/token"
        assert set(flow["scopes"]) == {
            "dicomweb.read",
            "dicomweb.write",
            "dicomweb.delete",
            "dicomweb.admin",
        }
        assert schemes["bearer"]["scheme"] == "bearer"
        paths = document["paths"]
        read = [{"oauth2": ["dicomweb.read"]}, {"bearer": []}]
        assert paths["/dicomweb/studies"]["get"]["security"] == read
        assert paths["/dicomweb/studies"]["post"]["security"][0] == {"oauth2": ["dicomweb.write"]}
        assert paths["/api/send"]["post"]["security"][0] == {"oauth2": ["dicomweb.admin"]}
        assert paths["/healthz"]["get"]["security"] == []
        assert paths["/dicomweb/studies"]["options"]["security"] == []


async def test_external_issuer_is_named_for_discovery(tmp_path: Path) -> None:
    config = auth_config(tmp_path, oauth_issuer="https://idp.example.org/realms/x")
    async for client in app_client(config):
        document = (await client.get("/openapi.json")).json()
        oauth = document["components"]["securitySchemes"]["oauth2"]
        assert oauth["type"] == "openIdConnect"
        assert oauth["openIdConnectUrl"] == (
            "https://idp.example.org/realms/x/.well-known/openid-configuration"
        )


async def test_cors_preflight_is_still_the_cors_answer(tmp_path: Path) -> None:
    viewer = "https://viewer.example.org"
    config = auth_config(tmp_path, cors_origins=viewer)
    async for client in app_client(config, "http://127.0.0.1"):
        preflight = await client.options(
            "/dicomweb/studies",
            headers={
                "Origin": viewer,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == viewer
        assert "GET" in preflight.headers["access-control-allow-methods"]
        assert preflight.headers["content-type"] != WADL
        # Without Access-Control-Request-Method it is an OPTIONS request like any other.
        plain = await client.options("/dicomweb/studies", headers={"Origin": viewer})
        assert plain.status_code == 200
        assert plain.headers["content-type"] == WADL
        assert plain.headers["access-control-allow-origin"] == viewer
        assert "allow" in plain.headers["access-control-expose-headers"].lower()
        # A page's own OPTIONS request is preflighted, and allowed.
        asked = await client.options(
            "/dicomweb/studies",
            headers={"Origin": viewer, "Access-Control-Request-Method": "OPTIONS"},
        )
        assert asked.status_code == 200
        assert "OPTIONS" in asked.headers["access-control-allow-methods"]
