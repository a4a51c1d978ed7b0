"""Shared helpers for the benchmarks (bench/stow.py, bench/qido.py, bench/dimse.py, bench/wado.py).

Everything here is independent of the server under test: synthetic CT data,
UID re-stamping, multipart/related bodies, starting and stopping a server
process (ours or any other), sampling its memory and CPU from /proc, the
upload loops, percentiles, machine information and plain-text tables.

Linux only (it reads /proc). Only loopback addresses are ever used.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import platform
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filereader import dcmread
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian

LOOPBACK = "127.0.0.1"
REPO = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024

# --------------------------------------------------------------------------
# UIDs
# --------------------------------------------------------------------------

# pydicom's registered root. Every UID we make is exactly UID_LEN characters
# long (even, so no padding byte), which lets us re-stamp UIDs inside an
# encoded file by overwriting bytes in place without re-encoding anything.
UID_ROOT = "1.2.826.0.1.3680043.8.498."
UID_LEN = 64


def fixed_uid() -> str:
    """A random UID of exactly UID_LEN characters (no leading zero)."""
    digits = UID_LEN - len(UID_ROOT) - 1
    return f"{UID_ROOT}1{secrets.randbelow(10**digits):0{digits}d}"


# --------------------------------------------------------------------------
# Synthetic CT series
# --------------------------------------------------------------------------


def _phantom_slice(
    rng: np.random.Generator, rows: int, cols: int, index: int, count: int
) -> np.ndarray:
    """A crude chest-like phantom in stored values (HU + 1024), 12 bits."""
    yy, xx = np.mgrid[-1.0 : 1.0 : rows * 1j, -1.0 : 1.0 : cols * 1j]
    t = index / max(count - 1, 1)
    # Body outline that changes slowly along z.
    ax, ay = 0.80 + 0.06 * math.sin(math.pi * t), 0.58 + 0.05 * math.cos(math.pi * t)
    body = (xx / ax) ** 2 + (yy / ay) ** 2 <= 1.0
    hu = np.full((rows, cols), -1000.0)
    hu[body] = 40.0
    # Lungs.
    for cx in (-0.35, 0.35):
        lung = ((xx - cx) / 0.25) ** 2 + ((yy + 0.05) / (0.36 - 0.1 * t)) ** 2 <= 1.0
        hu[lung] = -850.0
    # Spine and a rib-like ring.
    spine = (xx / 0.07) ** 2 + ((yy - 0.42) / 0.07) ** 2 <= 1.0
    hu[spine] = 700.0
    ring = body & ((xx / (ax - 0.04)) ** 2 + (yy / (ay - 0.04)) ** 2 > 1.0)
    hu[ring] = 350.0
    hu += rng.normal(0.0, 18.0, size=(rows, cols))
    return np.clip(np.rint(hu + 1024.0), 0, 4095).astype(np.uint16)


def generate_ct_series(
    out_dir: Path, count: int, rows: int = 512, cols: int = 512, seed: int = 20240315
) -> list[Path]:
    """Write `count` CT slices (Explicit VR Little Endian, 16-bit) to out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    study_uid, series_uid, frame_uid = fixed_uid(), fixed_uid(), fixed_uid()
    spacing_xy = 350.0 / cols
    paths: list[Path] = []
    for i in range(count):
        sop_uid = UID(fixed_uid())
        z = -50.0 - 1.0 * i
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian

        ds = Dataset()
        ds.file_meta = meta
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = "20240315"
        ds.StudyTime = "101500"
        ds.SeriesTime = "101742"
        ds.AcquisitionTime = ds.ContentTime = f"1017{42 + i // 60:02d}.{i % 60:02d}0000"
        ds.AccessionNumber = "BENCH000001"
        ds.Modality = "CT"
        ds.Manufacturer = "Bench Medical"
        ds.InstitutionName = "Loopback General Hospital"
        ds.ReferringPhysicianName = "Doe^Jane"
        ds.StationName = "CT01"
        ds.StudyDescription = "CT CHEST W CONTRAST"
        ds.SeriesDescription = "AXIAL 1.0 SOFT TISSUE"
        ds.ManufacturerModelName = "Bench 64"
        ds.PatientName = "Bench^Patient^Q"
        ds.PatientID = "BENCH-0001"
        ds.PatientBirthDate = "19700101"
        ds.PatientSex = "O"
        ds.PatientAge = "054Y"
        ds.PatientWeight = "72"
        ds.BodyPartExamined = "CHEST"
        ds.ContrastBolusAgent = "IODINE"
        ds.SliceThickness = "1.0"
        ds.KVP = "120"
        ds.DataCollectionDiameter = "500"
        ds.SoftwareVersions = "bench-1.0"
        ds.ReconstructionDiameter = "350"
        ds.GantryDetectorTilt = "0"
        ds.TableHeight = "160"
        ds.RotationDirection = "CW"
        ds.ExposureTime = "500"
        ds.XRayTubeCurrent = "240"
        ds.Exposure = "120"
        ds.ConvolutionKernel = "B30f"
        ds.PatientPosition = "HFS"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.StudyID = "1"
        ds.SeriesNumber = 2
        ds.AcquisitionNumber = 1
        ds.InstanceNumber = i + 1
        ds.ImagePositionPatient = [-175.0 + spacing_xy / 2, -175.0 + spacing_xy / 2, z]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.FrameOfReferenceUID = frame_uid
        ds.PositionReferenceIndicator = ""
        ds.SliceLocation = z
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = rows
        ds.Columns = cols
        ds.PixelSpacing = [round(spacing_xy, 6), round(spacing_xy, 6)]
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.WindowCenter = "40"
        ds.WindowWidth = "400"
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        ds.PixelData = _phantom_slice(rng, rows, cols, i, count).tobytes()

        path = out_dir / f"CT{i + 1:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


MULTIFRAME_SC_STORAGE = "1.2.840.10008.5.1.4.1.1.7.3"  # Multi-frame Grayscale Word SC


def generate_multiframe(
    path: Path,
    frames: int,
    study_uid: str,
    rows: int = 512,
    cols: int = 512,
    seed: int = 20240316,
) -> Path:
    """One uncompressed multi-frame instance (Multi-frame Grayscale Word Secondary
    Capture, 16-bit, 12 stored, Explicit VR Little Endian) of `frames` phantom
    slices, in its own series of study `study_uid`."""
    rng = np.random.default_rng(seed)
    sop_uid = UID(fixed_uid())
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(MULTIFRAME_SC_STORAGE)
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.SOPClassUID = UID(MULTIFRAME_SC_STORAGE)
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20240315"
    ds.StudyTime = "101500"
    ds.SeriesTime = ds.ContentTime = "103000"
    ds.AccessionNumber = "BENCH000001"
    ds.Modality = "OT"
    ds.ConversionType = "WSD"
    ds.Manufacturer = "Bench Medical"
    ds.ReferringPhysicianName = "Doe^Jane"
    ds.StudyDescription = "CT CHEST W CONTRAST"
    ds.SeriesDescription = "MULTI-FRAME VOLUME"
    ds.PatientName = "Bench^Patient^Q"
    ds.PatientID = "BENCH-0001"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = fixed_uid()
    ds.StudyID = "1"
    ds.SeriesNumber = 3
    ds.InstanceNumber = 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.NumberOfFrames = frames
    ds.FrameIncrementPointer = 0x00181063  # FrameTime
    ds.FrameTime = "100"
    ds.Rows = rows
    ds.Columns = cols
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.WindowCenter = "40"
    ds.WindowWidth = "400"
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.PixelData = b"".join(
        _phantom_slice(rng, rows, cols, i, frames).tobytes() for i in range(frames)
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


# --------------------------------------------------------------------------
# Templates: encoded files whose UIDs can be re-stamped cheaply
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class InstanceTemplate:
    data: bytes
    study_at: tuple[int, ...]
    series_at: tuple[int, ...]
    instance_at: tuple[int, ...]


def _offsets(data: bytes, uid: str, limit: int) -> tuple[int, ...]:
    needle = uid.encode("ascii")
    if len(needle) != UID_LEN:
        raise ValueError(f"template UID {uid!r} is not {UID_LEN} characters")
    found: list[int] = []
    pos = data.find(needle)
    while 0 <= pos < limit:
        found.append(pos)
        pos = data.find(needle, pos + 1)
    if not found:
        raise ValueError(f"UID {uid} not found in template header")
    return tuple(found)


class SeriesTemplate:
    """The generated series, held in memory as encoded bytes.

    `instances()` yields copies with fresh Study/Series/SOP Instance UIDs, so
    every benchmark shape uploads objects the server has never seen.
    """

    def __init__(self, paths: Sequence[Path]) -> None:
        items: list[InstanceTemplate] = []
        for path in paths:
            data = path.read_bytes()
            ds = dcmread(path, stop_before_pixels=True)
            pixel_bytes = int(ds.Rows) * int(ds.Columns) * int(ds.BitsAllocated) // 8
            limit = len(data) - pixel_bytes  # UIDs live in the header only
            items.append(
                InstanceTemplate(
                    data=data,
                    study_at=_offsets(data, str(ds.StudyInstanceUID), limit),
                    series_at=_offsets(data, str(ds.SeriesInstanceUID), limit),
                    instance_at=_offsets(data, str(ds.SOPInstanceUID), limit),
                )
            )
        if not items:
            raise ValueError("empty series")
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def sizes(self, count: int) -> list[int]:
        return [len(self.items[i % len(self.items)].data) for i in range(count)]

    def instances(
        self, count: int, study_uid: str | None = None, series_uid: str | None = None
    ) -> Iterator[bytes]:
        """Yield `count` encoded instances (cycling over the slices)."""
        study = (study_uid or fixed_uid()).encode("ascii")
        series = (series_uid or fixed_uid()).encode("ascii")
        for i in range(count):
            t = self.items[i % len(self.items)]
            buf = bytearray(t.data)
            sop = fixed_uid().encode("ascii")
            stamps = ((study, t.study_at), (series, t.series_at), (sop, t.instance_at))
            for uid, positions in stamps:
                for pos in positions:
                    buf[pos : pos + UID_LEN] = uid
            yield bytes(buf)


# --------------------------------------------------------------------------
# multipart/related; type="application/dicom"
# --------------------------------------------------------------------------


def new_boundary() -> str:
    return f"stow-bench-{secrets.token_hex(12)}"


def multipart_content_type(boundary: str) -> str:
    return f'multipart/related; type="application/dicom"; boundary={boundary}'


def _part_head(boundary: str) -> bytes:
    return f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode("ascii")


def _closing(boundary: str) -> bytes:
    return f"--{boundary}--\r\n".encode("ascii")


def multipart_body(parts: Iterable[bytes], boundary: str) -> bytes:
    head = _part_head(boundary)
    chunks: list[bytes] = []
    for part in parts:
        chunks += [head, part, b"\r\n"]
    chunks.append(_closing(boundary))
    return b"".join(chunks)


def multipart_stream(parts: Iterable[bytes], boundary: str) -> Iterator[bytes]:
    """Same bytes as multipart_body, produced one part at a time."""
    head = _part_head(boundary)
    for part in parts:
        yield head + part + b"\r\n"
    yield _closing(boundary)


def multipart_length(part_sizes: Iterable[int], boundary: str) -> int:
    head = len(_part_head(boundary))
    return sum(head + size + 2 for size in part_sizes) + len(_closing(boundary))


def multipart_boundary(content_type: str) -> str | None:
    """The boundary parameter of a multipart Content-Type, or None."""
    match = re.search(r'boundary="?([^";,\s]+)"?', content_type, re.IGNORECASE)
    return match.group(1) if match else None


def split_multipart(content_type: str, body: bytes) -> list[memoryview] | None:
    """The payloads of a multipart response body (no copies), or None if it is not one."""
    boundary = multipart_boundary(content_type)
    if boundary is None or not content_type.lower().startswith("multipart/"):
        return None
    delim = b"--" + boundary.encode("ascii")
    view = memoryview(body)
    parts: list[memoryview] = []
    pos = body.find(delim)
    while pos >= 0:
        start = pos + len(delim)
        if body[start : start + 2] == b"--":
            return parts
        head_end = body.find(b"\r\n\r\n", start)
        if head_end < 0:
            return None
        end = body.find(b"\r\n" + delim, head_end + 4)
        if end < 0:
            return None
        parts.append(view[head_end + 4 : end])
        pos = end + 2
    return None  # no closing delimiter


# --------------------------------------------------------------------------
# /proc: process tree, memory and CPU
# --------------------------------------------------------------------------

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Fields after "(comm)": state ppid pgrp session tty tpgid flags minflt
    # cminflt majflt cmajflt utime stime cutime cstime ...
    return raw[raw.rfind(")") + 2 :].split()


def process_tree(root: int) -> list[int]:
    """root plus all its live descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def status_kib(pid: int, key: str) -> int | None:
    """A `kB` field of /proc/PID/status (VmRSS, VmHWM, ...), or None."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def tree_cpu_seconds(pids: Iterable[int]) -> float:
    """user+system CPU of the processes, including their reaped children."""
    ticks = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            ticks += sum(int(f) for f in fields[11:15])
    return ticks / _CLK_TCK


class MemorySampler:
    """Samples a process tree's RSS in a background thread.

    The root's VmHWM (kernel-tracked peak RSS) is exact for a single process.
    If the server forks (uvicorn workers, reloader, multiprocessing) the sum of
    the tree's VmRSS is sampled every `interval` seconds as well, and each
    process's VmHWM is remembered before it can exit.
    """

    def __init__(self, root: int, interval: float = 0.1) -> None:
        self.root = root
        self.interval = interval
        self.peak_tree_rss_kib = 0
        self.hwm_kib: dict[int, int] = {}
        self.max_procs = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def sample(self) -> None:
        pids = process_tree(self.root)
        total = 0
        for pid in pids:
            total += status_kib(pid, "VmRSS") or 0
            hwm = status_kib(pid, "VmHWM")
            if hwm is not None:
                self.hwm_kib[pid] = max(hwm, self.hwm_kib.get(pid, 0))
        self.peak_tree_rss_kib = max(self.peak_tree_rss_kib, total)
        self.max_procs = max(self.max_procs, len(pids))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def finish(self) -> dict[str, Any]:
        """Stop sampling (taking a last sample) and summarise, in MiB."""
        self._stop.set()
        self._thread.join(timeout=5)
        self.sample()
        root_hwm = self.hwm_kib.get(self.root, 0)
        max_hwm = max(self.hwm_kib.values(), default=0)
        peak = max(max_hwm, self.peak_tree_rss_kib)
        return {
            "peak_rss_mib": round(peak / 1024, 1),
            "root_vmhwm_mib": round(root_hwm / 1024, 1),
            "tree_rss_peak_sampled_mib": round(self.peak_tree_rss_kib / 1024, 1),
            "processes": self.max_procs,
        }


# --------------------------------------------------------------------------
# Server processes
# --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerSpec:
    """How to start one server implementation on a given port and directory."""

    key: str  # short id used in JSON, e.g. "orthanc"
    label: str  # human name for tables
    stow_path: str  # e.g. "/dicom-web/studies"
    health_path: str  # GET returns 200 when ready
    # (workdir, data_dir, http_port, dimse_port) -> argv. May write config files
    # into workdir. dimse_port is 0 unless the spec has a DIMSE listener.
    command: Callable[[Path, Path, int, int], list[str]]
    # Extra readiness check, given the base URL; raise to fail.
    verify: Callable[[str], None] | None = None
    env: dict[str, str] = field(default_factory=dict)
    # AE title of the server's DIMSE listener; None: the server runs without one.
    dimse_aet: str | None = None


class ServerError(RuntimeError):
    pass


class RunningServer:
    """A server process on a data directory, with memory sampling.

    The data directory (workdir/data unless `data_dir` says otherwise) must be
    new unless `fresh` is False, in which case a kept one is reused as it is.
    Logs and config files always go to workdir. When the spec has a DIMSE
    listener, it gets `dimse_port` (a free one by default) and start() also
    waits until that port accepts connections.
    """

    def __init__(
        self,
        spec: ServerSpec,
        workdir: Path,
        startup_timeout: float = 90.0,
        port: int = 0,
        fresh: bool = True,
        data_dir: Path | None = None,
        dimse_port: int = 0,
    ) -> None:
        self.spec = spec
        self.fresh = fresh  # False: reuse whatever the data directory already holds
        self.workdir = workdir
        self.data_dir = data_dir if data_dir is not None else workdir / "data"
        self.log_path = workdir / "server.log"
        self.startup_timeout = startup_timeout
        self.port = port  # 0: pick a free loopback port at start
        self.dimse_port = dimse_port  # 0: a free one at start, if the spec has a listener
        self.proc: subprocess.Popen[bytes] | None = None
        self.sampler: MemorySampler | None = None

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def stow_url(self) -> str:
        return self.base_url + self.spec.stow_path

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=not self.fresh)
        self.port = self.port or free_port()
        if self.spec.dimse_aet is not None:
            self.dimse_port = self.dimse_port or free_port()
        else:
            self.dimse_port = 0
        argv = self.spec.command(self.workdir, self.data_dir, self.port, self.dimse_port)
        env = {**os.environ, **self.spec.env}
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                argv,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # own process group: we stop exactly it
            )
        self.sampler = MemorySampler(self.proc.pid)
        self.sampler.start()
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + self.startup_timeout
        url = self.base_url + self.spec.health_path
        last = "no answer"
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise ServerError(
                        f"{self.spec.label} exited with {self.proc.returncode} during "
                        f"startup:\n{self.log_tail()}"
                    )
                try:
                    resp = client.get(url)
                    if resp.status_code == 200 and self._dimse_listening():
                        if self.spec.verify is not None:
                            self.spec.verify(self.base_url)
                        return
                    last = f"HTTP {resp.status_code}"
                except httpx.TransportError as exc:
                    last = repr(exc)
                time.sleep(0.1)
        raise ServerError(
            f"{self.spec.label} not ready after {self.startup_timeout:.0f}s at {url} "
            f"({last}):\n{self.log_tail()}"
        )

    def _dimse_listening(self) -> bool:
        """True when there is no DIMSE listener, or when its port accepts a connection."""
        if not self.dimse_port:
            return True
        try:
            with socket.create_connection((LOOPBACK, self.dimse_port), timeout=2.0):
                return True
        except OSError:
            return False

    def cpu_seconds(self) -> float:
        return tree_cpu_seconds(process_tree(self.pid))

    def memory(self) -> dict[str, Any]:
        assert self.sampler is not None
        return self.sampler.finish()

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM the server's process group, then SIGKILL whatever is left.

        Only processes this object started are signalled: its own process
        group, plus descendants that moved to a session of their own (they are
        looked up by parent pid before the leader goes away).
        """
        if self.sampler is not None and not self.sampler._stop.is_set():
            self.sampler.finish()
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        pgid = proc.pid  # == pid thanks to start_new_session
        descendants = [p for p in process_tree(proc.pid) if p != proc.pid]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            proc.wait(timeout=10)
        # Children that outlived the leader would still be in the group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        self._reap(descendants, timeout)

    @staticmethod
    def _reap(pids: list[int], timeout: float) -> None:
        def alive() -> list[int]:
            return [p for p in pids if (f := _stat_fields(p)) is not None and f[0] != "Z"]

        for sig in (signal.SIGTERM, signal.SIGKILL):
            left = alive()
            for pid in left:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + timeout
            while left and time.monotonic() < deadline:
                time.sleep(0.1)
                left = alive()
            if not left:
                return

    def __enter__(self) -> RunningServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def dir_bytes(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


# --------------------------------------------------------------------------
# STOW-RS responses and request loops
# --------------------------------------------------------------------------

REFERENCED_SOP_SEQUENCE = "00081199"
FAILED_SOP_SEQUENCE = "00081198"


def count_stow_response(resp: httpx.Response) -> tuple[int | None, int | None]:
    """(referenced, failed) SOP counts from a DICOM JSON STOW response, if any."""
    if "json" not in resp.headers.get("content-type", ""):
        return None, None
    try:
        doc = resp.json()
    except ValueError:
        return None, None
    if isinstance(doc, list) and len(doc) == 1:
        doc = doc[0]
    if not isinstance(doc, dict):
        return None, None

    def seq_len(tag: str) -> int:
        elem = doc.get(tag)
        if isinstance(elem, dict) and isinstance(elem.get("Value"), list):
            return len(elem["Value"])
        return 0

    return seq_len(REFERENCED_SOP_SEQUENCE), seq_len(FAILED_SOP_SEQUENCE)


@dataclass
class LoadResult:
    requests_planned: int
    instances_planned: int
    requests_done: int = 0
    instances_ok: int = 0  # instances in requests answered with 200
    statuses: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    latencies_s: list[float] = field(default_factory=list)
    referenced_sops: int | None = None
    failed_sops: int | None = None
    wall_s: float = 0.0
    timed_out: bool = False

    def problems(self) -> list[str]:
        """Why this load does not count as a clean run (empty if it does)."""
        out: list[str] = []
        if self.timed_out:
            out.append("time limit reached")
        if self.requests_done != self.requests_planned:
            out.append(f"{self.requests_done} of {self.requests_planned} requests done")
        bad = {k: v for k, v in self.statuses.items() if k != "200"}
        if bad:
            out.append(f"non-200 statuses {bad}")
        out.extend(self.errors[:3])
        if self.failed_sops:
            out.append(f"{self.failed_sops} instances in FailedSOPSequence")
        if self.referenced_sops not in (None, self.instances_planned):
            out.append(
                f"ReferencedSOPSequence lists {self.referenced_sops} of "
                f"{self.instances_planned} instances"
            )
        return out

    @property
    def all_ok(self) -> bool:
        return not self.problems()

    def note_counts(self, referenced: int | None, failed: int | None) -> None:
        if referenced is not None:
            self.referenced_sops = (self.referenced_sops or 0) + referenced
        if failed is not None:
            self.failed_sops = (self.failed_sops or 0) + failed

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies_s)

        def pct(p: float) -> float | None:
            if not lat:
                return None
            return round(lat[min(len(lat) - 1, int(p * len(lat)))], 4)

        return {
            "requests_planned": self.requests_planned,
            "requests_done": self.requests_done,
            "instances_planned": self.instances_planned,
            "instances_ok": self.instances_ok,
            "statuses": self.statuses,
            "errors": self.errors[:10],
            "error_count": len(self.errors),
            "referenced_sops": self.referenced_sops,
            "failed_sops": self.failed_sops,
            "wall_s": round(self.wall_s, 4),
            "timed_out": self.timed_out,
            "all_ok": self.all_ok,
            "problems": self.problems(),
            "latency_p50_s": pct(0.50),
            "latency_p95_s": pct(0.95),
            "latency_max_s": round(lat[-1], 4) if lat else None,
        }


@dataclass(frozen=True)
class Body:
    data: bytes
    instances: int


def build_bodies(instances: Iterable[bytes], per_request: int, boundary: str) -> list[Body]:
    bodies: list[Body] = []
    batch: list[bytes] = []
    for inst in instances:
        batch.append(inst)
        if len(batch) == per_request:
            bodies.append(Body(multipart_body(batch, boundary), len(batch)))
            batch = []
    if batch:
        bodies.append(Body(multipart_body(batch, boundary), len(batch)))
    return bodies


ProgressCallback = Callable[[LoadResult], None]


async def _post_all(
    url: str,
    bodies: Sequence[Body],
    headers: dict[str, str],
    concurrency: int,
    request_timeout: float,
    deadline: float,
    result: LoadResult,
    stow_response: bool,
    progress: ProgressCallback | None,
    progress_every: float,
) -> None:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    timeout = httpx.Timeout(request_timeout, connect=10.0)
    todo = iter(bodies)  # shared by the workers; next() never awaits
    next_report = time.monotonic() + progress_every

    async with httpx.AsyncClient(limits=limits, timeout=timeout, trust_env=False) as client:

        async def worker() -> None:
            nonlocal next_report
            for body in todo:
                if time.monotonic() >= deadline:
                    result.timed_out = True
                    return
                t0 = time.perf_counter()
                try:
                    resp = await client.post(url, content=body.data, headers=headers)
                except httpx.HTTPError as exc:
                    result.errors.append(f"{type(exc).__name__}: {exc}")
                    result.requests_done += 1
                    continue
                result.latencies_s.append(time.perf_counter() - t0)
                result.requests_done += 1
                key = str(resp.status_code)
                result.statuses[key] = result.statuses.get(key, 0) + 1
                if resp.status_code == 200:
                    result.instances_ok += body.instances
                elif len(result.errors) < 50:
                    result.errors.append(f"HTTP {resp.status_code}: {resp.text[:300]}")
                if stow_response:
                    result.note_counts(*count_stow_response(resp))
                if progress is not None and time.monotonic() >= next_report:
                    next_report = time.monotonic() + progress_every
                    progress(result)

        await asyncio.gather(*(worker() for _ in range(concurrency)))


def post_bodies(
    url: str,
    bodies: Sequence[Body],
    boundary: str,
    concurrency: int,
    request_timeout: float = 300.0,
    run_timeout: float = 1800.0,
    content_type: str | None = None,
    stow_response: bool = True,
    progress: ProgressCallback | None = None,
    progress_every: float = 30.0,
) -> LoadResult:
    """POST every body with `concurrency` connections; bounded in time.

    No new request starts after `run_timeout` seconds; each request is bounded
    by `request_timeout`; a hard stop follows at run_timeout + request_timeout.
    Bodies are multipart/related with `boundary` unless `content_type` says
    otherwise (e.g. one `application/dicom` file per request). With
    `stow_response`, DICOM JSON responses are checked as STOW-RS responses
    (ReferencedSOPSequence, FailedSOPSequence). `progress`, if given, is called
    with the running result at most every `progress_every` seconds.
    """
    headers = {
        "Content-Type": content_type or multipart_content_type(boundary),
        "Accept": "application/dicom+json",
    }
    result = LoadResult(
        requests_planned=len(bodies), instances_planned=sum(b.instances for b in bodies)
    )
    start = time.perf_counter()
    deadline = time.monotonic() + run_timeout

    async def main() -> None:
        try:
            async with asyncio.timeout(run_timeout + request_timeout + 30):
                await _post_all(
                    url,
                    bodies,
                    headers,
                    concurrency,
                    request_timeout,
                    deadline,
                    result,
                    stow_response,
                    progress,
                    progress_every,
                )
        except TimeoutError:
            result.timed_out = True

    asyncio.run(main())
    result.wall_s = time.perf_counter() - start
    return result


def stream_upload(
    url: str,
    parts: Iterable[bytes],
    part_sizes: Sequence[int],
    boundary: str,
    timeout: float,
) -> tuple[LoadResult, int]:
    """One STOW request whose body is generated while it is sent.

    Content-Length is computed up front from the part sizes, so the request is
    not chunked. Returns the result and the number of body bytes.
    """
    total = multipart_length(part_sizes, boundary)
    result = LoadResult(requests_planned=1, instances_planned=len(part_sizes))
    deadline = time.monotonic() + timeout

    def body() -> Iterator[bytes]:
        for chunk in multipart_stream(parts, boundary):
            if time.monotonic() >= deadline:
                result.timed_out = True
                raise TimeoutError("upload exceeded its time limit")
            yield chunk

    headers = {
        "Content-Type": multipart_content_type(boundary),
        "Accept": "application/dicom+json",
        "Content-Length": str(total),
    }
    start = time.perf_counter()
    try:
        with httpx.Client(timeout=httpx.Timeout(timeout, connect=10.0), trust_env=False) as c:
            resp = c.post(url, content=body(), headers=headers)
        result.requests_done = 1
        result.latencies_s.append(time.perf_counter() - start)
        result.statuses[str(resp.status_code)] = 1
        if resp.status_code == 200:
            result.instances_ok = len(part_sizes)
        else:
            result.errors.append(f"HTTP {resp.status_code}: {resp.text[:300]}")
        result.note_counts(*count_stow_response(resp))
    except (httpx.HTTPError, TimeoutError) as exc:
        result.requests_done = 1
        result.errors.append(f"{type(exc).__name__}: {exc}")
    result.wall_s = time.perf_counter() - start
    return result, total


# --------------------------------------------------------------------------
# GET loops (bench/wado.py)
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Fetch:
    """One GET: path (appended to the base URL), headers, and what to check."""

    path: str
    headers: dict[str, str] = field(default_factory=dict)
    tag: Any = None  # given back to the check function


# check(n, fetch, response) -> None when the response is right, else why not.
FetchCheck = Callable[[int, Fetch, httpx.Response], "str | None"]


@dataclass
class FetchRun:
    requests: int = 0
    ok: int = 0
    latencies_s: list[float] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    error_count: int = 0
    content_bytes: int = 0  # response bodies as read (decoded)
    wire_bytes: int = 0  # as received (before any Content-Encoding is undone)
    wall_s: float = 0.0
    timed_out: bool = False
    client_cpu_s: float = 0.0

    def fail(self, text: str) -> None:
        self.error_count += 1
        if len(self.errors) < 20:
            self.errors.append(text)

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies_s)

        def ms(p: float) -> float | None:
            v = percentile(lat, p)
            return None if v is None else round(v * 1000, 2)

        wall = self.wall_s or None
        return {
            "requests": self.requests,
            "ok": self.ok,
            "statuses": self.statuses,
            "error_count": self.error_count,
            "errors": self.errors,
            "wall_s": round(self.wall_s, 3),
            "timed_out": self.timed_out,
            "req_per_s": round(self.ok / wall, 2) if wall else None,
            "mib_per_s": round(self.content_bytes / MIB / wall, 1) if wall else None,
            "bytes_per_response": round(self.content_bytes / self.requests)
            if self.requests
            else None,
            "content_bytes": self.content_bytes,
            "wire_bytes": self.wire_bytes,
            "latency_p50_ms": ms(0.50),
            "latency_p95_ms": ms(0.95),
            "latency_max_ms": round(lat[-1] * 1000, 2) if lat else None,
            "client_cpu_s": round(self.client_cpu_s, 2),
        }


async def _fetch_loop(
    base_url: str,
    fetches: Sequence[Fetch],
    warmup: Sequence[Fetch],
    concurrency: int,
    max_requests: int,
    duration: float,
    request_timeout: float,
    check: FetchCheck | None,
    run: FetchRun,
) -> None:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    timeout = httpx.Timeout(request_timeout, connect=10.0)
    async with httpx.AsyncClient(
        base_url=base_url, limits=limits, timeout=timeout, trust_env=False
    ) as client:
        for w in warmup:  # one after the other, not counted
            with contextlib.suppress(httpx.HTTPError):
                await client.get(w.path, headers=w.headers)
        counter = iter(range(max_requests))  # shared; next() never awaits
        start = time.perf_counter()
        deadline = start + duration

        async def worker() -> None:
            for n in counter:
                if time.perf_counter() >= deadline:
                    run.timed_out = True
                    return
                fetch = fetches[n % len(fetches)]
                t0 = time.perf_counter()
                try:
                    resp = await client.get(fetch.path, headers=fetch.headers)
                except httpx.HTTPError as exc:
                    run.requests += 1
                    run.fail(f"{type(exc).__name__}: {exc} ({fetch.path})")
                    continue
                run.latencies_s.append(time.perf_counter() - t0)
                run.requests += 1
                key = str(resp.status_code)
                run.statuses[key] = run.statuses.get(key, 0) + 1
                run.content_bytes += len(resp.content)
                run.wire_bytes += resp.num_bytes_downloaded
                if resp.status_code != 200:
                    run.fail(f"HTTP {resp.status_code} for {fetch.path}: {resp.text[:200]}")
                    continue
                problem = check(n, fetch, resp) if check is not None else None
                if problem:
                    run.fail(f"{problem} ({fetch.path})")
                    continue
                run.ok += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        run.wall_s = time.perf_counter() - start


def fetch_all(
    base_url: str,
    fetches: Sequence[Fetch],
    concurrency: int,
    max_requests: int,
    duration: float,
    request_timeout: float = 120.0,
    check: FetchCheck | None = None,
    warmup: Sequence[Fetch] = (),
) -> FetchRun:
    """GET `fetches` in order (cycling) with `concurrency` connections.

    The `warmup` requests go first, one at a time, untimed. Then at most
    `max_requests` requests, none started after `duration` seconds. A request
    counts as ok when it is answered 200 and `check` finds nothing wrong.
    Latency is from sending the request to having read the whole body.
    """
    run = FetchRun()

    async def main() -> None:
        try:
            bound = duration + request_timeout * (2 + len(warmup)) + 30
            async with asyncio.timeout(bound):
                await _fetch_loop(
                    base_url,
                    fetches,
                    warmup,
                    concurrency,
                    max_requests,
                    duration,
                    request_timeout,
                    check,
                    run,
                )
        except TimeoutError:
            run.timed_out = True

    cpu0 = time.process_time()
    asyncio.run(main())
    run.client_cpu_s = time.process_time() - cpu0
    return run


def self_peak_rss_mib() -> float:
    return round((status_kib(os.getpid(), "VmHWM") or 0) / 1024, 1)


# --------------------------------------------------------------------------
# Our server
# --------------------------------------------------------------------------

OURS_CMD = "{dicomweb} serve --data-dir {data_dir} --port {port} --dimse-port 0"
# The same with the DIMSE listener on (ours_spec(dimse_aet=...)).
OURS_DIMSE_CMD = (
    "{dicomweb} serve --data-dir {data_dir} --port {port} --dimse-port {dimse_port} --aet {aet}"
)


def dicomweb_binary() -> str | None:
    local = REPO / ".venv" / "bin" / "dicomweb"
    if local.exists():
        return str(local)
    return shutil.which("dicomweb")


def ours_spec(
    cmd_template: str = OURS_CMD,
    stow_path: str = "/dicomweb/studies",
    health_path: str = "/healthz",
    key: str = "ours",
    label: str = "ours (dicomweb serve)",
    extra_args: Sequence[str] = (),
    dimse_aet: str | None = None,
) -> ServerSpec:
    """Our server, started from `cmd_template`.

    The template may use {dicomweb} {data_dir} {port} {workdir}, and, with
    `dimse_aet` (see OURS_DIMSE_CMD), {dimse_port} and {aet}.
    """
    binary = dicomweb_binary() or "dicomweb"

    def command(workdir: Path, data_dir: Path, port: int, dimse_port: int) -> list[str]:
        values = {
            "dicomweb": binary,
            "data_dir": str(data_dir),
            "port": str(port),
            "workdir": str(workdir),
            "dimse_port": str(dimse_port),
            "aet": dimse_aet or "",
        }
        argv = [tok.format(**values) for tok in shlex.split(cmd_template)]
        return argv + list(extra_args)

    return ServerSpec(
        key=key,
        label=label,
        stow_path=stow_path,
        health_path=health_path,
        command=command,
        dimse_aet=dimse_aet,
    )


# --------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    mem_kib = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    except OSError:
        pass
    try:
        loadavg = [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    except (OSError, ValueError):
        loadavg = []
    return {
        "cpus": os.cpu_count(),
        "loadavg": loadavg,  # 1, 5, 15 min: other work on the machine skews results
        "mem_total_gib": round(mem_kib / 1024 / 1024, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def percentile(sorted_values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..1) of already sorted values."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(p * len(sorted_values)))
    return sorted_values[min(len(sorted_values), rank) - 1]


def fmt(value: Any, suffix: str = "") -> str:
    return "-" if value is None else f"{value}{suffix}"


def print_table(lines: Sequence[Sequence[str]]) -> None:
    """A plain-text table: the first line is the header; first column left-aligned."""
    if not lines:
        return
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    for n, line in enumerate(lines):
        print(
            "  ".join(
                cell.ljust(w) if i == 0 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(line, widths, strict=True))
            )
        )
        if n == 0:
            print("  ".join("-" * w for w in widths))
