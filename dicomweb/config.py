"""Settings: one frozen object, from command-line flags and DICOMWEB_* environment variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

SERVICE_ROOT = "/dicomweb"

GIB = 1024**3


@dataclass(frozen=True, slots=True)
class Config:
    """Everything the server needs to know to start; nothing changes once it runs."""

    data_dir: Path = Path("dicomweb-data")
    host: str = "127.0.0.1"
    port: int = 8080
    dimse_port: int = 11112
    aet: str = "DICOMWEB"
    database_url: str = ""
    # Largest accepted request body; a 4 GB study must fit, so the default is generous.
    max_request_bytes: int = 64 * GIB
    # Binary values longer than this become BulkDataURIs in stored metadata.
    bulk_data_threshold: int = 1024
    # Orphan blobs and temporary files younger than this are left alone by the start-up
    # sweep: another process (an import, a replica) may be about to index them.
    sweep_grace_seconds: float = 600.0
    # HTTP worker processes; each opens its own connections to the index.
    workers: int = 1

    @property
    def resolved_database_url(self) -> str:
        """The database URL, defaulting to SQLite inside the data directory."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.data_dir.resolve() / 'index.sqlite3'}"

    @classmethod
    def from_sources(
        cls, flags: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
    ) -> Config:
        """Build settings: flags win over DICOMWEB_* variables, which win over defaults.

        A flag whose value is None counts as not given.
        """
        environ = os.environ if environ is None else environ
        flags = flags or {}
        values: dict[str, Any] = {}
        for f in fields(cls):
            given = flags.get(f.name)
            if given is None:
                given = environ.get(f"DICOMWEB_{f.name.upper()}")
            if given is None:
                continue
            values[f.name] = _coerce(f.name, given)
        return cls(**values)

    def to_environ(self) -> dict[str, str]:
        """These settings as DICOMWEB_* variables, for child processes."""
        return {f"DICOMWEB_{f.name.upper()}": str(getattr(self, f.name)) for f in fields(self)}


_PORTS = ("port", "dimse_port")


def _coerce(name: str, value: Any) -> Any:
    kind = type(getattr(Config(), name))
    try:
        if issubclass(kind, Path):
            return Path(value)
        if kind is int:
            number = int(value)
            if name in _PORTS and not 0 <= number <= 65535:
                raise ValueError
            return number
        if kind is float:
            return float(value)
        return str(value)
    except ValueError:
        raise ConfigError(f"{name}: {value!r} is not a valid value") from None


class ConfigError(ValueError):
    """A setting has a value that cannot be used."""
