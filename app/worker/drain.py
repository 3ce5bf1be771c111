"""The worker side: claim a batch, run the processor on each message, write the outcomes.

A drain keeps claiming until nothing is due or its time budget is spent. Batches
adapt to the load: a quiet system yields batches of one, handled as soon as
they arrive; a backlog yields full batches, one transaction each, and every
full batch asks for one more drain so that idle workers join in. Between those,
a steady flow would make a drain claim again the moment it finished, a few
messages at a time, each claim and finish a transaction that competes with the
web's for the write lock; so after a batch of more than one message the next
claim waits until ``N3HUB_CLAIM_GATHER_SECONDS`` after this one, and the messages
that arrive meanwhile share it. A batch of one means the load is light, and
waiting would only add latency.

While it works a drain holds the drain marker (:mod:`app.wakeups`), so the web
sends no task for the messages it will claim anyway.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Protocol, TypeVar

from flask import Flask, current_app

from app import lifecycle
from app.database import is_transient_error
from app.lifecycle import ClaimedMessage, Outcome, RetryPolicy
from app.metrics import (
    CLAIM_BATCH_SIZE,
    MESSAGE_LATENCY,
    PROCESSING_DURATION,
    WORKER_LAST_PROGRESS,
)
from app.worker.processors import PERMANENT_ERRORS, Processor, load_processor

log = logging.getLogger(__name__)

MAX_ERROR_LENGTH = 500
DATABASE_RETRY_DELAYS = (0.05, 0.2, 0.5, 1.0, 2.0)
# Well within the marker's expiry (app.wakeups.DRAIN_MARKER_TTL_SECONDS).
MARKER_REFRESH_SECONDS = 1.0

T = TypeVar("T")


@dataclass(frozen=True)
class ProcessingSettings:
    """Everything a drain needs, resolved once per process."""

    processor: Processor
    policy: RetryPolicy
    batch_size: int
    lease_seconds: float
    budget_seconds: float
    gather_seconds: float
    max_result_bytes: int


class DrainSignals(Protocol):
    """How a drain tells the web and the other workers what it is doing (app.wakeups)."""

    def hold(self) -> None: ...

    def release(self) -> None: ...

    def request_help(self) -> bool: ...


def init_app(app: Flask) -> None:
    """Resolve the processor and policies into ``app.extensions["processing"]``."""
    app.extensions["processing"] = ProcessingSettings(
        processor=load_processor(app.config["PROCESSOR"]),
        policy=RetryPolicy(
            max_attempts=app.config["MAX_ATTEMPTS"],
            base_delay=app.config["RETRY_BASE_DELAY"],
            max_delay=app.config["RETRY_MAX_DELAY"],
        ),
        batch_size=app.config["CLAIM_SIZE"],
        lease_seconds=app.config["LEASE_SECONDS"],
        budget_seconds=app.config["DRAIN_BUDGET"],
        gather_seconds=app.config["CLAIM_GATHER_SECONDS"],
        max_result_bytes=app.config["MAX_RESULT_BYTES"],
    )


def describe_error(error: BaseException) -> str:
    """A short, single-line reason for ``last_error``."""
    text = " ".join(f"{type(error).__name__}: {error}".split())
    return text[:MAX_ERROR_LENGTH]


def run_processor(processor: Processor, message: ClaimedMessage, max_bytes: int) -> Outcome:
    """Run one message through the processor; an exception or an oversized result fails it.

    A result over ``max_bytes`` of JSON fails the message at once: running it
    again would give the same result.
    """
    try:
        with PROCESSING_DURATION.time():
            result = processor(message)
    except PERMANENT_ERRORS as error:
        return Outcome(message, error=describe_error(error), permanent=True)
    except Exception as error:
        return Outcome(message, error=describe_error(error))
    try:
        size = len(json.dumps(result).encode("utf-8"))
    except (TypeError, ValueError) as error:  # another attempt would return the same
        reason = f"the processor's result is not JSON: {describe_error(error)}"
        return Outcome(message, error=reason[:MAX_ERROR_LENGTH], permanent=True)
    if size > max_bytes:
        reason = f"result too large: {size} bytes of JSON, over N3HUB_MAX_RESULT_BYTES={max_bytes}"
        return Outcome(message, error=reason, permanent=True)
    return Outcome(message, result=result)


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


def process_batch(batch: list[ClaimedMessage], settings: ProcessingSettings) -> list[Outcome]:
    """Run each claimed message, renewing the leases when a slow batch needs longer."""
    renew_every = settings.lease_seconds / 3
    renew_at = time.monotonic() + renew_every
    outcomes = []
    for index, message in enumerate(batch):
        if time.monotonic() >= renew_at:
            with_database_retries(
                partial(lifecycle.extend_leases, batch[index:], settings.lease_seconds)
            )
            renew_at = time.monotonic() + renew_every
        outcomes.append(run_processor(settings.processor, message, settings.max_result_bytes))
    return outcomes


def drain(signals: DrainSignals) -> int:
    """Process due messages until none is left or the budget is spent; return how many.

    A drain that fails lets go of the marker, so that the next commit or sweep
    queues another drain at once rather than after the marker expires.
    """
    try:
        return _drain(signals, current_app.extensions["processing"])
    except BaseException:
        signals.release()
        raise


def _drain(signals: DrainSignals, settings: ProcessingSettings) -> int:
    deadline = time.monotonic() + settings.budget_seconds
    marker_held_at = time.monotonic()
    next_claim_at = 0.0
    handled = 0
    while True:
        pause = next_claim_at - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        claimed_at = time.monotonic()
        batch = with_database_retries(
            partial(lifecycle.claim_batch, settings.batch_size, settings.lease_seconds)
        )
        if not batch:
            signals.release()
            # A message committed before the release saw the marker and queued nothing.
            if not with_database_retries(lifecycle.pending_work_due):
                return handled
            signals.hold()
            marker_held_at = time.monotonic()
            continue
        full = len(batch) == settings.batch_size
        if full:
            signals.request_help()
        outcomes = process_batch(batch, settings)
        report = with_database_retries(partial(lifecycle.finish_batch, outcomes, settings.policy))
        _record_batch(outcomes, settings.policy)
        if report.stale:
            log.warning("%d outcomes dropped: their claims were taken back", report.stale)
        handled += len(batch)
        now = time.monotonic()
        if now >= deadline:
            # Hand over: the marker stays held for the successor, if one could be queued.
            if not signals.request_help():
                signals.release()
            return handled
        if now - marker_held_at >= MARKER_REFRESH_SECONDS:
            signals.hold()
            marker_held_at = now
        gather = len(batch) > 1 and not full
        next_claim_at = claimed_at + settings.gather_seconds if gather else 0.0


def _record_batch(outcomes: list[Outcome], policy: RetryPolicy) -> None:
    """Metrics for a finished batch, and one log line per failed attempt."""
    now = lifecycle.utcnow()
    CLAIM_BATCH_SIZE.observe(len(outcomes))
    WORKER_LAST_PROGRESS.set(now.timestamp())
    for outcome in outcomes:
        status = policy.next_status(outcome)
        if status != lifecycle.PENDING:
            age = (now - outcome.message.created_at).total_seconds()
            MESSAGE_LATENCY.labels(status.value).observe(age)
        if not outcome.succeeded:
            kind = "permanently" if outcome.permanent else "transiently"
            log.warning(
                "message %d attempt %d failed %s: %s",
                outcome.message.id,
                outcome.message.attempts,
                kind,
                outcome.error,
                extra={"message_id": outcome.message.id},
            )
