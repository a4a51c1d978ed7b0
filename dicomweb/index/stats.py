"""What the server holds: counts and bytes per modality and per day of receipt."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import Connection, Select, func, select

from dicomweb.index import schema


@dataclass(frozen=True, slots=True)
class Totals:
    """How much the index holds."""

    patients: int
    studies: int
    series: int
    instances: int
    bytes: int


@dataclass(frozen=True, slots=True)
class ModalityUsage:
    """Series of one Modality (empty: not given) and their instances."""

    modality: str
    studies: int
    series: int
    instances: int
    bytes: int


@dataclass(frozen=True, slots=True)
class DayUsage:
    """Instances received on one day (UTC, YYYY-MM-DD)."""

    day: str
    instances: int
    bytes: int


@dataclass(frozen=True, slots=True)
class Stats:
    """Totals, then the same counted per modality and per day of receipt."""

    totals: Totals
    modalities: list[ModalityUsage]
    days: list[DayUsage]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: the totals' fields, `modalities` and `days`."""
        body = asdict(self.totals)
        body["modalities"] = [asdict(m) for m in self.modalities]
        body["days"] = [asdict(d) for d in self.days]
        return body


def count_totals(conn: Connection) -> Totals:
    """Patients, studies, series, instances and bytes in the index (a Reader function)."""
    return Totals(*(int(v) for v in conn.execute(_totals()).one()))


def collect(conn: Connection) -> Stats:
    """Count everything in the index (a Reader function; a scan of the instance table,
    an admin's query)."""
    totals = count_totals(conn)
    modalities = [
        ModalityUsage(row.modality or "", *(int(v) for v in row[1:]))
        for row in conn.execute(_per_modality())
    ]
    days = [
        DayUsage(str(row.day), int(row.instances), int(row.bytes))
        for row in conn.execute(_per_day(conn.dialect.name))
    ]
    return Stats(totals, modalities, days)


def _count(table: Any) -> Any:
    return select(func.count()).select_from(table).scalar_subquery()


def _totals() -> Select[Any]:
    i = schema.instance
    return select(
        _count(schema.patient),
        _count(schema.study),
        _count(schema.series),
        _count(i),
        select(func.coalesce(func.sum(i.c.size), 0)).scalar_subquery(),
    )


def _per_modality() -> Select[Any]:
    i, se = schema.instance, schema.series
    return (
        select(
            se.c.modality,
            func.count(se.c.study_pk.distinct()),
            func.count(se.c.id.distinct()),
            func.count(i.c.id),
            func.coalesce(func.sum(i.c.size), 0),
        )
        .select_from(se.join(i, i.c.series_pk == se.c.id))
        .group_by(se.c.modality)
        .order_by(se.c.modality)
    )


def _per_day(dialect: str) -> Select[Any]:
    i = schema.instance
    created = i.c.created_at
    # SQLite keeps the UTC timestamp as text; PostgreSQL converts in the session's zone.
    day = func.date(created) if dialect == "sqlite" else func.date(func.timezone("UTC", created))
    return (
        select(
            day.label("day"),
            func.count().label("instances"),
            func.coalesce(func.sum(i.c.size), 0).label("bytes"),
        )
        .group_by(day)
        .order_by(day)
    )
