"""Soak test: mixed load on one server, killed with SIGKILL and restarted at random moments.

For --duration seconds, over loopback only, concurrent workers:

  stow     new studies stored by STOW-RS, 1 to 4 instances per request
  cstore   new studies stored by C-STORE (pynetdicom), 1 to 4 per association
  qido     searches; a study's instance list must hold every acknowledged instance
  wado     retrieves acknowledged instances; the bytes must be those sent
  delete   deletes a study, a series or an instance of a finished study

and a killer that sends SIGKILL to the server every --kill-interval seconds (a random
time in the range) and starts it again on the same data. The last --quiet fraction of
the run has no kills: the server's RSS and open file descriptors are sampled then, and
must be flat (the second half of the samples no higher than the first, within a margin).

A request cut by a kill has an unknown outcome; everything else is exact. At the end the
server is killed once more and restarted, and then:

  - every acknowledged instance that was not deleted is retrieved, byte-identical;
  - every deleted instance answers 404; an instance of unknown outcome is whole or absent;
  - QIDO-RS lists exactly the instances that are there, /api/stats counts them, and the
    data directory holds one file per instance and no staging file.

Bounded by --duration and --max-instances. Exit status 0 when every check held, 1 when
one failed; the summary is printed and written as JSON to --out.

    .venv/bin/python bench/soak.py --duration 3600
    .venv/bin/python bench/soak.py --duration 60 --database-url postgresql+asyncpg://...
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import hashlib
import io
import json
import os
import random
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    OURS_DIMSE_CMD,
    RunningServer,
    multipart_body,
    multipart_content_type,
    new_boundary,
    ours_spec,
    split_multipart,
    status_kib,
)

AET = "DICOMWEB"
ROOT = "/dicomweb"
AS_STORED = 'multipart/related; type="application/dicom"; transfer-syntax=*'
UID_PREFIX = "1.2.826.0.1.3680043.8.498."
TRANSIENT = (httpx.TransportError, ConnectionError, OSError)


@dataclass
class Instance:
    study: str
    series: str
    sop: str
    # SHA-256 of the data set after its file meta group: the part a store keeps as sent
    # whether it came by STOW-RS (a whole file) or C-STORE (the data set alone).
    digest: str


@dataclass
class Ledger:
    """What the clients know the server holds."""

    instances: dict[str, Instance] = field(default_factory=dict)
    acknowledged: set[str] = field(default_factory=set)
    unknown: set[str] = field(default_factory=set)
    deleted: set[str] = field(default_factory=set)
    maybe_deleted: set[str] = field(default_factory=set)
    finished: list[str] = field(default_factory=list)  # studies no longer written
    busy: set[str] = field(default_factory=set)  # studies being deleted
    failures: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def count(self, what: str, n: int = 1) -> None:
        self.counts[what] = self.counts.get(what, 0) + n

    def fail(self, message: str) -> None:
        if len(self.failures) < 50:
            self.failures.append(message)
        print(f"FAIL {message}", file=sys.stderr, flush=True)

    def of_study(self, study: str) -> list[Instance]:
        return [i for i in self.instances.values() if i.study == study]

    def present(self, sop: str) -> bool:
        """Acknowledged and neither deleted nor perhaps deleted."""
        return sop in self.acknowledged and sop not in self.deleted | self.maybe_deleted


def new_uid() -> str:
    return generate_uid(prefix=UID_PREFIX)


def make_instance(rng: random.Random, study: str, series: str, number: int) -> Dataset:
    """A small CT image with random pixels (32 to 96 pixels square)."""
    size = rng.choice((32, 64, 96))
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = new_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.PatientID = f"SOAK-{rng.randrange(50)}"
    ds.PatientName = f"Soak^{rng.choice(('Ann', 'Bob', 'Cy', 'Di'))}"
    ds.StudyDate = f"2026{rng.randrange(1, 13):02d}{rng.randrange(1, 29):02d}"
    ds.StudyTime = "120000"
    ds.AccessionNumber = f"A{rng.randrange(10_000)}"
    ds.Modality = rng.choice(("CT", "MR", "PT"))
    ds.SeriesNumber = 1
    ds.InstanceNumber = number
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    pixels = np.random.default_rng(rng.randrange(1 << 30)).integers(0, 4096, (size, size))
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    return ds


def part10(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def digest_of_file(data: bytes) -> str:
    """SHA-256 of a Part 10 file's bytes after its file meta group."""
    offset = 132 if data[128:132] == b"DICM" else 0
    # (0002,0000) File Meta Information Group Length, UL, Explicit VR: 12 bytes.
    group_length = int.from_bytes(data[offset + 8 : offset + 12], "little")
    return hashlib.sha256(data[offset + 12 + group_length :]).hexdigest()


class Soak:
    """The workers, the killer and the checks, around one running server."""

    def __init__(self, args: argparse.Namespace, server: RunningServer) -> None:
        self.args = args
        self.server = server
        self.ledger = Ledger()
        self.rng = random.Random(args.seed)
        self.deadline = time.monotonic() + args.duration
        self.quiet_from = time.monotonic() + args.duration * (1 - args.quiet)
        self.up = asyncio.Event()
        self.up.set()
        self.samples: list[tuple[float, int, int]] = []  # (time, rss KiB, fds)
        self.kills = 0

    @property
    def running(self) -> bool:
        return time.monotonic() < self.deadline

    def budget_left(self) -> bool:
        return len(self.ledger.instances) < self.args.max_instances

    async def run(self) -> None:
        async with httpx.AsyncClient(base_url=self.server.base_url, timeout=30.0) as http:
            self.http = http
            workers: list[Callable[[], Awaitable[None]]] = [
                self.stow_worker,
                self.stow_worker,
                self.cstore_worker,
                self.qido_worker,
                self.wado_worker,
                self.delete_worker,
                self.killer,
                self.sampler,
            ]
            await asyncio.gather(*(w() for w in workers))
            await self.crash_and_restart()
            await self.verify()

    # Writers

    async def stow_worker(self) -> None:
        while self.running:
            if not self.budget_left():
                await asyncio.sleep(0.5)
                continue
            study, series = new_uid(), [new_uid(), new_uid()]
            number = 0
            for _ in range(self.rng.randint(1, 4)):
                batch = [
                    make_instance(self.rng, study, self.rng.choice(series), number := number + 1)
                    for _ in range(self.rng.randint(1, 4))
                ]
                await self.stow(batch)
            self.ledger.finished.append(study)

    async def stow(self, batch: list[Dataset]) -> None:
        await self.up.wait()
        files = [part10(ds) for ds in batch]
        records = [self.record(ds, data) for ds, data in zip(batch, files, strict=True)]
        boundary = new_boundary()
        body = multipart_body(files, boundary)
        try:
            response = await self.http.post(
                f"{ROOT}/studies",
                content=body,
                headers={
                    "content-type": multipart_content_type(boundary),
                    "accept": "application/dicom+json",
                },
            )
        except TRANSIENT:
            self.ledger.unknown.update(r.sop for r in records)
            return
        if response.status_code != 200:
            self.ledger.fail(f"STOW-RS answered {response.status_code}: {response.text[:200]}")
            self.ledger.unknown.update(r.sop for r in records)
            return
        self.ledger.acknowledged.update(r.sop for r in records)
        self.ledger.count("stored by STOW-RS", len(records))

    def record(self, ds: Dataset, data: bytes) -> Instance:
        instance = Instance(
            ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, digest_of_file(data)
        )
        self.ledger.instances[instance.sop] = instance
        return instance

    async def cstore_worker(self) -> None:
        while self.running:
            if not self.budget_left():
                await asyncio.sleep(0.5)
                continue
            study, series = new_uid(), new_uid()
            for association in range(self.rng.randint(1, 3)):
                batch = [
                    make_instance(self.rng, study, series, association * 10 + n)
                    for n in range(self.rng.randint(1, 4))
                ]
                await self.up.wait()
                records = [self.record(ds, part10(ds)) for ds in batch]
                statuses = await asyncio.to_thread(self.c_store, batch)
                for instance, status in zip(records, statuses, strict=True):
                    if status == 0:
                        self.ledger.acknowledged.add(instance.sop)
                        self.ledger.count("stored by C-STORE")
                    elif status is None:
                        self.ledger.unknown.add(instance.sop)
                    else:
                        self.ledger.fail(f"C-STORE status 0x{status:04X}")
                        self.ledger.unknown.add(instance.sop)
            self.ledger.finished.append(study)

    def c_store(self, batch: list[Dataset]) -> list[int | None]:
        """Statuses of one association's C-STOREs; None where no answer came."""
        ae = AE(ae_title="SOAKSCU")
        ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
        statuses: list[int | None] = [None] * len(batch)
        assoc = ae.associate("127.0.0.1", self.server.dimse_port, ae_title=AET)
        if not assoc.is_established:
            return statuses
        try:
            for n, ds in enumerate(batch):
                answer = assoc.send_c_store(ds)
                if not answer or "Status" not in answer:
                    break
                statuses[n] = int(answer.Status)
        finally:
            if assoc.is_established:
                assoc.release()
        return statuses

    # Readers

    async def qido_worker(self) -> None:
        while self.running:
            await asyncio.sleep(0.05)
            study = self.pick_study()
            await self.up.wait()
            if study is None or study in self.ledger.busy:
                await self.search(f"{ROOT}/studies", {"PatientID": "SOAK-1", "limit": "50"})
                continue
            expected = {i.sop for i in self.ledger.of_study(study) if self.ledger.present(i.sop)}
            found = await self.search(f"{ROOT}/studies/{study}/instances", {})
            if found is None or study in self.ledger.busy:
                continue
            allowed = {
                i.sop
                for i in self.ledger.of_study(study)
                if i.sop not in self.ledger.deleted
                and (i.sop in self.ledger.acknowledged or i.sop in self.ledger.unknown)
            }
            sops = {item["00080018"]["Value"][0] for item in found}
            if not expected <= sops or not sops <= allowed:
                self.ledger.fail(
                    f"QIDO-RS of study {study}: missing {sorted(expected - sops)}, "
                    f"unexpected {sorted(sops - allowed)}"
                )

    async def search(self, path: str, params: dict[str, str]) -> list[dict[str, Any]] | None:
        try:
            response = await self.http.get(
                path, params=params, headers={"accept": "application/dicom+json"}
            )
        except TRANSIENT:
            return None
        self.ledger.count("searches")
        if response.status_code == 204:
            return []
        if response.status_code != 200:
            self.ledger.fail(f"QIDO-RS {path} answered {response.status_code}")
            return None
        return list(response.json())

    async def wado_worker(self) -> None:
        while self.running:
            await asyncio.sleep(0.02)
            study = self.pick_study()
            if study is None:
                continue
            present = [i for i in self.ledger.of_study(study) if self.ledger.present(i.sop)]
            if not present or study in self.ledger.busy:
                continue
            await self.up.wait()
            instance = self.rng.choice(present)
            try:
                status, digest = await self.retrieve(instance)
            except TRANSIENT:
                continue
            self.ledger.count("retrieves")
            if status == 404 and (
                study in self.ledger.busy or not self.ledger.present(instance.sop)
            ):
                continue
            if status != 200 or digest != instance.digest:
                self.ledger.fail(f"WADO-RS of acknowledged {instance.sop}: {status}, bytes differ")

    async def retrieve(self, instance: Instance) -> tuple[int, str | None]:
        path = f"{ROOT}/studies/{instance.study}/series/{instance.series}/instances/{instance.sop}"
        response = await self.http.get(path, headers={"accept": AS_STORED})
        if response.status_code != 200:
            return response.status_code, None
        parts = split_multipart(response.headers["content-type"], response.content)
        if not parts or len(parts) != 1:
            return -1, None
        return 200, digest_of_file(bytes(parts[0]))

    def pick_study(self) -> str | None:
        if not self.ledger.finished:
            return None
        return self.rng.choice(self.ledger.finished)

    # Deletes

    async def delete_worker(self) -> None:
        while self.running:
            await asyncio.sleep(self.rng.uniform(0.2, 1.0))
            study = self.pick_study()
            if study is None or study in self.ledger.busy:
                continue
            present = [i for i in self.ledger.of_study(study) if self.ledger.present(i.sop)]
            if not present:
                continue
            chosen = self.rng.choice(present)
            level = self.rng.choice(("study", "series", "instance"))
            path = f"{ROOT}/studies/{study}"
            targets = self.ledger.of_study(study)
            if level != "study":
                path += f"/series/{chosen.series}"
                targets = [i for i in targets if i.series == chosen.series]
            if level == "instance":
                path += f"/instances/{chosen.sop}"
                targets = [chosen]
            await self.up.wait()
            self.ledger.busy.add(study)
            try:
                response = await self.http.delete(path)
            except TRANSIENT:
                self.ledger.maybe_deleted.update(i.sop for i in targets)
                continue
            finally:
                self.ledger.busy.discard(study)
            if response.status_code == 200:
                self.ledger.deleted.update(i.sop for i in targets)
                self.ledger.count(f"{level} deletes")
            else:
                self.ledger.fail(f"DELETE {path} answered {response.status_code}")

    # The server

    async def killer(self) -> None:
        low, high = self.args.kill_interval
        while True:
            await asyncio.sleep(self.rng.uniform(low, high))
            if time.monotonic() >= self.quiet_from or not self.running:
                return
            await self.crash_and_restart()

    async def crash_and_restart(self) -> None:
        self.up.clear()
        proc = self.server.proc
        assert proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await asyncio.to_thread(proc.wait, 30)
        if self.server.sampler is not None:
            self.server.sampler.finish()
        self.kills += 1
        self.server.fresh = False
        await asyncio.to_thread(self.server.start)
        self.up.set()

    async def sampler(self) -> None:
        while self.running:
            await asyncio.sleep(0.5)
            if time.monotonic() < self.quiet_from or not self.up.is_set():
                continue
            pid = self.server.pid
            rss = status_kib(pid, "VmRSS")
            with contextlib.suppress(OSError):
                fds = len(os.listdir(f"/proc/{pid}/fd"))
                if rss is not None:
                    self.samples.append((time.monotonic(), rss, fds))

    # The end

    async def verify(self) -> None:
        ledger = self.ledger
        # A few retrieves at a time: a long run leaves tens of thousands to check.
        slots = asyncio.Semaphore(4)

        async def check(instance: Instance) -> None:
            sop = instance.sop
            async with slots:
                status, digest = await self.retrieve(instance)
            if ledger.present(sop) and (status, digest) != (200, instance.digest):
                ledger.fail(f"acknowledged {sop} after the end: {status}, bytes differ")
            elif sop in ledger.deleted and status != 404:
                ledger.fail(f"deleted {sop} is still there ({status})")
            elif status == 200 and digest != instance.digest:
                ledger.fail(f"{sop} of unknown outcome is there with other bytes")
            elif status not in (200, 404):
                ledger.fail(f"{sop}: retrieve answered {status}")

        await asyncio.gather(*(check(i) for i in list(ledger.instances.values())))
        visible = await self.all_instances()
        known = ledger.acknowledged | ledger.unknown
        if not visible <= known - ledger.deleted:
            ledger.fail(f"QIDO-RS lists instances never stored or deleted: {len(visible - known)}")
        lost = {s for s in ledger.acknowledged if ledger.present(s)} - visible
        if lost:
            ledger.fail(f"QIDO-RS misses {len(lost)} acknowledged instances")
        stats = (await self.http.get("/api/stats")).json()
        if stats["instances"] != len(visible):
            ledger.fail(f"/api/stats counts {stats['instances']}, QIDO-RS lists {len(visible)}")
        await self.check_files(len(visible))
        ledger.counts["instances at the end"] = len(visible)

    async def all_instances(self) -> set[str]:
        found: set[str] = set()
        offset = 0
        while True:
            page = await self.search(f"{ROOT}/instances", {"limit": "1000", "offset": str(offset)})
            if not page:
                return found
            found |= {item["00080018"]["Value"][0] for item in page}
            offset += len(page)

    async def check_files(self, expected: int) -> None:
        """One file per instance once the start-up sweep is done; no staging file."""
        data = self.server.data_dir
        files: list[Path] = []
        staging: list[Path] = []
        for _ in range(100):
            files = [p for p in (data / "blobs").rglob("*") if p.is_file()]
            staging = [p for p in (data / "tmp").glob("*") if p.is_file()]
            if len(files) == expected and not staging:
                return
            await asyncio.sleep(0.3)
        self.ledger.fail(
            f"{len(files)} files and {len(staging)} staging files for {expected} instances"
        )

    def flatness(self) -> dict[str, Any]:
        """RSS and descriptors over the quiet phase: first half against second half."""
        samples = self.samples[len(self.samples) // 4 :]  # after a warm-up
        if len(samples) < 8:
            return {"samples": len(samples), "checked": False}
        half = len(samples) // 2
        first, second = samples[:half], samples[half:]
        rss = (max(s[1] for s in first) / 1024, max(s[1] for s in second) / 1024)
        fds = (max(s[2] for s in first), max(s[2] for s in second))
        result = {
            "samples": len(samples),
            "checked": True,
            "rss_mib_first_second": [round(v, 1) for v in rss],
            "fds_first_second": list(fds),
        }
        if rss[1] > rss[0] * 1.15 + 32:
            self.ledger.fail(f"memory grew in the quiet phase: {rss[0]:.0f} -> {rss[1]:.0f} MiB")
        if fds[1] > fds[0] + 16:
            self.ledger.fail(f"file descriptors grew in the quiet phase: {fds[0]} -> {fds[1]}")
        return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--duration", type=float, default=600.0, help="seconds of load (600)")
    p.add_argument("--max-instances", type=int, default=200_000, help="stop storing after this")
    p.add_argument(
        "--kill-interval",
        type=lambda v: tuple(float(x) for x in v.split(",")),
        default=(5.0, 20.0),
        help="seconds between kills: low,high (5,20)",
    )
    p.add_argument("--quiet", type=float, default=0.3, help="final fraction without kills (0.3)")
    p.add_argument("--database-url", help="the index database (default: SQLite in the data dir)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--workdir", help="where the server's data goes (a temporary directory)")
    p.add_argument("--out", default=str(Path(__file__).parent / "results-soak.json"))
    args = p.parse_args()

    extra = ["--database-url", args.database_url] if args.database_url else []
    spec = ours_spec(OURS_DIMSE_CMD, dimse_aet=AET, extra_args=extra, key="soak", label="soak")
    # Unindexed files of a killed server are removed at its next start, at once.
    spec = dataclasses.replace(spec, env={"DICOMWEB_SWEEP_GRACE_SECONDS": "0"})
    with tempfile.TemporaryDirectory(dir=args.workdir, prefix="soak-") as workdir:
        server = RunningServer(spec, Path(workdir))
        server.start()
        soak = Soak(args, server)
        started = time.monotonic()
        try:
            asyncio.run(soak.run())
            flat = soak.flatness()
        finally:
            server.stop()
    ledger = soak.ledger
    summary = {
        "duration_s": round(time.monotonic() - started, 1),
        "kills": soak.kills,
        "instances_sent": len(ledger.instances),
        "acknowledged": len(ledger.acknowledged),
        "unknown_outcome": len(ledger.unknown),
        "deleted": len(ledger.deleted),
        "counts": ledger.counts,
        "quiet_phase": flat,
        "failures": ledger.failures,
    }
    Path(args.out).write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return 1 if ledger.failures else 0


if __name__ == "__main__":
    sys.exit(main())
