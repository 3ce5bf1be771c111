"""Rate limits per API key, counted in Redis so every process and host shares them.

The limits (``N3HUB_RATE_LIMIT``, e.g. ``1000/second;1000000/day``) are fixed
windows of the ``limits`` library (the engine of Flask-Limiter), kept in the
Redis of ``N3HUB_RATE_LIMIT_REDIS_URL``. Framework-independent, so the WSGI guard
charges every request before Flask or the fast path sees it; a batch is charged
once more for each message past its first.

When that Redis does not answer, requests are not limited (fail open: Redis
only ever carries wake-ups and counts, never data) and a warning is logged; the
process tries Redis again after ``RETRY_AFTER_FAILURE_SECONDS``, so an outage
costs one timeout every few seconds instead of one per request.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass

from limits import RateLimitItem, parse_many
from limits.storage import RedisStorage
from limits.strategies import FixedWindowRateLimiter
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

RETRY_AFTER_FAILURE_SECONDS = 5.0
KEY_PREFIX = "n3hub:rate"


class RateLimitConfigError(ValueError):
    """``N3HUB_RATE_LIMIT`` cannot be read as rate limits."""


@dataclass(frozen=True)
class OverLimit:
    """A limit a request went over, and when its window ends."""

    limit: RateLimitItem
    reset_at: float

    def headers(self, now: float | None = None) -> dict[str, str]:
        """``Retry-After`` and the ``RateLimit-*`` headers of the 429."""
        wait = max(1, math.ceil(self.reset_at - (time.time() if now is None else now)))
        return {
            "Retry-After": str(wait),
            "RateLimit-Limit": str(self.limit.amount),
            "RateLimit-Remaining": "0",
            "RateLimit-Reset": str(wait),
            "RateLimit-Policy": f"{self.limit.amount};w={self.limit.get_expiry()}",
        }

    def describe(self) -> str:
        """The limit in words, e.g. ``1000 per 1 second``."""
        return str(self.limit)


def parse_limits(spec: str) -> list[RateLimitItem]:
    """The limits of ``N3HUB_RATE_LIMIT``; empty means none."""
    if not spec.strip():
        return []
    try:
        return parse_many(spec)
    except ValueError as error:
        raise RateLimitConfigError(f"N3HUB_RATE_LIMIT={spec!r} is not allowed: {error}") from None


class Quotas:
    """Charges API keys against the configured limits."""

    def __init__(self, limits: list[RateLimitItem], redis_url: str, timeout: float) -> None:
        self._limits = limits
        self._strategy = (
            FixedWindowRateLimiter(
                RedisStorage(
                    redis_url,
                    key_prefix=KEY_PREFIX,
                    socket_timeout=timeout,
                    socket_connect_timeout=timeout,
                )
            )
            if limits and redis_url
            else None
        )
        self._down_until = 0.0
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        """Whether any limit is configured (and a Redis to count in)."""
        return self._strategy is not None

    def charge(self, identity: str, cost: int = 1) -> OverLimit | None:
        """Count ``cost`` requests for the key ``identity``; the limit it went over, or None."""
        if self._strategy is None or time.monotonic() < self._down_until:
            return None
        try:
            for limit in self._limits:
                if not self._strategy.hit(limit, identity, cost=cost):
                    reset_at, _ = self._strategy.get_window_stats(limit, identity)
                    return OverLimit(limit, reset_at)
        except RedisError as error:
            with self._lock:
                self._down_until = time.monotonic() + RETRY_AFTER_FAILURE_SECONDS
            log.warning("rate limits not enforced: Redis did not answer (%s)", error)
        return None
