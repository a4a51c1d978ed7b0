"""The conformance statement's checked tables agree with the code."""

from __future__ import annotations

import re
from pathlib import Path

from starlette.routing import Mount, Route

from dicomweb.app import create_app
from dicomweb.config import Config
from dicomweb.dimse.server import build_ae
from dicomweb.negotiation import FRAME_MEDIA_TYPES
from dicomweb.pixels.codecs import SYNTAXES, Kind
from dicomweb.pixels.transcode import can_decode
from dicomweb.query import ATTRIBUTES, SEQUENCES
from dicomweb.status import Status

STATEMENT = Path(__file__).parent.parent / "conformance" / "conformance-statement.md"


def table_after(heading: str) -> list[list[str]]:
    """The rows of the first Markdown table after a heading line containing `heading`."""
    lines = STATEMENT.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("#") and heading in line)
    rows: list[list[str]] = []
    for line in lines[start + 1 :]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not set("".join(cells)) <= set("-: "):
                rows.append(cells)
        elif rows:
            break
    return rows[1:]


def app_routes() -> set[tuple[str, str]]:
    app = create_app(Config())
    found: set[tuple[str, str]] = set()

    def walk(routes: list[object], prefix: str) -> None:
        for route in routes:
            if isinstance(route, Mount):
                walk(list(route.routes), prefix + route.path)
            elif isinstance(route, Route):
                for method in route.methods or ():
                    if method != "HEAD":
                        found.add((method, prefix + route.path))

    walk(list(app.routes), "")
    return found


def test_resources_match_routes() -> None:
    documented = {(row[0], row[1]) for row in table_after("Resources (checked)")}
    assert documented == app_routes()


def test_failure_reasons_match_status_codes() -> None:
    documented = {int(row[0], 16) for row in table_after("Failure Reason values (checked)")}
    assert documented == {int(s) for s in Status if s.is_failure}


def test_http_status_codes_are_those_the_code_can_send() -> None:
    documented = {int(row[0]) for row in table_after("HTTP status codes (checked)")}
    source = (Path(__file__).parent.parent / "dicomweb").rglob("*.py")
    sent: set[int] = set()
    for path in source:
        text = path.read_text()
        sent |= {int(m) for m in re.findall(r"http_status = (\d{3})", text)}
        if path.name == "stow.py":
            sent |= {int(m) for m in re.findall(r"\b(200|202|400|409)\b", text)}
        if path.name == "wado.py":
            sent |= {int(m) for m in re.findall(r"status_code=(\d{3})", text)}
    # 503 belongs to resources this version does not have.
    assert documented == sent - {503}


def test_search_keys_match_the_query_model() -> None:
    documented = {
        (row[0].lower(), row[1], row[4]) for row in table_after("return attributes (checked)")
    }
    expected = {
        (a.level.value, a.keyword, "matching, returned" if a.matching else "returned")
        for a in ATTRIBUTES
    }
    expected |= {
        (s.level.value, f"{s.keyword}.{item.keyword}", "matching, returned")
        for s in SEQUENCES
        for item in s.items
    }
    assert documented == expected
    tags = {row[1]: row[2] for row in table_after("return attributes (checked)")}
    for a in ATTRIBUTES:
        assert tags[a.keyword] == f"({a.tag >> 16:04X},{a.tag & 0xFFFF:04X})"


def test_dimse_sop_classes_match_the_ae() -> None:
    documented = {row[1] for row in table_after("SOP classes (checked)")}
    ae = build_ae("DICOMWEB", [])
    assert documented == {str(cx.abstract_syntax) for cx in ae.supported_contexts}


def test_dimse_storage_transfer_syntaxes_match_the_ae() -> None:
    documented = [row[1] for row in table_after("Transfer syntaxes for Storage (checked)")]
    ae = build_ae("DICOMWEB", [])
    storage = [cx for cx in ae.supported_contexts if cx.scp_role]
    assert storage
    for context in storage:
        assert [str(ts) for ts in context.transfer_syntax] == documented


def test_transfer_syntaxes_match_the_codec_table() -> None:
    rows = table_after("Transfer syntaxes (checked)")
    documented = {row[1]: row for row in rows}
    assert set(documented) == set(SYNTAXES)
    for uid, syntax in SYNTAXES.items():
        name, _, read, written, lossy, decoder, encoder = documented[uid]
        assert name == syntax.name, uid
        assert read == ("yes" if can_decode(uid) else "no"), uid
        writable = syntax.kind is not Kind.BIG_ENDIAN and syntax.available()
        assert written == ("yes" if writable else "no"), uid
        assert lossy == ("yes" if syntax.is_lossy else "no"), uid
        assert decoder and encoder
        # The decoder named first is the plugin pydicom uses, or the one preferred.
        if syntax.decoding_plugin:
            assert decoder.startswith(syntax.decoding_plugin), uid
    # Every syntax a frame can be sent in is either in the codec table or sent as stored.
    as_stored_only = {uid for uid in FRAME_MEDIA_TYPES if uid not in SYNTAXES}
    text = STATEMENT.read_text()
    assert "and sent as stored only" in text
    assert all(FRAME_MEDIA_TYPES[uid] != "application/octet-stream" for uid in as_stored_only)
