"""Scheduled and cancelled messages with a real worker: held back until due, or never run."""

from __future__ import annotations

from datetime import datetime

from flask.testing import FlaskClient

from tests.conftest import on_every_database
from tests.support.polling import wait_for
from tests.test_processing import wait_settled

pytestmark = on_every_database("worker_database_url")


def schedule(client: FlaskClient, content: str, delay_seconds: float) -> dict:
    response = client.post("/messages", json={"content": content, "delay_seconds": delay_seconds})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def test_a_scheduled_message_starts_only_once_due(worker_client: FlaskClient) -> None:
    created = schedule(worker_client, "scheduled", delay_seconds=1.5)
    body = wait_settled(worker_client, created["id"])
    assert body["status"] == "completed"
    assert datetime.fromisoformat(body["started_at"]) >= datetime.fromisoformat(
        created["deliver_at"]
    )


def test_a_cancelled_message_is_never_processed(worker_client: FlaskClient) -> None:
    cancelled = schedule(worker_client, "cancelled", delay_seconds=1)
    assert worker_client.post(f"/messages/{cancelled['id']}/cancel").status_code == 200
    # Due after the cancelled one: once it has run, the cancelled one was due too.
    witness = schedule(worker_client, "witness", delay_seconds=1)
    assert wait_settled(worker_client, witness["id"])["status"] == "completed"
    body = worker_client.get(f"/messages/{cancelled['id']}").get_json()
    assert (body["status"], body["attempts"], body["started_at"]) == ("cancelled", 0, None)


def test_cancel_races_a_claim_without_losing_a_count(worker_client: FlaskClient) -> None:
    ids = [schedule(worker_client, f"race {i}", delay_seconds=0.5)["id"] for i in range(20)]
    answers = [
        worker_client.post(f"/messages/{message_id}/cancel").status_code for message_id in ids
    ]
    assert set(answers) <= {200, 409}
    wait_for(
        lambda: (
            worker_client.get("/messages/stats").get_json()["pending"] == 0
            and worker_client.get("/messages/stats").get_json()["processing"] == 0
        ),
        what="every message settled",
    )
    stats = worker_client.get("/messages/stats").get_json()
    assert stats["cancelled"] == answers.count(200)
    assert stats["completed"] == answers.count(409)
    assert stats["total"] == 20
