"""The conformance statement's checked tables agree with the code."""

from __future__ import annotations

import re
from pathlib import Path

from starlette.routing import Mount, Route

from dicomweb.app import create_app
from dicomweb.config import Config
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
