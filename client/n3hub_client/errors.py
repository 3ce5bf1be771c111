"""The exceptions the client raises; each carries what a caller needs to react."""

from __future__ import annotations

from typing import Any

import httpx


class N3HubError(Exception):
    """Anything that kept an N3Hub call from giving its answer."""


class APIError(N3HubError):
    """The server answered with an error: its status and the envelope's code, message, details."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Any = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.request_id = request_id

    @classmethod
    def from_response(cls, response: httpx.Response) -> APIError:
        """The error a response carries, from its JSON envelope when it has one."""
        request_id = response.headers.get("X-Request-ID")
        try:
            error = response.json()["error"]
            return cls(
                response.status_code,
                str(error["code"]),
                str(error["message"]),
                error.get("details"),
                request_id,
            )
        except (ValueError, KeyError, TypeError):
            reason = response.reason_phrase or "HTTP error"
            return cls(response.status_code, "http_error", reason, None, request_id)


class ConnectionFailed(N3HubError):
    """The server could not be reached, or the connection broke before it answered."""


class WaitTimeout(N3HubError):
    """A message was still unfinished when :meth:`Client.wait` gave up; ``message`` is its state."""

    def __init__(self, message: dict[str, Any], timeout: float) -> None:
        super().__init__(
            f"message {message['id']} is still {message['status']} after {timeout:g} s"
        )
        self.message = message
