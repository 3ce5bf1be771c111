"""API key storage: random keys shown once, kept only as SHA-256 hashes.

A key is 32 random bytes (``secrets``), so a plain SHA-256 is enough to store it:
there is nothing to brute-force the way a password can be, and the hash can be
looked up by an index in one query.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import func, insert, select, update

from app import tallies
from app.database import read_connection, write_transaction
from app.lifecycle import utcnow
from app.models import TENANT_LENGTH, ApiKey

KEY_PREFIX = "n3h_"
KEY_BYTES = 32
SHOWN_PREFIX_LENGTH = 12
TENANT_PATTERN = re.compile(rf"[A-Za-z0-9._-]{{1,{TENANT_LENGTH}}}")
MAX_NAME_LENGTH = 100


class Scope(StrEnum):
    """What a key may do."""

    SUBMIT = "submit"  # create messages
    READ = "read"  # get, list, stats
    ADMIN = "admin"  # retry, every tenant, key management


class InvalidKeyRequest(ValueError):
    """A key cannot be created as asked (bad tenant, name or scopes)."""


@dataclass(frozen=True)
class StoredKey:
    """What is known about a key without the key itself."""

    id: int
    name: str
    tenant: str
    scopes: frozenset[Scope]
    prefix: str
    created_at: datetime
    revoked_at: datetime | None


def hash_key(key: str) -> str:
    """The stored form of a key: its SHA-256, hex."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def parse_scopes(raw: str) -> frozenset[Scope]:
    """Scopes from ``"submit,read"``; InvalidKeyRequest names an unknown one."""
    scopes = set()
    for part in filter(None, (item.strip() for item in raw.split(","))):
        try:
            scopes.add(Scope(part))
        except ValueError:
            allowed = ", ".join(scope.value for scope in Scope)
            raise InvalidKeyRequest(f"unknown scope {part!r}; use: {allowed}") from None
    if not scopes:
        raise InvalidKeyRequest("give at least one scope")
    return frozenset(scopes)


def create_key(name: str, tenant: str, scopes: frozenset[Scope]) -> tuple[str, StoredKey]:
    """Make a new key; returns the key itself (shown once, never stored) and its record."""
    if not TENANT_PATTERN.fullmatch(tenant):
        raise InvalidKeyRequest("a tenant is 1 to 64 of A-Z a-z 0-9 . _ -")
    if not 0 < len(name) <= MAX_NAME_LENGTH or not name.isprintable():
        raise InvalidKeyRequest(f"a name is 1 to {MAX_NAME_LENGTH} printable characters")
    key = KEY_PREFIX + secrets.token_urlsafe(KEY_BYTES)
    values: dict[str, Any] = {
        "name": name,
        "tenant": tenant,
        "scopes": ",".join(sorted(scopes)),
        "key_hash": hash_key(key),
        "prefix": key[:SHOWN_PREFIX_LENGTH],
        "created_at": utcnow(),
    }
    with write_transaction() as connection:
        tallies.ensure_tenant(connection, tenant)
        key_id = connection.execute(insert(ApiKey).values(values)).inserted_primary_key[0]
    return key, StoredKey(
        id=key_id,
        name=name,
        tenant=tenant,
        scopes=scopes,
        prefix=values["prefix"],
        created_at=values["created_at"],
        revoked_at=None,
    )


def _stored(row: Any) -> StoredKey:
    return StoredKey(
        id=row.id,
        name=row.name,
        tenant=row.tenant,
        scopes=frozenset(Scope(scope) for scope in row.scopes.split(",")),
        prefix=row.prefix,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


_COLUMNS = (
    ApiKey.id,
    ApiKey.name,
    ApiKey.tenant,
    ApiKey.scopes,
    ApiKey.prefix,
    ApiKey.created_at,
    ApiKey.revoked_at,
)


def list_keys() -> list[StoredKey]:
    """Every key, revoked ones included, oldest first."""
    with read_connection() as connection:
        return [_stored(row) for row in connection.execute(select(*_COLUMNS).order_by(ApiKey.id))]


def revoke_key(key_id: int) -> bool:
    """Revoke a key by id; False when no active key has that id."""
    with write_transaction() as connection:
        return bool(
            connection.execute(
                update(ApiKey)
                .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            ).rowcount
        )


def active_key_count() -> int:
    """How many keys are not revoked."""
    with read_connection() as connection:
        return connection.execute(
            select(func.count()).select_from(ApiKey).where(ApiKey.revoked_at.is_(None))
        ).scalar_one()


def find_active(key_hash: str) -> StoredKey | None:
    """The active key with this hash, or None."""
    with read_connection() as connection:
        row = connection.execute(
            select(*_COLUMNS, ApiKey.key_hash).where(
                ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None)
            )
        ).one_or_none()
    # The index lookup already matched; this keeps the final comparison constant-time.
    if row is None or not secrets.compare_digest(row.key_hash, key_hash):
        return None
    return _stored(row)


def find_active_by_id(key_id: int) -> StoredKey | None:
    """The key with this id if it is still active, or None."""
    with read_connection() as connection:
        row = connection.execute(
            select(*_COLUMNS).where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
        ).one_or_none()
    return _stored(row) if row is not None else None
