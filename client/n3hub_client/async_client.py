"""The asyncio client: the same operations as :class:`Client`, carried out with awaits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from types import TracebackType
from typing import Any

import httpx

from n3hub_client.base import ClientBase
from n3hub_client.models import Message, Stats
from n3hub_client.protocol import Call, Emit, Operation, Outcome, Pause


class AsyncClient(ClientBase):
    """The asyncio twin of :class:`~n3hub_client.Client`: same methods, awaited.

    Use it as ``async with AsyncClient(url, api_key) as client:`` or await
    :meth:`aclose`. ``send_chunks`` and ``iter_messages`` are async iterators.
    """

    _http: httpx.AsyncClient

    def _open(self, options: dict[str, Any]) -> httpx.AsyncClient:
        return httpx.AsyncClient(**options)

    async def send(self, content: str, idempotency_key: str | None = None) -> Message:
        """See :meth:`Client.send`."""
        return await self._one(self._ops.send(content, idempotency_key))

    def send_chunks(self, contents: Iterable[str]) -> AsyncIterator[list[Message]]:
        """See :meth:`Client.send_chunks`."""
        return self._iterate(self._ops.send_chunks(contents))

    async def send_many(self, contents: Iterable[str]) -> list[Message]:
        """See :meth:`Client.send_many`."""
        return [message async for chunk in self.send_chunks(contents) for message in chunk]

    async def get(self, message_id: int) -> Message:
        """See :meth:`Client.get`."""
        return await self._one(self._ops.get(message_id))

    def iter_messages(
        self, status: str | None = None, page_size: int | None = None
    ) -> AsyncIterator[Message]:
        """See :meth:`Client.iter_messages`."""
        return self._iterate(self._ops.messages(status, page_size))

    async def stats(self) -> Stats:
        """See :meth:`Client.stats`."""
        return await self._one(self._ops.stats())

    async def retry(self, message_id: int) -> Message:
        """See :meth:`Client.retry`."""
        return await self._one(self._ops.retry(message_id))

    async def wait(self, message_id: int, timeout: float = 60.0, poll: float = 1.0) -> Message:
        """See :meth:`Client.wait`."""
        return await self._one(self._ops.wait(message_id, timeout, poll))

    async def aclose(self) -> None:
        """Close the connections."""
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _iterate(self, operation: Operation) -> AsyncIterator[Any]:
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
                await asyncio.sleep(effect.seconds)
            else:
                outcome = await self._perform(effect)

    async def _one(self, operation: Operation) -> Any:
        (value,) = [value async for value in self._iterate(operation)]
        return value

    async def _perform(self, call: Call) -> Outcome:
        try:
            return await self._http.send(call.build(self._http))
        except httpx.TransportError as error:
            return error
