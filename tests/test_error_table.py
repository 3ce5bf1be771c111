"""The README's error table against the error codes the code can answer."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator

from app.api.errors import FALLBACK_HTTP_ERROR_CODE, HTTP_ERROR_CODES
from app.config import PROJECT_ROOT

TABLE_ROW = re.compile(r"^\| (\d{3}|other) \| `([a-z_]+)` \|", re.MULTILINE)


def _literal_codes(tree: ast.AST) -> Iterator[str]:
    """``APIError(<status>, "<code>", ...)`` calls and ``{"code": "<code>"}`` literals."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "APIError":
            code = node.args[1] if len(node.args) > 1 else None
            if isinstance(code, ast.Constant) and isinstance(code.value, str):
                yield code.value
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if (
                    isinstance(key, ast.Constant)
                    and key.value == "code"
                    and isinstance(value, ast.Constant)
                ):
                    yield value.value


def codes_in_code() -> set[str]:
    """Every error code a response of the app can carry."""
    codes = {*HTTP_ERROR_CODES.values(), FALLBACK_HTTP_ERROR_CODE}
    for path in (PROJECT_ROOT / "app").rglob("*.py"):
        codes |= set(_literal_codes(ast.parse(path.read_text())))
    return codes


def test_every_error_code_is_in_the_readme_table_and_nothing_else() -> None:
    table = {code for _, code in TABLE_ROW.findall((PROJECT_ROOT / "README.md").read_text())}
    used = codes_in_code()
    assert {"validation_error", "database_unavailable", "dependency_unavailable"} <= used
    assert used == table, {"missing": sorted(used - table), "stale": sorted(table - used)}
