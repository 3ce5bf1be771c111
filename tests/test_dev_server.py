"""``python run.py``, the development server: its request lines carry the request id."""

from __future__ import annotations

import sys
from pathlib import Path
from urllib.request import Request, urlopen

from tests.conftest import stack_environment
from tests.support.processes import ManagedProcess, RedisServer, free_port


def test_the_dev_servers_request_line_carries_the_request_id(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    port = free_port()
    env = stack_environment(
        f"sqlite:///{tmp_path / 'messages.db'}", redis_server.url, PORT=str(port), HOST="127.0.0.1"
    )
    server = ManagedProcess([sys.executable, "run.py"], env, tmp_path / "run.log").start()
    try:
        server.wait_until_answering(f"http://127.0.0.1:{port}/healthz", "python run.py")
        request = Request(f"http://127.0.0.1:{port}/healthz", headers={"X-Request-ID": "dev-7"})
        with urlopen(request, timeout=10) as response:
            assert response.headers["X-Request-ID"] == "dev-7"
    finally:
        server.stop()
    [line] = [line for line in server.log_tail(200).splitlines() if "req=dev-7" in line]
    assert "[werkzeug]" in line and '"GET /healthz HTTP/1.1" 200' in line
