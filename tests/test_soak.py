"""A short run of the soak test (bench/soak.py): mixed load, SIGKILL and restarts.

The long run is by hand (`bench/soak.py --duration 3600`); this one keeps the checks
in every test run: nothing acknowledged is lost, nothing deleted comes back, no
half-written instance is visible, and memory and descriptors stay flat.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SOAK = Path(__file__).parent.parent / "bench" / "soak.py"

pytestmark = pytest.mark.slow


def test_short_soak_loses_nothing(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    options = ["--duration", "45", "--kill-interval", "4,9", "--max-instances", "1500"]
    run = subprocess.run(
        [sys.executable, str(SOAK), *options, "--workdir", str(tmp_path), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.exists(), run.stderr[-3000:]
    summary = json.loads(out.read_text())
    assert summary["failures"] == [], run.stderr[-3000:]
    assert run.returncode == 0
    assert summary["kills"] >= 3
    counts = summary["counts"]
    assert counts["stored by STOW-RS"] > 0 and counts["stored by C-STORE"] > 0
    assert counts["retrieves"] > 0 and counts["searches"] > 0
    assert sum(v for k, v in counts.items() if k.endswith("deletes")) > 0
    assert summary["quiet_phase"]["checked"]
