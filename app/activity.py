"""What the workers have been doing, kept in a few rows for the console's overview.

**Throughput.** Once a minute a worker's recovery sweep copies the processed
tallies (completed and failed, summed over tenants) into that minute's row of
``throughput_snapshots``; the difference between two consecutive minutes is what
was processed in the first. Every worker sweeps, so the first sweep of a minute
writes it and the minute's primary key refuses the others. Two hours are kept.

**Heartbeats.** Every :data:`HEARTBEAT_SECONDS` a worker's main process marks
each of its pool processes (``host:pid``) alive in ``worker_heartbeats``, with
its slots (``N3HUB_PROCESS_CONCURRENCY``), and each pool process that has run a
drain writes how many messages it has in flight. A process unseen for
:data:`ALIVE_SECONDS` is no longer listed; its row is deleted an hour later, or
at once when its worker stops.

Both are written with plain ``UPDATE`` and ``INSERT`` (no dialect's upsert), so
they work on every database N3Hub runs on.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from app import tallies
from app.database import read_connection, write_transaction
from app.models import ThroughputSnapshot, WorkerHeartbeat

MINUTE = timedelta(minutes=1)
CHART_MINUTES = 60
SNAPSHOTS_KEPT = timedelta(hours=2)
HEARTBEAT_SECONDS = 5.0
# Three missed heartbeats: a busy database may delay one, hardly three.
ALIVE_SECONDS = 3 * HEARTBEAT_SECONDS
HEARTBEATS_KEPT = timedelta(hours=1)


@dataclass(frozen=True)
class MinuteCounts:
    """Messages whose processing ended in one minute, by outcome."""

    minute: datetime
    completed: int
    failed: int

    @property
    def failure_rate(self) -> float | None:
        """The share of failures among the processed, or None when none was processed."""
        processed = self.completed + self.failed
        return self.failed / processed if processed else None


@dataclass(frozen=True)
class Heartbeat:
    """A worker process seen alive."""

    worker: str
    slots: int
    in_flight: int
    seen_at: datetime


def _minute_of(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def record_throughput(now: datetime) -> bool:
    """Snapshot the processed tallies for the current minute unless it has one; whether it did."""
    minute = _minute_of(now)
    taken = select(ThroughputSnapshot.minute).where(ThroughputSnapshot.minute == minute)
    with read_connection() as connection:
        if connection.execute(taken).first() is not None:
            return False
    try:
        with write_transaction() as connection:
            counts = tallies.read(connection)
            connection.execute(
                insert(ThroughputSnapshot).values(
                    minute=minute,
                    completed=counts.get(tallies.PROCESSED_COMPLETED, 0),
                    failed=counts.get(tallies.PROCESSED_FAILED, 0),
                )
            )
            connection.execute(
                delete(ThroughputSnapshot).where(
                    ThroughputSnapshot.minute < minute - SNAPSHOTS_KEPT
                )
            )
    except IntegrityError:
        return False  # another worker's sweep took this minute's snapshot first
    return True


def throughput(now: datetime) -> list[MinuteCounts]:
    """The last :data:`CHART_MINUTES` whole minutes, oldest first; a minute without data is absent.

    A minute needs the snapshots at its start and at the next minute's start.
    """
    first = _minute_of(now) - CHART_MINUTES * MINUTE
    with read_connection() as connection:
        snapshots = {
            row.minute: row
            for row in connection.execute(
                select(*ThroughputSnapshot.__table__.columns).where(
                    ThroughputSnapshot.minute >= first
                )
            )
        }
    counts = []
    for minute in sorted(snapshots):
        after = snapshots.get(minute + MINUTE)
        if after is not None:
            before = snapshots[minute]
            completed = max(after.completed - before.completed, 0)
            failed = max(after.failed - before.failed, 0)
            counts.append(MinuteCounts(minute, completed, failed))
    return counts


def process_name(pid: int | None = None) -> str:
    """How a worker process is named in its heartbeat: ``host:pid``."""
    return f"{socket.gethostname()}:{pid or os.getpid()}"


def beat(pids: Iterable[int], slots: int, now: datetime) -> None:
    """Mark these processes of this host alive with their slots, and prune long-gone ones."""
    with write_transaction() as connection:
        for pid in pids:
            worker = process_name(pid)
            seen = connection.execute(
                update(WorkerHeartbeat)
                .where(WorkerHeartbeat.worker == worker)
                .values(slots=slots, seen_at=now)
            )
            if not seen.rowcount:
                connection.execute(
                    insert(WorkerHeartbeat).values(
                        worker=worker, slots=slots, in_flight=0, seen_at=now
                    )
                )
        connection.execute(
            delete(WorkerHeartbeat).where(WorkerHeartbeat.seen_at < now - HEARTBEATS_KEPT)
        )


def report_in_flight(in_flight: int) -> None:
    """Record how many messages this process has in flight (its worker marks it alive)."""
    with write_transaction() as connection:
        connection.execute(
            update(WorkerHeartbeat)
            .where(WorkerHeartbeat.worker == process_name())
            .values(in_flight=in_flight)
        )


def forget(pids: Iterable[int]) -> None:
    """Delete the heartbeats of these processes of this host: their worker stopped."""
    workers = [process_name(pid) for pid in pids]
    with write_transaction() as connection:
        connection.execute(delete(WorkerHeartbeat).where(WorkerHeartbeat.worker.in_(workers)))


def alive(now: datetime) -> list[Heartbeat]:
    """The worker processes seen within :data:`ALIVE_SECONDS`, by name."""
    since = now - timedelta(seconds=ALIVE_SECONDS)
    with read_connection() as connection:
        rows = connection.execute(
            select(*WorkerHeartbeat.__table__.columns)
            .where(WorkerHeartbeat.seen_at >= since)
            .order_by(WorkerHeartbeat.worker)
        )
        return [Heartbeat(row.worker, row.slots, row.in_flight, row.seen_at) for row in rows]
