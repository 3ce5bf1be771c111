"""What some tests need from the machine: skip with one line saying how to get it, or fail in CI.

CI sets ``N3HUB_REQUIRE_<THING>=1`` for each thing it provides (``.ci/run`` installs
the tools), so a missing one fails the run there instead of skipping quietly.
"""

from __future__ import annotations

import os
import shutil

import pytest


def require(available: bool, flag: str, missing: str) -> None:
    """Skip the test with ``missing`` unless ``available``; fail instead when ``flag`` is 1."""
    if available:
        return
    if os.environ.get(flag) == "1":
        pytest.fail(f"{flag}=1 but {missing}")
    pytest.skip(missing)


def require_binary(name: str, debian_package: str, flag: str) -> str:
    """The path of the program ``name``; skip (or fail under ``flag``) when it is not on PATH."""
    path = shutil.which(name)
    require(
        path is not None,
        flag,
        f"{name} is not installed: install Debian's {debian_package} package "
        f"(apt-get install {debian_package}) to run this test",
    )
    return path or ""
