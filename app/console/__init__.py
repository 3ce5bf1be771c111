"""The web console at ``/console``: server-rendered pages for operators.

Jinja templates with their small stylesheet inline (nothing from a CDN, so it
works offline). Every page needs a login with an ``admin`` API key
(:mod:`app.console.session`); the pages read through indexed queries only, so
they stay fast however many messages are stored.
"""

from __future__ import annotations

from flask import Flask

from app.console import session, views


def init_app(app: Flask) -> None:
    """Register the console's pages and its session signer."""
    session.init_app(app)
    app.register_blueprint(views.bp)
