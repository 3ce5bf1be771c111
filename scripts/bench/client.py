"""A small keep-alive HTTP client for the benchmark's own requests to 127.0.0.1."""

from __future__ import annotations

import http.client
import json
import time
from dataclasses import dataclass
from typing import Any

JSON_HEADERS = {"Content-Type": "application/json"}
# The bench's API key, as the header every request carries (set by the stack once it has one).
AUTH_HEADERS: dict[str, str] = {}


def use_api_key(key: str) -> None:
    """Send ``key`` as the bearer of every request from now on (wrk's included)."""
    AUTH_HEADERS["Authorization"] = f"Bearer {key}"


@dataclass(frozen=True)
class Reply:
    """One response: status, raw and parsed body (None if not JSON), and the time it took."""

    status: int
    raw: bytes
    body: Any
    seconds: float


class Client:
    """One persistent connection to a local server; reconnects after a failure."""

    def __init__(self, port: int, timeout: float = 30.0) -> None:
        self.port = port
        self.timeout = timeout
        self._connection: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, payload: Any = None) -> Reply:
        """Send one request and read the whole answer."""
        body = json.dumps(payload).encode() if payload is not None else None
        headers = {**AUTH_HEADERS, **(JSON_HEADERS if body is not None else {})}
        # A GET may be resent once on a fresh connection: the server may have closed an idle one.
        tries = 2 if method == "GET" and self._connection is not None else 1
        for attempt in range(tries):
            started = time.perf_counter()
            connection = self._connect()
            try:
                connection.request(method, path, body=body, headers=headers)
                response = connection.getresponse()
                raw = response.read()
                break
            except (OSError, http.client.HTTPException):
                self.close()
                if attempt + 1 == tries:
                    raise
        elapsed = time.perf_counter() - started
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = None
        return Reply(response.status, raw, parsed, elapsed)

    def get(self, path: str) -> Reply:
        return self.request("GET", path)

    def post(self, path: str, payload: Any) -> Reply:
        return self.request("POST", path, payload)

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _connect(self) -> http.client.HTTPConnection:
        if self._connection is None:
            self._connection = http.client.HTTPConnection("127.0.0.1", self.port, self.timeout)
        return self._connection
