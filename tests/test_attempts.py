"""Attempt history: every ended attempt recorded with its outcome, bounded, read by its tenant."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select, update

from app import attempts, lifecycle, queries, retention
from app.auth.keys import Scope
from app.database import read_connection, write_transaction
from app.lifecycle import Outcome, RetryPolicy
from app.models import Message, MessageAttempt, MessageStatus
from tests.conftest import keyed_client, make_api_key, on_every_database
from tests.test_console import log_in
from tests.test_processing import create, wait_settled

POLICY = RetryPolicy(max_attempts=3, base_delay=0.0, max_delay=0.0)


def isolated(test: Callable[..., None]) -> Callable[..., None]:
    """A test on a database of its own, run on each database (MySQL too: the SQL differs)."""
    return on_every_database("fresh_database_url")(pytest.mark.usefixtures("isolated_app")(test))


def claim() -> dict[int, lifecycle.ClaimedMessage]:
    return {m.id: m for m in lifecycle.claim_messages(10, 30, idle=True).messages}


def history(message_id: int) -> list[tuple[int, str]]:
    return [(a["number"], a["outcome"]) for a in queries.get_attempts(message_id)]


def expire_leases() -> None:
    with write_transaction() as connection:
        connection.execute(
            update(Message)
            .where(Message.status == MessageStatus.PROCESSING)
            .values(lease_expires_at=lifecycle.utcnow() - timedelta(seconds=1))
        )


@isolated
def test_each_outcome_of_a_run_is_recorded_with_its_claim_and_worker() -> None:
    ok, later, never, slow, last = (
        lifecycle.create_message(content)[0]["id"]
        for content in ("ok", "later", "never", "slow", "last")
    )
    claimed = claim()
    started = {i: queries.get_message(i)["started_at"] for i in claimed}
    last_one = claimed[last]
    with write_transaction() as connection:  # its last attempt
        connection.execute(update(Message).where(Message.id == last).values(attempts=3))
    outcomes = [
        Outcome(claimed[ok], result={"fine": True}),
        Outcome(claimed[later], error="OSError: try again"),
        Outcome(claimed[never], error="ValueError: bad", permanent=True),
        Outcome(claimed[slow], error="TimeoutError: too slow", timed_out=True),
        Outcome(lifecycle.ClaimedMessage(last, "last", 3, last_one.created_at), error="E: out"),
    ]
    report = lifecycle.finish_batch(outcomes, POLICY)
    assert (report.completed, report.failed, report.retried, report.stale) == (1, 2, 2, 0)
    assert history(ok) == [(1, "completed")]
    assert history(later) == [(1, "retried")]
    assert history(never) == [(1, "failed")]
    assert history(slow) == [(1, "timed_out")]
    assert history(last) == [(3, "failed")]
    for outcome in outcomes:
        [attempt] = queries.get_attempts(outcome.message.id)
        assert attempt["started_at"] == started[outcome.message.id]
        assert attempt["ended_at"] == outcome.ended_at >= attempt["started_at"]
        assert attempt["error"] == outcome.error
        assert attempt["worker"] == attempts.worker_name()
    assert attempts.worker_name().endswith(f":{os.getpid()}")


@isolated
def test_a_lost_worker_is_recorded_once_and_its_late_outcome_not_at_all() -> None:
    message_id = lifecycle.create_message("x")[0]["id"]
    [first] = claim().values()
    expire_leases()
    assert lifecycle.recover_expired_leases(POLICY) == {"pending": 1}
    [second] = claim().values()
    assert lifecycle.finish_batch([Outcome(first, result=1)], POLICY).stale == 1
    assert lifecycle.finish_batch([Outcome(second, result=2)], POLICY).completed == 1
    assert history(message_id) == [(1, "recovered"), (2, "completed")]
    recovered = queries.get_attempts(message_id)[0]
    assert recovered["error"] == "worker lost during attempt 1 (lease expired)"
    assert recovered["worker"] == attempts.worker_name()  # the claim's, not the sweep's


@isolated
def test_a_stopping_worker_records_its_claims_as_released() -> None:
    ids = [row["id"] for row in lifecycle.create_messages(["a", "b"])]
    assert lifecycle.release_claims(list(claim().values()), "worker stopped during attempt") == 2
    assert [history(i) for i in ids] == [[(1, "released")]] * 2
    assert queries.get_attempts(ids[0])[0]["error"] == "worker stopped during attempt"


@isolated
def test_only_the_newest_attempts_are_kept_across_retries(isolated_app: Flask) -> None:
    isolated_app.config["ATTEMPTS_KEPT"] = 3
    message_id = lifecycle.create_message("x")[0]["id"]
    for _ in range(3):
        [message] = claim().values()
        lifecycle.finish_batch([Outcome(message, error="E: again")], POLICY)
    assert lifecycle.retry_failed(message_id) is not None
    [message] = claim().values()
    lifecycle.finish_batch([Outcome(message, result=1)], POLICY)
    assert history(message_id) == [(2, "retried"), (3, "failed"), (1, "completed")]


@isolated
def test_a_batch_trims_each_of_its_messages_to_the_newest_kept(isolated_app: Flask) -> None:
    isolated_app.config["ATTEMPTS_KEPT"] = 2
    ids = [row["id"] for row in lifecycle.create_messages(["a", "b", "c"])]
    for _ in range(3):
        claimed = claim()
        assert sorted(claimed) == ids
        outcomes = [Outcome(message, error="E: again") for message in claimed.values()]
        lifecycle.finish_batch(outcomes, POLICY)
    assert [history(i) for i in ids] == [[(2, "retried"), (3, "failed")]] * 3


@isolated
def test_retention_deletes_a_message_with_its_attempts() -> None:
    message_id = lifecycle.create_message("x")[0]["id"]
    lifecycle.finish_batch([Outcome(claim()[message_id], result=1)], POLICY)
    periods = {MessageStatus.COMPLETED: 1.0}
    later = lifecycle.utcnow() + timedelta(seconds=10)
    assert retention.delete_expired(periods, later) == {"completed": 1}
    with read_connection() as connection:
        assert connection.execute(select(func.count()).select_from(MessageAttempt)).scalar() == 0


def process(app: Flask, message_id: int, *outcomes: dict[str, Any]) -> None:
    """Run ``message_id``'s next attempts in this process, ending as ``outcomes`` say."""
    with app.app_context():
        for outcome in outcomes:
            lifecycle.finish_batch([Outcome(claim()[message_id], **outcome)], POLICY)


def test_the_attempts_of_a_message_are_read_by_its_tenant_only(
    app: Flask, client: FlaskClient
) -> None:
    readers = frozenset({Scope.SUBMIT, Scope.READ})
    acme = keyed_client(app, make_api_key(app, "acme", readers))
    globex = keyed_client(app, make_api_key(app, "globex", readers))
    submitter = keyed_client(app, make_api_key(app, "acme", frozenset({Scope.SUBMIT})))
    admin = keyed_client(app, make_api_key(app, "ops", frozenset(Scope)))
    message_id = acme.post("/messages", json={"content": "x"}).get_json()["id"]
    assert acme.get(f"/messages/{message_id}/attempts").get_json()["attempts"] == []
    process(app, message_id, {"error": "OSError: flaky"}, {"result": {"ok": 1}})

    response = acme.get(f"/messages/{message_id}/attempts")
    assert response.status_code == 200
    body = response.get_json()
    assert body["message_id"] == message_id
    retried, completed = body["attempts"]
    assert [retried["number"], retried["outcome"], retried["error"]] == [
        1,
        "retried",
        "OSError: flaky",
    ]
    assert [completed["number"], completed["outcome"], completed["error"]] == [2, "completed", None]
    assert completed["worker"] == attempts.worker_name()
    assert completed["duration_seconds"] >= 0
    assert completed["started_at"] <= completed["ended_at"]
    assert set(completed) == {
        "number", "started_at", "ended_at", "duration_seconds", "outcome", "error", "worker"
    }  # fmt: skip

    assert admin.get(f"/messages/{message_id}/attempts").get_json() == body
    assert globex.get(f"/messages/{message_id}/attempts").status_code == 404
    assert admin.get(f"/messages/{message_id}/attempts?tenant=globex").status_code == 404
    assert acme.get(f"/messages/{message_id}/attempts?tenant=globex").status_code == 403
    assert submitter.get(f"/messages/{message_id}/attempts").status_code == 403
    assert acme.get(f"/messages/{message_id + 1}/attempts").status_code == 404


def test_the_console_shows_a_messages_attempts(app: Flask, client: FlaskClient) -> None:
    message_id = client.post("/messages", json={"content": "x"}).get_json()["id"]
    process(app, message_id, {"error": "OSError: <flaky>"}, {"result": 1})
    browser = app.test_client()
    assert log_in(browser, make_api_key(app))[0] == 302
    page = browser.get(f"/console/messages/{message_id}").get_data(as_text=True)
    rows = re.findall(r'<tr class="attempt">(.*?)</tr>', page, re.S)
    assert len(rows) == 2
    assert "retried" in rows[0] and "OSError: &lt;flaky&gt;" in rows[0]
    assert "completed" in rows[1] and attempts.worker_name() in rows[1]


@on_every_database("worker_database_url")
def test_a_worker_records_the_attempts_it_runs(
    worker_app: Flask, worker_client: FlaskClient
) -> None:
    message_id = create(worker_client, "fail-transient:1 flaky")
    assert wait_settled(worker_client, message_id)["status"] == "completed"
    body = worker_client.get(f"/messages/{message_id}/attempts").get_json()
    assert [(a["number"], a["outcome"]) for a in body["attempts"]] == [
        (1, "retried"),
        (2, "completed"),
    ]
    assert "planned transient failure on attempt 1" in body["attempts"][0]["error"]
    for attempt in body["attempts"]:
        host, pid = attempt["worker"].rsplit(":", 1)
        assert host and int(pid) != os.getpid()
