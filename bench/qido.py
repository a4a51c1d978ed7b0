"""QIDO-RS search benchmark: our DICOMweb server vs. Orthanc + DICOMweb plugin.

A synthetic, seeded archive of N studies (default 100,000; small 16x16
instances, one per series, one or two series per study) is generated once
into a cache directory, loaded into each server through its own ingest path
(STOW-RS for ours; STOW-RS or REST `POST /instances` for Orthanc), then the
same QIDO-RS study searches are sent to each server at a fixed concurrency:

    patient-id    PatientID=<existing id>
    patient-name  PatientName=<3 letters of a family name>*
    study-date    StudyDate=<first>-<last day of a month>
    modality      ModalitiesInStudy=<modality>&limit=101
    include-all   includefield=all&limit=100&offset=<0..299>
    ohif          OHIF's study list request (limit=101, includefield=...)

For each shape and server it reports requests/s and latency p50/p95/p99, and
checks that every server returns the same number of results for the same
query (and the number the generated catalog predicts).

Usage (from the repository root):

    .venv/bin/python bench/qido.py [--studies 100000] [--postgres] [--keep DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import re
import shutil
import struct
import sys
import tempfile
import time
import unicodedata
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from io import BytesIO
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import asyncpg
import httpx
import numpy as np
import orjson
from common import (
    MIB,
    OURS_CMD,
    REPO,
    UID_ROOT,
    Body,
    LoadResult,
    RunningServer,
    ServerError,
    ServerSpec,
    build_bodies,
    dicomweb_binary,
    dir_bytes,
    fmt,
    machine_info,
    new_boundary,
    ours_spec,
    percentile,
    post_bodies,
    print_table,
    self_peak_rss_mib,
)
from orthanc import DICOMWEB_PLUGIN, ORTHANC_BIN, check_installed, orthanc_spec, orthanc_version
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    ComputedRadiographyImageStorage,
    CTImageStorage,
    DigitalMammographyXRayImageStorageForPresentation,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    MRImageStorage,
    NuclearMedicineImageStorage,
    PositronEmissionTomographyImageStorage,
    UltrasoundImageStorage,
)

# Bump when the generated data changes: cached data and kept servers are keyed by it.
DATA_VERSION = 3
# Results one QIDO-RS response of ours carries when the request has no `limit`
# (MAX_RESULTS in dicomweb/qido.py). Orthanc has no such cap by default.
OURS_MAX_RESULTS = 1000
DICOM_JSON = "application/dicom+json"

# --------------------------------------------------------------------------
# Synthetic archive: catalog
# --------------------------------------------------------------------------

# (modality, weight, SOP Class, study descriptions, body part)
MODALITIES: tuple[tuple[str, int, str, tuple[str, ...], str], ...] = (
    (
        "CT",
        28,
        CTImageStorage,
        ("CT CHEST W CONTRAST", "CT HEAD WO CONTRAST", "CT ABDOMEN PELVIS W", "CT ANGIO CHEST"),
        "CHEST",
    ),
    (
        "MR",
        18,
        MRImageStorage,
        ("MR BRAIN W WO CONTRAST", "MR KNEE LEFT", "MR LUMBAR SPINE", "MR PROSTATE"),
        "BRAIN",
    ),
    (
        "CR",
        16,
        ComputedRadiographyImageStorage,
        ("CHEST 2 VIEWS", "PELVIS AP", "HAND LEFT"),
        "CHEST",
    ),
    (
        "DX",
        14,
        DigitalXRayImageStorageForPresentation,
        ("CHEST PA", "ANKLE RIGHT 3 VIEWS", "KNEE BILAT STANDING"),
        "CHEST",
    ),
    (
        "US",
        12,
        UltrasoundImageStorage,
        ("US ABDOMEN COMPLETE", "US THYROID", "US OB 2ND TRIMESTER", "US CAROTID DOPPLER"),
        "ABDOMEN",
    ),
    (
        "MG",
        7,
        DigitalMammographyXRayImageStorageForPresentation,
        ("MAMMO SCREENING BILAT", "MAMMO DIAGNOSTIC LEFT"),
        "BREAST",
    ),
    (
        "PT",
        3,
        PositronEmissionTomographyImageStorage,
        ("PET CT WHOLE BODY FDG", "PET BRAIN FDG"),
        "WHOLEBODY",
    ),
    (
        "NM",
        2,
        NuclearMedicineImageStorage,
        ("NM BONE SCAN WHOLE BODY", "NM MYOCARDIAL PERFUSION"),
        "WHOLEBODY",
    ),
)
MODALITY_INFO = {m[0]: m for m in MODALITIES}
MODALITY_NAMES = [m[0] for m in MODALITIES]
MODALITY_WEIGHTS = [m[1] for m in MODALITIES]
SERIES_DESCRIPTIONS = {
    "CT": "AXIAL 1.0 SOFT TISSUE",
    "MR": "T1 SAG",
    "CR": "PA",
    "DX": "AP",
    "US": "B-MODE",
    "MG": "L CC",
    "PT": "PET AC",
    "NM": "ANTERIOR",
}
SECOND_SERIES_FRACTION = 0.20
STUDIES_PER_PATIENT = ((1, 55), (2, 30), (3, 15))
FIRST_DAY, LAST_DAY = date(2000, 1, 1), date(2025, 12, 31)

# Some real family and given names, several with Latin-1 letters; the rest of
# each pool is made up from syllables (see _name_pool).
REAL_FAMILY = (
    "Smith", "Müller", "García", "Núñez", "Øberg", "Ström", "Lefèvre", "Björk",
    "Jørgensen", "Peña", "Schäfer", "François", "Dubois", "Rossi", "Bianchi",
    "Kowalski", "Nowak", "Horváth", "Nagy", "Andersen", "Larsson", "Virtanen",
    "Brown", "Taylor", "Wilson", "Martin", "Bernard", "Fernández", "López", "Gómez",
    "Wagner", "Becker", "Hoffmann", "Åberg", "Løvås", "Sørensen", "Conceição",
    "Gonçalves", "Ramírez", "Ibáñez",
)  # fmt: skip
REAL_GIVEN = (
    "Anna", "José", "Zoë", "Björn", "Renée", "Søren", "Inés", "Jürgen", "Chloé",
    "Åsa", "Maria", "John", "Peter", "Lucía", "François", "Hélène", "Mikael",
    "Ole", "Sofía", "Noël", "Jean", "Ana", "Paul", "Eva", "Joël", "Agnès",
)  # fmt: skip
_ONSETS = ("B", "Br", "D", "F", "G", "Gr", "H", "K", "Kr", "L", "M", "N", "P", "R", "S", "St")
_ONSETS2 = ("T", "Tr", "V", "W", "Ch", "Sch", "J", "Bl", "Fl", "Pr", "C", "Z")
_VOWELS = ("a", "e", "i", "o", "u", "a", "e", "o", "y")
_ACCENTED = ("ä", "ö", "ü", "é", "á", "ø", "å", "è", "ó")
_MIDDLES = ("", "l", "r", "n", "m", "nd", "st", "rk", "ll", "tt", "ss", "v")
_FAMILY_ENDINGS = (
    "er", "son", "sen", "mann", "berg", "ez", "es", "ini", "ardt", "ard", "ier",
    "ow", "ski", "ley", "ton", "well", "ing", "eau", "ani", "elli", "quist", "haus",
    "ides", "escu", "enko", "stad", "ens", "ola",
)  # fmt: skip
_GIVEN_ENDINGS = ("a", "o", "ine", "el", "an", "ia", "us", "ette", "ik", "is", "ara", "en", "ie")


# Made-up names containing one of these (accents removed) are not used.
_AVOID = (
    "anal", "anus", "butt", "cock", "cul", "cum", "cunt", "dick", "dildo", "fag", "fick",
    "fuck", "hitler", "kuk", "merd", "nazi", "nig", "penis", "pis", "poo", "porn", "puta",
    "rape", "sex", "shit", "slut", "tit", "twat", "wank", "whore",
)  # fmt: skip


def _acceptable(name: str) -> bool:
    plain = unicodedata.normalize("NFKD", name.casefold())
    plain = "".join(c for c in plain if not unicodedata.combining(c))
    tripled = re.search(r"(.)\1\1", plain) is not None  # "Vullley"
    return not tripled and not any(word in plain for word in _AVOID)


def _made_up(rng: random.Random, endings: Sequence[str], accented: float) -> str:
    onset = rng.choice(_ONSETS + _ONSETS2)
    vowel = rng.choice(_ACCENTED) if rng.random() < accented else rng.choice(_VOWELS)
    return onset + vowel + rng.choice(_MIDDLES) + rng.choice(endings)


def _name_pool(
    rng: random.Random, real: Sequence[str], size: int, endings: Sequence[str]
) -> list[str]:
    names = dict.fromkeys(real)
    while len(names) < size:
        name = _made_up(rng, endings, accented=0.12)
        if _acceptable(name):
            names.setdefault(name)
    pool = list(names)
    for name in pool:  # every name must be encodable in ISO_IR 100
        name.encode("latin-1")
    return pool


@dataclass(frozen=True, slots=True)
class SeriesInfo:
    uid: str
    modality: str
    number: int
    sop_uid: str


@dataclass(frozen=True, slots=True)
class StudyInfo:
    index: int
    uid: str
    patient_id: str
    patient_name: str
    birth_date: str
    sex: str
    charset: str
    date: str
    time: str
    accession: str
    description: str
    referring: str
    series: tuple[SeriesInfo, ...]

    @property
    def modalities(self) -> set[str]:
        return {s.modality for s in self.series}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> StudyInfo:
        series = tuple(SeriesInfo(**s) for s in doc.pop("series"))
        return cls(**doc, series=series)


def _day(rng: random.Random, first: date, last: date) -> date:
    return first + timedelta(days=rng.randrange((last - first).days + 1))


def _modality(rng: random.Random, exclude: str | None = None) -> str:
    while True:
        m = rng.choices(MODALITY_NAMES, MODALITY_WEIGHTS)[0]
        if m != exclude:
            return m


def generate_catalog(studies: int, seed: int) -> list[StudyInfo]:
    """The archive's studies, in load order; the same for the same arguments."""
    rng = random.Random(seed)
    family = _name_pool(rng, REAL_FAMILY, 300, _FAMILY_ENDINGS)
    given = _name_pool(rng, REAL_GIVEN, 200, _GIVEN_ENDINGS)
    referring = [f"{rng.choice(family)}^{rng.choice(given)}^^Dr" for _ in range(80)]
    counts, weights = zip(*STUDIES_PER_PATIENT, strict=True)
    catalog: list[StudyInfo] = []
    patient = 0
    while len(catalog) < studies:
        patient += 1
        name = f"{rng.choice(family)}^{rng.choice(given)}"
        if rng.random() < 0.15:
            name += "^" + rng.choice("ABCDEFGHJKLMNPRSTW")
        sex = rng.choices(("F", "M", "O"), (49, 49, 2))[0]
        birth = _day(rng, date(1930, 1, 1), date(2015, 12, 31))
        charset = rng.choice(("ISO_IR 100", "ISO_IR 192"))
        for _ in range(min(rng.choices(counts, weights)[0], studies - len(catalog))):
            index = len(catalog)
            study_uid = f"{UID_ROOT}{DATA_VERSION}.{seed}.{index + 1}"
            first = _modality(rng)
            while first == "MG" and sex != "F":
                first = _modality(rng)
            modalities = [first]
            if rng.random() < SECOND_SERIES_FRACTION:
                modalities.append("CT" if first in ("PT", "NM") else _modality(rng, first))
            series = tuple(
                SeriesInfo(
                    uid=f"{study_uid}.{n}", modality=m, number=n, sop_uid=f"{study_uid}.{n}.1"
                )
                for n, m in enumerate(modalities, start=1)
            )
            day = _day(rng, max(FIRST_DAY, birth), LAST_DAY)
            seconds = rng.randrange(60)
            catalog.append(
                StudyInfo(
                    index=index,
                    uid=study_uid,
                    patient_id=f"P{patient:07d}",
                    patient_name=name,
                    birth_date=birth.strftime("%Y%m%d"),
                    sex=sex,
                    charset=charset,
                    date=day.strftime("%Y%m%d"),
                    time=f"{rng.randrange(7, 20):02d}{rng.randrange(3600) // 60:02d}{seconds:02d}",
                    accession=f"A{seed % 1000:03d}{index + 1:08d}",
                    description=rng.choice(MODALITY_INFO[first][3]),
                    referring="" if rng.random() < 0.05 else rng.choice(referring),
                    series=series,
                )
            )
    return catalog


# --------------------------------------------------------------------------
# Synthetic archive: encoded instances, cached on disk
# --------------------------------------------------------------------------

PACK_STUDIES = 1000  # studies per pack file
_LENGTH = struct.Struct("<I")


def encode_instance(study: StudyInfo, series: SeriesInfo) -> bytes:
    """One small PS3.10 file (Explicit VR Little Endian, 16x16 16-bit pixels)."""
    sop_class = UID(MODALITY_INFO[series.modality][2])
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = UID(series.sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = study.charset
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = series.sop_uid
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = study.date
    ds.StudyTime = study.time
    ds.SeriesTime = ds.ContentTime = study.time[:4] + f"{(int(study.time[4:6]) + 5) % 60:02d}"
    ds.AccessionNumber = study.accession
    ds.Modality = series.modality
    ds.Manufacturer = "Bench Medical"
    ds.InstitutionName = "Loopback General Hospital"
    ds.ReferringPhysicianName = study.referring
    ds.StudyDescription = study.description
    ds.SeriesDescription = SERIES_DESCRIPTIONS[series.modality]
    ds.PatientName = study.patient_name
    ds.PatientID = study.patient_id
    ds.PatientBirthDate = study.birth_date
    ds.PatientSex = study.sex
    ds.BodyPartExamined = MODALITY_INFO[series.modality][4]
    ds.StudyInstanceUID = study.uid
    ds.SeriesInstanceUID = series.uid
    ds.StudyID = str(study.index % 99999 + 1)
    ds.SeriesNumber = series.number
    ds.InstanceNumber = 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = 16
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    rng = np.random.default_rng((study.index, series.number))
    ds.PixelData = rng.integers(0, 4096, size=256, dtype=np.uint16).tobytes()
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _write_pack(path: Path, studies: Sequence[StudyInfo]) -> int:
    """Encode the studies' instances into one pack file: (u32 length, bytes)*."""
    count = 0
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as fh:
        for study in studies:
            for series in study.series:
                data = encode_instance(study, series)
                fh.write(_LENGTH.pack(len(data)))
                fh.write(data)
                count += 1
    tmp.replace(path)
    return count


@dataclass
class Archive:
    """The generated archive in its cache directory."""

    path: Path
    studies: int
    seed: int
    catalog: list[StudyInfo]
    instances: int

    def packs(self) -> list[Path]:
        return sorted((self.path / "packs").glob("*.bin"))

    def read_instances(self) -> list[bytes]:
        out: list[bytes] = []
        for pack in self.packs():
            data = pack.read_bytes()
            pos = 0
            while pos < len(data):
                (size,) = _LENGTH.unpack_from(data, pos)
                out.append(data[pos + 4 : pos + 4 + size])
                pos += 4 + size
        return out

    @property
    def key(self) -> str:
        return f"n{self.studies}-s{self.seed}-v{DATA_VERSION}"


def prepare_archive(cache: Path, studies: int, seed: int) -> Archive:
    """Load the archive from the cache, generating it first when missing."""
    path = cache / f"qido-n{studies}-s{seed}-v{DATA_VERSION}"
    done = path / "complete.json"
    t0 = time.perf_counter()
    if done.exists():
        info = json.loads(done.read_text())
        docs = orjson.loads((path / "catalog.json").read_bytes())
        catalog = [StudyInfo.from_json(d) for d in docs]
        print(
            f"archive: {studies} studies, {info['instances']} instances from cache {path} "
            f"({time.perf_counter() - t0:.1f}s)",
            flush=True,
        )
        return Archive(path, studies, seed, catalog, int(info["instances"]))

    shutil.rmtree(path, ignore_errors=True)
    (path / "packs").mkdir(parents=True)
    catalog = generate_catalog(studies, seed)
    (path / "catalog.json").write_bytes(orjson.dumps(catalog))
    chunks = [catalog[i : i + PACK_STUDIES] for i in range(0, len(catalog), PACK_STUDIES)]
    print(
        f"archive: generating {studies} studies into {path} ({len(chunks)} packs) ...", flush=True
    )
    instances = 0
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        futures = [
            pool.submit(_write_pack, path / "packs" / f"{n:05d}.bin", chunk)
            for n, chunk in enumerate(chunks)
        ]
        for n, future in enumerate(futures, start=1):
            instances += future.result()
            if n % 20 == 0:
                print(f"  {n}/{len(chunks)} packs", flush=True)
    done.write_text(json.dumps({"studies": studies, "seed": seed, "instances": instances}))
    size = sum(p.stat().st_size for p in (path / "packs").glob("*.bin"))
    print(
        f"archive: {studies} studies, {instances} instances, {size / MIB:.1f} MiB "
        f"generated in {time.perf_counter() - t0:.1f}s",
        flush=True,
    )
    return Archive(path, studies, seed, catalog, instances)


# --------------------------------------------------------------------------
# Queries
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One QIDO-RS request: its query string and the number of matches in the catalog."""

    query: str
    matches: int  # studies that match, before any limit
    limit: int | None  # the request's `limit`, if any

    def expected(self, cap: int | None) -> int:
        """Results a server returning at most `cap` per response (None: no cap) sends."""
        bounds = [b for b in (self.limit, cap) if b is not None]
        return min([self.matches, *bounds])


@dataclass(frozen=True)
class QueryShape:
    key: str
    description: str
    cases: list[Case]


SHAPES = (
    "patient-id",
    "patient-name",
    "patient-name-latin1",
    "study-date",
    "modality",
    "include-all",
    "ohif",
)
OHIF_PARAMS = (
    ("limit", "101"),
    ("offset", "0"),
    ("fuzzymatching", "false"),
    ("includefield", "00081030,00080060,00080090,00100030"),
)


def _qs(params: Sequence[tuple[str, str]]) -> str:
    return urlencode(params, safe="*,")


def build_shapes(
    catalog: Sequence[StudyInfo], count: int, seed: int, keys: Sequence[str]
) -> list[QueryShape]:
    """`count` deterministic cases per shape, drawn from the catalog."""
    rng = random.Random(seed * 7919 + 1)
    total = len(catalog)
    by_patient: dict[str, int] = {}
    family_names: dict[str, int] = {}
    for s in catalog:
        by_patient[s.patient_id] = by_patient.get(s.patient_id, 0) + 1
        family = s.patient_name.split("^")[0]
        family_names[family] = family_names.get(family, 0) + 1
    patients = sorted(by_patient)
    dates = sorted(s.date for s in catalog)

    def name_matches(prefix: str) -> int:
        return sum(n for f, n in family_names.items() if f.startswith(prefix))

    # Prefixes of ASCII letters for the timed name search; those with a Latin-1
    # letter (e.g. "Mül") make a shape of their own, as Orthanc's QIDO-RS finds
    # nothing for non-ASCII values (see bench/README.md). Prefixes matching more
    # studies than ours returns without `limit` (e.g. "Sch" at 100,000 studies)
    # are left out, so that every server has the same results to send.
    def usable(family: str) -> bool:
        return name_matches(family[:3]) <= OURS_MAX_RESULTS

    ascii_families = sorted(f for f in family_names if f[:3].isascii() and usable(f))
    latin1_families = sorted(f for f in family_names if not f[:3].isascii() and usable(f))

    def in_range(low: str, high: str) -> int:
        return bisect_right(dates, high) - bisect_left(dates, low)

    with_modality = {m: sum(1 for s in catalog if m in s.modalities) for m in MODALITY_NAMES}

    shapes: list[QueryShape] = []
    for key in keys:
        cases: list[Case] = []
        for _ in range(count):
            if key == "patient-id":
                pid = rng.choice(patients)
                cases.append(Case(_qs([("PatientID", pid)]), by_patient[pid], None))
            elif key in ("patient-name", "patient-name-latin1"):
                pool = ascii_families if key == "patient-name" else latin1_families
                prefix = rng.choice(pool or sorted(family_names))[:3]
                cases.append(Case(_qs([("PatientName", prefix + "*")]), name_matches(prefix), None))
            elif key == "study-date":
                year, month = rng.randrange(FIRST_DAY.year, LAST_DAY.year + 1), rng.randrange(1, 13)
                first = date(year, month, 1)
                last = (first + timedelta(days=32)).replace(day=1) - timedelta(days=1)
                low, high = first.strftime("%Y%m%d"), last.strftime("%Y%m%d")
                cases.append(Case(_qs([("StudyDate", f"{low}-{high}")]), in_range(low, high), None))
            elif key == "modality":
                m = rng.choice(MODALITY_NAMES)
                q = _qs([("ModalitiesInStudy", m), ("limit", "101")])
                cases.append(Case(q, with_modality[m], 101))
            elif key == "include-all":
                offset = rng.randrange(300)
                q = _qs([("includefield", "all"), ("limit", "100"), ("offset", str(offset))])
                cases.append(Case(q, max(0, total - offset), 100))
            elif key == "ohif":
                cases.append(Case(_qs(OHIF_PARAMS), total, 101))
            else:
                raise ValueError(f"unknown query shape {key!r}")
        descriptions = {
            "patient-id": "PatientID=<existing id>",
            "patient-name": "PatientName=<3 ASCII letters>*",
            "patient-name-latin1": "PatientName=<3 letters, one non-ASCII>*",
            "study-date": "StudyDate=<one month>",
            "modality": "ModalitiesInStudy=<m>&limit=101",
            "include-all": "includefield=all&limit=100&offset=<0..299>",
            "ohif": "OHIF study list (" + _qs(OHIF_PARAMS) + ")",
        }
        shapes.append(QueryShape(key, descriptions[key], cases))
    return shapes


@dataclass
class ShapeRun:
    requests: int = 0
    latencies_s: list[float] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    counts: dict[int, int] = field(default_factory=dict)  # case index -> results
    inconsistent: set[int] = field(default_factory=set)  # cases whose count changed
    results: int = 0
    response_bytes: int = 0
    wall_s: float = 0.0
    timed_out: bool = False


def _result_count(resp: httpx.Response) -> int | None:
    if resp.status_code == 204 or not resp.content.strip():
        return 0
    try:
        doc = orjson.loads(resp.content)
    except orjson.JSONDecodeError:
        return None
    return len(doc) if isinstance(doc, list) else None


async def _query_loop(
    url: str,
    cases: Sequence[Case],
    concurrency: int,
    max_requests: int,
    duration: float,
    warmup: int,
    request_timeout: float,
    run: ShapeRun,
) -> None:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    timeout = httpx.Timeout(request_timeout, connect=10.0)
    headers = {"Accept": DICOM_JSON}
    urls = [f"{url}?{c.query}" for c in cases]
    async with httpx.AsyncClient(
        limits=limits, timeout=timeout, headers=headers, trust_env=False
    ) as client:
        # Warm-up: cases from the end of the list, so not the first measured ones.
        for n in range(warmup):
            with contextlib.suppress(httpx.HTTPError):
                await client.get(urls[-1 - n % len(urls)])
        counter = itertools.count()
        start = time.perf_counter()
        deadline = start + duration

        async def worker() -> None:
            while True:
                n = next(counter)
                if n >= max_requests:
                    return
                if time.perf_counter() >= deadline:
                    run.timed_out = n < max_requests
                    return
                case = n % len(cases)
                t0 = time.perf_counter()
                try:
                    resp = await client.get(urls[case])
                except httpx.HTTPError as exc:
                    run.requests += 1
                    run.errors.append(f"{type(exc).__name__}: {exc} ({cases[case].query})")
                    continue
                run.latencies_s.append(time.perf_counter() - t0)
                run.requests += 1
                key = str(resp.status_code)
                run.statuses[key] = run.statuses.get(key, 0) + 1
                run.response_bytes += len(resp.content)
                if resp.status_code not in (200, 204):
                    if len(run.errors) < 50:
                        run.errors.append(
                            f"HTTP {resp.status_code} for ?{cases[case].query}: {resp.text[:200]}"
                        )
                    continue
                found = _result_count(resp)
                if found is None:
                    run.errors.append(f"not a DICOM JSON array for ?{cases[case].query}")
                    continue
                run.results += found
                if run.counts.setdefault(case, found) != found:
                    run.inconsistent.add(case)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        run.wall_s = time.perf_counter() - start


def run_queries(url: str, shape: QueryShape, args: argparse.Namespace) -> tuple[ShapeRun, float]:
    """Warm-up, then the timed requests of one shape; returns the run and client CPU s."""
    run = ShapeRun()

    async def main() -> None:
        try:
            async with asyncio.timeout(
                args.duration + args.request_timeout * (2 + args.warmup) + 30
            ):
                await _query_loop(
                    url,
                    shape.cases,
                    args.concurrency,
                    args.requests,
                    args.duration,
                    args.warmup,
                    args.request_timeout,
                    run,
                )
        except TimeoutError:
            run.timed_out = True

    cpu0 = time.process_time()
    asyncio.run(main())
    return run, time.process_time() - cpu0


def shape_record(server: str, cap: int | None, shape: QueryShape, run: ShapeRun) -> dict[str, Any]:
    lat = sorted(run.latencies_s)

    def ms(p: float) -> float | None:
        v = percentile(lat, p)
        return None if v is None else round(v * 1000, 2)

    wrong = {i: n for i, n in run.counts.items() if n != shape.cases[i].expected(cap)}
    bad_status = {k: v for k, v in run.statuses.items() if k not in ("200", "204")}
    problems: list[str] = []
    if bad_status:
        problems.append(f"statuses {bad_status}")
    if run.errors:
        problems.append(f"{len(run.errors)} errors, e.g. {run.errors[0]}")
    if run.inconsistent:
        problems.append(f"{len(run.inconsistent)} queries gave different counts when repeated")
    answered = sum(run.statuses.get(k, 0) for k in ("200", "204"))
    return {
        "server": server,
        "shape": shape.key,
        "requests": run.requests,
        "answered": answered,
        "statuses": run.statuses,
        "errors": run.errors[:10],
        "error_count": len(run.errors),
        "wall_s": round(run.wall_s, 3),
        "req_per_s": round(answered / run.wall_s, 1) if run.wall_s else None,
        "latency_p50_ms": ms(0.50),
        "latency_p95_ms": ms(0.95),
        "latency_p99_ms": ms(0.99),
        "latency_max_ms": round(lat[-1] * 1000, 2) if lat else None,
        "results_per_request": round(run.results / answered, 1) if answered else None,
        "response_kib_per_request": round(run.response_bytes / answered / 1024, 1)
        if answered
        else None,
        "distinct_queries": len(run.counts),
        "count_differs_from_catalog": len(wrong),
        "count_examples": [
            {
                "query": shape.cases[i].query,
                "results": n,
                "catalog_expects": shape.cases[i].expected(cap),
            }
            for i, n in list(wrong.items())[:5]
        ],
        "counts": {str(i): n for i, n in sorted(run.counts.items())},
        "timed_out": run.timed_out,
        "ok": not problems,
        "problems": problems,
    }


# --------------------------------------------------------------------------
# Servers: PostgreSQL databases, load state, counting
# --------------------------------------------------------------------------

_DB_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def _pg_admin(pg: str, sql: str, *params: str) -> list[Any]:
    async def main() -> list[Any]:
        conn = await asyncpg.connect(f"postgresql://{pg}/postgres", timeout=10)
        try:
            if sql.startswith("SELECT"):
                return list(await conn.fetch(sql, *params))
            await conn.execute(sql)
            return []
        finally:
            await conn.close()

    return asyncio.run(main())


def pg_exists(pg: str, name: str) -> bool:
    return bool(_pg_admin(pg, "SELECT 1 FROM pg_database WHERE datname = $1", name))


def pg_drop(pg: str, name: str) -> None:
    if not _DB_NAME.fullmatch(name):
        raise ValueError(f"bad database name {name!r}")
    _pg_admin(pg, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pg_create(pg: str, name: str) -> None:
    if not _DB_NAME.fullmatch(name):
        raise ValueError(f"bad database name {name!r}")
    _pg_admin(pg, f'CREATE DATABASE "{name}"')


@dataclass
class Target:
    """One server of the benchmark, its data location and how it is loaded."""

    spec: ServerSpec
    workdir: Path
    cap: int | None  # results per response when the request has no limit
    ingest: str  # "stow" or "rest"
    database: str | None = None  # PostgreSQL database (ours-pg)
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return self.spec.key

    @property
    def marker(self) -> Path:
        return self.workdir / "loaded.json"


def qido_root(server: RunningServer) -> str:
    return server.stow_url.removesuffix("/studies")


def probe_count(client: httpx.Client, url: str, count: int) -> str | None:
    """None when `url` (a QIDO-RS search) has exactly `count` results, else why not."""
    if count > 0:
        resp = client.get(url, params={"offset": str(count - 1), "limit": "1"})
        if resp.status_code != 200 or _result_count(resp) != 1:
            return f"fewer than {count} (offset {count - 1}: HTTP {resp.status_code})"
    resp = client.get(url, params={"offset": str(count), "limit": "1"})
    if resp.status_code not in (200, 204) or _result_count(resp) != 0:
        return f"more than {count} (offset {count}: HTTP {resp.status_code})"
    return None


def check_counts(server: RunningServer, archive: Archive) -> list[str]:
    """Problems with the number of studies and instances the server holds.

    Orthanc tells its counts (GET /statistics); ours is probed with QIDO-RS
    `offset` (the last result exists, the one after it does not).
    """
    root = qido_root(server)
    problems: list[str] = []
    headers = {"Accept": DICOM_JSON}
    with httpx.Client(timeout=300.0, headers=headers, trust_env=False) as client:
        if server.spec.key == "orthanc":
            stats = client.get(server.base_url + "/statistics").json()
            for level, count in (("Studies", archive.studies), ("Instances", archive.instances)):
                if stats.get(f"Count{level}") != count:
                    problems.append(f"{level}: {stats.get(f'Count{level}')} of {count}")
            return problems
        for level, count in (("studies", archive.studies), ("instances", archive.instances)):
            why = probe_count(client, f"{root}/{level}", count)
            if why:
                problems.append(f"{level}: {why}")
    return problems


def wait_orthanc_stable(base_url: str, study_uid: str, timeout: float) -> float:
    """Wait until Orthanc has marked the last loaded study stable (no background work)."""
    t0 = time.perf_counter()
    # A new connection per request: Orthanc closes idle keep-alive connections
    # after about a second, which would race with the polling interval.
    found = httpx.post(base_url + "/tools/lookup", content=study_uid, trust_env=False).json()
    if not found:
        return 0.0
    path = found[0]["Path"]
    while time.perf_counter() - t0 < timeout:
        if httpx.get(base_url + path, trust_env=False).json().get("IsStable"):
            break
        time.sleep(1.0)
    return time.perf_counter() - t0


# --------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------


def load(
    target: Target, server: RunningServer, instances: Sequence[bytes], args: argparse.Namespace
) -> dict[str, Any]:
    """Ingest every instance into a running server; returns the load record."""
    boundary = new_boundary()
    if target.ingest == "rest":
        url = server.base_url + "/instances"
        bodies = [Body(data, 1) for data in instances]  # one bare PS3.10 file each
        content_type: str | None = "application/dicom"
        per_request = 1
    else:
        url = server.stow_url
        bodies = build_bodies(instances, args.batch, boundary)
        content_type = None
        per_request = args.batch
    planned = len(instances)
    t0 = time.perf_counter()

    def progress(result: LoadResult) -> None:
        elapsed = time.perf_counter() - t0
        print(
            f"    {target.key}: {result.instances_ok}/{planned} instances, "
            f"{result.instances_ok / elapsed:.0f}/s",
            flush=True,
        )

    cpu0 = server.cpu_seconds()
    result = post_bodies(
        url,
        bodies,
        boundary,
        args.load_concurrency,
        request_timeout=args.request_timeout * 10,
        run_timeout=args.load_timeout,
        content_type=content_type,
        stow_response=target.ingest == "stow",
        progress=progress,
        progress_every=30.0,
    )
    return {
        "method": f"{'REST POST /instances' if target.ingest == 'rest' else 'STOW-RS'}",
        "instances_per_request": per_request,
        "concurrency": args.load_concurrency,
        "instances": planned,
        "wall_s": round(result.wall_s, 1),
        "inst_per_s": round(result.instances_ok / result.wall_s, 1) if result.wall_s else None,
        "server_cpu_s": round(server.cpu_seconds() - cpu0, 1),
        "ok": result.all_ok,
        "problems": result.problems(),
    }


def prepare_target(
    target: Target, archive: Archive, instances: Callable[[], list[bytes]], args: argparse.Namespace
) -> RunningServer:
    """Start the server on loaded data: reused when kept and complete, else loaded now."""
    wanted = {
        "studies": archive.studies,
        "instances": archive.instances,
        "seed": archive.seed,
        "data_version": DATA_VERSION,
        "database": target.database,
    }
    reuse = False
    if args.keep and target.marker.exists():
        with contextlib.suppress(ValueError, OSError):
            kept = json.loads(target.marker.read_text())
            reuse = {k: kept.get(k) for k in wanted} == wanted
        if reuse and target.database and not pg_exists(args.pg, target.database):
            reuse = False
    if reuse:
        server = RunningServer(
            target.spec, target.workdir, startup_timeout=args.startup_timeout, fresh=False
        )
        server.start()
        problems = check_counts(server, archive)
        if not problems:
            kept_load = json.loads(target.marker.read_text()).get("load")
            target.record["load"] = {**(kept_load or {}), "reused": True}
            print(f"  {target.key}: reusing loaded data in {target.workdir}", flush=True)
            return server
        print(f"  {target.key}: kept data is not complete ({'; '.join(problems)}); reloading")
        server.stop()

    shutil.rmtree(target.workdir, ignore_errors=True)
    target.workdir.mkdir(parents=True)
    if target.database:
        pg_drop(args.pg, target.database)
        pg_create(args.pg, target.database)
    os.sync()
    server = RunningServer(target.spec, target.workdir, startup_timeout=args.startup_timeout)
    server.start()
    print(
        f"  {target.key}: loading {archive.instances} instances "
        f"({'REST' if target.ingest == 'rest' else 'STOW-RS'}) ...",
        flush=True,
    )
    try:
        record = load(target, server, instances(), args)
        if target.key == "orthanc":
            waited = wait_orthanc_stable(server.base_url, archive.catalog[-1].uid, 300.0)
            record["orthanc_stable_wait_s"] = round(waited, 1)
        os.sync()
        problems = record["problems"] + check_counts(server, archive)
    except BaseException:
        server.stop()
        raise
    record["ok"] = not problems
    record["problems"] = problems
    record["stored_mib"] = round(dir_bytes(target.workdir / "data") / MIB, 1)
    target.record["load"] = record
    print(
        f"  {target.key}: loaded {archive.instances} instances in {record['wall_s']}s "
        f"({record['inst_per_s']} inst/s)" + ("" if not problems else f"  PROBLEMS: {problems}"),
        flush=True,
    )
    if args.keep and not problems:
        target.marker.write_text(json.dumps({**wanted, "load": record}, indent=2))
    return server


# --------------------------------------------------------------------------
# Running and reporting
# --------------------------------------------------------------------------


def run_target(
    target: Target,
    archive: Archive,
    shapes: Sequence[QueryShape],
    instances: Callable[[], list[bytes]],
    args: argparse.Namespace,
) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    try:
        server = prepare_target(target, archive, instances, args)
    except (ServerError, httpx.HTTPError, OSError, asyncpg.PostgresError) as exc:
        target.record["error"] = str(exc)
        print(f"  {target.key}: FAILED to start or load: {exc}", flush=True)
        return records
    try:
        if not target.record["load"].get("ok"):
            print(f"  {target.key}: load failed; its queries are skipped", flush=True)
            return records
        root = qido_root(server)
        for shape in shapes:
            cpu0 = server.cpu_seconds()
            run, client_cpu = run_queries(root + "/studies", shape, args)
            rec = shape_record(target.key, target.cap, shape, run)
            rec["server_cpu_s"] = round(server.cpu_seconds() - cpu0, 2)
            rec["client_cpu_s"] = round(client_cpu, 2)
            records.append(rec)
            print(
                f"  {target.key:8s} {shape.key:13s} {fmt(rec['req_per_s'])} req/s, "
                f"p50 {fmt(rec['latency_p50_ms'])} ms, p95 {fmt(rec['latency_p95_ms'])} ms, "
                f"p99 {fmt(rec['latency_p99_ms'])} ms, {fmt(rec['results_per_request'])} "
                f"results/req, server CPU {rec['server_cpu_s']} s"
                + ("" if rec["ok"] else f"  [{'; '.join(rec['problems'])}]"),
                flush=True,
            )
        target.record["memory"] = server.memory()
        alive = server.proc is not None and server.proc.poll() is None
        if not alive:
            target.record["error"] = "server exited:\n" + server.log_tail()
    finally:
        server.stop()
    return records


def compare_counts(
    shapes: Sequence[QueryShape], records: Sequence[dict[str, Any]], targets: Sequence[Target]
) -> list[dict[str, Any]]:
    """Per shape and pair of servers: queries whose result counts differ."""
    out: list[dict[str, Any]] = []
    caps = {t.key: t.cap for t in targets}
    by = {(r["server"], r["shape"]): r for r in records}
    keys = [t.key for t in targets]
    for shape in shapes:
        for a, b in itertools.combinations(keys, 2):
            ra, rb = by.get((a, shape.key)), by.get((b, shape.key))
            if ra is None or rb is None:
                continue
            common = sorted(set(ra["counts"]) & set(rb["counts"]), key=int)
            differ = [i for i in common if ra["counts"][i] != rb["counts"][i]]
            # Differences explained by one server capping responses without `limit`.
            capped = [
                i
                for i in differ
                if shape.cases[int(i)].expected(caps[a]) == ra["counts"][i]
                and shape.cases[int(i)].expected(caps[b]) == rb["counts"][i]
            ]
            out.append(
                {
                    "shape": shape.key,
                    "servers": [a, b],
                    "compared": len(common),
                    "differ": len(differ),
                    "differ_by_cap": len(capped),
                    "examples": [
                        {
                            "query": shape.cases[int(i)].query,
                            a: ra["counts"][i],
                            b: rb["counts"][i],
                            "catalog_matches": shape.cases[int(i)].matches,
                        }
                        for i in list({shape.cases[int(i)].query: i for i in differ}.values())[:5]
                    ],
                }
            )
    return out


def summary_rows(
    shapes: Sequence[QueryShape], records: Sequence[dict[str, Any]], keys: Sequence[str]
) -> list[dict[str, Any]]:
    by = {(r["server"], r["shape"]): r for r in records}
    rows: list[dict[str, Any]] = []
    for shape in shapes:
        ref = by.get(("orthanc", shape.key))
        for key in keys:
            rec = by.get((key, shape.key))
            if rec is None:
                continue
            row = {
                k: rec[k]
                for k in (
                    "shape",
                    "server",
                    "req_per_s",
                    "latency_p50_ms",
                    "latency_p95_ms",
                    "latency_p99_ms",
                    "results_per_request",
                    "distinct_queries",
                    "count_differs_from_catalog",
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


def print_summary(rows: Sequence[dict[str, Any]], comparisons: Sequence[dict[str, Any]]) -> None:
    head = (
        "shape",
        "server",
        "req/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "results/req",
        "counts vs catalog",
        "req/s vs Orthanc",
        "p50 vs Orthanc",
    )
    lines: list[tuple[str, ...]] = [head]
    for r in rows:
        lines.append(
            (
                r["shape"],
                r["server"] + ("" if r["ok"] else " !"),
                fmt(r["req_per_s"]),
                fmt(r["latency_p50_ms"]),
                fmt(r["latency_p95_ms"]),
                fmt(r["latency_p99_ms"]),
                fmt(r["results_per_request"]),
                "ok"
                if not r["count_differs_from_catalog"]
                else f"{r['count_differs_from_catalog']}/{r['distinct_queries']} differ",
                fmt(r.get("req_per_s_vs_orthanc"), "x"),
                fmt(r.get("p50_vs_orthanc"), "x"),
            )
        )
    print_table(lines)
    print("\nresult counts, per pair of servers (same query, same data):")
    for c in comparisons:
        a, b = c["servers"]
        line = f"  {c['shape']:13s} {a} vs {b}: {c['compared']} queries compared, "
        if not c["differ"]:
            print(line + "all agree")
            continue
        print(
            line + f"{c['differ']} differ ({c['differ_by_cap']} explained by the "
            f"{OURS_MAX_RESULTS}-result cap of ours without `limit`)"
        )
        if c["shape"] == "patient-name-latin1" and "orthanc" in (a, b):
            print("      (known: Orthanc's QIDO-RS finds nothing for non-ASCII values)")
        for ex in c["examples"][:3]:
            print(
                f"      ?{ex['query']}: {a} {ex[a]}, {b} {ex[b]}, catalog {ex['catalog_matches']}"
            )


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="QIDO-RS search benchmark: ours vs. Orthanc (loopback only).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--studies", type=int, default=100_000, help="studies in the archive")
    p.add_argument("--seed", type=int, default=1, help="seed of the generated archive")
    p.add_argument(
        "--cache",
        default=str(Path(tempfile.gettempdir()) / "dicomweb-bench-cache"),
        help="directory of generated archives (reused by later runs)",
    )
    p.add_argument(
        "--keep",
        default=None,
        metavar="DIR",
        help="keep loaded servers' data under DIR (keyed by studies, seed) and reuse it",
    )
    p.add_argument("--out", default=str(REPO / "bench" / "results-qido.json"))
    p.add_argument("--servers", default="orthanc,ours", help="comma list: orthanc, ours")
    p.add_argument(
        "--postgres", action="store_true", help="also run ours on PostgreSQL (server ours-pg)"
    )
    p.add_argument(
        "--pg",
        default="postgres@127.0.0.1:5432",
        help="PostgreSQL USER@HOST:PORT for --postgres (a database is created and dropped)",
    )
    p.add_argument("--shapes", default=",".join(SHAPES), help="comma list of query shapes")
    p.add_argument("--concurrency", type=int, default=8, help="concurrent QIDO-RS requests")
    p.add_argument("--requests", type=int, default=500, help="at most this many requests per shape")
    p.add_argument("--duration", type=float, default=20.0, help="at most this many s per shape")
    p.add_argument("--warmup", type=int, default=5, help="warm-up requests per shape")
    p.add_argument("--batch", type=int, default=50, help="instances per STOW-RS load request")
    p.add_argument("--load-concurrency", type=int, default=4, help="concurrent load requests")
    p.add_argument(
        "--orthanc-ingest",
        choices=("stow", "rest"),
        default="stow",
        help="Orthanc's load path: DICOMweb STOW-RS or REST POST /instances (one per request)",
    )
    p.add_argument("--request-timeout", type=float, default=120.0, help="seconds per query")
    p.add_argument("--load-timeout", type=float, default=4 * 3600.0, help="bound on one load, s")
    p.add_argument("--startup-timeout", type=float, default=300.0)
    p.add_argument("--workdir", default=None, help="parent for temporary data (without --keep)")
    p.add_argument(
        "--ours-cmd",
        default=OURS_CMD,
        help="command for our server; {dicomweb} {data_dir} {port} {workdir}",
    )
    p.add_argument("--orthanc-bin", default=ORTHANC_BIN)
    p.add_argument("--orthanc-plugin", default=DICOMWEB_PLUGIN)
    args = p.parse_args(argv)
    if args.studies < 1 or args.concurrency < 1 or args.requests < 1 or args.batch < 1:
        p.error("--studies, --concurrency, --requests and --batch must be >= 1")
    unknown = set(args.shapes.split(",")) - set(SHAPES)
    if unknown:
        p.error(f"unknown shapes {sorted(unknown)}; known: {', '.join(SHAPES)}")
    return args


def make_targets(args: argparse.Namespace, tmp: Path, archive: Archive) -> list[Target] | str:
    keys = [k.strip() for k in args.servers.split(",") if k.strip()]
    if args.postgres and "ours-pg" not in keys:
        keys.append("ours-pg")
    base = Path(args.keep) if args.keep else tmp
    targets: list[Target] = []
    for key in keys:
        workdir = base / f"{key}-{archive.key}"
        if key == "orthanc":
            problem = check_installed(args.orthanc_bin, args.orthanc_plugin)
            if problem:
                return problem
            spec = orthanc_spec(args.orthanc_bin, args.orthanc_plugin)
            targets.append(Target(spec, workdir, None, args.orthanc_ingest))
        elif key in ("ours", "ours-pg"):
            if args.ours_cmd == OURS_CMD and dicomweb_binary() is None:
                return "`dicomweb` not found (expected .venv/bin/dicomweb)"
            database = None
            extra: list[str] = []
            label = "ours (dicomweb serve, SQLite)"
            if key == "ours-pg":
                database = (
                    f"qidobench_n{archive.studies}_s{archive.seed}_v{DATA_VERSION}"
                    if args.keep
                    else f"qidobench_tmp_{os.getpid()}"
                )
                extra = ["--database-url", f"postgresql+asyncpg://{args.pg}/{database}"]
                label = "ours (dicomweb serve, PostgreSQL)"
            spec = ours_spec(args.ours_cmd, key=key, label=label, extra_args=extra)
            targets.append(Target(spec, workdir, OURS_MAX_RESULTS, "stow", database))
        else:
            return f"unknown server {key!r}"
    return targets


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    t_start = time.perf_counter()
    archive = prepare_archive(Path(args.cache), args.studies, args.seed)
    shape_keys = [s for s in args.shapes.split(",") if s]
    shapes = build_shapes(archive.catalog, args.requests, args.seed, shape_keys)

    loaded: list[bytes] = []

    def instances() -> list[bytes]:
        if not loaded:
            loaded.extend(archive.read_instances())
        return loaded

    info: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_info(),
        "orthanc_version": None,
        "args": vars(args),
        "archive": {
            "studies": archive.studies,
            "instances": archive.instances,
            "patients": len({s.patient_id for s in archive.catalog}),
            "seed": archive.seed,
            "data_version": DATA_VERSION,
            "modalities_in_studies": {
                m: sum(1 for s in archive.catalog if m in s.modalities) for m in MODALITY_NAMES
            },
        },
        "shapes": {s.key: s.description for s in shapes},
    }
    records: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="qido-bench-", dir=args.workdir) as tmp_name:
        made = make_targets(args, Path(tmp_name), archive)
        if isinstance(made, str):
            print(made, file=sys.stderr)
            return 2
        targets = made
        if any(t.key == "orthanc" for t in targets):
            info["orthanc_version"] = orthanc_version(args.orthanc_bin)
        busy = info["machine"].get("loadavg", [0.0])[0]
        if busy > 0.5 * (info["machine"]["cpus"] or 1):
            print(f"WARNING: load average {busy} before the start: figures will be noisy")
        print(
            f"{len(shapes)} query shapes x {len(targets)} servers; concurrency "
            f"{args.concurrency}, up to {args.requests} requests or {args.duration:.0f}s per "
            f"shape; {info['machine']['cpus']} CPUs",
            flush=True,
        )
        for target in targets:
            try:
                records.extend(run_target(target, archive, shapes, instances, args))
            finally:
                if target.database and not args.keep:
                    with contextlib.suppress(OSError, asyncpg.PostgresError):
                        pg_drop(args.pg, target.database)
                if not args.keep:
                    shutil.rmtree(target.workdir, ignore_errors=True)
    comparisons = compare_counts(shapes, records, targets)
    rows = summary_rows(shapes, records, [t.key for t in targets])
    print()
    load_lines: list[tuple[str, ...]] = [("server", "load", "instances", "wall s", "inst/s")]
    for t in targets:
        rec = t.record.get("load", {})
        load_lines.append(
            (
                t.key + ("" if rec.get("ok", False) and "error" not in t.record else " !"),
                "reused" if rec.get("reused") else fmt(rec.get("method")),
                fmt(rec.get("instances")),
                fmt(rec.get("wall_s")),
                fmt(rec.get("inst_per_s")),
            )
        )
    print_table(load_lines)
    print()
    print_summary(rows, comparisons)
    all_ok = (
        all(r["ok"] for r in records)
        and all(t.record.get("load", {}).get("ok") for t in targets)
        and not any("error" in t.record for t in targets)
        and len(records) == len(targets) * len(shapes)
    )
    out = {
        **info,
        "servers": {
            t.key: {"label": t.spec.label, "cap_without_limit": t.cap, **t.record} for t in targets
        },
        "summary": rows,
        "count_comparison": comparisons,
        "runs": records,
        "client_peak_rss_mib": self_peak_rss_mib(),
        "total_s": round(time.perf_counter() - t_start, 1),
        "all_ok": all_ok,
    }
    out_path = Path(args.out)
    out_path.write_text(json.dumps(out, indent=2, default=_json_default) + "\n")
    print(f"\nresults written to {out_path}" + ("" if all_ok else "  (SOME RUNS FAILED)"))
    return 0 if all_ok else 1


def _json_default(value: object) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)  # type: ignore[call-overload]
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


if __name__ == "__main__":
    sys.exit(main())
