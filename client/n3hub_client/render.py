"""How the ``n3hub`` command shows messages, pages and counts to a person."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from rich.table import Table
from rich.text import Text

from n3hub_client.models import STATUSES, Message, Stats

CONTENT_WIDTH = 60
STATUS_STYLES = {"pending": "yellow", "processing": "cyan", "completed": "green", "failed": "red"}


def one_line(text: str, width: int = CONTENT_WIDTH) -> str:
    """``text`` on one line (newlines shown as ⏎), cut to ``width`` characters."""
    flat = text.replace("\r\n", "⏎").replace("\n", "⏎").replace("\r", "⏎")
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def status_text(status: str) -> str:
    """A status with its colour."""
    style = STATUS_STYLES.get(status, "")
    return f"[{style}]{status}[/]" if style else status


def message_table(message: Message) -> Table:
    """One message as a two-column table of its fields."""
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for name, value in message.items():
        shown = status_text(str(value)) if name == "status" else _plain(value)
        table.add_row(name, shown)
    return table


def messages_table(messages: Iterable[Message]) -> Table:
    """Messages as rows: id, status, attempts, created, content."""
    table = Table("id", "status", "attempts", "created_at", "content")
    for message in messages:
        table.add_row(
            str(message["id"]),
            status_text(message["status"]),
            str(message["attempts"]),
            message["created_at"],
            Text(one_line(message["content"])),
            end_section=False,
        )
    return table


def stats_table(stats: Stats) -> Table:
    """Counts by status, with the total last."""
    table = Table("status", "messages")
    for status in STATUSES:
        table.add_row(status_text(status), str(stats[status]))
    table.add_row("[bold]total[/]", f"[bold]{stats['total']}[/]")
    return table


def _plain(value: Any) -> Text:
    if value is None:
        return Text("-", style="dim")
    if isinstance(value, dict | list):
        return Text(json.dumps(value, ensure_ascii=False))
    return Text(str(value))


def send_summary(summary: dict[str, Any]) -> str:
    """What ``n3hub send --file`` did, in one sentence."""
    return (
        f"Stored {summary['stored']} messages (ids {summary['first_id']}..{summary['last_id']}) "
        f"from {summary['lines']} lines in {summary['seconds']:.1f} s; "
        f"{summary['skipped']} empty lines skipped."
    )
