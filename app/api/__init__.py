"""The HTTP API: message endpoints, health probes, the JSON error envelope and the guard."""

from flask import Flask
from werkzeug.routing import IntegerConverter

from app.api import errors, fast_ingest, guard, health, messages


class BoundedIntegerConverter(IntegerConverter):
    """``<int:...>`` of at most 19 digits: a longer id matches no route (404) before int()."""

    regex = r"\d{1,19}"


def init_app(app: Flask) -> None:
    """Register the API's blueprints, error handlers, the fast path and the guard before both."""
    app.url_map.converters["int"] = BoundedIntegerConverter
    errors.init_app(app)
    app.register_blueprint(messages.bp)
    app.register_blueprint(health.bp)
    fast_ingest.init_app(app)
    guard.init_app(app)
