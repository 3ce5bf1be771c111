"""The ``/messages`` endpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import Blueprint, Response, current_app, request

from app import lifecycle, queries
from app.api.errors import APIError
from app.api.payloads import json_body, json_response, request_idempotency_key
from app.api.schemas import (
    IDEMPOTENCY_HEADER,
    MAX_ID,
    MESSAGE,
    MESSAGE_LIST,
    MESSAGE_PAGE,
    STATS,
    MessageIn,
    batch_in,
    list_query,
    message_out,
    parse_query,
)
from app.auth.access import requires
from app.auth.keys import Scope
from app.lifecycle import IdempotencyKeyReused, IdempotentMessageGone, IdempotentRequest
from app.models import MessageStatus

bp = Blueprint("messages", __name__, url_prefix="/messages")


def location(root_path: str, message_id: int) -> str:
    """The URL of a message below the app's root, as ``url_for("messages.get_message")`` builds it.

    Built by hand: ``url_for`` walks the routing map on every call, which was
    ~5 % of the web's CPU per ``POST /messages`` under load.
    """
    return f"{root_path}{bp.url_prefix}/{message_id}"


def existing(message_id: int) -> dict[str, Any]:
    row = queries.get_message(message_id) if message_id <= MAX_ID else None
    if row is None:
        raise APIError(404, "not_found", f"Message {message_id} does not exist.")
    return row


def wrong_status(current: dict[str, Any], action: str, required: MessageStatus) -> APIError:
    """A 409 for an action that only a message in ``required`` status allows."""
    return APIError(
        409,
        "conflict",
        f"Only {required} messages can be {action}; message {current['id']} is "
        f"{current['status']}.",
        {"status": current["status"], "required_status": required.value},
    )


@bp.post("")
@requires(Scope.SUBMIT)
def create_message() -> Response:
    """Store a message; it is committed before this answers, then queued for processing.

    ``deliver_at`` or ``delay_seconds`` holds it back until then. A repeated
    ``Idempotency-Key`` with the same content answers 200 with the first
    request's message and writes nothing.
    """
    message = json_body(request, MessageIn)
    deliver_at = message.delivery_time()
    content = message.content
    key = request_idempotency_key(request)
    idempotency = (
        IdempotentRequest(key, current_app.config["IDEMPOTENCY_TTL"]) if key is not None else None
    )
    if idempotency is None and deliver_at is None:
        row, created = current_app.extensions["group_commit"].create(content), True
    else:
        row, created = _create_one(content, idempotency, deliver_at)
    url = location(request.root_path, row["id"])
    if not created:
        return json_response(
            MESSAGE, message_out(row), 200, {"Location": url, "Idempotent-Replayed": "true"}
        )
    current_app.extensions["drain_requests"].request_soon()
    return json_response(MESSAGE, message_out(row), 201, {"Location": url})


def _create_one(
    content: str, idempotency: IdempotentRequest | None, deliver_at: datetime | None
) -> tuple[dict[str, Any], bool]:
    try:
        return lifecycle.create_message(content, idempotency, deliver_at)
    except IdempotencyKeyReused as reused:
        raise APIError(
            422,
            "idempotency_key_reused",
            f"{IDEMPOTENCY_HEADER} {reused.args[0]!r} was already used with different content.",
            {"header": IDEMPOTENCY_HEADER},
        ) from None
    except IdempotentMessageGone as gone:
        raise APIError(
            410,
            "idempotent_message_gone",
            f"Message {gone.message_id}, created with {IDEMPOTENCY_HEADER} {idempotency.key!r}, "
            "no longer exists; send a new key to create the message again.",
            {"header": IDEMPOTENCY_HEADER, "message_id": gone.message_id},
        ) from None


@bp.post("/batch")
@requires(Scope.SUBMIT)
def create_messages() -> Response:
    """Store up to ``N3HUB_MAX_BATCH_MESSAGES`` messages in one transaction: all of them or none."""
    maximum = current_app.config["MAX_BATCH_MESSAGES"]
    batch = json_body(request, batch_in(maximum), maximum)
    rows = lifecycle.create_messages(
        [message.content for message in batch.messages],
        [message.delivery_time() for message in batch.messages],
    )
    current_app.extensions["drain_requests"].request_soon()
    return json_response(MESSAGE_LIST, {"messages": [message_out(row) for row in rows]}, 201)


@bp.get("")
@requires(Scope.READ)
def list_messages() -> Response:
    """Messages newest first, one page at a time; ``?status=`` filters."""
    config = current_app.config
    query = parse_query(list_query(config["PAGE_SIZE"], config["MAX_PAGE_SIZE"]), request.args)
    page = queries.list_messages(query.limit, query.cursor, query.status)
    cursor = str(page.next_cursor) if page.next_cursor is not None else None
    return json_response(
        MESSAGE_PAGE,
        {
            "messages": [message_out(row) for row in page.messages],
            "limit": query.limit,
            "next_cursor": cursor,
        },
    )


@bp.get("/stats")
@requires(Scope.READ)
def get_stats() -> Response:
    """Counts by status; ``total`` is their sum."""
    return json_response(STATS, queries.message_stats())


@bp.get("/<int:message_id>")
@requires(Scope.READ)
def get_message(message_id: int) -> Response:
    """One message with its processing facts."""
    return json_response(MESSAGE, message_out(existing(message_id)))


@bp.post("/<int:message_id>/retry")
@requires(Scope.ADMIN)
def retry_message(message_id: int) -> Response:
    """Put a failed message back to pending; 409 for any other status."""
    current = existing(message_id)
    row = lifecycle.retry_failed(message_id)
    if row is None:
        raise wrong_status(current, "retried", MessageStatus.FAILED)
    current_app.extensions["drain_requests"].request_soon()
    return json_response(MESSAGE, message_out(row), 202)
