"""A database that cannot be reached: 503 ``database_unavailable``, metrics still served, logs.

The web runs under Gunicorn on PostgreSQL reached through a TCP forwarder that the
test cuts, as a database server that goes down looks to the app. Every log line
about a request, the access lines included, carries that request's id.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.error import HTTPError
from urllib.request import Request, urlopen

import pytest
from sqlalchemy.engine import make_url

from app.database import is_busy_error
from tests.conftest import DatabaseFactory, bearer, env_api_key, stack_environment, start_web
from tests.support.polling import wait_for
from tests.support.processes import ManagedProcess, RedisServer
from tests.support.tcp_proxy import TcpProxy

# The API key of the web listening on each port.
KEYS: dict[int, str] = {}


@dataclass
class Answer:
    """What one HTTP request got back."""

    status: int
    headers: dict[str, str]
    body: bytes

    def error_code(self) -> str:
        return json.loads(self.body)["error"]["code"]


def call(
    port: int, path: str, request_id: str, body: dict | None = None, key: str = "", **headers: str
) -> Answer:
    """One request with its ``X-Request-ID`` and a key (the web's); any status is an answer."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"X-Request-ID": request_id, "Content-Type": "application/json", **headers}
    headers.update(bearer(key or KEYS[port]))
    request = Request(f"http://127.0.0.1:{port}{path}", data=data, headers=headers)
    try:
        with urlopen(request, timeout=30) as response:
            return Answer(response.status, dict(response.headers), response.read())
    except HTTPError as error:
        return Answer(error.code, dict(error.headers), error.read())


@dataclass
class ProxiedWeb:
    """Gunicorn on a PostgreSQL database that the test can take away and give back."""

    web: ManagedProcess
    port: int
    proxy: TcpProxy
    log_format: str
    unused_key: str  # never presented while the database answers: its lookup needs it

    def log_records(self) -> list[tuple[str, bool, str]]:
        """(request id, is an access line, line) of every line of the web's log with an id."""
        records = []
        for line in self.web.log_path.read_text().splitlines():
            if self.log_format == "json" and line.startswith("{"):
                record = json.loads(line)
                access = record["name"] == "gunicorn.access"
                records.append((str(record.get("request_id", "-")), access, line))
            elif match := re.search(r"\breq=(\S+?)[\] ]", line + " "):
                access = re.match(r'\S+ "[A-Z]+ /', line) is not None
                records.append((match.group(1), access, line))
        return records


@pytest.fixture(params=["text", "json"])
def proxied_web(
    request: pytest.FixtureRequest,
    databases: DatabaseFactory,
    redis_server: RedisServer,
    tmp_path: Path,
) -> Iterator[ProxiedWeb]:
    url = make_url(databases.create("postgresql"))
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432).start()
    proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    env = stack_environment(proxied, redis_server.url, LOG_FORMAT=request.param)
    key, unused_key = env_api_key(env), env_api_key(env)
    web, port = start_web(env, tmp_path, workers=1)
    KEYS[port] = key
    yield ProxiedWeb(web, port, proxy, request.param, unused_key)
    del KEYS[port]
    web.stop()
    proxy.cut()


def test_an_unreachable_database_answers_503_and_metrics_keep_answering(
    proxied_web: ProxiedWeb,
) -> None:
    port = proxied_web.port
    assert call(port, "/messages", "up-fast", {"content": "a"}).status == 201
    assert (
        call(port, "/messages", "up-view", {"content": "b"}, **{"Idempotency-Key": "k"}).status
        == 201
    )
    proxied_web.proxy.cut()

    down = {
        "down-fast": call(port, "/messages", "down-fast", {"content": "c"}),
        "down-view": call(
            port, "/messages", "down-view", {"content": "d"}, **{"Idempotency-Key": "l"}
        ),
        "down-read": call(port, "/messages/1", "down-read"),
        "down-key": call(port, "/messages/1", "down-key", key=proxied_web.unused_key),
    }
    for answer in down.values():
        assert (answer.status, answer.error_code()) == (503, "database_unavailable"), answer
        assert answer.headers["Retry-After"] == "5"
    metrics = call(port, "/metrics", "down-metrics")
    assert metrics.status == 200
    assert b"http_requests_total{" in metrics.body
    assert b"n3hub_database_up 0.0" in metrics.body
    assert b"n3hub_messages{" not in metrics.body
    ready = call(port, "/readyz", "down-ready")
    assert (ready.status, ready.error_code()) == (503, "dependency_unavailable")

    proxied_web.proxy.start()
    wait_for(
        lambda: call(port, "/messages/1", "back").status == 200,
        timeout=30,
        what="the database back",
    )
    assert b"n3hub_database_up 1.0" in call(port, "/metrics", "back-metrics").body

    proxied_web.web.stop()
    records = proxied_web.log_records()
    ids = {"up-fast", "up-view", *down, "down-metrics", "down-ready", "back", "back-metrics"}
    access_ids = [rid for rid, access, _ in records if access]
    assert ids <= set(access_ids) and "-" not in access_ids, records
    for request_id in down:
        assert any(
            rid == request_id and "database unavailable" in line for rid, _, line in records
        ), (request_id, records)
    # Inside a request every line has that request's id; '-' is left to lines about none.
    assert not [line for rid, _, line in records if rid == "-" and "answered 503" in line]


def test_busy_and_unreachable_are_told_apart() -> None:
    assert is_busy_error(sqlite3.OperationalError("database is locked"))
    assert not is_busy_error(sqlite3.OperationalError("unable to open database file"))
