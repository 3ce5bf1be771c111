"""Real processes for the tests: a Redis server, Celery workers, a Gunicorn web server."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar
from urllib.request import Request, urlopen

from redis import Redis

from app.config import PROJECT_ROOT
from scripts.local_redis import redis_answers, server_command
from tests.support.polling import wait_for


def http_ok(url: str) -> bool:
    """Whether ``url`` answers 200 right now."""
    try:
        with urlopen(url, timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def http_json(
    url: str, body: dict[str, Any] | None = None, key: str | None = None
) -> tuple[int, dict[str, Any]]:
    """Status and JSON body of a GET, or of a POST when ``body`` is given; ``key`` as bearer."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    request = Request(url, data=data, headers=headers)
    with urlopen(request, timeout=10) as response:
        return response.status, json.loads(response.read())


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ManagedProcess:
    """A child process with its output in a log file, stopped on demand.

    Every started process is remembered until it is stopped, so that the session's
    end can stop whatever a failed fixture set-up left running.
    """

    running: ClassVar[set[ManagedProcess]] = set()

    def __init__(self, argv: list[str], env: Mapping[str, str], log_path: Path) -> None:
        self.argv = argv
        self.env = dict(env)
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ManagedProcess:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.argv,
            env=self.env,
            cwd=PROJECT_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        ManagedProcess.running.add(self)
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal_group(self, signum: int) -> None:
        """Send ``signum`` to the process and every child it started."""
        if self.alive():
            os.killpg(self.pid, signum)

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, then SIGKILL if it has not exited within ``timeout``."""
        if self.process is None:
            return None
        if self.alive():
            deadline = time.monotonic() + timeout
            self.signal_group(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.signal_group(signal.SIGKILL)
                self.process.wait(10)
            # Its children may still be stopping theirs (honcho under make does): let them.
            with contextlib.suppress(AssertionError):
                wait_for(
                    lambda: not self._group_exists(),
                    timeout=max(0.0, deadline - time.monotonic()),
                    what="the process group to exit",
                )
        self._kill_leftovers()
        ManagedProcess.running.discard(self)
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL the whole process group at once, as a crash would."""
        self.signal_group(signal.SIGKILL)
        if self.process is not None:
            self.process.wait(10)
        ManagedProcess.running.discard(self)

    @classmethod
    def stop_all_running(cls) -> list[str]:
        """Stop every process still running; return their command lines."""
        leftovers = list(cls.running)
        for process in leftovers:
            process.stop(timeout=5)
        return [" ".join(process.argv) for process in leftovers]

    def _group_exists(self) -> bool:
        try:
            os.killpg(self.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def _kill_leftovers(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)

    def wait_until_answering(self, url: str, what: str, timeout: float = 60) -> None:
        """Poll ``url`` until it answers 200; fail at once if the process dies."""
        wait_for(lambda: http_ok(url) or not self.alive(), timeout=timeout, interval=0.1, what=what)
        assert self.alive(), self.log_tail()

    def log_tail(self, lines: int = 60) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


class RedisServer(ManagedProcess):
    """A redis-server on its own port, so a test may stop, flush or restart it."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}"
        super().__init__(server_command(self.port, directory), os.environ, directory / "redis.log")

    def start(self) -> RedisServer:
        super().start()
        try:
            wait_for(
                lambda: redis_answers(self.url) or not self.alive(),
                timeout=10,
                what=f"redis on {self.port}",
            )
            assert self.alive(), self.log_tail()
        except BaseException:
            self.stop()
            raise
        return self

    def client(self) -> Redis:
        return Redis.from_url(self.url)


def celery_worker(
    env: Mapping[str, str], log_path: Path, concurrency: int = 2, hostname: str = "w1"
) -> ManagedProcess:
    """A ``celery worker`` process started with the seed's command."""
    argv = [
        str(Path(sys.executable).parent / "celery"),
        "-A", "app.celery_worker.celery", "worker",
        "--loglevel=info",
        f"--concurrency={concurrency}",
        f"--hostname={hostname}@%h",
        "--without-gossip", "--without-mingle",
    ]  # fmt: skip
    return ManagedProcess(argv, env, log_path)


def gunicorn_web(env: Mapping[str, str], log_path: Path, port: int, workers: int) -> ManagedProcess:
    """The web service under Gunicorn with the project's config file."""
    argv = [
        sys.executable, "web.py",
        "--bind", f"127.0.0.1:{port}",
        "--workers", str(workers),
    ]  # fmt: skip
    return ManagedProcess(argv, env, log_path)
