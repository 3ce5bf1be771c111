"""The HTTP API: message endpoints, health probes and the JSON error envelope."""

from flask import Flask

from app.api import errors, health, messages


def init_app(app: Flask) -> None:
    """Register the API's blueprints and error handlers."""
    errors.init_app(app)
    app.register_blueprint(messages.bp)
    app.register_blueprint(health.bp)
