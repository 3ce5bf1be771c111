"""Retention: finished messages past their retention are deleted in chunks, counts kept true."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import func, select, update

from app import create_app, lifecycle, retention, tallies
from app.config import load_config
from app.database import read_connection, write_transaction
from app.extensions import db
from app.models import DEFAULT_TENANT, Message, MessageStatus
from tests.conftest import keyed_client, on_every_database, stack_environment, start_worker
from tests.support.metrics import metric_value
from tests.support.polling import wait_for

COMPLETED, FAILED = MessageStatus.COMPLETED, MessageStatus.FAILED
DAY = 86400.0

pytestmark = on_every_database("fresh_database_url")


def finished(status: MessageStatus, ages_in_days: list[float]) -> list[int]:
    """Messages that ended ``status`` that many days ago (written directly, with their tallies)."""
    now = lifecycle.utcnow()
    rows = lifecycle.create_messages([f"{status} {age}" for age in ages_in_days])
    with write_transaction() as connection:
        for row, age in zip(rows, ages_in_days, strict=True):
            connection.execute(
                update(Message)
                .where(Message.id == row["id"])
                .values(status=status, attempts=1, completed_at=now - timedelta(days=age))
            )
        tallies.apply(
            connection,
            {
                (DEFAULT_TENANT, MessageStatus.PENDING): -len(rows),
                (DEFAULT_TENANT, status): len(rows),
            },
        )
    return [row["id"] for row in rows]


def rows_by_status() -> dict[str, int]:
    with read_connection() as connection:
        counted = connection.execute(
            select(Message.status, func.count()).group_by(Message.status)
        ).all()
    return {status: count for status, count in counted}


def assert_tallies_match_rows() -> None:
    with read_connection() as connection:
        counts = tallies.read(connection)
    rows = rows_by_status()
    for status in MessageStatus:
        assert counts.get(status.value, 0) == rows.get(status.value, 0), status


def test_expired_finished_messages_are_deleted_and_counted(isolated_app: Flask) -> None:
    old_completed = finished(COMPLETED, [10, 8])
    kept_completed = finished(COMPLETED, [6, 0.5])
    old_failed = finished(FAILED, [31])
    kept_failed = finished(FAILED, [29])
    periods = {COMPLETED: 7 * DAY, FAILED: 30 * DAY}
    deleted = retention.delete_expired(periods, lifecycle.utcnow())
    assert deleted == {COMPLETED: 2, FAILED: 1}
    with read_connection() as connection:
        remaining = set(connection.execute(select(Message.id)).scalars())
    assert remaining == {*kept_completed, *kept_failed}
    assert not remaining & {*old_completed, *old_failed}
    assert_tallies_match_rows()
    client = keyed_client(isolated_app)
    stats = client.get("/messages/stats").get_json()
    assert (stats["completed"], stats["failed"], stats["total"]) == (2, 1, 3)
    assert metric_value(client, "n3hub_messages_deleted_total", {"status": "completed"}) == 2
    assert metric_value(client, "n3hub_messages_deleted_total", {"status": "failed"}) == 1


def test_zero_keeps_forever(isolated_app: Flask) -> None:
    finished(COMPLETED, [3650])
    finished(FAILED, [3650])
    assert (
        sum(retention.delete_expired({COMPLETED: 0, FAILED: 0}, lifecycle.utcnow()).values()) == 0
    )
    assert rows_by_status() == {"completed": 1, "failed": 1}


def test_pending_and_cancelled_messages_are_never_deleted(isolated_app: Flask) -> None:
    [_, cancelled] = lifecycle.create_messages(["waiting", "cancelled"])
    lifecycle.cancel_pending(cancelled["id"])
    with write_transaction() as connection:
        connection.execute(
            update(Message).values(completed_at=lifecycle.utcnow() - timedelta(days=99))
        )
    retention.delete_expired({COMPLETED: 1.0, FAILED: 1.0}, lifecycle.utcnow())
    assert rows_by_status() == {"pending": 1, "cancelled": 1}


def test_each_pass_deletes_at_most_one_chunk_per_status(
    isolated_app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retention, "CHUNK", 3)
    finished(COMPLETED, [9] * 7)
    periods = {COMPLETED: DAY, FAILED: DAY}
    passes = [retention.delete_expired(periods, lifecycle.utcnow())[COMPLETED] for _ in range(4)]
    assert passes == [3, 3, 1, 0]
    assert_tallies_match_rows()


def test_the_workers_sweep_applies_retention(
    fresh_database_url: str, redis_server, tmp_path: Path
) -> None:
    env = stack_environment(fresh_database_url, redis_server.url, N3HUB_RETENTION_COMPLETED="1")
    app = create_app(load_config(env))
    client = keyed_client(app)
    worker = start_worker(env, tmp_path)
    try:
        ids = [
            client.post("/messages", json={"content": f"m{i}"}).get_json()["id"] for i in range(5)
        ]
        wait_for(
            lambda: client.get("/messages/stats").get_json()["total"] == 0,
            what="the processed messages to be deleted",
        )
        assert all(client.get(f"/messages/{i}").status_code == 404 for i in ids)
        assert metric_value(client, "n3hub_messages_deleted_total", {"status": "completed"}) == 5
        assert metric_value(client, "messages_processed_total", {"status": "completed"}) == 5
    finally:
        worker.stop()
        with app.app_context():
            db.engine.dispose()
