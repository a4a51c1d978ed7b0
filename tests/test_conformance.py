"""The conformance statement agrees with the code.

The statement's generated blocks must be exactly what conformance/generate.py makes from
the code now, and every block must be there. The tables written by hand and marked
"(checked)" are compared with the code here; so are some generated tables, read back
from the document, so that a mistake in the generator cannot hide a difference.
"""

from __future__ import annotations

import difflib
import importlib.util
import re
import sys
from dataclasses import fields
from pathlib import Path
from types import ModuleType

import pytest
from starlette.routing import Mount, Route

from dicomweb import renderparams
from dicomweb.app import create_app
from dicomweb.capabilities import ENDPOINTS
from dicomweb.config import Config
from dicomweb.dimse.server import build_ae
from dicomweb.negotiation import FRAME_MEDIA_TYPES
from dicomweb.pixels.codecs import SYNTAXES, Kind
from dicomweb.pixels.transcode import can_decode
from dicomweb.query import ATTRIBUTES, SEQUENCES
from dicomweb.status import Status

ROOT = Path(__file__).parent.parent
STATEMENT = ROOT / "conformance" / "conformance-statement.md"
GENERATOR = ROOT / "conformance" / "generate.py"


def _load_generator() -> ModuleType:
    # conformance/ is not a package: load the script by its path.
    spec = importlib.util.spec_from_file_location("conformance_generate", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


generate = _load_generator()


def table_after(heading: str) -> list[list[str]]:
    """The rows of the first Markdown table after a heading line containing `heading`."""
    lines = STATEMENT.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("#") and heading in line)
    rows: list[list[str]] = []
    for line in lines[start + 1 :]:
        if line.startswith("|"):
            # Split on pipes that are not escaped (cells may hold "\|").
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
            if not set("".join(cells)) <= set("-: "):
                rows.append(cells)
        elif rows:
            break
    return rows[1:]


# The generated blocks


def test_every_generated_block_is_in_the_statement() -> None:
    text = STATEMENT.read_text()
    for name in generate.BLOCKS:
        assert text.count(f"<!-- begin generated: {name} -->") == 1, name
        assert text.count(f"<!-- end generated: {name} -->") == 1, name
    generate.check_markers(text)


def test_generated_blocks_are_what_the_code_says() -> None:
    text = STATEMENT.read_text()
    rendered = generate.render(text)
    diff = "".join(
        difflib.unified_diff(
            text.splitlines(keepends=True), rendered.splitlines(keepends=True), n=1
        )
    )
    assert rendered == text, (
        "the statement disagrees with the code; run .venv/bin/python conformance/"
        f"generate.py and review the change:\n{diff[:4000]}"
    )


def test_a_missing_or_broken_block_is_an_error(tmp_path: Path) -> None:
    text = STATEMENT.read_text()
    missing = re.sub(
        r"<!-- begin generated: scopes -->.*?<!-- end generated: scopes -->\n",
        "",
        text,
        flags=re.DOTALL,
    )
    with pytest.raises(generate.StatementError, match="scopes"):
        generate.render(missing)
    with pytest.raises(generate.StatementError):
        generate.render(text.replace("<!-- end generated: resources -->", "", 1))
    with pytest.raises(generate.StatementError, match="unknown"):
        generate.render(
            text + "\n<!-- begin generated: nothing -->\n<!-- end generated: nothing -->\n"
        )
    path = tmp_path / "statement.md"
    path.write_text(missing)
    assert generate.main(["--check", str(path)]) == 2


def test_check_reports_a_stale_statement_and_a_rewrite_fixes_it(tmp_path: Path) -> None:
    stale = STATEMENT.read_text().replace("| 0110 |", "| 0999 |", 1)
    path = tmp_path / "statement.md"
    path.write_text(stale)
    assert generate.main(["--check", str(path)]) == 1
    assert generate.main([str(path)]) == 0
    assert path.read_text() == STATEMENT.read_text()


# Tables read back and compared with the code


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


# Statuses the framework sends by itself: a path with another method's route (405), and
# an unexpected error (500).
FRAMEWORK_STATUSES = {405, 500}


def statuses_sent() -> set[int]:
    """Every HTTP status the code can send, as far as its source says."""
    sent = set(FRAMEWORK_STATUSES)
    for path in (ROOT / "dicomweb").rglob("*.py"):
        text = path.read_text()
        sent |= {int(m) for m in re.findall(r"http_status = (\d{3})", text)}
        sent |= {int(m) for m in re.findall(r"status_code=(\d{3})", text)}
        if path.name == "stow.py":
            sent |= {int(m) for m in re.findall(r"\b(200|202|400|409)\b", text)}
    # Success statuses each endpoint declares (its capabilities description).
    sent |= {status for endpoint in ENDPOINTS.values() for status in endpoint.statuses}
    return sent


def test_http_status_codes_are_those_the_code_can_send() -> None:
    documented = {int(row[0]) for row in table_after("HTTP status codes (checked)")}
    assert documented == statuses_sent()


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
    frames = {row[1]: row[5] for row in table_after("Frame media types")}
    assert set(frames) == set(FRAME_MEDIA_TYPES)
    assert all(frames[uid].endswith("only") for uid in as_stored_only)


def test_rendering_parameters_match_the_code() -> None:
    documented = {
        name
        for row in table_after("Rendering parameters (checked)")
        for name in re.findall(r"`(\w+)`", row[0])
    }
    rendered = {p.name for p in ENDPOINTS["retrieve_rendered"].query}
    thumbnail = {p.name for p in ENDPOINTS["retrieve_thumbnail"].query}
    assert documented == rendered
    assert thumbnail <= rendered
    # The parser takes these (accept and annotation may be repeated).
    assert rendered == {*renderparams._ONCE, "accept", "annotation"}


def test_every_setting_is_documented() -> None:
    documented = [row[0] for row in table_after("4.5.2 Parameters")]
    assert documented == [f.name for f in fields(Config)]
    variables = {row[1].strip("`") for row in table_after("4.5.2 Parameters")}
    assert variables == set(Config().to_environ())
