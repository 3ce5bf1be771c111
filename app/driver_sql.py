"""Plain SQL on the DB-API connection: what the hand-written statements share.

:mod:`app.pending_rows` (the ingest), :mod:`app.attempts` (the attempt history)
and :mod:`app.mysql_outcomes` bypass SQLAlchemy's execution machinery on hot
paths. Their SQL is built once per dialect, in its driver's parameter style,
and their values are converted by the same bind processors SQLAlchemy uses, so
the rows are stored exactly as SQLAlchemy stores them elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeEngine

from app.models import UTCDateTime

Built = TypeVar("Built")


def mark(dialect: Dialect) -> str:
    """The driver's placeholder for one parameter."""
    return {"qmark": "?", "format": "%s", "pyformat": "%s"}[dialect.paramstyle]


def marks(dialect: Dialect, count: int) -> str:
    """``count`` placeholders, comma-separated (the values of an IN list)."""
    return ", ".join([mark(dialect)] * count)


def binder(column_type: TypeEngine[Any], dialect: Dialect) -> Callable[[Any], Any]:
    """A value of ``column_type`` as the driver is given it (JSON serialised, and so on)."""
    return column_type.dialect_impl(dialect).bind_processor(dialect) or _unchanged


def timestamp(dialect: Dialect) -> Callable[[datetime], Any]:
    """A timestamp as the driver is given it (on SQLite, SQLAlchemy's own text format)."""
    return binder(UTCDateTime(), dialect)


def per_dialect(build: Callable[[Dialect], Built]) -> Callable[[Dialect], Built]:
    """``build``, run once for each dialect and its result kept."""
    built: dict[str, Built] = {}

    def for_dialect(dialect: Dialect) -> Built:
        found = built.get(dialect.name)
        if found is None:  # two threads may both build it; either result is the same
            found = built.setdefault(dialect.name, build(dialect))
        return found

    return for_dialect


def _unchanged(value: Any) -> Any:
    return value
