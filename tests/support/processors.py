"""Processors for tests, steered by a directive at the start of the content.

``fail-transient:N ...`` fails the first N attempts, then succeeds;
``fail-permanent ...`` always fails permanently; ``crash ...`` kills the
worker process; ``sleep:S ...`` sleeps S seconds first; ``meet:N ...`` waits
until N messages with that directive are running at once in this process (it
fails if they never are). Anything else runs the default processor.
:func:`scripted_async` is the same as an ``async def`` processor.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any

from app.lifecycle import ClaimedMessage
from app.worker.processors import PermanentProcessingError, TransientProcessingError, analyse_text

MEETING_PATIENCE_SECONDS = 30

_meetings: dict[int, threading.Barrier] = {}
_meetings_lock = threading.Lock()


def _directive(message: ClaimedMessage) -> tuple[str, str]:
    directive, _, argument = message.content.partition(" ")[0].partition(":")
    return directive, argument


def _fail_or_crash(message: ClaimedMessage) -> None:
    directive, argument = _directive(message)
    if directive == "fail-transient" and message.attempts <= int(argument):
        raise TransientProcessingError(f"planned transient failure on attempt {message.attempts}")
    if directive == "fail-permanent":
        raise PermanentProcessingError("planned permanent failure")
    if directive == "crash":
        os._exit(13)


def scripted(message: ClaimedMessage) -> Any:
    """Behave as the content's leading directive says."""
    _fail_or_crash(message)
    directive, argument = _directive(message)
    if directive == "sleep":
        time.sleep(float(argument))
    if directive == "meet":
        with _meetings_lock:
            barrier = _meetings.setdefault(int(argument), threading.Barrier(int(argument)))
        barrier.wait(MEETING_PATIENCE_SECONDS)
    return analyse_text(message)


_arrived: dict[int, int] = {}
_everyone_here: dict[int, asyncio.Event] = {}


async def scripted_async(message: ClaimedMessage) -> Any:
    """:func:`scripted`, awaiting where it would block."""
    _fail_or_crash(message)
    directive, argument = _directive(message)
    if directive == "sleep":
        await asyncio.sleep(float(argument))
    if directive == "meet":
        expected = int(argument)
        everyone_here = _everyone_here.setdefault(expected, asyncio.Event())
        _arrived[expected] = _arrived.get(expected, 0) + 1
        if _arrived[expected] == expected:
            everyone_here.set()
        await asyncio.wait_for(everyone_here.wait(), MEETING_PATIENCE_SECONDS)
    return analyse_text(message)
