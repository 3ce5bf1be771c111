"""The console's login session: a signed cookie naming an admin key, with a CSRF token.

The cookie holds the key's id (never the key) and a random CSRF token, signed
with ``N3HUB_CONSOLE_SECRET`` and valid for :data:`SESSION_SECONDS`. Each request
reads the key again, so revoking it (or taking its ``admin`` scope away) ends
its console sessions at once. The cookie is ``HttpOnly``, ``SameSite=Strict``,
limited to ``/console`` and ``Secure`` in production; every form carries the
token, and a POST without the cookie's token is refused.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from flask import Flask, Response, current_app, request
from itsdangerous import BadSignature, URLSafeTimedSerializer

from app.auth.keys import Scope, StoredKey, find_active_by_id
from app.config import INSTANCE_DIR

COOKIE = "n3hub_console"
SESSION_SECONDS = 8 * 3600
SECRET_FILE = INSTANCE_DIR / "console-secret"
_SIGNER = "console_signer"


@dataclass(frozen=True)
class ConsoleSession:
    """Who is logged in (None before the login) and the token every form must carry."""

    key_id: int | None
    csrf: str


def fresh(key_id: int | None = None) -> ConsoleSession:
    """A new session with a new CSRF token."""
    return ConsoleSession(key_id=key_id, csrf=secrets.token_urlsafe(32))


def load() -> ConsoleSession | None:
    """The request's session, if its cookie is present, signed by us and not expired."""
    raw = request.cookies.get(COOKIE)
    if not raw:
        return None
    try:
        data = current_app.extensions[_SIGNER].loads(raw, max_age=SESSION_SECONDS)
    except BadSignature:
        return None
    if not isinstance(data, dict):
        return None
    key_id, csrf = data.get("k"), data.get("c")
    if not isinstance(csrf, str) or not (key_id is None or isinstance(key_id, int)):
        return None
    return ConsoleSession(key_id=key_id, csrf=csrf)


def operator(session: ConsoleSession | None) -> StoredKey | None:
    """The admin key a session is logged in with, while it stays active and admin."""
    if session is None or session.key_id is None:
        return None
    key = find_active_by_id(session.key_id)
    return key if key is not None and Scope.ADMIN in key.scopes else None


def csrf_matches(session: ConsoleSession | None, token: str | None) -> bool:
    """Whether a form's token is the session's (compared in constant time)."""
    if session is None or not token:
        return False
    return secrets.compare_digest(session.csrf.encode(), token.encode())


def save(response: Response, session: ConsoleSession) -> None:
    """Set the session cookie on ``response``."""
    value = current_app.extensions[_SIGNER].dumps({"k": session.key_id, "c": session.csrf})
    response.set_cookie(
        COOKIE,
        value,
        max_age=SESSION_SECONDS,
        path="/console",
        httponly=True,
        samesite="Strict",
        secure=current_app.config["ENV_NAME"] == "production",
    )


def clear(response: Response) -> None:
    """Remove the session cookie."""
    response.delete_cookie(COOKIE, path="/console", httponly=True, samesite="Strict")


def _secret(app: Flask) -> str:
    """``N3HUB_CONSOLE_SECRET``, or one random secret per instance directory."""
    if app.config["CONSOLE_SECRET"]:
        return app.config["CONSOLE_SECRET"]
    return _shared_file_secret(SECRET_FILE)


def _shared_file_secret(path: Path) -> str:
    """The secret in ``path``, made once: processes starting together all read the same one."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        draft = path.with_name(f"{path.name}.{os.getpid()}")
        draft.write_text(secrets.token_urlsafe(48))
        draft.chmod(0o600)
        try:
            os.link(draft, path)  # atomic, and fails if another process got there first
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    return path.read_text().strip()


def init_app(app: Flask) -> None:
    """Give the app the signer of console cookies."""
    app.extensions[_SIGNER] = URLSafeTimedSerializer(_secret(app), salt="n3hub-console")
