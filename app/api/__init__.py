"""The HTTP API: message endpoints, health probes and the JSON error envelope."""

from flask import Flask

from app.api import errors, fast_ingest, health, messages


def init_app(app: Flask) -> None:
    """Register the API's blueprints, error handlers and the fast path of ``POST /messages``."""
    errors.init_app(app)
    app.register_blueprint(messages.bp)
    app.register_blueprint(health.bp)
    fast_ingest.init_app(app)
