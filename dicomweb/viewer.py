"""The OHIF viewer, served at / beside the DICOMweb service on the same origin.

The build (installed by `dicomweb viewer install`, see `viewer_install.py`) assumes it is
served at /: its index.html, bundles and manifest name their files from the root. This
module adds what a static file server lacks:

- `app-config.js` is generated: one DICOMweb data source whose roots are this server's
  service root on the page's own origin (so no CORS and no proxy), with the options
  this server supports (see `app_config_js`);
- the viewer's client-side routes (/viewer, /segmentation, ...) get index.html;
- .wasm is sent as application/wasm (streaming compilation needs it);
- index.html and app-config.js must be revalidated on every load, while the bundles,
  whose names carry a content hash, are cached for a year;
- every response makes the page cross-origin isolated (COOP same-origin, COEP
  require-corp, CORP same-origin): SharedArrayBuffer, and with it multithreaded WASM
  decoding, needs that.

With `--auth oauth2`, an external issuer and a viewer client id, the configuration
turns on OHIF's OpenID Connect login (authorization code with PKCE) at that issuer, and
OHIF sends the user's access token with its DICOMweb requests; the identity provider
redirects back to /callback, one of the viewer's routes. A page opened with a signed
link (`?token=`) gets no login: OHIF sends the link as its bearer token. Without a
viewer client the viewer has no login, and says so in its configuration
(`window.config.dicomweb`); signed links then open studies.

Without an installed viewer, / explains how to install it; DICOMweb works either way.
"""

from __future__ import annotations

import functools
import json
import posixpath
import re
from html import escape
from pathlib import Path, PurePosixPath
from typing import Any, Final

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.staticfiles import StaticFiles

from dicomweb.config import SERVICE_ROOT, Config
from dicomweb.viewer_install import PACKAGE, VERSION

__all__ = ["ISOLATION_HEADERS", "app_config_js", "oidc_clients", "serve_viewer", "viewer_auth"]

ISOLATION_HEADERS: Final = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
}
NO_CACHE: Final = "no-cache"
IMMUTABLE: Final = "public, max-age=31536000, immutable"
WADO_URI_ROOT: Final = "/wado"

# Bundle names carry a 16-digit content hash: 'app.bundle.0f6159c501addfe9.js',
# '0ddf166f7a343eda.wasm', 'a34f9d1faa5f3315.woff2'.
_HASHED: Final = re.compile(r"(?:^|[./])[0-9a-f]{16}\.(?:js|css|wasm|woff2?)$")
# Set explicitly: the platform's MIME table decides otherwise, and some map .js to
# text/plain, which browsers refuse to run as a module.
_MEDIA_TYPES: Final = {
    ".wasm": "application/wasm",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
}
_HTML_ACCEPT: Final = ("text/html", "text/*", "*/*")


def oidc_clients(config: Config) -> list[dict[str, str]]:
    """OHIF's `oidc` setting: the viewer's client at the external issuer, or none.

    OHIF 3.13 reads the first entry (`initUserManager` in the app bundle); with
    `response_type: "code"` it uses oidc-client-ts's UserManager, which runs the
    authorization code flow with PKCE, and puts `Bearer <access_token>` on its DICOMweb
    requests. `redirect_uri` and `post_logout_redirect_uri` are paths here, made
    absolute in the browser from the page's origin.
    """
    if config.auth != "oauth2" or not config.oauth_issuer or not config.viewer_client_id:
        return []
    return [
        {
            "authority": config.oauth_issuer,
            "client_id": config.viewer_client_id,
            "redirect_uri": "/callback",
            "post_logout_redirect_uri": "/",
            "response_type": "code",
            "scope": config.viewer_scope,
        }
    ]


def viewer_auth(config: Config) -> dict[str, Any]:
    """How the viewer is authorized, for `window.config.dicomweb` (OHIF ignores it)."""
    if config.auth != "oauth2":
        return {"auth": "none", "login": "not needed"}
    if oidc_clients(config):
        return {"auth": "oauth2", "login": "oidc", "issuer": config.oauth_issuer}
    if config.oauth_issuer:
        reason = "no viewer client is configured (--viewer-client-id)"
    else:
        reason = (
            "the built-in authorization server issues tokens to clients only "
            "(client credentials grant), not to users"
        )
    return {
        "auth": "oauth2",
        "login": "not available",
        "reason": reason,
        "signedLinks": "a signed link (dicomweb sign --study UID) opens its study",
    }


def app_config_js(settings: Config | None = None) -> str:
    """The viewer's configuration: this server as its one DICOMweb data source.

    The roots are absolute URLs made in the browser from `window.location.origin`, so
    the configuration is right for any host name, port or proxy the page is reached
    through, and requests stay same-origin. Under `--auth oauth2` with a viewer client,
    OHIF's `oidc` login (see `oidc_clients`), except on a page opened with a signed link.
    """
    settings = settings or Config()
    data_source = {
        "friendlyName": "dicomweb",
        "name": "dicomweb",
        "qidoRoot": SERVICE_ROOT,
        "wadoRoot": SERVICE_ROOT,
        "wadoUriRoot": WADO_URI_ROOT,
        "qidoSupportsIncludeField": True,
        "imageRendering": "wadors",
        # Series thumbnails from GET .../series/{uid}/thumbnail (PS3.18 10.4.1.1.3).
        "thumbnailRendering": "thumbnail",
        "thumbnailRequestStrategy": "fetch",
        # Series metadata is fetched when a series is opened, not all at once.
        "enableStudyLazyLoad": True,
        # The server supports both (conformance statement 4.2.3).
        "supportsFuzzyMatching": True,
        "supportsWildcard": True,
        "supportsReject": False,
        "staticWado": False,
        # BulkDataURIs in metadata are absolute URLs of this server.
        "bulkDataURI": {"enabled": True},
        "omitQuotationForMultipartRequest": True,
        # Uploads go through STOW-RS: a way to add data from the study list.
        "dicomUploadEnabled": True,
    }
    config: dict[str, Any] = {
        "routerBasename": "/",
        "showStudyList": True,
        "extensions": [],
        "modes": [],
        "customizationService": {},
        "maxNumberOfWebWorkers": 3,
        "showWarningMessageForCrossOrigin": True,
        "showCPUFallbackMessage": True,
        "showLoadingIndicator": True,
        "strictZSpacingForVolumeViewport": True,
        "maxNumRequests": {"interaction": 100, "thumbnail": 75, "prefetch": 25},
        # Loads the remaining slices of the displayed series in the background, so
        # scrolling does not wait for the network.
        "studyPrefetcher": {
            "enabled": True,
            "displaySetsCount": 1,
            "maxNumPrefetchRequests": 10,
            "order": "closest",
        },
        "dicomweb": viewer_auth(settings),
        "defaultDataSourceName": "dicomweb",
        "dataSources": [
            {
                "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
                "sourceName": "dicomweb",
                "configuration": data_source,
            }
        ],
    }
    return (
        "/* Generated by dicomweb: the OHIF viewer's configuration for this server. */\n"
        f"window.config = {json.dumps(config, indent=2)};\n"
        "(function (source) {\n"
        "  var origin = window.location.origin;\n"
        "  source.qidoRoot = origin + source.qidoRoot;\n"
        "  source.wadoRoot = origin + source.wadoRoot;\n"
        "  source.wadoUriRoot = origin + source.wadoUriRoot;\n"
        "})(window.config.dataSources[0].configuration);\n"
        # OHIF sends every route of a configured login through it, a signed link's too:
        # a page opened with ?token= (the key in any case, as OHIF reads it) gets none.
        "(function (clients) {\n"
        "  var origin = window.location.origin;\n"
        "  var keys = Array.from(new URLSearchParams(window.location.search).keys());\n"
        "  if (!clients.length || keys.some(function (key) {\n"
        "    return key.toLowerCase() === 'token';\n"
        "  })) return;\n"
        "  clients.forEach(function (client) {\n"
        "    client.redirect_uri = origin + client.redirect_uri;\n"
        "    client.post_logout_redirect_uri = origin + client.post_logout_redirect_uri;\n"
        "  });\n"
        "  window.config.oidc = clients;\n"
        f"}})({json.dumps(oidc_clients(settings), indent=2)});\n"
    )


@functools.lru_cache(maxsize=4)
def _app_config_bytes(config: Config) -> bytes:
    return app_config_js(config).encode()


@functools.lru_cache(maxsize=4)
def _files(config: Config) -> tuple[StaticFiles, Path]:
    """The viewer's files for `config`, found once (resolving the path touches the disk)."""
    directory = config.resolved_viewer_dir
    # check_dir=False: the viewer may be installed after the server started.
    return StaticFiles(directory=directory, check_dir=False), directory


async def serve_viewer(request: Request) -> Response:
    """GET /{path}: a file of the viewer, its generated configuration, or index.html."""
    path: str = request.path_params["path"]
    config: Config = request.app.state.config
    if path == "app-config.js":
        response: Response = Response(_app_config_bytes(config), media_type="text/javascript")
        return _finish(response, NO_CACHE)
    files, directory = _files(config)
    # Pure string work; StaticFiles refuses whatever resolves outside its directory.
    relative = posixpath.normpath(path or ".")
    try:
        response = await files.get_response(relative, request.scope)
    except HTTPException as exc:
        if exc.status_code != 404 or not _is_navigation(request, path):
            raise
    else:
        cache = IMMUTABLE if _HASHED.search(relative) else NO_CACHE
        media_type = _MEDIA_TYPES.get(PurePosixPath(relative).suffix)
        if media_type and response.status_code == 200:
            response.headers["content-type"] = media_type
        return _finish(response, cache)
    # A route of the viewer's own (/viewer?StudyInstanceUIDs=...): the page decides.
    try:
        response = await files.get_response("index.html", request.scope)
    except HTTPException as exc:
        if exc.status_code != 404:
            raise
        status = 200 if path == "" else 404
        response = HTMLResponse(_not_installed_page(directory), status)
    return _finish(response, NO_CACHE)


def _is_navigation(request: Request, path: str) -> bool:
    """Whether a missing file should get index.html: a page load of a path that does not
    name a file (no dot in its last segment), outside the DICOMweb service root.

    Scripts, styles and images that are missing stay 404, so that a broken install
    shows as such rather than as HTML parsed as JavaScript.
    """
    if path == SERVICE_ROOT.strip("/") or "." in path.rsplit("/", 1)[-1]:
        return False
    accept = request.headers.get("accept", "*/*")
    return any(media_type in accept for media_type in _HTML_ACCEPT)


def _finish(response: Response, cache_control: str) -> Response:
    response.headers["Cache-Control"] = cache_control
    response.headers.update(ISOLATION_HEADERS)
    return response


def _not_installed_page(directory: Path) -> str:
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>dicomweb</title></head>
<body style="font-family: sans-serif; max-width: 42em; margin: 3em auto">
<h1>dicomweb</h1>
<p>The DICOMweb service is running at <a href="{SERVICE_ROOT}/studies">{SERVICE_ROOT}</a>.</p>
<p>The OHIF viewer is not installed. To install it, run</p>
<pre>dicomweb viewer install</pre>
<p>which downloads {escape(PACKAGE)} {escape(VERSION)} from the npm registry into
<code>{escape(str(directory))}</code> (or another directory: <code>--viewer-dir</code>),
then reload this page. The server does not need a restart.</p>
</body></html>
"""
