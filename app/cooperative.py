"""Blocking calls that must not stall Gunicorn's gevent worker.

The web runs on gevent (``gunicorn.conf.py``): one OS thread per process, whose
greenlets take turns at the points where gevent's patched standard library
waits (sockets, locks, sleeps). A call into C that blocks without going through
those points, such as waiting for a POSIX file lock, would stop every request of
the process until it returns. :func:`call_blocking` runs such a call on gevent's
pool of native threads while the others go on, and runs it in place anywhere
gevent has not patched threading (Celery workers, tests, ``gthread``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TypeVar

Result = TypeVar("Result")


def _under_gevent() -> bool:
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and monkey.is_module_patched("threading")


def call_blocking(function: Callable[..., Result], *args: object) -> Result:
    """``function(*args)``, waited for without blocking other greenlets."""
    if _under_gevent():
        import gevent

        return gevent.get_hub().threadpool.apply(function, args)
    return function(*args)
