"""Load generators: wrk for throughput (a Python fallback without it) and a paced sender.

Throughput runs are closed-loop: a fixed number of connections each send the
next request as soon as the last one is answered. The paced sender is
open-loop: request ``i`` is due at ``start + i / rate`` whether or not earlier
ones have been answered, which is how a steady stream of producers behaves.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.client import HTTPException
from pathlib import Path
from string import Template
from typing import Any

from scripts.bench.client import AUTH_HEADERS, Client
from scripts.bench.report import percentile

POST_MESSAGES_LUA = """\
-- POST /messages with a JSON body whose content differs from request to request.
local counter = 0
request = function()
  counter = counter + 1
  local body = '{"content": "benchmark message ' .. counter ..
    ': the quick brown fox jumps over the lazy dog"}'
  local headers = {["Content-Type"] = "application/json",
                   ["Authorization"] = wrk.headers["Authorization"]}
  return wrk.format("POST", "/messages", headers, body)
end
"""
POST_BATCHES_LUA = """\
-- POST /messages/batch with $size messages per request, each content different.
local counter = 0
request = function()
  local items = {}
  for i = 1, $size do
    counter = counter + 1
    items[i] = '{"content": "benchmark message ' .. counter ..
      ': the quick brown fox jumps over the lazy dog"}'
  end
  local body = '{"messages": [' .. table.concat(items, ", ") .. ']}'
  local headers = {["Content-Type"] = "application/json",
                   ["Authorization"] = wrk.headers["Authorization"]}
  return wrk.format("POST", "/messages/batch", headers, body)
end
"""
_UNIT_SECONDS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def message_payload(tag: str, number: int) -> dict[str, str]:
    """The body the Python senders post: the same shape and size as the wrk script's."""
    return {"content": f"{tag} {number}: the quick brown fox jumps over the lazy dog"}


def batch_payload(tag: str, number: int, size: int) -> dict[str, list[dict[str, str]]]:
    """A ``POST /messages/batch`` body of ``size`` messages."""
    first = number * size
    return {"messages": [message_payload(tag, first + offset) for offset in range(size)]}


@dataclass
class Throughput:
    """What one closed-loop load run achieved."""

    tool: str
    requests: int
    seconds: float
    errors: int
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def find_wrk(install: bool = True) -> str | None:
    """Path of wrk; installs Debian's package when missing and running as root."""
    found = shutil.which("wrk")
    if found or not install or os.geteuid() != 0 or not shutil.which("apt-get"):
        return found
    install_wrk = ["apt-get", "install", "-y", "-q", "wrk"]
    # The package lists may be missing or stale: refresh them only if the first try fails.
    for commands in ([install_wrk], [["apt-get", "update", "-q"], install_wrk]):
        for command in commands:
            subprocess.run(command, check=False, capture_output=True, timeout=600)
        found = shutil.which("wrk")
        if found:
            return found
    return None


def _seconds(value: str, unit: str) -> float:
    return float(value) * _UNIT_SECONDS[unit]


def parse_wrk_output(text: str) -> Throughput:
    """Read requests, duration, errors and latency percentiles from wrk's report."""
    done = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", text)
    if done is None:
        raise RuntimeError(f"unexpected wrk output:\n{text}")
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    errors = int(non_2xx.group(1)) if non_2xx else 0
    if socket_errors:
        errors += sum(int(count) for count in socket_errors.groups())
    latency = {
        int(share): _seconds(value, unit) * 1000
        for share, value, unit in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)
    }
    return Throughput(
        tool="wrk",
        requests=int(done.group(1)),
        seconds=_seconds(done.group(2), done.group(3)),
        errors=errors,
        latency_p50_ms=latency.get(50),
        latency_p99_ms=latency.get(99),
    )


def run_wrk(
    wrk: str, url: str, duration: float, connections: int, script: Path | None = None
) -> Throughput:
    """Run wrk against ``url`` for ``duration`` seconds and parse its report."""
    argv = [wrk, f"-t{min(connections, os.cpu_count() or 1)}", f"-c{connections}"]
    argv += [f"-d{max(1, round(duration))}s", "--latency", "--timeout", "10s"]
    if script is not None:
        argv += ["-s", str(script)]
    for name, value in AUTH_HEADERS.items():
        argv += ["-H", f"{name}: {value}"]
    completed = subprocess.run(
        [*argv, url], check=True, capture_output=True, text=True, timeout=duration + 60
    )
    return parse_wrk_output(completed.stdout)


def run_python_load(
    port: int, send: Callable[[Client, int], int], duration: float, connections: int
) -> Throughput:
    """Closed-loop load from Python threads, for machines without wrk.

    ``send(client, n)`` makes the n-th request of a thread and returns its status.
    """
    deadline = time.perf_counter() + duration

    def loop(_: int) -> tuple[list[float], int]:
        client, latencies, errors = Client(port), [], 0
        for number in itertools.count():
            if time.perf_counter() >= deadline:
                break
            started = time.perf_counter()
            try:
                ok = send(client, number) < 400
            except (OSError, HTTPException):
                ok = False
            latencies.append(time.perf_counter() - started)
            errors += not ok
        client.close()
        return latencies, errors

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=connections) as pool:
        results = list(pool.map(loop, range(connections)))
    seconds = time.perf_counter() - started
    latencies = [value * 1000 for thread, _ in results for value in thread]
    return Throughput(
        tool="python",
        requests=len(latencies),
        seconds=seconds,
        errors=sum(errors for _, errors in results),
        latency_p50_ms=percentile(latencies, 50),
        latency_p99_ms=percentile(latencies, 99),
    )


class ClosedLoop:
    """Throughput runs with wrk, or with Python threads where wrk cannot be had."""

    def __init__(
        self, wrk: str | None, script_dir: Path, duration: float, connections: int
    ) -> None:
        self.wrk = wrk
        self.script_dir = script_dir
        self.duration = duration
        self.connections = connections

    @property
    def tool(self) -> str:
        return f"wrk ({self.wrk})" if self.wrk else "Python threads (no wrk)"

    def get_root(self, port: int) -> Throughput:
        """``GET /`` as fast as the connections allow."""
        if self.wrk is not None:
            url = f"http://127.0.0.1:{port}/"
            return run_wrk(self.wrk, url, self.duration, self.connections)
        return run_python_load(
            port, lambda client, _: client.get("/").status, self.duration, self.connections
        )

    def post_messages(self, port: int) -> Throughput:
        """``POST /messages`` with distinct small JSON bodies, as fast as the connections allow."""
        if self.wrk is not None:
            return self._wrk_script(port, "/messages", POST_MESSAGES_LUA)

        def send(client: Client, number: int) -> int:
            return client.post("/messages", message_payload("benchmark message", number)).status

        return run_python_load(port, send, self.duration, self.connections)

    def post_batches(self, port: int, size: int) -> Throughput:
        """``POST /messages/batch`` with ``size`` messages per request."""
        if self.wrk is not None:
            return self._wrk_script(port, "/messages/batch", POST_BATCHES_LUA, size=size)

        def send(client: Client, number: int) -> int:
            body = batch_payload("benchmark message", number, size)
            return client.post("/messages/batch", body).status

        return run_python_load(port, send, self.duration, self.connections)

    def _wrk_script(self, port: int, path: str, script: str, **values: object) -> Throughput:
        assert self.wrk is not None
        script_path = self.script_dir / f"{path.strip('/').replace('/', '_')}.lua"
        script_path.write_text(Template(script).substitute(values))
        url = f"http://127.0.0.1:{port}{path}"
        return run_wrk(self.wrk, url, self.duration, self.connections, script_path)


@dataclass
class PacedRun:
    """What the paced sender did: the ids it created and how punctual it was."""

    rate: float
    seconds: float
    ids: list[int] = field(default_factory=list)
    errors: int = 0
    response_ms: list[float] = field(default_factory=list)
    max_lateness_ms: float = 0.0

    @property
    def achieved_rate(self) -> float:
        return len(self.ids) / self.seconds if self.seconds else 0.0


def paced_posts(port: int, rate: float, duration: float, senders: int = 64) -> PacedRun:
    """POST ``rate`` messages a second for ``duration`` seconds, each at its due time."""
    total = int(rate * duration)
    numbers = itertools.count()
    lock = threading.Lock()
    run = PacedRun(rate=rate, seconds=duration)
    start = time.perf_counter() + 0.05

    def sender(_: int) -> None:
        client = Client(port)
        while (number := next(numbers)) < total:
            lateness = time.perf_counter() - (start + number / rate)
            if lateness < 0:
                time.sleep(-lateness)
            reply: Any = None
            with contextlib.suppress(OSError, HTTPException):
                reply = client.post("/messages", message_payload("latency probe", number))
            with lock:
                run.max_lateness_ms = max(run.max_lateness_ms, lateness * 1000)
                if reply is not None and reply.status == 201:
                    run.ids.append(reply.body["id"])
                    run.response_ms.append(reply.seconds * 1000)
                else:
                    run.errors += 1
        client.close()

    with ThreadPoolExecutor(max_workers=senders) as pool:
        list(pool.map(sender, range(senders)))
    run.seconds = time.perf_counter() - start
    return run
