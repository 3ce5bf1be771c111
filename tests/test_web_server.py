"""The web service under Gunicorn with the project's ``gunicorn.conf.py``."""

from __future__ import annotations

import json
import runpy
import subprocess
import sys
from pathlib import Path
from urllib.request import Request, urlopen

import pytest

from app import logs
from app.config import PROJECT_ROOT, load_config
from tests.conftest import bearer, env_api_key, stack_environment, start_web
from tests.support.polling import wait_for
from tests.support.processes import RedisServer, http_ok

TCP_LISTEN = "0A"


def _gunicorn_settings(monkeypatch: pytest.MonkeyPatch, **env: str) -> dict[str, object]:
    for name in ("GUNICORN_REUSE_PORT", "LOG_FORMAT", "FLASK_ENV"):
        monkeypatch.delenv(name, raising=False)
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


def test_a_second_server_on_a_taken_port_stops_with_a_clear_line(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """Two stacks on one port would split its connections (SO_REUSEPORT): the second stops."""
    env = stack_environment(f"sqlite:///{tmp_path / 'first.db'}", redis_server.url)
    first, port = start_web(env, tmp_path, workers=1)
    try:
        assert f"Listening at: http://127.0.0.1:{port}" in first.log_tail()
        second_env = stack_environment(f"sqlite:///{tmp_path / 'second.db'}", redis_server.url)
        second = subprocess.run(
            [sys.executable, "web.py", "--bind", f"127.0.0.1:{port}", "--workers", "1"],
            cwd=PROJECT_ROOT, env=second_env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert second.returncode != 0
        assert f"cannot listen at 127.0.0.1:{port} (Address already in use)" in second.stderr
        assert "Traceback" not in second.stderr and "Booting worker" not in second.stderr
        assert first.alive() and http_ok(f"http://127.0.0.1:{port}/healthz")
    finally:
        first.stop()


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"FLASK_ENV": "production"},
        {"LOG_FORMAT": "json"},
        {"FLASK_ENV": "production", "LOG_FORMAT": "text"},
    ],
)
def test_gunicorn_logs_in_the_format_the_app_does(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> None:
    settings = _gunicorn_settings(monkeypatch, **env)
    assert settings["LOG_FORMAT"] == load_config(env)["LOG_FORMAT"]
    assert settings["JSON_FIELDS"] == logs.JSON_FIELDS
    json_logger = settings["LOG_FORMAT"] == "json"
    assert (settings["logger_class"] is settings["JsonLinesLogger"]) is json_logger


def test_every_line_of_the_web_is_json_in_production(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    env = stack_environment(
        f"sqlite:///{tmp_path / 'messages.db'}", redis_server.url, FLASK_ENV="production"
    )
    key = env_api_key(env)
    web, port = start_web(env, tmp_path, workers=1)
    try:
        request = Request(
            f"http://127.0.0.1:{port}/messages",
            data=b'{"content": "logged"}',
            headers={"Content-Type": "application/json", "X-Request-ID": "trace-42", **bearer(key)},
        )
        with urlopen(request, timeout=10) as response:
            assert response.status == 201
        wait_for(lambda: '"gunicorn.access"' in web.log_tail(500), what="the access line")
    finally:
        web.stop()
    lines = _json_lines(web.log_tail(500))
    assert {"gunicorn.error", "gunicorn.access"} <= {line["name"] for line in lines}
    [post] = [line for line in lines if str(line["message"]).startswith("POST /messages")]
    assert (post["request_id"], post["status"], post["message_id"]) == ("trace-42", 201, "-")


def _json_lines(text: str) -> list[dict[str, object]]:
    """Every non-empty line as JSON; a line that is not JSON fails the test."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]
