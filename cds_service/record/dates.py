"""FHIR date/dateTime/instant parsing to aware UTC datetimes (partial dates take their first instant)."""
from __future__ import annotations

from datetime import UTC, date, datetime


def parse_fhir_datetime(value: str | None) -> datetime | None:
    if not value or not isinstance(value, str):
        return None
    v = value.strip()
    try:
        if len(v) == 4:
            return datetime(int(v), 1, 1, tzinfo=UTC)
        if len(v) == 7:
            return datetime(int(v[:4]), int(v[5:7]), 1, tzinfo=UTC)
        if len(v) == 10:
            return datetime(int(v[:4]), int(v[5:7]), int(v[8:10]), tzinfo=UTC)
        dt = datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def parse_fhir_date(value: str | None) -> date | None:
    dt = parse_fhir_datetime(value)
    return dt.date() if dt else None


def age_in_years(birth: date, on: date) -> int:
    return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))
