"""The fast path of ``POST /messages``: the plain request answered below Flask.

``POST /messages`` is the request the service answers most. Served by Flask,
its request context, routing, hooks and response object cost about as much CPU
as the durable write itself: 0.2 ms of 0.63 per request on a 2-core machine
(BENCHMARKS.md, "A fast path for the plain POST /messages"). This
WSGI middleware answers the plain form of the request itself: ``Content-Type:
application/json`` exactly, a ``Content-Length`` within the body limit, no
``Idempotency-Key``, below an ASCII mount point, and a body that passes the
endpoint's validation and asks for no scheduled delivery. It uses the
endpoint's own parts (validation, group commit, drain request, response shape
and metrics rules), so the answer is the one Flask would give; the request id
comes from the middleware around both (``app.logs.RequestIds``).

Everything else goes to Flask untouched, the body replayed when it was read:
every validation error, idempotent or scheduled request and less common form
of the request is answered by the Flask view and its error handlers, as before.
A failure to store the message is answered by the app's error handlers too, in
a request context opened for it.

Every request hook of the app holds for the fast path too (:data:`APPLIED_HOOKS`);
the tests fail when the app gains one it does not apply. ``N3HUB_FAST_PATH=0``
turns it off, leaving every request to Flask.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask

from app.api.errors import APIError
from app.api.guard import PRINCIPAL_ENVIRON
from app.api.messages import location
from app.api.payloads import JSON_MIMETYPE
from app.api.schemas import (
    IDEMPOTENCY_HEADER,
    MESSAGE,
    json_bytes,
    message_in,
    message_out,
    parse_body,
)
from app.metrics import record_request, time_request_from

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
CREATE_ENDPOINT = "messages.create_message"
# The request hooks whose effect holds for the fast path too: the request metrics,
# which it reproduces, and the guard's refusal, which cannot reach it (the guard sends
# every refused request to Flask). The request id is no hook: a WSGI middleware around
# both gives it (app.logs.RequestIds). A hook missing here would be skipped for plain
# POST /messages.
APPLIED_HOOKS = frozenset(
    {
        "app.metrics._start_timer",
        "app.metrics._record_request",
        "app.api.guard._raise_refusal",
    }
)


def _environ_key(header: str) -> str:
    """Where a WSGI server puts a request header in the environ."""
    return "HTTP_" + header.upper().replace("-", "_")


_IDEMPOTENCY_KEY = _environ_key(IDEMPOTENCY_HEADER)


class FastIngest:
    """Wraps the Flask app's WSGI callable; answers a plain ``POST /messages`` itself."""

    def __init__(self, app: Flask, flask_wsgi_app: WSGIApp) -> None:
        self._app = app
        self._flask = flask_wsgi_app
        (rule,) = app.url_map.iter_rules(CREATE_ENDPOINT)
        self._path = rule.rule
        self._max_body = app.config["MAX_CONTENT_LENGTH"]
        self._message_in = message_in(app.config["MAX_CONTENT_CHARS"])

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        length = self._plain_length(environ)
        if length is None:
            return self._flask(environ, start_response)
        started = time.perf_counter()
        body = environ["wsgi.input"].read(length)
        try:
            message = parse_body(self._message_in, body)
        except APIError:
            message = None
        if message is None or message.scheduled:
            environ["wsgi.input"] = io.BytesIO(body)
            return self._flask(environ, start_response)
        with self._app.app_context():
            try:
                tenant = environ[PRINCIPAL_ENVIRON].tenant
                row = self._app.extensions["group_commit"].create(tenant, message.content)
            except Exception as error:
                return self._error_answer(environ, error, started)(environ, start_response)
            self._app.extensions["drain_requests"].request_soon()
        payload = json_bytes(MESSAGE, message_out(row))
        start_response(
            "201 CREATED",
            [
                ("Content-Type", JSON_MIMETYPE),
                ("Content-Length", str(len(payload))),
                ("Location", location(environ.get("SCRIPT_NAME", "").rstrip("/"), row["id"])),
            ],
        )
        record_request("POST", self._path, 201, time.perf_counter() - started)
        return [payload]

    def _plain_length(self, environ: dict[str, Any]) -> int | None:
        """The body length of a plain ``POST /messages``; None for any other request."""
        length = environ.get("CONTENT_LENGTH", "")
        plain = (
            environ["REQUEST_METHOD"] == "POST"
            and environ.get("PATH_INFO") == self._path
            and environ.get("CONTENT_TYPE") == JSON_MIMETYPE
            and _IDEMPOTENCY_KEY not in environ
            and PRINCIPAL_ENVIRON in environ  # admitted by the guard in front
            and environ.get("SCRIPT_NAME", "").isascii()
            and length.isascii()
            and length.isdigit()
        )
        if not plain or not 0 < int(length) <= self._max_body:
            return None
        return int(length)

    def _error_answer(self, environ: dict[str, Any], error: Exception, started: float) -> Any:
        """The response the app's error handlers give for ``error``, hooks included."""
        app = self._app
        with app.request_context(environ):
            app.preprocess_request()
            time_request_from(started)  # the time spent trying to store counts too
            return app.process_response(app.make_response(app.handle_user_exception(error)))


def request_hooks(app: Flask) -> set[str]:
    """The qualified names of every request hook that applies to ``POST /messages``.

    The app's own hooks and those of the endpoint's blueprint; another
    blueprint's hooks (the console's) never run for this route.
    """
    registries = (
        app.before_request_funcs,
        app.after_request_funcs,
        app.teardown_request_funcs,
        app.url_value_preprocessors,
    )
    scopes = (None, CREATE_ENDPOINT.rpartition(".")[0])
    return {
        f"{hook.__module__}.{hook.__qualname__}"
        for registry in registries
        for scope, hooks in registry.items()
        if scope in scopes
        for hook in hooks
    }


def init_app(app: Flask) -> None:
    """Put the fast path in front of the app's routes, unless ``N3HUB_FAST_PATH`` is off."""
    if app.config["FAST_PATH"]:
        app.wsgi_app = FastIngest(app, app.wsgi_app)  # type: ignore[method-assign]
