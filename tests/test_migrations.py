"""Schema migrations: an empty database and one from an earlier revision upgrade cleanly."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from flask_migrate import downgrade, upgrade
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError, OperationalError

from app import create_app, queries
from app.config import load_config
from app.database import MIGRATIONS_DIR, write_transaction
from app.extensions import db
from app.tallies import MissingTallies
from tests.conftest import DatabaseFactory, stack_environment
from tests.support.processes import RedisServer


@pytest.fixture
def unmigrated_app(
    request: pytest.FixtureRequest, databases: DatabaseFactory, redis_server: RedisServer
) -> Iterator[Flask]:
    env = stack_environment(
        databases.create(request.param), redis_server.url, N3HUB_AUTO_MIGRATE="0"
    )
    app = create_app(load_config(env))
    with app.app_context():
        yield app
        db.engine.dispose()


every_database = pytest.mark.parametrize(
    "unmigrated_app", ["sqlite", "postgresql", "mysql"], indirect=True
)


@every_database
def test_empty_database_upgrades_to_the_models(unmigrated_app: Flask) -> None:
    assert inspect(db.engine).get_table_names() == []
    upgrade(directory=str(MIGRATIONS_DIR))
    tables = set(inspect(db.engine).get_table_names())
    assert set(db.metadata.tables) <= tables
    for table in db.metadata.tables.values():
        columns = {column["name"] for column in inspect(db.engine).get_columns(table.name)}
        assert columns == set(table.columns.keys()), table.name
        indexes = {index["name"] for index in inspect(db.engine).get_indexes(table.name)}
        assert {index.name for index in table.indexes} <= indexes, table.name


@every_database
def test_data_of_an_earlier_revision_survives_the_upgrade(unmigrated_app: Flask) -> None:
    upgrade(directory=str(MIGRATIONS_DIR), revision="0001")
    with write_transaction() as connection:
        connection.execute(
            text(
                "INSERT INTO messages (content, status, attempts, created_at, updated_at,"
                " available_at) VALUES ('from 0001', 'completed', 1, :t, :t, :t)"
            ),
            {"t": "2026-11-01 00:00:00"},
        )
        connection.execute(
            text("UPDATE message_tallies SET value = 1 WHERE name = 'completed' AND shard = 0")
        )
    upgrade(directory=str(MIGRATIONS_DIR))
    page = queries.list_messages(10, None, None)
    assert [m["content"] for m in page.messages] == ["from 0001"]
    assert queries.message_stats()["completed"] == 1
    downgrade(directory=str(MIGRATIONS_DIR), revision="0001")
    assert "idempotency_keys" not in inspect(db.engine).get_table_names()
    upgrade(directory=str(MIGRATIONS_DIR))
    assert "idempotency_keys" in inspect(db.engine).get_table_names()


@every_database
def test_the_database_refuses_a_status_outside_the_state_machine(unmigrated_app: Flask) -> None:
    upgrade(directory=str(MIGRATIONS_DIR))
    row = {"content": "x", "attempts": 0, "t": "2026-11-01 00:00:00"}
    insert = text(
        "INSERT INTO messages (content, status, attempts, created_at, updated_at, available_at)"
        " VALUES (:content, :status, :attempts, :t, :t, :t)"
    )
    with write_transaction() as connection:
        connection.execute(insert, {**row, "status": "pending"})
    # An IntegrityError, but an OperationalError from PyMySQL (MariaDB 4025, MySQL 3819).
    refused = (IntegrityError, OperationalError)
    with pytest.raises(refused, match="ck_messages_status"), write_transaction() as conn:
        conn.execute(insert, {**row, "status": "lost"})
    assert queries.list_messages(10, None, None).messages[0]["status"] == "pending"


@every_database
def test_a_start_on_a_database_missing_a_tally_row_fails_and_names_it(
    unmigrated_app: Flask,
) -> None:
    upgrade(directory=str(MIGRATIONS_DIR))
    with write_transaction() as connection:
        connection.execute(
            text("DELETE FROM message_tallies WHERE name = 'recoveries' AND shard = 3")
        )
    url = db.engine.url.render_as_string(hide_password=False)
    env = stack_environment(url, "redis://127.0.0.1:1")
    with pytest.raises(MissingTallies, match="recoveries/3"):
        create_app(load_config(env))
