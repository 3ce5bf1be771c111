"""Operator actions on messages: cancel a waiting one, send failed ones back in bulk."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, request

from app import lifecycle
from app.api.messages import existing, wrong_status
from app.api.payloads import json_body, json_response
from app.api.schemas import MESSAGE, REDRIVE, RedriveIn, message_out
from app.auth.access import requires
from app.auth.keys import Scope
from app.models import MessageStatus

bp = Blueprint("operations", __name__, url_prefix="/messages")


@bp.post("/<int:message_id>/cancel")
@requires(Scope.ADMIN)
def cancel_message(message_id: int) -> Response:
    """Cancel a pending (or scheduled) message so it is never processed; 409 for any other."""
    current = existing(message_id)
    row = lifecycle.cancel_pending(message_id)
    if row is None:
        raise wrong_status(current, "cancelled", MessageStatus.PENDING)
    return json_response(MESSAGE, message_out(row))


@bp.post("/retry")
@requires(Scope.ADMIN)
def retry_messages() -> Response:
    """Send failed messages (failed in ``[since, until)``, oldest first) back to pending in bulk.

    Up to ``limit`` of them, in transactions of a few hundred rows; ``more`` says
    whether matching failed messages remain for another request.
    """
    redrive = json_body(request, RedriveIn)
    retried, more = lifecycle.redrive_failed(redrive.failed_filter(), redrive.limit)
    if retried:
        current_app.extensions["drain_requests"].request_soon()
    return json_response(REDRIVE, {"retried": retried, "more": more})
