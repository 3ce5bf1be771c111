"""Celery bound to the Flask app: every task runs inside an app context.

The settings suit at-least-once delivery: a task message is acknowledged only
after the task returns, is requeued when its worker process dies, and a worker
holds no more messages than it is running. Correctness does not rest on them,
though: the database is the source of truth and the recovery sweep finishes
whatever a lost task left behind.
"""

from __future__ import annotations

from typing import Any

from celery import Celery, Task
from flask import Flask

from app.worker.metrics_server import MetricsServerStep
from app.worker.sweep import RecoveryStep

# Longer than any task runs (a drain stops after N3HUB_DRAIN_BUDGET seconds), so
# Redis never hands a running task to a second worker.
VISIBILITY_TIMEOUT_SECONDS = 3600


def celery_settings(config: dict[str, Any]) -> dict[str, Any]:
    """Celery's configuration derived from the app's."""
    timeout = config["BROKER_TIMEOUT"]
    transport_options = {
        "visibility_timeout": VISIBILITY_TIMEOUT_SECONDS,
        "socket_timeout": max(timeout, 5.0),
        "socket_connect_timeout": timeout,
    }
    return {
        "broker_url": config["CELERY_BROKER_URL"],
        "result_backend": config["CELERY_RESULT_BACKEND"],
        "broker_transport_options": transport_options,
        "result_backend_transport_options": {"visibility_timeout": VISIBILITY_TIMEOUT_SECONDS},
        "broker_connection_timeout": timeout,
        "broker_connection_retry_on_startup": True,
        "task_default_queue": config["TASK_QUEUE"],
        "task_ignore_result": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "worker_hijack_root_logger": False,
        "task_serializer": "json",
        "accept_content": ["json"],
    }


def celery_init_app(app: Flask) -> Celery:
    """Create the Celery app for ``app`` and keep it in ``app.extensions["celery"]``."""

    class FlaskTask(Task):
        def __call__(self, *args: object, **kwargs: object) -> object:
            with app.app_context():
                return self.run(*args, **kwargs)

    celery = Celery(app.name, task_cls=FlaskTask, include=["app.tasks"])
    celery.config_from_object(celery_settings(app.config))
    celery.set_default()
    celery.flask_app = app
    celery.steps["worker"].add(RecoveryStep)
    celery.steps["worker"].add(MetricsServerStep)
    app.extensions["celery"] = celery
    return celery
