"""The HTTP API: messages, probes, OpenAPI and docs, the JSON error envelope and the guard."""

from flask import Flask

from app import logs
from app.api import docs, errors, fast_ingest, guard, health, messages, openapi


def init_app(app: Flask) -> None:
    """Register blueprints, the API's description and docs, error handlers, fast path and guard."""
    errors.init_app(app)
    app.register_blueprint(messages.bp)
    app.register_blueprint(health.bp)
    openapi.init_app(app)
    docs.init_app(app)
    fast_ingest.init_app(app)
    logs.wrap_wsgi(app)  # around the fast path too; a refusal is answered inside it
    guard.init_app(app)
