"""The suite gives the same result whatever service settings the caller's shell exports."""

from __future__ import annotations

import os
import subprocess
import sys

from app.config import PROJECT_ROOT, SETTINGS, Kind

# Reachable by nobody: a leaked URL fails the tests that would use it.
NOWHERE = "redis://127.0.0.1:9/15"
# A part of the suite that builds apps in-process and starts workers and a broker.
SAMPLE = ["tests/test_wakeups.py", "tests/test_config.py"]


def hostile_environment() -> dict[str, str]:
    """The caller's environment with every setting exported, each one wrong for the tests."""
    env = dict(os.environ)
    for setting in SETTINGS:
        env[setting.env] = NOWHERE if setting.kind is Kind.URL else "hostile"
    env["REDIS_URL"] = NOWHERE
    return env


def test_exported_settings_do_not_reach_the_tests() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *SAMPLE],
        cwd=PROJECT_ROOT,
        env=hostile_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-5000:]
    assert " passed" in done.stdout and " failed" not in done.stdout, done.stdout[-2000:]
