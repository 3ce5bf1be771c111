"""What each route demands, declared on its view: open, a token, a key's scope, a console login."""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import Any, TypeVar

from app.auth.keys import Scope

View = TypeVar("View", bound=Callable[..., Any])
_ATTRIBUTE = "n3hub_access"


class Access(StrEnum):
    """Access rules other than a scope."""

    PUBLIC = "public"  # the health probes
    METRICS = "metrics"  # N3HUB_METRICS_TOKEN (or, without one, see app.api.guard)
    CONSOLE = "console"  # the web console's own login session (app.console.session)


Requirement = Scope | Access


def requires(requirement: Requirement) -> Callable[[View], View]:
    """Declare what a view demands; the guard refuses views that declare nothing."""

    def declare(view: View) -> View:
        setattr(view, _ATTRIBUTE, requirement)
        return view

    return declare


def requirement_of(view: Callable[..., Any]) -> Requirement | None:
    """What a view declared with :func:`requires`, or None."""
    return getattr(view, _ATTRIBUTE, None)
