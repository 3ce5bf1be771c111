"""BENCHMARKS.md stays a short reference, and every pointer into it names one of its headings.

A pointer is written ``BENCHMARKS.md, "Heading"`` (a line break may fall inside it).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from app.config import PROJECT_ROOT

BENCHMARKS = PROJECT_ROOT / "BENCHMARKS.md"
MAX_LINES = 250
POINTER = re.compile(r'BENCHMARKS\.md(?:,\s*"(?P<heading>[^"]+)")?')


def headings() -> list[str]:
    """The text of every heading of BENCHMARKS.md, outside code blocks."""
    found, in_code = [], False
    for line in BENCHMARKS.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and line.startswith("#"):
            found.append(line.lstrip("#").strip())
    return found


def pointers() -> list[tuple[str, str | None]]:
    """(file, heading named or None) for every mention of BENCHMARKS.md in the other files."""
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    found = []
    for name in tracked:
        path = PROJECT_ROOT / name
        if path in {BENCHMARKS, Path(__file__)} or path.suffix == ".json" or not path.is_file():
            continue
        text = path.read_text(errors="replace")
        # Comments wrap: join the lines (and drop their comment markers) before matching.
        joined = re.sub(r"\s*\n\s*(?:#\s*)?", " ", text)
        found += [(name, match["heading"]) for match in POINTER.finditer(joined)]
    return found


def test_benchmarks_is_a_short_reference_with_its_sections() -> None:
    assert len(BENCHMARKS.read_text().splitlines()) <= MAX_LINES
    assert {
        "Running make bench",
        "Current results",
        "What limits each figure",
        "Processor figures",
        "Decision records",
    } <= set(headings())


def test_headings_are_unique() -> None:
    names = headings()
    assert sorted({name for name in names if names.count(name) > 1}) == []


def test_every_pointer_into_benchmarks_names_a_heading_that_exists() -> None:
    found = pointers()
    assert found, "no pointer found: the pattern no longer matches the files"
    names = set(headings())
    wrong = [(name, heading) for name, heading in found if heading not in names]
    assert wrong == []
