"""Python client for the N3Hub API: :class:`Client`, :class:`AsyncClient` and their errors."""

from n3hub_client.async_client import AsyncClient
from n3hub_client.client import Client
from n3hub_client.errors import APIError, ConnectionFailed, N3HubError, WaitTimeout
from n3hub_client.models import Message, Stats
from n3hub_client.protocol import RetryPolicy

__all__ = [
    "APIError",
    "AsyncClient",
    "Client",
    "ConnectionFailed",
    "Message",
    "N3HubError",
    "RetryPolicy",
    "Stats",
    "WaitTimeout",
]
