"""Every setting is an environment variable and a CLI flag; --help documents both."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from minitemporal.cli import main
from minitemporal.config import Settings
from minitemporal.errors import ConfigurationError

REQUIRED_NAMES = [
    "MINITEMPORAL_DATABASE_URL",
    "MINITEMPORAL_REDIS_URL",
    "MINITEMPORAL_API_HOST",
    "MINITEMPORAL_API_PORT",
    "MINITEMPORAL_GRPC_HOST",
    "MINITEMPORAL_GRPC_PORT",
    "MINITEMPORAL_SCHEDULER_ADDRESS",
    "MINITEMPORAL_METRICS_PORT",
    "MINITEMPORAL_WORKER_SLOTS",
]


def help_text() -> str:
    result = CliRunner().invoke(main, ["--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


def test_help_documents_every_setting() -> None:
    text = help_text()
    for name in Settings.model_fields:
        assert f"--{name.replace('_', '-')}" in text
        assert f"MINITEMPORAL_{name.upper()}" in text
    for name in REQUIRED_NAMES:
        assert name in text


def test_defaults() -> None:
    s = Settings()
    assert s.api_port == 8080
    assert s.role_set == {"api", "scheduler", "worker"}
    assert s.resolved_scheduler_address == f"127.0.0.1:{s.grpc_port}"


def test_env_then_flag_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINITEMPORAL_API_PORT", "9000")
    monkeypatch.setenv("MINITEMPORAL_WORKER_SLOTS", "7")
    assert Settings().api_port == 9000
    assert Settings(api_port=9100).api_port == 9100
    assert Settings().worker_slots == 7


def test_wildcard_grpc_host_is_reached_on_loopback() -> None:
    assert (
        Settings(grpc_host="0.0.0.0", grpc_port=7000).resolved_scheduler_address == "127.0.0.1:7000"
    )
    assert Settings(scheduler_address="sched:1").resolved_scheduler_address == "sched:1"


@pytest.mark.parametrize("roles", ["api,scheduler", "worker", "all", " API , worker "])
def test_roles(roles: str) -> None:
    assert Settings(roles=roles).role_set


@pytest.mark.parametrize("roles", ["", "apis", "all,api", "web"])
def test_bad_roles_are_a_one_line_usage_error(roles: str) -> None:
    result = CliRunner().invoke(main, ["--roles", roles])
    assert result.exit_code == 2
    assert "invalid settings: roles" in result.output


def test_bad_value_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINITEMPORAL_API_PORT", "eighty")
    result = CliRunner().invoke(main, [])
    assert result.exit_code == 2
    assert "api_port" in result.output


def test_role_sets_needing_redis_are_refused() -> None:
    from minitemporal.app import check_roles

    with pytest.raises(ConfigurationError, match="MINITEMPORAL_REDIS_URL"):
        check_roles(Settings(roles="worker"))
    with pytest.raises(ConfigurationError, match="MINITEMPORAL_REDIS_URL"):
        check_roles(Settings(roles="scheduler"))
    check_roles(Settings(roles="all"))
    check_roles(Settings(roles="api"))
    check_roles(Settings(roles="worker", redis_url="redis://x"))


def test_unknown_variables_are_reported_with_the_closest_name() -> None:
    from minitemporal.config import unknown_variables

    env = {
        "MINITEMPORAL_WORKERS_SLOTS": "8",
        "MINITEMPORAL_API_PORT": "1",
        "MINITEMPORAL_JOB_ID": "x",
        "MINITEMPORAL_TEST_DATABASE_URL": "x",
        "PATH": "/bin",
    }
    assert unknown_variables(env) == [
        "MINITEMPORAL_WORKERS_SLOTS is not a setting and is ignored "
        "(did you mean MINITEMPORAL_WORKER_SLOTS?)"
    ]
