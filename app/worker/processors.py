"""Processors: the work done on each message, and how one is chosen by configuration.

A processor is a plain callable taking a :class:`~app.lifecycle.ClaimedMessage`
and returning a JSON-serialisable result. Raising
:class:`PermanentProcessingError` (or ``ValueError``) fails the message at once;
any other exception is treated as transient and retried with backoff.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Callable
from typing import Any

from app.config import import_callable
from app.lifecycle import ClaimedMessage

Processor = Callable[[ClaimedMessage], Any]


class PermanentProcessingError(Exception):
    """The message can never be processed; retrying will not help."""


class TransientProcessingError(Exception):
    """The attempt failed for a passing reason; try again later."""


PERMANENT_ERRORS: tuple[type[BaseException], ...] = (PermanentProcessingError, ValueError)


def analyse_text(message: ClaimedMessage) -> dict[str, Any]:
    """Default processor: counts, a digest and the normalised form of the text."""
    text = message.content
    normalised = " ".join(unicodedata.normalize("NFKC", text).casefold().split())
    return {
        "characters": len(text),
        "bytes": len(text.encode("utf-8")),
        "words": len(text.split()),
        "lines": len(text.splitlines()),
        "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
        "normalized": normalised,
    }


def load_processor(path: str) -> Processor:
    """Import the processor ``N3HUB_PROCESSOR`` names; ConfigError if it cannot be used."""
    return import_callable("N3HUB_PROCESSOR", path)
