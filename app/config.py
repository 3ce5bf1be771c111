"""Every setting, declared once, and the configuration read from environment variables.

This is the only module that reads ``os.environ``. ``SETTINGS`` declares each
variable (its config key, type, default, bounds or allowed values, and meaning);
``load_config`` validates the environment against it, and the README's
configuration table is generated from it (``python -m scripts.settings_table``).

The module imports nothing from ``app``: the Gunicorn master loads it by path
(``gunicorn.conf.py``) without importing the app package.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

PROJECT_ROOT = Path(__file__).resolve().parent.parent
INSTANCE_DIR = PROJECT_ROOT / "instance"
DEFAULT_DATABASE_URL = f"sqlite:///{INSTANCE_DIR / 'messages.db'}"
DEFAULT_BROKER_URL = "redis://localhost:6379/0"
DEFAULT_RESULT_BACKEND = "redis://localhost:6379/1"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_IMPORT_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


class ConfigError(SystemExit):
    """A setting holds a value that cannot be used.

    It is a ``SystemExit``: left uncaught, it ends the process with its one-line
    message and no traceback, whichever entry point started it (``flask``,
    ``python run.py``, Gunicorn, Celery).
    """


class Kind(Enum):
    """How a variable's text becomes a value; the value is what the docs call its type."""

    TEXT = "text"
    URL = "URL"
    INTEGER = "integer"
    SECONDS = "seconds"
    FLAG = "flag"
    CHOICE = "choice"
    IMPORT_PATH = "module:callable"


@dataclass(frozen=True)
class Setting:
    """One environment variable: how it is read, its default and what it means."""

    env: str
    key: str
    kind: Kind
    default: Any
    meaning: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    # The default as the README shows it, where the value itself says too little.
    shown_default: str | None = None
    # Set but empty: False means "as if unset"; True means the empty text is the value.
    empty_is_value: bool = False

    def allowed(self) -> str:
        """What the variable accepts, in words (for error messages and the README)."""
        if self.kind is Kind.CHOICE:
            return "one of " + ", ".join(self.choices)
        if self.kind is Kind.FLAG:
            return "1/0, true/false, yes/no or on/off"
        if self.kind is Kind.IMPORT_PATH:
            return "package.module:callable"
        if self.kind is Kind.URL:
            words = " or ".join(("a URL (scheme://…)", *self.choices))
            return f"{words}, or empty" if self.empty_is_value else words
        if self.kind in (Kind.INTEGER, Kind.SECONDS):
            noun = "an integer" if self.kind is Kind.INTEGER else "a number of seconds"
            return noun + _bounds(self.minimum, self.maximum)
        return "any text, or empty" if self.empty_is_value else "any text"

    def parse(self, raw: str) -> Any:
        """The value of ``raw`` (already stripped, not empty); ConfigError if not allowed."""
        value = _PARSERS[self.kind](self, raw)
        if value is None:
            raise ConfigError(f"{self.env}={raw!r} is not allowed: use {self.allowed()}")
        return value

    def read(self, env: Mapping[str, str], values: Mapping[str, Any]) -> Any:
        """This setting's value from ``env``, or its default given the ``values`` read so far."""
        raw = env.get(self.env)
        if raw is not None and (raw.strip() or self.empty_is_value):
            return self.parse(raw.strip()) if raw.strip() else ""
        return self.default(values) if callable(self.default) else self.default

    def default_text(self) -> str:
        """The default as the README shows it."""
        if self.shown_default is not None:
            return self.shown_default
        if isinstance(self.default, bool):
            return "`1`" if self.default else "`0`"
        if isinstance(self.default, float):
            return f"`{self.default:g}`"
        return f"`{self.default}`"


def _bounds(minimum: float | None, maximum: float | None) -> str:
    if minimum is not None and maximum is not None:
        return f" from {minimum:g} to {maximum:g}"
    return f" of at least {minimum:g}" if minimum is not None else ""


def _within(setting: Setting, value: float) -> float | None:
    too_low = setting.minimum is not None and value < setting.minimum
    too_high = setting.maximum is not None and value > setting.maximum
    return None if too_low or too_high else value


def _integer(setting: Setting, raw: str) -> int | None:
    return _within(setting, int(raw)) if re.fullmatch(r"[+-]?\d+", raw) else None


def _seconds(setting: Setting, raw: str) -> float | None:
    try:
        value = float(raw)
    except ValueError:
        return None
    return _within(setting, value) if value == value and value != float("inf") else None


def _flag(_setting: Setting, raw: str) -> bool | None:
    lowered = raw.lower()
    return True if lowered in _TRUE else False if lowered in _FALSE else None


def _choice(setting: Setting, raw: str) -> str | None:
    by_fold = {choice.casefold(): choice for choice in setting.choices}
    return by_fold.get(raw.casefold())


def _url(setting: Setting, raw: str) -> str | None:
    return raw if _URL.match(raw) or raw in setting.choices else None


def _import_path(_setting: Setting, raw: str) -> str | None:
    return raw if _IMPORT_PATH.fullmatch(raw) else None


_PARSERS: dict[Kind, Callable[[Setting, str], Any]] = {
    Kind.TEXT: lambda _setting, raw: raw,
    Kind.URL: _url,
    Kind.INTEGER: _integer,
    Kind.SECONDS: _seconds,
    Kind.FLAG: _flag,
    Kind.CHOICE: _choice,
    Kind.IMPORT_PATH: _import_path,
}


def _production(values: Mapping[str, Any]) -> bool:
    return values["ENV_NAME"] == "production"


def _broker_if_redis(values: Mapping[str, Any]) -> str:
    broker = values["CELERY_BROKER_URL"]
    return broker if broker.startswith(("redis://", "rediss://")) else ""


# The README's configuration table lists these rows in this order; a default
# computed from other settings names only rows above it.
SETTINGS: tuple[Setting, ...] = (
    Setting("FLASK_ENV", "ENV_NAME", Kind.CHOICE, "development",
            "`production` turns debug off and logs JSON",
            choices=("development", "production")),
    Setting("FLASK_DEBUG", "DEBUG", Kind.FLAG, False,
            "Werkzeug debugger for `python run.py` (ignored in production)"),
    Setting("DATABASE_URL", "SQLALCHEMY_DATABASE_URI", Kind.URL, DEFAULT_DATABASE_URL,
            "`sqlite://…`, `postgresql://…` (read as `postgresql+psycopg://…`) or `mysql://…` "
            "(read as `mysql+pymysql://…?charset=utf8mb4`; MySQL 8.0.1+, MariaDB 10.6+); "
            "any other database is refused at start",
            shown_default="`sqlite:///<repo>/instance/messages.db`"),
    Setting("CELERY_BROKER_URL", "CELERY_BROKER_URL", Kind.URL, DEFAULT_BROKER_URL,
            "Celery broker (Redis; `amqp://…` works too)"),
    Setting("CELERY_RESULT_BACKEND", "CELERY_RESULT_BACKEND", Kind.URL, DEFAULT_RESULT_BACKEND,
            "Celery result backend (tasks store no results; `disabled` where there is no Redis)",
            choices=("disabled",)),
    Setting("N3HUB_TASK_QUEUE", "TASK_QUEUE", Kind.TEXT, "n3hub",
            "Celery queue the drain tasks use (give each deployment sharing a broker its own)"),
    Setting("N3HUB_WAKE_REDIS_URL", "WAKE_REDIS_URL", Kind.URL, _broker_if_redis,
            "Redis holding the drain marker (\"a drain is queued or running\"); "
            "empty means queue a drain per message",
            shown_default="the broker URL when it is Redis, else empty", empty_is_value=True),
    Setting("N3HUB_BROKER_TIMEOUT", "BROKER_TIMEOUT", Kind.SECONDS, 1.0,
            "seconds a request waits for the broker when queueing", minimum=0.05),
    Setting("N3HUB_AUTO_MIGRATE", "AUTO_MIGRATE", Kind.FLAG, True,
            "upgrade the schema when a process starts (under a lock)"),
    Setting("N3HUB_SQLITE_SYNCHRONOUS", "SQLITE_SYNCHRONOUS", Kind.CHOICE, "FULL",
            "SQLite `synchronous` pragma; `FULL` makes each commit durable on power loss",
            choices=("OFF", "NORMAL", "FULL", "EXTRA")),
    Setting("N3HUB_SQLITE_BUSY_TIMEOUT", "SQLITE_BUSY_TIMEOUT", Kind.SECONDS, 30.0,
            "seconds a SQLite writer waits for the lock", minimum=0.1),
    Setting("N3HUB_MAX_BODY_BYTES", "MAX_CONTENT_LENGTH", Kind.INTEGER, 1024 * 1024,
            "largest accepted request body, in bytes (413 above it)", minimum=1),
    Setting("N3HUB_BODY_TIMEOUT", "BODY_TIMEOUT", Kind.SECONDS, 15.0,
            "longest time a request body may take to arrive, whatever the Gunicorn worker "
            "class (408 after it)", minimum=0.001),
    Setting("N3HUB_MAX_BATCH_MESSAGES", "MAX_BATCH_MESSAGES", Kind.INTEGER, 1000,
            "most messages one `POST /messages/batch` may carry", minimum=1),
    Setting("N3HUB_MAX_CONTENT_CHARS", "MAX_CONTENT_CHARS", Kind.INTEGER, 100_000,
            "longest accepted `content`, in characters (400 above it)", minimum=1),
    Setting("N3HUB_MAX_RESULT_BYTES", "MAX_RESULT_BYTES", Kind.INTEGER, 1024 * 1024,
            "largest processor result, in bytes of JSON; a larger one fails its message",
            minimum=1),
    Setting("N3HUB_MAX_RESPONSE_BYTES", "MAX_RESPONSE_BYTES", Kind.INTEGER, 4 * 1024 * 1024,
            "a page of `GET /messages` ends before it would pass this many bytes "
            "(its `next_cursor` continues)", minimum=1),
    Setting("N3HUB_COMMIT_GATHER_SECONDS", "COMMIT_GATHER_SECONDS", Kind.SECONDS, 0.001,
            "after a commit shared by several `POST /messages` of one web process, the shortest "
            "time before it starts the next (0: at once)", minimum=0),
    Setting("N3HUB_FAST_PATH", "FAST_PATH", Kind.FLAG, True,
            "`1`: the plain `POST /messages` is answered by the WSGI fast path; `0`: every "
            "request goes through Flask"),
    Setting("N3HUB_PAGE_SIZE", "PAGE_SIZE", Kind.INTEGER, 50,
            "page size of `GET /messages` without `?limit=`", minimum=1),
    Setting("N3HUB_MAX_PAGE_SIZE", "MAX_PAGE_SIZE", Kind.INTEGER, 200,
            "largest `?limit=` of `GET /messages`", minimum=1),
    Setting("N3HUB_IDEMPOTENCY_TTL", "IDEMPOTENCY_TTL", Kind.SECONDS, 86400.0,
            "seconds an `Idempotency-Key` is remembered", minimum=1),
    Setting("N3HUB_PROCESSOR", "PROCESSOR", Kind.IMPORT_PATH, "app.worker.processors:analyse_text",
            "the processor, imported by the web and the worker at start"),
    Setting("N3HUB_CLAIM_SIZE", "CLAIM_SIZE", Kind.INTEGER, 200,
            "most messages one claim takes", minimum=1),
    Setting("N3HUB_DRAIN_BUDGET", "DRAIN_BUDGET", Kind.SECONDS, 5.0,
            "seconds one drain task runs before handing over", minimum=0.1),
    Setting("N3HUB_CLAIM_GATHER_SECONDS", "CLAIM_GATHER_SECONDS", Kind.SECONDS, 0.02,
            "under a steady flow, the shortest time between two claims of a drain "
            "(0: claim again at once)", minimum=0),
    Setting("N3HUB_MAX_ATTEMPTS", "MAX_ATTEMPTS", Kind.INTEGER, 5,
            "attempts before a message is `failed`", minimum=1),
    Setting("N3HUB_ATTEMPTS_KEPT", "ATTEMPTS_KEPT", Kind.INTEGER, 20,
            "attempts kept in each message's history (`GET /messages/<id>/attempts`), "
            "the newest", minimum=1, maximum=1000),
    Setting("N3HUB_RETRY_BASE_DELAY", "RETRY_BASE_DELAY", Kind.SECONDS, 1.0,
            "seconds before the first retry of a transient failure; doubles each time",
            minimum=0),
    Setting("N3HUB_RETRY_MAX_DELAY", "RETRY_MAX_DELAY", Kind.SECONDS, 300.0,
            "longest wait between two retries", minimum=0),
    Setting("N3HUB_LEASE_SECONDS", "LEASE_SECONDS", Kind.SECONDS, 60.0,
            "how long a claim stays valid without renewal", minimum=1),
    Setting("N3HUB_SWEEP_INTERVAL", "SWEEP_INTERVAL", Kind.SECONDS, 2.0,
            "seconds between recovery sweeps in each worker", minimum=0.05),
    Setting("N3HUB_PROCESS_CONCURRENCY", "PROCESS_CONCURRENCY", Kind.INTEGER, 500,
            "messages in flight at once in each worker pool process (threads for a plain "
            "processor, tasks on an event loop for an `async def` one); see Processing",
            minimum=1),
    Setting("N3HUB_PROCESS_TIMEOUT", "PROCESS_TIMEOUT", Kind.SECONDS, 30.0,
            "seconds one processor run may take; an overrun is a failed attempt, retried with "
            "backoff", minimum=0.01),
    Setting("N3HUB_SHUTDOWN_GRACE", "SHUTDOWN_GRACE", Kind.SECONDS, 10.0,
            "on a warm shutdown, seconds a pool process waits for its messages in flight "
            "before giving the rest back to `pending`"),
    Setting("N3HUB_RETENTION_COMPLETED", "RETENTION_COMPLETED", Kind.SECONDS, 7 * 86400.0,
            "seconds a `completed` message is kept after it ended, then deleted by the sweep; "
            "0 keeps it forever", minimum=0, shown_default="604800 (7 days)"),
    Setting("N3HUB_RETENTION_FAILED", "RETENTION_FAILED", Kind.SECONDS, 30 * 86400.0,
            "seconds a `failed` message is kept after it ended, then deleted by the sweep; "
            "0 keeps it forever", minimum=0, shown_default="2592000 (30 days)"),
    Setting("PROMETHEUS_MULTIPROC_DIR", "PROMETHEUS_MULTIPROC_DIR", Kind.TEXT, "",
            "shared directory for multi-process metrics; set it before the processes start, "
            "wipe it before each start",
            shown_default="unset (`make run`: `var/prometheus`)"),
    Setting("N3HUB_WORKER_METRICS_PORT", "WORKER_METRICS_PORT", Kind.INTEGER, 0,
            "a worker serves its own metrics on this port (0: none; for workers in their own "
            "containers)", minimum=0, maximum=65535),
    Setting("N3HUB_CONSOLE_SECRET", "CONSOLE_SECRET", Kind.TEXT, "",
            "signs the web console's session cookies; unset, a random one is kept in "
            "`instance/console-secret` (enough for one host; set it when several hosts serve "
            "the console)", shown_default="unset"),
    Setting("N3HUB_METRICS_TOKEN", "METRICS_TOKEN", Kind.TEXT, "",
            "when set, `/metrics` and the worker's metrics port answer only "
            "`Authorization: Bearer <this token>`; unset, `/metrics` is open in development "
            "and needs an `admin` API key in production", shown_default="unset"),
    Setting("N3HUB_METRICS_TOKEN_FILE", "METRICS_TOKEN_FILE", Kind.TEXT, "",
            "a file holding `N3HUB_METRICS_TOKEN` (a Docker secret), read when that is unset",
            shown_default="unset"),
    Setting("N3HUB_KEY_CACHE_SECONDS", "KEY_CACHE_SECONDS", Kind.SECONDS, 5.0,
            "how long a process remembers an API key lookup, so how soon a revoked key is "
            "refused everywhere", minimum=0),
    Setting("N3HUB_RATE_LIMIT", "RATE_LIMIT", Kind.TEXT, "1000/second;1000000/day",
            "requests each API key may make, as `N/second;N/minute;N/hour;N/day` "
            "(a batch counts as its number of messages); empty: no limit",
            empty_is_value=True),
    Setting("N3HUB_RATE_LIMIT_REDIS_URL", "RATE_LIMIT_REDIS_URL", Kind.URL, _broker_if_redis,
            "Redis counting the rate limits for every process and host; empty: no limit",
            shown_default="the broker URL when it is Redis, else empty", empty_is_value=True),
    Setting("LOG_LEVEL", "LOG_LEVEL", Kind.CHOICE, "INFO", "root log level",
            choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")),
    Setting("LOG_FORMAT", "LOG_FORMAT", Kind.CHOICE,
            lambda values: "json" if _production(values) else "text",
            "log lines as JSON objects or as text", choices=("text", "json"),
            shown_default="`text` (`json` in production)"),
    Setting("HOST", "HOST", Kind.TEXT, "127.0.0.1",
            "address `python run.py` and Gunicorn listen on (the image sets `0.0.0.0`)"),
    Setting("PORT", "PORT", Kind.INTEGER, 5000,
            "port `python run.py` and Gunicorn listen on", minimum=1, maximum=65535),
    Setting("WEB_CONCURRENCY", "WEB_CONCURRENCY", Kind.INTEGER, lambda _values: os.cpu_count() or 2,
            "Gunicorn worker processes", minimum=1, shown_default="CPU cores"),
    Setting("GUNICORN_WORKER_CLASS", "GUNICORN_WORKER_CLASS", Kind.CHOICE, "gevent",
            "Gunicorn worker type; a process's concurrent requests share commits",
            choices=("gevent", "gthread", "sync")),
    Setting("GUNICORN_THREADS", "GUNICORN_THREADS", Kind.INTEGER, 16,
            "threads per Gunicorn worker, with `GUNICORN_WORKER_CLASS=gthread` only", minimum=1),
    Setting("GUNICORN_ACCESSLOG", "GUNICORN_ACCESSLOG", Kind.TEXT, "-",
            "Gunicorn's access log: `-` is stdout, else a file; empty turns it off",
            empty_is_value=True),
    Setting("GUNICORN_REUSE_PORT", "GUNICORN_REUSE_PORT", Kind.FLAG,
            lambda _values: sys.platform == "linux",
            "each Gunicorn worker listens on a socket of its own and the kernel spreads "
            "connections evenly; a port already in use stops the start",
            shown_default="`1` on Linux, `0` elsewhere"),
)  # fmt: skip


# The databases N3Hub runs on, each through the driver pinned in requirements.txt.
SUPPORTED_DATABASES = (
    "sqlite://, postgresql:// (psycopg) and mysql:// (PyMySQL; MySQL 8.0.1+, MariaDB 10.6+)"
)
_DRIVERS = {
    "sqlite": "sqlite",
    "postgres": "postgresql+psycopg",
    "postgresql": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mariadb+pymysql",
}
_SUPPORTED_DRIVERS = {"sqlite", "sqlite+pysqlite", *_DRIVERS.values()}


def normalise_database_url(raw: str) -> str:
    """Point a database URL at the pinned driver, or refuse a database N3Hub does not support.

    ``postgresql://`` becomes ``postgresql+psycopg://`` and ``mysql://``
    ``mysql+pymysql://``; MySQL and MariaDB connections always speak ``utf8mb4``.
    """
    scheme, _, rest = raw.partition("://")
    drivername = _DRIVERS.get(scheme, scheme)
    if drivername not in _SUPPORTED_DRIVERS:
        raise ConfigError(
            f"DATABASE_URL={_without_password(raw)!r} uses {scheme!r}, which N3Hub does not"
            f" support; it runs on {SUPPORTED_DATABASES}"
        )
    if drivername.endswith("+pymysql"):
        # Anything narrower than utf8mb4 cannot hold every message (emoji).
        location, _, query = rest.partition("?")
        options = [
            pair for pair in parse_qsl(query, keep_blank_values=True) if pair[0] != "charset"
        ]
        rest = f"{location}?{urlencode([*options, ('charset', 'utf8mb4')])}"
    return f"{drivername}://{rest}"


def _without_password(url: str) -> str:
    """``url`` fit for a log line: its password, if any, as ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")))


def load_config(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Build the config mapping from environment variables; ConfigError names a bad one."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        values[setting.key] = setting.read(env, values)
    values["DEBUG"] = values["DEBUG"] and not _production(values)
    values["SQLALCHEMY_DATABASE_URI"] = normalise_database_url(values["SQLALCHEMY_DATABASE_URI"])
    if not values["METRICS_TOKEN"] and values["METRICS_TOKEN_FILE"]:
        values["METRICS_TOKEN"] = _read_secret(
            "N3HUB_METRICS_TOKEN_FILE", values["METRICS_TOKEN_FILE"]
        )
    return values


def _read_secret(name: str, path: str) -> str:
    """The content of a secret file, stripped; ConfigError naming ``name`` if unreadable."""
    try:
        return Path(path).read_text().strip()
    except OSError as error:
        raise ConfigError(f"{name}={path!r} cannot be read: {error.strerror}") from None


def import_callable(variable: str, path: str) -> Callable[..., Any]:
    """The callable ``package.module:callable`` names; ConfigError naming ``variable`` if none."""
    allowed = "use package.module:callable, importable by the web and the worker"
    module_name, _, attribute = path.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
        for name in attribute.split("."):
            target = getattr(target, name)
    except Exception as error:
        reason = " ".join(f"{type(error).__name__}: {error}".split())
        raise ConfigError(f"{variable}={path!r} cannot be imported ({reason}); {allowed}") from None
    if not callable(target):
        kind = type(target).__name__
        raise ConfigError(f"{variable}={path!r} is not callable (a {kind}); {allowed}")
    return target
