"""From an ``Authorization: Bearer`` header to the caller: its key's tenant and scopes.

Framework-independent, so the WSGI guard answers before Flask and the fast path
alike. Lookups are cached per process for ``N3HUB_KEY_CACHE_SECONDS`` (unknown
keys too), so a request pays no database round trip; a revoked key therefore
stops working within that many seconds in every process. The cache is bounded:
a client sending endless random keys evicts only the oldest entries.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from app.auth.keys import KEY_PREFIX, Scope, StoredKey, hash_key

BEARER = "bearer"
REALM = 'Bearer realm="n3hub"'
# A real key is KEY_PREFIX and 43 characters; anything much longer is not worth hashing.
MAX_KEY_LENGTH = 128
CACHE_ENTRIES = 4096


@dataclass(frozen=True)
class Principal:
    """The authenticated caller."""

    key_id: int
    tenant: str
    scopes: frozenset[Scope]
    # Names the key in shared counters (rate limits): unlike the id, unique across deployments.
    key_hash: str

    def may(self, scope: Scope) -> bool:
        """Whether the caller's key grants ``scope``."""
        return scope in self.scopes


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != BEARER or not token or len(token) > MAX_KEY_LENGTH:
        return None
    return token if token.isascii() and token.isprintable() else None


def challenge(invalid: bool) -> dict[str, str]:
    """The ``WWW-Authenticate`` header of a 401 (RFC 6750), saying whether a token failed."""
    return {"WWW-Authenticate": f'{REALM}, error="invalid_token"' if invalid else REALM}


def presents_token(authorization: str | None, token: str) -> bool:
    """Whether the header carries exactly ``token`` as its bearer (compared in constant time)."""
    presented = bearer_token(authorization) or ""
    return secrets.compare_digest(presented.encode(), token.encode())


class PrincipalCache:
    """Resolves keys to principals, remembering each answer for ``ttl`` seconds."""

    def __init__(self, lookup: Callable[[str], StoredKey | None], ttl: float) -> None:
        self._lookup = lookup
        self._ttl = ttl
        self._entries: OrderedDict[str, tuple[Principal | None, float]] = OrderedDict()
        self._lock = threading.Lock()

    def principal(self, key: str) -> Principal | None:
        """The principal of a key, or None for an unknown or revoked one."""
        if not key.startswith(KEY_PREFIX):
            return None
        digest = hash_key(key)
        now = time.monotonic()
        cached = self._entries.get(digest)
        if cached is not None and cached[1] > now:
            return cached[0]
        stored = self._lookup(digest)
        principal = (
            Principal(key_id=stored.id, tenant=stored.tenant, scopes=stored.scopes, key_hash=digest)
            if stored is not None
            else None
        )
        with self._lock:
            self._entries[digest] = (principal, now + self._ttl)
            self._entries.move_to_end(digest)
            while len(self._entries) > CACHE_ENTRIES:
                self._entries.popitem(last=False)
        return principal

    def clear(self) -> None:
        """Forget every cached answer (tests, and ``keys revoke`` in this process)."""
        with self._lock:
            self._entries.clear()
