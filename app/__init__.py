"""N3Hub: a message-processing service. ``create_app`` builds the Flask app."""

from __future__ import annotations

from typing import Any

from flask import Flask

from app import api, auth, console, database, logs, metrics, wakeups
from app.celery_app import celery_init_app
from app.config import INSTANCE_DIR, load_config
from app.ingest import GroupCommit
from app.worker import settings as worker_settings


def create_app(overrides: dict[str, Any] | None = None) -> Flask:
    """Build the app from the environment, with ``overrides`` on top (used by tests)."""
    # No static files: every route declares who may call it (the console inlines its styles).
    app = Flask(__name__, instance_path=str(INSTANCE_DIR), static_folder=None)
    app.config.update(load_config())
    app.config.update(overrides or {})
    app.json.sort_keys = False
    logs.init_app(app)
    database.init_app(app)
    worker_settings.init_app(app)
    celery_init_app(app)
    wakeups.init_app(app)
    app.extensions["group_commit"] = GroupCommit(app.config["COMMIT_GATHER_SECONDS"])
    metrics.init_app(app)
    auth.init_app(app)
    console.init_app(app)
    api.init_app(app)
    return app
