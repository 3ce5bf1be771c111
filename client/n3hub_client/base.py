"""What :class:`Client` and :class:`AsyncClient` share: their settings and operations."""

from __future__ import annotations

from typing import Any

from n3hub_client.operations import DEFAULT_CHUNK_BYTES, Operations
from n3hub_client.protocol import RetryPolicy, http_options


class ClientBase:
    """The settings of a client; subclasses open their own kind of httpx client."""

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        batch_size: int | None = None,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    ) -> None:
        self._http = self._open(http_options(url, api_key, timeout))
        self._ops = Operations(retry or RetryPolicy(), batch_size, chunk_bytes)

    def _open(self, options: dict[str, Any]) -> Any:
        raise NotImplementedError
