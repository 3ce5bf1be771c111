"""Configuration from environment variables."""

from __future__ import annotations

import contextvars
import json
import logging

import pytest

from app.config import DEFAULT_DATABASE_URL, ConfigError, load_config
from app.logs import configure_logging


def test_defaults_work_on_a_laptop() -> None:
    config = load_config({})
    assert config["SQLALCHEMY_DATABASE_URI"] == DEFAULT_DATABASE_URL
    assert DEFAULT_DATABASE_URL.endswith("/instance/messages.db")
    assert config["CELERY_BROKER_URL"] == "redis://localhost:6379/0"
    assert config["CELERY_RESULT_BACKEND"] == "redis://localhost:6379/1"
    assert config["WAKE_REDIS_URL"] == config["CELERY_BROKER_URL"]
    assert config["MAX_CONTENT_LENGTH"] == 1024 * 1024
    assert config["LOG_FORMAT"] == "text"


def test_production_turns_debug_off_and_logs_json() -> None:
    config = load_config({"FLASK_ENV": "production", "FLASK_DEBUG": "1"})
    assert config["DEBUG"] is False
    assert config["LOG_FORMAT"] == "json"
    assert load_config({"FLASK_DEBUG": "1"})["DEBUG"] is True


def test_postgres_urls_use_psycopg3() -> None:
    for url in ("postgres://u@h/db", "postgresql://u@h/db"):
        assert load_config({"DATABASE_URL": url})["SQLALCHEMY_DATABASE_URI"] == (
            "postgresql+psycopg://u@h/db"
        )


def test_mysql_urls_use_pymysql_and_utf8mb4() -> None:
    for url, expected in [
        ("mysql://u:p@h:3306/db", "mysql+pymysql://u:p@h:3306/db?charset=utf8mb4"),
        ("mysql+pymysql://u@h/db?charset=latin1", "mysql+pymysql://u@h/db?charset=utf8mb4"),
        ("mariadb://u@h/db", "mariadb+pymysql://u@h/db?charset=utf8mb4"),
    ]:
        assert load_config({"DATABASE_URL": url})["SQLALCHEMY_DATABASE_URI"] == expected


@pytest.mark.parametrize(
    "url", ["oracle://u:p@h/x", "mssql+pyodbc://h/x", "mysql+mysqldb://u@h/db"]
)
def test_unsupported_databases_are_refused_naming_the_supported_ones(url: str) -> None:
    with pytest.raises(ConfigError, match="DATABASE_URL") as refused:
        load_config({"DATABASE_URL": url})
    message = str(refused.value)
    assert "\n" not in message and ":p@" not in message
    assert all(scheme in message for scheme in ("sqlite://", "postgresql://", "mysql://"))


def test_amqp_broker_has_no_wake_marker() -> None:
    assert load_config({"CELERY_BROKER_URL": "amqp://guest@localhost//"})["WAKE_REDIS_URL"] == ""


@pytest.mark.parametrize(
    ("name", "value", "allowed"),
    [
        ("N3HUB_MAX_ATTEMPTS", "zero", "an integer of at least 1"),
        ("N3HUB_MAX_ATTEMPTS", "0", "an integer of at least 1"),
        ("N3HUB_LEASE_SECONDS", "0.5", "a number of seconds of at least 1"),
        ("N3HUB_LEASE_SECONDS", "nan", "a number of seconds of at least 1"),
        ("N3HUB_AUTO_MIGRATE", "maybe", "1/0, true/false"),
        ("N3HUB_SQLITE_SYNCHRONOUS", "FULLL", "one of OFF, NORMAL, FULL, EXTRA"),
        ("N3HUB_CLAIM_SIZE", "abc", "an integer of at least 1"),
        ("N3HUB_PROCESSOR", "nonexistent", "package.module:callable"),
        ("LOG_FORMAT", "xml", "one of text, json"),
        ("LOG_LEVEL", "LOUD", "one of DEBUG, INFO, WARNING, ERROR, CRITICAL"),
        ("FLASK_ENV", "prod", "one of development, production"),
        ("WEB_CONCURRENCY", "abc", "an integer of at least 1"),
        ("GUNICORN_WORKER_CLASS", "uvicorn", "one of gevent, gthread, sync"),
        ("PORT", "70000", "an integer from 1 to 65535"),
        ("DATABASE_URL", "messages.db", "a URL"),
    ],
)
def test_a_bad_value_is_named_with_what_is_allowed(name: str, value: str, allowed: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config({name: value})
    message = str(raised.value)
    assert message.startswith(f"{name}={value!r} is not allowed: use ")
    assert allowed in message
    assert "\n" not in message


def test_choices_ignore_case_and_take_their_declared_spelling() -> None:
    config = load_config(
        {"N3HUB_SQLITE_SYNCHRONOUS": "normal", "LOG_LEVEL": "debug", "LOG_FORMAT": "JSON"}
    )
    assert (config["SQLITE_SYNCHRONOUS"], config["LOG_LEVEL"], config["LOG_FORMAT"]) == (
        "NORMAL",
        "DEBUG",
        "json",
    )


def test_empty_is_unset_except_where_empty_means_off() -> None:
    config = load_config(
        {"N3HUB_MAX_ATTEMPTS": " ", "GUNICORN_ACCESSLOG": "", "N3HUB_WAKE_REDIS_URL": ""}
    )
    assert config["MAX_ATTEMPTS"] == 5
    assert config["GUNICORN_ACCESSLOG"] == ""
    assert config["WAKE_REDIS_URL"] == ""


def test_json_logs_carry_request_and_message_ids(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "json")
    log = logging.getLogger("n3hub.test")
    try:
        # Outside any request: a context of its own (a test client's response left
        # unclosed keeps its request's id in this thread's context until it is closed).
        contextvars.Context().run(log.warning, "failed", extra={"message_id": 7})
        line = capsys.readouterr().err.strip().splitlines()[-1]
    finally:
        configure_logging("INFO", "text")
    record = json.loads(line)
    assert record["message"] == "failed"
    assert record["message_id"] == 7
    assert record["request_id"] == "-"
    assert record["level"] == "WARNING"
