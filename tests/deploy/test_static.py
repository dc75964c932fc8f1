"""Everything about the Dockerfile, docker-compose.yml and the Prometheus files that can be
checked without a Docker engine: against the real settings, flags and metrics ports."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from minitemporal.config import WILDCARD_HOSTS, Settings
from tests.deploy.compose import (
    COMPOSE_FILE,
    DOCKERFILE,
    HEALTHCHECK_SCRIPT,
    PROMETHEUS_DIR,
    ROOT,
    SYSTEMD_UNIT,
    Service,
    compose,
    dockerfile,
    exec_form,
    final_stage,
    is_setting,
    minitemporal_services,
    parse_run_flags,
    with_role,
)

SECRET_NAME = re.compile(r"SECRET|PASSWORD|PASSWD|TOKEN|API_?KEY|PRIVATE", re.IGNORECASE)
ENV_NAME = re.compile(r"\bMINITEMPORAL_[A-Z0-9_]+\b")
# Report flush after a worker's drain (worker.py: _flush_reports(timeout=10.0)).
REPORT_FLUSH_SECONDS = 10.0


def services() -> dict[str, dict[str, object]]:
    return dict(compose()["services"])


def seconds(duration: str) -> float:
    """A compose duration (`1m30s`, `45s`, `500ms`) in seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", str(duration))
    assert parts and "".join(n + u for n, u in parts) == str(duration), duration
    return sum(float(n) * units[u] for n, u in parts)


# --- compose: structure -------------------------------------------------------------------


def test_compose_has_one_service_per_role_and_two_schedulers() -> None:
    assert {"postgres", "redis", "api", "worker", "prometheus"} <= set(services())
    assert {s.name for s in with_role("scheduler")} == {"scheduler-1", "scheduler-2"}
    for s in minitemporal_services():
        assert len(s.roles) == 1, f"{s.name}: one role per container ({sorted(s.roles)})"
    assert [s.name for s in with_role("api")] == ["api"]
    assert [s.name for s in with_role("worker")] == ["worker"]


def test_images_are_pinned_by_tag() -> None:
    for name, spec in services().items():
        image = str(spec.get("image", ""))
        if "build" in spec:
            continue
        repository, _, tag = image.rpartition(":")
        assert repository and "/" not in tag, f"{name}: {image!r} has no tag"
        assert tag != "latest" and re.search(r"\d+\.\d+", tag), f"{name}: pin a version: {image}"


@pytest.mark.parametrize("service", minitemporal_services(), ids=lambda s: s.name)
def test_every_command_is_a_valid_minitemporal_run(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    parse_run_flags(service.command)  # click raises on an unknown flag or a stray argument
    for name in list(os.environ):
        if name.startswith("MINITEMPORAL_"):
            monkeypatch.delenv(name)
    for name, value in service.settings_env().items():
        monkeypatch.setenv(name, value)
    settings = Settings()  # validates every value the container would get
    assert settings.role_set == service.roles


def deploying_section() -> str:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("\n## Deploying\n")
    return readme[start : readme.index("\n## ", start + 1)]


def test_every_minitemporal_variable_is_a_real_setting() -> None:
    """Names in every deployment file and in README's "Deploying", comments included."""
    texts = {p.name: p.read_text() for p in (COMPOSE_FILE, DOCKERFILE, HEALTHCHECK_SCRIPT)}
    texts[SYSTEMD_UNIT.name] = SYSTEMD_UNIT.read_text()
    texts["README.md (Deploying)"] = deploying_section()
    for name, text in texts.items():
        unknown = {n for n in ENV_NAME.findall(text) if not is_setting(n)}
        assert not unknown, f"{name} names variables minitemporal does not read: {unknown}"


def test_each_role_gets_only_the_settings_it_needs() -> None:
    """Workers run user commands: they get no database credentials, the api neither."""
    for s in minitemporal_services():
        env = s.settings_env()
        assert env.get("MINITEMPORAL_GRPC_SECRET"), f"{s.name}: every role needs the secret"
        has_db = "MINITEMPORAL_DATABASE_URL" in env
        assert has_db == ("scheduler" in s.roles), f"{s.name}: database URL"
        has_redis = "MINITEMPORAL_REDIS_URL" in env
        assert has_redis == bool(s.roles & {"scheduler", "worker"}), f"{s.name}: Redis URL"


def test_the_grpc_secret_is_shared_and_overridable() -> None:
    raw = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    values = {
        s.name: str(raw[s.name]["environment"]["MINITEMPORAL_GRPC_SECRET"])
        for s in minitemporal_services()
    }
    assert len(set(values.values())) == 1, values
    assert re.fullmatch(r"\$\{MINITEMPORAL_GRPC_SECRET:-[^}]+\}", next(iter(values.values())))


# --- compose: network ---------------------------------------------------------------------


def test_servers_listen_on_all_interfaces_inside_their_container() -> None:
    for s in minitemporal_services():
        http_host = "api_host" if "api" in s.roles else "metrics_host"
        assert s.setting(http_host) in WILDCARD_HOSTS, f"{s.name}: {http_host}"
        if "scheduler" in s.roles:
            assert s.setting("grpc_host") in WILDCARD_HOSTS, f"{s.name}: grpc_host"


def test_api_and_workers_reach_every_scheduler_by_a_shared_name() -> None:
    schedulers = with_role("scheduler")
    shared = set.intersection(*(s.aliases for s in schedulers))
    ports = {s.setting("grpc_port") for s in schedulers}
    assert len(ports) == 1, f"schedulers must share one gRPC port: {ports}"
    for s in with_role("api") + with_role("worker"):
        host, _, port = s.setting("scheduler_address").rpartition(":")
        assert host in shared, f"{s.name}: {host!r} is not a name of every scheduler ({shared})"
        assert {port} == ports, f"{s.name}: port {port}, schedulers listen on {ports}"


def test_published_ports_are_the_api_and_prometheus_on_loopback() -> None:
    api = with_role("api")[0]
    published = {name: [str(p) for p in spec.get("ports", [])] for name, spec in services().items()}
    assert published["api"] == [f"127.0.0.1:{api.http_port}:{api.http_port}"]
    worker = with_role("worker")[0]
    assert not published["worker"], "a scaled service cannot publish a fixed host port"
    assert "container_name" not in services()["worker"], "--scale needs generated names"
    assert worker.replicas >= 2
    for ports in published.values():
        assert all(p.startswith("127.0.0.1:") for p in ports), ports


def scrape_targets() -> dict[str, str | None]:
    """Every target of prometheus.yml (`host:port`; DNS names with their port) -> its role."""
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    targets: dict[str, str | None] = {}
    for job in config["scrape_configs"]:
        relabelled = {
            r["target_label"]: r["replacement"]
            for r in job.get("relabel_configs", [])
            if "source_labels" not in r
        }
        for sc in job.get("static_configs", []):
            role = sc.get("labels", {}).get("role", relabelled.get("role"))
            targets |= dict.fromkeys(sc["targets"], role)
        for dc in job.get("dns_sd_configs", []):
            targets |= {f"{name}:{dc['port']}": relabelled.get("role") for name in dc["names"]}
    return targets


def test_prometheus_scrapes_every_role_where_it_serves_metrics() -> None:
    """Scaled services are found by DNS (every replica), the others by name."""
    expected = {
        f"{s.name}:{s.http_port}": ",".join(sorted(s.roles)) for s in minitemporal_services()
    }
    targets = scrape_targets()
    targets.pop("127.0.0.1:9090")  # Prometheus itself
    assert targets == expected
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    by_dns = {
        name
        for job in config["scrape_configs"]
        for dc in job.get("dns_sd_configs", [])
        for name in dc["names"]
    }
    assert by_dns == {s.name for s in minitemporal_services() if s.replicas > 1}


def test_alert_rules_select_roles_that_are_scraped() -> None:
    text = (PROMETHEUS_DIR / "rules.yml").read_text()
    selected = set(re.findall(r'role\s*=~?\s*"([^"]+)"', text))
    assert selected, "rules.yml selects no role"
    assert selected <= set(scrape_targets().values()), selected


def test_promtool_accepts_the_prometheus_files() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian: the prometheus package ships it)")
    result = subprocess.run(
        [promtool, "check", "config", str(PROMETHEUS_DIR / "prometheus.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- compose: lifecycle -------------------------------------------------------------------


def test_every_long_running_service_has_a_healthcheck() -> None:
    for name, spec in services().items():
        test = (spec.get("healthcheck") or {}).get("test")
        assert test and test != ["NONE"], f"{name}: no healthcheck"
    for s in minitemporal_services():
        assert s.spec["healthcheck"]["test"] == ["CMD", "minitemporal-healthcheck"], s.name
    assert "pg_isready" in " ".join(services()["postgres"]["healthcheck"]["test"])


def test_dependencies_wait_for_health() -> None:
    for name, spec in services().items():
        depends = spec.get("depends_on") or {}
        assert isinstance(depends, dict), f"{name}: depends_on needs conditions"
        for dep, cond in depends.items():
            assert cond["condition"] == "service_healthy", f"{name} -> {dep}"
    assert set(services()["scheduler-1"]["depends_on"]) == {"postgres", "redis"}
    assert {"scheduler-1", "scheduler-2"} <= set(services()["api"]["depends_on"])
    assert {"scheduler-1", "scheduler-2", "redis"} <= set(services()["worker"]["depends_on"])


def test_minitemporal_containers_have_an_init_and_time_to_drain() -> None:
    for s in minitemporal_services():
        assert s.spec.get("init") is True, f"{s.name}: init: true reaps orphaned commands"
        grace = seconds(s.spec.get("stop_grace_period", "10s"))
        assert grace >= 20, f"{s.name}: stop_grace_period {grace}s"
        if "worker" in s.roles:
            drain = float(s.setting("drain_seconds")) + float(s.setting("kill_grace_seconds"))
            assert grace > drain + REPORT_FLUSH_SECONDS, f"{s.name}: {grace}s < drain {drain}s"


def test_postgres_and_redis_persist_and_redis_never_evicts() -> None:
    pg, redis = services()["postgres"], services()["redis"]
    assert any(str(v).endswith(":/var/lib/postgresql/data") for v in pg["volumes"])
    assert any(str(v).endswith(":/data") for v in redis["volumes"])
    command = [str(c) for c in redis["command"]]
    pairs = dict(zip(command[1::2], command[2::2], strict=False))
    assert pairs.get("--appendonly") == "yes"
    assert pairs.get("--maxmemory-policy") == "noeviction"
    assert set(compose()["volumes"]) >= {"postgres-data", "redis-data"}


def compose_cli() -> list[str] | None:
    """`docker compose` (v2 plugin) or `docker-compose`; both parse a file with no daemon."""
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, text=True, check=False
        )
        if probe.returncode == 0:
            return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_docker_compose_accepts_the_file() -> None:
    cli = compose_cli()
    if cli is None:
        pytest.skip(
            "no compose CLI: the docker client has no `compose` plugin and `docker-compose` "
            "is not installed (either one parses the file without a Docker engine)"
        )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MINITEMPORAL_", "POSTGRES"))}
    result = subprocess.run(
        [*cli, "-f", str(COMPOSE_FILE), "config", "-q"],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- systemd -----------------------------------------------------------------------------


def unit_settings() -> dict[str, str]:
    settings = {}
    for line in SYSTEMD_UNIT.read_text().splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings[key] = value
    return settings


@pytest.mark.parametrize("role", ["api", "scheduler", "worker"])
def test_systemd_unit_runs_each_role_and_lets_workers_drain(role: str) -> None:
    unit = unit_settings()
    _, *args = unit["ExecStart"].replace("%i", role).split()
    assert parse_run_flags(args) == {"roles": role}
    assert unit["KillMode"] == "mixed", "SIGTERM to minitemporal only: commands may finish"
    defaults = Settings.model_fields
    drain = float(defaults["drain_seconds"].default) + float(defaults["kill_grace_seconds"].default)
    assert float(unit["TimeoutStopSec"]) > drain + REPORT_FLUSH_SECONDS
    assert unit["User"] != "root"


def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    unit = tmp_path / "minitemporal@worker.service"
    shutil.copy(SYSTEMD_UNIT, unit)
    result = subprocess.run(
        [analyze, "verify", "--man=no", str(unit)], capture_output=True, text=True, check=False
    )
    problems = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if line.strip() and "is not executable" not in line  # not installed on this machine
    ]
    assert not problems, problems


# --- Dockerfile ---------------------------------------------------------------------------


def test_dockerfile_builds_in_two_stages_from_pinned_images() -> None:
    froms = [i.arguments.split()[0] for i in dockerfile() if i.keyword == "FROM"]
    assert len(froms) >= 2, "a builder stage and a runtime stage"
    for image in froms:
        if image == "builder":
            continue
        _, _, tag = image.partition(":")
        assert tag and tag != "latest", f"pin {image} by tag"
        assert re.fullmatch(r"3\.11\.\d+-slim-bookworm", tag), f"{image}: a slim patch tag"


def test_runtime_stage_installs_wheels_and_runs_as_non_root() -> None:
    final = final_stage()
    runs = " ".join(i.arguments for i in final if i.keyword == "RUN")
    assert "--no-index" in runs and "/wheels" in runs, "install the builder's wheels only"
    assert not re.search(r"apt-get install|gcc|build-essential", runs)
    users = [i.arguments for i in final if i.keyword == "USER"]
    assert users, "the final stage must set USER"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}, f"USER {users[-1]}"


def test_entrypoint_is_minitemporal_and_cmd_chooses_roles() -> None:
    final = final_stage()
    entrypoint = [exec_form(i.arguments) for i in final if i.keyword == "ENTRYPOINT"]
    cmd = [exec_form(i.arguments) for i in final if i.keyword == "CMD"]
    assert entrypoint[-1] == ["minitemporal"]
    assert parse_run_flags(cmd[-1]) == {"roles": "all"}


def test_healthcheck_runs_the_installed_script() -> None:
    final = final_stage()
    checks = [i.arguments for i in final if i.keyword == "HEALTHCHECK"]
    assert checks, "the final stage must have a HEALTHCHECK"
    _, _, command = checks[-1].partition(" CMD ")
    assert exec_form(command) == ["minitemporal-healthcheck"]
    copies = [i.arguments.split() for i in final if i.keyword == "COPY"]
    installed = ["deploy/healthcheck.py", "/usr/local/bin/minitemporal-healthcheck"]
    assert any(args[-2:] == installed for args in copies), "COPY the script onto the PATH"


def test_nothing_secret_and_no_listen_address_is_baked_in() -> None:
    for i in dockerfile():
        if i.keyword not in {"ENV", "ARG", "LABEL"}:
            continue
        for name in re.findall(r"([A-Za-z_][A-Za-z0-9_.]*)=", i.arguments):
            assert not SECRET_NAME.search(name), f"{i.keyword} {name}: pass it at run time"
            assert not name.startswith("MINITEMPORAL_"), f"{name}: set it in compose, not here"


def test_build_context_holds_what_the_dockerfile_copies() -> None:
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    included = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert "*" in ignore, ".dockerignore starts by excluding everything"
    for i in dockerfile():
        if i.keyword != "COPY" or "--from" in i.arguments:
            continue
        sources = [a for a in i.arguments.split()[:-1] if not a.startswith("--")]
        for source in sources:
            assert (ROOT / source).exists(), source
            assert source in included, f".dockerignore must let {source} through"


def test_the_builder_stage_makes_a_complete_wheel(tmp_path: Path) -> None:
    """Build, as the builder stage does, from exactly the files it copies (the package's
    schema.sql is a symlink into the top level: without its target the wheel lacks it)."""
    src = tmp_path / "src"
    src.mkdir()
    builder = [i for i in dockerfile() if i.stage == 0]
    for i in builder:
        if i.keyword == "COPY":
            *sources, _ = i.arguments.split()
            for source in sources:
                path = ROOT / source
                if path.is_dir():
                    shutil.copytree(
                        path,
                        src / source,
                        symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__"),
                    )
                else:
                    shutil.copy2(path, src / source)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--wheel-dir",
            str(tmp_path / "wheels"),
            str(src),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = (tmp_path / "wheels").glob("minitemporal-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for data in ("store/postgres/schema.sql", "store/postgres/queries.sql", "py.typed"):
        assert f"minitemporal/{data}" in names, f"the wheel lacks {data}"
    assert any(n.endswith("entry_points.txt") for n in names)


def test_deploy_scripts_pass_ruff() -> None:
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    for args in (["check"], ["format", "--check"]):
        result = subprocess.run(
            [ruff, *args, "deploy", "tests/deploy"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
