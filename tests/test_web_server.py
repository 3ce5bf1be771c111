"""The web service under Gunicorn with the project's ``gunicorn.conf.py``."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest

from app.config import PROJECT_ROOT
from tests.conftest import stack_environment, start_web
from tests.support.polling import wait_for
from tests.support.processes import RedisServer

TCP_LISTEN = "0A"


def _gunicorn_settings(monkeypatch: pytest.MonkeyPatch, **env: str) -> dict[str, object]:
    monkeypatch.delenv("GUNICORN_REUSE_PORT", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(PROJECT_ROOT / "gunicorn.conf.py"))


def test_workers_have_a_socket_each_on_linux_unless_turned_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert _gunicorn_settings(monkeypatch)["reuse_port"] is (sys.platform == "linux")
    assert _gunicorn_settings(monkeypatch, GUNICORN_REUSE_PORT="0")["reuse_port"] is False
    assert _gunicorn_settings(monkeypatch, GUNICORN_REUSE_PORT="1")["reuse_port"] is True


def _listening_sockets(port: int) -> int:
    """IPv4 TCP sockets listening on ``port`` (from /proc/net/tcp)."""
    lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    fields = [line.split() for line in lines]
    return sum(
        local.endswith(f":{port:04X}") and state == TCP_LISTEN for _, local, _, state, *_ in fields
    )


@pytest.mark.skipif(sys.platform != "linux", reason="SO_REUSEPORT balances only on Linux")
def test_each_worker_listens_on_the_port_itself(tmp_path: Path, redis_server: RedisServer) -> None:
    """The kernel spreads connections only between sockets: one per worker, none shared."""
    env = stack_environment(f"sqlite:///{tmp_path / 'messages.db'}", redis_server.url)
    web, port = start_web(env, tmp_path, workers=2)
    try:
        # The first worker may answer before the second has bound.
        wait_for(lambda: _listening_sockets(port) == 2, timeout=30, what="two listening sockets")
        assert web.log_tail().count(f"listening at: http://127.0.0.1:{port}") == 2
    finally:
        web.stop()
