"""The console's activity records and the created-time search, on real databases."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask
from sqlalchemy import delete, select, update

from app import activity, queries, tallies
from app.database import read_connection, write_transaction
from app.lifecycle import create_batch
from app.models import DEFAULT_TENANT, Message, ThroughputSnapshot

NOON = datetime(2026, 12, 1, 12, 0, 30, tzinfo=UTC)


def processed(completed: int, failed: int) -> None:
    with write_transaction() as connection:
        tallies.apply(
            connection,
            {
                (DEFAULT_TENANT, tallies.PROCESSED_COMPLETED): completed,
                (DEFAULT_TENANT, tallies.PROCESSED_FAILED): failed,
            },
        )


def test_one_snapshot_a_minute_and_the_hour_as_differences(isolated_app: Flask) -> None:
    assert activity.record_throughput(NOON - timedelta(minutes=3))
    processed(50, 10)
    assert activity.record_throughput(NOON - timedelta(minutes=2))
    assert not activity.record_throughput(NOON - timedelta(minutes=2, seconds=-20))
    processed(30, 0)
    assert activity.record_throughput(NOON - timedelta(minutes=1))
    # No snapshot at NOON's minute: the minute before it has no end yet.
    minutes = activity.throughput(NOON)
    assert [(m.minute.strftime("%H:%M"), m.completed, m.failed) for m in minutes] == [
        ("11:57", 50, 10),
        ("11:58", 30, 0),
    ]
    assert minutes[0].failure_rate == 10 / 60 and minutes[1].failure_rate == 0
    assert activity.MinuteCounts(NOON, 0, 0).failure_rate is None


def test_a_minute_another_worker_took_is_left_as_it_is(isolated_app: Flask) -> None:
    minute = NOON.replace(second=0)
    with write_transaction() as connection:
        connection.execute(
            ThroughputSnapshot.__table__.insert().values(minute=minute, completed=7, failed=1)
        )
    assert not activity.record_throughput(NOON)
    with read_connection() as connection:
        assert connection.execute(select(ThroughputSnapshot.completed)).scalars().all() == [7]


def test_snapshots_older_than_two_hours_are_deleted(isolated_app: Flask) -> None:
    activity.record_throughput(NOON - timedelta(hours=3))
    activity.record_throughput(NOON - timedelta(hours=1))
    activity.record_throughput(NOON)
    with read_connection() as connection:
        kept = connection.execute(select(ThroughputSnapshot.minute)).scalars().all()
    assert sorted(kept) == [NOON.replace(second=0) - timedelta(hours=1), NOON.replace(second=0)]


def test_heartbeats_list_the_processes_seen_lately(isolated_app: Flask) -> None:
    me, other = os.getpid(), os.getpid() + 1
    activity.beat([me, other], 500, NOON - timedelta(seconds=60))
    activity.beat([me], 500, NOON)
    activity.report_in_flight(37)
    alive = activity.alive(NOON + timedelta(seconds=1))
    assert [(b.worker, b.in_flight, b.slots) for b in alive] == [
        (activity.process_name(me), 37, 500)
    ]
    activity.beat([me], 500, NOON + timedelta(seconds=5))
    assert activity.alive(NOON + timedelta(seconds=6))[0].in_flight == 37  # kept by the beat
    activity.beat([me], 500, NOON + timedelta(hours=2))  # prunes the long-gone one
    activity.forget([me])
    assert activity.alive(NOON + timedelta(hours=2)) == []


def stored_at(times: list[datetime]) -> list[int]:
    """Messages created at these times, in this order."""
    rows, _ = create_batch(["m"] * len(times), None, DEFAULT_TENANT)
    ids = [row["id"] for row in rows]
    with write_transaction() as connection:
        for message_id, moment in zip(ids, times, strict=True):
            connection.execute(
                update(Message).where(Message.id == message_id).values(created_at=moment)
            )
    return ids


@pytest.mark.parametrize(
    "minutes",
    [
        pytest.param([n for n in range(40)], id="steady"),
        pytest.param([n**3 for n in range(40)], id="accelerating"),
        pytest.param([0] * 20 + [10_000 + n for n in range(20)], id="burst"),
    ],
)
def test_the_created_time_search_finds_the_first_id_across_gaps(
    isolated_app: Flask, minutes: list[int]
) -> None:
    times = [NOON + timedelta(minutes=n) for n in minutes]
    ids = stored_at(times)
    gone = ids[5:25]
    with write_transaction() as connection:
        connection.execute(delete(Message).where(Message.id.in_(gone)))
    with read_connection() as connection:
        probes = sorted(set(times) | {t + timedelta(seconds=30) for t in times})
        for index, moment in enumerate(probes):
            expected = next(
                (i for i, t in zip(ids, times, strict=True) if t >= moment and i not in gone),
                None,
            )
            assert queries.first_id_created_from(connection, moment) == expected, index
        assert queries.first_id_created_from(connection, NOON - timedelta(days=1)) == ids[0]
        assert queries.first_id_created_from(connection, times[-1] + timedelta(seconds=1)) is None


def test_a_page_holds_the_created_range_only(isolated_app: Flask) -> None:
    ids = stored_at([NOON + timedelta(minutes=n) for n in range(10)])

    def listed(since: int | None, until: int | None, before: int | None = None) -> list[int]:
        created = queries.CreatedRange(
            since=NOON + timedelta(minutes=since) if since is not None else None,
            until=NOON + timedelta(minutes=until) if until is not None else None,
        )
        page = queries.list_messages(3, before, None, created=created)
        return [row["id"] for row in page.messages]

    assert listed(2, 6) == ids[5:2:-1]
    assert listed(2, 6, before=ids[3]) == [ids[2]]
    assert listed(None, 2) == ids[1::-1]
    assert listed(8, None) == ids[:7:-1]
    assert listed(20, None) == []
    assert listed(None, 20) == ids[:6:-1]
