"""The ``n3hub`` command as a user runs it, against a real stack: Gunicorn, a worker, Redis."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import WebStack, database_scalar, reset_database, web_stack
from tests.support.processes import RedisServer, free_port

N3HUB = str(Path(sys.executable).parent / "n3hub")


class Shell:
    """Runs the ``n3hub`` command as a user would, with ``N3HUB_URL`` and ``N3HUB_API_KEY`` set."""

    def __init__(self, url: str, key: str | None = None) -> None:
        self.env = {name: value for name, value in os.environ.items() if "N3HUB_" not in name}
        self.env.update(N3HUB_URL=url, COLUMNS="200")  # wide enough for a table row on one line
        if key is not None:
            self.env["N3HUB_API_KEY"] = key

    def run(
        self, *args: str, stdin: str | None = None, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        """The command's exit code and output."""
        return subprocess.run(
            [N3HUB, *args],
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=600,
            cwd=cwd,
        )

    def json(self, *args: str) -> Any:
        """The command's ``--json`` output, parsed; it must succeed."""
        done = self.run("--json", *args)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)


@pytest.fixture
def sh(e2e_stack: WebStack) -> Shell:
    reset_database(e2e_stack.app)
    return Shell(e2e_stack.url, e2e_stack.key)


def test_send_get_wait_and_ls(sh: Shell) -> None:
    sent = sh.json("send", "hello from the shell")
    assert sent["status"] == "pending"
    done = sh.json("wait", str(sent["id"]), "--timeout", "30")
    assert done["status"] == "completed"
    assert sh.json("get", str(sent["id"])) == done
    listed = sh.json("ls", "--limit", "5")
    assert [message["id"] for message in listed] == [sent["id"]]
    assert sh.json("stats")["completed"] == 1


def test_human_output_is_tables(sh: Shell) -> None:
    for text in ("first [bold]markup[/bold] stays text", "second"):
        assert sh.run("send", text).returncode == 0
    listing = sh.run("ls", "--limit", "1")
    assert listing.returncode == 0
    assert "second" in listing.stdout and "first" not in listing.stdout
    assert "first [bold]markup[/bold] stays text" in sh.run("ls").stdout
    stats = sh.run("stats")
    assert "total" in stats.stdout and "2" in stats.stdout


def test_ls_filters_by_status_and_limits(sh: Shell) -> None:
    failed = sh.json("send", "fail-permanent here")
    for n in range(3):
        sh.json("send", f"fine {n}")
    assert sh.run("wait", str(failed["id"])).returncode == 7  # it failed
    assert [m["id"] for m in sh.json("ls", "--status", "failed")] == [failed["id"]]
    assert len(sh.json("ls", "--limit", "2")) == 2
    retried = sh.json("retry", str(failed["id"]))
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
    sh: Shell, args: list[str], code: int, words: str
) -> None:
    done = sh.run(*args)
    assert done.returncode == code
    assert words in done.stderr
    assert done.stdout == ""
    if code != 2 or "file" in args[-1]:
        assert len(done.stderr.strip().splitlines()) == 1


def test_retry_of_a_completed_message_is_exit_1(sh: Shell) -> None:
    sent = sh.json("send", "done soon")
    sh.json("wait", str(sent["id"]))
    done = sh.run("retry", str(sent["id"]))
    assert done.returncode == 1
    assert done.stderr.startswith("n3hub: 409 conflict: ")


def test_an_unreachable_server_is_exit_5() -> None:
    done = Shell(f"http://127.0.0.1:{free_port()}").run("stats")
    assert done.returncode == 5
    assert "n3hub: " in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_wait_timeout_is_exit_6(tmp_path: Path, redis_server: RedisServer) -> None:
    """No worker serves this stack, so the message stays pending."""
    with web_stack(tmp_path, redis_server.url) as stack:
        sh = Shell(stack.url, stack.key)
        sent = sh.json("send", "never processed")
        done = sh.run("wait", str(sent["id"]), "--timeout", "0.2", "--poll", "0.1")
    assert done.returncode == 6
    assert "still pending" in done.stderr


def test_send_json_lines_from_stdin(sh: Shell) -> None:
    lines = ['{"content": "from an object"}', '"a JSON string"', "", '{"content": "line\\nbreak"}']
    done = sh.run("--json", "send", "--file", "-", "--jsonl", stdin="\n".join(lines) + "\n")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert (summary["stored"], summary["skipped"], summary["lines"]) == (3, 1, 4)
    contents = [m["content"] for m in sh.json("ls")]
    assert contents == ["line\nbreak", "a JSON string", "from an object"]


def test_a_bad_json_line_names_its_line(sh: Shell) -> None:
    done = sh.run("send", "--file", "-", "--jsonl", stdin='"ok"\n{not json}\n')
    assert done.returncode == 2
    assert "line 2 is not JSON" in done.stderr


def test_stats_watch_repeats_until_interrupted(sh: Shell) -> None:
    argv = [N3HUB, "--json", "stats", "--watch", "--interval", "0.1"]
    with subprocess.Popen(argv, env=sh.env, stdout=subprocess.PIPE, text=True) as watcher:
        assert watcher.stdout is not None
        first, second = watcher.stdout.readline(), watcher.stdout.readline()
        watcher.send_signal(signal.SIGINT)
        assert watcher.wait(timeout=30) == 0
    assert json.loads(first)["total"] == json.loads(second)["total"] == 0


@pytest.mark.slow
def test_send_of_100000_lines_stores_each_once(tmp_path: Path, redis_server: RedisServer) -> None:
    """A file of 100,000 lines: the progress bar reaches 100 % and every line is stored once."""
    lines = tmp_path / "lines.txt"
    lines.write_text("".join(f"line {n:06d} of the big file\n" for n in range(100_000)))
    with web_stack(tmp_path, redis_server.url) as stack:
        done = Shell(stack.url, stack.key).run("send", "--file", str(lines))
        assert done.returncode == 0, done.stderr
        assert "100%" in done.stderr and "100000/100000" in done.stderr
        assert "Stored 100000 messages" in done.stdout
        assert database_scalar(stack.app, "SELECT count(*) FROM messages") == 100_000
        distinct = "SELECT count(DISTINCT content) FROM messages"
        assert database_scalar(stack.app, distinct) == 100_000


def test_the_key_comes_from_the_checkout_when_none_is_set(
    e2e_stack: WebStack, tmp_path: Path
) -> None:
    """Run inside a checkout, the command finds instance/dev-api-key (as `make run` writes it)."""
    reset_database(e2e_stack.app)
    keyless = Shell(e2e_stack.url)
    assert keyless.run("stats", cwd=tmp_path).returncode == 4  # 401: no key anywhere
    (tmp_path / "instance").mkdir()
    (tmp_path / "instance" / "dev-api-key").write_text(f"{e2e_stack.key}\n")
    (tmp_path / "app").mkdir()
    done = keyless.run("--json", "stats", cwd=tmp_path / "app")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["total"] == 0


def test_a_refused_key_is_exit_4(e2e_stack: WebStack) -> None:
    done = Shell(e2e_stack.url, "not-a-key").run("ls")
    assert done.returncode == 4
    assert done.stderr.startswith("n3hub: 401 unauthorized: ")
