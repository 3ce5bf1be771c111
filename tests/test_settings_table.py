"""The one declaration of the settings against the docs that describe them."""

from __future__ import annotations

import re

from n3hub_client.environment import KEY_VARIABLE, URL_VARIABLE

from app.config import PROJECT_ROOT, SETTINGS
from scripts.settings_table import README, render

# Variables of the test suite and CI, not of the service.
TEST_ONLY = re.compile(r"N3HUB_(TEST|REQUIRE)_\w+")
# Variables of the `n3hub` command (client/), not of the service.
CLIENT_ONLY = {URL_VARIABLE, KEY_VARIABLE}
DOCUMENTS = (
    "README.md",
    "DEPLOYMENT.md",
    "docker-compose.yaml",
    "docker-compose.postgres.yaml",
    "docker-compose.mariadb.yaml",
)


def test_readme_table_is_the_generated_one() -> None:
    assert render() in README.read_text(), "run: python -m scripts.settings_table"


def test_every_variable_has_one_row_and_every_key_one_variable() -> None:
    assert len({setting.env for setting in SETTINGS}) == len(SETTINGS)
    assert len({setting.key for setting in SETTINGS}) == len(SETTINGS)


def test_every_n3hub_variable_the_docs_name_is_declared() -> None:
    declared = {setting.env for setting in SETTINGS}
    for name in DOCUMENTS:
        named = set(re.findall(r"N3HUB_[A-Z0-9_]*[A-Z0-9]", (PROJECT_ROOT / name).read_text()))
        unknown = {v for v in named if not TEST_ONLY.fullmatch(v)} - declared - CLIENT_ONLY
        assert not unknown, f"{name} names undeclared settings: {sorted(unknown)}"


def test_deployment_guide_links_to_the_table_instead_of_repeating_it() -> None:
    guide = (PROJECT_ROOT / "DEPLOYMENT.md").read_text()
    assert "(README.md#configuration)" in guide
    rows = [line for line in guide.splitlines() if re.match(r"\| `[A-Z0-9_]+` \|", line)]
    assert not rows, rows
