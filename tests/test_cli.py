"""The ``n3hub`` command as a user runs it, against a real stack: Gunicorn, a worker, Redis."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from flask import Flask

from app import create_app
from app.config import load_config
from tests.conftest import database_scalar, reset_database, sqlite_web, stack_environment
from tests.support.processes import RedisServer, free_port

N3HUB = str(Path(sys.executable).parent / "n3hub")


def n3hub(
    url: str, *args: str, stdin: str | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the command with ``N3HUB_URL`` set; its exit code and output."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("N3HUB_")}
    env.update(N3HUB_URL=url, COLUMNS="200")  # wide enough for a table row on one line
    return subprocess.run(
        [N3HUB, *args], env=env, input=stdin, capture_output=True, text=True, timeout=600, cwd=cwd
    )


def n3hub_json(url: str, *args: str) -> object:
    done = n3hub(url, "--json", *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture
def url(app: Flask, web_url: str) -> str:
    reset_database(app)
    return web_url


def test_send_get_wait_and_ls(url: str) -> None:
    sent = n3hub_json(url, "send", "hello from the shell")
    assert sent["status"] == "pending"
    done = n3hub_json(url, "wait", str(sent["id"]), "--timeout", "30")
    assert done["status"] == "completed"
    assert n3hub_json(url, "get", str(sent["id"])) == done
    listed = n3hub_json(url, "ls", "--limit", "5")
    assert [message["id"] for message in listed] == [sent["id"]]
    assert n3hub_json(url, "stats")["completed"] == 1


def test_human_output_is_tables(url: str) -> None:
    for text in ("first [bold]markup[/bold] stays text", "second"):
        assert n3hub(url, "send", text).returncode == 0
    listing = n3hub(url, "ls", "--limit", "1")
    assert listing.returncode == 0
    assert "second" in listing.stdout and "first" not in listing.stdout
    assert "first [bold]markup[/bold] stays text" in n3hub(url, "ls").stdout
    stats = n3hub(url, "stats")
    assert "total" in stats.stdout and "2" in stats.stdout


def test_ls_filters_by_status_and_limits(url: str) -> None:
    failed = n3hub_json(url, "send", "fail-permanent here")
    for n in range(3):
        n3hub_json(url, "send", f"fine {n}")
    assert n3hub(url, "wait", str(failed["id"])).returncode == 7  # it failed
    assert [m["id"] for m in n3hub_json(url, "ls", "--status", "failed")] == [failed["id"]]
    assert len(n3hub_json(url, "ls", "--limit", "2")) == 2
    retried = n3hub_json(url, "retry", str(failed["id"]))
    assert retried["status"] == "pending"


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["get", "999999999"], 3, "not_found"),
        (["send", ""], 1, "validation_error"),
        (["retry", "999999999"], 3, "not_found"),
        (["get", "0"], 2, "at least 1"),
        (["send", "--file", "/nonexistent/file"], 2, "No such file"),
    ],
)
def test_errors_are_one_line_and_an_exit_code(
    url: str, args: list[str], code: int, words: str
) -> None:
    done = n3hub(url, *args)
    assert done.returncode == code
    assert words in done.stderr
    assert done.stdout == ""
    if code != 2 or "file" in args[-1]:
        assert len(done.stderr.strip().splitlines()) == 1


def test_retry_of_a_completed_message_is_exit_1(url: str) -> None:
    sent = n3hub_json(url, "send", "done soon")
    n3hub_json(url, "wait", str(sent["id"]))
    done = n3hub(url, "retry", str(sent["id"]))
    assert done.returncode == 1
    assert done.stderr.startswith("n3hub: 409 conflict: ")


def test_an_unreachable_server_is_exit_5() -> None:
    done = n3hub(f"http://127.0.0.1:{free_port()}", "stats")
    assert done.returncode == 5
    assert "n3hub: " in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_wait_timeout_is_exit_6(tmp_path: Path, redis_server: RedisServer) -> None:
    """No worker serves this stack, so the message stays pending."""
    with sqlite_web(tmp_path, redis_server.url) as (url, _):
        sent = n3hub_json(url, "send", "never processed")
        done = n3hub(url, "wait", str(sent["id"]), "--timeout", "0.2", "--poll", "0.1")
    assert done.returncode == 6
    assert "still pending" in done.stderr


def test_send_json_lines_from_stdin(url: str) -> None:
    lines = ['{"content": "from an object"}', '"a JSON string"', "", '{"content": "line\\nbreak"}']
    done = n3hub(url, "--json", "send", "--file", "-", "--jsonl", stdin="\n".join(lines) + "\n")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert (summary["stored"], summary["skipped"], summary["lines"]) == (3, 1, 4)
    contents = [m["content"] for m in n3hub_json(url, "ls")]
    assert contents == ["line\nbreak", "a JSON string", "from an object"]


def test_a_bad_json_line_names_its_line(url: str) -> None:
    done = n3hub(url, "send", "--file", "-", "--jsonl", stdin='"ok"\n{not json}\n')
    assert done.returncode == 2
    assert "line 2 is not JSON" in done.stderr


def test_stats_watch_repeats_until_interrupted(url: str) -> None:
    env = {**os.environ, "N3HUB_URL": url}
    argv = [N3HUB, "--json", "stats", "--watch", "--interval", "0.1"]
    with subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True) as watcher:
        assert watcher.stdout is not None
        first, second = watcher.stdout.readline(), watcher.stdout.readline()
        watcher.send_signal(signal.SIGINT)
        assert watcher.wait(timeout=30) == 0
    assert json.loads(first)["total"] == json.loads(second)["total"] == 0


def test_send_of_100000_lines_stores_each_once(tmp_path: Path, redis_server: RedisServer) -> None:
    """A file of 100,000 lines: the progress bar reaches 100 % and every line is stored once."""
    lines = tmp_path / "lines.txt"
    lines.write_text("".join(f"line {n:06d} of the big file\n" for n in range(100_000)))
    with sqlite_web(tmp_path, redis_server.url) as (url, database):
        done = n3hub(url, "send", "--file", str(lines))
    assert done.returncode == 0, done.stderr
    assert "100%" in done.stderr and "100000/100000" in done.stderr
    assert "Stored 100000 messages" in done.stdout
    app = create_app(load_config(stack_environment(database, redis_server.url)))
    assert database_scalar(app, "SELECT count(*) FROM messages") == 100_000
    assert database_scalar(app, "SELECT count(DISTINCT content) FROM messages") == 100_000
