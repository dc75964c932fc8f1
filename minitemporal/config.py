"""Settings: one pydantic-settings model; every field is a MINITEMPORAL_* variable and a flag.

The CLI builds its flags from this model (cli.py), so a setting cannot exist without both an
environment variable and a `--flag`, and `minitemporal --help` documents them all.
"""

from __future__ import annotations

import difflib
import os
import re
import socket
from collections.abc import Mapping
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from minitemporal.domain.model import RetryPolicy
from minitemporal.domain.validation import Limits
from minitemporal.errors import ConfigurationError

ROLES = ("api", "scheduler", "worker")
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", "", "[::]"})  # noqa: S104 (names, not binds)
PREFETCH_PER_SLOT = 8  # default prefetch: claimed attempts in hand per slot, beyond the slots


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="MINITEMPORAL_", extra="forbid", validate_default=True, frozen=True
    )

    roles: str = Field(
        "all",
        description="Roles to run in this process: all, or a comma list of api,scheduler,worker.",
    )
    # --- backends
    database_url: str | None = Field(
        None,
        description="PostgreSQL URL (postgresql://user:pass@host:5432/db), or an SQLite one "
        "(sqlite:///file.db, sqlite:///:memory:). Unset: the SQLite file ./minitemporal.db.",
    )
    redis_url: str | None = Field(
        None,
        description="Redis URL (redis://host:6379/0). "
        "Unset: an in-process queue (scheduler and worker in this process only).",
    )
    redis_prefix: str = Field("minitemporal", description="Prefix of every Redis key we use.")
    db_pool_size: int = Field(8, ge=1, le=200, description="PostgreSQL connections per scheduler.")
    # --- network
    api_host: str = Field("127.0.0.1", description="Address the REST api listens on.")
    api_port: int = Field(8080, ge=0, le=65535, description="Port of the REST api.")
    grpc_host: str = Field(
        "127.0.0.1", description="Address the scheduler's gRPC server listens on."
    )
    grpc_port: int = Field(
        50051, ge=0, le=65535, description="Port of the scheduler's gRPC server."
    )
    scheduler_address: str | None = Field(
        None,
        description="host:port where api and worker reach a scheduler. "
        "Unset: this process's own gRPC host and port.",
    )
    metrics_host: str = Field(
        "127.0.0.1", description="Address of /healthz and /metrics in a process without the api."
    )
    metrics_port: int = Field(
        8081,
        ge=0,
        le=65535,
        description="Port of /healthz and /metrics in a process without the api.",
    )
    # --- worker
    worker_slots: int = Field(4, ge=1, le=1024, description="Commands one worker runs at once.")
    worker_id: str | None = Field(None, description="Name of this worker. Unset: hostname-pid.")
    worker_prefetch: int | None = Field(
        None,
        ge=0,
        le=1024,
        description="Most attempts a worker claims ahead of free slots; it holds no more than "
        "its slots start within 0.5 s, and releases any not started within 1 s. "
        "Unset: 8 x its slots.",
    )
    work_dir: str | None = Field(
        None, description="Parent of each attempt's fresh working directory. Unset: the temp dir."
    )
    output_tail_bytes: int = Field(
        65536, ge=1024, le=16 * 1024 * 1024, description="Bytes kept of each of stdout and stderr."
    )
    kill_grace_seconds: float = Field(
        5.0, ge=0, le=300, description="Between SIGTERM and SIGKILL when a command must stop."
    )
    drain_seconds: float = Field(
        30.0,
        ge=0,
        le=86400,
        description="On SIGTERM, how long a worker lets running commands finish.",
    )
    # --- scheduler
    lease_seconds: float = Field(
        15.0,
        gt=0.5,
        le=3600,
        description="An attempt whose worker stops heartbeating is lost after this.",
    )
    heartbeat_seconds: float = Field(
        3.0,
        gt=0,
        le=600,
        description="How often a worker renews the leases of its running attempts.",
    )
    sweep_seconds: float = Field(
        0.25,
        gt=0,
        le=60,
        description="How often the scheduler requeues due retries and reaps leases.",
    )
    reconcile_seconds: float = Field(
        5.0,
        gt=0,
        le=3600,
        description="How often the scheduler re-pushes queued attempts to Redis.",
    )
    watch_poll_seconds: float = Field(
        1.0,
        gt=0,
        le=60,
        description="How often a scheduler re-reads a watched job (event streams) to see what "
        "other schedulers changed; its own changes are seen at once.",
    )
    retry_base_seconds: float = Field(1.0, ge=0, le=86400, description="First retry delay.")
    retry_factor: float = Field(2.0, ge=1, le=10, description="Retry delay growth per attempt.")
    retry_max_seconds: float = Field(300.0, ge=0, le=86400, description="Largest retry delay.")
    retry_jitter: float = Field(
        0.5, ge=0, le=1, description="Fraction of each retry delay that is random."
    )
    # --- input limits
    max_body_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, description="Largest request body the api reads (413 above)."
    )
    max_nodes: int = Field(10_000, ge=1, description="Most nodes in one job.")
    max_command_length: int = Field(65_536, ge=1, description="Longest command, in characters.")
    max_dependencies: int = Field(1_000, ge=0, description="Most depends_on entries of one node.")
    max_json_depth: int = Field(
        32, ge=8, le=512, description="Deepest nesting of arrays and objects in a request body."
    )
    max_name_length: int = Field(
        256, ge=1, le=65_536, description="Longest job name, node name or idempotency key."
    )
    max_env_vars: int = Field(64, ge=0, le=10_000, description="Most env variables of one node.")
    max_env_value_length: int = Field(
        8_192, ge=0, description="Longest value of one env variable, in characters."
    )
    max_retries: int = Field(100, ge=0, le=10_000, description="Most retries of one node.")
    max_timeout_seconds: float = Field(
        7 * 24 * 3600.0, gt=0, le=365 * 24 * 3600.0, description="Longest timeout_seconds."
    )
    id_pattern: str = Field(
        r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}",
        description="Regular expression every node id must match in full.",
    )
    http_header_timeout_seconds: float = Field(
        10.0,
        gt=0,
        le=3600,
        description="A client must send a request's headers within this (slow clients are cut).",
    )
    http_max_header_bytes: int = Field(
        16 * 1024,
        ge=1024,
        le=1024 * 1024,
        description="Largest request line and headers of a request (431 above).",
    )
    http_body_timeout_seconds: float = Field(
        30.0, gt=0, le=3600, description="A client must send a request's body within this (408)."
    )
    http_max_connections: int = Field(
        1000, ge=1, description="Open connections and requests the api serves at once (503 above)."
    )
    api_max_event_streams: int = Field(
        256,
        ge=1,
        description="Event streams (GET /v1/jobs/{id}/events) the api serves at once (503 above).",
    )
    api_event_keepalive_seconds: float = Field(
        15.0,
        gt=0,
        le=15,
        description="A quiet event stream gets a keepalive comment this often (lower it for "
        "proxies that cut idle connections sooner).",
    )
    # --- logs
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Least severe log level printed."
    )
    log_format: Literal["auto", "json", "text"] = Field(
        "auto", description="auto: text on a terminal, JSON lines otherwise."
    )
    failpoints: str | None = Field(
        None,
        description="Testing only: comma list of name=exit (see minitemporal/failpoints.py).",
    )
    # --- security
    grpc_secret: SecretStr | None = Field(
        None, description="Shared secret every gRPC call must carry (api, workers, schedulers)."
    )
    api_tokens: SecretStr | None = Field(
        None,
        description="API tokens as NAME:SHA256HEX:SCOPES entries separated by spaces or ';' "
        "(scopes: read, submit, metrics); `minitemporal token create` makes one.",
    )
    api_tokens_file: str | None = Field(
        None, description="File of API token entries, one a line ('#' comments); read at start."
    )
    metrics_auth: bool = Field(
        False, description="/metrics needs a token with the metrics scope (on every process)."
    )
    insecure_no_auth: bool = Field(
        False,
        description="Allow the api without tokens, or gRPC without a secret, on a non-loopback "
        "address. Anyone who reaches it can run commands: never in production.",
    )
    grpc_tls_cert: str | None = Field(
        None, description="Scheduler: PEM certificate chain; set with the key to serve gRPC on TLS."
    )
    grpc_tls_key: str | None = Field(None, description="Scheduler: PEM private key of the cert.")
    grpc_tls_client_ca: str | None = Field(
        None,
        description="Scheduler: PEM CA bundle; set, every gRPC client must present a "
        "certificate it signed (mutual TLS).",
    )
    grpc_tls_ca: str | None = Field(
        None, description="api and worker: PEM CA bundle to verify the scheduler; set, use TLS."
    )
    grpc_tls_client_cert: str | None = Field(
        None, description="api and worker: PEM certificate to present to the scheduler (mTLS)."
    )
    grpc_tls_client_key: str | None = Field(
        None, description="api and worker: PEM private key of the client certificate."
    )
    grpc_tls_server_name: str | None = Field(
        None,
        description="api and worker: name expected in the scheduler's certificate. "
        "Unset: the host of the scheduler address.",
    )
    # --- command sandbox (worker)
    run_as_user: str | None = Field(
        None,
        description="Run commands as this user (name, or uid[:gid]); a comma list of at least "
        "--worker-slots users gives every running command its own. Needs a root worker.",
    )
    limit_cpu_seconds: int | None = Field(
        None, ge=1, description="CPU seconds a command may use (RLIMIT_CPU). Unset: no limit."
    )
    limit_memory_bytes: int | None = Field(
        None,
        ge=1024 * 1024,
        description="Address space of each command process (RLIMIT_AS). Unset: no limit.",
    )
    limit_open_files: int | None = Field(
        None,
        ge=8,
        description="Open files of each command process (RLIMIT_NOFILE). Unset: no limit.",
    )
    limit_processes: int | None = Field(
        None,
        ge=1,
        description="Processes of the command's user (RLIMIT_NPROC; counts every command of a "
        "shared run-as user). Unset: no limit.",
    )

    @field_validator("id_pattern")
    @classmethod
    def _id_pattern(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
        return value

    @field_validator("roles")
    @classmethod
    def _roles(cls, value: str) -> str:
        try:
            parse_roles(value)
        except ConfigurationError as exc:
            raise ValueError(str(exc)) from None
        return value

    # --- derived values
    @property
    def role_set(self) -> frozenset[str]:
        return parse_roles(self.roles)

    @property
    def resolved_scheduler_address(self) -> str:
        if self.scheduler_address:
            return self.scheduler_address
        host = "127.0.0.1" if self.grpc_host in WILDCARD_HOSTS else self.grpc_host
        return f"{host}:{self.grpc_port}"

    @property
    def effective_worker_prefetch(self) -> int:
        """Unset: enough claimed attempts in hand to keep short commands' slots busy while
        reports are in flight (measured: 4 slots ran 1.5x the nodes/s with 16 in hand than
        with 4, and 1.0-1.3x that with 32, its slots then never idle). The 0.5 s bound on what a
        worker holds, not this count, is what keeps longer attempts from piling up."""
        if self.worker_prefetch is not None:
            return self.worker_prefetch
        return min(PREFETCH_PER_SLOT * self.worker_slots, 1024)

    @property
    def resolved_worker_id(self) -> str:
        return self.worker_id or f"{socket.gethostname()}-{os.getpid()}"

    @property
    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            base_seconds=self.retry_base_seconds,
            factor=self.retry_factor,
            max_seconds=self.retry_max_seconds,
            jitter=self.retry_jitter,
        )

    @property
    def limits(self) -> Limits:
        return Limits(
            max_nodes=self.max_nodes,
            max_command_length=self.max_command_length,
            max_dependencies=self.max_dependencies,
            max_name_length=self.max_name_length,
            max_retries=self.max_retries,
            max_timeout_seconds=self.max_timeout_seconds,
            max_env_vars=self.max_env_vars,
            max_env_value_length=self.max_env_value_length,
            id_pattern=self.id_pattern,
        )


# Variables with our prefix that are not settings: what commands see, and the test suite's.
NOT_SETTINGS = frozenset(
    {"MINITEMPORAL_JOB_ID", "MINITEMPORAL_NODE_ID", "MINITEMPORAL_ATTEMPT", "MINITEMPORAL_WORKDIR"}
)


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """Warnings for MINITEMPORAL_* variables that are no setting (a typo is ignored silently
    by the settings model), each with the closest real name."""
    known = {f"MINITEMPORAL_{name.upper()}" for name in Settings.model_fields}
    warnings = []
    for name in sorted(environ):
        if not name.startswith("MINITEMPORAL_") or name in known or name in NOT_SETTINGS:
            continue
        if name.startswith("MINITEMPORAL_TEST_"):
            continue
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        warnings.append(f"{name} is not a setting and is ignored{hint}")
    return warnings


def parse_roles(value: str) -> frozenset[str]:
    parts = {p.strip().lower() for p in value.split(",") if p.strip()}
    if parts == {"all"}:
        return frozenset(ROLES)
    unknown = parts - set(ROLES)
    if unknown or not parts:
        raise ConfigurationError(
            f"--roles takes 'all' or a comma list of {', '.join(ROLES)}; got {value!r}"
        )
    return frozenset(parts)
