"""Parsing and validation of request bodies and query strings."""

from __future__ import annotations

import json
from typing import Any

from flask import Request

from app.api.errors import APIError, validation_error
from app.auth.keys import TENANT_PATTERN
from app.models import MessageStatus

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
    body = request.get_data(cache=False)
    if request.content_length is None and _went_past_the_limit(request, len(body)):
        raise APIError(
            413, "payload_too_large", f"The body is larger than {request.max_content_length} bytes."
        )
    return parse_json_object(body)


def _went_past_the_limit(request: Request, read: int) -> bool:
    """Whether a body without ``Content-Length`` (chunked) went on past the limit.

    Werkzeug stops reading such a body at ``MAX_CONTENT_LENGTH`` without a word,
    and a body cut there could even parse as JSON.
    """
    limit = request.max_content_length
    return limit is not None and read >= limit and bool(request.environ["wsgi.input"].read(1))


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """A request body that must be one JSON object, or a 4xx APIError saying what is wrong.

    Only UTF-8 without a byte order mark is read (``json.loads`` would guess
    UTF-16 or UTF-32 from bytes), and ``NaN``/``Infinity`` are refused: they are
    not JSON, and no other client could read them back.
    """
    try:
        body = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except (ValueError, RecursionError):
        raise APIError(
            400, "invalid_json", "The body is not valid JSON in UTF-8 (without a BOM)."
        ) from None
    if not isinstance(body, dict):
        raise validation_error("The body must be a JSON object.", {"got": type(body).__name__})
    return body


def message_content(body: dict[str, Any], max_chars: int, field: str = "content") -> str:
    """The ``content`` field: a non-empty string of valid, storable Unicode, not too long."""
    if "content" not in body:
        raise validation_error("'content' is required.", {"field": field})
    content = body["content"]
    if not isinstance(content, str):
        raise validation_error("'content' must be a string.", {"field": field})
    if not content:
        raise validation_error("'content' must not be empty.", {"field": field})
    if len(content) > max_chars:
        raise validation_error(
            f"'content' is longer than {max_chars} characters.",
            {"field": field, "max_characters": max_chars},
        )
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


def batch_contents(body: dict[str, Any], maximum: int, max_chars: int) -> list[str]:
    """The contents of ``{"messages": [{"content": ...}, ...]}``, 1 to ``maximum`` of them."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not 1 <= len(messages) <= maximum:
        raise validation_error(
            f"'messages' must be a list of 1 to {maximum} objects.", {"field": "messages"}
        )
    contents = []
    for index, message in enumerate(messages):
        item = f"messages[{index}]"
        if not isinstance(message, dict):
            raise validation_error(f"{item} must be an object.", {"field": item})
        contents.append(message_content(message, max_chars, f"{item}.content"))
    return contents


def positive_int(args: dict[str, str], name: str, default: int | None, maximum: int) -> int | None:
    """An optional query parameter that must be an integer in 1..maximum."""
    raw = args.get(name)
    if raw is None:
        return default
    # The length first: int() of a long digit string costs time, or raises past 4300 digits.
    short = len(raw) <= len(str(maximum))
    if not (short and raw.isascii() and raw.isdigit() and 1 <= int(raw) <= maximum):
        raise validation_error(
            f"'{name}' must be an integer from 1 to {maximum}.", {"field": name, "got": raw[:32]}
        )
    return int(raw)


def tenant_filter(args: dict[str, str]) -> str | None:
    """The optional ``tenant`` filter (admin keys only), a well-formed tenant name."""
    raw = args.get("tenant")
    if raw is None:
        return None
    if not TENANT_PATTERN.fullmatch(raw):
        raise validation_error(
            "'tenant' must be 1 to 64 of A-Z a-z 0-9 . _ -", {"field": "tenant", "got": raw[:64]}
        )
    return raw


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
