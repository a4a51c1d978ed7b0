"""STOW-RS ingest benchmark: our DICOMweb server vs. Orthanc + DICOMweb plugin.

Default mode: a synthetic 300-slice 512x512 16-bit CT series is uploaded to
each server in four shapes (1 or 50 instances per request, 1 or 8 concurrent
connections). Every (server, shape) run starts the server on a fresh empty
data directory, warms it up with a few instances, then times the upload of
the whole series with request bodies built in memory beforehand. It reports
instances/second (wall time) and the server's peak RSS.

--large: one ~2 GB multipart request (streamed from a generator) into our
server only, compared with a single-request upload of the series, to show
that the server's memory does not grow with the size of the upload.

Usage (from the repository root):

    .venv/bin/python bench/stow.py [--instances 300] [--out results.json]
    .venv/bin/python bench/stow.py --large [--large-gb 2]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import (
    MIB,
    OURS_CMD,
    REPO,
    RunningServer,
    SeriesTemplate,
    ServerError,
    ServerSpec,
    build_bodies,
    dicomweb_binary,
    dir_bytes,
    fixed_uid,
    generate_ct_series,
    machine_info,
    new_boundary,
    ours_spec,
    post_bodies,
    print_table,
    self_peak_rss_mib,
    stream_upload,
)
from common import fmt as _fmt
from orthanc import DICOMWEB_PLUGIN, ORTHANC_BIN, check_installed, orthanc_spec, orthanc_version


@dataclass(frozen=True)
class Shape:
    per_request: int
    concurrency: int

    @property
    def name(self) -> str:
        return f"{self.per_request}/req c={self.concurrency}"

    @classmethod
    def parse(cls, text: str) -> Shape:
        per, _, conc = text.lower().partition("x")
        return cls(int(per), int(conc))


DEFAULT_SHAPES = "1x1,1x8,50x1,50x8"


# --------------------------------------------------------------------------
# Throughput mode
# --------------------------------------------------------------------------


def run_shape(
    spec: ServerSpec,
    shape: Shape,
    template: SeriesTemplate,
    args: argparse.Namespace,
    workdir: Path,
) -> dict[str, Any]:
    """One server start, warm-up, timed upload of the series, stop."""
    boundary = new_boundary()
    study = fixed_uid()
    # Fresh UIDs for this shape; the warm-up gets a series of its own.
    warm = build_bodies(
        template.instances(args.warmup, study_uid=study),
        min(shape.per_request, max(args.warmup, 1)),
        boundary,
    )
    bodies = build_bodies(
        template.instances(args.instances, study_uid=study), shape.per_request, boundary
    )
    body_bytes = sum(len(b.data) for b in bodies)
    record: dict[str, Any] = {
        "server": spec.key,
        "server_label": spec.label,
        "shape": shape.name,
        "per_request": shape.per_request,
        "concurrency": shape.concurrency,
        "instances": args.instances,
        "requests": len(bodies),
        "body_mib": round(body_bytes / MIB, 1),
    }
    os.sync()  # previous runs' dirty pages must not be written back during this one
    server = RunningServer(spec, workdir, startup_timeout=args.startup_timeout)
    try:
        server.start()
    except ServerError as exc:
        record.update(ok=False, startup_failed=True, error=str(exc))
        return record
    try:
        record["pid"] = server.pid
        if warm:
            w = post_bodies(
                server.stow_url,
                warm,
                boundary,
                shape.concurrency,
                args.request_timeout,
                args.run_timeout,
            )
            record["warmup"] = w.summary()
        cpu0, client0 = server.cpu_seconds(), time.process_time()
        load = post_bodies(
            server.stow_url,
            bodies,
            boundary,
            shape.concurrency,
            args.request_timeout,
            args.run_timeout,
        )
        record["server_cpu_s"] = round(server.cpu_seconds() - cpu0, 2)
        record["client_cpu_s"] = round(time.process_time() - client0, 2)
        record["memory"] = server.memory()
        alive = server.proc is not None and server.proc.poll() is None
    finally:
        server.stop()
    record["stored_mib"] = round(dir_bytes(server.data_dir) / MIB, 1)
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    record["load"] = load.summary()
    record["wall_s"] = round(load.wall_s, 3)
    record["inst_per_s"] = round(load.instances_ok / load.wall_s, 2) if load.wall_s else 0.0
    record["mib_per_s"] = round(body_bytes / MIB / load.wall_s, 1) if load.wall_s else 0.0
    record["peak_rss_mib"] = record["memory"]["peak_rss_mib"]
    record["ok"] = load.all_ok and alive and record.get("warmup", {}).get("all_ok", True)
    if not alive:
        record["error"] = "server exited during the run:\n" + server.log_tail()
    elif not load.all_ok:
        record["error"] = "; ".join(load.problems())
    elif not record["ok"]:
        record["error"] = "warm-up: " + "; ".join(record["warmup"]["problems"])
    return record


def _median(values: Sequence[float]) -> float | None:
    return round(statistics.median(values), 2) if values else None


def summarise(
    runs: list[dict[str, Any]], shapes: list[Shape], keys: list[str]
) -> list[dict[str, Any]]:
    rows = []
    for shape in shapes:
        row: dict[str, Any] = {"shape": shape.name}
        for key in keys:
            mine = [r for r in runs if r["server"] == key and r["shape"] == shape.name]
            good = [r for r in mine if r.get("ok")]
            row[f"{key}_inst_per_s"] = _median([r["inst_per_s"] for r in good])
            row[f"{key}_peak_rss_mib"] = max(
                (r["peak_rss_mib"] for r in mine if "peak_rss_mib" in r), default=None
            )
            row[f"{key}_ok"] = bool(mine) and len(good) == len(mine)
        o, u = row.get("orthanc_inst_per_s"), row.get("ours_inst_per_s")
        row["ratio_ours_over_orthanc"] = round(u / o, 2) if o and u else None
        rows.append(row)
    return rows


def print_summary(rows: list[dict[str, Any]]) -> None:
    head = (
        "shape",
        "Orthanc inst/s",
        "ours inst/s",
        "ours/Orthanc",
        "Orthanc peak RSS",
        "ours peak RSS",
    )
    lines = [head]
    for r in rows:
        lines.append(
            (
                r["shape"] + ("" if r.get("orthanc_ok", True) and r.get("ours_ok", True) else " !"),
                _fmt(r.get("orthanc_inst_per_s")),
                _fmt(r.get("ours_inst_per_s")),
                _fmt(r.get("ratio_ours_over_orthanc"), "x"),
                _fmt(r.get("orthanc_peak_rss_mib"), " MiB"),
                _fmt(r.get("ours_peak_rss_mib"), " MiB"),
            )
        )
    print_table(lines)


def throughput_mode(
    args: argparse.Namespace, specs: list[ServerSpec], template: SeriesTemplate, tmp: Path
) -> tuple[dict[str, Any], bool]:
    shapes = [Shape.parse(s) for s in args.shapes.split(",") if s.strip()]
    runs: list[dict[str, Any]] = []
    for spec in specs:  # one server after the other, never both at once
        for shape, rep in [(shape, rep) for shape in shapes for rep in range(args.repeat)]:
            workdir = tmp / f"{spec.key}-{shape.per_request}x{shape.concurrency}-{rep}"
            rec = run_shape(spec, shape, template, args, workdir)
            rec["repeat"] = rep
            runs.append(rec)
            status = "ok" if rec.get("ok") else "FAILED"
            print(
                f"  {spec.key:8s} {shape.name:14s} rep {rep}: "
                f"{_fmt(rec.get('inst_per_s'))} inst/s, "
                f"{_fmt(rec.get('mib_per_s'))} MiB/s, "
                f"peak RSS {_fmt(rec.get('peak_rss_mib'))} MiB, "
                f"server CPU {_fmt(rec.get('server_cpu_s'))} s  [{status}]",
                flush=True,
            )
            if not rec.get("ok"):
                print("    " + str(rec.get("error", "")).replace("\n", "\n    "))
            if rec.get("startup_failed"):
                print(f"  {spec.key}: does not start; its remaining runs are skipped")
                break
    rows = summarise(runs, shapes, [s.key for s in specs])
    print()
    print_summary(rows)
    all_ok = all(r.get("ok") for r in runs)
    return {"mode": "throughput", "summary": rows, "runs": runs}, all_ok


# --------------------------------------------------------------------------
# Large-upload mode
# --------------------------------------------------------------------------


def large_mode(
    args: argparse.Namespace, spec: ServerSpec, template: SeriesTemplate, tmp: Path
) -> tuple[dict[str, Any], bool]:
    inst_size = statistics.mean(template.sizes(len(template)))
    large_count = max(1, math.ceil(args.large_gb * 1e9 / inst_size))
    uploads = [("series", args.instances), ("large", large_count)]
    results: list[dict[str, Any]] = []
    for name, count in uploads:
        workdir = tmp / f"large-{spec.key}-{name}"
        boundary = new_boundary()
        sizes = template.sizes(count)
        rec: dict[str, Any] = {"upload": name, "server": spec.key, "instances": count}
        os.sync()
        server = RunningServer(spec, workdir, startup_timeout=args.startup_timeout)
        print(f"  {name}: {count} instances in one streamed request ...", flush=True)
        try:
            server.start()
        except ServerError as exc:
            rec.update(ok=False, error=str(exc))
            results.append(rec)
            print("    " + str(exc).replace("\n", "\n    "))
            continue
        try:
            cpu0 = server.cpu_seconds()
            load, total = stream_upload(
                server.stow_url, template.instances(count), sizes, boundary, args.large_timeout
            )
            rec["server_cpu_s"] = round(server.cpu_seconds() - cpu0, 2)
            rec["memory"] = server.memory()
            alive = server.proc is not None and server.proc.poll() is None
        finally:
            server.stop()
        rec["stored_mib"] = round(dir_bytes(server.data_dir) / MIB, 1)
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        rec.update(
            body_mib=round(total / MIB, 1),
            wall_s=round(load.wall_s, 2),
            mib_per_s=round(total / MIB / load.wall_s, 1) if load.wall_s else 0.0,
            inst_per_s=round(load.instances_ok / load.wall_s, 2) if load.wall_s else 0.0,
            peak_rss_mib=rec["memory"]["peak_rss_mib"],
            load=load.summary(),
            ok=load.all_ok and alive,
        )
        if not rec["ok"]:
            rec["error"] = (
                ("server exited:\n" + server.log_tail())
                if not alive
                else ("; ".join(load.problems()))
            )
            print("    FAILED: " + rec["error"].replace("\n", "\n    "))
        results.append(rec)

    print()
    head = ("upload", "instances", "body MiB", "wall s", "MiB/s", "peak RSS MiB")
    lines = [head] + [
        (
            r["upload"] + ("" if r.get("ok") else " !"),
            str(r["instances"]),
            _fmt(r.get("body_mib")),
            _fmt(r.get("wall_s")),
            _fmt(r.get("mib_per_s")),
            _fmt(r.get("peak_rss_mib")),
        )
        for r in results
    ]
    print_table(lines)
    summary: dict[str, Any] = {}
    if len(results) == 2 and all("peak_rss_mib" in r for r in results):
        small, big = results
        summary = {
            "rss_ratio_large_over_series": round(big["peak_rss_mib"] / small["peak_rss_mib"], 2),
            "rss_growth_mib": round(big["peak_rss_mib"] - small["peak_rss_mib"], 1),
            "upload_growth_mib": round(big["body_mib"] - small["body_mib"], 1),
        }
        print(
            f"\npeak RSS large/series: {summary['rss_ratio_large_over_series']}x "
            f"({summary['rss_growth_mib']:+} MiB for {summary['upload_growth_mib']:+} MiB "
            f"more upload); client peak RSS {self_peak_rss_mib()} MiB"
        )
    summary["client_peak_rss_mib"] = self_peak_rss_mib()
    all_ok = all(r.get("ok") for r in results)
    return {"mode": "large", "summary": summary, "runs": results}, all_ok


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="STOW-RS ingest benchmark: ours vs. Orthanc (loopback only).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--instances", type=int, default=300, help="slices in the CT series")
    p.add_argument(
        "--out",
        default=None,
        help="JSON results file (default: bench/results-stow.json, "
        "bench/results-large.json with --large)",
    )
    p.add_argument("--servers", default="orthanc,ours", help="comma list: orthanc, ours")
    p.add_argument(
        "--shapes", default=DEFAULT_SHAPES, help="comma list of INSTANCES_PER_REQUESTxCONCURRENCY"
    )
    p.add_argument("--warmup", type=int, default=4, help="warm-up instances per run")
    p.add_argument("--repeat", type=int, default=3, help="runs per shape (median reported)")
    p.add_argument("--request-timeout", type=float, default=300.0, help="seconds per request")
    p.add_argument(
        "--run-timeout",
        type=float,
        default=900.0,
        help="no new request starts after this many seconds of a run",
    )
    p.add_argument("--startup-timeout", type=float, default=90.0)
    p.add_argument("--workdir", default=None, help="parent for temporary files")
    p.add_argument("--keep", action="store_true", help="keep each run's data directory")
    p.add_argument(
        "--ours-cmd",
        default=OURS_CMD,
        help="command for our server; {dicomweb} {data_dir} {port} {workdir}",
    )
    p.add_argument("--ours-stow-path", default="/dicomweb/studies")
    p.add_argument("--ours-health-path", default="/healthz")
    p.add_argument("--orthanc-bin", default=ORTHANC_BIN)
    p.add_argument("--orthanc-plugin", default=DICOMWEB_PLUGIN)
    p.add_argument(
        "--large",
        action="store_true",
        help="large-upload memory test instead of the throughput table",
    )
    p.add_argument("--large-gb", type=float, default=2.0, help="size of the large upload")
    p.add_argument(
        "--large-target",
        choices=("ours", "orthanc"),
        default="ours",
        help="server for --large (orthanc: only to check the harness)",
    )
    p.add_argument(
        "--large-timeout", type=float, default=1800.0, help="bound on each --large upload, seconds"
    )
    args = p.parse_args(argv)
    if args.instances < 1 or args.warmup < 0 or args.repeat < 1:
        p.error("--instances and --repeat must be >= 1, --warmup >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    keys = (
        ["ours"]
        if args.large and args.large_target == "ours"
        else (
            ["orthanc"] if args.large else [k.strip() for k in args.servers.split(",") if k.strip()]
        )
    )
    specs: list[ServerSpec] = []
    for key in keys:
        if key == "orthanc":
            problem = check_installed(args.orthanc_bin, args.orthanc_plugin)
            if problem:
                print(problem, file=sys.stderr)
                return 2
            specs.append(orthanc_spec(args.orthanc_bin, args.orthanc_plugin))
        elif key == "ours":
            if args.ours_cmd == OURS_CMD and dicomweb_binary() is None:
                print(
                    "`dicomweb` not found (expected .venv/bin/dicomweb; install the project "
                    "into .venv, or pass --servers orthanc)",
                    file=sys.stderr,
                )
                return 2
            specs.append(ours_spec(args.ours_cmd, args.ours_stow_path, args.ours_health_path))
        else:
            print(f"unknown server {key!r}", file=sys.stderr)
            return 2

    info: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_info(),
        "orthanc_version": orthanc_version(args.orthanc_bin) if "orthanc" in keys else None,
        "args": vars(args),
    }
    with tempfile.TemporaryDirectory(prefix="stow-bench-", dir=args.workdir) as tmp_name:
        tmp = Path(tmp_name)
        t0 = time.perf_counter()
        paths = generate_ct_series(tmp / "series", args.instances)
        template = SeriesTemplate(paths)
        size = sum(template.sizes(len(template)))
        print(
            f"generated {len(paths)} CT slices ({size / MIB:.1f} MiB) in "
            f"{time.perf_counter() - t0:.1f}s; {info['machine']['cpus']} CPUs",
            flush=True,
        )
        if args.large:
            result, ok = large_mode(args, specs[0], template, tmp)
        else:
            result, ok = throughput_mode(args, specs, template, tmp)
    out = {**info, **result, "all_ok": ok}
    out_path = (
        Path(args.out)
        if args.out
        else (REPO / "bench" / ("results-large.json" if args.large else "results-stow.json"))
    )
    out_path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"\nresults written to {out_path}" + ("" if ok else "  (SOME RUNS FAILED)"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
