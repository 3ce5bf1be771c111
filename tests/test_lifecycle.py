"""Status transitions against a real database: atomic claims, fencing, leases, retries."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import String, bindparam, cast, insert, select, update
from sqlalchemy.engine import Dialect

from app import ingest, lifecycle, mysql, pending_rows, queries
from app.database import driver_write_transaction, read_connection, write_transaction
from app.lifecycle import Outcome, RetryPolicy
from app.models import DEFAULT_TENANT, Message, MessageStatus
from tests.conftest import on_every_database
from tests.support.polling import wait_for

pytestmark = [pytest.mark.usefixtures("isolated_app"), on_every_database("fresh_database_url")]

POLICY = RetryPolicy(max_attempts=3, base_delay=0.0, max_delay=0.0)


def expire_leases() -> None:
    with write_transaction() as connection:
        connection.execute(
            update(Message)
            .where(Message.status == "processing")
            .values(lease_expires_at=lifecycle.utcnow() - timedelta(seconds=1))
        )


def claim(limit: int, *, idle: bool = True) -> list[lifecycle.ClaimedMessage]:
    return lifecycle.claim_messages(limit, 30, idle=idle).messages


def row(message_id: int) -> dict:
    message = queries.get_message(message_id)
    assert message is not None
    return message


def stats_add_up() -> dict:
    stats = queries.message_stats()
    with read_connection() as connection:
        rows = connection.execute(select(Message.status)).scalars().all()
    for status in MessageStatus:
        assert stats[status] == rows.count(status), (status, stats)
    return stats


def test_concurrent_claims_never_share_a_message(isolated_app: Flask) -> None:
    ids = {lifecycle.create_message(f"m{i}")[0]["id"] for i in range(300)}
    claimed: list[int] = []
    lock = threading.Lock()

    def claimer() -> None:
        with isolated_app.app_context():
            while batch := claim(7):
                with lock:
                    claimed.extend(message.id for message in batch)

    threads = [threading.Thread(target=claimer) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(claimed) == sorted(ids)
    assert stats_add_up()["processing"] == 300


def test_late_finisher_cannot_overwrite_a_newer_attempt() -> None:
    message_id = lifecycle.create_message("x")[0]["id"]
    [first] = claim(10)
    expire_leases()
    assert lifecycle.recover_expired_leases(POLICY) == {"pending": 1}
    [second] = claim(10)
    assert (first.attempts, second.attempts) == (1, 2)
    stale = lifecycle.finish_batch([Outcome(first, result={"from": "first"})], POLICY)
    assert stale.stale == 1 and stale.completed == 0
    assert row(message_id)["status"] == "processing"
    fresh = lifecycle.finish_batch([Outcome(second, result={"from": "second"})], POLICY)
    assert fresh.completed == 1
    assert row(message_id)["result"] == {"from": "second"}
    assert lifecycle.finish_batch([Outcome(second, result={"again": 1})], POLICY).stale == 1
    assert row(message_id)["result"] == {"from": "second"}
    stats = stats_add_up()
    assert stats["completed"] == 1


def test_a_batch_with_a_stale_claim_writes_and_counts_the_others() -> None:
    for number in range(3):
        lifecycle.create_message(f"m{number}")
    taken_back, done, bad = claim(10)
    with write_transaction() as connection:
        connection.execute(
            update(Message)
            .where(Message.id == taken_back.id)
            .values(lease_expires_at=lifecycle.utcnow() - timedelta(seconds=1))
        )
    assert lifecycle.recover_expired_leases(POLICY) == {"pending": 1}
    [again] = claim(10)
    report = lifecycle.finish_batch(
        [
            Outcome(taken_back, result={"late": True}),
            Outcome(done, result={"ok": True}),
            Outcome(bad, error="ValueError: bad", permanent=True),
        ],
        POLICY,
    )
    assert (report.completed, report.failed, report.retried, report.stale) == (1, 1, 0, 1)
    assert [row(message.id)["status"] for message in (again, done, bad)] == [
        "processing",
        "completed",
        "failed",
    ]
    assert row(again.id)["result"] is None
    stats = stats_add_up()
    assert (stats["processing"], stats["completed"], stats["failed"]) == (1, 1, 1)


def test_recovery_counts_as_an_attempt_and_ends_failed() -> None:
    message_id = lifecycle.create_message("crash every time")[0]["id"]
    for attempt in range(1, POLICY.max_attempts + 1):
        [claimed] = claim(10)
        assert claimed.attempts == attempt
        expire_leases()
        lifecycle.recover_expired_leases(POLICY)
    body = row(message_id)
    assert body["status"] == "failed"
    assert "lease expired" in body["last_error"]
    assert claim(10) == []
    stats_add_up()


def test_live_lease_is_not_recovered() -> None:
    lifecycle.create_message("busy")
    claim(10)
    assert lifecycle.recover_expired_leases(POLICY) == {}
    assert stats_add_up()["processing"] == 1


def test_extended_lease_outlives_the_original() -> None:
    lifecycle.create_message("slow")
    [claimed] = claim(10)
    expire_leases()
    lifecycle.extend_leases([claimed], 30)
    assert lifecycle.recover_expired_leases(POLICY) == {}


def test_a_retried_message_is_claimed_first_with_new_ones() -> None:
    first_id = lifecycle.create_message("retry me")[0]["id"]
    [claimed] = claim(10)
    lifecycle.finish_batch([Outcome(claimed, error="transient")], POLICY)
    fresh = [lifecycle.create_message(f"fresh {i}")[0]["id"] for i in range(5)]
    together = claim(3)
    assert [(m.id, m.attempts) for m in together] == [(first_id, 2), (fresh[0], 1), (fresh[1], 1)]
    stats_add_up()


def test_a_message_that_lost_its_worker_once_runs_with_others() -> None:
    lost_id = lifecycle.create_message("in flight when its worker was killed")[0]["id"]
    claim(10)
    expire_leases()
    lifecycle.recover_expired_leases(POLICY)
    healthy_id = lifecycle.create_message("healthy")[0]["id"]
    again = lifecycle.claim_messages(10, 30, idle=False)
    assert [(m.id, m.attempts) for m in again.messages] == [(lost_id, 2), (healthy_id, 1)]
    assert not again.alone
    stats_add_up()


def test_a_message_that_lost_its_worker_twice_runs_alone_in_an_idle_worker() -> None:
    lost_id = lifecycle.create_message("killed its worker")[0]["id"]
    for _ in range(lifecycle.RUN_ALONE_AFTER_WORKER_LOSSES):
        claim(10)
        expire_leases()
        lifecycle.recover_expired_leases(POLICY)
    lifecycle.create_message("healthy 1")
    busy = lifecycle.claim_messages(10, 30, idle=False)
    assert (busy.messages, busy.alone, busy.alone_waiting) == ([], False, True)
    idle = lifecycle.claim_messages(10, 30, idle=True)
    assert [(m.id, m.attempts) for m in idle.messages] == [(lost_id, 3)]
    assert idle.alone
    assert [m.content for m in claim(10, idle=False)] == ["healthy 1"]
    stats_add_up()


def test_released_claims_go_back_to_pending_at_once_with_the_attempt_counted() -> None:
    for number in range(3):
        lifecycle.create_message(f"in flight {number}")
    claimed = claim(10)
    assert lifecycle.release_claims(claimed[:2], "worker stopped during attempt") == 2
    assert [row(m.id)["status"] for m in claimed] == ["pending", "pending", "processing"]
    assert row(claimed[0].id)["last_error"] == "worker stopped during attempt"
    again = claim(10, idle=False)
    assert [(m.id, m.attempts) for m in again] == [(m.id, 2) for m in claimed[:2]]
    stats_add_up()


def test_a_finished_batch_stores_each_result_and_error_exactly() -> None:
    """On MySQL a batch's outcomes go in one joined UPDATE per status; nothing may shift."""
    results: list[Any] = [None, {"nested": [1, "🎉", None]}, "text  ", 3.5, [], {"": ""}]
    for number in range(len(results) + 2):
        lifecycle.create_message(f"m{number}")
    batch = claim(20)
    done, (failed, retried) = batch[: len(results)], batch[len(results) :]
    outcomes = [
        Outcome(message, result=result) for message, result in zip(done, results, strict=True)
    ]
    outcomes += [
        Outcome(failed, error="ValueError: 'quoted' \\ and 漢字", permanent=True),
        Outcome(retried, error="later  "),
    ]
    report = lifecycle.finish_batch(outcomes, POLICY)
    assert (report.completed, report.failed, report.retried) == (len(results), 1, 1)
    for message, result in zip(done, results, strict=True):
        body = row(message.id)
        assert (body["status"], body["result"]) == ("completed", result)
        assert body["completed_at"] == body["updated_at"] == row(done[0].id)["completed_at"]
        assert body["lease_expires_at"] is None
    assert row(failed.id)["last_error"] == "ValueError: 'quoted' \\ and 漢字"
    pending = row(retried.id)
    assert (pending["status"], pending["last_error"]) == ("pending", "later  ")
    assert pending["available_at"] >= pending["updated_at"]
    stats_add_up()


def test_outcomes_move_tallies_and_processed_counters() -> None:
    for content in ("ok", "permanent", "transient"):
        lifecycle.create_message(content)
    batch = claim(10)
    report = lifecycle.finish_batch(
        [
            Outcome(batch[0], result={}),
            Outcome(batch[1], error="bad", permanent=True),
            Outcome(batch[2], error="later"),
        ],
        POLICY,
    )
    assert (report.completed, report.failed, report.retried) == (1, 1, 1)
    assert stats_add_up() == {
        "total": 3,
        "pending": 1,
        "processing": 0,
        "completed": 1,
        "failed": 1,
        "cancelled": 0,
    }


def test_retry_policy_backoff_is_exponential_with_jitter() -> None:
    policy = RetryPolicy(max_attempts=5, base_delay=1.0, max_delay=8.0)
    for attempts, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 8.0)]:
        delays = {policy.delay(attempts) for _ in range(50)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(delays) > 1
    assert policy.exhausted(5) and not policy.exhausted(4)


def test_expired_idempotency_keys_are_purged_and_reusable() -> None:
    request = lifecycle.IdempotentRequest("k", ttl_seconds=0.001)
    first, created = lifecycle.create_message("a", request)
    assert created
    second, created_again = lifecycle.create_message("b", request)
    assert created_again and second["id"] != first["id"]
    assert lifecycle.purge_expired_idempotency_keys() == 1


def test_group_commit_gives_each_concurrent_caller_its_own_row(isolated_app: Flask) -> None:
    group_commit = isolated_app.extensions["group_commit"]
    rows: list[dict] = []
    lock = threading.Lock()

    def create_many(thread: int) -> None:
        with isolated_app.app_context():
            for i in range(50):
                row = group_commit.create(DEFAULT_TENANT, f"{thread}-{i}")
                with lock:
                    rows.append(row)

    threads = [threading.Thread(target=create_many, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len({row["id"] for row in rows}) == 400
    assert {row["content"] for row in rows} == {f"{t}-{i}" for t in range(8) for i in range(50)}
    for row in rows:
        assert queries.get_message(row["id"])["content"] == row["content"]
    assert stats_add_up()["pending"] == 400


class SteppedTime:
    """Stands in for ``time`` in :mod:`app.ingest`: a clock that moves only when slept on.

    ``sleep(0)``, the leader's yield to the others, runs ``on_yield`` instead.
    """

    def __init__(self) -> None:
        self.now = 1000.0
        self.waits: list[float] = []
        self.on_yield: Callable[[], None] = lambda: None

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        if seconds == 0:
            self.on_yield()
            return
        self.waits.append(seconds)
        self.now += seconds


def test_group_commit_gathers_only_after_a_group_of_several(
    isolated_app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = SteppedTime()
    monkeypatch.setattr(ingest, "time", clock)
    group_commit = ingest.GroupCommit(gather_seconds=0.5)
    joined: list[dict] = []

    def join_from_another_thread() -> None:
        def create() -> None:
            with isolated_app.app_context():
                joined.append(group_commit.create(DEFAULT_TENANT, "second"))

        threading.Thread(target=create).start()
        wait_for(lambda: len(group_commit._queue) == 2, timeout=10)
        clock.on_yield = lambda: None

    clock.on_yield = join_from_another_thread
    first = group_commit.create(DEFAULT_TENANT, "first")  # a group of two: the next leader gathers
    wait_for(lambda: len(joined) == 1, timeout=10)
    assert joined[0]["created_at"] == first["created_at"]
    assert clock.waits == []
    clock.now += 0.1
    third = group_commit.create(DEFAULT_TENANT, "third")
    assert clock.waits == [pytest.approx(0.4)]  # the rest of the gather after the group's start
    group_commit.create(DEFAULT_TENANT, "fourth")  # after a group of one: no wait
    assert clock.waits == [pytest.approx(0.4)]
    assert third["created_at"] != first["created_at"]
    assert stats_add_up()["pending"] == 4


def claim_step(statements: Any, dialect: Dialect) -> Any:
    """The statement that picks a claim's rows: the UPDATE, or MySQL's locking SELECT."""
    return statements.lock if mysql.is_mysql(dialect) else statements.update


def sweep_check(retried: bool) -> Any:
    """The statement the recovery sweep runs to see whether anything is due."""
    return lifecycle._due(retried=retried, now=bindparam("m_now")).limit(1)


@pytest.mark.parametrize(
    "statement",
    [
        pytest.param(lambda d: claim_step(lifecycle._claim_retried_safely, d), id="claim-retried"),
        pytest.param(
            lambda d: claim_step(lifecycle._claim_after_lost_worker, d), id="claim-lost-worker"
        ),
        pytest.param(lambda d: claim_step(lifecycle._claim_new, d), id="claim-new"),
        pytest.param(lambda _: sweep_check(retried=True), id="due-retried"),
        pytest.param(lambda _: sweep_check(retried=False), id="due-new"),
    ],
)
def test_claims_use_the_claim_index_even_with_stale_statistics(
    statement: Callable[[Dialect], Any],
) -> None:
    """Right after a backlog drains, the planner's statistics still say most rows are pending.

    By id order alone PostgreSQL then scanned the primary key through every
    completed row for each claim; claims and the sweep's check must stay on
    the claim index.
    """
    for _ in range(5):
        lifecycle.create_messages(["drained backlog"] * 1000)
    with write_transaction() as connection:
        table = "TABLE messages" if mysql.is_mysql(connection.dialect) else "messages"
        connection.exec_driver_sql(f"ANALYZE {table}")
    with write_transaction() as connection:
        connection.execute(update(Message).values(status="completed", attempts=1))
        compiled = statement(connection.dialect).compile(dialect=connection.dialect)
        now = lifecycle.utcnow().replace(tzinfo=None).isoformat(sep=" ")
        values = compiled.construct_params(
            {"m_now": now, "m_limit": 200, "m_lease": now, "m_worker": "host:1"}
        )
        explain = "EXPLAIN QUERY PLAN" if connection.dialect.name == "sqlite" else "EXPLAIN"
        if compiled.positiontup is not None:  # SQLite's qmark style
            values = tuple(values[name] for name in compiled.positiontup)
        plan = connection.exec_driver_sql(f"{explain} {compiled}", values).all()
    assert "ix_messages_status_attempts_id" in str(plan), plan


def test_the_ingest_stores_timestamps_exactly_as_sqlalchemy_does() -> None:
    # Whole seconds: the case where Python's own datetime text and SQLAlchemy's differ.
    now = datetime(2026, 11, 29, 10, 0, 0, tzinfo=UTC)
    with driver_write_transaction() as (connection, dialect):
        [ingested] = pending_rows.insert(
            connection, dialect, [(DEFAULT_TENANT, "through the ingest")], now
        )
    with write_transaction() as connection:
        through_core = connection.execute(
            insert(Message)
            .values(content="through SQLAlchemy", status="pending", attempts=0)
            .values(created_at=now, updated_at=now, available_at=now)
        ).inserted_primary_key[0]
    with read_connection() as connection:
        stored = dict(
            connection.execute(
                select(Message.id, cast(Message.created_at, String)).where(
                    Message.id.in_([ingested["id"], through_core])
                )
            ).all()
        )
    assert stored[ingested["id"]] == stored[through_core]
    assert row(ingested["id"])["created_at"] == now
