"""The viewer at / (viewer.py) through the ASGI app, with a stand-in for the OHIF build."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pydicom
import pytest

from dicomweb.app import create_app
from dicomweb.config import Config
from dicomweb.sample import write_sample
from dicomweb.viewer import ISOLATION_HEADERS
from tests.dicomfactory import CONTENT_TYPE, multipart

INDEX = b"<!doctype html><title>OHIF Viewer</title><script src=/app-config.js></script>"
BUNDLE = "app.bundle.0f6159c501addfe9.js"
WASM = "0ddf166f7a343eda.wasm"
# Frame of Reference UID, Image Position and Orientation (Patient), Pixel Spacing, Rows,
# Columns, Instance Number, Slice Thickness.
MPR_TAGS = (
    "00200052",
    "00200032",
    "00200037",
    "00280030",
    "00280010",
    "00280011",
    "00200013",
    "00180050",
)
NAVIGATION = {"accept": "text/html,application/xhtml+xml,*/*;q=0.8"}


def make_build(directory: Path) -> Path:
    """The files of an OHIF build that the server treats differently."""
    (directory / "assets").mkdir(parents=True)
    (directory / "index.html").write_bytes(INDEX)
    (directory / BUNDLE).write_text("console.log('bundle');")
    (directory / WASM).write_bytes(b"\0asm\1\0\0\0")
    (directory / "manifest.json").write_text("{}")
    (directory / "assets" / "favicon.ico").write_bytes(b"ico")
    # The shipped configuration points elsewhere; the generated one must win.
    (directory / "app-config.js").write_text("window.config = {shipped: true};")
    return directory


async def viewer_client(viewer_dir: Path, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    config = Config(
        data_dir=tmp_path / "data",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'index.sqlite3'}",
        dimse_port=0,
        viewer_dir=str(viewer_dir),
    )
    app = create_app(config)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            yield c


@pytest.fixture
async def viewer(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async for c in viewer_client(make_build(tmp_path / "viewer"), tmp_path):
        yield c


@pytest.fixture
async def bare(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """A server whose viewer directory is empty: the viewer is not installed."""
    (tmp_path / "viewer").mkdir()
    async for c in viewer_client(tmp_path / "viewer", tmp_path):
        yield c


def assert_isolated(response: httpx.Response) -> None:
    for name, value in ISOLATION_HEADERS.items():
        assert response.headers[name] == value, name


def generated_config(text: str) -> dict[str, object]:
    start = text.index("window.config = ") + len("window.config = ")
    end = text.index(";\n(function")
    config: dict[str, object] = json.loads(text[start:end])
    return config


async def test_index_at_root(viewer: httpx.AsyncClient) -> None:
    response = await viewer.get("/", headers=NAVIGATION)
    assert response.status_code == 200
    assert response.content == INDEX
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["cache-control"] == "no-cache"
    assert_isolated(response)


@pytest.mark.parametrize(
    "path",
    ["/viewer?StudyInstanceUIDs=1.2.3", "/viewer/dicomweb", "/segmentation", "/local"],
)
async def test_viewer_routes_get_index(viewer: httpx.AsyncClient, path: str) -> None:
    response = await viewer.get(path, headers=NAVIGATION)
    assert response.status_code == 200
    assert response.content == INDEX
    assert response.headers["cache-control"] == "no-cache"
    assert_isolated(response)


async def test_generated_app_config(viewer: httpx.AsyncClient) -> None:
    response = await viewer.get("/app-config.js")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    assert response.headers["cache-control"] == "no-cache"
    assert_isolated(response)
    assert "shipped" not in response.text
    config = generated_config(response.text)
    [source] = config["dataSources"]  # type: ignore[misc]
    assert source["namespace"] == "@ohif/extension-default.dataSourcesModule.dicomweb"
    assert config["defaultDataSourceName"] == source["sourceName"]
    settings = source["configuration"]
    assert settings["qidoRoot"] == settings["wadoRoot"] == "/dicomweb"
    assert settings["wadoUriRoot"] == "/wado"
    assert settings["imageRendering"] == "wadors"
    assert settings["thumbnailRendering"] in ("rendered", "thumbnail")
    assert settings["enableStudyLazyLoad"] is True
    assert settings["supportsFuzzyMatching"] is True
    assert settings["supportsWildcard"] is True
    assert settings["bulkDataURI"] == {"enabled": True}
    # The roots become absolute on the page's own origin.
    assert "source.qidoRoot = origin + source.qidoRoot" in response.text


async def test_hashed_bundles_are_cached_for_long(viewer: httpx.AsyncClient) -> None:
    bundle = await viewer.get(f"/{BUNDLE}")
    assert bundle.status_code == 200
    assert bundle.headers["content-type"] == "text/javascript; charset=utf-8"
    assert bundle.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert_isolated(bundle)
    wasm = await viewer.get(f"/{WASM}")
    assert wasm.headers["content-type"] == "application/wasm"
    assert wasm.headers["cache-control"] == "public, max-age=31536000, immutable"
    for path in ("/manifest.json", "/assets/favicon.ico"):
        other = await viewer.get(path)
        assert other.status_code == 200
        assert other.headers["cache-control"] == "no-cache"


async def test_revalidation(viewer: httpx.AsyncClient) -> None:
    first = await viewer.get("/", headers=NAVIGATION)
    again = await viewer.get("/", headers={**NAVIGATION, "if-none-match": first.headers["etag"]})
    assert again.status_code == 304
    assert again.headers["cache-control"] == "no-cache"
    assert_isolated(again)


async def test_head(viewer: httpx.AsyncClient) -> None:
    response = await viewer.head(f"/{BUNDLE}")
    assert response.status_code == 200
    assert response.content == b""


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/missing.bundle.0123456789abcdef.js", {}),
        ("/assets/missing.png", NAVIGATION),
        ("/viewer", {"accept": "application/json"}),
    ],
)
async def test_missing_files_are_not_index(
    viewer: httpx.AsyncClient, path: str, headers: dict[str, str]
) -> None:
    response = await viewer.get(path, headers=headers)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


async def test_no_escape_from_the_viewer_directory(
    viewer: httpx.AsyncClient, tmp_path: Path
) -> None:
    (tmp_path / "secret.txt").write_text("secret")
    for path in ("/../secret.txt", "/%2e%2e/secret.txt", "/assets/%2e%2e/%2e%2e/secret.txt"):
        response = await viewer.get(path)
        assert b"secret" not in response.content, path


async def test_dicomweb_and_health_are_not_the_viewer(viewer: httpx.AsyncClient) -> None:
    assert (await viewer.get("/dicomweb/studies", headers=NAVIGATION)).status_code == 204
    health = await viewer.get("/healthz")
    assert health.status_code == 200
    assert health.json() == {"index": "ok", "storage": "ok"}
    unknown = await viewer.get("/dicomweb/nothing-here", headers=NAVIGATION)
    assert unknown.status_code == 404


async def test_without_viewer_root_explains_the_install(bare: httpx.AsyncClient) -> None:
    response = await bare.get("/", headers=NAVIGATION)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert "dicomweb viewer install" in response.text
    assert "/dicomweb" in response.text
    assert_isolated(response)
    route = await bare.get("/viewer?StudyInstanceUIDs=1.2.3", headers=NAVIGATION)
    assert route.status_code == 404
    assert "dicomweb viewer install" in route.text
    assert (await bare.get(f"/{BUNDLE}")).status_code == 404
    # DICOMweb works without the viewer.
    assert (await bare.get("/dicomweb/studies")).status_code == 204
    assert (await bare.get("/healthz")).status_code == 200


async def test_viewer_installed_while_running(bare: httpx.AsyncClient, tmp_path: Path) -> None:
    assert "dicomweb viewer install" in (await bare.get("/", headers=NAVIGATION)).text
    make_build(tmp_path / "viewer")
    response = await bare.get("/", headers=NAVIGATION)
    assert response.status_code == 200
    assert response.content == INDEX


async def test_metadata_carries_what_mpr_needs(client: httpx.AsyncClient, tmp_path: Path) -> None:
    """Series metadata as the viewer asks for it has the attributes of a reconstruction."""
    files = write_sample(tmp_path / "sample", slices=2, size=64, syntaxes=["explicit"])
    body = multipart([path.read_bytes() for path in files])
    stored = await client.post(
        "/dicomweb/studies", content=body, headers={"content-type": CONTENT_TYPE}
    )
    assert stored.status_code == 200
    ds = pydicom.dcmread(files[0])
    url = f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/metadata"
    response = await client.get(url, headers={"accept": "application/dicom+json"})
    assert response.status_code == 200
    for instance in response.json():
        for tag in MPR_TAGS:
            assert instance[tag]["Value"], tag
        assert instance["7FE00010"]["BulkDataURI"].startswith("http://testserver/dicomweb/")
