"""One JSON error envelope for every error the API returns.

``{"error": {"code": "...", "message": "...", "details": ...}}``, whether the
error is ours (:class:`APIError`), Werkzeug's (404, 405, 413, ...), a database
that stayed busy or cannot be reached (503, two codes) or a bug (500, logged with
its traceback).
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from app.database import is_busy_error, is_transient_error
from app.metrics import count_error

log = logging.getLogger(__name__)

BUSY_RETRY_AFTER_SECONDS = 1
UNAVAILABLE_RETRY_AFTER_SECONDS = 5
# The code of an HTTP error without one of its own below.
FALLBACK_HTTP_ERROR_CODE = "http_error"
HTTP_ERROR_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


class APIError(Exception):
    """An error answered to the client with its own status and code."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers

    def to_dict(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            error["details"] = self.details
        return {"error": error}


def validation_error(message: str, details: Any = None) -> APIError:
    """A 400 for input that is well-formed but not acceptable."""
    return APIError(400, "validation_error", message, details)


def error_response(error: APIError, headers: Any = None) -> tuple[Response, int, Any]:
    """Render an :class:`APIError` and count it."""
    count_error(error.code)
    return jsonify(error.to_dict()), error.status, headers


def handle_api_error(error: APIError) -> tuple[Response, int, Any]:
    return error_response(error, error.headers)


def handle_http_exception(error: HTTPException) -> tuple[Response, int, Any]:
    status = error.code or 500
    code = HTTP_ERROR_CODES.get(status, FALLBACK_HTTP_ERROR_CODE)
    headers = [(k, v) for k, v in error.get_headers() if k.lower() != "content-type"]
    return error_response(APIError(status, code, error.description or error.name), headers)


def handle_unexpected(error: Exception) -> tuple[Response, int, Any]:
    if isinstance(error, HTTPException):
        return handle_http_exception(error)
    if is_transient_error(error) and is_busy_error(error):
        log.warning("database busy, answered 503: %s", error)
        busy = APIError(503, "service_unavailable", "The database is busy; retry shortly.")
        return error_response(busy, {"Retry-After": str(BUSY_RETRY_AFTER_SECONDS)})
    if is_transient_error(error):
        log.warning("database unavailable, answered 503: %s", " ".join(str(error).split()))
        down = APIError(503, "database_unavailable", "The database cannot be reached; retry later.")
        return error_response(down, {"Retry-After": str(UNAVAILABLE_RETRY_AFTER_SECONDS)})
    log.exception("unhandled error")
    return error_response(APIError(500, "internal_error", "An unexpected error occurred."))


def init_app(app: Flask) -> None:
    """Route every error through the JSON envelope."""
    app.register_error_handler(APIError, handle_api_error)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(Exception, handle_unexpected)
