"""What a request may do: its Grant, made from a token's claims or a signed link.

The middleware puts the grant in `scope["auth"]` (Starlette's `request.auth`). A grant
limited to some studies, or to the studies of one patient, also narrows searches:
qido.py calls `limit_query` with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dicomweb.auth.policy import Permission
from dicomweb.query import BY_KEYWORD, AnyOf, Query, SingleValue


@dataclass(frozen=True, slots=True)
class Grant:
    """Who is asking, with which permissions, on which studies."""

    subject: str
    # "token" (a JWT), "link" (a signed link), or "none" (the server runs without auth).
    kind: str
    permissions: frozenset[Permission] = field(default_factory=frozenset)
    # Study Instance UIDs the grant is limited to; None: any study.
    studies: frozenset[str] | None = None
    # Patient ID whose studies the grant is limited to; None: any patient.
    patient_id: str | None = None

    @property
    def limited(self) -> bool:
        """Whether the grant covers only some studies."""
        return self.studies is not None or self.patient_id is not None


OPEN = Grant("anonymous", "none", frozenset(Permission))


def scope_names(claims: Mapping[str, Any], claim_paths: tuple[str, ...]) -> set[str]:
    """Every scope named by the claims at `claim_paths` (strings or lists of strings)."""
    names: set[str] = set()
    for path in claim_paths:
        names.update(_strings(claim_value(claims, path), separators=" "))
    return names


def claim_value(claims: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted claim path (`realm_access.roles`), or None."""
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def study_limit(value: Any) -> frozenset[str] | None:
    """The studies a study claim lists (a list, or a space- or comma-separated string)."""
    if value is None:
        return None
    return frozenset(_strings(value, separators=" ,"))


def _strings(value: Any, separators: str) -> list[str]:
    if isinstance(value, str):
        for separator in separators[1:]:
            value = value.replace(separator, separators[0])
        return [v for v in value.split(separators[0]) if v]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str) and v]
    return []


def limit_query(grant: object, query: Query) -> None:
    """Narrow a search to the studies a limited grant covers (no-op otherwise).

    The conditions are ANDed with the request's own, so a search can only get smaller.
    The patient ID is matched as a single value, never as a wildcard pattern.
    """
    if not isinstance(grant, Grant):
        return
    if grant.studies is not None:
        studies = tuple(sorted(grant.studies))
        # An empty list matches nothing (SQL `IN ()` is false).
        match = SingleValue(studies[0]) if len(studies) == 1 else AnyOf(studies)
        query.matches.append((BY_KEYWORD["StudyInstanceUID"], match))
    if grant.patient_id is not None:
        query.matches.append((BY_KEYWORD["PatientID"], SingleValue(grant.patient_id)))
