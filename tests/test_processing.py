"""Processing end to end: the API in this process, a real Celery worker process, real Redis."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.conftest import keyed_client, on_every_database
from tests.support.polling import wait_for

pytestmark = on_every_database("worker_database_url")


@pytest.fixture
def app(worker_app: Flask) -> Flask:
    """Here the app is the one whose database the session's worker processes."""
    return worker_app


@pytest.fixture
def client(worker_client: FlaskClient) -> FlaskClient:
    """Here the client is the one whose messages the session's worker processes."""
    return worker_client


def create(client: FlaskClient, content: str) -> int:
    response = client.post("/messages", json={"content": content})
    assert response.status_code == 201, response.get_json()
    return response.get_json()["id"]


def settled(client: FlaskClient, message_id: int) -> dict | None:
    body = client.get(f"/messages/{message_id}").get_json()
    return body if body["status"] in ("completed", "failed") else None


def wait_settled(client: FlaskClient, message_id: int, timeout: float = 30) -> dict:
    return wait_for(lambda: settled(client, message_id), timeout, what=f"message {message_id}")


def test_message_is_processed_with_the_default_processor(client: FlaskClient) -> None:
    content = "Hello, N3Hüb!\nSecond  line"
    message_id = create(client, content)
    body = wait_settled(client, message_id)
    assert body["status"] == "completed"
    assert body["attempts"] == 1
    assert body["completed_at"] >= body["started_at"] >= body["created_at"]
    assert body["result"] == {
        "characters": 26,
        "bytes": 27,
        "words": 4,
        "lines": 2,
        "sha256": hashlib.sha256(content.encode()).hexdigest(),
        "normalized": "hello, n3hüb! second line",
    }


def test_transient_failures_are_retried_until_success(client: FlaskClient) -> None:
    message_id = create(client, "fail-transient:2 flaky")
    body = wait_settled(client, message_id)
    assert body["status"] == "completed"
    assert body["attempts"] == 3
    assert "planned transient failure on attempt 2" in body["last_error"]


def test_exhausted_retries_end_failed_with_reason(client: FlaskClient, app) -> None:
    message_id = create(client, "fail-transient:99 never recovers")
    body = wait_settled(client, message_id)
    assert body["status"] == "failed"
    assert body["attempts"] == app.config["MAX_ATTEMPTS"]
    assert "TransientProcessingError" in body["last_error"]


def test_permanent_failure_is_not_retried(client: FlaskClient) -> None:
    message_id = create(client, "fail-permanent bad input")
    body = wait_settled(client, message_id)
    assert body["status"] == "failed"
    assert body["attempts"] == 1
    assert body["last_error"] == "PermanentProcessingError: planned permanent failure"
    assert body["result"] is None


def test_retry_endpoint_reprocesses_a_failed_message(client: FlaskClient) -> None:
    message_id = create(client, "fail-permanent first time")
    wait_settled(client, message_id)
    response = client.post(f"/messages/{message_id}/retry")
    assert response.status_code == 202
    assert response.get_json()["status"] == "pending"
    body = wait_settled(client, message_id)
    assert body["status"] == "failed"
    assert body["attempts"] == 1
    stats = client.get("/messages/stats").get_json()
    assert stats == {
        "total": 1,
        "pending": 0,
        "processing": 0,
        "completed": 0,
        "failed": 1,
        "cancelled": 0,
    }


def test_one_bad_message_does_not_fail_its_batch(client: FlaskClient) -> None:
    ids = [create(client, "fail-permanent poison" if i == 5 else f"ok {i}") for i in range(20)]
    bodies = [wait_settled(client, message_id) for message_id in ids]
    assert [b["status"] for b in bodies] == ["failed" if i == 5 else "completed" for i in range(20)]


def test_concurrent_burst_completes_and_stats_add_up(client: FlaskClient, app) -> None:
    count = 400

    def submit(i: int) -> tuple[int, int]:
        with keyed_client(app) as own:
            response = own.post("/messages", json={"content": f"burst {i}"})
            return response.status_code, response.get_json()["id"]

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(submit, range(count)))
    assert {status for status, _ in results} == {201}
    assert len({message_id for _, message_id in results}) == count

    def all_completed() -> dict | None:
        stats = client.get("/messages/stats").get_json()
        return stats if stats["completed"] == count else None

    stats = wait_for(all_completed, timeout=60, what="the burst to complete")
    assert stats == {
        "total": count,
        "pending": 0,
        "processing": 0,
        "completed": count,
        "failed": 0,
        "cancelled": 0,
    }
    completed = 0
    cursor = None
    while True:
        page = client.get(
            "/messages?limit=200&status=completed" + (f"&cursor={cursor}" if cursor else "")
        ).get_json()
        completed += sum(1 for m in page["messages"] if m["attempts"] == 1)
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert completed == count


def test_processed_counter_counts_worker_outcomes(client: FlaskClient) -> None:
    def processed(status: str) -> float:
        for line in client.get("/metrics").get_data(as_text=True).splitlines():
            if line.startswith(f'messages_processed_total{{status="{status}"}}'):
                return float(line.split()[-1])
        raise AssertionError(f"no messages_processed_total for {status}")

    ids = [create(client, f"counted {i}") for i in range(5)] + [create(client, "fail-permanent x")]
    for message_id in ids:
        wait_settled(client, message_id)
    assert processed("completed") == 5
    assert processed("failed") == 1
