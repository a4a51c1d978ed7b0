"""Remote application entities: move destinations and the calling AE allow-list."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

_AET = re.compile(r"[\x20-\x5b\x5d-\x7e]{1,16}")  # PS3.5 AE VR: no backslash or control


class PeerError(ValueError):
    """A peer or allow-list entry that cannot be used."""


@dataclass(frozen=True, slots=True)
class Peer:
    """A remote AE the server can send to (C-MOVE destination, `dicomweb send`)."""

    aet: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.aet}@{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Allowed:
    """A calling AE title allowed to associate, from any host or from one host."""

    aet: str
    host: str | None = None


def check_aet(value: str) -> str:
    """An AE title, stripped; PeerError when it is not one (PS3.5 Table 6.2-1)."""
    aet = value.strip()
    if not _AET.fullmatch(aet):
        raise PeerError(f"{value!r} is not an AE title (1 to 16 characters, no backslash)")
    return aet


def parse_peer(text: str) -> Peer:
    """`AET=host:port` or `AET@host:port`."""
    aet, separator, address = text.strip().replace("=", "@", 1).partition("@")
    host, colon, port = address.rpartition(":")
    if not separator or not colon or not host or not port.isdigit():
        raise PeerError(f"{text!r} is not AET=host:port")
    if not 0 < int(port) < 65536:
        raise PeerError(f"{text!r}: port {port} is out of range")
    return Peer(check_aet(aet), host.strip("[]"), int(port))


def parse_peers(text: str) -> dict[str, Peer]:
    """Comma-separated peers, by AE title."""
    peers = [parse_peer(item) for item in text.split(",") if item.strip()]
    return {peer.aet: peer for peer in peers}


def parse_allowed(text: str) -> list[Allowed]:
    """Comma-separated `AET` or `AET@host` entries."""
    entries = []
    for item in text.split(","):
        if not item.strip():
            continue
        aet, _, host = item.strip().partition("@")
        entries.append(Allowed(check_aet(aet), host or None))
    return entries


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def admits(allowed: list[Allowed], calling_aet: str, host: str) -> bool:
    """Whether a calling AE on `host` may associate.

    With no allow-list, any AE title is admitted from the loopback interface only.
    """
    if not allowed:
        return is_loopback(host)
    return any(
        entry.aet == calling_aet and (entry.host is None or entry.host == host) for entry in allowed
    )


def host_admitted(allowed: list[Allowed], host: str) -> bool:
    """Whether any calling AE may associate from `host` (checked when it connects)."""
    if not allowed:
        return is_loopback(host)
    return any(entry.host is None or entry.host == host for entry in allowed)
