"""Every change of a message's status, each one a single guarded transaction.

pending -> processing is a claim: one conditional UPDATE that increments
``attempts`` and sets a lease, so a row is never claimed twice (on MySQL and
MariaDB, which lack ``UPDATE ... RETURNING``, a locking SELECT that skips locked
rows and an UPDATE of those rows, in one transaction). The outcome of
a claim is written only while the row is still ``processing`` with the same
``attempts``: the attempt number is the fencing token that stops a late
finisher from overwriting a newer claim. Claims that outlive their lease are
taken back by :func:`recover_expired_leases`, which counts them as attempts, so a
message that kills its worker every time still ends ``failed``. Every attempt
that ends is recorded (:mod:`app.attempts`) in the transaction of its outcome.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Select, Update, bindparam, delete, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from app import attempts, mysql, mysql_outcomes, pending_rows, tallies
from app.attempts import Ended
from app.database import driver_write_transaction, read_connection, write_transaction
from app.models import (
    DEFAULT_TENANT,
    AttemptOutcome,
    IdempotencyKey,
    Message,
    MessageStatus,
    UTCDateTime,
)

PENDING = MessageStatus.PENDING
# A message that lost its worker this often may be what kills it: it runs alone from then on.
# One loss proves nothing (an OOM kill or a deploy strands every message in flight), and
# running each of a thousand stranded I/O-bound messages alone would take as many of its
# run times; from two on, a poison message has taken its bystanders down at most twice.
RUN_ALONE_AFTER_WORKER_LOSSES = 2
PROCESSING = MessageStatus.PROCESSING
COMPLETED = MessageStatus.COMPLETED
FAILED = MessageStatus.FAILED
CANCELLED = MessageStatus.CANCELLED
RECOVERED = AttemptOutcome.RECOVERED


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class ClaimedMessage:
    """What a processor is given: the message and which attempt this is."""

    id: int
    content: str
    attempts: int
    created_at: datetime
    tenant: str = DEFAULT_TENANT


@dataclass(frozen=True)
class Outcome:
    """How one claimed message's attempt ended."""

    message: ClaimedMessage
    result: Any = None
    error: str | None = None
    permanent: bool = False
    timed_out: bool = False  # it overran the time limit and was given up
    ended_at: datetime = field(default_factory=utcnow)  # when the run ended, not the write

    @property
    def succeeded(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how soon a failed attempt is tried again."""

    max_attempts: int
    base_delay: float
    max_delay: float

    def delay(self, attempts: int) -> float:
        """Exponential backoff with equal jitter: half fixed, half random."""
        ceiling = min(self.max_delay, self.base_delay * 2 ** max(attempts - 1, 0))
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def exhausted(self, attempts: int) -> bool:
        return attempts >= self.max_attempts

    def next_status(self, outcome: Outcome) -> MessageStatus:
        """Where an attempt's outcome sends its message: done, given up, or tried again."""
        if outcome.succeeded:
            return COMPLETED
        if outcome.permanent or self.exhausted(outcome.message.attempts):
            return FAILED
        return PENDING


@dataclass(frozen=True)
class FinishReport:
    """What :func:`finish_batch` wrote."""

    completed: int = 0
    failed: int = 0
    retried: int = 0
    stale: int = 0


class IdempotencyKeyReused(Exception):
    """The idempotency key was first used with different content."""


class IdempotentMessageGone(Exception):
    """The idempotency key is known, but the message its first use created no longer exists."""

    def __init__(self, key: str, message_id: int) -> None:
        super().__init__(key, message_id)
        self.message_id = message_id


@dataclass(frozen=True)
class IdempotentRequest:
    """A tenant's client-chosen key, how long to honour it; the content it goes with is checked."""

    key: str
    ttl_seconds: float
    tenant: str = DEFAULT_TENANT

    def fingerprint(self, contents: list[str], batch: bool) -> str:
        """SHA-256 of what the request carried: one content, or a batch of them."""
        if not batch:
            return hashlib.sha256(contents[0].encode("utf-8")).hexdigest()
        return hashlib.sha256(json.dumps(["batch", contents]).encode("utf-8")).hexdigest()

    def where(self) -> Any:
        """The SQL condition selecting this key's row."""
        return (IdempotencyKey.tenant == self.tenant) & (IdempotencyKey.key == self.key)


def create_message(
    content: str,
    idempotency: IdempotentRequest | None = None,
    tenant: str = DEFAULT_TENANT,
    deliver_at: datetime | None = None,
) -> tuple[dict[str, Any], bool]:
    """Store a new pending message; return its row and whether it was created just now.

    With an idempotency key seen before (and not expired), nothing is written and
    the first request's message is returned, or :class:`IdempotencyKeyReused`
    raised if the content differs, or :class:`IdempotentMessageGone` if that
    message was deleted since. Two racing first uses of one key collide on
    the key's primary key; the loser retries and finds the winner's message.
    """
    rows, created = create_batch([content], idempotency, tenant, False, [deliver_at])
    return rows[0], created


def create_batch(
    contents: list[str],
    idempotency: IdempotentRequest | None,
    tenant: str = DEFAULT_TENANT,
    batch: bool = True,
    deliver_at: Sequence[datetime | None] | None = None,
) -> tuple[list[dict[str, Any]], bool]:
    """Store pending messages in one transaction, honouring an idempotency key; rows, created.

    ``deliver_at``, one per content when given, holds a message back until then.
    """
    for attempt in range(2):
        try:
            return _create(contents, idempotency, tenant, batch, deliver_at)
        except IntegrityError:
            if idempotency is None or attempt:
                raise
    raise AssertionError("unreachable")


def _create(
    contents: list[str],
    idempotency: IdempotentRequest | None,
    tenant: str,
    batch: bool,
    deliver_at: Sequence[datetime | None] | None,
) -> tuple[list[dict[str, Any]], bool]:
    now = utcnow()
    with write_transaction() as connection:
        fingerprint = idempotency.fingerprint(contents, batch) if idempotency else ""
        if idempotency is not None:
            replayed = _replay(connection, fingerprint, idempotency, now)
            if replayed is not None:
                return replayed, False
        rows = pending_rows.insert(
            connection.connection.driver_connection,
            connection.dialect,
            [(tenant, content) for content in contents],
            now,
            deliver_at,
        )
        if idempotency is not None:
            connection.execute(
                insert(IdempotencyKey).values(
                    tenant=idempotency.tenant,
                    key=idempotency.key,
                    fingerprint=fingerprint,
                    message_id=rows[0]["id"],
                    batch_ids=[row["id"] for row in rows] if batch else None,
                    expires_at=now + timedelta(seconds=idempotency.ttl_seconds),
                )
            )
    return rows, True


def create_messages(
    contents: list[str],
    tenant: str = DEFAULT_TENANT,
    deliver_at: Sequence[datetime | None] | None = None,
) -> list[dict[str, Any]]:
    """Store several new pending messages of one tenant in one transaction; rows in order."""
    return create_pending([(tenant, content) for content in contents], deliver_at)


def create_pending(
    items: list[tuple[str, str]], deliver_at: Sequence[datetime | None] | None = None
) -> list[dict[str, Any]]:
    """Store (tenant, content) messages in one transaction; rows in the given order.

    ``deliver_at``, one per item when given, holds a message back until then.
    """
    with driver_write_transaction() as (driver_connection, dialect):
        return pending_rows.insert(driver_connection, dialect, items, utcnow(), deliver_at)


def _replay(
    connection: Connection, fingerprint: str, idempotency: IdempotentRequest, now: datetime
) -> list[dict[str, Any]] | None:
    """The messages an unexpired key already created, or None (dropping an expired key)."""
    seen = connection.execute(
        select(*IdempotencyKey.__table__.columns).where(idempotency.where())
    ).one_or_none()
    if seen is None:
        return None
    if seen.expires_at <= now:
        connection.execute(delete(IdempotencyKey).where(idempotency.where()))
        return None
    if seen.fingerprint != fingerprint:
        raise IdempotencyKeyReused(idempotency.key)
    ids = seen.batch_ids or [seen.message_id]
    found = {
        row.id: row._asdict()
        for row in connection.execute(select(*Message.__table__.columns).where(Message.id.in_(ids)))
    }
    gone = [message_id for message_id in ids if message_id not in found]
    if gone:
        raise IdempotentMessageGone(idempotency.key, gone[0])
    return [found[message_id] for message_id in ids]


def purge_expired_idempotency_keys(limit: int = 1000) -> int:
    """Delete up to ``limit`` expired idempotency keys; return how many."""
    now = utcnow()
    with write_transaction() as connection:
        # Two statements, not DELETE ... IN (SELECT ... LIMIT), which MySQL refuses.
        keys = (
            connection.execute(
                select(IdempotencyKey.key).where(IdempotencyKey.expires_at <= now).limit(limit)
            )
            .scalars()
            .all()
        )
        if not keys:
            return 0
        return connection.execute(
            delete(IdempotencyKey).where(
                IdempotencyKey.key.in_(keys), IdempotencyKey.expires_at <= now
            )
        ).rowcount


def _due(*, retried: bool, now: Any, alone: bool | None = None) -> Select[tuple[int]]:
    """Ids of pending messages whose time has come, oldest first: first tries or retried ones.

    ``alone`` narrows retried ones to those that must run alone (they lost their worker
    ``RUN_ALONE_AFTER_WORKER_LOSSES`` times), or to the others.
    """
    conditions = [
        Message.status == PENDING,
        Message.attempts > 0 if retried else Message.attempts < 1,
        Message.available_at <= now,
    ]
    if alone is not None:
        losses = Message.worker_losses
        isolate = RUN_ALONE_AFTER_WORKER_LOSSES
        conditions.append(losses >= isolate if alone else losses < isolate)
    return (
        select(Message.id)
        .where(*conditions)
        # In the order of ix_messages_status_attempts_id, and with a range on attempts
        # ("< 1", not "= 0", which would reduce the order to id alone): only that index
        # gives this order without a sort, so PostgreSQL keeps to it even when its
        # statistics still say most rows are pending, right after a backlog drains.
        # Ordered by id it chose the primary key and read every completed row on each
        # claim (16 ms at 45,000 rows).
        .order_by(Message.attempts, Message.id)
    )


_CLAIMED_COLUMNS = (
    Message.id,
    Message.content,
    Message.attempts,
    Message.created_at,
    Message.tenant,
)
# What a claim sets: each call binds ``m_now``, ``m_limit``, ``m_lease`` and ``m_worker``
# (and on MySQL ``m_ids``).
_CLAIMED_VALUES = {
    "status": PROCESSING,
    "attempts": Message.attempts + 1,
    "started_at": bindparam("m_now", type_=UTCDateTime()),
    "updated_at": bindparam("m_now", type_=UTCDateTime()),
    "lease_expires_at": bindparam("m_lease", type_=UTCDateTime()),
    "claimed_by": bindparam("m_worker"),
}


@dataclass(frozen=True)
class _ClaimStatements:
    """One kind of claim, built once: as an UPDATE ... RETURNING, and as MySQL's locking SELECT.

    MySQL has no UPDATE ... RETURNING and refuses LIMIT in an IN subquery: there
    the due rows are locked (skipping those another claim holds), then updated by
    id in the same transaction, where nobody else can claim them.
    """

    update: Update
    lock: Select[Any]


def _claim_statements(*, retried: bool, alone: bool | None = None) -> _ClaimStatements:
    due = (
        _due(retried=retried, now=bindparam("m_now", type_=UTCDateTime()), alone=alone)
        .limit(bindparam("m_limit"))
        .with_for_update(skip_locked=True)  # PostgreSQL, MySQL; SQLite holds the write lock
    )
    return _ClaimStatements(
        update=update(Message)
        .where(Message.id.in_(due.scalar_subquery()))
        .values(**_CLAIMED_VALUES)
        .returning(*_CLAIMED_COLUMNS),
        lock=due.with_only_columns(*_CLAIMED_COLUMNS),
    )


_claim_new = _claim_statements(retried=False)
_claim_after_lost_worker = _claim_statements(retried=True, alone=True)
_claim_retried_safely = _claim_statements(retried=True, alone=False)
_claim_locked = (
    update(Message)
    .where(Message.id.in_(bindparam("m_ids", expanding=True)))
    .values(**_CLAIMED_VALUES)
)


def _claim_with(
    connection: Connection, statements: _ClaimStatements, claim: dict[str, Any], limit: int
) -> list[ClaimedMessage]:
    values = {**claim, "m_limit": limit}
    if not mysql.is_mysql(connection.dialect):
        claimed = [ClaimedMessage(*row) for row in connection.execute(statements.update, values)]
    else:
        locked = connection.execute(statements.lock, values).all()
        if locked:
            connection.execute(_claim_locked, {**values, "m_ids": [row.id for row in locked]})
        claimed = [
            ClaimedMessage(row.id, row.content, row.attempts + 1, row.created_at, row.tenant)
            for row in locked
        ]
    return sorted(claimed, key=lambda message: message.id)


@dataclass(frozen=True)
class Claim:
    """What :func:`claim_messages` took, and what it saw waiting."""

    messages: list[ClaimedMessage]
    # The one message lost its worker repeatedly: run it with nothing else in flight.
    alone: bool = False
    # Such a message is due, so nothing was claimed: let the messages in flight end, then claim.
    alone_waiting: bool = False


def claim_messages(limit: int, lease_seconds: float, *, idle: bool) -> Claim:
    """Claim up to ``limit`` due messages for a worker's free slots, retried ones first.

    A message that lost its worker ``RUN_ALONE_AFTER_WORKER_LOSSES`` times may be
    what killed it: only an ``idle`` worker (nothing in flight) claims it, alone; a
    busy one is told it waits.
    """
    now = utcnow()
    claim = {
        "m_now": now,
        "m_lease": now + timedelta(seconds=lease_seconds),
        "m_worker": attempts.worker_name(),
    }
    with write_transaction() as connection:
        if idle:
            lone = _claim_with(connection, _claim_after_lost_worker, claim, 1)
            if lone:
                tallies.apply(connection, _claimed(lone))
                return Claim(lone, alone=True)
        else:
            lone_due = _due(retried=True, now=now, alone=True).limit(1)
            if connection.execute(lone_due).first() is not None:
                return Claim([], alone_waiting=True)
        claimed = _claim_with(connection, _claim_retried_safely, claim, limit)
        if len(claimed) < limit:
            claimed += _claim_with(connection, _claim_new, claim, limit - len(claimed))
        tallies.apply(connection, _claimed(claimed))
    return Claim(claimed)


def _claimed(messages: list[ClaimedMessage]) -> tallies.Deltas:
    return tallies.transition_deltas((m.tenant, PENDING, PROCESSING) for m in messages)


def _record_outcome(status: MessageStatus, **values: Any) -> Update:
    """An executemany UPDATE ending one claim, stamped with ``m_now``.

    It changes a row only while that claim holds it: ``processing`` with the
    attempt number ``m_attempts`` (the fencing token), so its row count says how
    many of the claims were still ours.
    """
    return (
        update(Message)
        .where(
            Message.id == bindparam("m_id"),
            Message.attempts == bindparam("m_attempts"),
            Message.status == PROCESSING,
        )
        .values(status=status, updated_at=bindparam("m_now"), lease_expires_at=None, **values)
    )


@dataclass(frozen=True)
class _OutcomeColumns:
    """What ending a claim in one status writes besides the status itself."""

    from_rows: Mapping[str, str]  # column -> the parameter holding each row's value
    stamped: tuple[str, ...] = ()  # columns set to ``m_now``

    def values(self) -> dict[str, Any]:
        """The columns' values as bound parameters of :func:`_record_outcome`."""
        table = Message.__table__
        values = {
            column: bindparam(key, type_=table.c[column].type)
            for column, key in self.from_rows.items()
        }
        return values | {column: bindparam("m_now") for column in self.stamped}


_OUTCOME_COLUMNS = {
    COMPLETED: _OutcomeColumns({"result": "m_result"}, ("completed_at",)),
    FAILED: _OutcomeColumns({"last_error": "m_error"}, ("completed_at",)),
    PENDING: _OutcomeColumns({"last_error": "m_error", "available_at": "m_available"}),
}
_OUTCOME_STATEMENTS = {
    status: _record_outcome(status, **columns.values())
    for status, columns in _OUTCOME_COLUMNS.items()
}
_fail = _OUTCOME_STATEMENTS[FAILED]
_take_back_from_lost_worker = _record_outcome(
    PENDING,
    last_error=bindparam("m_error"),
    available_at=bindparam("m_now"),
    worker_losses=Message.worker_losses + 1,
)


def _write_outcomes(
    connection: Connection, status: MessageStatus, rows: list[dict[str, Any]]
) -> int:
    """End the claims in ``rows`` with ``status``; how many were still ours."""
    if mysql.is_mysql(connection.dialect):
        columns = _OUTCOME_COLUMNS[status]
        return mysql_outcomes.record_outcomes(
            connection, status, rows, columns.from_rows, columns.stamped
        )
    return connection.execute(_OUTCOME_STATEMENTS[status], rows).rowcount


# How an attempt that ran to its end is recorded, by where it sent its message.
_ATTEMPT_OUTCOMES = {
    COMPLETED: AttemptOutcome.COMPLETED,
    FAILED: AttemptOutcome.FAILED,
    PENDING: AttemptOutcome.RETRIED,
}


def finish_batch(outcomes: list[Outcome], policy: RetryPolicy) -> FinishReport:
    """Write the outcomes of one claim in one transaction, skipping rows no longer ours."""
    if not outcomes:
        return FinishReport()
    now = utcnow()
    # One executemany per (status, tenant): its row count is how many of that tenant's moved.
    rows: dict[tuple[MessageStatus, str], list[dict[str, Any]]] = {}
    ended: list[Ended] = []
    # In id order: each statement then locks its rows in that order. Two finishers of the
    # same claims (a stale one and its successor) may still meet in another order on
    # PostgreSQL; the deadlock error that follows is transient, and the drain retries.
    for outcome in sorted(outcomes, key=lambda outcome: outcome.message.id):
        message = outcome.message
        status = policy.next_status(outcome)
        row = {"m_id": message.id, "m_attempts": message.attempts, "m_now": now}
        if status == COMPLETED:
            row["m_result"] = outcome.result
        else:
            row["m_error"] = outcome.error
        if status == PENDING:
            row["m_available"] = now + timedelta(seconds=policy.delay(message.attempts))
        rows.setdefault((status, message.tenant), []).append(row)
        how = AttemptOutcome.TIMED_OUT if outcome.timed_out else _ATTEMPT_OUTCOMES[status]
        ended.append(Ended(message.id, message.attempts, how, outcome.error, outcome.ended_at))
    with write_transaction() as connection:
        attempts.record(connection, ended)
        moved = Counter(
            {
                (tenant, status): _write_outcomes(connection, status, group)
                for (status, tenant), group in sorted(rows.items())
            }
        )
        deltas = _ended_claims(moved)
        for (tenant, status), count in moved.items():
            if status == PENDING:
                deltas[tenant, tallies.RETRIES] += count
        tallies.apply(connection, deltas)
    completed, failed, retried = (
        sum(count for (_, status), count in moved.items() if status == wanted)
        for wanted in (COMPLETED, FAILED, PENDING)
    )
    return FinishReport(
        completed=completed,
        failed=failed,
        retried=retried,
        stale=len(outcomes) - completed - failed - retried,
    )


def _ended_claims(counts: Mapping[tuple[str, str], int]) -> tallies.Deltas:
    """Tally changes for ``counts[tenant, status]`` claims that left ``processing`` for it."""
    return tallies.transition_deltas(
        (tenant, PROCESSING, status)
        for (tenant, status), count in counts.items()
        for _ in range(count)
    )


_extend_lease = (
    update(Message)
    .where(
        Message.id == bindparam("m_id"),
        Message.attempts == bindparam("m_attempts"),
        Message.status == PROCESSING,
    )
    .values(lease_expires_at=bindparam("m_lease_until"))
)


def extend_leases(messages: list[ClaimedMessage], lease_seconds: float) -> None:
    """Push back the lease of claims still being worked on (a long batch)."""
    lease_until = utcnow() + timedelta(seconds=lease_seconds)
    with write_transaction() as connection:
        connection.execute(
            _extend_lease,
            [
                {"m_id": m.id, "m_attempts": m.attempts, "m_lease_until": lease_until}
                for m in messages
            ],
        )


def release_claims(messages: list[ClaimedMessage], reason: str) -> int:
    """Give claims still held back to ``pending`` at once (a worker stopping); return how many.

    The attempt stays counted: a message that outlasts every shutdown still ends ``failed``.
    """
    if not messages:
        return 0
    now = utcnow()
    # One executemany per tenant: its row count is how many of that tenant's were released.
    rows: dict[str, list[dict[str, Any]]] = {}
    ended: list[Ended] = []
    for m in sorted(messages, key=lambda message: message.id):
        ended.append(Ended(m.id, m.attempts, AttemptOutcome.RELEASED, reason, now))
        rows.setdefault(m.tenant, []).append(
            {
                "m_id": m.id,
                "m_attempts": m.attempts,
                "m_error": reason,
                "m_now": now,
                "m_available": now,
            }
        )
    with write_transaction() as connection:
        attempts.record(connection, ended)
        released = Counter(
            {
                (tenant, PENDING): _write_outcomes(connection, PENDING, group)
                for tenant, group in sorted(rows.items())
            }
        )
        tallies.apply(connection, _ended_claims(released))
    return sum(released.values())


def recover_expired_leases(policy: RetryPolicy, limit: int = 1000) -> Counter[str]:
    """Take back claims whose lease ran out: to ``pending``, or ``failed`` when out of attempts.

    Rows locked by a finishing worker are skipped (PostgreSQL), so a live
    finisher is never raced; several sweepers at once each take distinct rows.
    """
    now = utcnow()
    moves: Counter[tuple[str, str]] = Counter()  # (tenant, new status) -> messages
    with write_transaction() as connection:
        expired = connection.execute(
            select(Message.id, Message.attempts, Message.tenant)
            .where(Message.status == PROCESSING, Message.lease_expires_at < now)
            .order_by(Message.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).all()
        lost = [
            Ended(id_, n, RECOVERED, f"worker lost during attempt {n} (lease expired)", now)
            for id_, n, _ in expired
        ]
        attempts.record(connection, lost)
        for (_, _, tenant), attempt in zip(expired, lost, strict=True):
            claim = {
                "m_id": attempt.message_id,
                "m_attempts": attempt.number,
                "m_error": attempt.error,
                "m_now": now,
            }
            if policy.exhausted(attempt.number):
                connection.execute(_fail, [claim])
                moves[tenant, FAILED] += 1
            else:
                connection.execute(_take_back_from_lost_worker, [claim])
                moves[tenant, PENDING] += 1
        deltas = _ended_claims(moves)
        for (tenant, _), count in moves.items():
            deltas[tenant, tallies.RECOVERIES] += count
        tallies.apply(connection, deltas)
    recovered: Counter[str] = Counter()
    for (_, status), count in moves.items():
        recovered[status] += count
    return recovered


def pending_work_due(now: datetime | None = None) -> bool:
    """Whether any pending message may be claimed now."""
    now = now or utcnow()
    with read_connection() as connection:
        return any(
            connection.execute(_due(retried=retried, now=now).limit(1)).first() is not None
            for retried in (False, True)
        )


def next_due_at(now: datetime | None = None) -> datetime | None:
    """When the next pending message held back (scheduled, or backing off) becomes due."""
    now = now or utcnow()
    with read_connection() as connection:
        return connection.execute(
            select(Message.available_at)
            .where(Message.status == PENDING, Message.available_at > now)
            .order_by(Message.available_at)
            .limit(1)
        ).scalar()


# What a retry resets: a fresh set of attempts, no worker losses, and no end of processing yet.
_RETRY_VALUES: dict[str, Any] = {"attempts": 0, "worker_losses": 0, "completed_at": None}


def cancel_pending(message_id: int) -> dict[str, Any] | None:
    """Cancel a ``pending`` message (scheduled or not) so it is never processed; else None."""
    return _move(message_id, PENDING, CANCELLED, utcnow())


def retry_failed(message_id: int) -> dict[str, Any] | None:
    """Put a ``failed`` message back to ``pending`` with fresh attempts; None if not failed."""
    now = utcnow()
    return _move(message_id, FAILED, PENDING, now, available_at=now, **_RETRY_VALUES)


# Rows per transaction of a bulk redrive: each one holds the write lock only briefly.
REDRIVE_CHUNK = 500


@dataclass(frozen=True)
class FailedFilter:
    """Which failed messages a bulk redrive takes: failed in ``[since, until)``, oldest first."""

    since: datetime | None = None
    until: datetime | None = None

    def matching(self, after_id: int) -> Select[tuple[int, str]]:
        """Ids and tenants of matching failed messages above ``after_id``, in id order."""
        query = select(Message.id, Message.tenant).where(
            Message.status == FAILED, Message.id > after_id
        )
        if self.since is not None:
            query = query.where(Message.completed_at >= self.since)
        if self.until is not None:
            query = query.where(Message.completed_at < self.until)
        return query.order_by(Message.id)


def redrive_failed(failed: FailedFilter, limit: int) -> tuple[int, bool]:
    """Put up to ``limit`` matching failed messages back to pending, a chunk per transaction.

    Returns how many moved and whether matching messages remain.
    """
    moved, after_id = 0, 0
    while moved < limit:
        now = utcnow()
        with write_transaction() as connection:
            locked = connection.execute(
                failed.matching(after_id)
                .limit(min(REDRIVE_CHUNK, limit - moved))
                .with_for_update(skip_locked=True)
            ).all()
            if not locked:
                return moved, False
            ids = [message_id for message_id, _ in locked]
            connection.execute(
                update(Message)
                .where(Message.id.in_(ids))
                .values(status=PENDING, updated_at=now, available_at=now, **_RETRY_VALUES)
            )
            tallies.apply(
                connection,
                tallies.transition_deltas((tenant, FAILED, PENDING) for _, tenant in locked),
            )
        moved, after_id = moved + len(locked), ids[-1]
    with read_connection() as connection:
        remains = connection.execute(failed.matching(after_id).limit(1)).first() is not None
    return moved, remains


def _move(
    message_id: int, old: MessageStatus, new: MessageStatus, now: datetime, **values: Any
) -> dict[str, Any] | None:
    """Move one message from ``old`` to ``new`` with its tallies; None if it was not ``old``."""
    with write_transaction() as connection:
        # UPDATE, then read the row it locked: MySQL has no UPDATE ... RETURNING.
        moved = connection.execute(
            update(Message)
            .where(Message.id == message_id, Message.status == old)
            .values(status=new, updated_at=now, **values)
        ).rowcount
        if not moved:
            return None
        row = connection.execute(
            select(*Message.__table__.columns).where(Message.id == message_id)
        ).one()
        tallies.apply(connection, tallies.transition_deltas([(row.tenant, old, new)]))
    return row._asdict()
