"""The hostile inputs of issue 17 against a real stack: Gunicorn, a Celery worker, Redis.

Every one is answered with a 4xx (never a 500, never a 201 it should not get),
the web worker's memory stays bounded, and every message accepted is processed.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from app.auth.keys import Scope
from tests.conftest import (
    DatabaseFactory,
    env_api_key,
    stack_environment,
    start_web,
    start_worker,
)
from tests.support.polling import wait_for
from tests.support.processes import ManagedProcess, RedisServer

pytestmark = pytest.mark.slow

FLOOD_LIMIT = 300
# NFKC turns this one character into 18: a processor result many times its content.
EXPANDING = "\ufdfa"
MiB = 1024 * 1024


@dataclass
class HostileStack:
    """A running stack, keys of two tenants and an admin, and a way to talk HTTP to it."""

    port: int
    web: ManagedProcess
    keys: dict[str, str]

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        key: str | None = "acme",
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        """One request on a connection of its own: status, headers, body."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        sent = {"Content-Type": "application/json", **(headers or {})}
        if key is not None:
            sent["Authorization"] = f"Bearer {self.keys[key]}"
        try:
            connection.request(method, path, body=body, headers=sent)
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            connection.close()

    def json(self, method: str, path: str, payload: Any = None, key: str = "acme") -> Any:
        status, _, body = self.request(
            method, path, json.dumps(payload).encode() if payload is not None else None, key
        )
        assert status < 300, (status, body[:300])
        return json.loads(body)

    def total(self, key: str = "admin") -> int:
        return self.json("GET", "/messages/stats", key=key)["total"]

    def web_worker_rss(self) -> int:
        """Resident memory of the one Gunicorn worker, in bytes."""
        children = Path(f"/proc/{self.web.pid}/task/{self.web.pid}/children").read_text().split()
        [worker] = children
        for line in Path(f"/proc/{worker}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def stack(
    databases: DatabaseFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HostileStack]:
    directory = tmp_path_factory.mktemp("hostile")
    redis = RedisServer(directory / "redis").start()
    env = stack_environment(
        databases.create("sqlite"),
        redis.url,
        N3HUB_RATE_LIMIT=f"{FLOOD_LIMIT}/minute",
        N3HUB_PROCESSOR="app.worker.processors:analyse_text",
    )
    keys = {
        "acme": env_api_key(env, tenant="acme", scopes=frozenset({Scope.SUBMIT, Scope.READ})),
        "globex": env_api_key(env, tenant="globex", scopes=frozenset({Scope.SUBMIT, Scope.READ})),
        "admin": env_api_key(env, tenant="ops"),
        "flood": env_api_key(env, tenant="acme", scopes=frozenset({Scope.READ})),
    }
    processes = [redis]
    try:
        web, port = start_web(env, directory, workers=1)
        processes.append(web)
        processes.append(start_worker(env, directory, hostname="hostile", concurrency=1))
        yield HostileStack(port, web, keys)
    finally:
        for process in reversed(processes):
            process.stop()


def test_no_key_or_a_bad_one_is_401_everywhere(stack: HostileStack) -> None:
    for method, path in [
        ("POST", "/messages"),
        ("POST", "/messages/batch"),
        ("GET", "/messages"),
        ("GET", "/messages/1"),
        ("GET", "/messages/stats"),
        ("POST", "/messages/1/retry"),
        ("GET", "/nowhere"),
    ]:
        for headers in ({}, {"Authorization": "Bearer n3h_forged"}, {"Authorization": "Basic x"}):
            status, answered, body = stack.request(
                method, path, b'{"content": "x"}', key=None, headers=headers
            )
            assert status == 401, (method, path, headers)
            assert answered["WWW-Authenticate"].startswith("Bearer")
            assert json.loads(body)["error"]["code"] == "unauthorized"
    assert stack.request("GET", "/healthz", key=None)[0] == 200


def test_a_tenant_reaches_only_its_own_messages(stack: HostileStack) -> None:
    mine = stack.json("POST", "/messages", {"content": "acme's secret"})["id"]
    status, _, _ = stack.request("GET", f"/messages/{mine}", key="globex")
    assert status == 404
    listed = stack.json("GET", "/messages?limit=200", key="globex")["messages"]
    assert mine not in {message["id"] for message in listed}
    key = {"Idempotency-Key": "shared-key"}
    first = stack.request("POST", "/messages", b'{"content": "a"}', "acme", key)
    second = stack.request("POST", "/messages", b'{"content": "b"}', "globex", key)
    assert (first[0], second[0]) == (201, 201)


@pytest.mark.parametrize(
    ("body", "headers", "path", "status"),
    [
        (b'{"content": NaN}', {}, "/messages", 400),
        (b'{"content": "x", "n": Infinity}', {}, "/messages", 400),
        ('\ufeff{"content": "bom"}'.encode(), {}, "/messages", 400),
        ('{"content": "utf16"}'.encode("utf-16"), {}, "/messages", 400),
        (json.dumps({"content": "x" * 100_001}).encode(), {}, "/messages", 400),
        (b'{"content": "x"}', {"Content-Type": "text/plain"}, "/messages", 415),
        (b"x" * (MiB + 1), {}, "/messages", 413),
        # Within Gunicorn's request line limit (4094), so the app answers.
        (None, {}, "/messages?limit=" + "9" * 3000, 400),
        (None, {}, "/messages/" + "9" * 3000, 404),
    ],
)
def test_hostile_requests_are_4xx_and_store_nothing(
    stack: HostileStack, body: bytes | None, headers: dict[str, str], path: str, status: int
) -> None:
    before = stack.total()
    method = "POST" if body is not None else "GET"
    answered, _, raw = stack.request(method, path, body, headers=headers)
    assert answered == status, raw[:300]
    assert json.loads(raw)["error"]["code"]
    assert stack.total() == before


def test_a_chunked_body_over_the_limit_is_refused_never_cut(stack: HostileStack) -> None:
    before = stack.total()
    content = json.dumps({"content": "c" * (MiB + 10_000)}).encode()

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(content), 64 * 1024):
            yield content[start : start + 64 * 1024]

    connection = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=60)
    try:
        connection.request(
            "POST",
            "/messages",
            body=chunks(),
            headers={
                "Content-Type": "application/json",
                "Authorization": f"Bearer {stack.keys['acme']}",
            },
            encode_chunked=True,
        )
        status = connection.getresponse().status
    except (ConnectionError, http.client.HTTPException):
        status = None  # the server may close the connection instead
    finally:
        connection.close()
    assert status in (413, None)
    assert stack.total() == before


def test_a_flood_from_one_key_gets_429_and_spares_the_others(stack: HostileStack) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(
            pool.map(
                lambda _: stack.request("GET", "/messages/stats", key="flood"),
                range(FLOOD_LIMIT + 20),
            )
        )
    statuses = [status for status, _, _ in answers]
    assert set(statuses) <= {200, 429} and 429 in statuses
    _, headers, body = next(answer for answer in answers if answer[0] == 429)
    assert int(headers["Retry-After"]) >= 1 and headers["RateLimit-Remaining"] == "0"
    assert json.loads(body)["error"]["code"] == "rate_limited"
    assert stack.request("GET", "/messages/stats", key="globex")[0] == 200


def test_large_results_and_pages_leave_the_web_worker_bounded(stack: HostileStack) -> None:
    ids = [
        stack.json("POST", "/messages", {"content": EXPANDING * 90_000}, key="globex")["id"]
        for _ in range(12)
    ]

    def settled() -> list[dict[str, Any]] | None:
        bodies = [stack.json("GET", f"/messages/{i}", key="globex") for i in ids]
        return bodies if all(b["status"] in ("completed", "failed") for b in bodies) else None

    bodies = wait_for(settled, timeout=120, interval=0.5, what="the large messages to settle")
    assert all(b["status"] == "failed" and "result too large" in b["last_error"] for b in bodies)
    before = stack.web_worker_rss()
    for _ in range(10):
        status, _, page = stack.request("GET", "/messages?limit=200", key="admin")
        assert status == 200
        assert len(page) <= 4 * MiB + 64 * 1024
    growth = stack.web_worker_rss() - before
    assert growth < 64 * MiB, f"the web worker grew by {growth / MiB:.0f} MiB"


def test_every_accepted_message_is_processed_once(stack: HostileStack) -> None:
    def settled(key: str) -> bool:
        stats = stack.json("GET", "/messages/stats", key=key)
        return stats["pending"] == stats["processing"] == 0

    # Another test's messages still in flight would count as processed more than once.
    wait_for(lambda: settled("acme") and settled("globex"), timeout=120, interval=0.5)
    before = {key: stack.json("GET", "/messages/stats", key=key) for key in ("acme", "globex")}

    def post(number: int) -> int:
        key = "acme" if number % 2 else "globex"
        status, _, _ = stack.request(
            "POST", "/messages", f'{{"content": "m{number}"}}'.encode(), key
        )
        return status

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert set(pool.map(post, range(60))) == {201}

    def completed(key: str) -> bool:
        stats = stack.json("GET", "/messages/stats", key=key)
        return stats["completed"] == before[key]["completed"] + 30 and stats["pending"] == 0

    wait_for(lambda: completed("acme") and completed("globex"), timeout=120, interval=0.5)
