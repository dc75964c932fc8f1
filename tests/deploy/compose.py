"""docker-compose.yml and the Dockerfile as data, for the deployment tests (no Docker needed).

The compose file is read with PyYAML (anchors and merge keys included) and its `${VAR:-default}`
references are resolved to their defaults, as `docker compose` does with an empty environment.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import click
import yaml

from minitemporal.cli import main
from minitemporal.config import Settings, parse_roles

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
HEALTHCHECK_SCRIPT = ROOT / "deploy" / "healthcheck.py"
SYSTEMD_UNIT = ROOT / "deploy" / "systemd" / "minitemporal@.service"
ENV_PREFIX = "MINITEMPORAL_"
# Settings that the security work is adding: the api's tokens (`api_tokens`, maybe with
# variants such as `api_tokens_file`) and the explicit opt-out. The deployment files use them
# already; while Settings has no such field, they are the only unknown names allowed.
PENDING_SETTINGS = ("insecure_no_auth", "api_tokens*")
_VARIABLE = re.compile(r"\$\$|\$\{(\w+)(?::?-([^}]*))?\}|\$(\w+)")


def interpolate(value: str) -> str:
    """Compose's variable substitution with no variable set: `${VAR:-default}` is the default,
    `${VAR}` and `$VAR` are empty, `$$` is `$`."""

    def one(m: re.Match[str]) -> str:
        return "$" if m.group(0) == "$$" else m.group(2) or ""

    return _VARIABLE.sub(one, value)


def _interpolated(node: Any) -> Any:
    if isinstance(node, str):
        return interpolate(node)
    if isinstance(node, list):
        return [_interpolated(v) for v in node]
    if isinstance(node, dict):
        return {k: _interpolated(v) for k, v in node.items()}
    return node


@cache
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict), "docker-compose.yml is not a mapping"
    return dict(_interpolated(data))


def settings_env_name(field: str) -> str:
    return ENV_PREFIX + field.upper()


def is_setting(env_name: str) -> bool:
    """Whether minitemporal reads this MINITEMPORAL_* variable (or will, once the pending
    settings land: a pending pattern counts only while no field matches it)."""
    field = env_name.removeprefix(ENV_PREFIX).lower()
    if field in Settings.model_fields:
        return True
    for pattern in PENDING_SETTINGS:
        stem = pattern.rstrip("*")
        matches = field.startswith(stem) if pattern.endswith("*") else field == stem
        if matches and not any(f.startswith(stem) for f in Settings.model_fields):
            return True
    return False


@dataclass(frozen=True)
class Service:
    """One compose service that runs minitemporal."""

    name: str
    spec: dict[str, Any]

    @property
    def command(self) -> list[str]:
        command = self.spec.get("command", [])
        return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]

    @property
    def environment(self) -> dict[str, str]:
        env = self.spec.get("environment") or {}
        if isinstance(env, list):
            env = dict(item.split("=", 1) for item in env)
        return {str(k): "" if v is None else str(v) for k, v in env.items()}

    def flags(self) -> dict[str, Any]:
        """The command's flags as settings overrides, parsed by the real `minitemporal`."""
        return parse_run_flags(self.command)

    def settings_env(self) -> dict[str, str]:
        """Environment plus flags as variables: the same Settings the container would get."""
        env = dict(self.environment)
        for name, value in self.flags().items():
            env[settings_env_name(name)] = str(value).lower() if isinstance(value, bool) else value
        return env

    def setting(self, field: str) -> str:
        env = self.settings_env()
        value = env.get(settings_env_name(field), Settings.model_fields[field].default)
        return str(value)

    @property
    def roles(self) -> frozenset[str]:
        return parse_roles(self.setting("roles"))

    @property
    def http_port(self) -> int:
        """Where this container serves /healthz and /metrics."""
        return int(self.setting("api_port" if "api" in self.roles else "metrics_port"))

    @property
    def replicas(self) -> int:
        return int((self.spec.get("deploy") or {}).get("replicas", 1))

    @property
    def aliases(self) -> set[str]:
        networks = self.spec.get("networks") or {}
        if isinstance(networks, list):
            return {self.name}
        return {self.name} | {a for n in networks.values() for a in (n or {}).get("aliases", [])}


def minitemporal_services() -> list[Service]:
    """Services built from this repository's Dockerfile."""
    return [
        Service(name, spec)
        for name, spec in compose()["services"].items()
        if "build" in spec or str(spec.get("image", "")).startswith("minitemporal")
    ]


def service(name: str) -> Service:
    return next(s for s in minitemporal_services() if s.name == name)


def with_role(role: str) -> list[Service]:
    return [s for s in minitemporal_services() if role in s.roles]


@dataclass(frozen=True)
class Instruction:
    stage: int
    keyword: str
    arguments: str


@cache
def dockerfile() -> tuple[Instruction, ...]:
    """The Dockerfile's instructions (continuation lines joined, comments dropped)."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    result = []
    stage = -1
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, arguments = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        result.append(Instruction(stage, keyword, " ".join(arguments.split())))
    return tuple(result)


def final_stage() -> list[Instruction]:
    last = max(i.stage for i in dockerfile())
    return [i for i in dockerfile() if i.stage == last]


def exec_form(arguments: str) -> list[str]:
    """A JSON-array instruction argument (ENTRYPOINT, CMD, HEALTHCHECK ... CMD)."""
    value = json.loads(arguments)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), arguments
    return value


def parse_run_flags(args: list[str]) -> dict[str, Any]:
    """The settings given by `minitemporal ARGS` (a run of roles, no subcommand), parsed with
    the real command's options; click raises UsageError for an unknown flag, a bad value or a
    stray argument."""
    run = click.Command("minitemporal", params=main.params)
    ctx = run.make_context("minitemporal", list(args))
    return {k: v for k, v in ctx.params.items() if v is not None}
