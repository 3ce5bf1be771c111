"""The README's configuration table, generated from the settings declared in app/config.py.

``python -m scripts.settings_table`` rewrites the table in README.md;
``tests/test_settings_table.py`` fails while the README's copy differs.
"""

from __future__ import annotations

import sys

from app.config import PROJECT_ROOT, SETTINGS, Setting

README = PROJECT_ROOT / "README.md"
BEGIN = (
    "<!-- settings table: generated from app/config.py by `python -m scripts.settings_table` -->"
)
END = "<!-- end of settings table -->"


def _row(setting: Setting) -> str:
    cells = (f"`{setting.env}`", setting.default_text(), setting.allowed(), setting.meaning)
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def render() -> str:
    """The table, one row per setting, between its markers."""
    rows = [BEGIN, "| variable | default | allowed | meaning |", "|---|---|---|---|"]
    rows += [_row(setting) for setting in SETTINGS]
    return "\n".join([*rows, END])


def replace_table(text: str) -> str:
    """``text`` (the README) with its table replaced by the generated one."""
    start, end = text.index(BEGIN), text.index(END) + len(END)
    return text[:start] + render() + text[end:]


def main() -> int:
    """Rewrite the README's table."""
    README.write_text(replace_table(README.read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
