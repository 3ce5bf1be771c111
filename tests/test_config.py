"""Configuration from environment variables."""

from __future__ import annotations

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


def test_amqp_broker_has_no_wake_marker() -> None:
    assert load_config({"CELERY_BROKER_URL": "amqp://guest@localhost//"})["WAKE_REDIS_URL"] == ""


@pytest.mark.parametrize(
    "env",
    [
        {"N3HUB_MAX_ATTEMPTS": "zero"},
        {"N3HUB_MAX_ATTEMPTS": "0"},
        {"N3HUB_LEASE_SECONDS": "0.5"},
        {"N3HUB_AUTO_MIGRATE": "maybe"},
    ],
)
def test_bad_values_are_rejected_with_the_variable_named(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match=next(iter(env))):
        load_config(env)


def test_json_logs_carry_request_and_message_ids(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "json")
    try:
        logging.getLogger("n3hub.test").warning("failed", extra={"message_id": 7})
        line = capsys.readouterr().err.strip().splitlines()[-1]
    finally:
        configure_logging("INFO", "text")
    record = json.loads(line)
    assert record["message"] == "failed"
    assert record["message_id"] == 7
    assert record["request_id"] == "-"
    assert record["level"] == "WARNING"
