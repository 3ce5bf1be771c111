"""A bad setting stops every entry point at start with one line, and no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from app.config import PROJECT_ROOT
from tests.conftest import stack_environment
from tests.support.processes import free_port

VENV_BIN = Path(sys.executable).parent
# A broker nobody answers at: every entry point must stop before it would connect.
UNREACHABLE_REDIS = "redis://127.0.0.1:9"


def entry_points() -> dict[str, list[str]]:
    """The commands the README and the Procfile start the service with."""
    return {
        "flask": [str(VENV_BIN / "flask"), "--app", "app", "db", "upgrade"],
        "run.py": [sys.executable, "run.py"],
        "web.py": [sys.executable, "web.py", "--bind", f"127.0.0.1:{free_port()}"],
        "gunicorn": [
            str(VENV_BIN / "gunicorn"), "-c", "gunicorn.conf.py",
            "--bind", f"127.0.0.1:{free_port()}",
        ],
        "celery": [
            str(VENV_BIN / "celery"), "-A", "app.celery_worker.celery", "worker",
            "--loglevel=info", "--concurrency=1",
        ],
    }  # fmt: skip


BAD_VALUES = [
    ("N3HUB_SQLITE_SYNCHRONOUS", "FULLL", "use one of OFF, NORMAL, FULL, EXTRA"),
    ("LOG_LEVEL", "LOUD", "use one of DEBUG, INFO, WARNING, ERROR, CRITICAL"),
    ("WEB_CONCURRENCY", "many", "use an integer of at least 1"),
    ("N3HUB_PROCESSOR", "nonexistent:fn", "cannot be imported (ModuleNotFoundError"),
    ("N3HUB_PROCESSOR", "app.config:PROJECT_ROOT", "is not callable"),
    ("DATABASE_URL", "oracle://scott@127.0.0.1/orcl", "'oracle', which N3Hub does not"),
]


def start_with(command: list[str], tmp_path: Path, name: str, value: str) -> tuple[int, str]:
    """Run ``command`` with one bad setting; its exit status and its whole output."""
    env = stack_environment(f"sqlite:///{tmp_path / 'messages.db'}", UNREACHABLE_REDIS)
    env[name] = value
    done = subprocess.run(
        command,
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
    )
    return done.returncode, done.stdout


# Gunicorn reads WEB_CONCURRENCY itself when it is imported, before any config file: a bad
# one fails there, in Gunicorn's code, under a bare `gunicorn`. Procfile and the image
# start `python web.py`, which checks the settings first.
CASES = [
    (entry_point, *bad)
    for entry_point in ("flask", "run.py", "web.py", "gunicorn", "celery")
    for bad in BAD_VALUES
    if (entry_point, bad[0]) != ("gunicorn", "WEB_CONCURRENCY")
]


@pytest.mark.parametrize(("entry_point", "name", "value", "allowed"), CASES)
def test_a_bad_setting_stops_the_process_with_one_line(
    tmp_path: Path, entry_point: str, name: str, value: str, allowed: str
) -> None:
    status, output = start_with(entry_points()[entry_point], tmp_path, name, value)
    assert status != 0, output
    assert "Traceback" not in output, output
    [line] = [line for line in output.splitlines() if name in line]
    assert line.startswith(f"{name}={value!r} "), output
    assert allowed in line, output
    assert "Booting worker" not in output, output
