"""Processors of the bench that wait, as processors calling another service do.

A message waits ``WAIT_SECONDS``, or ``SLOW_SECONDS`` when its content starts
with ``SLOW``; :func:`wait` blocks its thread, :func:`wait_async` awaits.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the Celery baseline imports this module without the app
    from app.lifecycle import ClaimedMessage

WAIT_SECONDS = 0.05
SLOW_SECONDS = 5.0
SLOW = "slow"


def seconds_for(message: ClaimedMessage) -> float:
    """How long this message's processing waits."""
    return SLOW_SECONDS if message.content.startswith(SLOW) else WAIT_SECONDS


def wait(message: ClaimedMessage) -> dict[str, float]:
    """Block for the message's time."""
    seconds = seconds_for(message)
    time.sleep(seconds)
    return {"waited": seconds}


async def wait_async(message: ClaimedMessage) -> dict[str, float]:
    """Await the message's time."""
    seconds = seconds_for(message)
    await asyncio.sleep(seconds)
    return {"waited": seconds}
