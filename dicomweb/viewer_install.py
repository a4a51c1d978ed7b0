"""`dicomweb viewer install`: the OHIF viewer's prebuilt files, from the npm registry.

The package @ohif/app ships a complete production build in `dist/`. The version and
the package's integrity (the npm registry's Subresource Integrity string, SHA-512 of
the tarball) are pinned here: a download that does not hash to it is refused, whatever
the registry's metadata says, so what is installed is what was reviewed.

The tarball is kept in a cache directory, so a second install (another data
directory, a reinstall, a test run) needs no network; `--tarball` installs from a file
fetched elsewhere, e.g. with `npm pack @ohif/app@3.13.2`.

Only `package/dist/` is extracted, without what the server never sends: source maps,
the shipped `app-config.js` (the server generates its own), static-host rules for
other servers, and the ONNX runtime files in `ort/` when no bundle refers to them (in
3.13.2 only the unused service-worker precache list does). The build goes into a
temporary directory beside the target and replaces it by a rename, so a failed
install leaves the previous one in place.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from http.client import HTTPResponse
from pathlib import Path
from typing import Final, cast

import dicomweb

__all__ = [
    "INTEGRITY",
    "PACKAGE",
    "VERSION",
    "InstallError",
    "InstallReport",
    "default_cache_dir",
    "default_viewer_dir",
    "install_viewer",
    "installed_version",
]

PACKAGE: Final = "@ohif/app"
VERSION: Final = "3.13.2"
# npm's integrity string of the tarball (`npm view @ohif/app@3.13.2 dist.integrity`).
INTEGRITY: Final = (
    "sha512-"
    "WZdxmpmG7rqFgW9ZJLcbgr3XCtLi1KDNPoMaeY5PPe6j4G4fjEjjkycZM6C6Zk2F87BKxFfpq+jd5xXZB9E8EA=="
)
DEFAULT_REGISTRY: Final = "https://registry.npmjs.org"
MARKER: Final = ".dicomweb-viewer.json"

_DIST: Final = "package/dist/"
# Files of the build that the server never sends.
_NOT_SERVED: Final = frozenset({"app-config.js", "_headers", "_redirects", "serve.json"})
_ONNX_RUNTIME: Final = "ort/"
# The service worker's precache list names every file; it is never registered
# (init-service-worker.js only unregisters), so it does not count as a use.
_PRECACHE_LIST: Final = "sw.js"
_CHUNK: Final = 1 << 20


class InstallError(Exception):
    """The viewer could not be installed; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class InstallReport:
    """What an install did."""

    directory: Path
    version: str
    tarball: Path
    downloaded: bool
    extracted_bytes: int
    installed_bytes: int
    installed_files: int
    onnx_runtime_kept: bool


def default_viewer_dir() -> Path:
    """Where `dicomweb viewer install` puts the viewer and `dicomweb serve` looks for it.

    Run from a checkout (the package directory sits beside pyproject.toml, as with
    `pip install -e .`): `viewer_static/` in the checkout. Installed with pip: the
    user's data directory, `$XDG_DATA_HOME/dicomweb/viewer_static` (by default
    `~/.local/share/dicomweb/viewer_static`), since site-packages may not be writable
    and is replaced on upgrade.
    """
    checkout = Path(dicomweb.__file__).resolve().parent.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "dicomweb").is_dir():
        return checkout / "viewer_static"
    return _xdg("XDG_DATA_HOME", Path.home() / ".local" / "share") / "dicomweb" / "viewer_static"


def default_cache_dir() -> Path:
    """Where downloaded tarballs are kept: `$XDG_CACHE_HOME/dicomweb` (~/.cache/dicomweb)."""
    return _xdg("XDG_CACHE_HOME", Path.home() / ".cache") / "dicomweb"


def _xdg(variable: str, fallback: Path) -> Path:
    value = os.environ.get(variable, "")
    # The XDG specification says relative values are to be ignored.
    return Path(value) if value and Path(value).is_absolute() else fallback


def installed_version(directory: Path) -> str | None:
    """The version installed in `directory` by this command, or None."""
    try:
        marker = json.loads((directory / MARKER).read_text())
    except (OSError, ValueError):
        return None
    version = marker.get("version") if isinstance(marker, dict) else None
    return version if isinstance(version, str) else None


def install_viewer(
    directory: Path,
    *,
    tarball: Path | None = None,
    registry: str = DEFAULT_REGISTRY,
    cache_dir: Path | None = None,
    force: bool = False,
    integrity: str = INTEGRITY,
    log: Callable[[str], object] = lambda message: print(message, file=sys.stderr),
) -> InstallReport | None:
    """Install the pinned viewer build into `directory`.

    Returns None when that version is installed there already (unless `force`).
    Raises InstallError when the tarball cannot be had or does not match `integrity`.
    """
    if (
        not force
        and installed_version(directory) == VERSION
        and (directory / "index.html").exists()
    ):
        log(f"OHIF viewer {VERSION} is installed in {directory}")
        return None
    downloaded = False
    if tarball is None:
        cache = cache_dir or default_cache_dir()
        tarball = cache / f"ohif-app-{VERSION}.tgz"
        if not (tarball.is_file() and _matches(tarball, integrity)):
            _download(registry, integrity, tarball, log)
            downloaded = True
    elif not tarball.is_file():
        raise InstallError(f"no such file: {tarball}")
    elif not _matches(tarball, integrity):
        raise InstallError(f"{tarball} is not {PACKAGE}@{VERSION}: its hash is not {integrity}")
    log(f"extracting {PACKAGE}@{VERSION} into {directory}")
    try:
        extracted, installed, files, kept = _extract(tarball, directory, integrity)
    except (tarfile.TarError, OSError) as exc:
        raise InstallError(f"cannot install {tarball} into {directory}: {exc}") from exc
    return InstallReport(directory, VERSION, tarball, downloaded, extracted, installed, files, kept)


def _sri(path: Path) -> str:
    digest = hashlib.sha512()
    with path.open("rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return "sha512-" + base64.b64encode(digest.digest()).decode()


def _matches(path: Path, integrity: str) -> bool:
    return _sri(path) == integrity


def _metadata_url(registry: str) -> str:
    # Scoped names are one path segment with the slash escaped (as npm itself asks).
    return f"{registry.rstrip('/')}/{urllib.parse.quote(PACKAGE, safe='@')}/{VERSION}"


def _fetch(url: str) -> HTTPResponse:
    """GET `url` (http or https: the callers check the scheme)."""
    headers = {"User-Agent": f"dicomweb/{dicomweb.__version__}"}
    try:
        response = urllib.request.urlopen(  # noqa: S310
            urllib.request.Request(url, headers=headers),  # noqa: S310
            timeout=60,
        )
        return cast(HTTPResponse, response)
    except OSError as exc:
        raise InstallError(
            f"cannot download {url}: {exc}. Without network access, fetch the package "
            f"elsewhere (npm pack {PACKAGE}@{VERSION}) and pass it with --tarball"
        ) from exc


def _download(registry: str, integrity: str, target: Path, log: Callable[[str], object]) -> None:
    if urllib.parse.urlsplit(registry).scheme not in ("http", "https"):
        raise InstallError(f"the registry must be an http(s) URL, not {registry!r}")
    with _fetch(_metadata_url(registry)) as response:
        try:
            metadata = json.load(response)
            url = metadata["dist"]["tarball"]
            published = metadata["dist"].get("integrity")
        except (ValueError, KeyError, TypeError) as exc:
            raise InstallError(
                f"the registry's metadata of {PACKAGE}@{VERSION} is malformed"
            ) from exc
    if published != integrity:
        raise InstallError(
            f"the registry publishes {PACKAGE}@{VERSION} with integrity {published}, "
            f"not the pinned {integrity}: refusing to install it"
        )
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise InstallError(f"the registry gives a tarball URL that is not http(s): {url!r}")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    log(f"downloading {url}")
    with _fetch(url) as response, partial.open("wb") as file:
        shutil.copyfileobj(response, file, _CHUNK)
    if not _matches(partial, integrity):
        partial.unlink()
        raise InstallError(f"the download of {url} does not match the pinned integrity {integrity}")
    partial.replace(target)


def _extract(tarball: Path, directory: Path, integrity: str) -> tuple[int, int, int, bool]:
    """Extract dist/ into a temporary directory beside `directory`, prune, then swap it in.

    Returns the bytes in dist/, the bytes and files installed, and whether ort/ was kept.
    """
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}-", dir=directory.parent))
    try:
        extracted = 0
        with tarfile.open(tarball, "r:gz") as archive:
            members = []
            for member in archive.getmembers():
                if not member.name.startswith(_DIST) or not (member.isfile() or member.isdir()):
                    continue
                extracted += member.size
                relative = member.name[len(_DIST) :]
                if relative.endswith(".map") or relative in _NOT_SERVED:
                    continue
                member.name = relative
                members.append(member)
            # The "data" filter refuses absolute paths, links out of the tree and devices.
            archive.extractall(staging, members=members, filter="data")
        if not (staging / "index.html").is_file():
            raise InstallError(f"{tarball} has no dist/index.html: not the OHIF viewer build")
        # npm tarballs carry one fixed date for every file; ETags derive from the
        # modification time and size, so without this a new version's index.html of
        # the same size would look unchanged to browsers revalidating it.
        for path in staging.rglob("*"):
            os.utime(path)
        kept = _onnx_runtime_used(staging)
        if not kept:
            shutil.rmtree(staging / _ONNX_RUNTIME, ignore_errors=True)
        marker = {"package": PACKAGE, "version": VERSION, "integrity": integrity}
        (staging / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        files = [p for p in staging.rglob("*") if p.is_file()]
        installed = sum(p.stat().st_size for p in files)
        staging.chmod(0o755)  # mkdtemp makes it private; the build is public files
        _swap(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return extracted, installed, len(files), kept


def _onnx_runtime_used(build: Path) -> bool:
    """Whether a script of the build refers to the ONNX runtime's files in ort/."""
    if not (build / _ONNX_RUNTIME).is_dir():
        return False
    needle = f"/{_ONNX_RUNTIME}".encode()
    return any(
        needle in script.read_bytes()
        for script in build.glob("*.js")
        if script.name != _PRECACHE_LIST
    )


def _swap(staging: Path, directory: Path) -> None:
    old = None
    if directory.exists():
        old = directory.with_name(f".{directory.name}-old-{os.getpid()}")
        directory.rename(old)
    staging.rename(directory)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
