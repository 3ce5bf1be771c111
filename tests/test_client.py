"""The Python client (client/n3hub_client) against a real stack: Gunicorn, a worker, Redis."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from n3hub_client import APIError, AsyncClient, Client, ConnectionFailed, RetryPolicy, WaitTimeout
from n3hub_client.environment import api_key, dev_api_key, server_url
from n3hub_client.protocol import Call
from sqlalchemy.engine import make_url

from tests.conftest import WebStack, reset_database, web_stack
from tests.support.polling import wait_for
from tests.support.processes import RedisServer, free_port

QUICK_RETRIES = RetryPolicy(max_retries=3, max_delay=2.0, backoff=0.01)


@pytest.fixture
def stack(e2e_stack: WebStack) -> WebStack:
    reset_database(e2e_stack.app)
    return e2e_stack


@pytest.fixture
def client(stack: WebStack) -> Iterator[Client]:
    with Client(stack.url, stack.key) as client:
        yield client


def test_send_then_wait_gives_the_processed_message(client: Client) -> None:
    sent = client.send("Hello from the client")
    assert sent["status"] == "pending"
    assert sent["content"] == "Hello from the client"
    done = client.wait(sent["id"], timeout=30)
    assert done["status"] == "completed"
    assert done["result"]["words"] == 4
    assert client.get(sent["id"]) == done


def test_a_repeated_send_with_one_key_is_stored_once(client: Client) -> None:
    first = client.send("once", idempotency_key="client-test-key")
    again = client.send("once", idempotency_key="client-test-key")
    assert again["id"] == first["id"]
    assert client.stats()["total"] == 1


def test_sends_without_a_key_are_distinct_messages(client: Client) -> None:
    ids = {client.send("same text")["id"] for _ in range(3)}
    assert len(ids) == 3


def test_send_many_stores_everything_in_order_in_batches(stack: WebStack) -> None:
    contents = [f"batch item {n} ✓" for n in range(25)]
    with Client(stack.url, stack.key, batch_size=7) as client:
        chunks = list(client.send_chunks(iter(contents)))
        assert [len(chunk) for chunk in chunks] == [7, 7, 7, 4]
        stored = [message for chunk in chunks for message in chunk]
        assert [message["content"] for message in stored] == contents
        assert [message["id"] for message in stored] == sorted(m["id"] for m in stored)
        assert client.stats()["total"] == 25


def test_send_many_halves_a_batch_the_server_finds_too_large(
    client: Client, stack: WebStack
) -> None:
    """A batch over the server's body limit (1 MiB here) is answered 413 and sent in halves."""
    letters = "abcdefghijkl"  # 95,000 characters each: under N3HUB_MAX_CONTENT_CHARS
    big = [letter * 95_000 for letter in letters]
    with Client(stack.url, stack.key, chunk_bytes=10 * 2**20) as unbounded:
        stored = unbounded.send_many(big)
    assert [message["content"][0] for message in stored] == list(letters)
    assert client.stats()["total"] == len(letters)


def test_iter_messages_follows_the_cursors(client: Client) -> None:
    ids = [message["id"] for message in client.send_many(f"page {n}" for n in range(7))]
    listed = [message["id"] for message in client.iter_messages(page_size=2)]
    assert listed == ids[::-1]


def test_iter_messages_filters_by_status_and_retry_sends_back(client: Client) -> None:
    failing = client.send("fail-permanent by design")
    fine = client.send("fine")
    assert client.wait(failing["id"], timeout=30)["status"] == "failed"
    assert client.wait(fine["id"], timeout=30)["status"] == "completed"
    assert [m["id"] for m in client.iter_messages(status="failed")] == [failing["id"]]
    retried = client.retry(failing["id"])
    assert retried["status"] == "pending"
    assert retried["attempts"] == 0


def test_errors_carry_the_envelope(client: Client) -> None:
    with pytest.raises(APIError) as missing:
        client.get(2**40)
    assert (missing.value.status, missing.value.code) == (404, "not_found")
    assert missing.value.request_id
    done = client.wait(client.send("done")["id"], timeout=30)
    with pytest.raises(APIError) as conflict:
        client.retry(done["id"])
    assert (conflict.value.status, conflict.value.code) == (409, "conflict")
    with pytest.raises(APIError) as invalid:
        client.send("")
    assert (invalid.value.status, invalid.value.code) == (400, "validation_error")


def test_wait_gives_up_at_its_timeout(tmp_path: Path, redis_server: RedisServer) -> None:
    """No worker serves this stack, so the message stays pending."""
    with (
        web_stack(tmp_path, redis_server.url) as stack,
        Client(stack.url, stack.key) as client,
    ):
        sent = client.send("never processed")
        with pytest.raises(WaitTimeout) as timeout:
            client.wait(sent["id"], timeout=0.3, poll=0.1)
    assert timeout.value.message["id"] == sent["id"]
    assert timeout.value.message["status"] == "pending"


def test_an_unreachable_server_is_a_connection_failure() -> None:
    with (
        Client(f"http://127.0.0.1:{free_port()}", retry=QUICK_RETRIES) as client,
        pytest.raises(ConnectionFailed),
    ):
        client.stats()


def test_async_client_does_what_the_client_does(stack: WebStack) -> None:
    async def scenario() -> None:
        async with AsyncClient(stack.url, stack.key, batch_size=2) as client:
            sent = await client.send("async hello")
            assert (await client.wait(sent["id"], timeout=30))["status"] == "completed"
            stored = await client.send_many(["x", "y", "z"])
            assert [message["content"] for message in stored] == ["x", "y", "z"]
            listed = [message["id"] async for message in client.iter_messages(page_size=1)]
            assert listed == [m["id"] for m in stored[::-1]] + [sent["id"]]
            assert (await client.stats())["total"] == 4
            with pytest.raises(APIError) as missing:
                await client.get(2**40)
            assert missing.value.status == 404

    asyncio.run(scenario())


def test_a_busy_server_is_retried_after_its_retry_after(
    tmp_path: Path, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """503 with Retry-After: 1 while another program holds the SQLite write lock."""
    caplog.set_level(logging.INFO, logger="n3hub_client")
    results: list[object] = []
    with (
        web_stack(tmp_path, redis_server.url, N3HUB_SQLITE_BUSY_TIMEOUT="0.1") as stack,
        Client(stack.url, stack.key) as client,
    ):
        holder = sqlite3.connect(make_url(stack.database_url).database, isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")
            sender = threading.Thread(target=lambda: results.append(client.send("patient")))
            sender.start()
            wait_for(lambda: "503, retrying in 1.00 s" in caplog.text, what="a 503 retry")
            holder.execute("ROLLBACK")
            sender.join(timeout=30)
        finally:
            holder.close()
        assert [message["content"] for message in results] == ["patient"]  # type: ignore[index]
        assert client.stats()["total"] == 1


def test_a_client_over_its_rate_limit_waits_and_stores_every_send(
    tmp_path: Path, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """429 with Retry-After from the server's rate limit: each send waits, none is lost."""
    caplog.set_level(logging.INFO, logger="n3hub_client")
    with (
        web_stack(tmp_path, redis_server.url, N3HUB_RATE_LIMIT="4/second") as stack,
        Client(stack.url, stack.key, retry=RetryPolicy(max_retries=20, max_delay=2.0)) as client,
    ):
        sent = [client.send(f"limited {n}")["id"] for n in range(12)]
        assert "429, retrying in" in caplog.text
        assert len(set(sent)) == 12
        assert client.stats()["total"] == 12


def test_settings_come_from_flags_then_environment_then_the_checkout(tmp_path: Path) -> None:
    nested = tmp_path / "repo" / "app" / "deep"
    nested.mkdir(parents=True)
    assert dev_api_key(nested) is None
    (tmp_path / "repo" / "instance").mkdir()
    (tmp_path / "repo" / "instance" / "dev-api-key").write_text("dev-key\n")
    assert dev_api_key(nested) == "dev-key"
    assert api_key(None, {}, nested) == "dev-key"
    assert api_key(None, {"N3HUB_API_KEY": "env-key"}, nested) == "env-key"
    assert api_key("flag-key", {"N3HUB_API_KEY": "env-key"}, nested) == "flag-key"
    assert server_url(None, {}) == "http://127.0.0.1:5000"
    assert server_url(None, {"N3HUB_URL": "http://n3hub:80"}) == "http://n3hub:80"


def test_send_many_batches_to_the_maximum_the_server_declares(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    with (
        web_stack(tmp_path, redis_server.url, N3HUB_MAX_BATCH_MESSAGES="7") as stack,
        Client(stack.url, stack.key) as client,
    ):
        sizes = [len(chunk) for chunk in client.send_chunks(str(n) for n in range(16))]
    assert sizes == [7, 7, 2]


def test_every_call_presents_the_key_and_a_refusal_is_an_api_error(stack: WebStack) -> None:
    with Client(stack.url, "not-a-key", retry=QUICK_RETRIES) as stranger:
        with pytest.raises(APIError) as refused:
            stranger.stats()
        assert (refused.value.status, refused.value.code) == (401, "unauthorized")
        with pytest.raises(APIError):
            list(stranger.send_chunks(["x"]))
    with Client(stack.url, stack.key) as client:
        assert client.stats()["total"] == 0


def test_the_retry_rule_replays_only_what_is_safe_and_honours_retry_after() -> None:
    policy = RetryPolicy(max_retries=2, max_delay=5.0, backoff=0.1)
    broken, refused = httpx.ReadError("reset"), httpx.ConnectError("refused")
    batch = Call("POST", "/messages/batch", headers={"Idempotency-Key": "k"})
    send = Call("POST", "/messages", headers={"Idempotency-Key": "k"}, idempotent=True)
    assert policy.delay(Call("GET", "/messages"), broken, 0) == 0.1
    assert policy.delay(send, broken, 1) == 0.2
    assert policy.delay(batch, broken, 0) is None  # it may have been stored
    assert policy.delay(batch, refused, 0) == 0.1  # it was not sent
    assert policy.delay(send, broken, 2) is None  # retries used up
    assert policy.delay(batch, httpx.Response(429, headers={"Retry-After": "3"}), 0) == 3.0
    assert policy.delay(batch, httpx.Response(503, headers={"Retry-After": "60"}), 0) == 5.0
    assert policy.delay(batch, httpx.Response(503), 1) == 0.2
    assert policy.delay(batch, httpx.Response(500), 0) is None
