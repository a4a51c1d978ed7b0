"""Render the tables of the conformance statement whose single source of truth is code.

The statement (conformance-statement.md, beside this file) holds blocks between marker
comments:

    <!-- begin generated: resources -->
    ...
    <!-- end generated: resources -->

Each block's content is made here, from the module that decides what the server does
(the app's routes, capabilities.ENDPOINTS, the query model, the DIMSE AE, the codec
table, the settings, the access rules...). Everything outside the markers is prose and
is left alone.

    .venv/bin/python conformance/generate.py           rewrite the statement in place
    .venv/bin/python conformance/generate.py --check   exit 1 if it is not up to date

tests/test_conformance.py fails when rendering the statement would change it, and when
a block is missing, so the document cannot drift from the code unnoticed.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import pydicom
import pynetdicom
from pydicom import Dataset
from pydicom.charset import python_encoding
from pydicom.uid import UID
from starlette.routing import BaseRoute

import dicomweb
from dicomweb import cli, config, viewer_install
from dicomweb.app import create_app
from dicomweb.auth.policy import RULES, Permission, Rule, rule_for
from dicomweb.capabilities import Endpoint, Operation, operations, route_table
from dicomweb.config import Config
from dicomweb.dimse.identifier import LEVELS, UNIQUE_KEYS, to_query
from dicomweb.dimse.server import build_ae
from dicomweb.errors import BadRequest
from dicomweb.index.search import build_select
from dicomweb.negotiation import (
    DEFAULT_TRANSFER_SYNTAXES,
    FRAME_MEDIA_TYPES,
    JPEG_XL,
    JPEG_XL_JPEG_RECOMPRESSION,
    JPEG_XL_LOSSLESS,
    LOSSY_CAPABLE,
    LOSSY_SYNTAXES,
    NOT_ON_THE_WEB,
)
from dicomweb.pixels.codecs import SYNTAXES, Kind, Syntax
from dicomweb.pixels.lut import PRESETS
from dicomweb.pixels.transcode import can_decode
from dicomweb.query import (
    ATTRIBUTES,
    SEQUENCES,
    AnyOf,
    Attribute,
    ItemMatch,
    Match,
    Query,
    Range,
    SequenceKey,
    SingleValue,
    Wildcard,
    parse_match,
)
from dicomweb.status import MEANINGS, Status
from dicomweb.wadl import Param

STATEMENT = Path(__file__).resolve().parent / "conformance-statement.md"

_BLOCK = re.compile(
    r"<!-- begin generated: (?P<name>[a-z0-9-]+) -->\n(?P<body>.*?)"
    r"<!-- end generated: (?P=name) -->",
    re.DOTALL,
)
_MARKER = re.compile(r"<!-- (?:begin|end) generated: (?P<name>[a-z0-9-]+) -->")


class StatementError(ValueError):
    """The statement's markers are missing, unknown, repeated or unbalanced."""


# --- Markdown ------------------------------------------------------------------------------


def cell(text: object) -> str:
    """A table cell: pipes escaped, on one line."""
    return " ".join(str(text).split()).replace("|", "\\|")


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def yes_no(flag: bool) -> str:
    """A flag as the tables write it."""
    return "yes" if flag else "no"


def listing(items: Iterable[str]) -> str:
    """Items joined with commas, duplicates dropped, order kept."""
    return ", ".join(dict.fromkeys(items))


def tag_text(tag: int) -> str:
    """A tag as (gggg,eeee)."""
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def size_text(count: int) -> str:
    """A byte count with its binary-unit reading, e.g. '1048576 (1 MiB)'."""
    for unit, power in (("GiB", 3), ("MiB", 2), ("KiB", 1)):
        if count >= 1024**power and count % 1024**power == 0:
            return f"{count} ({count // 1024**power} {unit})"
    return str(count)


# --- Shared sources ------------------------------------------------------------------------

# Where this statement describes each endpoint function (a route's name) in detail. A
# new endpoint fails rendering until it has a section here and words in the statement.
SECTIONS: Mapping[str, str] = {
    "store_instances": "4.2.2",
    "search_studies": "4.2.3",
    "search_series": "4.2.3",
    "search_instances": "4.2.3",
    "retrieve_instances": "4.2.4",
    "retrieve_metadata": "4.2.4",
    "retrieve_pixel_data": "4.2.4",
    "retrieve_frames": "4.2.4",
    "retrieve_bulkdata": "4.2.4",
    "retrieve_wado_uri": "4.2.5",
    "retrieve_rendered": "4.2.6",
    "retrieve_thumbnail": "4.2.6",
    "serve_viewer": "4.2.7",
    "answer_options": "4.2.8",
    "retrieve_capabilities": "4.2.8",
    "openapi_description": "4.2.8",
    "delete_resource": "4.2.9",
    "get_stats": "4.2.9",
    "healthz": "4.2.10",
    "send_instances": "4.3.8",
    "authorization_server_metadata": "7.2",
    "jwks": "7.2",
    "issue_token": "7.2",
    "create_link": "7.3",
}

# Transfer syntaxes newer than the pydicom release in use, which has no name for them.
_SYNTAX_NAMES: Mapping[str, str] = {
    JPEG_XL_LOSSLESS: "JPEG XL Lossless",
    JPEG_XL_JPEG_RECOMPRESSION: "JPEG XL JPEG Recompression",
    JPEG_XL: "JPEG XL",
}


@cache
def _routes() -> tuple[BaseRoute, ...]:
    return tuple(create_app(Config()).routes)


@cache
def all_operations() -> tuple[Operation, ...]:
    """Every method of every route, described by capabilities.ENDPOINTS, routing order."""
    return tuple(operations(route_table(_routes())))


def section_of(operation: Operation) -> str:
    """The section of this statement that describes an operation."""
    try:
        return SECTIONS[operation.name]
    except KeyError:
        raise StatementError(
            f"endpoint {operation.name!r} has no section in conformance/generate.py SECTIONS"
        ) from None


def syntax_name(uid: str) -> str:
    """A transfer syntax's name, as pydicom knows it."""
    if uid in _SYNTAX_NAMES:
        return _SYNTAX_NAMES[uid]
    name = UID(uid).name
    if name == uid:
        raise StatementError(f"transfer syntax {uid} has no name: add it to _SYNTAX_NAMES")
    return str(name)


def sop_class_name(uid: str) -> str:
    """A SOP Class's name, marked when the class is retired."""
    found = UID(uid)
    return f"{found.name} (retired)" if found.is_retired else str(found.name)


def media_types(types: Sequence[str]) -> str:
    """Media types, with the multipart forms of every frame media type shortened."""
    frame_parts = {f'multipart/related; type="{t}"' for t in FRAME_MEDIA_TYPES.values()}
    if frame_parts <= set(types):
        first = min(types.index(t) for t in frame_parts)
        kept = [t for t in types if t not in frame_parts]
        kept.insert(first, "multipart/related; type=<frame media type> (4.2.4)")
        types = kept
    return listing(types) or "-"


def titles(ops: Iterable[Operation]) -> list[str]:
    """The operations' titles, each once, in order."""
    return list(dict.fromkeys(op.title for op in ops))


def summary(ops: Sequence[Operation], most: int = 4) -> str:
    """What a set of operations is: their titles when few, else their services."""
    named = titles(ops)
    if not named:
        return "(no route of this version)"
    if len(named) <= most:
        # Titles may hold commas themselves.
        return "; ".join(named)
    services = listing(op.endpoint.tag for op in ops)
    return f"{services}: {len(named)} resources"


def governing_rule(operation: Operation) -> Rule | None:
    """The access rule that applies to an operation (the first one matching it)."""
    return rule_for(operation.method, operation.pattern)


# --- Overview ------------------------------------------------------------------------------


def block_product() -> str:
    """The product, its version, and the components whose versions the tables reflect."""
    rows = [
        ("dicomweb", dicomweb.__version__, "this product"),
        ("pydicom", pydicom.__version__, "data sets, character sets, codecs (4.2.4, 6)"),
        ("pynetdicom", pynetdicom.__version__, "DICOM upper layer and DIMSE (4.3)"),
        (viewer_install.PACKAGE, viewer_install.VERSION, "the bundled web viewer (4.2.7)"),
    ]
    return table(("Component", "Version", "Role"), rows)


def _is_dicom(endpoint: Endpoint) -> bool:
    return endpoint.reference.startswith("PS3.18")


def block_web_services() -> str:
    """The DICOMweb services, grouped as PS3.18 defines them."""
    groups: dict[tuple[str, str], list[Operation]] = {}
    for op in all_operations():
        if _is_dicom(op.endpoint):
            groups.setdefault((op.endpoint.tag, op.endpoint.reference), []).append(op)
    rows = [
        (tag, reference, listing(titles(ops)), "No", "Yes", listing(map(section_of, ops)))
        for (tag, reference), ops in sorted(groups.items(), key=lambda item: item[0][1])
    ]
    headers = ("Service", "Reference", "Transactions", "User agent", "Origin server", "Section")
    return table(headers, rows)


def block_dimse_services() -> str:
    """The DIMSE services: SOP classes grouped, and the roles the AE takes."""
    groups: dict[str, list[Any]] = {}
    for context in _ae().supported_contexts:
        uid = str(context.abstract_syntax)
        key = "Storage" if context.scp_role else sop_class_name(uid)
        groups.setdefault(key, []).append(context)
    rows = []
    for key, contexts in groups.items():
        name = f"{key}: {len(contexts)} SOP classes (4.3.1)" if key == "Storage" else key
        scu = any(bool(c.scu_role) for c in contexts)
        rows.append((name, "Yes" if scu else "No", "Yes"))
    return table(("SOP Classes", "User of service (SCU)", "Provider of service (SCP)"), rows)


# --- DICOMweb origin server ----------------------------------------------------------------


def block_resources() -> str:
    """Every route and method, with its endpoint's description."""
    rows = [
        (
            op.method,
            op.pattern,
            op.endpoint.tag,
            op.title,
            op.endpoint.reference or "-",
            media_types(op.endpoint.accepts),
            media_types(op.produces),
            section_of(op),
        )
        for op in all_operations()
    ]
    headers = (
        "Method",
        "Resource",
        "Service",
        "Transaction",
        "Reference",
        "Request media types",
        "Response media types",
        "Section",
    )
    return table(headers, rows)


def _matching_key_names() -> set[str]:
    names = {a.keyword for a in ATTRIBUTES}
    names |= {f"{s.keyword}.{item.keyword}" for s in SEQUENCES for item in s.items}
    return names


def _param_values(param: Param) -> str:
    if param.options:
        return listing(param.options)
    return {"xs:int": "integer", "xs:boolean": "true, false"}.get(param.type, "text")


def block_parameters() -> str:
    """Query parameters and request header fields of every endpoint, by endpoint."""
    keys = _matching_key_names()
    by_endpoint: dict[str, list[Operation]] = {}
    for op in all_operations():
        by_endpoint.setdefault(op.name, []).append(op)
    # Endpoints with the same parameters (the three searches) share rows.
    groups: dict[tuple[Param, ...], list[Operation]] = {}
    for ops in by_endpoint.values():
        endpoint = ops[0].endpoint
        params = tuple(p for p in (*endpoint.query, *endpoint.headers) if p.name not in keys)
        if endpoint.query or endpoint.headers:
            groups.setdefault(params, []).extend(ops)
    rows: list[tuple[str, ...]] = []
    for params, ops in groups.items():
        named = listing(titles(ops))
        if any(p.name in keys for p in ops[0].endpoint.query):
            rows.append((named, "{attribute}", "query", "a matching key (4.2.3)", "no", "-", "-"))
            named = ""
        for param in params:
            rows.append(
                (
                    named,
                    param.name,
                    param.style,
                    _param_values(param),
                    yes_no(param.required),
                    yes_no(param.repeating),
                    param.doc or "-",
                )
            )
            named = ""
    headers = ("Transactions", "Parameter", "In", "Values", "Required", "Repeatable", "Note")
    return table(headers, rows)


def block_failure_reasons() -> str:
    """Failure Reason (STOW-RS) and C-STORE failure status codes."""
    rows = [(f"{int(s):04X}", MEANINGS[s]) for s in Status if s.is_failure]
    return table(("Code", "Meaning"), rows)


# Query values that probe what a key accepts: each kind of matching, for every VR
# (the parser takes the first value that is valid for the attribute's VR).
_PROBES: Mapping[str, tuple[str, ...]] = {
    "single value": ("1.2.3", "20240102", "1030", "7", "Abc"),
    "list": ("1.2.3,1.2.4", "7,8", "Abc,Def"),
    "wildcard": ("Ab*", "1*"),
    "range": ("20240101-20240131", "0800-1000"),
}
_KIND_TYPES: Mapping[str, tuple[type, ...]] = {
    "single value": (SingleValue, Range),  # a time names a period: a range of one value
    "list": (AnyOf,),
    "wildcard": (Wildcard,),
    "range": (Range,),
}


def _parsed(attribute: Attribute, value: str) -> Match | None:
    try:
        return parse_match(attribute, value)
    except BadRequest:
        return None


def _accepts(attribute: Attribute, kind: str) -> bool:
    wanted = _KIND_TYPES[kind]
    return any(isinstance(_parsed(attribute, v), wanted) for v in _PROBES[kind])


def _sql(key: Attribute | SequenceKey, match: Match, *, fuzzy: bool) -> tuple[str, str]:
    """The SQL and parameters the index runs for one condition."""
    query = Query(level=key.level, matches=[(key, match)], fuzzy=fuzzy)
    compiled = build_select(query).compile()
    return str(compiled), repr(sorted(compiled.params.items()))


def matching_kinds(attribute: Attribute, sequence: SequenceKey | None = None) -> list[str]:
    """The kinds of matching (PS3.4 C.2.2.2) a key supports, found by asking the parser
    and the index; 'case-insensitive' and 'fuzzy' when the index's SQL shows it.

    `sequence` is the sequence whose items `attribute` is matched in, if any.
    """
    kinds = [kind for kind in _PROBES if _accepts(attribute, kind)]
    kinds.append("universal")

    def sql(match: Match, *, fuzzy: bool) -> tuple[str, str]:
        if sequence is None:
            return _sql(attribute, match, fuzzy=fuzzy)
        return _sql(sequence, ItemMatch(((attribute, match),)), fuzzy=fuzzy)

    upper, lower = _parsed(attribute, "Abc"), _parsed(attribute, "aBC")
    if isinstance(upper, SingleValue) and isinstance(lower, SingleValue):
        if sql(upper, fuzzy=False) == sql(lower, fuzzy=False):
            kinds.append("case-insensitive")
        if sql(upper, fuzzy=True) != sql(upper, fuzzy=False):
            kinds.append("fuzzy")
    return kinds


def block_search_keys() -> str:
    """QIDO-RS matching keys and return attributes (query.ATTRIBUTES and SEQUENCES)."""
    rows = [
        (
            a.level.value.capitalize(),
            a.keyword,
            tag_text(a.tag),
            a.vr,
            "matching, returned" if a.matching else "returned",
            ", ".join(matching_kinds(a)) if a.matching else "-",
        )
        for a in ATTRIBUTES
    ]
    rows += [
        (
            s.level.value.capitalize(),
            f"{s.keyword}.{item.keyword}",
            f"{tag_text(s.tag)} {tag_text(item.tag)}",
            item.vr,
            "matching, returned",
            ", ".join(["sequence", *matching_kinds(item, s)]),
        )
        for s in SEQUENCES
        for item in s.items
    ]
    return table(("Level", "Attribute", "Tag", "VR", "Use", "Matching"), rows)


def _frame_delivery(uid: str) -> str:
    """How frames stored in a syntax go out on the web: as stored (or, for syntaxes not
    used on the web, as Explicit VR Little Endian), and whether they can be transcoded."""
    sent = "as Explicit VR Little Endian" if uid in NOT_ON_THE_WEB else "as stored"
    if uid in SYNTAXES and can_decode(uid):
        return f"{sent}, or transcoded"
    return f"{sent} only"


def _lossiness(uid: str) -> str:
    if uid in LOSSY_SYNTAXES:
        return "always"
    if uid in LOSSY_CAPABLE:
        return "when Lossy Image Compression is 01"
    return "no"


def block_frame_media_types() -> str:
    """Frame media types of the transfer syntaxes (negotiation.FRAME_MEDIA_TYPES)."""
    rows = [
        (
            syntax_name(uid),
            uid,
            media_type,
            "yes" if DEFAULT_TRANSFER_SYNTAXES.get(media_type) == uid else "-",
            _lossiness(uid),
            _frame_delivery(uid),
        )
        for uid, media_type in FRAME_MEDIA_TYPES.items()
    ]
    headers = ("Transfer syntax", "UID", "Frame media type", "Default", "Lossy", "On the web")
    return table(headers, rows)


# The libraries behind each codec of pixels.codecs.SYNTAXES: (decoders, encoder). The
# decoder named first is the one pydicom uses, or the preferred plugin.
CODEC_LIBRARIES: Mapping[str, tuple[str, str]] = {
    "1.2.840.10008.1.2": ("pydicom", "pydicom (storage only)"),
    "1.2.840.10008.1.2.1": ("pydicom", "pydicom"),
    "1.2.840.10008.1.2.1.99": ("pydicom (zlib)", "pydicom (zlib)"),
    "1.2.840.10008.1.2.2": ("pydicom", "-"),
    "1.2.840.10008.1.2.5": ("pylibjpeg-rle", "pylibjpeg-rle"),
    "1.2.840.10008.1.2.4.50": (
        "pylibjpeg-libjpeg, Pillow",
        "imagecodecs (libjpeg-turbo), quality 90",
    ),
    "1.2.840.10008.1.2.4.51": (
        "pylibjpeg-libjpeg, Pillow",
        "imagecodecs (libjpeg-turbo), quality 90",
    ),
    "1.2.840.10008.1.2.4.57": ("pylibjpeg-libjpeg", "imagecodecs (libjpeg-turbo), predictor 1"),
    "1.2.840.10008.1.2.4.70": ("pylibjpeg-libjpeg", "imagecodecs (libjpeg-turbo)"),
    "1.2.840.10008.1.2.4.80": ("pyjpegls (CharLS)", "pyjpegls (CharLS)"),
    "1.2.840.10008.1.2.4.81": ("pyjpegls (CharLS)", "pyjpegls (CharLS), NEAR 2"),
    "1.2.840.10008.1.2.4.90": ("pylibjpeg-openjpeg", "pylibjpeg-openjpeg"),
    "1.2.840.10008.1.2.4.91": ("pylibjpeg-openjpeg", "pylibjpeg-openjpeg, ratio 10:1"),
    "1.2.840.10008.1.2.4.201": ("pylibjpeg-openjpeg", "imagecodecs (OpenJPH)"),
    "1.2.840.10008.1.2.4.202": (
        "pylibjpeg-openjpeg",
        "imagecodecs (OpenJPH), TLM markers, tile-parts per resolution",
    ),
    "1.2.840.10008.1.2.4.203": (
        "pylibjpeg-openjpeg",
        "imagecodecs (OpenJPH), quantisation step of half a grey level on 8 bits",
    ),
}


def _writable(syntax: Syntax) -> bool:
    """Whether data can be sent in a syntax: big endian is read, never produced."""
    return syntax.kind is not Kind.BIG_ENDIAN and syntax.available()


def block_transcoding_syntaxes() -> str:
    """The transfer syntaxes pixel data is transcoded between (pixels.codecs.SYNTAXES)."""
    missing = set(SYNTAXES) - set(CODEC_LIBRARIES)
    if missing:
        raise StatementError(f"CODEC_LIBRARIES has no entry for {', '.join(sorted(missing))}")
    rows = [
        (
            syntax.name,
            uid,
            yes_no(can_decode(uid)),
            yes_no(_writable(syntax)),
            yes_no(syntax.is_lossy),
            *CODEC_LIBRARIES[uid],
        )
        for uid, syntax in SYNTAXES.items()
    ]
    headers = ("Transfer syntax", "UID", "Read", "Written", "Lossy", "Decoder", "Encoder")
    return table(headers, rows)


def block_window_presets() -> str:
    """The window presets of the rendering parameters (pixels.lut.PRESETS)."""
    rows = [(name, f"{w.center:g}", f"{w.width:g}", w.function) for name, w in PRESETS.items()]
    return table(("Preset", "Center", "Width", "VOI LUT Function"), rows)


# --- DIMSE ---------------------------------------------------------------------------------


@cache
def _ae() -> Any:
    """The AE the DIMSE listener runs, with the default AE title and no allow-list."""
    return build_ae(Config().aet, [])


def block_association_parameters() -> str:
    """What the AE states in association negotiation, and its limits."""
    ae = _ae()
    rows = [
        ("AE title (default)", Config().aet),
        ("Implementation Class UID", ae.implementation_class_uid),
        ("Implementation Version Name", ae.implementation_version_name),
        ("Maximum PDU length received", f"{ae.maximum_pdu_size} bytes"),
        (
            "Associations accepted at once",
            f"{ae.maximum_associations} per listener process (`dimse_processes`)",
        ),
        ("Called AE title checked", yes_no(bool(ae.require_called_aet))),
        ("ACSE timeout", f"{ae.acse_timeout:g} s"),
        ("DIMSE timeout", f"{ae.dimse_timeout:g} s"),
        ("Network timeout (idle association)", f"{ae.network_timeout:g} s"),
    ]
    return table(("Parameter", "Value"), rows)


def _role(context: Any) -> str:
    if context.scu_role and context.scp_role:
        return "SCP; SCU by SCP/SCU role selection (C-GET)"
    return "SCP"


def block_dimse_sop_classes() -> str:
    """Every abstract syntax the AE accepts (dimse.server.build_ae)."""
    rows = [
        (sop_class_name(str(c.abstract_syntax)), str(c.abstract_syntax), _role(c))
        for c in _ae().supported_contexts
    ]
    return table(("SOP Class", "UID", "Role"), rows)


def _storage_syntaxes() -> list[str]:
    """The transfer syntaxes of the storage contexts, the same for every one."""
    storage = [c for c in _ae().supported_contexts if c.scp_role]
    lists = {tuple(str(ts) for ts in c.transfer_syntax) for c in storage}
    if len(lists) != 1:
        raise StatementError("storage contexts accept different transfer syntaxes")
    return list(lists.pop())


def block_presentation_contexts() -> str:
    """Accepted presentation contexts, the storage classes in one row."""
    rows = [
        (
            sop_class_name(str(c.abstract_syntax)),
            listing(syntax_name(str(ts)) for ts in c.transfer_syntax),
            _role(c),
            "none",
        )
        for c in _ae().supported_contexts
        if not c.scp_role
    ]
    storage = [c for c in _ae().supported_contexts if c.scp_role]
    rows.append(
        (
            f"Each of the {len(storage)} Storage SOP Classes of 4.3.1",
            "the transfer syntaxes of the table below",
            _role(storage[0]),
            "none",
        )
    )
    headers = ("Abstract syntax", "Transfer syntaxes", "Role", "Extended negotiation")
    return table(headers, rows)


def block_storage_transfer_syntaxes() -> str:
    """The transfer syntaxes C-STORE accepts, in the order the AE prefers them."""
    return table(("Transfer Syntax", "UID"), [(syntax_name(u), u) for u in _storage_syntaxes()])


# Values a C-FIND identifier key is given to see whether the key is matched.
_IDENTIFIER_PROBES: Mapping[str, str] = {"UI": "1.2.3", "DA": "20240102", "TM": "1030", "IS": "7"}


def _identifier(level: str, tag: int, vr: str, value: Any) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    ds.add_new(tag, vr, value)
    return ds


def _probe_value(attribute: Attribute) -> str:
    return _IDENTIFIER_PROBES.get(attribute.vr, "Abc")


def matched_at(level: str, key: Attribute | SequenceKey) -> bool:
    """Whether a C-FIND at `level` (Patient Root) matches on `key` (dimse.identifier)."""
    if isinstance(key, SequenceKey):
        item = Dataset()
        first = key.items[0]
        item.add_new(first.tag, first.vr, _probe_value(first))
        identifier = _identifier(level, key.tag, "SQ", [item])
    else:
        identifier = _identifier(level, key.tag, key.vr, _probe_value(key))
    query, _ = to_query(identifier, patient_root=True)
    return bool(query.matches)


def _cfind_cell(level: str, key: Attribute | SequenceKey) -> str:
    if UNIQUE_KEYS[LEVELS[level]] == key.tag:
        return "U"
    return "M" if matched_at(level, key) else "-"


def block_cfind_keys() -> str:
    """C-FIND matching keys per Query/Retrieve Level, as the identifier parser takes them."""
    keys: list[Attribute | SequenceKey] = [a for a in ATTRIBUTES if a.matching]
    keys += SEQUENCES
    rows = [
        (
            key.keyword,
            tag_text(key.tag),
            key.vr if isinstance(key, Attribute) else "SQ",
            *(_cfind_cell(level, key) for level in LEVELS),
        )
        for key in keys
    ]
    return table(("Attribute", "Tag", "VR", *LEVELS), rows)


# --- Configuration -------------------------------------------------------------------------

# Words for settings whose comment in config.py is not theirs alone (the comment above
# them describes the settings before them, and they have no flag), or is not for users.
_SETTING_WORDS: Mapping[str, str] = {
    "auth": "Authentication of HTTP requests: none or oauth2 (7.1).",
    "scope_read": "The scope that grants the read permission (7.1).",
    "scope_write": "The scope that grants the write permission (7.1).",
    "scope_delete": "The scope that grants the delete permission (7.1).",
    "scope_admin": "The scope that grants the admin permission (7.1).",
    "oauth_clock_skew_seconds": "Clock skew allowed when tokens' exp and nbf are checked.",
    "link_max_seconds": "The longest lifetime of a signed link (7.3).",
}
_ENVIRONMENT_ONLY = re.compile(r"\s*\([^()]*DICOMWEB_[^()]*\)")


def field_comments() -> dict[str, tuple[str, str]]:
    """Each Config field's comment in config.py, and the field it was written above.

    A comment describes the field under it and the fields that follow without one.
    """
    source = inspect.getsource(config)
    fields_at = {
        node.lineno: node.target.id
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
    }
    names = {f.name for f in dataclasses.fields(Config)}
    found: dict[str, tuple[str, str]] = {}
    block: list[str] = []
    current = ("", "")
    for number, line in enumerate(source.splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith("#"):
            block.append(stripped.lstrip("#").strip())
            continue
        name = fields_at.get(number)
        if name in names:
            if block:
                current = (" ".join(block), name)
            found[name] = current
        block = []
    return found


def cli_flags() -> dict[str, list[tuple[str, str, str]]]:
    """Each setting's command-line flags: (flag, command, help), from cli.build_parser."""
    found: dict[str, list[tuple[str, str, str]]] = {}

    def walk(parser: argparse.ArgumentParser, command: str) -> None:
        # argparse offers no public way to list a parser's arguments.
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, command or name)
            elif action.option_strings:
                flag = action.option_strings[-1]
                found.setdefault(action.dest, []).append((flag, command, action.help or ""))

    walk(cli.build_parser(), "")
    return found


def sentence(text: str) -> str:
    """`text` as a sentence: a capital first letter and a full stop."""
    text = text.strip()
    if not text:
        return text
    return text[0].upper() + text[1:] + ("" if text.endswith(".") else ".")


def setting_meaning(name: str, comments: Mapping[str, tuple[str, str]], helps: list[str]) -> str:
    """The words for a setting: those above, else the comment written above it, else its
    flag's help, else a pointer to the setting whose comment it shares."""
    comment, owner = comments.get(name, ("", ""))
    if name in _SETTING_WORDS:
        return _SETTING_WORDS[name]
    if comment and owner == name:
        return comment if comment.endswith(".") else comment + "."
    if helps:
        return sentence(_ENVIRONMENT_ONLY.sub("", helps[0]))
    if comment:
        return f"See `{owner}`."
    raise StatementError(f"setting {name!r} has no comment, flag or entry in _SETTING_WORDS")


def default_text(name: str, value: object) -> str:
    if value == "":
        return "(empty)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) and name.endswith("_bytes"):
        return size_text(value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def block_configuration() -> str:
    """Every setting (config.Config): variable, flags, default and meaning."""
    defaults = Config()
    names = [f.name for f in dataclasses.fields(Config)]
    variables = dict(zip(names, defaults.to_environ(), strict=True))
    comments = field_comments()
    flags = cli_flags()
    stale = set(_SETTING_WORDS) - set(names)
    if stale:
        raise StatementError(f"_SETTING_WORDS names unknown settings: {sorted(stale)}")
    rows = []
    for name in names:
        given = flags.get(name, [])
        flag_text = listing(
            f"`{flag}` ({listing(c for f, c, _ in given if f == flag)})" for flag, _, _ in given
        )
        meaning = setting_meaning(name, comments, [h for _, _, h in given if h])
        value = getattr(defaults, name)
        rows.append(
            (name, f"`{variables[name]}`", flag_text or "-", default_text(name, value), meaning)
        )
    headers = ("Setting", "Environment variable", "Flag (commands)", "Default", "Meaning")
    return table(headers, rows)


# --- Character sets ------------------------------------------------------------------------

# Defined Terms of Specific Character Set (PS3.3 C.12.1.1.2); pydicom also accepts a
# few other spellings, which are not listed.
_DEFINED_TERM = re.compile(r"ISO_IR \d+|ISO 2022 IR \d+|GB18030|GBK")


def block_character_sets() -> str:
    """The Specific Character Set values decoded (pydicom.charset)."""
    rows = [("(absent or empty): ISO_IR 6", python_encoding[""], "no")]
    rows += [
        (term, codec, yes_no(term.startswith("ISO 2022")))
        for term, codec in python_encoding.items()
        if _DEFINED_TERM.fullmatch(term)
    ]
    return table(("Specific Character Set", "Decoded as (Python codec)", "Code extensions"), rows)


# --- Security ------------------------------------------------------------------------------


def _governed(rule: Rule) -> list[Operation]:
    return [op for op in all_operations() if governing_rule(op) is rule]


def block_scopes() -> str:
    """Permissions, their default scope names (config.Config) and what they grant."""
    defaults = Config()
    rows = []
    for permission in Permission:
        ops = [
            op
            for op in all_operations()
            if (rule := governing_rule(op)) is not None and rule.permission is permission
        ]
        if permission is Permission.PUBLIC:
            scope, setting = "(none: no credential needed)", "-"
        else:
            setting = f"scope_{permission.value}"
            scope = f"`{getattr(defaults, setting)}`"
        rows.append((permission.value, scope, setting, summary(ops)))
    return table(("Permission", "Scope", "Setting", "Grants"), rows)


def block_permissions() -> str:
    """The access rules (auth.policy.RULES), first match wins."""
    rows = [
        (
            " ".join(sorted(rule.methods)).replace("*", "any"),
            f"`{rule.pattern}`",
            rule.permission.value,
            rule.limit.value,
            summary(_governed(rule), most=3),
        )
        for rule in RULES
    ]
    return table(("Methods", "Route", "Permission", "Limited", "Routes it covers"), rows)


# --- Rendering -----------------------------------------------------------------------------

BLOCKS: Mapping[str, Callable[[], str]] = {
    "product": block_product,
    "web-services": block_web_services,
    "dimse-services": block_dimse_services,
    "resources": block_resources,
    "parameters": block_parameters,
    "failure-reasons": block_failure_reasons,
    "search-keys": block_search_keys,
    "frame-media-types": block_frame_media_types,
    "transcoding-syntaxes": block_transcoding_syntaxes,
    "window-presets": block_window_presets,
    "dimse-sop-classes": block_dimse_sop_classes,
    "association-parameters": block_association_parameters,
    "presentation-contexts": block_presentation_contexts,
    "storage-transfer-syntaxes": block_storage_transfer_syntaxes,
    "cfind-keys": block_cfind_keys,
    "configuration": block_configuration,
    "character-sets": block_character_sets,
    "scopes": block_scopes,
    "permissions": block_permissions,
}


def blocks_in(text: str) -> Iterator[re.Match[str]]:
    """The generated blocks of a statement, in order."""
    return _BLOCK.finditer(text)


def check_markers(text: str) -> None:
    """Every block of BLOCKS once, each with its begin and end marker, and no other."""
    complete = [m["name"] for m in blocks_in(text)]
    markers = [m["name"] for m in _MARKER.finditer(text)]
    problems = []
    for name in BLOCKS:
        if complete.count(name) != 1:
            problems.append(f"block {name!r} appears {complete.count(name)} times")
    unknown = sorted(set(markers) - set(BLOCKS))
    if unknown:
        problems.append(f"unknown blocks: {', '.join(unknown)}")
    if len(markers) != 2 * len(complete):
        problems.append("a begin marker without its end marker, or the other way round")
    if problems:
        raise StatementError("; ".join(problems))


def render(text: str) -> str:
    """The statement with every generated block made afresh from the code."""
    check_markers(text)

    def fill(match: re.Match[str]) -> str:
        name = match["name"]
        body = BLOCKS[name]()
        return f"<!-- begin generated: {name} -->\n{body}<!-- end generated: {name} -->"

    return _BLOCK.sub(fill, text)


def main(argv: Sequence[str] | None = None) -> int:
    """Rewrite the statement, or with --check say whether it is up to date."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("path", nargs="?", type=Path, default=STATEMENT)
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if stale")
    args = parser.parse_args(argv)
    text = args.path.read_text(encoding="utf-8")
    try:
        rendered = render(text)
    except StatementError as exc:
        print(f"{args.path}: {exc}", file=sys.stderr)
        return 2
    if rendered == text:
        return 0
    if args.check:
        print(f"{args.path} is out of date: run conformance/generate.py", file=sys.stderr)
        return 1
    args.path.write_text(rendered, encoding="utf-8")
    print(f"{args.path}: generated blocks rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
