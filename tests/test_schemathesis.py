"""Schemathesis against the running stack (Gunicorn, a worker, Redis): every operation, with links.

All of Schemathesis's checks run (no server errors, responses that match the
schema, only documented status codes and headers...), in every phase: the
documented examples, boundary coverage, fuzzing, and stateful sequences that
follow the document's links (create -> get -> retry). ``tests/schemathesis.toml``
bounds the examples so the run stays short.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from app.config import PROJECT_ROOT
from tests.conftest import WebStack, reset_database

SCHEMATHESIS = str(Path(sys.executable).parent / "schemathesis")
CONFIG = PROJECT_ROOT / "tests" / "schemathesis.toml"


@pytest.mark.slow
def test_schemathesis_finds_nothing(e2e_stack: WebStack, tmp_path: Path) -> None:
    reset_database(e2e_stack.app)
    argv = [
        SCHEMATHESIS, "--config-file", str(CONFIG),
        "run", f"{e2e_stack.url}/openapi.json",
        "--header", f"Authorization: Bearer {e2e_stack.key}",
        "--checks", "all",
        "--phases", "examples,coverage,fuzzing,stateful",
        "--workers", "1",
    ]  # fmt: skip
    done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    report = done.stdout + done.stderr
    assert done.returncode == 0, report[-20000:]
    selected = re.search(r"Selected: (\d+)/(\d+)", report)
    assert selected is not None and selected[1] == selected[2], report[-5000:]
    assert f"Tested: {selected[1]}" in report, report[-5000:]
