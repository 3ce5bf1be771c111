"""What a worker resolves from the config once, and how it retries a busy database."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from flask import Flask

from app.database import is_transient_error
from app.lifecycle import RetryPolicy
from app.worker.processors import Processor, load_processor

log = logging.getLogger(__name__)

DATABASE_RETRY_DELAYS = (0.05, 0.2, 0.5, 1.0, 2.0)

T = TypeVar("T")


@dataclass(frozen=True)
class ProcessingSettings:
    """Everything a worker process needs to process messages."""

    processor: Processor
    policy: RetryPolicy
    claim_size: int
    lease_seconds: float
    budget_seconds: float
    gather_seconds: float
    concurrency: int
    timeout_seconds: float
    shutdown_grace_seconds: float
    max_result_bytes: int


def init_app(app: Flask) -> None:
    """Resolve the processor and policies into ``app.extensions["processing"]``."""
    app.extensions["processing"] = ProcessingSettings(
        processor=load_processor(app.config["PROCESSOR"]),
        policy=RetryPolicy(
            max_attempts=app.config["MAX_ATTEMPTS"],
            base_delay=app.config["RETRY_BASE_DELAY"],
            max_delay=app.config["RETRY_MAX_DELAY"],
        ),
        claim_size=app.config["CLAIM_SIZE"],
        lease_seconds=app.config["LEASE_SECONDS"],
        budget_seconds=app.config["DRAIN_BUDGET"],
        gather_seconds=app.config["CLAIM_GATHER_SECONDS"],
        concurrency=app.config["PROCESS_CONCURRENCY"],
        timeout_seconds=app.config["PROCESS_TIMEOUT"],
        shutdown_grace_seconds=app.config["SHUTDOWN_GRACE"],
        max_result_bytes=app.config["MAX_RESULT_BYTES"],
    )


def with_database_retries(action: Callable[[], T]) -> T:
    """Run ``action``, retrying it while the database reports a passing error."""
    for delay in DATABASE_RETRY_DELAYS:
        try:
            return action()
        except Exception as error:
            if not is_transient_error(error):
                raise
            log.warning("database busy, retrying in %.2fs: %s", delay, error)
            time.sleep(delay)
    return action()
