"""Operator actions on messages: cancel a waiting one, send failed ones back in bulk."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, request

from app import lifecycle
from app.api.messages import existing, message_out, wrong_status
from app.api.payloads import json_object, redrive_request
from app.auth.access import requires
from app.auth.keys import Scope
from app.models import MessageStatus

bp = Blueprint("operations", __name__, url_prefix="/messages")


@bp.post("/<int:message_id>/cancel")
@requires(Scope.ADMIN)
def cancel_message(message_id: int) -> dict[str, Any]:
    """Cancel a pending (or scheduled) message so it is never processed; 409 for any other."""
    current = existing(message_id)
    row = lifecycle.cancel_pending(message_id)
    if row is None:
        raise wrong_status(current, "cancelled", MessageStatus.PENDING)
    return message_out(row)


@bp.post("/retry")
@requires(Scope.ADMIN)
def retry_messages() -> dict[str, Any]:
    """Send failed messages (failed in ``[since, until)``, oldest first) back to pending in bulk.

    Up to ``limit`` of them, in transactions of a few hundred rows; ``more`` says
    whether matching failed messages remain for another request.
    """
    failed, limit = redrive_request(json_object(request))
    retried, more = lifecycle.redrive_failed(failed, limit)
    if retried:
        current_app.extensions["drain_requests"].request_soon()
    return {"retried": retried, "more": more}
