"""Database schema: messages, their attempts, the tallies that keep counts cheap, API keys,
worker activity."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from app import mysql
from app.extensions import db

# The tenant of the messages stored before tenants existed, and of the development key.
DEFAULT_TENANT = "default"
TENANT_LENGTH = 64
# A worker's name, host:pid (a host name is at most 253 characters).
WORKER_LENGTH = 270

# SQLite only auto-increments a column declared exactly INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")
# Databases whose timestamps keep no zone: values are stored there as naive UTC.
_ZONELESS = frozenset({"sqlite", *mysql.DIALECTS})


class MessageStatus(StrEnum):
    """Where a message is in its life cycle."""

    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"  # by an operator while pending; never processed


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always read back timezone-aware.

    SQLite and MySQL keep no zone, so there values are normalised to naive UTC on the way in.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name in _ZONELESS else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Message(db.Model):
    """One submitted message and the facts of its processing."""

    __tablename__ = "messages"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    content: Mapped[str] = mapped_column(Text, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    # Earliest time a pending message may be claimed: creation, its delivery time, or the
    # end of a retry backoff.
    available_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    # When the client asked for the message to be delivered (scheduled delivery), or None.
    deliver_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # While processing: when the claim lapses and the recovery sweep may take the message back.
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    # Attempts that ended with their worker lost (a crash, a kill). From the second on, the
    # message may be what kills it: its next attempts run with nothing else in flight.
    worker_losses: Mapped[int] = mapped_column(
        Integer, nullable=False, default=0, server_default="0"
    )
    result: Mapped[Any | None] = mapped_column(JSON)
    # The worker (host:pid) of the last claim: a lost worker's attempt is recorded under it.
    claimed_by: Mapped[str | None] = mapped_column(String(WORKER_LENGTH))
    # Whose message it is: the tenant of the API key that created it.
    tenant: Mapped[str] = mapped_column(String(TENANT_LENGTH), nullable=False)

    __table_args__ = (
        # The database refuses any other status too (migration hygiene_0001).
        CheckConstraint(
            "status IN ({})".format(", ".join(f"'{status}'" for status in MessageStatus)),
            name="ck_messages_status",
        ),
        # Serves a tenant's pages, newest first, with and without the status filter.
        Index("ix_messages_tenant_id", "tenant", "id"),
        Index("ix_messages_tenant_status_id", "tenant", "status", "id"),
        # Serves the status filter (newest first), the lease sweep and the backlog age.
        Index("ix_messages_status_id", "status", "id"),
        # Serves the claims: first attempts in id order, and the few retries on their own.
        Index("ix_messages_status_attempts_id", "status", "attempts", "id"),
        # Serves the sweep's look-ahead: when the next scheduled or backed-off message is due.
        Index("ix_messages_status_available_at", "status", "available_at"),
    )


class AttemptOutcome(StrEnum):
    """How one attempt ended."""

    COMPLETED = "completed"
    FAILED = "failed"  # the message failed: a permanent error, or its last attempt
    RETRIED = "retried"  # a transient error: the message waits for another attempt
    TIMED_OUT = "timed_out"  # overran N3HUB_PROCESS_TIMEOUT; retried, or failed if the last
    RECOVERED = "recovered"  # its worker was lost (a crash): the sweep took the message back
    RELEASED = "released"  # its worker stopped and gave the message back


class MessageAttempt(db.Model):
    """One ended attempt of a message, written in the transaction that recorded its outcome."""

    __tablename__ = "message_attempts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    # Deleted with the message: by the cascade on PostgreSQL, explicitly where SQLite ignores it.
    message_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("messages.id", ondelete="CASCADE"), nullable=False
    )
    # The message's ``attempts`` during this one: a retry by an operator starts again at 1.
    number: Mapped[int] = mapped_column(Integer, nullable=False)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    ended_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    outcome: Mapped[str] = mapped_column(String(16), nullable=False)
    error: Mapped[str | None] = mapped_column(Text)
    worker: Mapped[str | None] = mapped_column(String(WORKER_LENGTH))

    __table_args__ = (
        CheckConstraint(
            "outcome IN ({})".format(", ".join(f"'{outcome}'" for outcome in AttemptOutcome)),
            name="ck_message_attempts_outcome",
        ),
        # Serves a message's attempts in order, and the trimming to the newest ones.
        Index("ix_message_attempts_message_id_id", "message_id", "id"),
    )


class Tally(db.Model):
    """A running count of one tenant, split into shards so concurrent writers rarely share a row.

    Status counts move with every transition; ``processed_*``, ``deleted_*``,
    ``retries`` and ``recoveries`` only grow and back the Prometheus counters. A
    tenant's rows are made with its first API key (:func:`app.tallies.ensure_tenant`).
    """

    __tablename__ = "message_tallies"

    tenant: Mapped[str] = mapped_column(String(TENANT_LENGTH), primary_key=True)
    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    shard: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    value: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)


class IdempotencyKey(db.Model):
    """A tenant's ``Idempotency-Key`` and the message(s) its first request created."""

    __tablename__ = "idempotency_keys"

    # Keys are the tenant's own: another tenant's identical key is another key.
    tenant: Mapped[str] = mapped_column(String(TENANT_LENGTH), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    # SHA-256 of the request's content (or batch): a replay must carry the same.
    fingerprint: Mapped[str] = mapped_column(String(64), nullable=False)
    # The message created (the first one of a batch).
    message_id: Mapped[int] = mapped_column(BigId, nullable=False)
    # A batch's messages in order; NULL for a single message.
    batch_ids: Mapped[list[int] | None] = mapped_column(JSON)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, index=True)


class ApiKey(db.Model):
    """A client's API key: only its SHA-256 is stored, with the tenant and scopes it grants."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    tenant: Mapped[str] = mapped_column(String(TENANT_LENGTH), nullable=False)
    # Comma-separated, e.g. "read,submit".
    scopes: Mapped[str] = mapped_column(String(64), nullable=False)
    key_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    # The key's first characters, so an operator can tell keys apart in ``keys list``.
    prefix: Mapped[str] = mapped_column(String(16), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (UniqueConstraint("key_hash", name="uq_api_keys_key_hash"),)


class ThroughputSnapshot(db.Model):
    """The processed tallies, summed over tenants, as a worker's sweep read them in one minute.

    The console charts the differences between consecutive minutes
    (:mod:`app.activity`); the minute's primary key keeps one snapshot per minute
    however many workers sweep.
    """

    __tablename__ = "throughput_snapshots"

    minute: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    completed: Mapped[int] = mapped_column(BigInteger, nullable=False)
    failed: Mapped[int] = mapped_column(BigInteger, nullable=False)


class WorkerHeartbeat(db.Model):
    """A worker process (``host:pid``) seen alive, its slots and the messages it has in flight."""

    __tablename__ = "worker_heartbeats"

    worker: Mapped[str] = mapped_column(String(255), primary_key=True)
    slots: Mapped[int] = mapped_column(Integer, nullable=False)
    in_flight: Mapped[int] = mapped_column(Integer, nullable=False)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
