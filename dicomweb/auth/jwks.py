"""The keys of an external issuer: OpenID Connect discovery, then its JWKS, cached.

The JWKS is fetched on first use and again after `cache_seconds`. A token naming a
key the cache does not hold (the issuer rotated its keys) makes the server fetch the
JWKS again at once, but not more often than every `min_refresh_seconds`, so tokens
with made-up key ids cannot turn the server into a load on the issuer. A refresh that
fails keeps the keys already known; with none known, requests get 503.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import httpx
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, OKPKey, RSAKey, import_key

from dicomweb.auth.tokens import KEY_TYPES, KeysUnavailable, PublicKey

log = logging.getLogger(__name__)

_TIMEOUT = httpx.Timeout(10.0)
# OpenID Connect Discovery 1.0 4, then RFC 8414 3.
_DISCOVERY = ("/.well-known/openid-configuration", "/.well-known/oauth-authorization-server")
_ASYMMETRIC = {"RSA": RSAKey, "EC": ECKey, "OKP": OKPKey}
# Private key members (RFC 7518 6.2.2, 6.3.2): a JWKS should not carry them; dropped.
_PRIVATE = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth"})


class RemoteKeys:
    """The signing keys an issuer publishes, found by OpenID Connect discovery."""

    def __init__(
        self,
        issuer: str,
        *,
        jwks_url: str = "",
        cache_seconds: float = 3600.0,
        min_refresh_seconds: float = 10.0,
    ) -> None:
        self.issuer = issuer
        self.jwks_url = jwks_url
        self.cache_seconds = cache_seconds
        self.min_refresh_seconds = min_refresh_seconds
        self._keys: list[PublicKey] = []
        self._fetched = float("-inf")
        self._lock = asyncio.Lock()
        self._client: httpx.AsyncClient | None = None
        # Counts fetches of the JWKS; the cache of verified tokens follows it.
        self.generation = 0

    async def key(self, kid: str | None, alg: str) -> PublicKey | None:
        """The key for a token's header; fetches the JWKS when stale or on a new kid."""
        if time.monotonic() - self._fetched > self.cache_seconds:
            await self._refresh(force=True)
        found = _pick(self._keys, kid, alg)
        if found is None and time.monotonic() - self._fetched >= self.min_refresh_seconds:
            await self._refresh(force=False)
            found = _pick(self._keys, kid, alg)
        if not self._keys:
            raise KeysUnavailable(f"no keys of {self.issuer} are known")
        return found

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _refresh(self, *, force: bool) -> None:
        started = time.monotonic()
        async with self._lock:
            # Another request refreshed while this one waited for the lock.
            if self._fetched >= started:
                return
            if not force and started - self._fetched < self.min_refresh_seconds:
                return
            try:
                keys = await self._fetch()
            except (httpx.HTTPError, ValueError) as exc:
                # Try again no sooner than a key miss would.
                retry = started - self.cache_seconds + self.min_refresh_seconds
                self._fetched = max(self._fetched, retry)
                if not self._keys:
                    log.error("cannot fetch the keys of %s: %s", self.issuer, exc)
                    raise KeysUnavailable(str(exc)) from None
                log.warning("cannot refresh the keys of %s, keeping them: %s", self.issuer, exc)
                return
            self._keys = keys
            self._fetched = time.monotonic()
            self.generation += 1
            log.info("keys of %s: %s", self.issuer, ", ".join(str(k.kid) for k in keys))

    async def _fetch(self) -> list[PublicKey]:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=_TIMEOUT, follow_redirects=False)
        url = self.jwks_url or await self._discover()
        response = await self._client.get(url)
        response.raise_for_status()
        document = response.json()
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise ValueError(f"{url} is not a JWK Set")
        return [key for key in map(_public_key, document["keys"]) if key is not None]

    async def _discover(self) -> str:
        """The jwks_uri of the issuer's discovery document (OpenID Connect, RFC 8414)."""
        assert self._client is not None
        base = self.issuer.rstrip("/")
        for path in (
            "/.well-known/openid-configuration",
            "/.well-known/oauth-authorization-server",
        ):
            response = await self._client.get(base + path)
            if response.status_code == 404:
                continue
            response.raise_for_status()
            metadata = response.json()
            # OpenID Connect Discovery 4.3: the issuer in the document must be the one
            # configured, or the document is not the issuer's.
            if not isinstance(metadata, dict) or metadata.get("issuer") != self.issuer:
                raise ValueError(f"{base + path} names another issuer")
            jwks_uri = metadata.get("jwks_uri")
            if not isinstance(jwks_uri, str) or not jwks_uri:
                raise ValueError(f"{base + path} names no jwks_uri")
            return jwks_uri
        raise ValueError(f"{self.issuer} publishes no discovery document")


def _public_key(entry: Any) -> PublicKey | None:
    """A JWK usable to verify signatures; symmetric, encryption and private keys are not."""
    if not isinstance(entry, dict) or entry.get("kty") not in _ASYMMETRIC:
        return None
    if entry.get("use", "sig") != "sig" or entry.get("alg", "RS256") not in KEY_TYPES:
        return None
    public = {name: value for name, value in entry.items() if name not in _PRIVATE}
    try:
        key = import_key(public)
    except (JoseError, ValueError, TypeError):
        log.warning("skipping a JWK that cannot be imported (kid %r)", entry.get("kid"))
        return None
    assert isinstance(key, RSAKey | ECKey | OKPKey)
    return key


def _pick(keys: list[PublicKey], kid: str | None, alg: str) -> PublicKey | None:
    if kid is not None:
        return next((k for k in keys if k.kid == kid), None)
    # No kid: usable only when exactly one key fits the algorithm.
    fitting = [k for k in keys if k.key_type == KEY_TYPES[alg]]
    return fitting[0] if len(fitting) == 1 else None
