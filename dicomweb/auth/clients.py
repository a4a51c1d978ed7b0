"""Clients of the built-in authorization server, in `auth/clients.json` (mode 0600).

`dicomweb clients add NAME --scopes ...` registers a client: a random id and a random
256-bit secret, shown once. Only a SHA-256 digest of the secret is kept: the secret is
random and long, so guessing it from the digest is as hard as guessing it outright, and
a slow password hash would add nothing but a delay to every token request. The server
reads the file again when it changes, so clients added while it runs work at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import os
import secrets
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson


class ClientError(ValueError):
    """A registration request that cannot be carried out."""


@dataclass(frozen=True, slots=True)
class Client:
    """A registered client (confidential: client-credentials grant only)."""

    client_id: str
    name: str
    secret_sha256: str
    scopes: tuple[str, ...]
    # Study Instance UIDs its tokens are limited to; empty: any study.
    studies: tuple[str, ...] = ()
    created: float = 0.0

    def check_secret(self, secret: str) -> bool:
        digest = hashlib.sha256(secret.encode()).hexdigest()
        return hmac.compare_digest(digest, self.secret_sha256)

    def public(self) -> dict[str, Any]:
        """The registration without the secret's digest, for listings."""
        return {
            "client_id": self.client_id,
            "name": self.name,
            "scopes": list(self.scopes),
            "studies": list(self.studies),
            "created": self.created,
        }


class ClientRegistry:
    """The registered clients of one data directory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._clients: dict[str, Client] = {}
        self._stamp: tuple[int, int] | None = None
        self._lock = threading.Lock()

    def find(self, client_id: str) -> Client | None:
        with self._lock:
            self._reload()
            return self._clients.get(client_id)

    def all(self) -> list[Client]:
        with self._lock:
            self._reload()
            return sorted(self._clients.values(), key=lambda c: (c.name, c.created))

    def add(
        self, name: str, scopes: Sequence[str], studies: Sequence[str] = ()
    ) -> tuple[Client, str]:
        """Register a client; returns it and its secret (which is not stored)."""
        if not name.strip():
            raise ClientError("a client needs a name")
        if not scopes:
            raise ClientError("a client needs at least one scope")
        secret = secrets.token_urlsafe(32)
        client = Client(
            client_id=secrets.token_urlsafe(16),
            name=name.strip(),
            secret_sha256=hashlib.sha256(secret.encode()).hexdigest(),
            scopes=tuple(dict.fromkeys(scopes)),
            studies=tuple(dict.fromkeys(studies)),
            created=time.time(),
        )
        with self._edit() as clients:
            if any(c.name == client.name for c in clients.values()):
                raise ClientError(f"a client named {client.name!r} exists")
            clients[client.client_id] = client
        return client, secret

    def remove(self, name_or_id: str) -> Client:
        """Unregister a client, by name or id; its tokens stay valid until they expire."""
        with self._edit() as clients:
            for client in list(clients.values()):
                if name_or_id in (client.client_id, client.name):
                    del clients[client.client_id]
                    return client
        raise ClientError(f"no client is named {name_or_id!r}")

    @contextlib.contextmanager
    def _edit(self) -> Iterator[dict[str, Client]]:
        """Read, change and write the file under a lock shared with other processes."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_suffix(".lock")
        with open(lock_path, "a") as lock, self._lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                clients = _read(self.path)
                yield clients
                body = orjson.dumps(
                    [asdict(c) for c in clients.values()], option=orjson.OPT_INDENT_2
                )
                temporary = self.path.with_suffix(".tmp")
                descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                try:
                    os.write(descriptor, body)
                    os.fsync(descriptor)
                finally:
                    os.close(descriptor)
                temporary.replace(self.path)
                self._stamp = None
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _reload(self) -> None:
        try:
            status = self.path.stat()
        except FileNotFoundError:
            self._clients, self._stamp = {}, None
            return
        stamp = (status.st_mtime_ns, status.st_size)
        if stamp != self._stamp:
            self._clients = _read(self.path)
            self._stamp = stamp


def _read(path: Path) -> dict[str, Client]:
    try:
        entries = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    clients = {}
    for entry in entries:
        entry["scopes"] = tuple(entry["scopes"])
        entry["studies"] = tuple(entry.get("studies", ()))
        client = Client(**entry)
        clients[client.client_id] = client
    return clients
