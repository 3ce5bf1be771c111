"""Parsing and validation of request bodies and query strings."""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Request

from app.api.errors import APIError, validation_error
from app.lifecycle import FailedFilter, utcnow
from app.models import MessageStatus

FAILED = MessageStatus.FAILED

JSON_MIMETYPE = "application/json"
# Ids and cursors beyond a signed 64-bit integer cannot exist in either database.
MAX_ID = 2**63 - 1


def json_object(request: Request) -> dict[str, Any]:
    """The request body as a JSON object, or a 4xx APIError saying what is wrong."""
    if request.mimetype != JSON_MIMETYPE:
        raise APIError(
            415,
            "unsupported_media_type",
            "Send the body as JSON with Content-Type: application/json.",
        )
    return parse_json_object(request.get_data(cache=False))


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """A request body that must be one JSON object, or a 4xx APIError saying what is wrong."""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise APIError(400, "invalid_json", "The body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise validation_error("The body must be a JSON object.", {"got": type(body).__name__})
    return body


def message_content(body: dict[str, Any], field: str = "content") -> str:
    """The ``content`` field: a non-empty string of valid, storable Unicode."""
    if "content" not in body:
        raise validation_error("'content' is required.", {"field": field})
    content = body["content"]
    if not isinstance(content, str):
        raise validation_error("'content' must be a string.", {"field": field})
    if not content:
        raise validation_error("'content' must not be empty.", {"field": field})
    if "\x00" in content:
        raise validation_error("'content' must not contain NUL characters.", {"field": field})
    try:
        content.encode("utf-8")
    except UnicodeEncodeError:
        raise validation_error(
            "'content' contains an unpaired surrogate, which is not valid Unicode.",
            {"field": field},
        ) from None
    return content


# Scheduled delivery: at most this far ahead (or behind), so a typo in a year cannot park a
# message forever.
MAX_SCHEDULE_SECONDS = 366 * 24 * 3600
SCHEDULE_FIELDS = ("deliver_at", "delay_seconds")
# RFC 3339's date-time: a full date, a time with seconds, and a zone (Z or an offset).
RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})", re.ASCII
)


def rfc3339(raw: Any, field: str) -> datetime:
    """An RFC 3339 date-time with its zone, e.g. ``2026-12-01T09:00:00Z``, in UTC."""
    if not isinstance(raw, str) or not RFC3339.fullmatch(raw):
        raise validation_error(
            f"'{field}' must be an RFC 3339 date-time with a zone, e.g. 2026-12-01T09:00:00Z.",
            {"field": field},
        )
    # fromisoformat takes at most microseconds; finer digits are cut, not rounded.
    text = re.sub(r"(\.\d{6})\d+", r"\1", raw.replace("z", "Z"))
    try:
        return datetime.fromisoformat(text).astimezone(UTC)
    except (ValueError, OverflowError):  # February 30; or year 1 moved west of UTC
        raise validation_error(f"'{field}' is not a real date-time.", {"field": field}) from None


def delivery_time(body: dict[str, Any], prefix: str = "") -> datetime | None:
    """When a message asks to be delivered: ``deliver_at`` or now plus ``delay_seconds``."""
    given = [name for name in SCHEDULE_FIELDS if name in body]
    if not given:
        return None
    if len(given) > 1:
        raise validation_error(
            "Give 'deliver_at' or 'delay_seconds', not both.",
            {"fields": [prefix + name for name in given]},
        )
    now = utcnow()
    limit = f"within {MAX_SCHEDULE_SECONDS} seconds ({MAX_SCHEDULE_SECONDS // 86400} days) of now"
    if given[0] == "deliver_at":
        field = prefix + "deliver_at"
        deliver_at = rfc3339(body["deliver_at"], field)
        if abs(deliver_at - now) > timedelta(seconds=MAX_SCHEDULE_SECONDS):
            raise validation_error(f"'{field}' must be {limit}.", {"field": field})
        return deliver_at
    field = prefix + "delay_seconds"
    delay = body["delay_seconds"]
    if (
        isinstance(delay, bool)
        or not isinstance(delay, int | float)
        or not math.isfinite(delay)
        or not 0 <= delay <= MAX_SCHEDULE_SECONDS
    ):
        raise validation_error(
            f"'{field}' must be a number of seconds from 0 to {MAX_SCHEDULE_SECONDS}.",
            {"field": field},
        )
    return now + timedelta(seconds=delay)


MAX_REDRIVE = 10_000  # messages per bulk redrive request, so one request stays short


def redrive_request(body: dict[str, Any]) -> tuple[FailedFilter, int]:
    """The filters of ``POST /messages/retry``: status (failed), since, until, limit."""
    if body.get("status", FAILED) != FAILED:
        raise validation_error(
            "Only failed messages can be retried in bulk: 'status' must be 'failed'.",
            {"field": "status", "allowed": [FAILED.value]},
        )
    since, until = (
        rfc3339(body[name], name) if name in body else None for name in ("since", "until")
    )
    if since is not None and until is not None and since >= until:
        raise validation_error("'since' must be before 'until'.", {"fields": ["since", "until"]})
    limit = body.get("limit", MAX_REDRIVE)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_REDRIVE:
        raise validation_error(
            f"'limit' must be an integer from 1 to {MAX_REDRIVE}.", {"field": "limit"}
        )
    return FailedFilter(since=since, until=until), limit


def batch_items(body: dict[str, Any], maximum: int) -> tuple[list[str], list[datetime | None]]:
    """Contents and delivery times of ``{"messages": [{"content": ...}, ...]}`` (1 to maximum)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not 1 <= len(messages) <= maximum:
        raise validation_error(
            f"'messages' must be a list of 1 to {maximum} objects.", {"field": "messages"}
        )
    contents, deliveries = [], []
    for index, message in enumerate(messages):
        item = f"messages[{index}]"
        if not isinstance(message, dict):
            raise validation_error(f"{item} must be an object.", {"field": item})
        contents.append(message_content(message, f"{item}.content"))
        deliveries.append(delivery_time(message, f"{item}."))
    return contents, deliveries


def positive_int(args: dict[str, str], name: str, default: int | None, maximum: int) -> int | None:
    """An optional query parameter that must be an integer in 1..maximum."""
    raw = args.get(name)
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= maximum:
        raise validation_error(
            f"'{name}' must be an integer from 1 to {maximum}.", {"field": name, "got": raw}
        )
    return int(raw)


def status_filter(args: dict[str, str]) -> MessageStatus | None:
    """The optional ``status`` filter, one of the known statuses."""
    raw = args.get("status")
    if raw is None:
        return None
    try:
        return MessageStatus(raw)
    except ValueError:
        allowed = [status.value for status in MessageStatus]
        raise validation_error(
            f"Unknown status {raw!r}; use one of: {', '.join(allowed)}.",
            {"field": "status", "allowed": allowed},
        ) from None


IDEMPOTENCY_HEADER = "Idempotency-Key"
MAX_IDEMPOTENCY_KEY_LENGTH = 255


def idempotency_key(request: Request) -> str | None:
    """The optional ``Idempotency-Key`` header: 1-255 printable ASCII characters."""
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        return None
    if not 0 < len(key) <= MAX_IDEMPOTENCY_KEY_LENGTH or not (key.isascii() and key.isprintable()):
        raise validation_error(
            f"{IDEMPOTENCY_HEADER} must be 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} printable ASCII "
            "characters.",
            {"header": IDEMPOTENCY_HEADER},
        )
    return key
