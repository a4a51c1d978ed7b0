"""`dicomweb viewer install` (viewer_install.py) with stand-in tarballs and a local registry."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import dicomweb
from dicomweb import viewer_install
from dicomweb.config import Config
from dicomweb.viewer_install import (
    MARKER,
    VERSION,
    InstallError,
    default_viewer_dir,
    install_viewer,
    installed_version,
)

REPO = Path(__file__).parent.parent.parent

BUILD = {
    "package/package.json": b'{"name": "@ohif/app"}',
    "package/dist/index.html": b"<!doctype html>",
    "package/dist/app.bundle.0f6159c501addfe9.js": b"console.log('app');",
    "package/dist/app.bundle.0f6159c501addfe9.js.map": b"{}" * 1000,
    "package/dist/app-config.js": b"window.config = {};",
    "package/dist/_headers": b"/* header",
    "package/dist/serve.json": b"{}",
    "package/dist/sw.js": b'precache(["/ort/ort-wasm.wasm"])',
    "package/dist/ort/ort-wasm.wasm": b"\0asm" * 1000,
    "package/dist/ort/esm/ort.min.js": b"ort",
    "package/dist/assets/favicon.ico": b"ico",
}


def tarball(path: Path, files: dict[str, bytes] = BUILD) -> str:
    """Write a gzipped tarball of `files`; return its npm integrity string."""
    with tarfile.open(path, "w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 499162500  # npm's fixed date, 1985-10-26
            archive.addfile(info, io.BytesIO(data))
    digest = hashlib.sha512(path.read_bytes()).digest()
    return "sha512-" + base64.b64encode(digest).decode()


def quiet(message: str) -> None:
    pass


def test_install_from_tarball_prunes(tmp_path: Path) -> None:
    integrity = tarball(tmp_path / "app.tgz")
    target = tmp_path / "viewer_static"
    report = install_viewer(
        target, tarball=tmp_path / "app.tgz", integrity=integrity, log=quiet, force=True
    )
    assert report is not None
    installed = sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file())
    assert installed == [
        MARKER,
        "app.bundle.0f6159c501addfe9.js",
        "assets/favicon.ico",
        "index.html",
        "sw.js",
    ]
    assert not report.onnx_runtime_kept
    assert report.installed_files == 5
    assert report.extracted_bytes == sum(
        len(data) for name, data in BUILD.items() if name.startswith("package/dist/")
    )
    assert report.installed_bytes < report.extracted_bytes
    assert installed_version(target) == VERSION
    assert json.loads((target / MARKER).read_text())["integrity"] == integrity
    # Fresh modification times: ETags of a new version's files differ from the old ones.
    assert (target / "index.html").stat().st_mtime > 499162500
    # Installed already: nothing to do.
    assert (
        install_viewer(target, tarball=tmp_path / "app.tgz", integrity=integrity, log=quiet) is None
    )


def test_onnx_runtime_kept_when_a_bundle_uses_it(tmp_path: Path) -> None:
    files = dict(BUILD)
    files["package/dist/8478.bundle.4520037e6185b95f.js"] = b'env.wasm.wasmPaths = "/ort/";'
    integrity = tarball(tmp_path / "app.tgz", files)
    report = install_viewer(
        tmp_path / "viewer", tarball=tmp_path / "app.tgz", integrity=integrity, log=quiet
    )
    assert report is not None and report.onnx_runtime_kept
    assert (tmp_path / "viewer" / "ort" / "ort-wasm.wasm").is_file()


def test_wrong_integrity_leaves_the_installed_viewer(tmp_path: Path) -> None:
    integrity = tarball(tmp_path / "app.tgz")
    target = tmp_path / "viewer"
    install_viewer(target, tarball=tmp_path / "app.tgz", integrity=integrity, log=quiet)
    other = dict(BUILD, **{"package/dist/index.html": b"<!doctype html><p>changed"})
    tarball(tmp_path / "other.tgz", other)
    with pytest.raises(InstallError, match="is not @ohif/app@"):
        install_viewer(
            target, tarball=tmp_path / "other.tgz", integrity=integrity, log=quiet, force=True
        )
    assert (target / "index.html").read_bytes() == b"<!doctype html>"


def test_not_a_viewer_build(tmp_path: Path) -> None:
    integrity = tarball(tmp_path / "app.tgz", {"package/dist/other.js": b"x"})
    with pytest.raises(InstallError, match=r"no dist/index\.html"):
        install_viewer(tmp_path / "v", tarball=tmp_path / "app.tgz", integrity=integrity, log=quiet)
    assert not (tmp_path / "v").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["app.tgz"]


def test_unsafe_members_are_refused(tmp_path: Path) -> None:
    integrity = tarball(tmp_path / "app.tgz", {**BUILD, "package/dist/../../evil": b"x"})
    with pytest.raises(InstallError, match="outside"):
        install_viewer(tmp_path / "v", tarball=tmp_path / "app.tgz", integrity=integrity, log=quiet)
    assert not (tmp_path / "v").exists()
    assert not (tmp_path / "evil").exists()


class Registry:
    """A local npm registry: version metadata and one tarball, counting downloads."""

    def __init__(self, tarball: bytes, integrity: str) -> None:
        self.tarball = tarball
        self.integrity = integrity
        self.downloads = 0
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == f"/@ohif%2Fapp/{VERSION}":
                    dist = {"tarball": f"{registry.url}/app.tgz", "integrity": registry.integrity}
                    body = json.dumps({"version": VERSION, "dist": dist}).encode()
                elif self.path == "/app.tgz":
                    registry.downloads += 1
                    body = registry.tarball
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    integrity = tarball(tmp_path / "published.tgz")
    served = Registry((tmp_path / "published.tgz").read_bytes(), integrity)
    thread = threading.Thread(target=served.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield served
    finally:
        served.server.shutdown()
        served.server.server_close()


def test_download_verify_and_cache(tmp_path: Path, registry: Registry) -> None:
    cache = tmp_path / "cache"
    options = {"registry": registry.url, "cache_dir": cache, "integrity": registry.integrity}
    report = install_viewer(tmp_path / "one", log=quiet, **options)  # type: ignore[arg-type]
    assert report is not None and report.downloaded
    assert registry.downloads == 1
    assert (tmp_path / "one" / "index.html").is_file()
    # The cached tarball serves the next install, without the network.
    registry.server.shutdown()
    again = install_viewer(tmp_path / "two", log=quiet, **options)  # type: ignore[arg-type]
    assert again is not None and not again.downloaded
    assert registry.downloads == 1


def test_registry_metadata_must_match_the_pin(tmp_path: Path, registry: Registry) -> None:
    pinned = registry.integrity
    registry.integrity = "sha512-" + base64.b64encode(bytes(64)).decode()
    with pytest.raises(InstallError, match="refusing"):
        install_viewer(
            tmp_path / "v", registry=registry.url, cache_dir=tmp_path, integrity=pinned, log=quiet
        )
    assert registry.downloads == 0


def test_download_must_match_the_pin(tmp_path: Path, registry: Registry) -> None:
    registry.tarball = registry.tarball[:-10] + bytes(10)
    with pytest.raises(InstallError, match="does not match"):
        install_viewer(
            tmp_path / "v",
            registry=registry.url,
            cache_dir=tmp_path / "cache",
            integrity=registry.integrity,
            log=quiet,
        )
    assert list((tmp_path / "cache").iterdir()) == []
    assert not (tmp_path / "v").exists()


def test_unreachable_registry_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(InstallError, match="--tarball"):
        install_viewer(tmp_path / "v", registry="http://127.0.0.1:9", cache_dir=tmp_path, log=quiet)


def test_default_viewer_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Run from this checkout: viewer_static/ beside pyproject.toml.
    assert default_viewer_dir() == REPO / "viewer_static"
    # Installed with pip: the user's data directory.
    site = tmp_path / "site-packages" / "dicomweb"
    site.mkdir(parents=True)
    monkeypatch.setattr(dicomweb, "__file__", str(site / "__init__.py"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert default_viewer_dir() == tmp_path / "data" / "dicomweb" / "viewer_static"
    monkeypatch.setenv("XDG_DATA_HOME", "relative/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    expected = tmp_path / "home" / ".local" / "share" / "dicomweb" / "viewer_static"
    assert default_viewer_dir() == expected


def test_viewer_dir_setting(tmp_path: Path) -> None:
    config = Config.from_sources(environ={"DICOMWEB_VIEWER_DIR": str(tmp_path / "v")})
    assert config.resolved_viewer_dir == tmp_path / "v"
    flag = Config.from_sources({"viewer_dir": str(tmp_path / "w")}, environ={})
    assert flag.resolved_viewer_dir == tmp_path / "w"
    assert Config().resolved_viewer_dir == default_viewer_dir()


def test_cli_refuses_a_foreign_tarball(tmp_path: Path) -> None:
    tarball(tmp_path / "app.tgz")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "dicomweb",
            "viewer",
            "install",
            "--viewer-dir",
            str(tmp_path / "viewer"),
            "--tarball",
            str(tmp_path / "app.tgz"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert f"is not @ohif/app@{VERSION}" in result.stderr
    assert viewer_install.INTEGRITY in result.stderr
    assert not (tmp_path / "viewer").exists()
