"""The edge of the HTTP server: size limits, slow clients, security headers.

The middleware uses these on every request, with or without authentication:

- A request line (path and query) longer than `max_url_bytes` gets 414 and headers
  longer than `max_header_bytes` in all get 431 (RFC 6585), before any route runs.
- A body is limited to `max_api_body_bytes`, except STOW-RS (`max_request_bytes`, as
  stow.py enforces with its own response): by Content-Length at once, else as it
  arrives (413).
- A client that stalls for `client_timeout_seconds` while sending its body gets 408
  and the connection is closed; one that stalls as long while the server sends (it
  does not read) has its request cancelled (the Watchdog below). Stalls before the
  headers are complete are the HTTP server's to catch (auth/protocol.py for uvicorn).
- Responses get security headers (below) unless the route set them itself. COOP and
  COEP make the viewer's page cross-origin isolated, which its multithreaded decoders
  need (SharedArrayBuffer).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.types import Message, Receive, Send

from dicomweb.config import Config

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    # Signed links travel in URLs: never pass them on in a Referer.
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"frame-ancestors 'none'"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-embedder-policy", b"require-corp"),
    (b"cross-origin-resource-policy", b"same-origin"),
)
HSTS = (b"strict-transport-security", b"max-age=31536000")
_NAMES = frozenset(name for name, _ in (*SECURITY_HEADERS, HSTS))


@dataclass(frozen=True, slots=True)
class Limits:
    """The edge's limits, from the settings."""

    max_url_bytes: int = 8192
    max_header_bytes: int = 32 * 1024
    max_api_body_bytes: int = 1024**2
    max_request_bytes: int = 64 * 1024**3
    client_timeout: float = 30.0

    @classmethod
    def from_config(cls, config: Config) -> Limits:
        return cls(
            max_url_bytes=config.max_url_bytes,
            max_header_bytes=config.max_header_bytes,
            max_api_body_bytes=config.max_api_body_bytes,
            max_request_bytes=config.max_request_bytes,
            client_timeout=config.client_timeout_seconds,
        )


class BodyTooLarge(Exception):
    """The request body passed its limit while it was read."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the request body is over the limit of {limit} bytes")
        self.limit = limit


class Watch:
    """One request as the watchdog sees it: since when it waits on its client."""

    __slots__ = ("since", "task", "timed_out")

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.since: float | None = None
        self.timed_out = False


class Watchdog:
    """Cancels requests whose client stalls: sends no body, or reads no response.

    One task checks every request in flight a few times per timeout, instead of a timer
    per receive and send (a timer costs more than the rest of the edge together). It
    runs only while requests are in flight. A request it cancels has `timed_out` set,
    and the middleware turns the cancellation into 408 (or a closed connection).
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._watches: set[Watch] = set()
        self._task: asyncio.Task[None] | None = None

    def watch(self) -> Watch:
        watch = Watch(asyncio.current_task())  # type: ignore[arg-type]
        self._watches.add(watch)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._patrol())
        return watch

    def release(self, watch: Watch) -> None:
        self._watches.discard(watch)

    async def _patrol(self) -> None:
        period = min(1.0, self.timeout / 4)
        while self._watches:
            await asyncio.sleep(period)
            now = time.monotonic()
            for watch in list(self._watches):
                if watch.since is not None and now - watch.since >= self.timeout:
                    watch.timed_out = True
                    watch.since = None
                    watch.task.cancel()


def oversized(path: bytes, query: bytes, headers: list[tuple[bytes, bytes]], limits: Limits) -> int:
    """414 or 431 when the request line or headers are too long, else 0."""
    if len(path) + len(query) + 1 > limits.max_url_bytes:
        return 414
    if sum(len(name) + len(value) + 4 for name, value in headers) > limits.max_header_bytes:
        return 431
    return 0


def content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    """The Content-Length of raw ASGI headers; None when absent or not ASCII digits."""
    for name, value in headers:
        if name == b"content-length":
            if not value.isdigit():
                return None
            digits = value.lstrip(b"0") or b"0"
            # int() refuses over 4300 digits; any length past 2**63 is too large anyway.
            return int(digits) if len(digits) <= 19 else 1 << 63
    return None


def guarded_receive(receive: Receive, limit: int | None, watch: Watch) -> Receive:
    """`receive` that counts the body against `limit` and shows the watchdog its waits.

    Only waits for body count: after the last chunk, the app may wait on `receive` for a
    disconnect for as long as its response lasts.
    """
    received = 0
    body_done = False

    async def receive_guarded() -> Message:
        nonlocal received, body_done
        if body_done:
            return await receive()
        watch.since = time.monotonic()
        try:
            message = await receive()
        finally:
            watch.since = None
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if limit is not None and received > limit:
                raise BodyTooLarge(limit)
            body_done = not message.get("more_body", False)
        return message

    return receive_guarded


def guarded_send(send: Send, scheme: str, observe: Callable[[Message], None], watch: Watch) -> Send:
    """`send` that adds the security headers, shows each message to `observe` (for the
    audit log), and shows the watchdog how long a body waits for the client to read."""

    async def send_guarded(message: Message) -> None:
        if message["type"] == "http.response.start":
            _add_security_headers(message, scheme == "https")
            observe(message)
            # Never waits: the HTTP server writes the head without flow control.
            await send(message)
            return
        observe(message)
        watch.since = time.monotonic()
        try:
            await send(message)
        finally:
            watch.since = None

    return send_guarded


def _add_security_headers(message: Message, https: bool) -> None:
    headers = list(message.get("headers", ()))
    present = {name.lower() for name, _ in headers if name.lower() in _NAMES}
    for name, value in SECURITY_HEADERS:
        if name not in present:
            headers.append((name, value))
    if https and HSTS[0] not in present:
        headers.append(HSTS)
    message["headers"] = headers
