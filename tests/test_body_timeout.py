"""A request body that arrives too slowly is answered 408 and its connection closed.

Under every Gunicorn worker class the project supports, with a body that stops,
one that trickles a byte at a time (each byte well within any socket timeout),
and a chunked one; a body that is slow but on time is still accepted.
"""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.conftest import DatabaseFactory, env_api_key, stack_environment, start_web
from tests.support.processes import RedisServer

pytestmark = pytest.mark.slow

BODY_TIMEOUT = 1.0
# Far above BODY_TIMEOUT, far below the time the slow bodies below would take in full.
ANSWER_WITHIN = BODY_TIMEOUT + 4


@dataclass(frozen=True)
class Web:
    port: int
    key: str


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, object]
    seconds: float  # from the first byte sent to the answer
    closed: bool  # the server closed the connection after answering


@pytest.fixture(scope="module", params=["gevent", "gthread", "sync"])
def web(
    request: pytest.FixtureRequest,
    databases: DatabaseFactory,
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Web]:
    env = stack_environment(
        databases.create("sqlite"),
        redis_server.url,
        N3HUB_BODY_TIMEOUT=str(BODY_TIMEOUT),
        GUNICORN_WORKER_CLASS=request.param,
    )
    key = env_api_key(env)
    process, port = start_web(env, tmp_path_factory.mktemp(f"web-{request.param}"), workers=1)
    try:
        yield Web(port, key)
    finally:
        process.stop()


def post_slowly(web: Web, headers: dict[str, str], pieces: list[bytes], interval: float) -> Answer:
    """POST /messages, sending ``pieces`` of the body ``interval`` apart until an answer comes."""
    head = {
        "Host": "127.0.0.1",
        "Authorization": f"Bearer {web.key}",
        "Content-Type": "application/json",
        **headers,
    }
    request = "POST /messages HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in head.items())
    with socket.create_connection(("127.0.0.1", web.port), timeout=30) as connection:
        started = time.monotonic()
        connection.sendall(request.encode() + b"\r\n")
        for piece in pieces:
            if select.select([connection], [], [], interval)[0]:
                break  # the server answered before the body was done
            connection.sendall(piece)
        answered_at = _wait_readable(connection, deadline=started + 30)
        received = _read_until_closed(connection, deadline=answered_at + 10)
    head_bytes, _, body = received.bytes.partition(b"\r\n\r\n")
    status = int(head_bytes.split(b" ", 2)[1])
    return Answer(status, json.loads(body), answered_at - started, received.closed)


@dataclass(frozen=True)
class _Received:
    bytes: bytes
    closed: bool


def _wait_readable(connection: socket.socket, deadline: float) -> float:
    if not select.select([connection], [], [], max(deadline - time.monotonic(), 0))[0]:
        raise AssertionError("no answer from the server")
    return time.monotonic()


def _read_until_closed(connection: socket.socket, deadline: float) -> _Received:
    data = b""
    while time.monotonic() < deadline:
        if not select.select([connection], [], [], deadline - time.monotonic())[0]:
            break
        chunk = connection.recv(65536)
        if not chunk:
            return _Received(data, closed=True)
        data += chunk
        # A keep-alive connection stays open: give the server a moment to close it.
        if _complete(data) and not select.select([connection], [], [], 2)[0]:
            return _Received(data, closed=False)
    return _Received(data, closed=False)


def _complete(data: bytes) -> bool:
    head, separator, body = data.partition(b"\r\n\r\n")
    if not separator:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False


def assert_timed_out(answer: Answer) -> None:
    assert answer.status == 408, answer
    assert answer.body["error"]["code"] == "request_timeout"  # type: ignore[index]
    assert BODY_TIMEOUT <= answer.seconds < ANSWER_WITHIN, answer
    assert answer.closed, "the connection should be closed after a 408"


def test_a_body_that_stops_arriving_is_408(web: Web) -> None:
    body = json.dumps({"content": "x" * 80}).encode()
    assert_timed_out(post_slowly(web, {"Content-Length": str(len(body))}, [body[:10]], 0))


def test_a_body_trickled_a_byte_at_a_time_is_cut_at_the_deadline(web: Web) -> None:
    body = json.dumps({"content": "x" * 200}).encode()
    pieces = [body[i : i + 1] for i in range(len(body))]
    assert_timed_out(post_slowly(web, {"Content-Length": str(len(body))}, pieces, 0.1))


def test_a_chunked_body_trickled_is_cut_at_the_deadline(web: Web) -> None:
    pieces = [b"1\r\n{\r\n"] + [b"1\r\n \r\n"] * 200
    assert_timed_out(post_slowly(web, {"Transfer-Encoding": "chunked"}, pieces, 0.1))


def test_a_slow_body_that_arrives_in_time_is_accepted(web: Web) -> None:
    body = json.dumps({"content": "on time"}).encode()
    pieces = [body[:5], body[5:10], body[10:]]
    answer = post_slowly(web, {"Content-Length": str(len(body))}, pieces, BODY_TIMEOUT / 10)
    assert answer.status == 201, answer
    assert answer.body["content"] == "on time"
