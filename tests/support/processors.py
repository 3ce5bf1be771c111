"""Processors for tests, steered by a directive at the start of the content.

``fail-transient:N ...`` fails the first N attempts, then succeeds;
``fail-permanent ...`` always fails permanently; ``crash ...`` kills the
worker process; ``sleep:S ...`` sleeps S seconds first. Anything else runs the
default processor.
"""

from __future__ import annotations

import os
import time
from typing import Any

from app.lifecycle import ClaimedMessage
from app.worker.processors import PermanentProcessingError, TransientProcessingError, analyse_text


def scripted(message: ClaimedMessage) -> Any:
    """Behave as the content's leading directive says."""
    directive, _, argument = message.content.partition(" ")[0].partition(":")
    if directive == "fail-transient" and message.attempts <= int(argument):
        raise TransientProcessingError(f"planned transient failure on attempt {message.attempts}")
    if directive == "fail-permanent":
        raise PermanentProcessingError("planned permanent failure")
    if directive == "crash":
        os._exit(13)
    if directive == "sleep":
        time.sleep(float(argument))
    return analyse_text(message)
