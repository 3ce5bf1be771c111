"""The HTTP API: messages, operator actions, health probes, the JSON error envelope, the guard."""

from flask import Flask

from app.api import errors, fast_ingest, guard, health, messages, operations


def init_app(app: Flask) -> None:
    """Register the API's blueprints, error handlers, the fast path and the guard before both."""
    errors.init_app(app)
    app.register_blueprint(messages.bp)
    app.register_blueprint(operations.bp)
    app.register_blueprint(health.bp)
    fast_ingest.init_app(app)
    guard.init_app(app)
