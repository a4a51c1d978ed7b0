"""Study, series and instance keys: the one place where UIDs are validated.

A UID is a dotted string of decimal components of at most 64 characters (PS3.5 9.1).
Only values that pass here are used to build storage paths or URLs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from dicomweb.config import SERVICE_ROOT
from dicomweb.errors import InvalidUID

_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
MAX_UID_LENGTH = 64


def is_valid_uid(value: str) -> bool:
    """Whether `value` is a syntactically valid UID."""
    return len(value) <= MAX_UID_LENGTH and _UID.fullmatch(value) is not None


def validate_uid(value: object, name: str = "UID") -> str:
    """Return `value` if it is a valid UID, else raise InvalidUID naming the attribute."""
    if not isinstance(value, str) or not value:
        raise InvalidUID(f"{name} is missing")
    if not is_valid_uid(value):
        shown = value if len(value) <= 80 else value[:77] + "..."
        raise InvalidUID(f"{name} {shown!r} is not a valid UID")
    return value


@dataclass(frozen=True, slots=True)
class InstanceKey:
    """The three UIDs that place an instance, all validated."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str

    def __post_init__(self) -> None:
        validate_uid(self.study_instance_uid, "StudyInstanceUID")
        validate_uid(self.series_instance_uid, "SeriesInstanceUID")
        validate_uid(self.sop_instance_uid, "SOPInstanceUID")

    @property
    def path(self) -> str:
        """The resource path below the service root."""
        return (
            f"studies/{self.study_instance_uid}/series/{self.series_instance_uid}"
            f"/instances/{self.sop_instance_uid}"
        )


def study_path(study_instance_uid: str) -> str:
    """The study's resource path below the service root."""
    return f"studies/{validate_uid(study_instance_uid, 'StudyInstanceUID')}"


def service_url(base_url: str) -> str:
    """The absolute service root for a request whose base URL is `base_url`."""
    return base_url.rstrip("/") + SERVICE_ROOT


def path_uids(params: Mapping[str, str]) -> tuple[str, str | None, str | None]:
    """(study, series, instance) of a resource path's parameters, validated; series and
    instance are None above their level."""
    study = validate_uid(params.get("study"), "StudyInstanceUID")
    series = params.get("series")
    sop = params.get("instance")
    if series is not None:
        validate_uid(series, "SeriesInstanceUID")
    if sop is not None:
        validate_uid(sop, "SOPInstanceUID")
    return study, series, sop


def missing(study: str, series: str | None, sop: str | None) -> str:
    """The reason of a 404 for a study, series or instance that is not stored."""
    if sop is not None:
        return f"there is no instance {sop} in series {series} of study {study}"
    if series is not None:
        return f"there is no series {series} in study {study}"
    return f"there is no study {study}"


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an If-None-Match header names `etag` (weak comparison, RFC 9110 13.1.2)."""
    if not if_none_match:
        return False
    tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return "*" in tags or etag in tags
