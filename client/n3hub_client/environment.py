"""Where the ``n3hub`` command finds the server and its key: flags, environment, the repo."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

DEFAULT_URL = "http://127.0.0.1:5000"
URL_VARIABLE = "N3HUB_URL"
KEY_VARIABLE = "N3HUB_API_KEY"
# Written by `make run` on a development database (mode 0600).
DEV_KEY_PATH = Path("instance") / "dev-api-key"


def dev_api_key(start: Path) -> str | None:
    """The development key of the N3Hub checkout that ``start`` is in, if it has one."""
    for folder in (start, *start.parents):
        candidate = folder / DEV_KEY_PATH
        if candidate.is_file():
            return candidate.read_text(encoding="utf-8").strip() or None
    return None


def server_url(given: str | None, environ: Mapping[str, str]) -> str:
    """The server's URL: the flag, else ``N3HUB_URL``, else the local default."""
    return given or environ.get(URL_VARIABLE) or DEFAULT_URL


def api_key(given: str | None, environ: Mapping[str, str], cwd: Path) -> str | None:
    """The API key: the flag, else ``N3HUB_API_KEY``, else the checkout's development key."""
    return given or environ.get(KEY_VARIABLE) or dev_api_key(cwd)
