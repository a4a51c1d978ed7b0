"""Command line of the security layer: serve flags, `clients`, `keys` and `sign`.

dicomweb clients add NAME --scopes dicomweb.read,dicomweb.write [--study UID] [--json]
dicomweb clients list [--json]
dicomweb clients remove NAME
dicomweb keys rotate
dicomweb sign --study UID --expires 1h [--base-url URL] [--json]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import Any

import orjson

from dicomweb.auth.clients import ClientError
from dicomweb.auth.links import parse_duration
from dicomweb.auth.protocol import GuardedHttpToolsProtocol
from dicomweb.auth.security import Security, check_security_settings, is_loopback
from dicomweb.config import Config
from dicomweb.resources import is_valid_uid

log = logging.getLogger("dicomweb")

COMMANDS = frozenset({"clients", "keys", "sign"})


def add_serve_flags(parser: argparse.ArgumentParser) -> None:
    """Flags of `serve` for authentication and the edge; each has a DICOMWEB_* variable."""
    group = parser.add_argument_group("security (README: Security)")
    group.add_argument(
        "--auth", choices=["none", "oauth2"], help="authentication (DICOMWEB_AUTH; none)"
    )
    group.add_argument(
        "--oauth-issuer",
        metavar="URL",
        help="the identity provider's issuer URL; without it --auth oauth2 runs the built-in "
        "authorization server (DICOMWEB_OAUTH_ISSUER)",
    )
    group.add_argument(
        "--oauth-audience", help="audience tokens must name (DICOMWEB_OAUTH_AUDIENCE; dicomweb)"
    )
    group.add_argument(
        "--oauth-scope-claim",
        dest="oauth_scope_claims",
        action="append",
        metavar="CLAIM",
        help="claim holding scopes, e.g. scp or realm_access.roles; repeatable "
        "(DICOMWEB_OAUTH_SCOPE_CLAIMS; scope,scp)",
    )
    group.add_argument(
        "--viewer-client-id",
        metavar="ID",
        help="the viewer's client at the --oauth-issuer identity provider: the viewer logs "
        "users in there (DICOMWEB_VIEWER_CLIENT_ID; none: no login in the viewer)",
    )
    group.add_argument(
        "--viewer-scope",
        metavar="SCOPES",
        help="scopes the viewer asks for (DICOMWEB_VIEWER_SCOPE; 'openid dicomweb.read')",
    )
    group.add_argument(
        "--public-url",
        metavar="URL",
        help="the server's external URL: the built-in issuer's name, the base of signed "
        "links (DICOMWEB_PUBLIC_URL; http://HOST:PORT)",
    )
    group.add_argument(
        "--cors-origin",
        dest="cors_origins",
        action="append",
        metavar="ORIGIN",
        help="an origin browsers may call from, e.g. https://viewer.example.org; repeatable "
        "(DICOMWEB_CORS_ORIGINS; same origin only)",
    )
    group.add_argument(
        "--audit-log", metavar="FILE", help="append audit JSON lines here (DICOMWEB_AUDIT_LOG)"
    )
    group.add_argument("--tls-cert", metavar="PEM", help="serve HTTPS (DICOMWEB_TLS_CERT)")
    group.add_argument("--tls-key", metavar="PEM", help="its private key (DICOMWEB_TLS_KEY)")
    group.add_argument(
        "--client-timeout",
        dest="client_timeout_seconds",
        type=float,
        metavar="SECONDS",
        help="how long a client may stall (DICOMWEB_CLIENT_TIMEOUT_SECONDS; 30)",
    )
    group.add_argument(
        "--insecure-no-auth",
        action="store_true",
        default=None,
        help="allow --auth none on an address other than loopback, when a proxy in front "
        "authenticates (DICOMWEB_INSECURE_NO_AUTH)",
    )


def add_commands(commands: Any) -> None:
    """The `clients`, `keys` and `sign` commands."""
    clients = commands.add_parser("clients", help="clients of the built-in authorization server")
    actions = clients.add_subparsers(dest="clients_command", required=True)
    add = actions.add_parser("add", help="register a client; prints its id and secret once")
    add.add_argument("name", help="a name for the client")
    add.add_argument(
        "--scopes", required=True, help="comma-separated, e.g. dicomweb.read,dicomweb.write"
    )
    add.add_argument(
        "--study",
        dest="studies",
        action="append",
        default=[],
        metavar="UID",
        help="limit its tokens to this study; repeatable",
    )
    listing = actions.add_parser("list", help="list registered clients")
    remove = actions.add_parser("remove", help="unregister a client (by name or id)")
    remove.add_argument("name")
    for parser in (add, listing, remove):
        _data_dir(parser)
        parser.add_argument("--json", action="store_true", help="machine-readable output")

    keys = commands.add_parser("keys", help="signing keys of the built-in authorization server")
    key_actions = keys.add_subparsers(dest="keys_command", required=True)
    rotate = key_actions.add_parser("rotate", help="make a new signing key; the old one retires")
    _data_dir(rotate)

    sign = commands.add_parser("sign", help="a signed link that opens one study for a while")
    _data_dir(sign)
    sign.add_argument("--study", required=True, help="Study Instance UID")
    sign.add_argument("--expires", default="1h", help="lifetime: 30m, 1h, 2d... (1h)")
    sign.add_argument("--base-url", help="the server's URL in the link (--public-url)")
    sign.add_argument("--json", action="store_true", help="machine-readable output")


def _data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", help="data directory (DICOMWEB_DATA_DIR; ./dicomweb-data)")


def run(config: Config, args: argparse.Namespace) -> int:
    """Carry out `clients`, `keys` or `sign`; 0 on success, 1 or 2 otherwise."""
    security = Security(_offline(config))
    try:
        if args.command == "clients":
            return _clients(security, config, args)
        if args.command == "keys":
            kid = security.key_ring().rotate()
            print(f"new signing key {kid}; the previous key verifies its tokens until they expire")
            return 0
        return _sign(security, config, args)
    except (ClientError, ValueError) as exc:
        print(f"dicomweb {args.command}: {exc}", file=sys.stderr)
        return 2


def _offline(config: Config) -> Config:
    """The settings as the commands need them: they run beside the server, not as it."""
    from dataclasses import replace

    return replace(config, auth="none", host="127.0.0.1", oauth_issuer="")


def _clients(security: Security, config: Config, args: argparse.Namespace) -> int:
    registry = security.client_registry()
    if args.clients_command == "add":
        scopes = [s.strip() for s in args.scopes.split(",") if s.strip()]
        known = set(security.scope_names.values())
        unknown = [s for s in scopes if s not in known]
        if unknown:
            raise ClientError(f"unknown scope {unknown[0]!r}; scopes: {', '.join(sorted(known))}")
        bad = [uid for uid in args.studies if not is_valid_uid(uid)]
        if bad:
            raise ClientError(f"{bad[0]!r} is not a valid Study Instance UID")
        client, secret = registry.add(args.name, scopes, args.studies)
        answer = {**client.public(), "client_secret": secret}
        if args.json:
            print(orjson.dumps(answer).decode())
        else:
            print(f"client_id:     {client.client_id}")
            print(f"client_secret: {secret}")
            print(f"scopes:        {' '.join(client.scopes)}")
            print("The secret is shown only now; it is stored hashed.")
        return 0
    if args.clients_command == "list":
        clients = [c.public() for c in registry.all()]
        if args.json:
            print(orjson.dumps(clients).decode())
        for entry in [] if args.json else clients:
            limited = f" (studies: {', '.join(entry['studies'])})" if entry["studies"] else ""
            print(f"{entry['name']}  {entry['client_id']}  {' '.join(entry['scopes'])}{limited}")
        return 0
    removed = registry.remove(args.name)
    if args.json:
        print(orjson.dumps(removed.public()).decode())
    else:
        print(f"removed {removed.name} ({removed.client_id})")
    return 0


def _sign(security: Security, config: Config, args: argparse.Namespace) -> int:
    seconds = parse_duration(args.expires, config.link_max_seconds)
    base = args.base_url or security.public_base()
    link = security.make_link(args.study, int(time.time()) + seconds, base)
    if args.json:
        print(orjson.dumps(link).decode())
    else:
        print(link["viewer_url"])
    return 0


def server_options(config: Config) -> dict[str, Any]:
    """uvicorn.run arguments for the security settings; refuses unsafe settings."""
    check_security_settings(config)
    if config.auth == "none" and not is_loopback(config.host):
        banner = "!" * 78
        log.warning(banner)
        log.warning(
            "NO AUTHENTICATION on %s:%d (--insecure-no-auth): anyone who can reach this "
            "address can read, store and send every study.",
            config.host,
            config.port,
        )
        log.warning(banner)
    GuardedHttpToolsProtocol.configure(config)
    options: dict[str, Any] = {"http": GuardedHttpToolsProtocol}
    if config.tls_cert:
        options.update(ssl_certfile=config.tls_cert, ssl_keyfile=config.tls_key)
    return options
