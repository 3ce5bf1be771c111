"""Operator actions and scheduled delivery over the API: cancel, deliver_at, delay_seconds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app import lifecycle
from app.auth.keys import Scope
from app.worker.sweep import sweep_once
from tests.conftest import keyed_client, make_api_key
from tests.support.metrics import metric_value
from tests.test_api import assert_error

AN_HOUR = 3600


def schedule(client: FlaskClient, content: str, **timing: object) -> dict:
    response = client.post("/messages", json={"content": content, **timing})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def test_cancel_turns_a_pending_message_cancelled_and_counts_it(client: FlaskClient) -> None:
    created = schedule(client, "later", delay_seconds=AN_HOUR)
    response = client.post(f"/messages/{created['id']}/cancel")
    assert response.status_code == 200
    assert response.get_json()["status"] == "cancelled"
    assert client.get(f"/messages/{created['id']}").get_json()["status"] == "cancelled"
    stats = client.get("/messages/stats").get_json()
    assert (stats["cancelled"], stats["pending"], stats["total"]) == (1, 0, 1)
    assert metric_value(client, "n3hub_messages", {"status": "cancelled"}) == 1
    listed = client.get("/messages?status=cancelled").get_json()["messages"]
    assert [m["id"] for m in listed] == [created["id"]]


def test_cancel_of_a_message_not_pending_is_409(client: FlaskClient) -> None:
    created = schedule(client, "later", delay_seconds=AN_HOUR)
    assert client.post(f"/messages/{created['id']}/cancel").status_code == 200
    error = assert_error(client.post(f"/messages/{created['id']}/cancel"), 409, "conflict")
    assert error["details"] == {"status": "cancelled", "required_status": "pending"}
    assert_error(client.post("/messages/424242/cancel"), 404, "not_found")
    assert client.get("/messages/stats").get_json()["cancelled"] == 1


def test_cancel_needs_the_admin_scope(client: FlaskClient, app: Flask) -> None:
    created = schedule(client, "later", delay_seconds=AN_HOUR)
    submitter = keyed_client(app, make_api_key(app, scopes=frozenset({Scope.SUBMIT, Scope.READ})))
    error = assert_error(submitter.post(f"/messages/{created['id']}/cancel"), 403, "forbidden")
    assert error["details"] == {"required_scope": "admin"}


def test_deliver_at_is_kept_and_holds_the_message_back(client: FlaskClient, app: Flask) -> None:
    local = timezone(timedelta(hours=2))
    when = (datetime.now(UTC) + timedelta(hours=1)).astimezone(local).replace(microsecond=0)
    created = schedule(client, "at a time", deliver_at=when.isoformat())
    assert created["status"] == "pending"
    assert datetime.fromisoformat(created["deliver_at"]) == when
    assert created["deliver_at"].endswith("+00:00")
    fetched = client.get(f"/messages/{created['id']}").get_json()
    assert fetched["deliver_at"] == created["deliver_at"]
    with app.app_context():
        assert not lifecycle.pending_work_due()
        assert lifecycle.next_due_at() == when


def test_delay_seconds_is_counted_from_the_request(client: FlaskClient) -> None:
    before = datetime.now(UTC)
    created = schedule(client, "after a delay", delay_seconds=90.5)
    deliver_at = datetime.fromisoformat(created["deliver_at"])
    assert (
        before + timedelta(seconds=90.5)
        <= deliver_at
        <= datetime.now(UTC) + timedelta(seconds=90.5)
    )
    assert schedule(client, "plain")["deliver_at"] is None


def test_a_past_deliver_at_is_due_at_once(client: FlaskClient, app: Flask) -> None:
    when = datetime.now(UTC) - timedelta(minutes=5)
    created = schedule(client, "overdue", deliver_at=when.isoformat())
    assert datetime.fromisoformat(created["deliver_at"]) == when
    with app.app_context():
        assert lifecycle.pending_work_due()


def test_batch_items_may_each_be_scheduled(client: FlaskClient) -> None:
    body = {
        "messages": [
            {"content": "now"},
            {"content": "in a minute", "delay_seconds": 60},
            {"content": "at noon", "deliver_at": "2026-12-01T12:00:00Z"},
        ]
    }
    response = client.post("/messages/batch", json=body)
    assert response.status_code == 201, response.get_json()
    now, in_a_minute, at_noon = response.get_json()["messages"]
    assert now["deliver_at"] is None
    assert in_a_minute["deliver_at"] is not None
    assert at_noon["deliver_at"] == "2026-12-01T12:00:00+00:00"


@pytest.mark.parametrize(
    ("timing", "field"),
    [
        ({"deliver_at": "tomorrow"}, "deliver_at"),
        ({"deliver_at": "2026-12-01T12:00:00"}, "deliver_at"),  # no zone
        ({"deliver_at": "2026-12-01"}, "deliver_at"),
        ({"deliver_at": "2026-02-30T12:00:00Z"}, "deliver_at"),
        ({"deliver_at": "9999-12-31T23:59:59Z"}, "deliver_at"),  # too far ahead
        ({"deliver_at": "0001-01-01T00:00:00+14:00"}, "deliver_at"),  # too far behind
        ({"deliver_at": 1767225600}, "deliver_at"),
        ({"deliver_at": None}, "deliver_at"),
        ({"delay_seconds": -1}, "delay_seconds"),
        ({"delay_seconds": 10**12}, "delay_seconds"),
        ({"delay_seconds": "60"}, "delay_seconds"),
        ({"delay_seconds": True}, "delay_seconds"),
        ({"delay_seconds": None}, "delay_seconds"),
    ],
)
def test_bad_schedule_is_400_and_writes_nothing(
    client: FlaskClient, timing: dict, field: str
) -> None:
    response = client.post("/messages", json={"content": "x", **timing})
    assert assert_error(response, 400, "validation_error")["details"] == {"field": field}
    batch = client.post("/messages/batch", json={"messages": [{"content": "x"}, timing]})
    assert_error(batch, 400, "validation_error")
    assert client.get("/messages/stats").get_json()["total"] == 0


def test_deliver_at_and_delay_seconds_together_are_refused(client: FlaskClient) -> None:
    both = {"content": "x", "deliver_at": "2026-12-01T12:00:00Z", "delay_seconds": 5}
    error = assert_error(client.post("/messages", json=both), 400, "validation_error")
    assert error["details"] == {"fields": ["deliver_at", "delay_seconds"]}
    batch = client.post("/messages/batch", json={"messages": [both]})
    error = assert_error(batch, 400, "validation_error")
    assert error["details"] == {"fields": ["messages[0].deliver_at", "messages[0].delay_seconds"]}


def test_scheduled_idempotent_request_replays(client: FlaskClient) -> None:
    headers = {"Idempotency-Key": "scheduled-once"}
    body = {"content": "once", "delay_seconds": AN_HOUR}
    first = client.post("/messages", json=body, headers=headers)
    again = client.post("/messages", json=body, headers=headers)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.get_json()["deliver_at"] == first.get_json()["deliver_at"]


def test_sweep_reports_when_held_back_work_becomes_due(client: FlaskClient, app: Flask) -> None:
    assert sweep_once(app) is None
    soon = schedule(client, "soon", delay_seconds=30)
    schedule(client, "later", delay_seconds=AN_HOUR)
    assert sweep_once(app) == datetime.fromisoformat(soon["deliver_at"])
