"""Attempt history: a row per ended attempt, written in the transaction of its outcome.

Whatever ends a claim (:func:`app.lifecycle.finish_batch`, ``release_claims``,
``recover_expired_leases``) records its attempts here just before it moves the
messages. A row is inserted only while its message is still ``processing``
under that attempt number, the fence the outcome's UPDATE uses too, and the
insert locks the message (PostgreSQL), so exactly the attempts whose outcome is
written are recorded. When the attempt started and which worker held it come
from the message row, where the claim put them. Each message then keeps only
its newest ``N3HUB_ATTEMPTS_KEPT`` attempts: one short index probe per message.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import datetime

from flask import current_app
from sqlalchemy import String, Text, bindparam, delete, insert, select
from sqlalchemy.engine import Connection

from app.models import (
    WORKER_LENGTH,
    AttemptOutcome,
    Message,
    MessageAttempt,
    MessageStatus,
    UTCDateTime,
)


def worker_name() -> str:
    """This process as the attempt history names it: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"[-WORKER_LENGTH:]


@dataclass(frozen=True)
class Ended:
    """An attempt that ended: the message, its attempt number, how and when."""

    message_id: int
    number: int
    outcome: AttemptOutcome
    error: str | None
    at: datetime


_record = insert(MessageAttempt).from_select(
    ["message_id", "number", "started_at", "ended_at", "outcome", "error", "worker"],
    select(
        Message.id,
        Message.attempts,
        Message.started_at,
        bindparam("a_ended", type_=UTCDateTime()),
        bindparam("a_outcome", type_=String()),
        bindparam("a_error", type_=Text()),
        Message.claimed_by,
    )
    .where(
        Message.id == bindparam("a_message"),
        Message.attempts == bindparam("a_number"),
        Message.status == MessageStatus.PROCESSING,
    )
    .with_for_update(),
)

# The newest attempt beyond those kept (NULL while there are no more than ``a_keep``).
_first_dropped = (
    select(MessageAttempt.id)
    .where(MessageAttempt.message_id == bindparam("a_message"))
    .order_by(MessageAttempt.id.desc())
    .limit(1)
    .offset(bindparam("a_keep"))
    .scalar_subquery()
)
_trim = delete(MessageAttempt).where(
    MessageAttempt.message_id == bindparam("a_message"), MessageAttempt.id <= _first_dropped
)


def record(connection: Connection, ended: list[Ended]) -> None:
    """Record attempts still held by their claim (give them in message id order); trim."""
    if not ended:
        return
    connection.execute(
        _record,
        [
            {
                "a_message": attempt.message_id,
                "a_number": attempt.number,
                "a_ended": attempt.at,
                "a_outcome": attempt.outcome.value,
                "a_error": attempt.error,
            }
            for attempt in ended
        ],
    )
    keep = current_app.config["ATTEMPTS_KEPT"]
    connection.execute(
        _trim, [{"a_message": attempt.message_id, "a_keep": keep} for attempt in ended]
    )
