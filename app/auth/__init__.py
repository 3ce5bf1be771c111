"""API keys: who a caller is (its tenant) and what it may do (its scopes).

:mod:`app.auth.keys` stores keys (hashes only), :mod:`app.auth.principals`
turns an ``Authorization`` header into a :class:`~app.auth.principals.Principal`
through a short-lived per-process cache, and :mod:`app.auth.access` lets each
view declare what it demands; none of them depends on Flask's request, so the
WSGI guard in front of every route (:mod:`app.api.guard`) applies them below
the framework. :mod:`app.auth.cli` adds ``flask keys``.
"""

from __future__ import annotations

from flask import Flask

from app.auth import cli
from app.auth.keys import StoredKey, find_active
from app.auth.principals import PrincipalCache
from app.auth.quotas import Quotas, parse_limits


def init_app(app: Flask) -> None:
    """Give the app its key cache, its rate limits and the ``flask keys`` commands."""

    def lookup(key_hash: str) -> StoredKey | None:
        with app.app_context():
            return find_active(key_hash)

    app.extensions["principals"] = PrincipalCache(lookup, app.config["KEY_CACHE_SECONDS"])
    app.extensions["quotas"] = Quotas(
        parse_limits(app.config["RATE_LIMIT"]),
        app.config["RATE_LIMIT_REDIS_URL"],
        app.config["BROKER_TIMEOUT"],
    )
    app.cli.add_command(cli.keys)
