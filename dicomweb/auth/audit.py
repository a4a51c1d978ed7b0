"""The audit log: one JSON line per HTTP request and per DIMSE operation.

Each line says who (the token's subject, "link", "anonymous", or the calling AE title
and host), what (the transaction and the study, series and instance UIDs it names) and
the outcome. Lines go to a file (`--audit-log`, appended with one write per line, so
workers and the DIMSE process can share it) or else to the "dicomweb.audit" logger.
Tokens and link signatures never appear in it.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import orjson

log = logging.getLogger("dicomweb.audit")

# pynetdicom handler shapes: a function of the event returning a status, or a generator.
Handler = Callable[[Any], Any]


class AuditLog:
    """Writes audit records; safe from any thread."""

    def __init__(self, path: str = "") -> None:
        self.path = path
        self._descriptor: int | None = None
        self._lock = threading.Lock()

    def write(self, record: dict[str, Any]) -> None:
        line = orjson.dumps({"time": _now(), **record})
        if not self.path:
            log.info("%s", line.decode())
            return
        with self._lock:
            if self._descriptor is None:
                self._descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            # One write per line: with O_APPEND, lines of several processes never mix.
            os.write(self._descriptor, line + b"\n")

    def close(self) -> None:
        with self._lock:
            if self._descriptor is not None:
                os.close(self._descriptor)
                self._descriptor = None

    # DIMSE

    def dimse(self, operation: str, handler: Handler) -> Handler:
        """Wrap a pynetdicom handler so that each operation leaves one audit line."""

        @functools.wraps(handler)
        def audited(event: Any) -> Any:
            started = time.perf_counter()
            record = {"kind": "dimse", "operation": operation, **_requestor(event)}
            record.update(_identifier_uids(event))
            try:
                result = handler(event)
            except Exception:
                self.write({**record, "outcome": "error", "ms": _ms(started)})
                raise
            if isinstance(result, Iterator):
                return self._follow(result, record, started)
            self.write({**record, **_status_fields(result), "ms": _ms(started)})
            return result

        return audited

    def dimse_store(
        self,
        event: Any,
        status: int,
        *,
        study: str | None = None,
        series: str | None = None,
        instance: str | None = None,
    ) -> None:
        """The line of one C-STORE, with the UIDs the received instance carried."""
        record = {"kind": "dimse", "operation": "C-STORE", **_requestor(event)}
        if instance is None:
            instance = getattr(event.request, "AffectedSOPInstanceUID", None)
        uids = {"study": study, "series": series, "instance": instance}
        record.update({name: str(uid) for name, uid in uids.items() if uid})
        self.write({**record, **_status_fields(int(status))})

    def _follow(self, results: Iterator[Any], record: dict[str, Any], started: float) -> Any:
        """Pass a C-FIND, C-MOVE or C-GET handler's yields on; write the line at its end."""
        matches = 0
        outcome: dict[str, Any] = {"outcome": "success", "status": "0x0000"}
        try:
            for item in results:
                if isinstance(item, int) and not isinstance(item, bool):
                    record["sub_operations"] = item
                elif isinstance(item, tuple) and len(item) == 2:
                    status = _status_value(item[0])
                    if item == (None, None):
                        outcome = {"outcome": "refused", "detail": "unknown destination"}
                    elif status == 0xFF00:
                        matches += 1
                    elif status is not None:
                        outcome = _status_fields(status)
                yield item
        except GeneratorExit:
            outcome = {"outcome": "aborted"}
            raise
        except Exception:
            outcome = {"outcome": "error"}
            raise
        finally:
            key = "sub_operations_sent" if "sub_operations" in record else "matches"
            self.write({**record, key: matches, **outcome, "ms": _ms(started)})


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


def _requestor(event: Any) -> dict[str, str]:
    requestor = event.assoc.requestor
    return {"who": f"{str(requestor.ae_title).strip()}@{requestor.address}"}


def _identifier_uids(event: Any) -> dict[str, str]:
    """Level and UIDs of a C-FIND/MOVE/GET identifier, when the request has one."""
    try:
        identifier = event.identifier
    except (AttributeError, ValueError):
        return {}
    fields = {}
    for keyword, name in (
        ("QueryRetrieveLevel", "level"),
        ("StudyInstanceUID", "study"),
        ("SeriesInstanceUID", "series"),
        ("SOPInstanceUID", "instance"),
    ):
        value = identifier.get(keyword) if identifier is not None else None
        if value:
            fields[name] = str(value) if not isinstance(value, list | tuple) else ",".join(value)
    return fields


def _status_value(status: Any) -> int | None:
    if isinstance(status, int):
        return status
    value = getattr(status, "Status", None)
    return int(value) if value is not None else None


def _status_fields(status: Any) -> dict[str, Any]:
    value = _status_value(status)
    if value is None:
        return {"outcome": "unknown"}
    # PS3.7 C: 0x0000 success, 0xB... warning, 0xFE00 cancel, the rest failure.
    if value == 0:
        outcome = "success"
    elif value & 0xF000 == 0xB000 or value == 0x0001 or value == 0x0107:
        outcome = "warning"
    elif value == 0xFE00:
        outcome = "cancelled"
    else:
        outcome = "failure"
    return {"outcome": outcome, "status": f"0x{value:04X}"}
