"""The security settings put together: who issues tokens, how they become grants.

`Security(config)` is built once per app by create_app. It holds the verifier (of an
external issuer's tokens, or of the built-in issuer's), the built-in issuer when it is
on, the link signer, the audit log and the edge's limits; the middleware and the
endpoints use it.
"""

from __future__ import annotations

import ipaddress
import logging
from collections import OrderedDict
from pathlib import Path
from typing import Any

from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

from dicomweb.auth.audit import AuditLog
from dicomweb.auth.clients import ClientRegistry
from dicomweb.auth.edge import Limits
from dicomweb.auth.grant import Grant, claim_value, scope_names, study_limit
from dicomweb.auth.issuer import BuiltinIssuer
from dicomweb.auth.jwks import RemoteKeys
from dicomweb.auth.keys import KeyRing
from dicomweb.auth.links import PREFIX, LinkSigner, link_urls
from dicomweb.auth.policy import Permission
from dicomweb.auth.tokens import KEY_TYPES, KeySource, Verifier
from dicomweb.config import Config, ConfigError

log = logging.getLogger(__name__)

AUTH_MODES = ("none", "oauth2")
# Verified tokens kept, so that the many requests a viewer sends with one token cost
# one signature check; the claims' times are checked again on every use.
_VERIFIED_CACHE = 4096


def auth_dir(config: Config) -> Path:
    return config.data_dir / "auth"


def check_security_settings(config: Config) -> None:
    """Refuse settings that would run the server unsafely; ConfigError says why."""
    if config.auth not in AUTH_MODES:
        raise ConfigError(f"auth: {config.auth!r} is not one of {', '.join(AUTH_MODES)}")
    if config.auth == "none" and not is_loopback(config.host) and not config.insecure_no_auth:
        raise ConfigError(
            f"refusing to listen on {config.host} without authentication: use --auth oauth2, "
            "or --insecure-no-auth if something in front of the server authenticates"
        )
    refused = [a for a in _list(config.oauth_algorithms) if a not in KEY_TYPES]
    if refused or not _list(config.oauth_algorithms):
        raise ConfigError(
            "oauth_algorithms: only asymmetric signature algorithms can be allowed "
            f"({', '.join(KEY_TYPES)}); not {', '.join(refused) or 'an empty list'}"
        )
    if bool(config.tls_cert) != bool(config.tls_key):
        raise ConfigError("tls_cert and tls_key go together")
    if config.oauth_issuer and not config.oauth_issuer.startswith(("https://", "http://")):
        raise ConfigError(f"oauth_issuer: {config.oauth_issuer!r} is not an http(s) URL")
    if config.viewer_client_id and config.auth == "oauth2" and not config.oauth_issuer:
        raise ConfigError(
            "viewer_client_id: the built-in authorization server has no user login; the "
            "viewer's client belongs to an identity provider named by --oauth-issuer"
        )


def is_loopback(host: str) -> bool:
    """Whether `host` names only the loopback interface (an unspecified address does not)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _list(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


class Security:
    """Everything the middleware and the security endpoints need."""

    def __init__(self, config: Config) -> None:
        check_security_settings(config)
        self.config = config
        self.enabled = config.auth == "oauth2"
        self.limits = Limits.from_config(config)
        self.audit = AuditLog(config.audit_log)
        self.links = LinkSigner(auth_dir(config) / "link.key")
        self.cors_origins = _list(config.cors_origins)
        self.scope_names = {
            Permission.READ: config.scope_read,
            Permission.WRITE: config.scope_write,
            Permission.DELETE: config.scope_delete,
            Permission.ADMIN: config.scope_admin,
        }
        self._permissions = {name: p for p, name in self.scope_names.items()}
        self._scope_claims = tuple(_list(config.oauth_scope_claims))
        self.issuer: BuiltinIssuer | None = None
        self.remote: RemoteKeys | None = None
        self.verifier: Verifier | None = None
        self._verified: OrderedDict[str, tuple[int, dict[str, Any]]] = OrderedDict()
        if not self.enabled:
            return
        algorithms = _list(config.oauth_algorithms)
        if config.oauth_issuer:
            self.remote = RemoteKeys(
                config.oauth_issuer,
                jwks_url=config.oauth_jwks_url,
                cache_seconds=config.jwks_cache_seconds,
                min_refresh_seconds=config.jwks_refresh_min_seconds,
            )
            issuer_name = config.oauth_issuer
            keys: KeySource = self.remote
        else:
            issuer_name = self.public_base()
            ring = self.key_ring()
            self.issuer = BuiltinIssuer(
                issuer=issuer_name,
                audience=config.oauth_audience,
                clients=self.client_registry(),
                keys=ring,
                scopes=list(self.scope_names.values()),
                lifetime=config.token_lifetime_seconds,
                study_claim=config.oauth_study_claim,
            )
            keys = ring
        self.verifier = Verifier(
            keys,
            issuer=issuer_name,
            audience=config.oauth_audience,
            algorithms=algorithms,
            leeway=config.oauth_clock_skew_seconds,
        )

    # Parts kept in the data directory (also used by the CLI)

    def key_ring(self) -> KeyRing:
        config = self.config
        return KeyRing(
            auth_dir(config) / "keys",
            rotate_after=config.signing_key_days * 86400,
            retire_after=config.token_lifetime_seconds + config.oauth_clock_skew_seconds,
        )

    def client_registry(self) -> ClientRegistry:
        return ClientRegistry(auth_dir(self.config) / "clients.json")

    def public_base(self) -> str:
        """The server's external base URL: public_url, else http(s)://host:port."""
        if self.config.public_url:
            return self.config.public_url.rstrip("/")
        scheme = "https" if self.config.tls_cert else "http"
        host = self.config.host
        host = f"[{host}]" if ":" in host else host
        return f"{scheme}://{host}:{self.config.port}"

    def base_url(self, request_base: str) -> str:
        """Base of URLs handed out in a response: public_url, else the request's own."""
        return self.config.public_url.rstrip("/") or request_base.rstrip("/")

    def make_link(self, study: str, expires: int, base: str) -> dict[str, Any]:
        """A signed link to `study` and where to use it."""
        token = self.links.sign(study, expires)
        return {
            "study": study,
            "expires": expires,
            "token": token,
            **link_urls(self.base_url(base), study, token),
        }

    # Credentials -> grants

    async def grant(self, credential: str) -> Grant:
        """The grant a bearer credential (JWT or signed link) carries; TokenError if none."""
        if credential.startswith(PREFIX):
            link = self.links.verify(credential)
            return Grant("link", "link", frozenset({Permission.READ}), frozenset({link.study}))
        claims = await self._claims(credential)
        permissions = frozenset(
            self._permissions[name]
            for name in scope_names(claims, self._scope_claims)
            if name in self._permissions
        )
        subject = claim_value(claims, self.config.oauth_subject_claim)
        patient = claim_value(claims, self.config.oauth_patient_claim)
        return Grant(
            subject=str(subject) if subject is not None else "unknown",
            kind="token",
            permissions=permissions,
            studies=study_limit(claim_value(claims, self.config.oauth_study_claim)),
            patient_id=str(patient) if isinstance(patient, str | int) and patient != "" else None,
        )

    async def _claims(self, token: str) -> dict[str, Any]:
        assert self.verifier is not None
        generation = self.remote.generation if self.remote is not None else 0
        cached = self._verified.get(token)
        if cached is not None and cached[0] == generation:
            self._verified.move_to_end(token)
            claims = cached[1]
            # Still within exp and nbf now?
            self.verifier.check_claims(claims)
            return claims
        claims = await self.verifier.verify(token)
        self._verified[token] = (generation, claims)
        if len(self._verified) > _VERIFIED_CACHE:
            self._verified.popitem(last=False)
        return claims

    def middleware(self) -> list[Middleware]:
        """The middleware to install, outermost first: CORS (when origins are set; it
        answers preflight requests, which carry no credentials), then the security
        middleware."""
        from dicomweb.auth.middleware import SecurityMiddleware

        stack = []
        if self.cors_origins:
            stack.append(
                Middleware(
                    CORSMiddleware,
                    allow_origins=self.cors_origins,
                    # OPTIONS: a page may read the capabilities (it is preflighted).
                    allow_methods=["GET", "HEAD", "POST", "DELETE", "OPTIONS"],
                    allow_headers=["Authorization", "Accept", "Content-Type", "Range"],
                    expose_headers=[
                        *("Warning", "Content-Location", "ETag", "WWW-Authenticate"),
                        *("Allow", "Accept-Post"),
                    ],
                    # Bearer tokens, not cookies: credentials mode is never needed.
                    allow_credentials=False,
                    max_age=600,
                )
            )
        stack.append(Middleware(SecurityMiddleware, security=self))
        return stack

    async def aclose(self) -> None:
        if self.remote is not None:
            await self.remote.aclose()
        self.audit.close()
