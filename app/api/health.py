"""Liveness and readiness probes."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app
from sqlalchemy import text

from app.auth.access import Access, requires
from app.database import read_connection

bp = Blueprint("health", __name__)


@bp.get("/healthz")
@requires(Access.PUBLIC)
def get_liveness() -> dict[str, str]:
    """The process answers; checks nothing else."""
    return {"status": "ok"}


def _database_ok() -> bool:
    try:
        with read_connection() as connection:
            connection.execute(text("SELECT 1"))
        return True
    except Exception:
        return False


def _broker_ok() -> bool:
    celery = current_app.extensions["celery"]
    try:
        with celery.connection_for_write() as connection:
            connection.ensure_connection(
                max_retries=1, timeout=current_app.config["BROKER_TIMEOUT"]
            )
        return True
    except Exception:
        return False


@bp.get("/readyz")
@requires(Access.PUBLIC)
def get_readiness() -> tuple[dict[str, Any], int]:
    """Ready when the database and the broker answer; 503 naming what is down otherwise."""
    checks = {"database": _database_ok(), "broker": _broker_ok()}
    down = [name for name, ok in checks.items() if not ok]
    body = {
        "status": "ok" if not down else "unavailable",
        "checks": {name: "ok" if ok else "down" for name, ok in checks.items()},
    }
    if down:
        body["error"] = {
            "code": "dependency_unavailable",
            "message": f"Not ready: {', '.join(down)} down.",
            "details": {"down": down},
        }
    return body, 200 if not down else 503
