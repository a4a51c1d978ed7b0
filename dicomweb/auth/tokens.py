"""Bearer JWT validation (RFC 7519, RFC 6750) with authlib's JOSE layer (joserfc).

A token is accepted when its header names an allowed asymmetric algorithm, its key
(found by `kid` in the issuer's keys) verifies the signature, and its claims name the
expected issuer and audience and are within exp and nbf, give or take a small clock
skew. Verification costs tens of microseconds (RS256 verify), so it runs on the event
loop; only fetching keys waits on the network.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Collection
from typing import Any, Protocol

import orjson
from joserfc import jwt
from joserfc.errors import ExpiredTokenError, JoseError, MissingClaimError
from joserfc.jwk import ECKey, OKPKey, RSAKey

PublicKey = RSAKey | ECKey | OKPKey

# Signature algorithms a configuration may allow, with the key type each needs.
KEY_TYPES = {
    **dict.fromkeys(("RS256", "RS384", "RS512", "PS256", "PS384", "PS512"), "RSA"),
    **dict.fromkeys(("ES256", "ES384", "ES512", "ES256K"), "EC"),
    "EdDSA": "OKP",
    "Ed25519": "OKP",
}


class TokenError(Exception):
    """The token cannot be used: 401 with error="invalid_token" (RFC 6750 3.1)."""

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


class KeysUnavailable(Exception):
    """The issuer's keys could not be fetched and none are cached: 503."""


class KeySource(Protocol):
    """Where verification keys come from: an issuer's JWKS, or the built-in key ring."""

    async def key(self, kid: str | None, alg: str) -> PublicKey | None:
        """The key `kid` names (or the only key for `alg` when there is no kid)."""
        ...


class Verifier:
    """Checks bearer JWTs of one issuer for one audience."""

    def __init__(
        self,
        keys: KeySource,
        *,
        issuer: str,
        audience: str,
        algorithms: Collection[str],
        leeway: int,
    ) -> None:
        unknown = [a for a in algorithms if a not in KEY_TYPES]
        if unknown:
            raise ValueError(f"algorithms not allowed for bearer tokens: {', '.join(unknown)}")
        self.keys = keys
        self.issuer = issuer
        self.audience = audience
        self.algorithms = frozenset(algorithms)
        self.leeway = leeway

    async def verify(self, token: str) -> dict[str, Any]:
        """The token's claims, or TokenError saying what is wrong."""
        header = _header(token)
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise TokenError(f"the signature algorithm {alg!r} is not accepted")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise TokenError("the kid header is not a string")
        key = await self.keys.key(kid, alg)
        if key is None:
            raise TokenError("no key of the issuer matches the token")
        # The key's own type decides: an RSA key can only verify RS*/PS*, whatever the
        # header claims (no HS/RS confusion: symmetric algorithms are never allowed).
        if key.key_type != KEY_TYPES[alg] or key.get("alg", alg) != alg:
            raise TokenError("the key of the token does not fit its algorithm")
        try:
            claims = jwt.decode(token, key, algorithms=[alg]).claims
        except JoseError:
            raise TokenError("the signature does not verify") from None
        self.check_claims(claims)
        return claims

    def check_claims(self, claims: dict[str, Any]) -> None:
        """Issuer, audience, expiry and not-before, with the clock skew allowed."""
        registry = jwt.JWTClaimsRegistry(
            leeway=self.leeway,
            iss={"essential": True, "value": self.issuer},
            aud={"essential": True, "value": self.audience},
            exp={"essential": True},
        )
        try:
            registry.validate(claims)
        except ExpiredTokenError:
            raise TokenError("the token has expired") from None
        except MissingClaimError as exc:
            missing = str(exc.description).split(": ", 1)[-1]
            raise TokenError(f"the token lacks a required claim: {missing}") from None
        except JoseError as exc:
            raise TokenError(_claim_problem(exc)) from None


def _claim_problem(exc: JoseError) -> str:
    text = str(exc.description or exc.error)
    if "nbf" in text or "not yet valid" in text:
        return "the token is not valid yet"
    for claim, what in (("iss", "issuer"), ("aud", "audience"), ("iat", "issue time")):
        if f"'{claim}'" in text or f'"{claim}"' in text:
            return f"the token's {what} is not accepted"
    return "the token's claims are not accepted"


def _header(token: str) -> dict[str, Any]:
    """The JOSE header of a compact JWS, not yet trusted."""
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenError("the token is not a signed JWT")
    try:
        raw = base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4))
        header = orjson.loads(raw)
    except (binascii.Error, ValueError):
        raise TokenError("the token header is malformed") from None
    if not isinstance(header, dict):
        raise TokenError("the token header is malformed")
    return header
