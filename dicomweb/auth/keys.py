"""Signing keys of the built-in authorization server, kept in the data directory.

Each key is a file `auth/keys/<created>-<kid>.json` (mode 0600) holding a private RSA
JWK. The newest key signs; every key whose tokens may still be valid stays in the
JWKS, so a rotation never invalidates a token in use:

1. `rotate()` (or `dicomweb keys rotate`, or the newest key passing `rotate_after`
   when a token is issued) writes a new key; it signs from then on.
2. The previous key keeps verifying the tokens it signed until they expire: once its
   successor is older than the token lifetime plus the clock skew, it leaves the JWKS
   and no longer verifies, and the next rotation deletes its file.

Every process (workers, replicas on a shared data directory) reads the directory again
when its listing changes, checked at most once a second, and at once when a token names
a key it does not hold.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from joserfc.jwk import RSAKey

from dicomweb.auth.tokens import KEY_TYPES, PublicKey

log = logging.getLogger(__name__)

ALGORITHM = "RS256"
_RSA_BITS = 2048
_RELOAD_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class SigningKey:
    created: float
    key: RSAKey

    @property
    def kid(self) -> str:
        return str(self.key.kid)


class KeyRing:
    """The built-in issuer's keys; safe to use from several threads."""

    def __init__(self, directory: Path, *, rotate_after: float, retire_after: float) -> None:
        self.directory = directory
        self.rotate_after = rotate_after
        self.retire_after = retire_after
        self._keys: list[SigningKey] = []
        self._listing: tuple[str, ...] | None = None
        self._checked = float("-inf")
        self._lock = threading.Lock()

    # Reading

    def signing_key(self) -> SigningKey:
        """The key new tokens are signed with; makes a new one when it is due."""
        with self._lock:
            self._reload(force=False)
            if not self._keys or time.time() - self._keys[-1].created > self.rotate_after:
                self._rotate()
            return self._keys[-1]

    def public_jwks(self) -> dict[str, Any]:
        """The JWK Set to publish: public halves of every key still in use."""
        with self._lock:
            self._reload(force=False)
            if not self._keys:
                self._rotate()
            return {"keys": [k.key.as_dict(private=False) for k in self._live()]}

    async def key(self, kid: str | None, alg: str) -> PublicKey | None:
        """KeySource for the verifier: the key with this kid (reading the disk on a miss)."""
        if KEY_TYPES.get(alg) != "RSA" or kid is None:
            return None
        with self._lock:
            self._reload(force=False)
            found = self._find(kid)
            if found is None and time.monotonic() - self._checked >= _RELOAD_SECONDS / 10:
                self._reload(force=True)
                found = self._find(kid)
            return found

    def _find(self, kid: str) -> RSAKey | None:
        return next((k.key for k in self._live() if k.kid == kid), None)

    def _live(self) -> list[SigningKey]:
        """The newest key, and older ones whose tokens may still be valid."""
        now = time.time()
        live = [
            older
            for older, newer in zip(self._keys, self._keys[1:], strict=False)
            if now - newer.created <= self.retire_after
        ]
        return live + self._keys[-1:]

    # Writing

    def rotate(self) -> str:
        """Make a new signing key now; returns its kid."""
        with self._lock:
            self._reload(force=True)
            return self._rotate().kid

    def _rotate(self) -> SigningKey:
        self.directory.mkdir(parents=True, exist_ok=True)
        key = RSAKey.generate_key(
            _RSA_BITS, parameters={"alg": ALGORITHM, "use": "sig"}, private=True, auto_kid=True
        )
        signing = SigningKey(time.time(), key)
        body = orjson.dumps({"created": signing.created, "key": key.as_dict(private=True)})
        _write_private(
            self.directory / f"{int(signing.created * 1000):015d}-{signing.kid}.json", body
        )
        log.info("new signing key %s", signing.kid)
        self._reload(force=True)
        self._retire()
        return signing

    def _retire(self) -> None:
        """Delete the files of keys whose successor has existed longer than any token."""
        live = {k.kid for k in self._live()}
        for key in self._keys:
            path = self._path(key)
            if key.kid not in live and path is not None:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                log.info("retired signing key %s", key.kid)
        self._reload(force=True)

    # The directory

    def _reload(self, *, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self._checked < _RELOAD_SECONDS:
            return
        self._checked = now
        try:
            listing = tuple(sorted(p.name for p in self.directory.glob("*.json")))
        except FileNotFoundError:
            listing = ()
        if listing == self._listing:
            return
        keys = []
        for name in listing:
            try:
                data = orjson.loads((self.directory / name).read_bytes())
                keys.append(SigningKey(float(data["created"]), RSAKey.import_key(data["key"])))
            except FileNotFoundError:
                continue  # retired by another process meanwhile
            except (ValueError, KeyError, TypeError):
                log.error("ignoring unreadable signing key file %s", name)
        keys.sort(key=lambda k: k.created)
        self._keys = keys
        self._listing = listing

    def _path(self, key: SigningKey) -> Path | None:
        return next(iter(self.directory.glob(f"*-{key.kid}.json")), None)


def _write_private(path: Path, body: bytes) -> None:
    """Write a file readable by its owner only, complete or not at all."""
    temporary = path.with_suffix(".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(descriptor, body)
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    temporary.replace(path)
