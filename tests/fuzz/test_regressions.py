"""Replay every input kept from fuzzing: the inputs of bugs found and fixed
(tests/fuzz/regressions/<target>/) and the seed corpora (fuzz/corpus/<target>/).

Each file goes through the same check as in the fuzzers (tests/fuzz/targets.py); STOW-RS
bodies, QIDO-RS queries and DICOM files also go through the app, end to end.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote_from_bytes

import httpx
import pytest

from tests.fuzz.served import Served, check_response
from tests.fuzz.targets import BYTE_CHECKS, multipart_from_bytes

_ROOT = Path(__file__).resolve().parents[2]
_DIRECTORIES = {
    "regressions": _ROOT / "tests" / "fuzz" / "regressions",
    "corpus": _ROOT / "fuzz" / "corpus",
}


# Characters a query string may hold as they are (RFC 3986 allows fewer; servers and
# clients accept these).
_SAFE = "".join(chr(c) for c in range(0x21, 0x7F))


def _inputs(targets: list[str] | None = None) -> list[pytest.ParameterSet]:
    cases = []
    for kind, directory in _DIRECTORIES.items():
        for target in targets or sorted(BYTE_CHECKS):
            for path in sorted((directory / target).glob("*")):
                if path.is_file() and not path.name.startswith("."):
                    cases.append(pytest.param(target, path, id=f"{kind}/{target}/{path.name}"))
    return cases


def test_every_target_has_inputs() -> None:
    for target in BYTE_CHECKS:
        assert list((_DIRECTORIES["corpus"] / target).glob("*")), f"no seeds for {target}"


@pytest.mark.parametrize(("target", "path"), _inputs())
def test_replay(target: str, path: Path) -> None:
    BYTE_CHECKS[target](path.read_bytes())


@pytest.mark.parametrize(("target", "path"), _inputs(["multipart", "qido", "dicom"]))
def test_replay_end_to_end(served: Served, target: str, path: Path) -> None:
    data = path.read_bytes()
    if target == "multipart":
        headers, body = multipart_from_bytes(data)
        sent = [(name, value.encode("latin-1")) for name, value in headers if name]
        response = served.request("POST", "/dicomweb/studies", content=body, headers=sent)
    elif target == "qido":
        resource, _, query = data.partition(b"?")
        path_text = "/dicomweb/" + resource.decode("latin-1").strip("/")
        # As a client sends it: bytes outside printable ASCII percent-encoded.
        response = served.request(
            "GET", httpx.URL(path_text, query=quote_from_bytes(query, _SAFE).encode())
        )
    else:
        body = b"--b\r\nContent-Type: application/dicom\r\n\r\n" + data + b"\r\n--b--\r\n"
        headers = {"content-type": "multipart/related; boundary=b"}
        response = served.request("POST", "/dicomweb/studies", content=body, headers=headers)
    check_response(response)
