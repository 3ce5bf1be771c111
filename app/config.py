"""Configuration read from environment variables, with defaults that work on a laptop.

This is the only module that reads ``os.environ``. Every setting is documented in
the README's configuration table.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
INSTANCE_DIR = PROJECT_ROOT / "instance"
DEFAULT_DATABASE_URL = f"sqlite:///{INSTANCE_DIR / 'messages.db'}"
DEFAULT_BROKER_URL = "redis://localhost:6379/0"
DEFAULT_RESULT_BACKEND = "redis://localhost:6379/1"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class ConfigError(ValueError):
    """An environment variable holds a value that cannot be used."""


def _text(env: Mapping[str, str], name: str, default: str) -> str:
    return env.get(name, "").strip() or default


def _number(env: Mapping[str, str], name: str, default: float, kind: type, minimum: float) -> Any:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a valid {kind.__name__}") from None
    if value < minimum:
        raise ConfigError(f"{name}={raw!r} must be at least {minimum}")
    return value


def _integer(env: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
    return _number(env, name, default, int, minimum)


def _seconds(env: Mapping[str, str], name: str, default: float, minimum: float = 0.0) -> float:
    return _number(env, name, default, float, minimum)


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean (use 1/0, true/false)")


def normalise_database_url(url: str) -> str:
    """Point plain ``postgres://`` and ``postgresql://`` URLs at the psycopg 3 driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def load_config(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Build the Flask config mapping from environment variables."""
    env = os.environ if env is None else env
    production = _text(env, "FLASK_ENV", "development") == "production"
    broker_url = _text(env, "CELERY_BROKER_URL", DEFAULT_BROKER_URL)
    result_backend = _text(env, "CELERY_RESULT_BACKEND", DEFAULT_RESULT_BACKEND)
    default_wake_url = broker_url if broker_url.startswith(("redis://", "rediss://")) else ""
    return {
        "ENV_NAME": "production" if production else "development",
        "DEBUG": not production and _flag(env, "FLASK_DEBUG", False),
        "SQLALCHEMY_DATABASE_URI": normalise_database_url(
            _text(env, "DATABASE_URL", DEFAULT_DATABASE_URL)
        ),
        "SQLITE_SYNCHRONOUS": _text(env, "N3HUB_SQLITE_SYNCHRONOUS", "FULL").upper(),
        "SQLITE_BUSY_TIMEOUT": _seconds(env, "N3HUB_SQLITE_BUSY_TIMEOUT", 30.0, 0.1),
        "AUTO_MIGRATE": _flag(env, "N3HUB_AUTO_MIGRATE", True),
        "MAX_CONTENT_LENGTH": _integer(env, "N3HUB_MAX_BODY_BYTES", 1024 * 1024),
        "MAX_BATCH": _integer(env, "N3HUB_MAX_BATCH", 1000),
        "INGEST_GATHER_SECONDS": _seconds(env, "N3HUB_INGEST_GATHER_SECONDS", 0.001),
        "PAGE_SIZE": _integer(env, "N3HUB_PAGE_SIZE", 50),
        "MAX_PAGE_SIZE": _integer(env, "N3HUB_MAX_PAGE_SIZE", 200),
        "CELERY_BROKER_URL": broker_url,
        "CELERY_RESULT_BACKEND": result_backend,
        "TASK_QUEUE": _text(env, "N3HUB_TASK_QUEUE", "n3hub"),
        "WAKE_REDIS_URL": _text(env, "N3HUB_WAKE_REDIS_URL", default_wake_url),
        "BROKER_TIMEOUT": _seconds(env, "N3HUB_BROKER_TIMEOUT", 1.0, 0.05),
        "IDEMPOTENCY_TTL": _seconds(env, "N3HUB_IDEMPOTENCY_TTL", 86400.0, 1.0),
        "PROCESSOR": _text(env, "N3HUB_PROCESSOR", "app.worker.processors:analyse_text"),
        "BATCH_SIZE": _integer(env, "N3HUB_BATCH_SIZE", 200),
        "DRAIN_BUDGET": _seconds(env, "N3HUB_DRAIN_BUDGET", 5.0, 0.1),
        "GATHER_SECONDS": _seconds(env, "N3HUB_GATHER_SECONDS", 0.02),
        "MAX_ATTEMPTS": _integer(env, "N3HUB_MAX_ATTEMPTS", 5),
        "RETRY_BASE_DELAY": _seconds(env, "N3HUB_RETRY_BASE_DELAY", 1.0),
        "RETRY_MAX_DELAY": _seconds(env, "N3HUB_RETRY_MAX_DELAY", 300.0),
        "LEASE_SECONDS": _seconds(env, "N3HUB_LEASE_SECONDS", 60.0, 1.0),
        "SWEEP_INTERVAL": _seconds(env, "N3HUB_SWEEP_INTERVAL", 2.0, 0.05),
        "PROMETHEUS_MULTIPROC_DIR": _text(env, "PROMETHEUS_MULTIPROC_DIR", ""),
        "WORKER_METRICS_PORT": _integer(env, "N3HUB_WORKER_METRICS_PORT", 0, minimum=0),
        "LOG_LEVEL": _text(env, "LOG_LEVEL", "INFO").upper(),
        "LOG_FORMAT": _text(env, "LOG_FORMAT", "json" if production else "text"),
    }
