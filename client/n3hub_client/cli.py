"""The ``n3hub`` command: send, read, list, count, retry and wait on messages from a shell.

Exit codes (:class:`ExitCode`): 0 success; 1 any other error the server
answered (e.g. 409 retry of a message that is not failed); 2 bad usage or bad
input; 3 not found; 4 missing or refused API key (401/403); 5 server
unreachable or unavailable (after retries); 6 ``wait`` timed out; 7 ``wait``
saw the message fail.
"""

from __future__ import annotations

import argparse
import enum
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn

from n3hub_client import environment, render
from n3hub_client.client import Client
from n3hub_client.errors import APIError, ConnectionFailed, N3HubError, WaitTimeout
from n3hub_client.models import STATUSES

# The server's default page size, which every server accepts.
LS_PAGE_SIZE = 50


class ExitCode(enum.IntEnum):
    """What the command's exit status means; scripts may rely on these."""

    OK = 0
    ERROR = 1
    USAGE = 2
    NOT_FOUND = 3
    AUTH = 4
    UNAVAILABLE = 5
    TIMEOUT = 6
    FAILED = 7


class InputError(N3HubError):
    """A line of the input file that is not a message."""


class Output:
    """Where results (stdout) and errors and progress (stderr) go, as JSON or for a person."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.out = Console(highlight=False, soft_wrap=not as_json)
        self.err = Console(stderr=True, highlight=False)

    def show(self, value: Any, human: Callable[[Any], Any]) -> None:
        """``value`` as one line of JSON, or as ``human(value)`` renders it."""
        if self.as_json:
            print(json.dumps(value, ensure_ascii=False), flush=True)
        else:
            self.out.print(human(value))


def read_contents(stream: TextIO, jsonl: bool, counts: dict[str, int]) -> Iterator[str]:
    """The messages of ``stream``, one a line; empty lines are counted in ``counts`` and skipped.

    With ``jsonl`` a line is a JSON string or an object with a ``content`` string.
    """
    for number, line in enumerate(stream, 1):
        text = line.removesuffix("\n").removesuffix("\r")
        if jsonl and text.strip():
            try:
                value = json.loads(text)
            except ValueError:
                raise InputError(f"line {number} is not JSON") from None
            text = value.get("content") if isinstance(value, dict) else value
            if not isinstance(text, str):
                raise InputError(f"line {number} holds no 'content' string")
        elif jsonl:
            text = ""
        counts["lines"] += 1
        if text:
            yield text
        else:
            counts["skipped"] += 1


def open_input(name: str) -> TextIO:
    """The file ``name`` (``-`` for standard input), split on ``\\n`` only, as UTF-8."""
    if name == "-":
        return open(sys.stdin.fileno(), encoding="utf-8", newline="\n", closefd=False)
    return open(name, encoding="utf-8", newline="\n")


def count_lines(name: str) -> int | None:
    """How many lines the file has (None for standard input, which is read once)."""
    if name == "-":
        return None
    with open_input(name) as stream:
        return sum(1 for _ in stream)


def send_file(client: Client, output: Output, name: str, jsonl: bool) -> ExitCode:
    """Send every line of a file in batches, with a progress bar and a summary."""
    counts = {"lines": 0, "skipped": 0, "stored": 0}
    first_id = last_id = None
    started = time.monotonic()
    columns = (TextColumn("sending"), BarColumn(), TaskProgressColumn(), MofNCompleteColumn())
    with open_input(name) as stream, Progress(*columns, console=output.err) as progress:
        task = progress.add_task("send", total=count_lines(name))
        for chunk in client.send_chunks(read_contents(stream, jsonl, counts)):
            first_id = chunk[0]["id"] if first_id is None else first_id
            last_id = chunk[-1]["id"]
            counts["stored"] += len(chunk)
            progress.update(task, completed=counts["lines"])
        progress.update(task, total=counts["lines"], completed=counts["lines"])
    summary = {**counts, "first_id": first_id, "last_id": last_id}
    summary["seconds"] = round(time.monotonic() - started, 3)
    output.show(summary, render.send_summary)
    return ExitCode.OK


def run_command(args: argparse.Namespace, client: Client, output: Output) -> ExitCode:
    """Carry out the parsed command."""
    command = args.command
    if command == "send" and args.file is not None:
        return send_file(client, output, args.file, args.jsonl)
    if command == "send":
        message = client.send(args.text, args.idempotency_key)
    elif command == "get":
        message = client.get(args.id)
    elif command == "retry":
        message = client.retry(args.id)
    elif command == "wait":
        message = client.wait(args.id, args.timeout, args.poll)
    elif command == "ls":
        pages = client.iter_messages(args.status, min(args.limit, LS_PAGE_SIZE))
        shown = list(islice(pages, args.limit))
        output.show(shown, render.messages_table)
        return ExitCode.OK
    else:
        return show_stats(client, output, args.watch, args.interval)
    output.show(message, render.message_table)
    return ExitCode.FAILED if command == "wait" and message["status"] == "failed" else ExitCode.OK


def show_stats(client: Client, output: Output, watch: bool, interval: float) -> ExitCode:
    """Counts by status, once or every ``interval`` seconds until interrupted."""
    if not watch or output.as_json:
        while True:
            output.show(client.stats(), render.stats_table)
            if not watch:
                return ExitCode.OK
            time.sleep(interval)
    with Live(render.stats_table(client.stats()), console=output.out) as live:
        while True:
            time.sleep(interval)
            live.update(render.stats_table(client.stats()))


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def parser() -> argparse.ArgumentParser:
    """The command line: global options and one subcommand per action."""
    top = argparse.ArgumentParser(
        prog="n3hub",
        description="Send and inspect N3Hub messages.",
        epilog="Server: --url, else N3HUB_URL, else http://127.0.0.1:5000. Key: --api-key, "
        "else N3HUB_API_KEY, else instance/dev-api-key of the N3Hub checkout you are in.",
    )
    top.add_argument("--url", help="the server's URL")
    top.add_argument("--api-key", help="the API key (sent as Authorization: Bearer)")
    top.add_argument("--json", action="store_true", help="print JSON for scripts")
    top.add_argument(
        "--http-timeout", type=float, default=30.0, help="seconds per HTTP request (default 30)"
    )
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    send = commands.add_parser("send", help="store a message, or one per line of a file")
    what = send.add_mutually_exclusive_group(required=True)
    what.add_argument("text", nargs="?", help="the message's content")
    what.add_argument("--file", "-f", help="a file of messages, one a line ('-': stdin)")
    send.add_argument("--jsonl", action="store_true", help="the file's lines are JSON")
    send.add_argument("--idempotency-key", help="the key of a single send (default: random)")

    for name, text in (("get", "show a message"), ("retry", "send a failed message back")):
        commands.add_parser(name, help=text).add_argument("id", type=positive_int)
    wait = commands.add_parser("wait", help="wait until a message is completed or failed")
    wait.add_argument("id", type=positive_int)
    wait.add_argument("--timeout", type=float, default=60.0, help="seconds (default 60)")
    wait.add_argument("--poll", type=float, default=1.0, help="longest pause between looks")

    listing = commands.add_parser("ls", help="list messages, newest first")
    listing.add_argument("--status", choices=STATUSES)
    listing.add_argument("--limit", type=positive_int, default=20, help="how many (default 20)")

    stats = commands.add_parser("stats", help="counts by status")
    stats.add_argument("--watch", action="store_true", help="refresh until Ctrl-C")
    stats.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes")
    return top


def exit_code_for(error: N3HubError) -> ExitCode:
    """The exit code that stands for ``error``."""
    if isinstance(error, WaitTimeout):
        return ExitCode.TIMEOUT
    if isinstance(error, InputError):
        return ExitCode.USAGE
    if isinstance(error, ConnectionFailed):
        return ExitCode.UNAVAILABLE
    if isinstance(error, APIError):
        if error.status == 404:
            return ExitCode.NOT_FOUND
        if error.status in (401, 403):
            return ExitCode.AUTH
        if error.status == 429 or error.status >= 500:
            return ExitCode.UNAVAILABLE
    return ExitCode.ERROR


def main(argv: list[str] | None = None) -> int:
    """Run the command; the exit code."""
    args = parser().parse_args(argv)
    output = Output(args.json)
    url = environment.server_url(args.url, os.environ)
    key = environment.api_key(args.api_key, os.environ, Path.cwd())
    try:
        with Client(url, key, timeout=args.http_timeout) as client:
            return run_command(args, client, output)
    except N3HubError as error:
        where = f" ({url})" if isinstance(error, ConnectionFailed) else ""
        output.err.print(f"n3hub: {error}{where}", markup=False, highlight=False, soft_wrap=True)
        return exit_code_for(error)
    except (OSError, UnicodeDecodeError) as error:
        output.err.print(f"n3hub: {error}", markup=False, highlight=False, soft_wrap=True)
        return ExitCode.USAGE
    except KeyboardInterrupt:
        return ExitCode.OK if args.command == "stats" else 130


if __name__ == "__main__":
    sys.exit(main())
