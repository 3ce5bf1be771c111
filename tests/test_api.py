"""The HTTP contract of spec section 2: shapes, pagination, and a JSON error for all bad input."""

from __future__ import annotations

import json
import sqlite3
from concurrent.futures import ThreadPoolExecutor

import pytest
from flask import url_for
from flask.testing import FlaskClient
from sqlalchemy import create_engine, delete
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from app import create_app
from app.config import load_config
from app.database import write_transaction
from app.extensions import db
from app.models import Message
from tests.conftest import keyed_client, stack_environment
from tests.support.metrics import metric_value

STATUSES = ["pending", "processing", "completed", "failed", "cancelled"]


def total_messages(client: FlaskClient) -> int:
    return client.get("/messages/stats").get_json()["total"]


def post(client: FlaskClient, content: object) -> dict:
    response = client.post("/messages", json={"content": content})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]


def test_create_answers_201_with_id_pending_and_location(client: FlaskClient) -> None:
    response = client.post("/messages", json={"content": "Hello, N3Hub!"})
    assert response.status_code == 201
    body = response.get_json()
    assert list(body)[:2] == ["id", "status"]
    assert isinstance(body["id"], int)
    assert body["status"] == "pending"
    assert response.headers["Location"] == f"/messages/{body['id']}"
    assert total_messages(client) == 1


def test_location_is_the_url_of_the_message_under_a_script_root(client: FlaskClient) -> None:
    """The hand-built Location matches url_for when the app is mounted below a prefix."""
    response = client.post(
        "/messages", json={"content": "mounted"}, base_url="http://localhost/n3hub"
    )
    assert response.status_code == 201
    message_id = response.get_json()["id"]
    with client.application.test_request_context(base_url="http://localhost/n3hub"):
        expected = url_for("messages.get_message", message_id=message_id)
    assert expected == f"/n3hub/messages/{message_id}"
    assert response.headers["Location"] == expected


@pytest.mark.parametrize(
    "content",
    [
        "plain",
        "  leading and trailing spaces  ",
        "line one\nline two\r\nline three\n",
        "emoji 🎉 and CJK 漢字 and RTL עברית",
        "combining e\u0301 vs \u00e9",
        "\t",
        "x" * 100_000,
    ],
)
def test_content_round_trips_exactly(client: FlaskClient, content: str) -> None:
    created = post(client, content)
    fetched = client.get(f"/messages/{created['id']}").get_json()
    assert fetched["content"] == content


def test_get_message_has_processing_facts(client: FlaskClient) -> None:
    created = post(client, "facts")
    body = client.get(f"/messages/{created['id']}").get_json()
    for field in ["id", "content", "status", "created_at", "updated_at", "attempts"]:
        assert body[field] is not None
    for field in ["started_at", "completed_at", "last_error", "result"]:
        assert field in body
    assert body["created_at"].endswith("+00:00")


def test_created_message_reads_back_exactly_as_answered(client: FlaskClient) -> None:
    """The ingest writes with its own SQL: what it answers is what the database holds."""
    single = client.post("/messages", json={"content": "single"}).get_json()
    batch = client.post(
        "/messages/batch", json={"messages": [{"content": "one"}, {"content": "two"}]}
    ).get_json()["messages"]
    keyed = client.post(
        "/messages", json={"content": "keyed"}, headers={"Idempotency-Key": "read-back"}
    ).get_json()
    for created in [single, *batch, keyed]:
        assert client.get(f"/messages/{created['id']}").get_json() == created
    stats = client.get("/messages/stats").get_json()
    assert stats["pending"] == stats["total"] == 4


def test_list_is_newest_first_with_cursor_pages(client: FlaskClient) -> None:
    ids = [post(client, f"message {i}")["id"] for i in range(7)]
    first = client.get("/messages?limit=3").get_json()
    assert [m["id"] for m in first["messages"]] == ids[::-1][:3]
    assert first["limit"] == 3
    second = client.get(f"/messages?limit=3&cursor={first['next_cursor']}").get_json()
    assert [m["id"] for m in second["messages"]] == ids[::-1][3:6]
    last = client.get(f"/messages?limit=3&cursor={second['next_cursor']}").get_json()
    assert [m["id"] for m in last["messages"]] == ids[:1]
    assert last["next_cursor"] is None


def test_list_default_page_is_bounded(client: FlaskClient, app) -> None:
    for i in range(app.config["PAGE_SIZE"] + 1):
        post(client, f"m{i}")
    body = client.get("/messages").get_json()
    assert len(body["messages"]) == app.config["PAGE_SIZE"]
    assert body["next_cursor"] is not None


def test_list_filters_by_status(client: FlaskClient) -> None:
    post(client, "a")
    pending = client.get("/messages?status=pending").get_json()["messages"]
    assert pending and all(m["status"] == "pending" for m in pending)
    assert client.get("/messages?status=failed").get_json()["messages"] == []


def test_stats_total_is_sum_of_statuses(client: FlaskClient) -> None:
    for i in range(3):
        post(client, f"s{i}")
    stats = client.get("/messages/stats").get_json()
    assert set(stats) == {"total", *STATUSES}
    assert all(isinstance(v, int) for v in stats.values())
    assert stats["total"] == sum(stats[s] for s in STATUSES) == 3


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("status=done", "status"),
        ("status=", "status"),
        ("limit=0", "limit"),
        ("limit=abc", "limit"),
        ("limit=100000", "limit"),
        ("cursor=-1", "cursor"),
        ("cursor=99999999999999999999999", "cursor"),
        ("limit=%EF%BC%91", "limit"),  # a full-width digit
    ],
)
def test_list_rejects_bad_query(client: FlaskClient, query: str, field: str) -> None:
    error = assert_error(client.get(f"/messages?{query}"), 400, "validation_error")
    assert error["details"]["field"] == field


def test_unknown_status_names_allowed_values(client: FlaskClient) -> None:
    error = assert_error(client.get("/messages?status=done"), 400, "validation_error")
    assert error["details"]["allowed"] == STATUSES
    assert all(status in error["message"] for status in STATUSES)


BAD_BODIES = [
    pytest.param(b'{"content": ', "application/json", 400, "invalid_json", id="malformed"),
    pytest.param(b"", "application/json", 400, "invalid_json", id="empty-body"),
    pytest.param(b"\xff\xfe\x00", "application/json", 400, "invalid_json", id="not-utf8"),
    pytest.param(b"[" * 100_000, "application/json", 400, "invalid_json", id="deep-nesting"),
    pytest.param(b"{}", "application/json", 400, "validation_error", id="missing"),
    pytest.param(b'{"content": ""}', "application/json", 400, "validation_error", id="empty"),
    pytest.param(b'{"content": 5}', "application/json", 400, "validation_error", id="number"),
    pytest.param(b'{"content": null}', "application/json", 400, "validation_error", id="null"),
    pytest.param(b'{"content": ["a"]}', "application/json", 400, "validation_error", id="list"),
    pytest.param(b'["content"]', "application/json", 400, "validation_error", id="array-body"),
    pytest.param(b'"text"', "application/json", 400, "validation_error", id="string-body"),
    pytest.param(
        b'{"content": "a\\u0000b"}', "application/json", 400, "validation_error", id="nul"
    ),
    pytest.param(
        b'{"content": "\\ud800"}', "application/json", 400, "validation_error", id="surrogate"
    ),
    pytest.param(b'{"content": "x"}', "text/plain", 415, "unsupported_media_type", id="text-plain"),
    pytest.param(b'{"content": "x"}', None, 415, "unsupported_media_type", id="no-type"),
    pytest.param(
        b"content=x", "application/x-www-form-urlencoded", 415, "unsupported_media_type", id="form"
    ),
]


@pytest.mark.parametrize(("body", "content_type", "status", "code"), BAD_BODIES)
def test_bad_create_is_a_json_error_and_writes_nothing(
    client: FlaskClient, body: bytes, content_type: str | None, status: int, code: str
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.post("/messages", data=body, headers=headers)
    assert_error(response, status, code)
    assert total_messages(client) == 0


def test_json_content_type_with_charset_is_accepted(client: FlaskClient) -> None:
    response = client.post(
        "/messages",
        data=json.dumps({"content": "ok"}),
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert response.status_code == 201


def test_oversized_body_is_413_and_writes_nothing(client: FlaskClient, app) -> None:
    limit = app.config["MAX_CONTENT_LENGTH"]
    body = json.dumps({"content": "x" * limit}).encode()
    response = client.post("/messages", data=body, content_type="application/json")
    assert_error(response, 413, "payload_too_large")
    assert total_messages(client) == 0


@pytest.mark.parametrize("path", ["/messages/999999", "/messages/99999999999999999999999"])
def test_unknown_message_is_404(client: FlaskClient, path: str) -> None:
    assert_error(client.get(path), 404, "not_found")


@pytest.mark.parametrize("path", ["/nope", "/messages/abc", "/messages/-1", "/messages/1/x"])
def test_unknown_route_is_json_404(client: FlaskClient, path: str) -> None:
    assert_error(client.get(path), 404, "not_found")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("DELETE", "/messages"),
        ("PUT", "/messages/1"),
        ("POST", "/messages/stats"),
        ("POST", "/metrics"),
    ],
)
def test_wrong_method_is_json_405(client: FlaskClient, method: str, path: str) -> None:
    response = client.open(path, method=method)
    assert_error(response, 405, "method_not_allowed")
    assert "Allow" in response.headers


def test_retry_of_a_non_failed_message_is_409(client: FlaskClient) -> None:
    created = post(client, "still pending")
    error = assert_error(client.post(f"/messages/{created['id']}/retry"), 409, "conflict")
    assert error["details"]["status"] == "pending"
    assert_error(client.post("/messages/424242/retry"), 404, "not_found")


def test_request_id_is_echoed_or_generated(client: FlaskClient) -> None:
    echoed = client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert echoed.headers["X-Request-ID"] == "abc-123"
    generated = {client.get("/healthz").headers["X-Request-ID"] for _ in range(3)}
    assert len(generated) == 3
    assert all(len(request_id) == 32 and int(request_id, 16) >= 0 for request_id in generated)


def test_metrics_count_nonstandard_methods_as_one(client: FlaskClient) -> None:
    for method in ("BREW", "WHEN", "PROPFIND"):
        assert client.open("/messages", method=method).status_code == 405
    body = client.get("/metrics").get_data(as_text=True)
    assert 'method="OTHER"' in body
    assert 'method="BREW"' not in body


def test_health_endpoints(client: FlaskClient) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json()["checks"] == {"database": "ok", "broker": "ok"}


def test_metrics_use_route_templates(client: FlaskClient) -> None:
    created = post(client, "m")
    client.get(f"/messages/{created['id']}")
    client.get("/no/such/path")
    body = client.get("/metrics").get_data(as_text=True)
    assert 'endpoint="/messages/<int:message_id>"' in body
    assert f'endpoint="/messages/{created["id"]}"' not in body
    assert 'endpoint="<unmatched>"' in body
    for family in [
        "http_requests_total",
        "http_request_latency_seconds_bucket",
        "api_errors_total",
        "messages_processed_total",
    ]:
        assert family in body


def test_idempotency_key_replays_the_first_message(client: FlaskClient) -> None:
    headers = {"Idempotency-Key": "order-42"}
    first = client.post("/messages", json={"content": "pay"}, headers=headers)
    again = client.post("/messages", json={"content": "pay"}, headers=headers)
    assert first.status_code == 201
    assert again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json()["id"] == first.get_json()["id"]
    assert total_messages(client) == 1


def test_idempotency_key_with_other_content_is_rejected(client: FlaskClient) -> None:
    headers = {"Idempotency-Key": "order-43"}
    assert client.post("/messages", json={"content": "a"}, headers=headers).status_code == 201
    response = client.post("/messages", json={"content": "b"}, headers=headers)
    assert_error(response, 422, "idempotency_key_reused")
    assert total_messages(client) == 1


def test_idempotent_replay_of_a_deleted_message_is_410(client: FlaskClient, app) -> None:
    headers = {"Idempotency-Key": "order-44"}
    created = client.post("/messages", json={"content": "gone"}, headers=headers).get_json()
    with app.app_context(), write_transaction() as connection:
        connection.execute(delete(Message).where(Message.id == created["id"]))
    response = client.post("/messages", json={"content": "gone"}, headers=headers)
    error = assert_error(response, 410, "idempotent_message_gone")
    assert error["details"] == {"header": "Idempotency-Key", "message_id": created["id"]}


@pytest.mark.parametrize("key", ["", "x" * 256, "caf\u00e9"])
def test_bad_idempotency_key_is_400(client: FlaskClient, key: str) -> None:
    response = client.post(
        "/messages",
        json={"content": "a"},
        headers={"Idempotency-Key": key.encode().decode("latin-1")},
    )
    assert_error(response, 400, "validation_error")
    assert total_messages(client) == 0


def test_concurrent_requests_with_one_key_create_one_message(client: FlaskClient, app) -> None:
    def submit(_: int) -> tuple[int, int]:
        with keyed_client(app) as own:
            response = own.post(
                "/messages", json={"content": "once"}, headers={"Idempotency-Key": "race"}
            )
            return response.status_code, response.get_json()["id"]

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(submit, range(16)))
    assert sorted(status for status, _ in results) == [200] * 15 + [201]
    assert len({message_id for _, message_id in results}) == 1
    assert total_messages(client) == 1


def test_busy_database_is_503_and_writes_nothing(databases, redis_server) -> None:
    """A write lock held past the busy timeout (another program on the SQLite file) is a 503.

    A plain ``POST /messages`` is served by the fast path: its failure is answered by
    the app's error handlers all the same, request id included, and is timed from its
    start, the wait for the lock included.
    """
    url = databases.create("sqlite")
    env = stack_environment(url, redis_server.url, N3HUB_SQLITE_BUSY_TIMEOUT="0.1")
    app = create_app(load_config(env))
    client = keyed_client(app)
    holder = sqlite3.connect(make_url(url).database, isolation_level=None)
    labels = {"method": "POST", "endpoint": "/messages"}
    quick = ("http_request_latency_seconds_bucket", {**labels, "le": "0.05"})
    failed = ("http_requests_total", {**labels, "status": "503"})
    before = metric_value(client, *quick), metric_value(client, *failed)
    try:
        holder.execute("BEGIN IMMEDIATE")
        for path, body in [
            ("/messages", {"content": "blocked"}),
            ("/messages/batch", {"messages": [{"content": "blocked"}]}),
        ]:
            response = client.post(
                path, json=body, headers={"X-Request-ID": f"busy{path.replace('/', '.')}"}
            )
            assert_error(response, 503, "service_unavailable")
            assert response.headers["Retry-After"] == "1"
            assert response.headers["X-Request-ID"] == f"busy{path.replace('/', '.')}"
        assert metric_value(client, *failed) == before[1] + 1
        assert metric_value(client, *quick) == before[0]  # it waited the 0.1 s busy timeout
        holder.execute("ROLLBACK")
        assert total_messages(client) == 0
        assert client.post("/messages", json={"content": "after"}).status_code == 201
    finally:
        holder.close()
        with app.app_context():
            db.engine.dispose()


def test_batch_create_stores_all_in_order(client: FlaskClient) -> None:
    contents = ["first", "second 🎉", "  third  "]
    response = client.post("/messages/batch", json={"messages": [{"content": c} for c in contents]})
    assert response.status_code == 201
    created = response.get_json()["messages"]
    assert [m["content"] for m in created] == contents
    assert [m["status"] for m in created] == ["pending"] * 3
    ids = [m["id"] for m in created]
    assert ids == sorted(ids)
    assert total_messages(client) == 3


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": "x"}, "messages"),
        ({"messages": [{"content": "ok"}, {"content": ""}]}, "messages[1].content"),
        ({"messages": [{"content": "ok"}, "text"]}, "messages[1]"),
        ({"messages": [{"content": "ok"}] * 1001}, "messages"),
    ],
)
def test_bad_batch_is_rejected_whole(client: FlaskClient, body: dict, field: str) -> None:
    error = assert_error(client.post("/messages/batch", json=body), 400, "validation_error")
    assert error["details"]["field"] == field
    assert total_messages(client) == 0


def test_ingest_survives_postgresql_dropping_its_connections(databases, redis_server) -> None:
    """The ingest's pooled DB-API connections are checked (pre-ping) before reuse."""
    url = databases.create("postgresql")
    app = create_app(load_config(stack_environment(url, redis_server.url)))
    client = keyed_client(app)
    try:
        assert client.post("/messages", json={"content": "before"}).status_code == 201
        outsider = create_engine(url, poolclass=NullPool)
        with outsider.begin() as connection:
            terminated = connection.exec_driver_sql(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).scalar()
        outsider.dispose()
        assert terminated >= 1  # the app's pooled connection, idle since the first POST
        for path, body in [
            ("/messages", {"content": "after"}),
            ("/messages/batch", {"messages": [{"content": "after, in a batch"}]}),
        ]:
            response = client.post(path, json=body)
            assert response.status_code == 201, response.get_json()
        assert total_messages(client) == 3
    finally:
        with app.app_context():
            db.engine.dispose()
