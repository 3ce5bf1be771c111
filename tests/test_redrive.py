"""Bulk redrive: ``POST /messages/retry`` sends failed messages back to pending by filter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import update

from app import lifecycle, tallies
from app.auth.keys import Scope
from app.database import write_transaction
from app.models import DEFAULT_TENANT, Message
from tests.conftest import keyed_client, make_api_key, on_every_database
from tests.test_api import assert_error

T0 = datetime(2026, 11, 1, tzinfo=UTC)

pytestmark = on_every_database("database_url")


def failed_messages(client: FlaskClient, app: Flask, count: int) -> list[int]:
    """``count`` failed messages, the n-th failed at T0 + n hours (scheduled: no worker runs it)."""
    response = client.post(
        "/messages/batch",
        json={"messages": [{"content": f"f{n}", "delay_seconds": 3600} for n in range(count)]},
    )
    ids = [message["id"] for message in response.get_json()["messages"]]
    with app.app_context(), write_transaction() as connection:
        for n, message_id in enumerate(ids):
            connection.execute(
                update(Message)
                .where(Message.id == message_id)
                .values(status="failed", attempts=3, completed_at=T0 + timedelta(hours=n))
            )
        tallies.apply(
            connection, {(DEFAULT_TENANT, "pending"): -count, (DEFAULT_TENANT, "failed"): count}
        )
    return ids


def redrive(client: FlaskClient, **filters: object) -> dict:
    response = client.post("/messages/retry", json=filters)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def statuses(client: FlaskClient, ids: list[int]) -> list[str]:
    return [client.get(f"/messages/{message_id}").get_json()["status"] for message_id in ids]


def test_redrive_takes_the_failed_between_since_and_until(client: FlaskClient, app: Flask) -> None:
    ids = failed_messages(client, app, 5)
    since, until = (T0 + timedelta(hours=1)).isoformat(), (T0 + timedelta(hours=3)).isoformat()
    assert redrive(client, status="failed", since=since, until=until) == {
        "retried": 2,
        "more": False,
    }
    assert statuses(client, ids) == ["failed", "pending", "pending", "failed", "failed"]
    retried = client.get(f"/messages/{ids[1]}").get_json()
    assert (retried["attempts"], retried["completed_at"]) == (0, None)
    stats = client.get("/messages/stats").get_json()
    assert (stats["failed"], stats["pending"], stats["total"]) == (3, 2, 5)


def test_redrive_in_chunks_up_to_the_limit(
    client: FlaskClient, app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lifecycle, "REDRIVE_CHUNK", 2)  # several transactions for few rows
    ids = failed_messages(client, app, 7)
    assert redrive(client, limit=5) == {"retried": 5, "more": True}
    assert statuses(client, ids) == ["pending"] * 5 + ["failed"] * 2
    assert redrive(client) == {"retried": 2, "more": False}
    assert redrive(client) == {"retried": 0, "more": False}
    stats = client.get("/messages/stats").get_json()
    assert (stats["failed"], stats["pending"]) == (0, 7)


def test_redrive_needs_the_admin_scope(client: FlaskClient, app: Flask) -> None:
    failed_messages(client, app, 1)
    reader = keyed_client(app, make_api_key(app, scopes=frozenset({Scope.READ, Scope.SUBMIT})))
    assert_error(reader.post("/messages/retry", json={}), 403, "forbidden")
    assert client.get("/messages/stats").get_json()["failed"] == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"status": "completed"}, "status"),
        ({"since": "yesterday"}, "since"),
        ({"until": "2026-11-01T00:00:00"}, "until"),
        ({"limit": 0}, "limit"),
        ({"limit": 10_001}, "limit"),
        ({"limit": "5"}, "limit"),
        ({"limit": True}, "limit"),
    ],
)
def test_bad_redrive_is_400_and_moves_nothing(
    client: FlaskClient, app: Flask, body: dict, field: str
) -> None:
    failed_messages(client, app, 1)
    error = assert_error(client.post("/messages/retry", json=body), 400, "validation_error")
    assert error["details"]["field"] == field
    assert client.get("/messages/stats").get_json()["failed"] == 1


def test_redrive_with_since_after_until_is_400(client: FlaskClient) -> None:
    body = {"since": "2026-11-02T00:00:00Z", "until": "2026-11-01T00:00:00Z"}
    error = assert_error(client.post("/messages/retry", json=body), 400, "validation_error")
    assert error["details"] == {"fields": ["since", "until"]}
