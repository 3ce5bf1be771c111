"""Operator actions on messages: cancel a waiting one."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from app import lifecycle
from app.api.messages import existing, message_out, wrong_status
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
