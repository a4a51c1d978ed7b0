"""uvicorn's HTTP protocol with a deadline and a size limit for request headers.

uvicorn times out idle keep-alive connections, but not a request whose line and headers
arrive slowly, or never end: such connections would be held open for ever (the
"slowloris" attack), and headers would grow without bound. This protocol closes a
connection whose request head takes longer than the client timeout, answering 408, and
answers 414 or 431 as soon as the request line or the headers pass their limits.

The limits are class attributes, set once per process before serving (cli.serve, or
create_app_from_environ in worker processes): uvicorn makes the protocol objects.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from dicomweb.auth.edge import Limits
from dicomweb.config import Config

_REASONS = {408: b"Request Timeout", 414: b"URI Too Long", 431: b"Request Header Fields Too Large"}


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol that bounds how long and how large a request head may be."""

    limits = Limits()

    @classmethod
    def configure(cls, config: Config) -> None:
        """Take the limits from the settings (once, before the server starts)."""
        cls.limits = Limits.from_config(config)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_deadline: asyncio.TimerHandle | None = None
        self._head_bytes = 0
        self._url_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # A connection that sends nothing at all is also a stalled request head.
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = self._url_bytes = 0
        self._arm()

    def on_url(self, url: bytes) -> None:
        self._url_bytes += len(url)
        if self._url_bytes > self.limits.max_url_bytes:
            self._refuse(414)
            return
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value) + 4
        if self._head_bytes > self.limits.max_header_bytes:
            self._refuse(431)
            return
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._disarm()
        if self.transport.is_closing():
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self.transport.is_closing():
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self.transport.is_closing():
            super().on_message_complete()

    def data_received(self, data: bytes) -> None:
        # After a refusal the parser may still hold data of the refused request.
        if not self.transport.is_closing():
            super().data_received(data)

    def _arm(self) -> None:
        self._disarm()
        self._head_deadline = self.loop.call_later(self.limits.client_timeout, self._refuse, 408)

    def _disarm(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _refuse(self, status: int) -> None:
        """Answer `status` without a body and close: no request reaches the app."""
        self._disarm()
        if self.transport.is_closing():
            return
        # A pipelined request went wrong while the previous response is being sent:
        # nothing can be written in the middle of that, only the connection closed.
        if self.cycle is not None and not self.cycle.response_complete:
            self.transport.close()
            return
        reason = _REASONS[status]
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-length: 0\r\nconnection: close\r\n\r\n" % (status, reason)
        )
        self.transport.close()
