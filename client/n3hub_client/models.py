"""The JSON shapes the API answers with, as typed dictionaries."""

from __future__ import annotations

from typing import Any, Literal, TypedDict

Status = Literal["pending", "processing", "completed", "failed"]
STATUSES: tuple[Status, ...] = ("pending", "processing", "completed", "failed")
FINAL_STATUSES: frozenset[str] = frozenset({"completed", "failed"})


class Message(TypedDict):
    """A stored message and its processing facts; timestamps are ISO 8601 strings."""

    id: int
    status: Status
    content: str
    attempts: int
    created_at: str
    updated_at: str
    started_at: str | None
    completed_at: str | None
    last_error: str | None
    result: Any


class Stats(TypedDict):
    """Message counts by status; ``total`` is their sum."""

    total: int
    pending: int
    processing: int
    completed: int
    failed: int
