"""The ``/messages`` endpoints."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, request

from app import lifecycle, queries
from app.api.errors import APIError
from app.api.guard import charge_more, principal
from app.api.payloads import json_body, json_response, request_idempotency_key
from app.api.schemas import (
    ATTEMPT_LIST,
    IDEMPOTENCY_HEADER,
    MAX_ID,
    MESSAGE,
    MESSAGE_LIST,
    MESSAGE_PAGE,
    STATS,
    MessageIn,
    TenantQuery,
    attempt_out,
    batch_in,
    list_query,
    message_in,
    message_json_size,
    message_out,
    parse_query,
)
from app.auth.access import requires
from app.auth.keys import Scope
from app.lifecycle import IdempotencyKeyReused, IdempotentMessageGone, IdempotentRequest
from app.models import MessageStatus

bp = Blueprint("messages", __name__, url_prefix="/messages")
REPLAYED_HEADER = "Idempotent-Replayed"


def location(root_path: str, message_id: int) -> str:
    """The URL of a message below the app's root, as ``url_for("messages.get_message")`` builds it.

    Built by hand: ``url_for`` walks the routing map on every call, which was
    ~5 % of the web's CPU per ``POST /messages`` under load.
    """
    return f"{root_path}{bp.url_prefix}/{message_id}"


def existing(message_id: int, tenant: str | None = None) -> dict[str, Any]:
    """The message, if it exists and (with ``tenant``) is that tenant's; else a 404."""
    row = queries.get_message(message_id, tenant) if message_id <= MAX_ID else None
    if row is None:
        raise APIError(404, "not_found", f"Message {message_id} does not exist.")
    return row


def _readable_tenant(asked: str | None) -> str | None:
    """The tenant a read is limited to: the caller's, or for admin ``?tenant=`` or every one."""
    caller = principal()
    if caller.may(Scope.ADMIN):
        return asked
    if asked is not None and asked != caller.tenant:
        raise APIError(
            403,
            "forbidden",
            "Only an admin key may read another tenant's messages.",
            {"required_scope": Scope.ADMIN.value},
        )
    return caller.tenant


def _asked_tenant() -> str | None:
    """The ``?tenant=`` of a read other than the listing."""
    return parse_query(TenantQuery, request.args).tenant


def _idempotency(tenant: str) -> IdempotentRequest | None:
    key = request_idempotency_key(request)
    if key is None:
        return None
    return IdempotentRequest(key, current_app.config["IDEMPOTENCY_TTL"], tenant)


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
    message = json_body(request, message_in(current_app.config["MAX_CONTENT_CHARS"]))
    deliver_at = message.delivery_time()
    tenant = principal().tenant
    idempotency = _idempotency(tenant)
    if idempotency is None and deliver_at is None:
        row, created = current_app.extensions["group_commit"].create(tenant, message.content), True
    else:
        [row], created = _create([message], tenant, idempotency, batch=False)
    url = location(request.root_path, row["id"])
    if not created:
        replayed = {"Location": url, REPLAYED_HEADER: "true"}
        return json_response(MESSAGE, message_out(row), 200, replayed)
    current_app.extensions["drain_requests"].request_soon()
    return json_response(MESSAGE, message_out(row), 201, {"Location": url})


def _create(
    messages: list[MessageIn],
    tenant: str,
    idempotency: IdempotentRequest | None,
    batch: bool,
) -> tuple[list[dict[str, Any]], bool]:
    contents = [message.content for message in messages]
    deliveries = [message.delivery_time() for message in messages]
    if idempotency is None:
        return lifecycle.create_messages(contents, tenant, deliveries), True
    try:
        return lifecycle.create_batch(contents, idempotency, tenant, batch, deliveries)
    except IdempotencyKeyReused:
        raise APIError(
            422,
            "idempotency_key_reused",
            f"{IDEMPOTENCY_HEADER} {idempotency.key!r} was already used with different content.",
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
    """Store up to ``N3HUB_MAX_BATCH_MESSAGES`` messages in one transaction: all of them or none.

    A repeated ``Idempotency-Key`` with the same batch answers 200 with the first
    request's messages and writes nothing.
    """
    config = current_app.config
    maximum = config["MAX_BATCH_MESSAGES"]
    batch = json_body(request, batch_in(maximum, config["MAX_CONTENT_CHARS"]), maximum)
    charge_more(len(batch.messages) - 1)  # the guard charged one; a batch costs each message
    tenant = principal().tenant
    rows, created = _create(batch.messages, tenant, _idempotency(tenant), batch=True)
    body = {"messages": [message_out(row) for row in rows]}
    if not created:
        return json_response(MESSAGE_LIST, body, 200, {REPLAYED_HEADER: "true"})
    current_app.extensions["drain_requests"].request_soon()
    return json_response(MESSAGE_LIST, body, 201)


@bp.get("")
@requires(Scope.READ)
def list_messages() -> Response:
    """Messages newest first, one page at a time; ``?status=`` filters, ``?tenant=`` for admin."""
    config = current_app.config
    query = parse_query(list_query(config["PAGE_SIZE"], config["MAX_PAGE_SIZE"]), request.args)
    budget = (config["MAX_RESPONSE_BYTES"], message_json_size)
    page = queries.list_messages(
        query.limit, query.cursor, query.status, _readable_tenant(query.tenant), budget
    )
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
    return json_response(STATS, queries.message_stats(_readable_tenant(_asked_tenant())))


@bp.get("/<int:message_id>")
@requires(Scope.READ)
def get_message(message_id: int) -> Response:
    """One message with its processing facts."""
    return json_response(
        MESSAGE, message_out(existing(message_id, _readable_tenant(_asked_tenant())))
    )


@bp.get("/<int:message_id>/attempts")
@requires(Scope.READ)
def get_attempts(message_id: int) -> Response:
    """A message's attempts, oldest first: how each ended, when, and on which worker."""
    existing(message_id, _readable_tenant(_asked_tenant()))
    attempts = [attempt_out(row) for row in queries.get_attempts(message_id)]
    return json_response(ATTEMPT_LIST, {"message_id": message_id, "attempts": attempts})


@bp.post("/<int:message_id>/retry")
@requires(Scope.ADMIN)
def retry_message(message_id: int) -> Response:
    """Put a failed message back to pending (any tenant's: admin only); 409 for other statuses."""
    current = existing(message_id)
    row = lifecycle.retry_failed(message_id)
    if row is None:
        raise wrong_status(current, "retried", MessageStatus.FAILED)
    current_app.extensions["drain_requests"].request_soon()
    return json_response(MESSAGE, message_out(row), 202)
