"""``make clean`` keeps the local database and backups; ``make clean-data`` removes them."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from app.config import PROJECT_ROOT

KEPT = ["instance/messages.db", "var/backups/messages-2026-11-30.db"]
REMOVED = [".venv/bin/python", "var/prometheus/counter_1.db", "var/redis/dump.rdb", ".ruff_cache/x"]


def make(target: str, directory: Path) -> None:
    """Run the repository's Makefile target with ``directory`` as the checkout."""
    make_binary = shutil.which("make")
    if make_binary is None:
        pytest.fail("make is not installed")
    command = [make_binary, "-f", str(PROJECT_ROOT / "Makefile"), "-C", str(directory), target]
    subprocess.run(command, check=True, capture_output=True, timeout=60)


def test_clean_keeps_the_database_and_clean_data_removes_it(tmp_path: Path) -> None:
    for name in KEPT + REMOVED:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    make("clean", tmp_path)
    assert [name for name in KEPT if (tmp_path / name).exists()] == KEPT
    assert [name for name in REMOVED if (tmp_path / name).exists()] == []
    make("clean-data", tmp_path)
    assert not (tmp_path / "instance").exists() and not (tmp_path / "var").exists()
