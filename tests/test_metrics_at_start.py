"""Every metric family the README lists is in the first scrape of a freshly started process."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from app.config import PROJECT_ROOT
from tests.conftest import stack_environment
from tests.support.processes import RedisServer

FIRST_SCRAPE = """
from app import create_app
print(create_app().test_client().get("/metrics").get_data(as_text=True))
"""


def readme_metric_families() -> set[str]:
    """The metric names the README's Observability section lists."""
    readme = (PROJECT_ROOT / "README.md").read_text()
    section = readme[readme.index("## Observability") :]
    listing = section[section.index("exposes") : section.index("The `endpoint` label")]
    names = re.findall(r"`([a-z][a-z0-9_]+)(?:\{[a-z_,]+\})?`", listing)
    return {name.removesuffix("_total") for name in names}


def test_the_first_scrape_shows_every_family_the_readme_lists(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    env = stack_environment(
        f"sqlite:///{tmp_path / 'messages.db'}",
        redis_server.url,
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
    )
    done = subprocess.run(
        [sys.executable, "-c", FIRST_SCRAPE],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    families = {
        family.name: family.samples for family in text_string_to_metric_families(done.stdout)
    }
    listed = readme_metric_families()
    assert len(listed) >= 15
    assert {name for name in listed if families.get(name)} == listed
    for name in listed:
        for sample in families[name]:
            if not sample.name.endswith("_bucket") and "timestamp" not in name:
                assert sample.value >= 0, sample
    errors = families["api_errors"]
    assert [sample.value for sample in errors if sample.name == "api_errors_total"] == [0.0]
