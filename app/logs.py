"""Logging: one line per event, JSON in production and readable text in development.

Each record carries the request id of the HTTP request it belongs to (taken from
``X-Request-ID`` or generated) and, where one applies, the message id. The id is
given by a WSGI middleware around the app and its fast path (inside the guard,
which hands its refusals to the app) and kept in a context variable, so every
line logged while a request is served carries it; the same middleware returns it
in the ``X-Request-ID`` header, which Gunicorn's access lines read.
"""

from __future__ import annotations

import logging
import re
import sys
import uuid
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from typing import Any

from flask import Flask
from pythonjsonlogger.json import JsonFormatter
from werkzeug.wsgi import ClosingIterator

REQUEST_ID_HEADER = "X-Request-ID"
NO_ID = "-"
# Letters, digits and . _ : - only: anything else could forge fields in the text log format.
REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,128}")
TEXT_FORMAT = (
    "%(asctime)s %(levelname)s [%(name)s] [req=%(request_id)s msg=%(message_id)s] %(message)s"
)
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(request_id)s %(message_id)s %(message)s"

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

_REQUEST_ID_ENVIRON = "HTTP_" + REQUEST_ID_HEADER.upper().replace("-", "_")
_current_request_id: ContextVar[str] = ContextVar("request_id", default=NO_ID)


class ContextFilter(logging.Filter):
    """Adds ``request_id`` and ``message_id`` to every record, '-' when none applies."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = _current_request_id.get()
        if not hasattr(record, "message_id"):
            record.message_id = NO_ID
        return True


def configure_logging(level: str, fmt: str) -> None:
    """Install one stderr handler on the root logger (idempotent)."""
    root = logging.getLogger()
    for handler in root.handlers:
        if getattr(handler, "n3hub", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.n3hub = True  # type: ignore[attr-defined]
    handler.addFilter(ContextFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter(JSON_FIELDS, rename_fields={"levelname": "level"}))
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root.addHandler(handler)
    root.setLevel(level)


def request_id_for(supplied: str | None) -> str:
    """The id of a request: the client's ``X-Request-ID`` when usable, else a new one."""
    if supplied and REQUEST_ID_PATTERN.fullmatch(supplied):
        return supplied
    return uuid.uuid4().hex


class RequestIds:
    """WSGI middleware: each request's id, for its log lines and its ``X-Request-ID`` header."""

    def __init__(self, wsgi_app: WSGIApp) -> None:
        self._app = wsgi_app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        request_id = request_id_for(environ.get(_REQUEST_ID_ENVIRON))

        def start_with_id(status: str, headers: list[tuple[str, str]], *exc_info: Any) -> Any:
            headers = [(k, v) for k, v in headers if k.lower() != REQUEST_ID_HEADER.lower()]
            return start_response(status, [*headers, (REQUEST_ID_HEADER, request_id)], *exc_info)

        _current_request_id.set(request_id)
        try:
            response = self._app(environ, start_with_id)
        except BaseException:
            _forget_request_id()
            raise
        # Kept until the answer is sent: the dev server logs its access line while writing.
        return ClosingIterator(response, _forget_request_id)


def _forget_request_id() -> None:
    _current_request_id.set(NO_ID)


def init_app(app: Flask) -> None:
    """Configure logging from the app's settings."""
    configure_logging(app.config["LOG_LEVEL"], app.config["LOG_FORMAT"])


def wrap_wsgi(app: Flask) -> None:
    """Give every request an id; called after the fast path is in place, so it wraps it too."""
    app.wsgi_app = RequestIds(app.wsgi_app)  # type: ignore[method-assign]
