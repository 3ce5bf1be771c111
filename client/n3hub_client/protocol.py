"""The client's protocol without I/O: effects, requests, answers and the retry rule.

Every API call is written once, in :mod:`n3hub_client.operations`, as a generator
that yields *effects* (a :class:`Call` to send, a :class:`Pause`, an :class:`Emit`
of a value for the caller) and is sent what each call answered. :class:`Client`
carries the effects out with blocking calls and :class:`AsyncClient` with awaits,
so the two cannot drift apart.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Generator
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from n3hub_client.errors import APIError, ConnectionFailed

log = logging.getLogger("n3hub_client")

IDEMPOTENCY_HEADER = "Idempotency-Key"
RETRY_STATUSES = frozenset({429, 503})
USER_AGENT = "n3hub-client/0.1.0"


@dataclass(frozen=True)
class Call:
    """An HTTP request to send; the path is relative to the server's URL."""

    method: str
    path: str
    params: dict[str, str] | None = None
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    idempotent: bool = False

    @property
    def replayable(self) -> bool:
        """Whether sending it twice has the effect of sending it once."""
        return self.method == "GET" or self.idempotent

    def build(self, http: httpx.Client | httpx.AsyncClient) -> httpx.Request:
        """The request for ``http``, whose base URL and headers it inherits."""
        return http.build_request(
            self.method, self.path, params=self.params, json=self.json, headers=self.headers
        )


@dataclass(frozen=True)
class Pause:
    """Wait this many seconds before the next effect."""

    seconds: float


@dataclass(frozen=True)
class Emit:
    """A value for the caller: the operation's answer, or one item of a sequence."""

    value: Any


Effect = Call | Pause | Emit
Outcome = httpx.Response | httpx.TransportError | None
Operation = Generator[Effect, Outcome, None]
Step = Generator[Effect, Outcome, Any]


def new_idempotency_key() -> str:
    """A fresh random ``Idempotency-Key``."""
    return f"n3hub-client-{uuid.uuid4()}"


def http_options(url: str, api_key: str | None, timeout: float) -> dict[str, Any]:
    """The settings of the httpx client under either client class."""
    headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return {"base_url": url.rstrip("/"), "headers": headers, "timeout": timeout}


def retry_after(response: httpx.Response) -> float | None:
    """The ``Retry-After`` header in seconds (delta or HTTP date); None when absent or bad."""
    value = response.headers.get("Retry-After", "").strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError):
        return None


@dataclass(frozen=True)
class RetryPolicy:
    """When and how long to wait before sending a call again.

    429 and 503 answers are retried after their ``Retry-After`` (capped at
    ``max_delay``), else after an exponential backoff from ``backoff``. A refused
    connection is retried for any call, a broken one only for calls that are safe
    to replay (GETs, and POSTs the server deduplicates by ``Idempotency-Key``).
    """

    max_retries: int = 5
    max_delay: float = 30.0
    backoff: float = 0.25

    def delay(self, call: Call, outcome: Outcome, attempt: int) -> float | None:
        """Seconds to wait before attempt ``attempt + 1``, or None to stop here."""
        if attempt >= self.max_retries:
            return None
        fallback = min(self.backoff * 2**attempt, self.max_delay)
        if isinstance(outcome, httpx.TransportError):
            unsent = isinstance(outcome, httpx.ConnectError | httpx.ConnectTimeout)
            return fallback if unsent or call.replayable else None
        if outcome is None or outcome.status_code not in RETRY_STATUSES:
            return None
        asked = retry_after(outcome)
        return fallback if asked is None else min(asked, self.max_delay)


def answer(call: Call, outcome: Outcome) -> httpx.Response:
    """The successful response, or the error it stands for, raised."""
    if isinstance(outcome, httpx.TransportError):
        raise ConnectionFailed(f"{call.method} {call.path}: {outcome or type(outcome).__name__}")
    assert outcome is not None, "a Call is always answered"
    if outcome.is_error:
        raise APIError.from_response(outcome)
    return outcome


def request(call: Call, policy: RetryPolicy) -> Generator[Effect, Outcome, httpx.Response]:
    """Send ``call``, retrying as ``policy`` says; the final successful response."""
    attempt = 0
    while True:
        outcome = yield call
        delay = policy.delay(call, outcome, attempt)
        if delay is None:
            return answer(call, outcome)
        what = outcome.status_code if isinstance(outcome, httpx.Response) else outcome
        log.info("%s %s: %s, retrying in %.2f s", call.method, call.path, what, delay)
        yield Pause(delay)
        attempt += 1
