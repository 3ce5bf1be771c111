"""The HTTP API: messages, operator actions, probes, OpenAPI and docs, errors, the guard."""

from flask import Flask
from werkzeug.routing import IntegerConverter

from app import logs
from app.api import docs, errors, fast_ingest, guard, health, messages, openapi, operations


class BoundedIntegerConverter(IntegerConverter):
    """``<int:...>`` of at most 19 digits: a longer id matches no route (404) before int()."""

    regex = r"\d{1,19}"


def init_app(app: Flask) -> None:
    """Register blueprints, the API's description and docs, error handlers, fast path and guard."""
    app.url_map.converters["int"] = BoundedIntegerConverter
    errors.init_app(app)
    app.register_blueprint(messages.bp)
    app.register_blueprint(operations.bp)
    app.register_blueprint(health.bp)
    openapi.init_app(app)
    docs.init_app(app)
    fast_ingest.init_app(app)
    logs.wrap_wsgi(app)  # around the fast path too; a refusal is answered inside it
    guard.init_app(app)
