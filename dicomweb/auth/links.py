"""Signed links: an expiring, HMAC-signed token that grants read on one study.

    dwl1.<payload>.<signature>

The payload is base64url of `{"study": UID, "exp": seconds}`, the signature base64url
of HMAC-SHA256 over `dwl1.<payload>` with a 256-bit key kept in `auth/link.key` (mode
0600; generated on first use, shared by every process using the data directory).
Replacing that file revokes every link. A link is used like a bearer token: in the
Authorization header (the viewer sends it so once opened with `?token=`), or as the
`access_token` query parameter (RFC 6750 2.3) of a DICOMweb URL.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import orjson

from dicomweb.auth.tokens import TokenError
from dicomweb.resources import is_valid_uid

PREFIX = "dwl1."
_KEY_BYTES = 32
_DURATION = re.compile(r"(\d+)\s*([smhdw]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@dataclass(frozen=True, slots=True)
class Link:
    """What a valid link grants."""

    study: str
    expires: int


class LinkSigner:
    """Signs and verifies links with the data directory's link key."""

    def __init__(self, key_path: Path) -> None:
        self.key_path = key_path
        self._key: bytes | None = None

    def sign(self, study: str, expires: int) -> str:
        """A link to `study` valid until `expires` (seconds since the epoch)."""
        if not is_valid_uid(study):
            raise ValueError(f"{study!r} is not a valid Study Instance UID")
        payload = _encode(orjson.dumps({"study": study, "exp": int(expires)}))
        return f"{PREFIX}{payload}.{self._signature(payload)}"

    def verify(self, token: str, now: float | None = None) -> Link:
        """The study a link grants; TokenError if it is malformed, tampered or expired."""
        parts = token[len(PREFIX) :].split(".") if token.startswith(PREFIX) else []
        if len(parts) != 2:
            raise TokenError("the link is malformed")
        payload, signature = parts
        if not hmac.compare_digest(signature, self._signature(payload)):
            raise TokenError("the link's signature does not verify")
        try:
            data = orjson.loads(_decode(payload))
            link = Link(str(data["study"]), int(data["exp"]))
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise TokenError("the link is malformed") from None
        if (time.time() if now is None else now) >= link.expires:
            raise TokenError("the link has expired")
        return link

    def _signature(self, payload: str) -> str:
        message = (PREFIX + payload).encode("ascii", "replace")
        return _encode(hmac.new(self._secret(), message, hashlib.sha256).digest())

    def _secret(self) -> bytes:
        if self._key is None:
            self._key = _load_or_create(self.key_path)
        return self._key


def _load_or_create(path: Path) -> bytes:
    """The key in `path`, made on first use; two processes racing agree on one file."""
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f"{path.name}.{secrets.token_hex(4)}.tmp")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(descriptor, secrets.token_bytes(_KEY_BYTES))
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        try:
            # A hard link fails if another process made the key first: theirs wins.
            os.link(temporary, path)
        except FileExistsError:
            pass
        finally:
            temporary.unlink()
        key = path.read_bytes()
    if len(key) < _KEY_BYTES:
        raise ValueError(f"{path} holds fewer than {_KEY_BYTES} bytes")
    return key


def parse_duration(text: str, maximum: int) -> int:
    """Seconds in `90`, `90s`, `30m`, `1h`, `2d` or `1w`; at least 1, at most `maximum`."""
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None:
        raise ValueError(f"{text!r} is not a duration such as 30m, 1h or 2d")
    seconds = int(match[1]) * _UNITS[match[2]]
    if not 0 < seconds <= maximum:
        raise ValueError(f"a link lasts between 1 second and {maximum} seconds, not {seconds}")
    return seconds


def link_urls(base_url: str, study: str, token: str) -> dict[str, str]:
    """Where a link is used: the viewer opened on the study, and the study's DICOMweb URL."""
    base = base_url.rstrip("/")
    quoted = quote(token, safe="")
    return {
        # OHIF reads `token` and sends it as "Authorization: Bearer" with every request.
        "viewer_url": f"{base}/viewer?StudyInstanceUIDs={study}&token={quoted}",
        "study_url": f"{base}/dicomweb/studies/{study}?access_token={quoted}",
    }


def _encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
