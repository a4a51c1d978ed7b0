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
    # False in the worker processes of `serve --workers N`: their parent sweeps once
    # before starting them, so no worker sweeps away a sibling's staging files.
    sweep_at_start: bool = True
    # HTTP worker processes; each opens its own connections to the index.
    workers: int = 1
    # DIMSE listener processes sharing the DIMSE port (SO_REUSEPORT): the kernel spreads
    # associations over them, so C-STOREs on several associations use several cores.
    # `serve` starts them; 1: the listener runs inside the `serve` process.
    dimse_processes: int = 1
    # C-MOVE destinations and `send` targets: comma-separated AET=host:port.
    dimse_peers: str = ""
    # Calling AE titles allowed to associate (AET or AET@host, comma-separated);
    # empty: any AE title, from the loopback interface only.
    dimse_allow: str = ""
    # Transfer syntax UID new instances are stored in (empty: as received); lossless
    # syntaxes with an encoder only, checked when the settings are made.
    store_transfer_syntax: str = ""
    # Bytes of transcoded frames kept in memory for repeated requests (per process).
    frame_cache_bytes: int = 256 * 1024**2
    # Bytes of study and series metadata (DICOM JSON) kept in memory (per process).
    metadata_cache_bytes: int = 128 * 1024**2
    # Rendered images and thumbnails: the largest frame rendered (rows x columns x
    # samples; an animation counts all its frames), past which requests get 413; the
    # most frames in an animated GIF; the longest viewport side accepted (else 400).
    render_max_pixels: int = 50_000_000
    render_max_frames: int = 500
    render_max_viewport: int = 4096
    # Rendered results kept in memory (per process) and on disk (data_dir/cache/rendered).
    render_cache_memory_bytes: int = 64 * 1024**2
    render_cache_disk_bytes: int = 1 * GIB
    # The OHIF viewer's files (`dicomweb viewer install`); empty: the default place,
    # viewer_static/ in a checkout, else the user's data directory.
    viewer_dir: str = ""
    # Security (dicomweb/auth/, README "Security"). `auth` is "none" or "oauth2"; "none"
    # is refused on an address other than loopback unless insecure_no_auth is set.
    auth: str = "none"
    insecure_no_auth: bool = False
    # oauth2: an external issuer (OpenID Connect discovery, its JWKS), or empty for the
    # built-in authorization server, whose issuer name is public_url.
    oauth_issuer: str = ""
    oauth_audience: str = "dicomweb"
    # The viewer's OAuth client at the external issuer (a public client whose redirect URI
    # is <origin>/callback) and the scopes it asks for: the viewer then logs users in
    # (OpenID Connect, authorization code with PKCE). Empty: the viewer has no login.
    viewer_client_id: str = ""
    viewer_scope: str = "openid dicomweb.read"
    # The issuer's JWKS URL when it publishes no discovery document.
    oauth_jwks_url: str = ""
    # Signature algorithms accepted (asymmetric only; HS* and "none" are refused).
    oauth_algorithms: str = "RS256,RS384,RS512,PS256,PS384,PS512,ES256,ES384,ES512,EdDSA"
    # Claims whose values are scopes (space-separated or a list; dotted paths reach
    # nested claims, e.g. realm_access.roles), the subject for the audit log, and the
    # optional claims that limit a token to studies or to one patient.
    oauth_scope_claims: str = "scope,scp"
    oauth_subject_claim: str = "sub"
    oauth_study_claim: str = "dicomweb_studies"
    oauth_patient_claim: str = "dicomweb_patient_id"
    scope_read: str = "dicomweb.read"
    scope_write: str = "dicomweb.write"
    scope_delete: str = "dicomweb.delete"
    scope_admin: str = "dicomweb.admin"
    oauth_clock_skew_seconds: int = 30
    # Keys of an external issuer are fetched again after this long, and at most this
    # often when a token names a key the server does not know (rotation).
    jwks_cache_seconds: float = 3600.0
    jwks_refresh_min_seconds: float = 10.0
    # The built-in server: access token lifetime, and age of its signing key at which
    # a new key takes over.
    token_lifetime_seconds: int = 3600
    signing_key_days: float = 30.0
    # The server's external URL (e.g. https://pacs.example.org); empty: http://host:port.
    public_url: str = ""
    link_max_seconds: int = 30 * 86400
    # Origins allowed to call the server from browsers (comma-separated); empty: same
    # origin only.
    cors_origins: str = ""
    # The edge: request line and header sizes, bodies of requests other than STOW-RS,
    # one STOW-RS part, and how long a client may stall (headers, body or reading).
    max_url_bytes: int = 8192
    max_header_bytes: int = 32 * 1024
    max_api_body_bytes: int = 1024**2
    max_part_bytes: int = 16 * GIB
    client_timeout_seconds: float = 30.0
    # Audit log file (JSON lines, appended); empty: the "dicomweb.audit" logger.
    audit_log: str = ""
    # TLS certificate and key files (PEM) for HTTPS; empty: plain HTTP.
    tls_cert: str = ""
    tls_key: str = ""

    def __post_init__(self) -> None:
        if self.store_transfer_syntax:
            # Imported here: the codec table loads every codec library.
            from dicomweb.transcoding import storage_syntax_problem

            problem = storage_syntax_problem(self.store_transfer_syntax)
            if problem:
                raise ConfigError(f"store_transfer_syntax: {problem}")

    @property
    def resolved_database_url(self) -> str:
        """The database URL, defaulting to SQLite inside the data directory."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.data_dir.resolve() / 'index.sqlite3'}"

    @property
    def resolved_viewer_dir(self) -> Path:
        """Where the viewer's files are, defaulting to `default_viewer_dir()`."""
        if self.viewer_dir:
            return Path(self.viewer_dir).resolve()
        from dicomweb.viewer_install import default_viewer_dir

        return default_viewer_dir()

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
        if kind is bool:
            return _boolean(value)
        return str(value)
    except ValueError:
        raise ConfigError(f"{name}: {value!r} is not a valid value") from None


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    lowered = str(value).strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError


class ConfigError(ValueError):
    """A setting has a value that cannot be used."""
