"""Orthanc + DICOMweb plugin as a benchmark reference server.

Uses the Debian packages `orthanc` and `orthanc-dicomweb` (Orthanc 1.10.1 on
Debian 12). The system service is never used: each run starts
`/usr/sbin/Orthanc CONFIG.json` with a config written into its own temporary
directory, on a fresh storage and index directory.

With `dicom=DicomListener(...)` its DICOM server is enabled too (bench/dimse.py).

Run standalone to poke at it by hand (Ctrl-C stops it):

    python bench/orthanc.py [--port 8042] [--dicom-port 4242]
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from common import LOOPBACK, RunningServer, ServerError, ServerSpec, free_port

ORTHANC_BIN = "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
INSTALL_HINT = "apt-get update && apt-get install -y orthanc orthanc-dicomweb"


@dataclass(frozen=True)
class DicomListener:
    """Orthanc's DICOM server, as bench/dimse.py runs it.

    Orthanc 1.10 binds its DICOM port on every interface (it has no setting
    for the address), so instead of the DicomAlwaysAllow* switches a single
    known modality is declared: the calling AE title `peer_aet` from
    127.0.0.1, checked by host (DicomCheckModalityHost), may C-ECHO, C-STORE
    and C-FIND; any other peer is refused. The called AE title is checked.
    """

    aet: str = "ORTHANC"
    peer_aet: str = "BENCHSCU"
    # DicomThreadsCount: associations served at once (Orthanc's default is 4).
    threads: int = 4


def orthanc_config(
    data_dir: Path,
    http_port: int,
    plugin: str,
    dicom: DicomListener | None = None,
    dicom_port: int = 0,
) -> dict[str, Any]:
    config: dict[str, Any] = {
        "Name": "stow-bench",
        "HttpPort": http_port,
        # Without `dicom`, DIMSE is not benchmarked (our server runs with
        # --dimse-port 0). The port is still a free one, but the listener, which
        # Orthanc 1.10 binds on every interface, stays off so the benchmark only
        # touches loopback.
        "DicomPort": dicom_port or free_port(),
        "DicomServerEnabled": False,
        "StorageDirectory": str(data_dir / "storage"),
        "IndexDirectory": str(data_dir / "index"),
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "Plugins": [plugin],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        # Explicit so that runs do not depend on built-in defaults.
        "StorageCompression": False,
        "OverwriteInstances": False,
        "KeepAlive": True,
        "TcpNoDelay": True,
        "HttpThreadsCount": 50,
        "SaveJobs": False,
    }
    if dicom is not None:
        config.update(
            {
                "DicomServerEnabled": True,
                "DicomAet": dicom.aet,
                "DicomCheckCalledAet": True,
                "DicomModalities": {
                    "bench": {
                        "AET": dicom.peer_aet,
                        "Host": "127.0.0.1",
                        "Port": 104,  # never called: Orthanc is only the SCP here
                        "AllowEcho": True,
                        "AllowFind": True,
                        "AllowStore": True,
                        "AllowGet": False,
                        "AllowMove": False,
                        "AllowFindWorklist": False,
                        "AllowStorageCommitment": False,
                    }
                },
                "DicomCheckModalityHost": True,
                "DicomAlwaysAllowEcho": False,
                "DicomAlwaysAllowStore": False,
                "DicomAlwaysAllowFind": False,
                "DicomAlwaysAllowFindWorklist": False,
                "DicomAlwaysAllowGet": False,
                "DicomAlwaysAllowMove": False,
                "DicomThreadsCount": dicom.threads,
            }
        )
    return config


def orthanc_version(binary: str = ORTHANC_BIN) -> str:
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except OSError:
        return "unknown"
    first = out.splitlines()[0] if out else ""
    return first.split()[-1] if first else "unknown"


def check_installed(binary: str = ORTHANC_BIN, plugin: str = DICOMWEB_PLUGIN) -> str | None:
    """None if Orthanc and the plugin are present, else a message."""
    if shutil.which(binary) is None:
        return f"Orthanc not found at {binary} ({INSTALL_HINT})"
    if not Path(plugin).exists():
        return f"DICOMweb plugin not found at {plugin} ({INSTALL_HINT})"
    return None


def _verify_plugin(base_url: str) -> None:
    resp = httpx.get(base_url + "/plugins/dicom-web", timeout=5.0, trust_env=False)
    if resp.status_code != 200:
        raise ServerError(
            f"Orthanc is up but the DICOMweb plugin is not loaded ({resp.status_code})"
        )


# DCMTK, which Orthanc uses for DICOM networking, leaves Nagle's algorithm on
# for its sockets unless this environment variable says otherwise (Orthanc's
# "TcpNoDelay" setting is for its HTTP server only).
DCMTK_NODELAY_ENV = {"TCP_NODELAY": "1"}


def orthanc_spec(
    binary: str = ORTHANC_BIN, plugin: str = DICOMWEB_PLUGIN, dicom: DicomListener | None = None
) -> ServerSpec:
    def command(workdir: Path, data_dir: Path, port: int, dimse_port: int) -> list[str]:
        config = workdir / "orthanc.json"
        settings = orthanc_config(data_dir, port, plugin, dicom, dimse_port)
        config.write_text(json.dumps(settings, indent=2))
        return [binary, str(config)]

    return ServerSpec(
        key="orthanc",
        label=f"Orthanc {orthanc_version(binary)} + DICOMweb",
        stow_path="/dicom-web/studies",
        health_path="/system",
        command=command,
        verify=_verify_plugin,
        env=dict(DCMTK_NODELAY_ENV) if dicom is not None else {},
        dimse_aet=dicom.aet if dicom is not None else None,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0, help="HTTP port (default: a free one)")
    parser.add_argument(
        "--dicom-port",
        type=int,
        default=None,
        help="enable the DICOM server on this port (0: a free one), AE title ORTHANC, "
        "for the calling AE title BENCHSCU from 127.0.0.1",
    )
    parser.add_argument("--orthanc-bin", default=ORTHANC_BIN)
    parser.add_argument("--orthanc-plugin", default=DICOMWEB_PLUGIN)
    args = parser.parse_args()
    problem = check_installed(args.orthanc_bin, args.orthanc_plugin)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    dicom = DicomListener() if args.dicom_port is not None else None
    spec = orthanc_spec(args.orthanc_bin, args.orthanc_plugin, dicom)

    def on_sigterm(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt  # so that Orthanc is stopped on the way out

    signal.signal(signal.SIGTERM, on_sigterm)
    with (
        tempfile.TemporaryDirectory(prefix="orthanc-bench-") as tmp,
        RunningServer(spec, Path(tmp), port=args.port, dimse_port=args.dicom_port or 0) as server,
    ):
        print(f"{spec.label} ready: STOW-RS at {server.stow_url}  (Ctrl-C to stop)")
        if dicom is not None:
            print(f"DICOM: {dicom.aet}@{LOOPBACK}:{server.dimse_port} for {dicom.peer_aet}")
        try:
            while server.proc is not None and server.proc.poll() is None:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
