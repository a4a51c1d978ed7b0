"""WADO-RS and rendered-image benchmark: our server vs. Orthanc + DICOMweb vs. nginx.

A synthetic 300-slice 512x512 16-bit CT series and one uncompressed 100-frame
512x512 instance (same study) are stored into our server and into Orthanc
(STOW-RS). Each server is then timed on the retrieve shapes a viewer uses:
series metadata (cold after a restart, then warm), single frames, whole-series
retrieve, rendered JPEG/PNG (uncached and cached) and first-load latency of a
rendered frame. nginx serves the same bytes as static files (the stored .dcm
files, each frame's bytes, the rendered images), as the machine's limit for
the same byte counts.

Usage (from the repository root):

    .venv/bin/python bench/wado.py [--out bench/results-wado.json]
    .venv/bin/python bench/wado.py --instances 60 --frames 20 --requests 50 --duration 5
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
from common import (
    OURS_CMD,
    REPO,
    Body,
    Fetch,
    FetchRun,
    RunningServer,
    ServerError,
    ServerSpec,
    build_bodies,
    dicomweb_binary,
    fetch_all,
    fmt,
    generate_ct_series,
    generate_multiframe,
    machine_info,
    multipart_body,
    new_boundary,
    ours_spec,
    post_bodies,
    print_table,
    split_multipart,
)
from orthanc import DICOMWEB_PLUGIN, ORTHANC_BIN, check_installed, orthanc_spec, orthanc_version
from PIL import Image
from pydicom.filereader import dcmread

NGINX_BIN = "/usr/sbin/nginx"
FRAME_ACCEPT = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
DICOM_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'
JSON_ACCEPT = "application/dicom+json"
MEDIA = {"jpeg": "image/jpeg", "png": "image/png"}
SUFFIX = {"jpeg": "jpg", "png": "png"}

# --------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------


@dataclass
class Data:
    study: str
    series: str
    sops: list[str]
    files: list[Path]
    frame_len: int  # bytes of one 512x512 16-bit frame
    mf_series: str
    mf_sop: str
    mf_path: Path
    mf_frames: int
    pixel_offsets: dict[Path, int] = field(default_factory=dict)

    def frame_bytes(self, index: int) -> bytes:
        """Frame 1 of CT instance `index`, as stored."""
        path = self.files[index]
        with open(path, "rb") as fh:
            fh.seek(self.pixel_offsets[path])
            return fh.read(self.frame_len)

    def mf_frame_bytes(self, number: int) -> bytes:
        with open(self.mf_path, "rb") as fh:
            fh.seek(self.pixel_offsets[self.mf_path] + (number - 1) * self.frame_len)
            return fh.read(self.frame_len)


def _pixel_offset(path: Path, expected_len: int) -> int:
    """Where the PixelData value starts (it is the last element, native)."""
    size = path.stat().st_size
    offset = size - expected_len
    ds = dcmread(path)
    with open(path, "rb") as fh:
        fh.seek(offset)
        head = fh.read(min(4096, expected_len))
    if bytes(ds.PixelData[: len(head)]) != head or len(ds.PixelData) != expected_len:
        raise RuntimeError(f"unexpected pixel data layout in {path}")
    return offset


def prepare_data(tmp: Path, instances: int, frames: int) -> Data:
    files = generate_ct_series(tmp / "series", instances)
    first = dcmread(files[0], stop_before_pixels=True)
    frame_len = int(first.Rows) * int(first.Columns) * 2
    mf_path = generate_multiframe(tmp / "multiframe" / "MF0001.dcm", frames, first.StudyInstanceUID)
    mf = dcmread(mf_path, stop_before_pixels=True)
    sops = [str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in files]
    data = Data(
        study=str(first.StudyInstanceUID),
        series=str(first.SeriesInstanceUID),
        sops=sops,
        files=files,
        frame_len=frame_len,
        mf_series=str(mf.SeriesInstanceUID),
        mf_sop=str(mf.SOPInstanceUID),
        mf_path=mf_path,
        mf_frames=frames,
    )
    data.pixel_offsets[files[0]] = _pixel_offset(files[0], frame_len)
    for path in files[1:]:  # same header layout: same offset from the end
        data.pixel_offsets[path] = path.stat().st_size - frame_len
    data.pixel_offsets[mf_path] = _pixel_offset(mf_path, frame_len * frames)
    return data


def store(server: RunningServer, data: Data, args: argparse.Namespace) -> dict[str, Any]:
    """STOW-RS the series (25 instances per request, 2 at a time), then the multi-frame."""
    boundary = new_boundary()
    bodies = build_bodies((p.read_bytes() for p in data.files), 25, boundary)
    bodies.append(Body(multipart_body([data.mf_path.read_bytes()], boundary), 1))
    t0 = time.perf_counter()
    load = post_bodies(server.stow_url, bodies, boundary, 2, args.request_timeout, 1800.0)
    return {
        "wall_s": round(time.perf_counter() - t0, 2),
        "ok": load.all_ok,
        "problems": load.problems(),
    }


# --------------------------------------------------------------------------
# Shapes
# --------------------------------------------------------------------------


@dataclass
class Shape:
    key: str
    label: str
    letter: str
    description: str


SHAPES = [
    Shape("metadata-cold", "series metadata, cold", "a", "first request after a restart"),
    Shape("metadata-warm", "series metadata, warm", "a", "after a first request"),
    Shape("first-load", "rendered frame, first load c=1", "f", "distinct instances, c=1"),
    Shape("frame", "frame of a CT instance", "b", "random instance, frames/1"),
    Shape("mf-frame", "frame of the multi-frame instance", "c", "random frame"),
    Shape("series", "whole-series retrieve", "d", "application/dicom, transfer-syntax=*"),
    Shape("jpeg-uncached", "rendered JPEG, uncached", "e", "random instance, window varied"),
    Shape("png-uncached", "rendered PNG, uncached", "e", "random instance, window varied"),
    Shape("jpeg-cached", "rendered JPEG, cached", "e", "same URL repeatedly"),
    Shape("png-cached", "rendered PNG, cached", "e", "same URL repeatedly"),
    Shape(
        "mf-rendered", "rendered frame of the multi-frame", "e", "random frame, JPEG, window varied"
    ),
]
SHAPE_KEYS = [s.key for s in SHAPES]
# Shapes for which ours/nginx is reported (nginx serves the same bytes).
NGINX_RATIO = {"frame", "mf-frame", "series", "jpeg-cached", "png-cached"}
NGINX_SKIPS = {"metadata-cold", "metadata-warm"}


class Urls:
    """Paths of each shape on one server: DICOMweb under `root`, or nginx's files."""

    def __init__(self, data: Data, root: str | None) -> None:
        self.data = data
        self.root = root  # None: nginx

    def _inst(self, i: int) -> str:
        d = self.data
        return f"{self.root}/studies/{d.study}/series/{d.series}/instances/{d.sops[i]}"

    def _mf(self) -> str:
        d = self.data
        return f"{self.root}/studies/{d.study}/series/{d.mf_series}/instances/{d.mf_sop}"

    def metadata(self) -> str:
        return f"{self.root}/studies/{self.data.study}/series/{self.data.series}/metadata"

    def series(self) -> str:
        if self.root is None:
            return "/series.bin"
        return f"{self.root}/studies/{self.data.study}/series/{self.data.series}"

    def frame(self, i: int) -> str:
        return f"/frames/{i}.bin" if self.root is None else f"{self._inst(i)}/frames/1"

    def mf_frame(self, n: int) -> str:
        return f"/mfframes/{n}.bin" if self.root is None else f"{self._mf()}/frames/{n}"

    def rendered(self, i: int, kind: str, window: str | None = None) -> str:
        if self.root is None:
            return f"/rendered/{i}.{SUFFIX[kind]}"
        return f"{self._inst(i)}/rendered" + (f"?window={window}" if window else "")

    def frame_rendered(self, i: int) -> str:
        if self.root is None:
            return f"/rendered/{i}.jpg"
        return f"{self._inst(i)}/frames/1/rendered"

    def mf_rendered(self, n: int, window: str | None = None) -> str:
        if self.root is None:
            return f"/mfrendered/{n}.jpg"
        return f"{self._mf()}/frames/{n}/rendered" + (f"?window={window}" if window else "")


def window_for(k: int) -> str:
    """A distinct window for every k >= 0, so no cache can answer.

    center,width,function: Orthanc's plugin requires the function (PS3.18 makes it optional).
    """
    return f"{k % 2000 - 1000},{100 + k // 2000},linear"


@dataclass
class Plan:
    fetches: list[Fetch]
    warmup: list[Fetch]
    concurrency: int
    max_requests: int
    duration: float


class Checker:
    """Checks responses; remembers digests of retrieves to compare servers."""

    def __init__(self, data: Data, nginx: bool) -> None:
        self.data = data
        self.nginx = nginx
        self.metadata_len: int | None = None
        self.series_digest: str | None = None
        self.series_payload: int | None = None
        self.series_equal_stored: bool | None = None
        self.decoded = 0
        self._frames: dict[tuple[str, int], bytes] = {}
        self._stored_digest: str | None = None

    def _expected_frame(self, kind: str, n: int) -> bytes:
        key = (kind, n)
        if key not in self._frames:
            b = self.data.frame_bytes(n) if kind == "ct" else self.data.mf_frame_bytes(n)
            self._frames[key] = b
        return self._frames[key]

    def stored_digest(self) -> str:
        if self._stored_digest is None:
            digests = sorted(hashlib.sha256(p.read_bytes()).hexdigest() for p in self.data.files)
            self._stored_digest = hashlib.sha256("".join(digests).encode()).hexdigest()
        return self._stored_digest

    def frame(self, _n: int, fetch: Fetch, resp: httpx.Response) -> str | None:
        kind, index = fetch.tag
        expected = self._expected_frame(kind, index)
        if self.nginx:
            payload: Any = resp.content
        else:
            parts = split_multipart(resp.headers.get("content-type", ""), resp.content)
            if parts is None or len(parts) != 1:
                ct = resp.headers.get("content-type")
                return f"not a multipart response with one part ({ct})"
            payload = parts[0]
        if len(payload) != len(expected):
            return f"frame of {len(payload)} bytes, expected {len(expected)}"
        if payload != expected:
            return "frame bytes differ from the stored pixel data"
        return None

    def series(self, n: int, _fetch: Fetch, resp: httpx.Response) -> str | None:
        if self.nginx:
            parts = split_multipart(f"multipart/related; boundary={NGINX_BOUNDARY}", resp.content)
        else:
            parts = split_multipart(resp.headers.get("content-type", ""), resp.content)
        if parts is None:
            return "not a multipart response"
        if len(parts) != len(self.data.files):
            return f"{len(parts)} parts, expected {len(self.data.files)}"
        payload = sum(len(p) for p in parts)
        if self.series_payload is None:
            self.series_payload = payload
            digests = sorted(hashlib.sha256(p).hexdigest() for p in parts)
            self.series_digest = hashlib.sha256("".join(digests).encode()).hexdigest()
            self.series_equal_stored = self.series_digest == self.stored_digest()
        elif payload != self.series_payload:
            return f"payload of {payload} bytes, earlier {self.series_payload}"
        return None

    def metadata(self, _n: int, _fetch: Fetch, resp: httpx.Response) -> str | None:
        size = len(resp.content)
        if size == self.metadata_len:
            return None
        try:
            doc = orjson.loads(resp.content)
        except orjson.JSONDecodeError:
            return "metadata is not JSON"
        if not isinstance(doc, list) or len(doc) != len(self.data.files):
            count = len(doc) if isinstance(doc, list) else "no"
            return f"metadata lists {count} instances, expected {len(self.data.files)}"
        if self.metadata_len is None:
            self.metadata_len = size
        return None

    def image(self, kind: str) -> Callable[[int, Fetch, httpx.Response], str | None]:
        media = MEDIA[kind]

        def check(n: int, _fetch: Fetch, resp: httpx.Response) -> str | None:
            ct = resp.headers.get("content-type", "")
            if not ct.startswith(media):
                return f"Content-Type {ct!r}, expected {media}"
            if not resp.content:
                return "empty image"
            if n < 4 or n % 50 == 0:  # a sample is decoded
                try:
                    with Image.open(io.BytesIO(resp.content)) as img:
                        img.load()
                        if img.format != kind.upper():
                            return f"decodes as {img.format}, expected {kind.upper()}"
                        if img.size != (512, 512):
                            return f"image is {img.size}, expected (512, 512)"
                except Exception as exc:
                    return f"not a decodable {kind}: {exc}"
                self.decoded += 1
            return None

        return check


NGINX_BOUNDARY = "wado-bench-static-series"


def plan_shape(
    key: str, urls: Urls, data: Data, args: argparse.Namespace, rng: random.Random
) -> Plan:
    """The requests of one shape; the same seed gives every server the same ones."""
    n, c, t = args.requests, args.concurrency, args.duration
    pool = list(range(len(data.sops) - args.first_load))  # the reserved ones are never used
    frames = range(1, data.mf_frames + 1)
    fa = {"Accept": FRAME_ACCEPT}
    if key == "metadata-warm":
        f = Fetch(urls.metadata(), {"Accept": JSON_ACCEPT})
        return Plan([f], [f], c, n, t)
    if key == "frame":
        fs = [Fetch(urls.frame(i), fa, ("ct", i)) for i in rng.choices(pool, k=n + args.warmup)]
        return Plan(fs[args.warmup :], fs[: args.warmup], c, n, t)
    if key == "mf-frame":
        picks = rng.choices(frames, k=n + args.warmup)
        fs = [Fetch(urls.mf_frame(k), fa, ("mf", k)) for k in picks]
        return Plan(fs[args.warmup :], fs[: args.warmup], c, n, t)
    if key == "series":
        f = Fetch(urls.series(), {"Accept": DICOM_ACCEPT})
        return Plan([f], [f] if args.warmup else [], c, args.series_requests, t)
    if key in ("jpeg-uncached", "png-uncached"):
        kind = key.split("-")[0]
        base = 0 if kind == "jpeg" else 10**6
        picks = rng.choices(pool, k=n + args.warmup)
        fs = [
            Fetch(urls.rendered(i, kind, window_for(base + j)), {"Accept": MEDIA[kind]})
            for j, i in enumerate(picks)
        ]
        return Plan(fs[args.warmup :], fs[: args.warmup], c, n, t)
    if key in ("jpeg-cached", "png-cached"):
        kind = key.split("-")[0]
        f = Fetch(urls.rendered(pool[0], kind), {"Accept": MEDIA[kind]})
        return Plan([f], [f], c, n, t)
    if key == "mf-rendered":
        picks = rng.choices(frames, k=n + args.warmup)
        fs = [
            Fetch(urls.mf_rendered(k, window_for(2 * 10**6 + j)), {"Accept": MEDIA["jpeg"]})
            for j, k in enumerate(picks)
        ]
        return Plan(fs[args.warmup :], fs[: args.warmup], c, n, t)
    if key == "first-load":
        reserved = range(len(data.sops) - args.first_load, len(data.sops))
        fs = [Fetch(urls.frame_rendered(i), {"Accept": MEDIA["jpeg"]}) for i in reserved]
        return Plan(fs, [], 1, len(fs), max(t, 600.0))
    raise ValueError(key)


def check_for(key: str, checker: Checker) -> Callable[[int, Fetch, httpx.Response], str | None]:
    if key.startswith("metadata"):
        return checker.metadata
    if key in ("frame", "mf-frame"):
        return checker.frame
    if key == "series":
        return checker.series
    if key.startswith("png"):
        return checker.image("png")
    return checker.image("jpeg")


# --------------------------------------------------------------------------
# nginx
# --------------------------------------------------------------------------

NGINX_CONF = """\
worker_processes {workers};
daemon off;
master_process on;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
{user}
events {{ worker_connections 256; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    client_body_temp_path {workdir}/tmp-body;
    proxy_temp_path {workdir}/tmp-proxy;
    fastcgi_temp_path {workdir}/tmp-fastcgi;
    uwsgi_temp_path {workdir}/tmp-uwsgi;
    scgi_temp_path {workdir}/tmp-scgi;
    types {{
        application/octet-stream bin;
        image/jpeg jpg;
        image/png png;
    }}
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location = /healthz {{ return 200 "ok"; }}
        location = /series.bin {{
            default_type "multipart/related; type=\\"application/dicom\\"; boundary={boundary}";
            types {{ }}
        }}
    }}
}}
"""


def nginx_spec(binary: str, workers: int) -> ServerSpec:
    def command(workdir: Path, data_dir: Path, port: int, _dimse: int) -> list[str]:
        user = "user nobody nogroup;" if os.geteuid() == 0 else ""
        conf = workdir / "nginx.conf"
        conf.write_text(
            NGINX_CONF.format(
                workers=workers,
                workdir=workdir,
                user=user,
                port=port,
                root=data_dir,
                boundary=NGINX_BOUNDARY,
            )
        )
        return [binary, "-c", str(conf), "-p", str(workdir), "-e", "stderr"]

    return ServerSpec(
        key="nginx",
        label="nginx (static files)",
        stow_path="/",
        health_path="/healthz",
        command=command,
    )


def write_static(root: Path, data: Data, renders: dict[str, bytes]) -> dict[str, Any]:
    """The files nginx serves; `renders` maps a relative path to rendered bytes."""
    for sub in ("frames", "mfframes", "rendered", "mfrendered"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(len(data.files)):
        (root / "frames" / f"{i}.bin").write_bytes(data.frame_bytes(i))
    for k in range(1, data.mf_frames + 1):
        (root / "mfframes" / f"{k}.bin").write_bytes(data.mf_frame_bytes(k))
    with open(root / "series.bin", "wb") as out:
        head = (
            f"--{NGINX_BOUNDARY}\r\nContent-Type: application/dicom; "
            "transfer-syntax=1.2.840.10008.1.2.1\r\n\r\n"
        ).encode()
        for path in data.files:
            out.write(head)
            out.write(path.read_bytes())
            out.write(b"\r\n")
        out.write(f"--{NGINX_BOUNDARY}--\r\n".encode())
    for rel, blob in renders.items():
        (root / rel).write_bytes(blob)
    # Workers may run as nobody: make the tree readable.
    for dirpath, _dirnames, filenames in os.walk(root):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            os.chmod(os.path.join(dirpath, name), 0o644)
    os.chmod(root.parent, 0o755)  # the benchmark's own temporary directory
    return {"series_bin_bytes": (root / "series.bin").stat().st_size, "renders": len(renders)}


def collect_renders(
    base: str, urls: Urls, data: Data, args: argparse.Namespace
) -> dict[str, bytes]:
    """Default rendering of every CT instance (JPEG, PNG) and multi-frame frame (JPEG)."""
    out: dict[str, bytes] = {}
    with httpx.Client(base_url=base, timeout=args.request_timeout, trust_env=False) as client:
        for i in range(len(data.sops)):
            for kind in ("jpeg", "png"):
                r = client.get(urls.rendered(i, kind), headers={"Accept": MEDIA[kind]})
                if r.status_code == 200:
                    out[f"rendered/{i}.{SUFFIX[kind]}"] = r.content
        for k in range(1, data.mf_frames + 1):
            r = client.get(urls.mf_rendered(k), headers={"Accept": MEDIA["jpeg"]})
            if r.status_code == 200:
                out[f"mfrendered/{k}.jpg"] = r.content
    return out


# --------------------------------------------------------------------------
# Running one server
# --------------------------------------------------------------------------


def shape_record(
    server: str, key: str, run: FetchRun, cpu_s: float | None, extra: dict[str, Any]
) -> dict[str, Any]:
    rec = {"server": server, "shape": key, **run.summary(), **extra}
    rec["server_cpu_s"] = None if cpu_s is None else round(cpu_s, 2)
    rec["ok_all"] = run.error_count == 0 and run.requests > 0 and run.ok == run.requests
    return rec


def timed(
    server: RunningServer, key: str, plan: Plan, check: Any, args: argparse.Namespace
) -> tuple[FetchRun, float]:
    cpu0 = server.cpu_seconds()
    run = fetch_all(
        server.base_url,
        plan.fetches,
        plan.concurrency,
        plan.max_requests,
        plan.duration,
        args.request_timeout,
        check,
        plan.warmup,
    )
    return run, server.cpu_seconds() - cpu0


def report(rec: dict[str, Any]) -> None:
    status = "ok" if rec.get("ok_all") else "FAILED"
    print(
        f"  {rec['server']:8s} {rec['shape']:14s} {fmt(rec.get('req_per_s')):>8} req/s "
        f"{fmt(rec.get('mib_per_s')):>7} MiB/s  p50 {fmt(rec.get('latency_p50_ms'))} ms "
        f"p95 {fmt(rec.get('latency_p95_ms'))} ms  n={rec.get('requests')}  [{status}]",
        flush=True,
    )
    for e in rec.get("errors", [])[:3]:
        print(f"    {e}")


def run_dicomweb(
    spec: ServerSpec,
    root: str,
    data: Data,
    args: argparse.Namespace,
    tmp: Path,
    shapes: Sequence[str],
    want_renders: bool,
) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, bytes]]:
    """Store, restart, cold shapes, warm shapes; for ours or Orthanc."""
    records: list[dict[str, Any]] = []
    info: dict[str, Any] = {"server": spec.key, "label": spec.label}
    urls = Urls(data, root)
    checker = Checker(data, nginx=False)
    data_dir = tmp / f"{spec.key}-data"
    os.sync()
    first = RunningServer(spec, tmp / f"{spec.key}-load", args.startup_timeout, data_dir=data_dir)
    try:
        first.start()
    except ServerError as exc:
        info["error"] = str(exc)
        print(f"  {spec.key}: does not start: {exc}")
        return records, info, {}
    try:
        info["store"] = store(first, data, args)
        print(f"  {spec.key}: stored in {info['store']['wall_s']} s", flush=True)
        if not info["store"]["ok"]:
            print(f"    store problems: {info['store']['problems'][:3]}")
    finally:
        first.stop()
    os.sync()
    server = RunningServer(
        spec, tmp / f"{spec.key}-run", args.startup_timeout, fresh=False, data_dir=data_dir
    )
    try:
        server.start()
    except ServerError as exc:
        info["error"] = str(exc)
        print(f"  {spec.key}: does not restart: {exc}")
        return records, info, {}
    renders: dict[str, bytes] = {}
    try:
        if "metadata-cold" in shapes:
            plan = Plan([Fetch(urls.metadata(), {"Accept": JSON_ACCEPT})], [], 1, 1, 600.0)
            run, cpu = timed(server, "metadata-cold", plan, checker.metadata, args)
            rec = shape_record(spec.key, "metadata-cold", run, cpu, {})
            records.append(rec)
            report(rec)
        for key in [k for k in SHAPE_KEYS if k in shapes and k != "metadata-cold"]:
            rng = random.Random(f"{args.seed}-{key}")
            plan = plan_shape(key, urls, data, args, rng)
            run, cpu = timed(server, key, plan, check_for(key, checker), args)
            extra: dict[str, Any] = {}
            if key == "series":
                extra = {
                    "payload_bytes": checker.series_payload,
                    "payload_digest": checker.series_digest,
                    "payload_equal_stored_files": checker.series_equal_stored,
                }
            rec = shape_record(spec.key, key, run, cpu, extra)
            records.append(rec)
            report(rec)
            if key == "series" and checker.series_equal_stored is False:
                print("    note: retrieved instances are not byte-identical to the stored files")
        info["images_decoded"] = checker.decoded
        info["memory"] = server.memory()
        alive = server.proc is not None and server.proc.poll() is None
        info["alive_at_end"] = alive
        if want_renders and alive:
            t0 = time.perf_counter()
            renders = collect_renders(server.base_url, urls, data, args)
            print(
                f"  {spec.key}: {len(renders)} rendered images kept for nginx "
                f"({time.perf_counter() - t0:.1f} s)",
                flush=True,
            )
    finally:
        server.stop()
        info["log_tail"] = server.log_tail(15)
    if not args.keep:
        shutil.rmtree(data_dir, ignore_errors=True)
    return records, info, renders


def run_nginx(
    data: Data,
    args: argparse.Namespace,
    tmp: Path,
    shapes: Sequence[str],
    renders: dict[str, bytes],
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    records: list[dict[str, Any]] = []
    root = tmp / "static"
    info = {"server": "nginx", **write_static(root, data, renders)}
    spec = nginx_spec(args.nginx_bin, args.nginx_workers)
    urls = Urls(data, None)
    checker = Checker(data, nginx=True)
    server = RunningServer(
        spec, tmp / "nginx-run", args.startup_timeout, fresh=False, data_dir=root
    )
    try:
        server.start()
    except ServerError as exc:
        info["error"] = str(exc)
        print(f"  nginx: does not start: {exc}")
        return records, info
    try:
        for key in [k for k in SHAPE_KEYS if k in shapes and k not in NGINX_SKIPS]:
            if (
                key.startswith(("jpeg", "png", "mf-rendered")) or key == "first-load"
            ) and not renders:
                continue
            rng = random.Random(f"{args.seed}-{key}")
            plan = plan_shape(key, urls, data, args, rng)
            run, cpu = timed(server, key, plan, check_for(key, checker), args)
            extra = {"payload_bytes": checker.series_payload} if key == "series" else {}
            rec = shape_record("nginx", key, run, cpu, extra)
            records.append(rec)
            report(rec)
    finally:
        server.stop()
    return records, info


# --------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


def summarise(records: list[dict[str, Any]], shapes: Sequence[str]) -> list[dict[str, Any]]:
    by = {(r["server"], r["shape"]): r for r in records}
    rows = []
    for shape in SHAPES:
        if shape.key not in shapes:
            continue
        row: dict[str, Any] = {"shape": shape.key, "letter": shape.letter, "label": shape.label}
        for server in ("ours", "orthanc", "nginx"):
            r = by.get((server, shape.key))
            if r is None:
                continue
            row[server] = {
                k: r.get(k)
                for k in ("req_per_s", "mib_per_s", "latency_p50_ms", "latency_p95_ms", "ok_all")
            }
        ours, orth, ngx = row.get("ours", {}), row.get("orthanc", {}), row.get("nginx", {})
        single = shape.key in ("metadata-cold", "first-load")
        if not single:
            row["ours_over_orthanc_req_per_s"] = _ratio(
                ours.get("req_per_s"), orth.get("req_per_s")
            )
        row["ours_over_orthanc_p50"] = _ratio(
            ours.get("latency_p50_ms"), orth.get("latency_p50_ms")
        )
        if shape.key in NGINX_RATIO:
            row["ours_over_nginx_req_per_s"] = _ratio(ours.get("req_per_s"), ngx.get("req_per_s"))
        rows.append(row)
    return rows


def print_summary(rows: list[dict[str, Any]]) -> None:
    head = (
        "shape",
        "ours req/s",
        "ours MiB/s",
        "ours p50/p95 ms",
        "Orthanc req/s",
        "Orthanc p50/p95 ms",
        "nginx req/s",
        "nginx MiB/s",
        "req/s ours/Orth",
        "p50 ours/Orth",
        "req/s ours/nginx",
    )
    lines = [head]
    for r in rows:
        cells = [f"({r['letter']}) {r['shape']}"]
        bad = False
        for server, cols in (("ours", 3), ("orthanc", 2), ("nginx", 2)):
            s = r.get(server)
            if s is None:
                cells += ["-"] * cols
                continue
            bad |= not s.get("ok_all")
            cells.append(fmt(s.get("req_per_s")))
            if server != "orthanc":
                cells.append(fmt(s.get("mib_per_s")))
            if server != "nginx":
                cells.append(f"{fmt(s.get('latency_p50_ms'))}/{fmt(s.get('latency_p95_ms'))}")
        cells += [
            fmt(r.get("ours_over_orthanc_req_per_s"), "x"),
            fmt(r.get("ours_over_orthanc_p50"), "x"),
            fmt(r.get("ours_over_nginx_req_per_s"), "x"),
        ]
        if bad:
            cells[0] += " !"
        lines.append(cells)
    print_table(lines)
    print(
        "req/s ratios > 1 and p50 ratios < 1 favour ours; '!' marks a shape with failed checks.\n"
        "Uncached rendering varies window=c,w per request so that no cache can answer."
    )


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--servers", default="ours,orthanc,nginx", help="comma-separated subset")
    p.add_argument("--shapes", default=",".join(SHAPE_KEYS), help="comma-separated subset")
    p.add_argument("--instances", type=int, default=300, help="CT slices in the series")
    p.add_argument("--frames", type=int, default=100, help="frames of the multi-frame instance")
    p.add_argument("--concurrency", type=int, default=8, help="connections per shape")
    p.add_argument(
        "--requests", type=int, default=1000, help="at most this many requests per shape"
    )
    p.add_argument(
        "--series-requests", type=int, default=40, help="at most this many whole-series retrieves"
    )
    p.add_argument("--duration", type=float, default=20.0, help="at most this long per shape, s")
    p.add_argument("--warmup", type=int, default=8, help="untimed requests before each shape")
    p.add_argument(
        "--first-load",
        type=int,
        default=20,
        help="instances kept out of every other shape, for the first-load latency",
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", default=None, help="JSON results (bench/results-wado.json)")
    p.add_argument("--workdir", default=None, help="where the temporary directory goes")
    p.add_argument("--keep", action="store_true", help="keep the servers' data directories")
    p.add_argument("--startup-timeout", type=float, default=90.0)
    p.add_argument("--request-timeout", type=float, default=300.0)
    p.add_argument("--ours-cmd", default=OURS_CMD)
    p.add_argument("--orthanc-bin", default=ORTHANC_BIN)
    p.add_argument("--orthanc-plugin", default=DICOMWEB_PLUGIN)
    p.add_argument("--nginx-bin", default=NGINX_BIN)
    p.add_argument("--nginx-workers", type=int, default=os.cpu_count() or 1)
    args = p.parse_args(argv)
    if args.instances <= args.first_load or args.frames < 1 or args.requests < 1:
        p.error("--instances must exceed --first-load; --frames and --requests must be >= 1")
    unknown = set(args.shapes.split(",")) - set(SHAPE_KEYS)
    if unknown:
        p.error(f"unknown shapes {sorted(unknown)}; known: {', '.join(SHAPE_KEYS)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    keys = [k.strip() for k in args.servers.split(",") if k.strip()]
    shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    for key in keys:
        if key == "orthanc" and (problem := check_installed(args.orthanc_bin, args.orthanc_plugin)):
            print(problem, file=sys.stderr)
            return 2
        if key == "ours" and args.ours_cmd == OURS_CMD and dicomweb_binary() is None:
            print("`dicomweb` not found (expected .venv/bin/dicomweb)", file=sys.stderr)
            return 2
        if key == "nginx" and shutil.which(args.nginx_bin) is None:
            print(
                f"nginx not found at {args.nginx_bin} (apt-get install -y nginx)", file=sys.stderr
            )
            return 2
        if key not in ("ours", "orthanc", "nginx"):
            print(f"unknown server {key!r}", file=sys.stderr)
            return 2
    info: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_info(),
        "orthanc_version": orthanc_version(args.orthanc_bin) if "orthanc" in keys else None,
        "args": vars(args),
    }
    if info["machine"]["loadavg"] and info["machine"]["loadavg"][0] > 0.5 * (os.cpu_count() or 1):
        print(f"warning: load average {info['machine']['loadavg']}: figures will be noisy")
    records: list[dict[str, Any]] = []
    servers: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="wado-bench-", dir=args.workdir) as tmp_name:
        tmp = Path(tmp_name)
        t0 = time.perf_counter()
        data = prepare_data(tmp, args.instances, args.frames)
        print(
            f"generated {len(data.files)} CT slices and a {data.mf_frames}-frame instance "
            f"in {time.perf_counter() - t0:.1f}s; {info['machine']['cpus']} CPUs",
            flush=True,
        )
        renders: dict[str, bytes] = {}
        for key in [k for k in ("ours", "orthanc") if k in keys]:
            if key == "ours":
                spec, root = ours_spec(args.ours_cmd), "/dicomweb"
            else:
                spec, root = orthanc_spec(args.orthanc_bin, args.orthanc_plugin), "/dicom-web"
            recs, sinfo, got = run_dicomweb(
                spec, root, data, args, tmp, shapes, "nginx" in keys and not renders
            )
            records += recs
            servers.append(sinfo)
            renders = renders or got
        if "nginx" in keys:
            recs, sinfo = run_nginx(data, args, tmp, shapes, renders)
            records += recs
            servers.append(sinfo)
    digests = {r["server"]: r.get("payload_digest") for r in records if r["shape"] == "series"}
    known = {d for d in digests.values() if d}
    rows = summarise(records, shapes)
    print()
    print_summary(rows)
    if len(known) > 1:
        print(f"whole-series retrieve: payload bytes differ between servers ({digests})")
    ok = (
        bool(records)
        and all(r.get("ok_all") for r in records)
        and not any("error" in s for s in servers)
    )
    out = {
        **info,
        "servers": servers,
        "summary": rows,
        "runs": records,
        "series_payload_equal_between_servers": len(known) <= 1 if known else None,
        "all_ok": ok,
    }
    out_path = Path(args.out) if args.out else REPO / "bench" / "results-wado.json"
    out_path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"\nresults written to {out_path}" + ("" if ok else "  (SOME CHECKS FAILED)"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
