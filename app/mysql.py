"""What MySQL and MariaDB need that SQLite and PostgreSQL do not, in one place.

Connections read committed data, as PostgreSQL's do: InnoDB's default
(REPEATABLE READ) would also lock the gaps between the index entries a claim
scans, and so hold up the web's inserts of new pending messages. Claims need
``FOR UPDATE SKIP LOCKED`` (MySQL 8.0.1, MariaDB 10.6): an older server is
refused at start. Tables are InnoDB in utf8mb4 (anything narrower cannot hold
every message) with a binary, no-pad collation, so text compares byte for
byte; timestamps keep their microseconds. MySQL commits each DDL statement at
once, so schema upgrades are serialised by a named lock rather than by their
transaction. Neither server has ``UPDATE ... RETURNING``:
:mod:`app.lifecycle` and :mod:`app.pending_rows` ask :func:`is_mysql` for the
form that does without it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Connection, Dialect

from app.config import SUPPORTED_DATABASES, ConfigError

DIALECTS = ("mysql", "mariadb")
# Oldest servers with FOR UPDATE SKIP LOCKED.
MINIMUM_MYSQL = (8, 0, 1)
MINIMUM_MARIADB = (10, 6)
# Exact comparison (no case folding, trailing spaces significant), in order of preference.
EXACT_COLLATIONS = ("utf8mb4_nopad_bin", "utf8mb4_0900_bin", "utf8mb4_bin")
MIGRATION_LOCK_NAME = "n3hub_migrations"
MIGRATION_LOCK_TIMEOUT_SECONDS = 600

# Column types for the migrations: DATETIME keeps whole seconds unless told otherwise,
# and TEXT holds only 64 KiB.
TIMESTAMP = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), *DIALECTS)
LONG_TEXT = sa.Text().with_variant(mysql.MEDIUMTEXT(), *DIALECTS)


class UnsupportedDatabase(ConfigError):
    """The database server cannot give N3Hub's guarantees."""


def is_mysql(dialect: Dialect) -> bool:
    """Whether ``dialect`` speaks to MySQL or MariaDB."""
    return dialect.name in DIALECTS


def engine_options() -> dict[str, Any]:
    """SQLAlchemy engine options for MySQL and MariaDB."""
    return {"pool_pre_ping": True, "isolation_level": "READ COMMITTED"}


def check_server(connection: Connection) -> None:
    """Refuse the server behind ``connection`` unless it has what the claims need."""
    require_skip_locked(connection.exec_driver_sql("SELECT VERSION()").scalar_one())


def require_skip_locked(server_version: str) -> None:
    """Refuse a MySQL or MariaDB server (``SELECT VERSION()``) without ``SKIP LOCKED``."""
    mariadb = "mariadb" in server_version.lower()
    # MariaDB before 11 may report itself behind a "5.5.5-" prefix kept for old replicas.
    numbers = server_version.removeprefix("5.5.5-") if mariadb else server_version
    version = tuple(int(part) for part in re.findall(r"\d+", numbers.split("-")[0])[:3])
    if version < (MINIMUM_MARIADB if mariadb else MINIMUM_MYSQL):
        name = "MariaDB" if mariadb else "MySQL"
        raise UnsupportedDatabase(
            f"DATABASE_URL points at {name} {server_version}, too old for the claims"
            f" (FOR UPDATE SKIP LOCKED); N3Hub runs on {SUPPORTED_DATABASES}"
        )


def table_options(connection: Connection) -> dict[str, str]:
    """``create_table`` options: InnoDB, utf8mb4, exact comparison; none on other databases."""
    if not is_mysql(connection.dialect):
        return {}
    available = set(
        connection.exec_driver_sql(
            "SELECT collation_name FROM information_schema.collations"
            " WHERE character_set_name = 'utf8mb4'"
        ).scalars()
    )
    collation = next(name for name in EXACT_COLLATIONS if name in available)
    return {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4", "mysql_collate": collation}


@contextmanager
def migration_lock(connection: Connection) -> Iterator[None]:
    """Hold the named migration lock; the transaction it opens is the migrations' own."""
    taken = connection.exec_driver_sql(
        f"SELECT GET_LOCK('{MIGRATION_LOCK_NAME}', {MIGRATION_LOCK_TIMEOUT_SECONDS})"
    ).scalar()
    if taken != 1:
        raise TimeoutError(f"another process held {MIGRATION_LOCK_NAME!r} for too long")
    try:
        yield
    finally:
        connection.exec_driver_sql(f"SELECT RELEASE_LOCK('{MIGRATION_LOCK_NAME}')")
