"""Orthanc + DICOMweb plugin as a benchmark reference server.

Uses the Debian packages `orthanc` and `orthanc-dicomweb` (Orthanc 1.10.1 on
Debian 12). The system service is never used: each run starts
`/usr/sbin/Orthanc CONFIG.json` with a config written into its own temporary
directory, on a fresh storage and index directory.

Run standalone to poke at it by hand (Ctrl-C stops it):

    python bench/orthanc.py [--port 8042]
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
from pathlib import Path
from typing import Any

import httpx
from common import RunningServer, ServerError, ServerSpec, free_port

ORTHANC_BIN = "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
INSTALL_HINT = "apt-get update && apt-get install -y orthanc orthanc-dicomweb"


def orthanc_config(data_dir: Path, http_port: int, plugin: str) -> dict[str, Any]:
    return {
        "Name": "stow-bench",
        "HttpPort": http_port,
        # DIMSE is not benchmarked (our server runs with --dimse-port 0). The
        # port is still a free one, but the listener, which Orthanc 1.10 binds on
        # every interface, stays off so the benchmark only touches loopback.
        "DicomPort": free_port(),
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


def orthanc_spec(binary: str = ORTHANC_BIN, plugin: str = DICOMWEB_PLUGIN) -> ServerSpec:
    def command(workdir: Path, data_dir: Path, port: int) -> list[str]:
        config = workdir / "orthanc.json"
        config.write_text(json.dumps(orthanc_config(data_dir, port, plugin), indent=2))
        return [binary, str(config)]

    return ServerSpec(
        key="orthanc",
        label=f"Orthanc {orthanc_version(binary)} + DICOMweb",
        stow_path="/dicom-web/studies",
        health_path="/system",
        command=command,
        verify=_verify_plugin,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0, help="HTTP port (default: a free one)")
    parser.add_argument("--orthanc-bin", default=ORTHANC_BIN)
    parser.add_argument("--orthanc-plugin", default=DICOMWEB_PLUGIN)
    args = parser.parse_args()
    problem = check_installed(args.orthanc_bin, args.orthanc_plugin)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    spec = orthanc_spec(args.orthanc_bin, args.orthanc_plugin)

    def on_sigterm(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt  # so that Orthanc is stopped on the way out

    signal.signal(signal.SIGTERM, on_sigterm)
    with (
        tempfile.TemporaryDirectory(prefix="orthanc-bench-") as tmp,
        RunningServer(spec, Path(tmp), port=args.port) as server,
    ):
        print(f"{spec.label} ready: STOW-RS at {server.stow_url}  (Ctrl-C to stop)")
        try:
            while server.proc is not None and server.proc.poll() is None:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
