"""The overview's bar charts: geometry computed here, drawn as inline SVG by the template.

No JavaScript and no chart library: a chart is a few dozen ``<rect>`` elements,
each with a ``<title>`` the browser shows on hover.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

WIDTH = 480
HEIGHT = 110
GAP = 1.0  # between bars


@dataclass(frozen=True)
class Bar:
    """One bar, in the chart's coordinates (y grows downwards)."""

    x: float
    y: float
    width: float
    height: float
    title: str


@dataclass(frozen=True)
class Chart:
    """Bars over a fixed number of slots, scaled to the tallest, and the label of that scale."""

    bars: list[Bar]
    top: str
    width: int = WIDTH
    height: int = HEIGHT


def bar_chart(
    values: Sequence[tuple[int, float, str]], slots: int, label: Callable[[float], str]
) -> Chart:
    """A chart of ``(slot, value, title)`` bars; slots without a value stay empty."""
    tallest = max((value for _, value, _ in values), default=0.0)
    slot_width = WIDTH / slots
    scale = HEIGHT / tallest if tallest else 0.0
    bars = [
        Bar(
            x=slot * slot_width,
            y=HEIGHT - value * scale,
            width=max(slot_width - GAP, GAP),
            height=value * scale,
            title=title,
        )
        for slot, value, title in values
    ]
    return Chart(bars=bars, top=label(tallest))
