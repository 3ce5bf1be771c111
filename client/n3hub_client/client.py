"""The blocking client: carries out the shared operations with httpx.Client."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Any

import httpx

from n3hub_client.base import ClientBase
from n3hub_client.models import Message, Stats
from n3hub_client.protocol import Call, Emit, Operation, Outcome, Pause


class Client(ClientBase):
    """A blocking N3Hub client.

    ``Client("http://localhost:5000", api_key)``; use it as a context manager or
    call :meth:`close`. Errors raise :class:`~n3hub_client.errors.APIError` (the
    server's envelope), :class:`~n3hub_client.errors.ConnectionFailed` or
    :class:`~n3hub_client.errors.WaitTimeout`. 429 and 503 answers are retried
    after their ``Retry-After``, at most ``retry.max_retries`` times.
    """

    _http: httpx.Client

    def _open(self, options: dict[str, Any]) -> httpx.Client:
        return httpx.Client(**options)

    def send(self, content: str, idempotency_key: str | None = None) -> Message:
        """Store a message; a retried send is stored once (a key is generated if none is given)."""
        return self._one(self._ops.send(content, idempotency_key))

    def send_chunks(self, contents: Iterable[str]) -> Iterator[list[Message]]:
        """Store ``contents`` through ``POST /messages/batch``; yield each stored batch in order.

        Batches hold as many messages as the server takes (read from its
        ``/openapi.json``, else 1000) and stay below ``chunk_bytes`` of JSON.
        """
        return self._iterate(self._ops.send_chunks(contents))

    def send_many(self, contents: Iterable[str]) -> list[Message]:
        """Store ``contents`` in batches; the stored messages, in order."""
        return [message for chunk in self.send_chunks(contents) for message in chunk]

    def get(self, message_id: int) -> Message:
        """The message with this id."""
        return self._one(self._ops.get(message_id))

    def iter_messages(
        self, status: str | None = None, page_size: int | None = None
    ) -> Iterator[Message]:
        """Every message (of ``status``, if given), newest first, page after page."""
        return self._iterate(self._ops.messages(status, page_size))

    def stats(self) -> Stats:
        """Counts of messages by status."""
        return self._one(self._ops.stats())

    def retry(self, message_id: int) -> Message:
        """Send a failed message back to pending (APIError 409 for any other status)."""
        return self._one(self._ops.retry(message_id))

    def wait(self, message_id: int, timeout: float = 60.0, poll: float = 1.0) -> Message:
        """The message once completed or failed; WaitTimeout after ``timeout`` seconds."""
        return self._one(self._ops.wait(message_id, timeout, poll))

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _iterate(self, operation: Operation) -> Iterator[Any]:
        outcome: Outcome = None
        while True:
            try:
                effect = operation.send(outcome)
            except StopIteration:
                return
            outcome = None
            if isinstance(effect, Emit):
                yield effect.value
            elif isinstance(effect, Pause):
                time.sleep(effect.seconds)
            else:
                outcome = self._perform(effect)

    def _one(self, operation: Operation) -> Any:
        (value,) = self._iterate(operation)
        return value

    def _perform(self, call: Call) -> Outcome:
        try:
            return self._http.send(call.build(self._http))
        except httpx.TransportError as error:
            return error
