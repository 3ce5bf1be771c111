"""Every API call as one generator of effects, shared by the sync and async clients."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from typing import Any

from n3hub_client.errors import APIError, WaitTimeout
from n3hub_client.models import FINAL_STATUSES
from n3hub_client.protocol import (
    IDEMPOTENCY_HEADER,
    Call,
    Emit,
    Operation,
    Pause,
    RetryPolicy,
    Step,
    new_idempotency_key,
    request,
)

# The server's default N3HUB_MAX_BATCH_MESSAGES, used when its OpenAPI document cannot say.
DEFAULT_BATCH_SIZE = 1000
# A batch's body is kept below this; a server with a lower N3HUB_MAX_BODY_BYTES answers 413
# and the batch is sent again in halves.
DEFAULT_CHUNK_BYTES = 512 * 1024
# Bytes a batch item adds to its JSON-encoded content: {"content":...}, and a comma.
ITEM_OVERHEAD = len('{"content":},')
BATCH_PATH = "/messages/batch"


def chunks(contents: Iterable[str], size: int, max_bytes: int) -> Iterator[list[str]]:
    """``contents`` in order, in lists of at most ``size`` items and about ``max_bytes`` of JSON."""
    chunk: list[str] = []
    used = 0
    for content in contents:
        cost = len(json.dumps(content, ensure_ascii=False).encode()) + ITEM_OVERHEAD
        if chunk and (len(chunk) == size or used + cost > max_bytes):
            yield chunk
            chunk, used = [], 0
        chunk.append(content)
        used += cost
    if chunk:
        yield chunk


def resolve(document: dict[str, Any], node: Any) -> Any:
    """``node`` with its local ``$ref`` followed (a few levels deep at most)."""
    for _ in range(8):
        reference = node.get("$ref") if isinstance(node, dict) else None
        if not isinstance(reference, str) or not reference.startswith("#/"):
            return node
        node = document
        for part in reference[2:].split("/"):
            node = node[part]
    return node


def batch_limit_from(document: dict[str, Any]) -> int | None:
    """The most messages ``POST /messages/batch`` takes, as the OpenAPI document declares it."""
    try:
        body = document["paths"][BATCH_PATH]["post"]["requestBody"]
        schema = resolve(document, resolve(document, body)["content"]["application/json"]["schema"])
        limit = resolve(document, schema["properties"]["messages"])["maxItems"]
    except (KeyError, TypeError):
        return None
    return limit if isinstance(limit, int) and limit > 0 else None


class Operations:
    """The API's calls, with the retry policy and what was learnt about the server."""

    def __init__(self, policy: RetryPolicy, batch_size: int | None, chunk_bytes: int) -> None:
        self.policy = policy
        self.batch_size = batch_size
        self.chunk_bytes = chunk_bytes

    def _json(self, call: Call) -> Step:
        response = yield from request(call, self.policy)
        return response.json()

    def _answer(self, call: Call) -> Operation:
        yield Emit((yield from self._json(call)))

    def send(self, content: str, idempotency_key: str | None) -> Operation:
        """Store one message under an idempotency key (a new one when none is given)."""
        key = idempotency_key or new_idempotency_key()
        headers = {IDEMPOTENCY_HEADER: key}
        body = {"content": content}
        call = Call("POST", "/messages", json=body, headers=headers, idempotent=True)
        return self._answer(call)

    def send_chunks(self, contents: Iterable[str]) -> Operation:
        """Store ``contents`` in batches; emit each batch's stored messages as it is answered."""
        size = yield from self._batch_size()
        for chunk in chunks(contents, size, self.chunk_bytes):
            yield from self._send_chunk(chunk)

    def _send_chunk(self, chunk: list[str]) -> Operation:
        body = {"messages": [{"content": content} for content in chunk]}
        # Sent with a key, but not idempotent=True: a server that ignores the key on
        # batches would store a batch resent after a broken connection twice.
        headers = {IDEMPOTENCY_HEADER: new_idempotency_key()}
        call = Call("POST", BATCH_PATH, json=body, headers=headers)
        try:
            stored = yield from self._json(call)
        except APIError as error:
            if error.status != 413 or len(chunk) == 1:
                raise
            half = len(chunk) // 2
            yield from self._send_chunk(chunk[:half])
            yield from self._send_chunk(chunk[half:])
            return
        yield Emit(stored["messages"])

    def _batch_size(self) -> Step:
        """The server's batch maximum, read once from its OpenAPI document."""
        if self.batch_size is None:
            try:
                document = yield from self._json(Call("GET", "/openapi.json"))
            except APIError:
                document = {}
            self.batch_size = batch_limit_from(document) or DEFAULT_BATCH_SIZE
        return self.batch_size

    def get(self, message_id: int) -> Operation:
        """One message."""
        return self._answer(Call("GET", f"/messages/{message_id}"))

    def stats(self) -> Operation:
        """Counts by status."""
        return self._answer(Call("GET", "/messages/stats"))

    def retry(self, message_id: int) -> Operation:
        """Send a failed message back to pending."""
        return self._answer(Call("POST", f"/messages/{message_id}/retry"))

    def messages(self, status: str | None, page_size: int | None) -> Operation:
        """Emit every message, newest first, following the pages' cursors."""
        params = {"status": status, "limit": str(page_size) if page_size else None}
        cursor: str | None = None
        while True:
            query = {**params, "cursor": cursor}
            page = yield from self._json(
                Call("GET", "/messages", params={k: v for k, v in query.items() if v is not None})
            )
            for message in page["messages"]:
                yield Emit(message)
            cursor = page["next_cursor"]
            if cursor is None:
                return

    def wait(self, message_id: int, timeout: float, poll: float) -> Operation:
        """Poll a message until it is completed or failed; WaitTimeout after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        pause = min(0.05, poll)
        while True:
            message = yield from self._json(Call("GET", f"/messages/{message_id}"))
            remaining = deadline - time.monotonic()
            if message["status"] in FINAL_STATUSES:
                yield Emit(message)
                return
            if remaining <= 0:
                raise WaitTimeout(message, timeout)
            yield Pause(min(pause, remaining))
            pause = min(pause * 2, poll)
