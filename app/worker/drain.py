"""The drain: claim due messages for this process's free slots until none is left.

A drain keeps the process's slots (:mod:`app.worker.pipeline`) full: it claims
as many due messages as there are free slots, starts them, and claims again as
slots free up. Claims adapt to the load: a quiet system yields claims of one,
started as soon as they arrive. Under load, claiming whenever one slot frees
would take a few messages at a time, each claim a transaction that competes
with the web's for the write lock; so after a claim of several the next waits
until ``N3HUB_CLAIM_GATHER_SECONDS`` after it, or until a full claim's worth of
slots is free. A full claim asks for one more drain, so that idle processes
join in.

A message that lost its worker is claimed only when nothing else is in flight
in this process and every outcome is committed, and runs alone: if it kills the
process again, it takes no healthy message (or its unwritten outcome) down with it.

While it claims, a drain holds the drain marker (:mod:`app.wakeups`), so the web
sends no task for the messages it will claim anyway. It ends when a claim finds
nothing (the messages in flight go on) or its time budget is spent.
"""

from __future__ import annotations

import logging
import time
from functools import partial
from typing import Protocol

from flask import Flask, current_app

from app import lifecycle
from app.lifecycle import Outcome, RetryPolicy
from app.metrics import CLAIM_BATCH_SIZE, MESSAGE_LATENCY, WORKER_LAST_PROGRESS
from app.worker import process_hooks
from app.worker.pipeline import Pipeline, pipeline_for
from app.worker.runners import runner_for
from app.worker.settings import ProcessingSettings, with_database_retries

log = logging.getLogger(__name__)

# Well within the marker's expiry (app.wakeups.DRAIN_MARKER_TTL_SECONDS).
MARKER_REFRESH_SECONDS = 1.0


class DrainSignals(Protocol):
    """How a drain tells the web and the other workers what it is doing (app.wakeups)."""

    def hold(self) -> None: ...

    def release(self) -> None: ...

    def request_help(self) -> bool: ...


def drain(signals: DrainSignals) -> int:
    """Claim and start due messages until none is left or the budget is spent; return how many.

    A drain that fails lets go of the marker, so that the next commit or sweep
    queues another drain at once rather than after the marker expires.
    """
    app = current_app._get_current_object()
    pipeline = pipeline_for(app, partial(_build_pipeline, app))
    if not pipeline.claiming.acquire(blocking=False):
        return 0  # another drain already claims for this process (a threaded pool)
    try:
        return _drain(signals, app.extensions["processing"], pipeline)
    except BaseException:
        signals.release()
        raise
    finally:
        pipeline.claiming.release()


def _build_pipeline(app: Flask) -> Pipeline:
    settings: ProcessingSettings = app.extensions["processing"]
    return Pipeline(
        app,
        settings,
        runner_for(settings.processor, settings.max_result_bytes),
        partial(record_outcomes, policy=settings.policy),
        process_hooks.restart_pool_process if process_hooks.in_pool_process() else None,
    )


def _drain(signals: DrainSignals, settings: ProcessingSettings, pipeline: Pipeline) -> int:
    deadline = time.monotonic() + settings.budget_seconds
    marker_held_at = time.monotonic()
    next_claim_at = 0.0
    lone_waiting = False
    handled = 0
    full_claim = min(settings.claim_size, pipeline.capacity)
    while True:
        now = time.monotonic()
        if now >= deadline:
            # Hand over: the marker stays held for the successor, if one could be queued.
            if not signals.request_help():
                signals.release()
            return handled
        if now - marker_held_at >= MARKER_REFRESH_SECONDS:
            signals.hold()
            marker_held_at = now
        wait = min(deadline, marker_held_at + MARKER_REFRESH_SECONDS) - now
        if lone_waiting:
            if not pipeline.wait_until_idle(wait):
                continue
            free = pipeline.capacity
        elif next_claim_at > now:
            free = pipeline.wait_for_free_slots(min(next_claim_at - now, wait), full_claim)
            if free < full_claim:
                continue
        else:
            free = pipeline.wait_for_free_slots(wait)
        if pipeline.broken:
            signals.release()
            return handled
        if not free:
            continue
        wanted = min(free, settings.claim_size)
        claimed_at = time.monotonic()
        claim = with_database_retries(
            partial(
                lifecycle.claim_messages,
                wanted,
                settings.lease_seconds,
                idle=pipeline.idle,
            )
        )
        lone_waiting = claim.alone_waiting
        if claim.messages:
            CLAIM_BATCH_SIZE.observe(len(claim.messages))
            pipeline.start(claim.messages, alone=claim.alone)
            handled += len(claim.messages)
        elif not claim.alone_waiting:
            signals.release()
            # A message committed before the release saw the marker and queued nothing.
            if not with_database_retries(lifecycle.pending_work_due):
                return handled
            signals.hold()
            marker_held_at = time.monotonic()
            continue
        if len(claim.messages) == full_claim:
            signals.request_help()
        gather = len(claim.messages) > 1
        next_claim_at = claimed_at + settings.gather_seconds if gather else 0.0


def record_outcomes(outcomes: list[Outcome], policy: RetryPolicy) -> None:
    """Metrics for written outcomes, and one log line per failed attempt."""
    now = lifecycle.utcnow()
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
