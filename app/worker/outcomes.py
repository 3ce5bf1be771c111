"""One processor run turned into an :class:`~app.lifecycle.Outcome`, for plain and async processors.

An exception raised by the processor becomes a failed outcome: permanent for
its permanent errors, transient for any other (a ``TypeError`` included). A
result that is not JSON, or is larger than ``N3HUB_MAX_RESULT_BYTES`` of JSON,
fails permanently: running it again gives the same. Each run's duration is
recorded by how it ended.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from app.lifecycle import ClaimedMessage, Outcome
from app.metrics import PROCESSING_DURATION, RUN_FAILED, RUN_SUCCEEDED, RUN_TIMED_OUT
from app.worker.processors import PERMANENT_ERRORS, Processor

MAX_ERROR_LENGTH = 500


def describe_error(error: BaseException) -> str:
    """A short, single-line reason for ``last_error``."""
    text = " ".join(f"{type(error).__name__}: {error}".split())
    return text[:MAX_ERROR_LENGTH]


def run_processor(processor: Processor, message: ClaimedMessage, max_result_bytes: int) -> Outcome:
    """Run one message through a plain processor."""
    started = time.perf_counter()
    try:
        return _ended(message, processor(message), started, max_result_bytes)
    except Exception as error:
        return _failed(message, error, started)


async def run_async_processor(
    processor: Processor, message: ClaimedMessage, max_result_bytes: int
) -> Outcome:
    """Run one message through an ``async def`` processor."""
    started = time.perf_counter()
    run: Callable[[ClaimedMessage], Awaitable[Any]] = processor
    try:
        return _ended(message, await run(message), started, max_result_bytes)
    except Exception as error:
        return _failed(message, error, started)


def timed_out(message: ClaimedMessage, timeout: float) -> Outcome:
    """The failed attempt of a run that overran ``timeout`` seconds."""
    PROCESSING_DURATION.labels(RUN_TIMED_OUT).observe(timeout)
    error = f"TimeoutError: processing took longer than {timeout:g}s"
    return Outcome(message, error=error, timed_out=True)


def _ended(message: ClaimedMessage, result: Any, started: float, max_bytes: int) -> Outcome:
    try:
        size = len(json.dumps(result).encode("utf-8"))
    except (TypeError, ValueError) as error:  # another attempt would return the same
        reason = f"the processor's result is not JSON: {describe_error(error)}"
        return _refused(message, reason[:MAX_ERROR_LENGTH], started)
    if size > max_bytes:
        reason = f"result too large: {size} bytes of JSON, over N3HUB_MAX_RESULT_BYTES={max_bytes}"
        return _refused(message, reason, started)
    PROCESSING_DURATION.labels(RUN_SUCCEEDED).observe(time.perf_counter() - started)
    return Outcome(message, result=result)


def _refused(message: ClaimedMessage, reason: str, started: float) -> Outcome:
    PROCESSING_DURATION.labels(RUN_FAILED).observe(time.perf_counter() - started)
    return Outcome(message, error=reason, permanent=True)


def _failed(message: ClaimedMessage, error: Exception, started: float) -> Outcome:
    PROCESSING_DURATION.labels(RUN_FAILED).observe(time.perf_counter() - started)
    permanent = isinstance(error, PERMANENT_ERRORS)
    return Outcome(message, error=describe_error(error), permanent=permanent)
