"""DIMSE benchmark: our server's DICOM listener vs. Orthanc's DICOM server.

Two parts, each server in turn, in the same run, over loopback only:

store   C-STORE of a synthetic 300-slice 512x512 16-bit CT series with DCMTK's
        storescu: one association sending every file, and 8 storescu processes
        at once, each sending 1/8 of the files on its own association. Each run
        starts the server on a fresh, empty data directory; instances/s is the
        wall time of the storescu processes; the median of --runs is reported.
        Afterwards the server must hold every instance.

find    Study Root C-FIND at STUDY level over a large archive (bench/qido.py's
        synthetic one, loaded now or reused from `qido.py --keep DIR`):
        exact PatientID, PatientName prefix wildcard, StudyDate range of a
        month; at concurrency 1 and 8 (one association per worker, or one per
        request). Latency p50/p95, requests/s, and the number of matches per
        request, compared between servers and with the archive's catalog.

Usage (from the repository root):

    .venv/bin/python bench/dimse.py [--runs 3] [--find-studies 10000] [--out results.json]
    .venv/bin/python bench/dimse.py --find-archive /var/tmp/qido-keep   # reuse qido.py's data
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import qido
from common import (
    LOOPBACK,
    MIB,
    OURS_DIMSE_CMD,
    REPO,
    RunningServer,
    ServerError,
    ServerSpec,
    dicomweb_binary,
    dir_bytes,
    fmt,
    generate_ct_series,
    machine_info,
    ours_spec,
    percentile,
    print_table,
    self_peak_rss_mib,
)
from orthanc import (
    DICOMWEB_PLUGIN,
    ORTHANC_BIN,
    DicomListener,
    check_installed,
    orthanc_spec,
    orthanc_version,
)
from pydicom import dcmread
from pydicom.dataset import Dataset
from scu import STUDY_ROOT_FIND, VERIFICATION, Association, DimseError

CALLING_AET = "BENCHSCU"
OURS_AET = "DICOMWEB"
ORTHANC_AET = "ORTHANC"
STORESCU = "/usr/bin/storescu"
# DCMTK leaves Nagle's algorithm on unless TCP_NODELAY is set in the environment;
# storescu would otherwise stall on delayed ACKs (see bench/README.md).
DCMTK_ENV = {"TCP_NODELAY": "1"}
FIND_SHAPES = ("patient-id", "patient-name", "study-date")
# Returned (universal matching) keys of every C-FIND request, besides the matching key.
RETURN_KEYS = (
    "StudyInstanceUID",
    "PatientName",
    "PatientID",
    "StudyDate",
    "ModalitiesInStudy",
    "NumberOfStudyRelatedInstances",
)
DICOM_JSON = "application/dicom+json"


def _median(values: Sequence[float]) -> float | None:
    return round(statistics.median(values), 2) if values else None


# --------------------------------------------------------------------------
# Servers
# --------------------------------------------------------------------------


def make_specs(args: argparse.Namespace) -> list[ServerSpec] | str:
    specs: list[ServerSpec] = []
    for key in [k.strip() for k in args.servers.split(",") if k.strip()]:
        if key == "orthanc":
            problem = check_installed(args.orthanc_bin, args.orthanc_plugin)
            if problem:
                return problem
            listener = DicomListener(
                aet=ORTHANC_AET, peer_aet=CALLING_AET, threads=args.orthanc_dicom_threads
            )
            specs.append(orthanc_spec(args.orthanc_bin, args.orthanc_plugin, listener))
        elif key == "ours":
            if args.ours_cmd.startswith(OURS_DIMSE_CMD) and dicomweb_binary() is None:
                return (
                    "`dicomweb` not found (expected .venv/bin/dicomweb; or pass --servers orthanc)"
                )
            specs.append(ours_spec(args.ours_cmd, dimse_aet=OURS_AET))
        else:
            return f"unknown server {key!r}"
    return specs


def echo_check(server: RunningServer, timeout: float) -> str | None:
    """None when the server answers C-ECHO on its DIMSE port as its AE title, else why not."""
    assert server.spec.dimse_aet is not None
    try:
        with Association.open(
            LOOPBACK,
            server.dimse_port,
            CALLING_AET,
            server.spec.dimse_aet,
            [VERIFICATION],
            timeout=timeout,
        ) as assoc:
            status = assoc.echo()
    except (OSError, DimseError) as exc:
        return f"C-ECHO failed: {type(exc).__name__}: {exc}"
    return None if status == 0 else f"C-ECHO status {status}"


# --------------------------------------------------------------------------
# C-STORE with storescu
# --------------------------------------------------------------------------


@dataclass
class StoreFiles:
    paths: list[Path]
    warmup: list[Path]
    study_uid: str
    sop_class: str
    transfer_syntax: str
    total_bytes: int
    config: Path  # storescu association profile: exactly the files' syntax


def prepare_files(tmp: Path, count: int, warmup: int) -> StoreFiles:
    """The CT series (and a warm-up series of its own) as PS3.10 files in tmp."""
    paths = generate_ct_series(tmp / "series", count)
    warm = generate_ct_series(tmp / "warmup", warmup) if warmup else []
    first = dcmread(paths[0], stop_before_pixels=True)
    sop_class = str(first.file_meta.MediaStorageSOPClassUID)
    syntax = str(first.file_meta.TransferSyntaxUID)
    for path in paths + warm:
        meta = dcmread(path, stop_before_pixels=True).file_meta
        if (str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID)) != (sop_class, syntax):
            raise ValueError(f"{path}: not {sop_class} in {syntax}")
    # A storescu profile with one presentation context: the files' SOP class with
    # their transfer syntax only, so neither side converts anything.
    config = tmp / "storescu.cfg"
    config.write_text(
        "[[TransferSyntaxes]]\n[Files]\n"
        f"TransferSyntax1 = {syntax}\n"
        "[[PresentationContexts]]\n[FilesContexts]\n"
        f"PresentationContext1 = {sop_class}\\Files\n"
        "[[Profiles]]\n[Bench]\nPresentationContexts = FilesContexts\n"
    )
    return StoreFiles(
        paths=paths,
        warmup=warm,
        study_uid=str(first.StudyInstanceUID),
        sop_class=sop_class,
        transfer_syntax=syntax,
        total_bytes=sum(p.stat().st_size for p in paths),
        config=config,
    )


def storescu_argv(
    args: argparse.Namespace,
    files: StoreFiles,
    server: RunningServer,
    paths: Sequence[Path],
    verbose: bool = False,
) -> list[str]:
    assert server.spec.dimse_aet is not None
    return [
        args.storescu,
        *(["-v"] if verbose else []),
        "-aet",
        CALLING_AET,
        "-aec",
        server.spec.dimse_aet,
        "-xf",
        str(files.config),
        "Bench",
        LOOPBACK,
        str(server.dimse_port),
        *(str(p) for p in paths),
    ]


@dataclass
class StorescuRun:
    wall_s: float = 0.0
    exit_codes: list[int | None] = field(default_factory=list)
    timed_out: bool = False
    outputs: list[str] = field(default_factory=list)
    client_cpu_s: float = 0.0

    def problems(self) -> list[str]:
        out: list[str] = []
        if self.timed_out:
            out.append("storescu time limit reached")
        bad = [c for c in self.exit_codes if c != 0]
        if bad:
            out.append(f"storescu exit statuses {bad}")
        # storescu is quiet on success without -v: anything at E: or F: is a failure.
        errors = [
            line
            for text in self.outputs
            for line in text.splitlines()
            if line.startswith(("E:", "F:"))
        ]
        if errors:
            out.append(f"storescu reported {len(errors)} errors, e.g. {errors[0]}")
        return out


def run_storescu(argvs: Sequence[list[str]], workdir: Path, timeout: float) -> StorescuRun:
    """Start every storescu at once, wait for all; bounded by `timeout` seconds."""
    run = StorescuRun()
    logs = [workdir / f"storescu-{n}.log" for n in range(len(argvs))]
    env = {**os.environ, **DCMTK_ENV}
    procs: list[subprocess.Popen[bytes]] = []
    usage0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    try:
        for argv, log in zip(argvs, logs, strict=True):
            with open(log, "wb") as fh:
                procs.append(
                    subprocess.Popen(
                        argv, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT, env=env
                    )
                )
        deadline = start + timeout
        for proc in procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.perf_counter()))
            except subprocess.TimeoutExpired:
                run.timed_out = True
        run.wall_s = time.perf_counter() - start
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    usage1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    run.client_cpu_s = round(
        (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime), 2
    )
    run.exit_codes = [p.returncode for p in procs]
    run.outputs = [log.read_text(errors="replace") for log in logs]
    return run


def count_stored(server: RunningServer, files: StoreFiles) -> tuple[dict[str, Any], list[str]]:
    """How many instances of the series the server holds, asked over HTTP."""
    root = qido.qido_root(server)
    expected = len(files.paths)
    counts: dict[str, Any] = {}
    problems: list[str] = []
    with httpx.Client(timeout=60.0, headers={"Accept": DICOM_JSON}, trust_env=False) as client:
        resp = client.get(
            f"{root}/studies/{files.study_uid}/series", params={"includefield": "00201209"}
        )
        series_count = 0
        if resp.status_code == 200:
            for item in resp.json():
                values = item.get("00201209", {}).get("Value") or [0]
                series_count += int(values[0])
        counts["qido_series_related_instances"] = series_count
        if series_count != expected:
            problems.append(
                f"QIDO-RS NumberOfSeriesRelatedInstances {series_count} of {expected} "
                f"(HTTP {resp.status_code})"
            )
        if server.spec.key == "orthanc":
            stats = client.get(server.base_url + "/statistics").json()
            counts["orthanc_count_instances"] = stats.get("CountInstances")
            if stats.get("CountInstances") != expected + len(files.warmup):
                problems.append(
                    f"/statistics CountInstances {stats.get('CountInstances')} of "
                    f"{expected + len(files.warmup)} (series + warm-up)"
                )
        else:
            why = qido.probe_count(client, f"{root}/studies/{files.study_uid}/instances", expected)
            counts["qido_instances_probe"] = why or "ok"
            if why:
                problems.append(f"QIDO-RS instances of the study: {why}")
    return counts, problems


_CONVERSION = re.compile(r"Converting transfer syntax: (.+?) -> (.+?)\s*$", re.MULTILINE)


def run_store(
    spec: ServerSpec,
    associations: int,
    rep: int,
    files: StoreFiles,
    args: argparse.Namespace,
    tmp: Path,
) -> dict[str, Any]:
    """Fresh server, warm-up, timed storescu run(s), count check, stop."""
    workdir = tmp / f"store-{spec.key}-{associations}-{rep}"
    record: dict[str, Any] = {
        "server": spec.key,
        "server_label": spec.label,
        "associations": associations,
        "run": rep,
        "instances": len(files.paths),
        "mib": round(files.total_bytes / MIB, 1),
    }
    os.sync()  # earlier runs' dirty pages must not be written back during this one
    server = RunningServer(spec, workdir, startup_timeout=args.startup_timeout)
    try:
        server.start()
    except ServerError as exc:
        record.update(ok=False, startup_failed=True, error=str(exc))
        return record
    problems: list[str] = []
    run: StorescuRun | None = None
    try:
        record["pid"] = server.pid
        why = echo_check(server, args.request_timeout)
        if why:
            problems.append(why)
        if files.warmup:
            warm = run_storescu(
                [storescu_argv(args, files, server, files.warmup, verbose=True)],
                workdir,
                args.store_timeout,
            )
            record["warmup"] = {"wall_s": round(warm.wall_s, 3), "problems": warm.problems()}
            # storescu -v names the conversion it applies: none is expected.
            conversions = sorted(set(_CONVERSION.findall(warm.outputs[0])))
            record["warmup"]["conversions"] = [f"{a} -> {b}" for a, b in conversions]
            if any(a != b for a, b in conversions):
                problems.append(f"storescu converted the data set: {conversions}")
            problems += [f"warm-up: {p}" for p in warm.problems()]
        k = len(files.paths)
        chunks = [
            files.paths[i * k // associations : (i + 1) * k // associations]
            for i in range(associations)
        ]
        argvs = [storescu_argv(args, files, server, chunk) for chunk in chunks if chunk]
        cpu0 = server.cpu_seconds()
        run = run_storescu(argvs, workdir, args.store_timeout)
        record["server_cpu_s"] = round(server.cpu_seconds() - cpu0, 2)
        record["client_cpu_s"] = run.client_cpu_s
        record["wall_s"] = round(run.wall_s, 3)
        record["storescu_exit_codes"] = run.exit_codes
        problems += run.problems()
        counts, count_problems = count_stored(server, files)
        record["stored"] = counts
        problems += count_problems
    except (httpx.HTTPError, OSError, ValueError) as exc:
        problems.append(f"{type(exc).__name__}: {exc}")
    finally:
        record["memory"] = server.memory()
        if server.proc is None or server.proc.poll() is not None:
            problems.append("server exited during the run:\n" + server.log_tail())
        server.stop()
    record["stored_mib"] = round(dir_bytes(server.data_dir) / MIB, 1)
    shutil.rmtree(workdir, ignore_errors=True)
    wall = run.wall_s if run is not None else 0.0
    record["inst_per_s"] = round(len(files.paths) / wall, 1) if wall else None
    record["mib_per_s"] = round(files.total_bytes / MIB / wall, 1) if wall else None
    record["peak_rss_mib"] = record["memory"]["peak_rss_mib"]
    record["ok"] = not problems
    record["problems"] = problems
    return record


def store_part(
    args: argparse.Namespace, specs: Sequence[ServerSpec], tmp: Path
) -> tuple[dict[str, Any], bool]:
    t0 = time.perf_counter()
    files = prepare_files(tmp / "files", args.instances, args.warmup)
    print(
        f"C-STORE: {len(files.paths)} CT slices, {files.total_bytes / MIB:.1f} MiB, "
        f"{files.sop_class} in {files.transfer_syntax}, written in "
        f"{time.perf_counter() - t0:.1f}s",
        flush=True,
    )
    shapes = [int(s) for s in args.associations.split(",") if s.strip()]
    runs: list[dict[str, Any]] = []
    for spec in specs:
        for assocs, rep in [(a, r) for a in shapes for r in range(args.runs)]:
            rec = run_store(spec, assocs, rep, files, args, tmp)
            runs.append(rec)
            print(
                f"  {spec.key:8s} {assocs} assoc run {rep}: {fmt(rec.get('inst_per_s'))} inst/s, "
                f"{fmt(rec.get('mib_per_s'))} MiB/s, server CPU {fmt(rec.get('server_cpu_s'))} s, "
                f"storescu CPU {fmt(rec.get('client_cpu_s'))} s, "
                f"peak RSS {fmt(rec.get('peak_rss_mib'))} MiB  "
                f"[{'ok' if rec.get('ok') else 'FAILED'}]",
                flush=True,
            )
            if not rec.get("ok"):
                why = rec.get("error") or "; ".join(rec.get("problems", []))
                print("    " + str(why).replace("\n", "\n    "), flush=True)
            if rec.get("startup_failed"):
                print(f"  {spec.key}: does not start; its remaining runs are skipped")
                break
    rows: list[dict[str, Any]] = []
    keys = [s.key for s in specs]
    for assocs in shapes:
        row: dict[str, Any] = {"shape": f"{assocs} assoc" + ("s" if assocs > 1 else "")}
        row["associations"] = assocs
        for key in keys:
            mine = [r for r in runs if r["server"] == key and r["associations"] == assocs]
            good = [r for r in mine if r.get("ok")]
            row[f"{key}_inst_per_s"] = _median([r["inst_per_s"] for r in good])
            row[f"{key}_server_cpu_s"] = _median([r["server_cpu_s"] for r in good])
            row[f"{key}_peak_rss_mib"] = max(
                (r["peak_rss_mib"] for r in mine if "peak_rss_mib" in r), default=None
            )
            row[f"{key}_ok"] = bool(mine) and len(good) == len(mine)
        o, u = row.get("orthanc_inst_per_s"), row.get("ours_inst_per_s")
        row["ratio_ours_over_orthanc"] = round(u / o, 2) if o and u else None
        rows.append(row)
    ok = bool(runs) and all(r.get("ok") for r in runs)
    files_info = {
        "instances": len(files.paths),
        "mib": round(files.total_bytes / MIB, 1),
        "sop_class": files.sop_class,
        "transfer_syntax": files.transfer_syntax,
        "warmup_instances": len(files.warmup),
    }
    return {"files": files_info, "summary": rows, "runs": runs}, ok


def print_store_summary(rows: Sequence[dict[str, Any]]) -> None:
    lines: list[tuple[str, ...]] = [
        (
            "C-STORE",
            "Orthanc inst/s",
            "ours inst/s",
            "ours/Orthanc",
            "Orthanc CPU s",
            "ours CPU s",
            "Orthanc peak RSS",
            "ours peak RSS",
        )
    ]
    for r in rows:
        flag = "" if r.get("orthanc_ok", True) and r.get("ours_ok", True) else " !"
        lines.append(
            (
                r["shape"] + flag,
                fmt(r.get("orthanc_inst_per_s")),
                fmt(r.get("ours_inst_per_s")),
                fmt(r.get("ratio_ours_over_orthanc"), "x"),
                fmt(r.get("orthanc_server_cpu_s")),
                fmt(r.get("ours_server_cpu_s")),
                fmt(r.get("orthanc_peak_rss_mib"), " MiB"),
                fmt(r.get("ours_peak_rss_mib"), " MiB"),
            )
        )
    print_table(lines)


# --------------------------------------------------------------------------
# C-FIND
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class FindCase:
    """One C-FIND request: its matching keys and the number of matching studies."""

    keys: tuple[tuple[str, str], ...]
    matches: int

    @property
    def label(self) -> str:
        return "&".join(f"{k}={v}" for k, v in self.keys)

    def identifier(self) -> Dataset:
        ds = Dataset()
        ds.QueryRetrieveLevel = "STUDY"
        for keyword in RETURN_KEYS:
            setattr(ds, keyword, None if keyword == "NumberOfStudyRelatedInstances" else "")
        for keyword, value in self.keys:
            setattr(ds, keyword, value)
        return ds


@dataclass(frozen=True)
class FindShape:
    key: str
    cases: list[FindCase]


def build_find_shapes(
    catalog: Sequence[qido.StudyInfo], count: int, seed: int, keys: Sequence[str]
) -> list[FindShape]:
    """The same cases bench/qido.py draws for its QIDO-RS shapes, as C-FIND keys.

    qido.py picks an existing patient per request, 3-letter prefixes of family
    names matching at most 1,000 studies, and random months of 2000-2025.
    """
    shapes = []
    for shape in qido.build_shapes(catalog, count, seed, keys):
        cases = [FindCase(tuple(parse_qsl(c.query)), c.matches) for c in shape.cases]
        shapes.append(FindShape(shape.key, cases))
    return shapes


@dataclass
class FindRun:
    requests: int = 0
    latencies_s: list[float] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    counts: dict[int, int] = field(default_factory=dict)
    inconsistent: set[int] = field(default_factory=set)
    check_failures: list[str] = field(default_factory=list)
    empty_keys: dict[str, int] = field(default_factory=dict)  # return key -> first matches without
    results: int = 0
    wall_s: float = 0.0
    timed_out: bool = False
    client_cpu_s: float = 0.0


def check_first_match(
    case: FindCase, ds: Dataset, by_uid: dict[str, qido.StudyInfo], run: FindRun
) -> None:
    """The first match of a request: its return keys, against the catalog."""
    for keyword in RETURN_KEYS:
        if ds.get(keyword) in (None, "", []):  # absent, or present without a value
            run.empty_keys[keyword] = run.empty_keys.get(keyword, 0) + 1
    uid = str(ds.get("StudyInstanceUID", "") or "")
    study = by_uid.get(uid)
    failures: list[str] = []
    if study is None:
        failures.append(f"StudyInstanceUID {uid!r} is not in the archive")
    else:
        wanted = dict(case.keys)
        if "PatientID" in wanted and study.patient_id != wanted["PatientID"]:
            failures.append(f"study of {study.patient_id}, not {wanted['PatientID']}")
        if "PatientName" in wanted:
            prefix = wanted["PatientName"].rstrip("*").casefold()
            if not study.patient_name.casefold().startswith(prefix):
                failures.append(f"{study.patient_name!r} does not start with {prefix!r}")
        if "StudyDate" in wanted:
            low, _, high = wanted["StudyDate"].partition("-")
            if not low <= study.date <= high:
                failures.append(f"StudyDate {study.date} outside {wanted['StudyDate']}")
        got_pid = str(ds.get("PatientID", "") or "")
        if got_pid and got_pid != study.patient_id:
            failures.append(f"PatientID {got_pid}, catalog {study.patient_id}")
        # One instance per series in the archive.
        n_value = ds.get("NumberOfStudyRelatedInstances")
        if n_value not in (None, "") and int(n_value) != len(study.series):
            failures.append(f"NumberOfStudyRelatedInstances {n_value}, catalog {len(study.series)}")
        m_value = ds.get("ModalitiesInStudy")
        if m_value not in (None, "", []):
            values = list(m_value) if not isinstance(m_value, str) else [m_value]
            if {str(v) for v in values} != study.modalities:
                failures.append(f"ModalitiesInStudy {values}, catalog {sorted(study.modalities)}")
    if failures and len(run.check_failures) < 20:
        run.check_failures.append(f"{case.label}: " + "; ".join(failures))
    elif failures:
        run.check_failures.append("...")


def run_find(
    server: RunningServer,
    shape: FindShape,
    concurrency: int,
    by_uid: dict[str, qido.StudyInfo],
    args: argparse.Namespace,
) -> FindRun:
    """Warm-up, then C-FIND requests from `concurrency` threads, bounded in count and time."""
    assert server.spec.dimse_aet is not None
    run = FindRun()
    per_request = args.find_association == "per-request"
    lock = threading.Lock()
    cases = shape.cases
    identifiers = [c.identifier() for c in cases]

    def associate() -> Association:
        return Association.open(
            LOOPBACK,
            server.dimse_port,
            CALLING_AET,
            str(server.spec.dimse_aet),
            [STUDY_ROOT_FIND],
            timeout=args.request_timeout,
        )

    # Warm-up on one association: cases from the end of the list.
    with contextlib.suppress(OSError, DimseError), associate() as assoc:
        for n in range(args.find_warmup):
            assoc.find(identifiers[-1 - n % len(cases)])

    counter = itertools.count()
    start_box: list[float] = []
    end_box: list[float] = []  # when the last answered request finished
    # Timing starts when every worker has its association (the action runs once,
    # before any waiting thread is released).
    barrier = threading.Barrier(
        concurrency + 1, action=lambda: start_box.append(time.perf_counter())
    )

    def note_error(text: str) -> None:
        with lock:
            run.requests += 1
            if len(run.errors) < 50:
                run.errors.append(text)

    def worker() -> None:
        try:
            work()
        except Exception as exc:  # a bug here must show as a failure, not vanish
            note_error(f"worker crashed: {type(exc).__name__}: {exc}")
            barrier.abort()  # if the others still wait to start, they stop

    def work() -> None:
        assoc: Association | None = None
        if not per_request:
            try:
                assoc = associate()
            except (OSError, DimseError) as exc:
                note_error(f"association: {type(exc).__name__}: {exc}")
        try:
            barrier.wait(timeout=args.request_timeout + 30)
        except threading.BrokenBarrierError:
            return
        deadline = start_box[0] + args.find_duration
        try:
            while True:
                n = next(counter)
                if n >= args.find_requests:
                    return
                if time.perf_counter() >= deadline:
                    run.timed_out = True
                    return
                index = n % len(cases)
                t0 = time.perf_counter()
                try:
                    if per_request:
                        with associate() as one:
                            result = one.find(identifiers[index])
                    else:
                        if assoc is None:
                            assoc = associate()
                        result = assoc.find(identifiers[index])
                except (OSError, DimseError) as exc:
                    note_error(f"{type(exc).__name__}: {exc} ({cases[index].label})")
                    if assoc is not None:
                        assoc.abort()
                        assoc = None  # a new one for the next request
                    continue
                done = time.perf_counter()
                elapsed = done - t0
                status = f"{result.status:04X}" if result.status is not None else "none"
                with lock:
                    end_box[:] = [max([done, *end_box])]
                    run.requests += 1
                    run.latencies_s.append(elapsed)
                    run.statuses[status] = run.statuses.get(status, 0) + 1
                    if result.status != 0:
                        if len(run.errors) < 50:
                            run.errors.append(
                                f"status {status} for {cases[index].label}: {result.error_comment}"
                            )
                        continue
                    run.results += result.matches
                    if run.counts.setdefault(index, result.matches) != result.matches:
                        run.inconsistent.add(index)
                    if result.first is not None:
                        check_first_match(cases[index], result.first, by_uid, run)
        finally:
            if assoc is not None:
                assoc.release()

    threads = [
        threading.Thread(target=worker, name=f"find-{n}", daemon=True) for n in range(concurrency)
    ]
    cpu0 = time.process_time()
    for t in threads:
        t.start()
    try:
        barrier.wait(timeout=args.request_timeout + 30)
    except threading.BrokenBarrierError:
        run.errors.append("workers could not start")
        start_box.append(time.perf_counter())
    hard_stop = start_box[0] + args.find_duration + args.request_timeout + 30
    for t in threads:
        t.join(timeout=max(0.1, hard_stop - time.perf_counter()))
        if t.is_alive():
            run.timed_out = True
            run.errors.append(f"{t.name} still running at the hard time limit")
    # Up to the last answer: releasing the associations afterwards is not timed.
    run.wall_s = (end_box[0] if end_box else time.perf_counter()) - start_box[0]
    run.client_cpu_s = round(time.process_time() - cpu0, 2)
    return run


def find_record(server: str, shape: FindShape, concurrency: int, run: FindRun) -> dict[str, Any]:
    lat = sorted(run.latencies_s)

    def ms(p: float) -> float | None:
        v = percentile(lat, p)
        return None if v is None else round(v * 1000, 2)

    answered = run.statuses.get("0000", 0)
    wrong = {i: n for i, n in run.counts.items() if n != shape.cases[i].matches}
    problems: list[str] = []
    bad = {k: v for k, v in run.statuses.items() if k != "0000"}
    if bad:
        problems.append(f"final statuses {bad}")
    if run.errors:
        problems.append(f"{len(run.errors)} errors, e.g. {run.errors[0]}")
    if run.inconsistent:
        problems.append(f"{len(run.inconsistent)} requests gave different counts when repeated")
    if run.check_failures:
        problems.append(f"first-match checks failed, e.g. {run.check_failures[0]}")
    return {
        "server": server,
        "shape": shape.key,
        "concurrency": concurrency,
        "requests": run.requests,
        "answered": answered,
        "statuses": run.statuses,
        "errors": run.errors[:10],
        "error_count": len(run.errors),
        "wall_s": round(run.wall_s, 3),
        "req_per_s": round(answered / run.wall_s, 1) if run.wall_s and answered else None,
        "latency_p50_ms": ms(0.50),
        "latency_p95_ms": ms(0.95),
        "latency_p99_ms": ms(0.99),
        "latency_max_ms": round(lat[-1] * 1000, 2) if lat else None,
        "results_per_request": round(run.results / answered, 1) if answered else None,
        "matches_per_s": round(run.results / run.wall_s, 1) if run.wall_s else None,
        "distinct_queries": len(run.counts),
        "count_differs_from_catalog": len(wrong),
        "count_examples": [
            {"query": shape.cases[i].label, "results": n, "catalog": shape.cases[i].matches}
            for i, n in list(wrong.items())[:5]
        ],
        "first_match_empty_keys": run.empty_keys,
        "first_match_check_failures": run.check_failures[:10],
        "counts": {str(i): n for i, n in sorted(run.counts.items())},
        "client_cpu_s": run.client_cpu_s,
        "timed_out": run.timed_out,
        "ok": not problems,
        "problems": problems,
    }


def association_overhead(server: RunningServer, args: argparse.Namespace) -> dict[str, Any]:
    """Open an association, C-ECHO, release: `--assoc-requests` times, one at a time."""
    assert server.spec.dimse_aet is not None
    lat: list[float] = []
    errors: list[str] = []
    deadline = time.perf_counter() + args.find_duration
    for _ in range(args.assoc_requests):
        if time.perf_counter() >= deadline:
            break
        t0 = time.perf_counter()
        try:
            with Association.open(
                LOOPBACK,
                server.dimse_port,
                CALLING_AET,
                server.spec.dimse_aet,
                [VERIFICATION],
                timeout=args.request_timeout,
            ) as assoc:
                status = assoc.echo()
            if status != 0:
                errors.append(f"C-ECHO status {status}")
                continue
        except (OSError, DimseError) as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
            continue
        lat.append(time.perf_counter() - t0)
    lat.sort()
    return {
        "server": server.spec.key,
        "requests": len(lat) + len(errors),
        "p50_ms": round((percentile(lat, 0.5) or 0) * 1000, 2) if lat else None,
        "p95_ms": round((percentile(lat, 0.95) or 0) * 1000, 2) if lat else None,
        "errors": errors[:5],
        "ok": not errors and bool(lat),
    }


# Archives


def _catalog(args: argparse.Namespace, studies: int) -> list[qido.StudyInfo]:
    """The archive's catalog: from qido.py's cache if there, else regenerated (deterministic)."""
    cached = (
        Path(args.cache) / f"qido-n{studies}-s{args.seed}-v{qido.DATA_VERSION}" / "catalog.json"
    )
    if cached.exists() and (cached.parent / "complete.json").exists():
        docs = json.loads(cached.read_bytes())
        return [qido.StudyInfo.from_json(d) for d in docs]
    return qido.generate_catalog(studies, args.seed)


_KEPT = re.compile(r"(?P<server>[a-z-]+)-n(?P<n>\d+)-s(?P<s>\d+)-v(?P<v>\d+)")


def kept_archives(root: Path, keys: Sequence[str], seed: int) -> dict[int, dict[str, Path]]:
    """Studies -> {server: workdir} of complete kept loads (qido.py --keep) under root."""
    found: dict[int, dict[str, Path]] = {}
    for entry in sorted(root.iterdir()) if root.is_dir() else []:
        m = _KEPT.fullmatch(entry.name)
        if not m or m["server"] not in keys or int(m["s"]) != seed:
            continue
        if int(m["v"]) != qido.DATA_VERSION:
            continue
        with contextlib.suppress(OSError, ValueError):
            marker = json.loads((entry / "loaded.json").read_text())
            if marker.get("studies") == int(m["n"]) and marker.get("seed") == seed:
                found.setdefault(int(m["n"]), {})[m["server"]] = entry
    return found


@dataclass
class FindTarget:
    spec: ServerSpec
    archive: qido.Archive
    # Either a kept qido.py load (reused, never modified by us except by the
    # server itself) or a qido.Target to load now.
    kept_dir: Path | None
    load_target: qido.Target | None
    record: dict[str, Any] = field(default_factory=dict)


def start_find_server(
    target: FindTarget, tmp: Path, args: argparse.Namespace, instances: Callable[[], list[bytes]]
) -> RunningServer:
    if target.kept_dir is not None:
        server = RunningServer(
            target.spec,
            tmp / f"find-{target.spec.key}",
            startup_timeout=args.startup_timeout,
            fresh=False,
            data_dir=target.kept_dir / "data",
        )
        server.start()
        problems = qido.check_counts(server, target.archive)
        if problems:
            server.stop()
            raise ServerError(f"kept data in {target.kept_dir} is not complete: {problems}")
        target.record["load"] = {"reused": str(target.kept_dir), "ok": True}
        return server
    assert target.load_target is not None
    load_args = argparse.Namespace(
        keep=None,
        pg=None,
        startup_timeout=args.startup_timeout,
        batch=args.batch,
        load_concurrency=args.load_concurrency,
        request_timeout=args.request_timeout,
        load_timeout=args.load_timeout,
    )
    server = qido.prepare_target(target.load_target, target.archive, instances, load_args)
    target.record["load"] = target.load_target.record.get("load", {})
    if not target.record["load"].get("ok"):
        server.stop()
        raise ServerError(f"load failed: {target.record['load'].get('problems')}")
    return server


def pick_kept(args: argparse.Namespace, keys: Sequence[str]) -> tuple[int, dict[str, Path]] | str:
    """The kept qido.py load to reuse (--find-archive): studies and workdirs, or why none."""
    root = Path(args.find_archive)
    kept = kept_archives(root, keys, args.seed)
    complete = {n: dirs for n, dirs in kept.items() if set(dirs) >= set(keys)}
    studies = args.find_studies or (max(complete) if complete else None)
    if studies is None or studies not in complete:
        have = {n: sorted(d) for n, d in kept.items()}
        return (
            f"--find-archive {root}: no complete bench/qido.py load of "
            f"{studies or 'any number of'} studies (seed {args.seed}) for {', '.join(keys)}; "
            f"found {have or 'none'}. Run bench/qido.py --keep {root} --studies N first, "
            "or leave out --find-archive to load an archive now."
        )
    return studies, complete[studies]


def find_part(
    args: argparse.Namespace, specs: Sequence[ServerSpec], tmp: Path
) -> tuple[dict[str, Any], bool]:
    keys = [s.key for s in specs]
    loaded: list[bytes] = []
    if args.find_archive:
        root = Path(args.find_archive)
        picked = pick_kept(args, keys)
        if isinstance(picked, str):
            raise SystemExit(picked)
        studies, dirs = picked
        catalog = _catalog(args, studies)
        archive = qido.Archive(
            Path(args.cache), studies, args.seed, catalog, sum(len(s.series) for s in catalog)
        )
        targets = [FindTarget(s, archive, dirs[s.key], None) for s in specs]
        print(f"C-FIND: reusing the {studies}-study archive kept in {root}", flush=True)
    else:
        archive = qido.prepare_archive(Path(args.cache), args.find_studies or 10_000, args.seed)
        targets = [
            FindTarget(
                s, archive, None, qido.Target(s, tmp / f"find-{s.key}-{archive.key}", None, "stow")
            )
            for s in specs
        ]

    def instances() -> list[bytes]:
        if not loaded:
            loaded.extend(archive.read_instances())
        return loaded

    shape_keys = [s for s in args.find_shapes.split(",") if s]
    shapes = build_find_shapes(archive.catalog, args.find_requests, args.seed, shape_keys)
    concurrencies = [int(c) for c in args.find_concurrency.split(",") if c.strip()]
    by_uid = {s.uid: s for s in archive.catalog}
    print(
        f"C-FIND: {archive.studies} studies, {archive.instances} instances; shapes "
        f"{', '.join(shape_keys)} at concurrency {args.find_concurrency}; up to "
        f"{args.find_requests} requests or {args.find_duration:.0f}s each; association "
        f"{args.find_association}",
        flush=True,
    )
    records: list[dict[str, Any]] = []
    assoc_records: list[dict[str, Any]] = []
    for target in targets:
        key = target.spec.key
        try:
            server = start_find_server(target, tmp, args, instances)
        except (ServerError, httpx.HTTPError, OSError) as exc:
            target.record["error"] = str(exc)
            print(f"  {key}: FAILED to start or load: {exc}", flush=True)
            continue
        try:
            why = echo_check(server, args.request_timeout)
            if why:
                target.record["error"] = why
                print(f"  {key}: {why}; its C-FIND runs are skipped", flush=True)
                continue
            for shape in shapes:
                for conc in concurrencies:
                    cpu0 = server.cpu_seconds()
                    run = run_find(server, shape, conc, by_uid, args)
                    rec = find_record(key, shape, conc, run)
                    rec["server_cpu_s"] = round(server.cpu_seconds() - cpu0, 2)
                    records.append(rec)
                    print(
                        f"  {key:8s} {shape.key:12s} c={conc}: {fmt(rec['req_per_s'])} req/s, "
                        f"p50 {fmt(rec['latency_p50_ms'])} ms, p95 {fmt(rec['latency_p95_ms'])} "
                        f"ms, {fmt(rec['results_per_request'])} matches/req, server CPU "
                        f"{rec['server_cpu_s']} s, client CPU {rec['client_cpu_s']} s"
                        + ("" if rec["ok"] else f"  [{'; '.join(rec['problems'])}]"),
                        flush=True,
                    )
            if args.assoc_requests:
                a = association_overhead(server, args)
                assoc_records.append(a)
                print(
                    f"  {key:8s} associate + C-ECHO + release: p50 {fmt(a['p50_ms'])} ms, "
                    f"p95 {fmt(a['p95_ms'])} ms" + ("" if a["ok"] else f"  [{a['errors']}]"),
                    flush=True,
                )
            target.record["memory"] = server.memory()
            if server.proc is None or server.proc.poll() is not None:
                target.record["error"] = "server exited:\n" + server.log_tail()
        finally:
            server.stop()
            if target.load_target is not None:
                shutil.rmtree(target.load_target.workdir, ignore_errors=True)
    comparisons = compare_find_counts(shapes, concurrencies, records, keys)
    rows = find_rows(shapes, concurrencies, records, keys)
    ok = (
        all(r["ok"] for r in records)
        and all(a["ok"] for a in assoc_records)
        and not any("error" in t.record for t in targets)
        and len(records) == len(targets) * len(shapes) * len(concurrencies)
    )
    result = {
        "archive": {
            "studies": archive.studies,
            "instances": archive.instances,
            "seed": archive.seed,
            "data_version": qido.DATA_VERSION,
            "reused_from": args.find_archive,
        },
        "servers": {t.spec.key: t.record for t in targets},
        "shapes": {s.key: len(s.cases) for s in shapes},
        "summary": rows,
        "count_comparison": comparisons,
        "association_overhead": assoc_records,
        "runs": records,
    }
    return result, ok


def compare_find_counts(
    shapes: Sequence[FindShape],
    concurrencies: Sequence[int],
    records: Sequence[dict[str, Any]],
    keys: Sequence[str],
) -> list[dict[str, Any]]:
    """Per shape: requests whose match counts differ between servers (all concurrencies)."""
    out: list[dict[str, Any]] = []
    for shape in shapes:
        counts: dict[str, dict[str, int]] = {}
        for r in records:
            if r["shape"] == shape.key:
                counts.setdefault(r["server"], {}).update(r["counts"])
        for a, b in itertools.combinations(keys, 2):
            ca, cb = counts.get(a), counts.get(b)
            if ca is None or cb is None:
                continue
            common = sorted(set(ca) & set(cb), key=int)
            differ = [i for i in common if ca[i] != cb[i]]
            out.append(
                {
                    "shape": shape.key,
                    "servers": [a, b],
                    "compared": len(common),
                    "differ": len(differ),
                    "examples": [
                        {
                            "query": shape.cases[int(i)].label,
                            a: ca[i],
                            b: cb[i],
                            "catalog": shape.cases[int(i)].matches,
                        }
                        for i in differ[:5]
                    ],
                }
            )
    return out


def find_rows(
    shapes: Sequence[FindShape],
    concurrencies: Sequence[int],
    records: Sequence[dict[str, Any]],
    keys: Sequence[str],
) -> list[dict[str, Any]]:
    by = {(r["server"], r["shape"], r["concurrency"]): r for r in records}
    rows: list[dict[str, Any]] = []
    for shape in shapes:
        for conc in concurrencies:
            ref = by.get(("orthanc", shape.key, conc))
            for key in keys:
                rec = by.get((key, shape.key, conc))
                if rec is None:
                    continue
                row = {
                    k: rec[k]
                    for k in (
                        "shape",
                        "concurrency",
                        "server",
                        "req_per_s",
                        "latency_p50_ms",
                        "latency_p95_ms",
                        "results_per_request",
                        "distinct_queries",
                        "count_differs_from_catalog",
                        "server_cpu_s",
                        "ok",
                    )
                }
                if ref is not None and key != "orthanc":
                    r, o = rec["req_per_s"], ref["req_per_s"]
                    row["req_per_s_vs_orthanc"] = round(r / o, 2) if r and o else None
                    r, o = rec["latency_p50_ms"], ref["latency_p50_ms"]
                    row["p50_vs_orthanc"] = round(r / o, 2) if r and o else None
                rows.append(row)
    return rows


def print_find_summary(result: dict[str, Any]) -> None:
    lines: list[tuple[str, ...]] = [
        (
            "C-FIND",
            "conc",
            "server",
            "req/s",
            "p50 ms",
            "p95 ms",
            "matches/req",
            "counts vs catalog",
            "req/s vs Orthanc",
            "p50 vs Orthanc",
        )
    ]
    for r in result["summary"]:
        lines.append(
            (
                r["shape"],
                str(r["concurrency"]),
                r["server"] + ("" if r["ok"] else " !"),
                fmt(r["req_per_s"]),
                fmt(r["latency_p50_ms"]),
                fmt(r["latency_p95_ms"]),
                fmt(r["results_per_request"]),
                "ok"
                if not r["count_differs_from_catalog"]
                else f"{r['count_differs_from_catalog']}/{r['distinct_queries']} differ",
                fmt(r.get("req_per_s_vs_orthanc"), "x"),
                fmt(r.get("p50_vs_orthanc"), "x"),
            )
        )
    print_table(lines)
    if result["association_overhead"]:
        print("\nassociate + C-ECHO + release, one at a time:")
        for a in result["association_overhead"]:
            print(f"  {a['server']:8s} p50 {fmt(a['p50_ms'])} ms, p95 {fmt(a['p95_ms'])} ms")
    print("\nmatch counts, per pair of servers (same request, same data):")
    for c in result["count_comparison"]:
        a, b = c["servers"]
        line = f"  {c['shape']:12s} {a} vs {b}: {c['compared']} requests compared, "
        if not c["differ"]:
            print(line + "all agree")
            continue
        print(line + f"{c['differ']} differ")
        for ex in c["examples"][:3]:
            print(f"      {ex['query']}: {a} {ex[a]}, {b} {ex[b]}, catalog {ex['catalog']}")
    empty = {
        (r["server"], k): v
        for r in result["runs"]
        for k, v in r["first_match_empty_keys"].items()
        if v
    }
    if empty:
        print("\nreturn keys without a value in the first match of a request:")
        for (server, keyword), n in sorted(empty.items()):
            print(f"  {server}: {keyword} ({n} requests)")


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------


def dcmtk_version(binary: str) -> str:
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except OSError:
        return "unknown"
    m = re.search(r"v(\d+\.\d+\.\d+)", out)
    return m.group(1) if m else "unknown"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="DIMSE benchmark (C-STORE, C-FIND): ours vs. Orthanc (loopback only).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--parts", default="store,find", help="comma list: store, find")
    p.add_argument("--servers", default="orthanc,ours", help="comma list: orthanc, ours")
    p.add_argument("--out", default=str(REPO / "bench" / "results-dimse.json"))
    g = p.add_argument_group("C-STORE")
    g.add_argument("--instances", type=int, default=300, help="slices in the CT series")
    g.add_argument(
        "--associations", default="1,8", help="comma list: concurrent storescu associations"
    )
    g.add_argument("--runs", type=int, default=3, help="runs per shape (median reported)")
    g.add_argument("--warmup", type=int, default=4, help="warm-up instances per run")
    g.add_argument("--storescu", default=STORESCU)
    g.add_argument("--store-timeout", type=float, default=900.0, help="bound on one run, s")
    g = p.add_argument_group("C-FIND")
    g.add_argument(
        "--find-archive",
        default=None,
        metavar="DIR",
        help="reuse servers loaded by `bench/qido.py --keep DIR` (read-only: never reloaded)",
    )
    g.add_argument(
        "--find-studies",
        type=int,
        default=None,
        help="studies in the archive (default: 10000, or with --find-archive the largest kept)",
    )
    g.add_argument("--seed", type=int, default=1, help="seed of the archive (as bench/qido.py)")
    g.add_argument(
        "--cache",
        default=str(Path(tempfile.gettempdir()) / "dicomweb-bench-cache"),
        help="bench/qido.py's cache of generated archives",
    )
    g.add_argument("--find-shapes", default=",".join(FIND_SHAPES), help="comma list")
    g.add_argument("--find-concurrency", default="1,8", help="comma list of concurrencies")
    g.add_argument("--find-requests", type=int, default=300, help="at most this many per run")
    g.add_argument("--find-duration", type=float, default=20.0, help="at most this many s per run")
    g.add_argument("--find-warmup", type=int, default=5, help="warm-up requests per run")
    g.add_argument(
        "--find-association",
        choices=("reuse", "per-request"),
        default="reuse",
        help="one association per worker, or a new one for every request (timed)",
    )
    g.add_argument(
        "--assoc-requests",
        type=int,
        default=100,
        help="associate + C-ECHO + release cycles timed per server (0: none)",
    )
    g.add_argument("--batch", type=int, default=50, help="instances per STOW-RS load request")
    g.add_argument("--load-concurrency", type=int, default=4, help="concurrent load requests")
    g.add_argument("--load-timeout", type=float, default=4 * 3600.0, help="bound on one load, s")
    g = p.add_argument_group("servers")
    g.add_argument("--request-timeout", type=float, default=120.0, help="socket timeout, s")
    g.add_argument("--startup-timeout", type=float, default=300.0)
    g.add_argument("--workdir", default=None, help="parent for temporary data")
    g.add_argument(
        "--ours-cmd",
        # A DIMSE listener process per core (Orthanc runs 4 DICOM threads by default).
        default=f"{OURS_DIMSE_CMD} --dimse-processes {os.cpu_count() or 1}",
        help="command for our server; {dicomweb} {data_dir} {port} {dimse_port} {aet} {workdir}",
    )
    g.add_argument("--orthanc-bin", default=ORTHANC_BIN)
    g.add_argument("--orthanc-plugin", default=DICOMWEB_PLUGIN)
    g.add_argument(
        "--orthanc-dicom-threads",
        type=int,
        default=4,
        help="Orthanc's DicomThreadsCount (its default is 4)",
    )
    args = p.parse_args(argv)
    parts = {s.strip() for s in args.parts.split(",") if s.strip()}
    if not parts or parts - {"store", "find"}:
        p.error("--parts is a comma list of store, find")
    args.parts = parts
    if args.instances < 1 or args.runs < 1 or args.warmup < 0:
        p.error("--instances and --runs must be >= 1, --warmup >= 0")
    unknown = set(args.find_shapes.split(",")) - set(FIND_SHAPES)
    if unknown:
        p.error(f"unknown C-FIND shapes {sorted(unknown)}; known: {', '.join(FIND_SHAPES)}")
    if args.find_requests < 1 or any(
        int(c) < 1 for c in args.find_concurrency.split(",") if c.strip()
    ):
        p.error("--find-requests and every --find-concurrency must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    t_start = time.perf_counter()
    if "store" in args.parts and shutil.which(args.storescu) is None:
        print(f"storescu not found at {args.storescu} (apt-get install dcmtk)", file=sys.stderr)
        return 2
    made = make_specs(args)
    if isinstance(made, str):
        print(made, file=sys.stderr)
        return 2
    specs = made
    if "find" in args.parts and args.find_archive:
        picked = pick_kept(args, [s.key for s in specs])
        if isinstance(picked, str):
            print(picked, file=sys.stderr)
            return 2
    info: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_info(),
        "orthanc_version": orthanc_version(args.orthanc_bin)
        if any(s.key == "orthanc" for s in specs)
        else None,
        "dcmtk_version": dcmtk_version(args.storescu),
        "args": {k: sorted(v) if isinstance(v, set) else v for k, v in vars(args).items()},
    }
    busy = info["machine"].get("loadavg", [0.0])[0]
    if busy > 0.5 * (info["machine"]["cpus"] or 1):
        print(f"WARNING: load average {busy} before the start: figures will be noisy")
    out: dict[str, Any] = dict(info)
    ok = True
    with tempfile.TemporaryDirectory(prefix="dimse-bench-", dir=args.workdir) as tmp_name:
        tmp = Path(tmp_name)
        if "store" in args.parts:
            store, store_ok = store_part(args, specs, tmp)
            out["store"] = store
            ok = ok and store_ok
        if "find" in args.parts:
            find, find_ok = find_part(args, specs, tmp)
            out["find"] = find
            ok = ok and find_ok
    if "store" in out:
        print()
        print_store_summary(out["store"]["summary"])
    if "find" in out:
        print()
        print_find_summary(out["find"])
    out["client_peak_rss_mib"] = self_peak_rss_mib()
    out["total_s"] = round(time.perf_counter() - t_start, 1)
    out["all_ok"] = ok
    out_path = Path(args.out)
    out_path.write_text(json.dumps(out, indent=2, default=str) + "\n")
    print(f"\nresults written to {out_path}" + ("" if ok else "  (SOME RUNS FAILED)"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
