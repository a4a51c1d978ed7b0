"""Write the seed corpora, fuzz/corpus/<target>/: small valid (and a few invalid) inputs.

    .venv/bin/python fuzz/make_corpus.py

Existing seeds of the same name are overwritten; other files (inputs the fuzzers
added) are left alone.
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402

from dicomweb.parsing import extract  # noqa: E402
from tests.fuzz.dicomseeds import seeds  # noqa: E402

CORPUS = ROOT / "fuzz" / "corpus"
DICOM_TYPE = 'multipart/related; type="application/dicom"; boundary=BOUNDARY'


def _multipart(parts: list[tuple[list[str], bytes]], *, close: bool = True) -> bytes:
    body = b""
    for headers, content in parts:
        body += b"--BOUNDARY\r\n" + b"".join(h.encode() + b"\r\n" for h in headers)
        body += b"\r\n" + content + b"\r\n"
    return body + (b"--BOUNDARY--\r\n" if close else b"")


def _request(body: bytes, content_type: str = DICOM_TYPE, *extra: str) -> bytes:
    head = "\n".join([f"content-type: {content_type}", *extra])
    return head.encode("latin-1") + b"\n\n" + body


def multipart_seeds() -> dict[str, bytes]:
    dicom = seeds()
    part = ["Content-Type: application/dicom"]
    return {
        "one-instance": _request(_multipart([(part, dicom["explicit"])])),
        "two-instances": _request(
            _multipart([(part, dicom["implicit"]), (part, dicom["sequences"])])
        ),
        "no-content-type": _request(_multipart([([], dicom["no-preamble"])])),
        "transfer-syntax": _request(
            _multipart(
                [(["Content-Type: application/dicom; transfer-syntax=1.2.840.10008.1.2.5"], b"x")]
            )
        ),
        "other-part-type": _request(_multipart([(["Content-Type: text/plain"], b"hello")])),
        "part-headers": _request(
            _multipart(
                [(["Content-Type: application/dicom", "Content-Length: 3", "X-A: b"], b"abc")]
            )
        ),
        "empty-part": _request(_multipart([(part, b"")])),
        "unclosed": _request(_multipart([(part, b"abc")], close=False)),
        "preamble-epilogue": _request(b"preamble\r\n" + _multipart([(part, b"a")]) + b"epilogue"),
        "quoted-boundary": _request(
            _multipart([(part, b"a")]).replace(b"BOUNDARY", b"a b:c"),
            'multipart/related; type="application/dicom"; boundary="a b:c"',
        ),
        "no-parts": _request(b"--BOUNDARY--\r\n"),
        "wrong-type": _request(b"x", "application/dicom"),
        "content-length": _request(_multipart([(part, b"a")]), DICOM_TYPE, "content-length: 40"),
    }


def qido_seeds() -> dict[str, bytes]:
    queries = {
        "studies": "studies?",
        "patient-name": "studies?PatientName=Doe*&fuzzymatching=true",
        "names-groups": "studies?PatientName=Doe^J*=山田&ReferringPhysicianName=House",
        "dates": "studies?StudyDate=20200101-20261231&StudyTime=1030-",
        "date-time": "studies?StudyDate=20260102&StudyTime=101500.5",
        "uid-list": "series?StudyInstanceUID=1.2.3,1.2.4%5C1.2.5",
        "modalities": "studies?ModalitiesInStudy=CT,MR&limit=5&offset=1",
        "tags": "series?00080060=CT&0020000D=1.2.3&includefield=0008103E",
        "includefield-all": "instances?includefield=all&SOPClassUID=1.2.840.10008.5.1.4.1.1.2",
        "series-number": "series?SeriesNumber=1,2&InstanceNumber=%2B3",
        "sequence": "series?RequestAttributesSequence.ScheduledProcedureStepID=SPS1",
        "sequence-tags": "series?00400275.00401001=RP*",
        "wildcards": "instances?StudyDescription=C?e*%25_&AccessionNumber=*",
        "unsupported": "studies?Foo=bar&00091001=x&charset=utf-8",
        "bad-limit": "studies?limit=-1",
        "bad-date": "studies?StudyDate=2026-01-02",
        "accept": "series?accept=application/dicom%2Bxml",
        "empty-values": "instances?PatientID=&Modality=&limit=",
    }
    return {name: query.encode() for name, query in queries.items()}


def accept_seeds() -> dict[str, str]:
    return {
        "json": "application/dicom+json",
        "xml": "application/dicom+xml",
        "multipart-xml": 'multipart/related; type="application/dicom+xml"',
        "any": "*/*",
        "q-values": "application/dicom+xml;q=0.9, application/json;q=0.5, */*;q=0",
        "wado-instance": 'multipart/related; type="application/dicom"; transfer-syntax=*',
        "wado-frames": "multipart/related; type=image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.50",
        "octet-stream": "multipart/related; type=application/octet-stream",
        "zip": "application/zip, application/dicom;q=0.5",
        "rendered": "image/jpeg, image/png;q=0.8, image/*;q=0.1",
        "quoted": 'multipart/related; type="application/dicom"; x="a,b;c"',
        "bad-q": "application/dicom+json; q=high, text/html",
        "browser": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    }


def dicom_seeds() -> dict[str, bytes]:
    out = dict(seeds())
    explicit = out["explicit"]
    at = explicit.rfind(b"\xe0\x7f\x10\x00")
    huge = struct.pack("<HH2sHL", 0x0009, 0x1010, b"OB", 0, 0xFFFFFFF0)
    out["huge-length"] = explicit[:at] + huge + explicit[at:]
    out["truncated"] = explicit[: len(explicit) // 2]
    return out


def dicom_json_seeds() -> dict[str, bytes]:
    out = {}
    for name in ("explicit", "sequences", "utf8", "multiframe"):
        out[f"metadata-{name}"] = extract(seeds()[name], 1024).metadata
    out["link"] = orjson.dumps({"study": "1.2.3", "expires": "1h"})
    out["send"] = orjson.dumps({"destination": "PEER", "study": "1.2.3", "series": "1.2.4"})
    out["private"] = orjson.dumps(
        {
            "00091010": {"vr": "LO", "Value": ["ACME 1.0"]},
            "00091001": {"vr": "LO", "Value": ["x"]},
            "00091002": {"vr": "OB", "InlineBinary": "AAEC"},
        }
    )
    out["numbers"] = b'{"00180050":{"vr":"DS","Value":[1.5,1e300,-0.0]},"00280010":{"vr":"US"}}'
    out["not-an-object"] = b"[1, 2]"
    return out


def main() -> None:
    corpora: dict[str, dict[str, bytes]] = {
        "multipart": multipart_seeds(),
        "qido": qido_seeds(),
        "accept": {name: value.encode("latin-1") for name, value in accept_seeds().items()},
        "dicom": dicom_seeds(),
        "dicomjson": dicom_json_seeds(),
    }
    for target, files in corpora.items():
        directory = CORPUS / target
        directory.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (directory / name).write_bytes(data)
        print(f"{target}: {len(files)} seeds")


if __name__ == "__main__":
    main()
