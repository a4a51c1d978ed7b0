"""Every benchmark in one command: runs bench/*.py and writes docs/benchmarks.md.

Each benchmark script runs as a subprocess, one after the other, with its JSON
results (`--out`) in a results directory; it compares our server with Orthanc
+ DICOMweb (and nginx, where the script has it) in the same run. The report
describes the machine, gives the exact command and the date, and has a table
per benchmark with the raw figures and the ratios ours/Orthanc and ours/nginx.
A benchmark that fails or is skipped is reported as such, without figures.

Usage (from the repository root):

    .venv/bin/python bench/report.py                     # full sizes (an hour or more)
    .venv/bin/python bench/report.py --quick             # small sizes, a few minutes
    .venv/bin/python bench/report.py --quick --only stow,wado
    .venv/bin/python bench/report.py --render-only       # rewrite the Markdown from the results
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import platform
import re
import shlex
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import qido
from common import REPO, RunningServer, ServerError, machine_info
from dimse import STORESCU, dcmtk_version
from orthanc import ORTHANC_BIN, check_installed, orthanc_spec, orthanc_version
from viewer import CHROMIUM
from wado import NGINX_BIN

DEFAULT_OUT = REPO / "docs" / "benchmarks.md"
# Flat names in bench/ so that .gitignore's `bench/results*.json` covers them.
DEFAULT_RESULTS = REPO / "bench"
PREFIX = "results-report"
TAIL_LINES = 40  # output lines kept per benchmark, shown in the report when it fails


# --------------------------------------------------------------------------
# Markdown helpers
# --------------------------------------------------------------------------


def num(value: Any, digits: int = 1) -> str:
    """A figure for a table cell: '-' when missing, thousands separated."""
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if 0 < abs(value) < 1:
            return f"{value:.2f}"  # sub-millisecond latencies
        return f"{value:,.{digits}f}"
    return str(value)


def ratio(value: float | None) -> str:
    """A ratio cell, '1.23x', or '-'."""
    return "-" if value is None else f"{value:.2f}x"


def div(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either is missing or zero (no ratio to give)."""
    return round(a / b, 2) if a and b else None


def pair(a: Any, b: Any) -> str:
    """Two figures in one cell, such as p50/p95."""
    return "-" if a is None and b is None else f"{num(a)} / {num(b)}"


def median(values: Sequence[float | None]) -> float | None:
    """Median of the values present, None if there are none."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


FIGURE = re.compile(r"^[-\d.,/ x+]+( \(!\))?$")


def md_table(head: Sequence[str], rows: Sequence[Sequence[str]], figures: bool = True) -> list[str]:
    """A Markdown table; with `figures`, columns of figures are right-aligned."""
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    numeric = [
        figures and i > 0 and all(FIGURE.match(str(r[i])) for r in rows) for i in range(len(head))
    ]

    def right(i: int) -> bool:
        return numeric[i]

    def line(cells: Sequence[str]) -> str:
        padded = [
            str(c).rjust(w) if right(i) else str(c).ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join(
        "-" * (w + 1) + ":" if right(i) else "-" * (w + 2) for i, w in enumerate(widths)
    )
    return [line(head), rule + "|", *(line(r) for r in rows)]


def flag(ok: Any) -> str:
    """Marker appended to a figure whose runs failed a check."""
    return "" if ok is None or ok else " (!)"


def search_row(r: dict[str, Any]) -> tuple[str, ...]:
    """The cells after the shape (and concurrency) of a QIDO-RS or C-FIND summary row."""
    differ = r.get("count_differs_from_catalog")
    return (
        SERVER_NAMES.get(r["server"], r["server"]) + flag(r.get("ok")),
        num(r.get("req_per_s")),
        pair(r.get("latency_p50_ms"), r.get("latency_p95_ms")),
        num(r.get("results_per_request")),
        "ok" if not differ else f"{differ}/{r.get('distinct_queries')} differ",
        ratio(r.get("req_per_s_vs_orthanc")),
        ratio(r.get("p50_vs_orthanc")),
    )


FLAG_NOTE = "(!) marks figures from runs that failed a check (see the JSON)."


# --------------------------------------------------------------------------
# Machine
# --------------------------------------------------------------------------


def _first_line(argv: Sequence[str], pattern: str = r"(.+)") -> str:
    """The first match of `pattern` in a command's output (stdout and stderr)."""
    try:
        run = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "not found"
    m = re.search(pattern, run.stdout + run.stderr)
    return m.group(1).strip() if m else "unknown"


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def filesystem(path: Path) -> dict[str, Any]:
    """Device, filesystem type, size and free space of the filesystem holding `path`."""
    out: dict[str, Any] = {"path": str(path)}
    found = _first_line(["findmnt", "-n", "-o", "SOURCE,FSTYPE,OPTIONS", "-T", str(path)])
    parts = found.split()
    if len(parts) == 3:
        out.update(device=parts[0], fstype=parts[1], options=parts[2])
        # The block driver (virtio_blk, nvme, ...) says more about the disk
        # than the device name on a virtual machine.
        name = Path(parts[0]).name
        driver = Path("/sys/class/block") / name / "device" / "driver"
        if driver.exists():
            out["driver"] = driver.resolve().name
    with contextlib.suppress(OSError):
        usage = shutil.disk_usage(path)
        out["size_gib"] = round(usage.total / 2**30, 1)
        out["free_gib"] = round(usage.free / 2**30, 1)
    return out


def postgres_version(pg: str) -> str | None:
    """The PostgreSQL server's version at USER@HOST:PORT, None when unreachable."""
    try:
        rows = qido._pg_admin(pg, "SELECT current_setting('server_version')")
    except Exception:  # asyncpg raises a variety of errors for "not there"
        return None
    return str(rows[0][0]) if rows else None


def dicomweb_plugin_version() -> str:
    """The DICOMweb plugin's version as Orthanc reports it (GET /plugins/dicom-web)."""
    if check_installed():
        return "not installed"
    with (
        tempfile.TemporaryDirectory(prefix="report-orthanc-") as tmp,
        RunningServer(orthanc_spec(), Path(tmp)) as server,
    ):
        try:
            resp = httpx.get(server.base_url + "/plugins/dicom-web", timeout=10, trust_env=False)
            return str(resp.json().get("Version", "unknown"))
        except (httpx.HTTPError, ValueError):
            return "unknown"


def describe_machine(workdir: Path, pg: str) -> dict[str, Any]:
    """machine_info() plus what the report needs: CPU model, kernel, disk, versions."""
    info = machine_info()
    try:
        plugin = dicomweb_plugin_version()
    except ServerError as exc:
        plugin = f"unknown (Orthanc did not start: {str(exc).splitlines()[0]})"
    info.update(
        cpu_model=cpu_model(),
        kernel=platform.release(),
        workdir=filesystem(workdir),
        ours=importlib.metadata.version("dicomweb"),
        sqlite=sqlite3.sqlite_version,  # the library our server's Python links
        postgresql=postgres_version(pg),
        pg=pg,
        orthanc=orthanc_version() if shutil.which(ORTHANC_BIN) else "not installed",
        dicomweb_plugin=plugin,
        nginx=_first_line([NGINX_BIN, "-v"], r"nginx/(\S+)"),
        dcmtk=dcmtk_version(STORESCU),
        chromium=_first_line([CHROMIUM, "--version"], r"Chromium (\S+)"),
        node=_first_line(["node", "--version"], r"v(\S+)"),
    )
    return info


def machine_lines(m: dict[str, Any], loadavg_end: list[float] | None) -> list[str]:
    """The machine section."""
    fs = m["workdir"]
    disk = (
        f"{fs.get('fstype', '?')} on {fs.get('device', '?')}"
        + (f" ({fs['driver']})" if fs.get("driver") else "")
        + f", {num(fs.get('size_gib'))} GiB, {num(fs.get('free_gib'))} GiB free"
        + f" at the start; `{fs['path']}`"
    )
    pg = m.get("postgresql")
    rows = [
        ("CPU", f"{m['cpu_model']}, {m['cpus']} logical CPUs"),
        ("Memory", f"{m['mem_total_gib']} GiB"),
        ("Kernel", f"{m['kernel']} ({m['platform']})"),
        ("Work directory (temporary data)", disk),
        ("Python", m["python"]),
        ("Our server", f"dicomweb {m['ours']}"),
        ("SQLite (our index)", m["sqlite"]),
        ("PostgreSQL", pg if pg else f"not reachable at {m['pg']}"),
        ("Orthanc", m["orthanc"]),
        ("Orthanc DICOMweb plugin", m["dicomweb_plugin"]),
        ("nginx", m["nginx"]),
        ("DCMTK (storescu)", m["dcmtk"]),
        ("Chromium / Node.js (viewer)", f"{m['chromium']} / {m['node']}"),
        ("Load average at start (1, 5, 15 min)", " ".join(map(str, m["loadavg"]))),
        (
            "Load average at end (1, 5, 15 min)",
            " ".join(map(str, loadavg_end)) if loadavg_end else "-",
        ),
    ]
    return md_table(("", ""), rows, figures=False)


# --------------------------------------------------------------------------
# The benchmarks
# --------------------------------------------------------------------------


def stow_lines(d: dict[str, Any]) -> list[str]:
    """STOW-RS: per shape, inst/s, latency and peak RSS of both servers."""
    runs = d.get("runs", [])
    head = (
        "shape",
        "Orthanc inst/s",
        "ours inst/s",
        "ours/Orthanc",
        "Orthanc p50 / p95 ms",
        "ours p50 / p95 ms",
        "p50 ours/Orthanc",
        "Orthanc peak RSS MiB",
        "ours peak RSS MiB",
        "RSS ours/Orthanc",
    )
    rows = []
    for s in d.get("summary", []):
        lat: dict[str, tuple[float | None, float | None]] = {}
        for key in ("orthanc", "ours"):
            mine = [r for r in runs if r["server"] == key and r["shape"] == s["shape"]]
            loads = [r.get("load", {}) for r in mine]

            def ms(k: str, loads: list[dict[str, Any]] = loads) -> float | None:
                v = median([x.get(k) for x in loads])
                return None if v is None else round(v * 1000, 1)

            lat[key] = (ms("latency_p50_s"), ms("latency_p95_s"))
        rows.append(
            (
                s["shape"],
                num(s.get("orthanc_inst_per_s")) + flag(s.get("orthanc_ok")),
                num(s.get("ours_inst_per_s")) + flag(s.get("ours_ok")),
                ratio(s.get("ratio_ours_over_orthanc")),
                pair(*lat["orthanc"]),
                pair(*lat["ours"]),
                ratio(div(lat["ours"][0], lat["orthanc"][0])),
                num(s.get("orthanc_peak_rss_mib")),
                num(s.get("ours_peak_rss_mib")),
                ratio(div(s.get("ours_peak_rss_mib"), s.get("orthanc_peak_rss_mib"))),
            )
        )
    a = d.get("args", {})
    return [
        f"{a.get('instances')} CT instances of 514 KiB per run, median of {a.get('repeat')} "
        "run(s); latency is per request (median over the runs), peak RSS the highest.",
        "",
        *md_table(head, rows),
        "",
        "inst/s ratio > 1 favours ours; latency and RSS ratios < 1 favour ours. " + FLAG_NOTE,
    ]


def large_lines(d: dict[str, Any]) -> list[str]:
    """STOW-RS --large: peak RSS of one big streamed upload vs. one series upload."""
    head = ("upload", "instances", "body MiB", "wall s", "MiB/s", "peak RSS MiB")
    rows = [
        (
            r["upload"] + flag(r.get("ok")),
            num(r.get("instances")),
            num(r.get("body_mib")),
            num(r.get("wall_s"), 2),
            num(r.get("mib_per_s")),
            num(r.get("peak_rss_mib")),
        )
        for r in d.get("runs", [])
    ]
    s = d.get("summary", {})
    lines = [
        "Ours only (Orthanc buffers the request body; it is not the point here).",
        "",
        *md_table(head, rows),
        "",
    ]
    if "rss_ratio_large_over_series" in s:
        lines.append(
            f"Peak RSS large/series: **{ratio(s['rss_ratio_large_over_series'])}** "
            f"({s['rss_growth_mib']:+} MiB for {s['upload_growth_mib']:+,} MiB more upload); "
            "about 1x means the body is streamed to storage, not buffered. " + FLAG_NOTE
        )
    else:
        lines.append("No ratio: an upload did not complete. " + FLAG_NOTE)
    return lines


SERVER_NAMES = {
    "orthanc": "Orthanc",
    "ours": "ours",
    "ours-pg": "ours (PostgreSQL)",
    "nginx": "nginx",
}


def qido_lines(d: dict[str, Any]) -> list[str]:
    """QIDO-RS: load table, then per shape and server req/s, latency and ratios."""
    servers = d.get("servers", {})
    ref_rss = servers.get("orthanc", {}).get("memory", {}).get("peak_rss_mib")
    load_rows = []
    for key, s in servers.items():
        load = s.get("load", {})
        rss = s.get("memory", {}).get("peak_rss_mib")
        load_rows.append(
            (
                f"{s.get('label', key)}" + flag(load.get("ok") and "error" not in s),
                "reused" if load.get("reused") else num(load.get("instances")),
                num(load.get("wall_s")),
                num(load.get("inst_per_s")),
                num(rss),
                "-" if key == "orthanc" else ratio(div(rss, ref_rss)),
            )
        )
    rows = [(r["shape"], *search_row(r)) for r in d.get("summary", [])]
    a, arch = d.get("args", {}), d.get("archive", {})
    lines = [
        f"Archive: {num(arch.get('studies'))} studies, {num(arch.get('instances'))} instances; "
        f"concurrency {a.get('concurrency')}, up to {a.get('requests')} requests or "
        f"{a.get('duration')} s per shape.",
        "",
        "Loading (informational; peak RSS is over the load and all queries):",
        "",
        *md_table(
            ("server", "instances", "load s", "inst/s", "peak RSS MiB", "RSS ours/Orthanc"),
            load_rows,
        ),
        "",
        *md_table(
            (
                "shape",
                "server",
                "req/s",
                "p50 / p95 ms",
                "results/req",
                "counts vs catalog",
                "req/s ours/Orthanc",
                "p50 ours/Orthanc",
            ),
            rows,
        ),
        "",
        "req/s ratio > 1 and p50 ratio < 1 favour ours. " + FLAG_NOTE,
    ]
    shapes = d.get("shapes", {})
    if shapes:
        lines += ["", "Shapes: " + "; ".join(f"`{k}`: `{v}`" for k, v in shapes.items()) + "."]
    differ = [c for c in d.get("count_comparison", []) if c.get("differ")]
    if differ:
        lines += ["", "Result counts that differ between servers (same query, same data):", ""]
        for c in differ:
            a_, b_ = c["servers"]
            ex = c["examples"][0] if c.get("examples") else None
            example = (
                f", e.g. `{ex['query']}`: {a_} {ex[a_]}, {b_} {ex[b_]}, "
                f"catalog {ex.get('catalog_matches')}"
                if ex
                else ""
            )
            lines.append(
                f"- `{c['shape']}` {a_} vs {b_}: {c['differ']} of {c['compared']} differ"
                f" ({c.get('differ_by_cap', 0)} explained by our 1,000-result cap){example}"
            )
        lines.append(
            "- (known: Orthanc 1.10 + DICOMweb 1.7 finds nothing for non-ASCII QIDO-RS values;"
            " see bench/README.md)"
        )
    return lines


def wado_lines(d: dict[str, Any]) -> list[str]:
    """WADO-RS: per shape, req/s, latency and MiB/s of ours, Orthanc and nginx, and ratios."""
    keys = ("ours", "orthanc", "nginx")
    rows = []
    for r in d.get("summary", []):
        cells = [f"`{r['shape']}`"]
        cells += [
            num(r.get(k, {}).get("req_per_s")) + flag(r.get(k, {}).get("ok_all")) for k in keys
        ]
        cells += [
            ratio(r.get("ours_over_orthanc_req_per_s")),
            ratio(r.get("ours_over_nginx_req_per_s")),
        ]
        cells += [
            pair(r.get(k, {}).get("latency_p50_ms"), r.get(k, {}).get("latency_p95_ms"))
            for k in keys
        ]
        cells.append(ratio(r.get("ours_over_orthanc_p50")))
        cells += [num(r.get(k, {}).get("mib_per_s")) for k in keys]
        rows.append(cells)
    head = (
        "shape",
        "ours req/s",
        "Orthanc req/s",
        "nginx req/s",
        "req/s ours/Orthanc",
        "req/s ours/nginx",
        "ours p50 / p95 ms",
        "Orthanc p50 / p95 ms",
        "nginx p50 / p95 ms",
        "p50 ours/Orthanc",
        "ours MiB/s",
        "Orthanc MiB/s",
        "nginx MiB/s",
    )
    # nginx's memory is not sampled: only the DICOMweb servers have a row.
    servers = {s.get("server"): s for s in d.get("servers", []) if "memory" in s}
    ref_rss = servers.get("orthanc", {}).get("memory", {}).get("peak_rss_mib")
    mem_rows = []
    for key, s in servers.items():
        rss = s["memory"].get("peak_rss_mib")
        mem_rows.append(
            (
                SERVER_NAMES.get(key, str(key)) + flag("error" not in s),
                num(rss),
                "-" if key == "orthanc" else ratio(div(rss, ref_rss)),
                num(s.get("store", {}).get("wall_s"), 2),
            )
        )
    a = d.get("args", {})
    lines = [
        f"{a.get('instances')} CT instances and a {a.get('frames')}-frame instance; "
        f"concurrency {a.get('concurrency')}, up to {a.get('requests')} requests "
        f"({a.get('series_requests')} whole-series) or {a.get('duration')} s per shape.",
        "",
        *md_table(head, rows),
        "",
        "req/s ratios > 1 and the p50 ratio < 1 favour ours. `metadata-cold` and `first-load`"
        " are single requests (only the p50 ratio applies); nginx serves pre-rendered files, so"
        " only frames, series and cached rendering have an ours/nginx ratio. " + FLAG_NOTE,
    ]
    if mem_rows:
        lines += [
            "",
            *md_table(("server", "peak RSS MiB", "RSS ours/Orthanc", "STOW-RS load s"), mem_rows),
        ]
    labels = [f"`{r['shape']}` {r['label']}" for r in d.get("summary", []) if r.get("label")]
    if labels:
        lines += ["", "Shapes: " + "; ".join(labels) + "."]
    same = d.get("series_payload_equal_between_servers")
    if same is False:
        lines += ["", "Whole-series retrieve: the payload bytes differ between servers."]
    return lines


def dimse_lines(d: dict[str, Any]) -> list[str]:
    """DIMSE: C-STORE table, C-FIND table, association cost."""
    lines: list[str] = []
    store = d.get("store")
    if store:
        rows = [
            (
                s["shape"],
                num(s.get("orthanc_inst_per_s")) + flag(s.get("orthanc_ok")),
                num(s.get("ours_inst_per_s")) + flag(s.get("ours_ok")),
                ratio(s.get("ratio_ours_over_orthanc")),
                num(s.get("orthanc_server_cpu_s"), 2),
                num(s.get("ours_server_cpu_s"), 2),
                num(s.get("orthanc_peak_rss_mib")),
                num(s.get("ours_peak_rss_mib")),
                ratio(div(s.get("ours_peak_rss_mib"), s.get("orthanc_peak_rss_mib"))),
            )
            for s in store.get("summary", [])
        ]
        f = store.get("files", {})
        lines += [
            f"**C-STORE** with `storescu`: {f.get('instances')} CT instances "
            f"({f.get('mib')} MiB), median of {d.get('args', {}).get('runs')} run(s).",
            "",
            *md_table(
                (
                    "associations",
                    "Orthanc inst/s",
                    "ours inst/s",
                    "ours/Orthanc",
                    "Orthanc CPU s",
                    "ours CPU s",
                    "Orthanc peak RSS MiB",
                    "ours peak RSS MiB",
                    "RSS ours/Orthanc",
                ),
                rows,
            ),
            "",
        ]
    find = d.get("find")
    if find:
        rows = [
            (r["shape"], str(r["concurrency"]), *search_row(r)) for r in find.get("summary", [])
        ]
        a = d.get("args", {})
        arch = find.get("archive", {})
        studies = arch.get("studies") or a.get("find_studies")
        lines += [
            f"**C-FIND** (Study Root, STUDY level) over {num(studies)} studies; up to "
            f"{a.get('find_requests')} requests or {a.get('find_duration')} s per row.",
            "",
            *md_table(
                (
                    "shape",
                    "conc.",
                    "server",
                    "req/s",
                    "p50 / p95 ms",
                    "matches/req",
                    "counts vs catalog",
                    "req/s ours/Orthanc",
                    "p50 ours/Orthanc",
                ),
                rows,
            ),
            "",
        ]
        assoc = find.get("association_overhead") or []
        if assoc:
            by = {x["server"]: x for x in assoc}
            o50 = by.get("orthanc", {}).get("p50_ms")
            lines += [
                "Association cost (associate + C-ECHO + release, one at a time):",
                "",
                *md_table(
                    ("server", "p50 / p95 ms", "p50 ours/Orthanc"),
                    [
                        (
                            SERVER_NAMES.get(x["server"], x["server"]),
                            pair(x.get("p50_ms"), x.get("p95_ms")),
                            "-" if x["server"] == "orthanc" else ratio(div(x.get("p50_ms"), o50)),
                        )
                        for x in assoc
                    ],
                ),
                "",
            ]
    lines.append(
        "inst/s and req/s ratios > 1, latency and RSS ratios < 1 favour ours. " + FLAG_NOTE
    )
    return lines


def viewer_lines(d: dict[str, Any]) -> list[str]:
    """OHIF viewer: median time to first image and to all slices, per server."""
    servers = d.get("servers", {})
    ref = servers.get("orthanc", {})
    rows = []
    for key, s in servers.items():
        runs = s.get("runs", [])
        ok = sum(1 for r in runs if r.get("ok"))
        rows.append(
            (
                s.get("label", key),
                num(s.get("median_first_image_ms")),
                num(s.get("median_all_slices_ms")),
                num(s.get("median_metadata_received_ms")),
                f"{ok}/{len(runs)}",
                ", ".join(
                    f"{num(r.get('first_image_ms'))}/{num(r.get('all_slices_ms'))}" for r in runs
                ),
            )
        )
    ours = servers.get("ours", {})
    lines = [
        f"Series: {d.get('series')}; {d.get('runs_per_server')} run(s) per server, medians, ms "
        "after navigation.",
        "",
        *md_table(
            (
                "server",
                "first image ms",
                "all slices ms",
                "metadata received ms",
                "runs ok",
                "per run (first/all)",
            ),
            rows,
        ),
        "",
    ]
    if ours and ref:
        first = div(ours.get("median_first_image_ms"), ref.get("median_first_image_ms"))
        every = div(ours.get("median_all_slices_ms"), ref.get("median_all_slices_ms"))
        lines.append(
            f"ours/Orthanc: first image **{ratio(first)}**, all slices **{ratio(every)}**"
            " (< 1 favours ours)."
        )
    failed = [
        f"{key} run {n}: {r['error']}"
        for key, s in servers.items()
        for n, r in enumerate(s.get("runs", []), 1)
        if not r.get("ok") and r.get("error")
    ]
    if failed:
        lines += ["", "Failed runs:", "", *(f"- {f}" for f in failed)]
    later = [
        key
        for key, s in servers.items()
        for r in s.get("runs", [])
        if r.get("ok") and r.get("later_step_error")
    ]
    if later:
        counts = ", ".join(
            f"{SERVER_NAMES.get(k, k)} {later.count(k)}" for k in dict.fromkeys(later)
        )
        lines += [
            "",
            f"Untimed steps after the measurement failed in some runs ({counts}; "
            "`later_step_error` in the JSON; expected for Orthanc, whose DICOMweb plugin 1.7 "
            "leaves StudyDescription out of the study list, see bench/README.md). "
            "The figures are not affected.",
        ]
    return lines


@dataclass(frozen=True)
class Part:
    """One benchmark: how to run it at each size and how to report it."""

    key: str
    title: str
    script: str
    measures: str
    full: tuple[str, ...]
    quick: tuple[str, ...]
    render: Callable[[dict[str, Any]], list[str]]


PARTS: tuple[Part, ...] = (
    Part(
        "stow",
        "STOW-RS ingest",
        "stow.py",
        "instances per second stored by STOW-RS uploads of a 512x512 16-bit CT series, "
        "1 or 50 instances per request, 1 or 8 connections, each run on a fresh server.",
        (),
        ("--instances", "30", "--repeat", "1"),
        stow_lines,
    ),
    Part(
        "stow-large",
        "STOW-RS, one large streamed upload (memory)",
        "stow.py",
        "our server's peak memory for one multi-GB STOW-RS request against one request "
        "of a single series: flat memory means the body is streamed to storage.",
        ("--large",),
        ("--large", "--instances", "30", "--large-gb", "0.2"),
        large_lines,
    ),
    Part(
        "qido",
        "QIDO-RS search",
        "qido.py",
        "study searches per second (and latency) over a generated archive, seven query "
        "shapes at concurrency 8, ours on SQLite (and PostgreSQL when reachable) vs. Orthanc.",
        (),
        ("--studies", "2000", "--requests", "100", "--duration", "3"),
        qido_lines,
    ),
    Part(
        "wado",
        "WADO-RS retrieve and rendered images",
        "wado.py",
        "what a viewer fetches (series metadata, frames, whole series, rendered JPEG/PNG) "
        "per second and its latency; nginx serving the same bytes as files is the limit.",
        (),
        (
            *("--instances", "60", "--frames", "20", "--requests", "50"),
            *("--series-requests", "5", "--duration", "3", "--first-load", "5"),
        ),
        wado_lines,
    ),
    Part(
        "dimse",
        "DIMSE: C-STORE and C-FIND",
        "dimse.py",
        "C-STORE throughput with DCMTK's storescu on 1 or 8 associations, C-FIND requests "
        "per second over a generated archive, and the cost of an association.",
        (),
        (
            *("--runs", "1", "--instances", "30", "--find-studies", "2000"),
            *("--find-requests", "50", "--find-duration", "3", "--assoc-requests", "20"),
        ),
        dimse_lines,
    ),
    Part(
        "viewer",
        "OHIF viewer load time",
        "viewer.py",
        "time from navigation to the first rendered image and to every slice loaded, "
        "in the bundled OHIF viewer in headless Chromium.",
        (),
        ("--runs", "1", "--slices", "60"),
        viewer_lines,
    ),
)
PART_KEYS = tuple(p.key for p in PARTS)


# --------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------


def display(path: Path | str) -> str:
    """A path relative to the repository when it is inside it (for the report)."""
    # absolute(), not resolve(): the venv's python is a symlink out of the repository.
    p = Path(path).absolute()
    with contextlib.suppress(ValueError):
        return str(p.relative_to(REPO))
    return str(p)


def part_command(part: Part, quick: bool, out: Path, postgres: bool) -> list[str]:
    """The script's command line for this run."""
    argv = [sys.executable, str(REPO / "bench" / part.script)]
    argv += list(part.quick if quick else part.full)
    if part.key == "qido" and postgres:
        argv.append("--postgres")
    return [*argv, "--out", str(out)]


def run_part(argv: list[str], env: dict[str, str], tag: str) -> tuple[int, list[str], float]:
    """Run a benchmark, echoing its output; (exit status, last lines, wall seconds)."""
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            print(f"[{tag}] {line}", end="", flush=True)
            tail.append(line.rstrip("\n"))
        code = proc.wait()
    except KeyboardInterrupt:
        # The benchmark got the same SIGINT; let it stop its servers first.
        code = proc.wait()
        raise
    finally:
        if proc.poll() is None:
            proc.kill()
    return code, list(tail), time.perf_counter() - t0


def status_of(code: int | None, has_json: bool) -> str:
    """ok / checks-failed / skipped / failed, from the exit status and the JSON."""
    if code == 0 and has_json:
        return "ok"
    if code == 1 and has_json:
        return "checks-failed"
    if code == 2:
        return "skipped"
    return "failed"


STATUS_SHORT = {
    "ok": "ok",
    "checks-failed": "some checks failed",
    "skipped": "skipped",
    "failed": "failed",
    "not-run": "not run",
    "interrupted": "interrupted",
}
STATUS_TEXT = {
    "ok": "completed, every check passed",
    "checks-failed": "completed, but some runs failed their checks (marked (!) below)",
    "skipped": "skipped: a prerequisite is missing",
    "failed": "failed: no results",
    "not-run": "not run",
    "interrupted": "interrupted",
}


# --------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------


def duration(seconds: float | None) -> str:
    """'1 h 02 min', '3 min 07 s', '12 s'."""
    if seconds is None:
        return "-"
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    if s >= 60:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s} s"


def render(meta: dict[str, Any], results: Path) -> str:
    """The Markdown report from the run record and the benchmarks' JSON."""
    quick = meta["quick"]
    lines = [
        "# Benchmarks" + (" (quick run)" if quick else ""),
        "",
        "Our DICOMweb server against Orthanc with its DICOMweb plugin, and against nginx "
        "serving the same bytes as static files where that applies, in the same run on the "
        "same machine, over loopback. Generated by `bench/report.py`; how each benchmark "
        "works is in [bench/README.md](../bench/README.md).",
        "",
        f"- Command: `{meta['command']}`",
        f"- Date: {meta['started']} to {meta.get('finished', '-')} "
        f"(wall time {duration(meta.get('wall_s'))})",
        f"- Results (JSON): `{display(results)}/{PREFIX}-*.json`",
        "",
    ]
    if quick:
        lines += [
            "> **Quick run**: small sizes (tens of instances, a 2,000-study archive, a few "
            "seconds per shape, one run each), to check that everything works. The figures are "
            "noisy and not comparable with a full run; run `bench/report.py` without "
            "`--quick` for figures to quote.",
            "",
        ]
    lines += [
        "Ratios are ours/Orthanc and ours/nginx. For throughput (inst/s, req/s) a ratio above "
        "1 favours ours; for latency, memory and load times a ratio below 1 does. Client and "
        "servers share the machine's CPUs; the load average below says how busy it was.",
        "",
        "## Machine",
        "",
        *machine_lines(meta["machine"], meta.get("loadavg_end")),
        "",
        "## Overview",
        "",
    ]
    overview = []
    for part in PARTS:
        rec = meta["parts"].get(part.key)
        if rec is None:
            continue
        overview.append(
            (
                f"[{part.title}](#{anchor(part)})",
                STATUS_SHORT[rec["status"]],
                duration(rec.get("wall_s")),
                "-" if rec.get("exit_code") is None else str(rec["exit_code"]),
            )
        )
    lines += [*md_table(("benchmark", "status", "wall time", "exit status"), overview), ""]
    for part in PARTS:
        rec = meta["parts"].get(part.key)
        if rec is None:
            continue
        lines += [f"## {part.title}: `bench/{part.script}`", ""]
        lines += [f"What it measures: {part.measures}", ""]
        lines += [f"Command: `{rec['command']}`", ""]
        loadavg = rec.get("loadavg_start")
        lines += [
            f"Status: **{STATUS_TEXT[rec['status']]}**"
            + (f" (exit status {rec['exit_code']})" if rec.get("exit_code") is not None else "")
            + f"; {duration(rec.get('wall_s'))}"
            + (f"; load average at its start {loadavg[0]}" if loadavg else "")
            + ".",
            "",
        ]
        data = None
        path = results / rec["json"]
        if rec["status"] in ("ok", "checks-failed") and path.is_file():
            with contextlib.suppress(OSError, ValueError):
                data = json.loads(path.read_text())
        if data is not None:
            try:
                lines += part.render(data)
            except (KeyError, TypeError, ValueError) as exc:
                lines.append(f"The results could not be read ({type(exc).__name__}: {exc}).")
        elif rec["status"] not in ("not-run", "interrupted") or rec.get("tail"):
            lines += ["No figures. Last lines of its output:", "", "```text"]
            lines += rec.get("tail", [])[-15:] or ["(no output)"]
            lines += ["```"]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def anchor(part: Part) -> str:
    """GitHub's anchor for a part's section heading."""
    text = f"{part.title}: bench/{part.script}".lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--quick", action="store_true", help="small sizes: the whole report in a few minutes"
    )
    p.add_argument("--only", default=",".join(PART_KEYS), help="comma list of benchmarks to run")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the Markdown report")
    p.add_argument(
        "--results",
        type=Path,
        default=DEFAULT_RESULTS,
        help=f"directory of the JSON results ({PREFIX}-*.json)",
    )
    p.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="where the benchmarks put temporary data (TMPDIR; default: the system's)",
    )
    p.add_argument(
        "--pg",
        default="postgres@127.0.0.1:5432",
        help="PostgreSQL for qido.py --postgres (used when reachable)",
    )
    p.add_argument(
        "--render-only",
        action="store_true",
        help="do not run anything: rewrite --out from the results of the last run",
    )
    args = p.parse_args(argv)
    only = [k.strip() for k in args.only.split(",") if k.strip()]
    unknown = set(only) - set(PART_KEYS)
    if unknown or not only:
        p.error(f"--only: choose from {', '.join(PART_KEYS)}")
    args.only = only
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chosen benchmarks and write the report; 0 when every one passed."""
    args = parse_args(argv)
    results = args.results.resolve()
    meta_path = results / f"{PREFIX}.json"
    if args.render_only:
        meta = json.loads(meta_path.read_text())
        args.out.write_text(render(meta, results))
        print(f"report written to {args.out}")
        return 0

    results.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")  # the benchmarks' progress, live
    workdir = Path(tempfile.gettempdir())
    if args.workdir:
        workdir = args.workdir.resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        env["TMPDIR"] = str(workdir)  # every script's temporary directories go there
    t0 = time.perf_counter()
    print("describing the machine ...", flush=True)
    machine = describe_machine(workdir, args.pg)
    python = display(sys.executable)
    meta: dict[str, Any] = {
        "command": shlex.join([python, display(sys.argv[0]), *sys.argv[1:]]),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "quick": args.quick,
        "machine": machine,
        "parts": {},
    }
    interrupted = False
    for part in PARTS:
        if part.key not in args.only:
            continue
        out = results / f"{PREFIX}-{part.key}.json"
        argv_ = part_command(part, args.quick, out, machine["postgresql"] is not None)
        rec: dict[str, Any] = {
            "command": shlex.join([python, *(display(a) for a in argv_[1:])]),
            "json": out.name,
            "status": "not-run",
        }
        meta["parts"][part.key] = rec
        if interrupted:
            continue
        out.unlink(missing_ok=True)  # never report an earlier run's figures
        rec["loadavg_start"] = machine_info()["loadavg"]
        print(f"\n=== {part.key}: {rec['command']}", flush=True)
        try:
            code, tail, wall = run_part(argv_, env, part.key)
        except KeyboardInterrupt:
            interrupted = True
            rec.update(status="interrupted", tail=["(interrupted)"])
            continue
        rec.update(
            exit_code=code, tail=tail, wall_s=round(wall, 1), status=status_of(code, out.is_file())
        )
        print(f"=== {part.key}: {rec['status']} in {duration(wall)}", flush=True)
    meta["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    meta["wall_s"] = round(time.perf_counter() - t0, 1)
    meta["loadavg_end"] = machine_info()["loadavg"]
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(meta, results))
    print(f"\nreport written to {args.out} ({duration(meta['wall_s'])})")
    if interrupted:
        return 130
    return 0 if all(r["status"] == "ok" for r in meta["parts"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
