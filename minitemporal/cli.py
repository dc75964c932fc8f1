"""The `minitemporal` command. Its flags are generated from the Settings model, so every
setting has a flag and an environment variable, and `--help` documents both.

    minitemporal --roles all                 run roles in this process
    minitemporal db migrate                  create or upgrade the schema
    minitemporal token create --name ci      make an API token and its configuration entry
    minitemporal submit dag.yaml --wait      the REST client (submit, jobs ...): see client/
"""

from __future__ import annotations

import sys
import types
import typing
from collections.abc import Callable
from typing import Any

import anyio
import click
from pydantic import SecretStr, ValidationError

from minitemporal import __version__
from minitemporal.client import API_URL_ENV, DEFAULT_API_URL, TOKEN_ENV
from minitemporal.config import Settings
from minitemporal.errors import ConfigurationError, MinitemporalError


def _click_type(annotation: Any) -> Any:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    base = (
        args[0] if typing.get_origin(annotation) in (typing.Union, types.UnionType) else annotation
    )
    if typing.get_origin(base) is typing.Literal:
        return click.Choice([str(a) for a in typing.get_args(base)])
    if base is bool:
        return bool
    if base is int:
        return int
    if base is float:
        return float
    return str


def settings_options(func: Callable[..., Any]) -> Callable[..., Any]:
    for name, field in reversed(list(Settings.model_fields.items())):
        flag = "--" + name.replace("_", "-")
        env = "MINITEMPORAL_" + name.upper()
        default = field.default
        if isinstance(default, SecretStr):
            default = "***"
        shown = "" if default is None else f" [default: {default}]"
        help_text = f"{field.description}{shown} (env {env})"
        kind = _click_type(field.annotation)
        if kind is bool:
            option = click.option(f"{flag}/--no-{flag[2:]}", name, default=None, help=help_text)
        else:
            option = click.option(flag, name, type=kind, default=None, help=help_text)
        func = option(func)
    return func


def load_settings(overrides: dict[str, Any]) -> Settings:
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in exc.errors()
        )
        raise click.UsageError(f"invalid settings: {problems}") from None


def fail(message: str, code: int = 2) -> typing.NoReturn:
    click.echo(f"minitemporal: {message}", err=True)
    sys.exit(code)


def our_error(exc: BaseException) -> MinitemporalError | None:
    """Our error inside a task group's ExceptionGroup (anyio wraps even a lone one), if any."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc if isinstance(exc, MinitemporalError) else None


@click.group(
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110},
)
@click.version_option(__version__, prog_name="minitemporal")
@settings_options
@click.pass_context
def main(ctx: click.Context, **overrides: Any) -> None:
    """minitemporal: a distributed DAG job scheduler.

    Without a command, runs the roles chosen by --roles (api, scheduler, worker, or all) in
    this process until SIGINT or SIGTERM. With no database or Redis URL it runs embedded
    (SQLite file, in-process queue); set both for production.
    """
    ctx.ensure_object(dict)
    ctx.obj["overrides"] = overrides
    if ctx.invoked_subcommand is not None:
        return
    settings = load_settings(overrides)
    from minitemporal.app import run
    from minitemporal.observability.logging import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    try:
        anyio.run(run, settings)
    except (MinitemporalError, BaseExceptionGroup) as exc:
        error = our_error(exc)
        if error is None:
            raise
        fail(error.detail, 2 if isinstance(error, ConfigurationError) else 1)


@main.group()
def db() -> None:
    """Database administration."""


@db.command("migrate")
@click.pass_context
def db_migrate(ctx: click.Context) -> None:
    """Create or upgrade the schema (idempotent; schedulers also do this at start)."""
    settings = load_settings(ctx.obj["overrides"])
    from minitemporal.app import build_store

    async def migrate() -> None:
        store = build_store(settings)
        try:
            await store.open()
        finally:
            await store.close()

    try:
        anyio.run(migrate)
    except MinitemporalError as exc:
        fail(exc.detail, 1)
    click.echo("minitemporal: schema is up to date")


@main.group()
def token() -> None:
    """API tokens (the server keeps only their SHA-256)."""


@token.command("create")
@click.option("--name", required=True, help="Who uses the token (shown in logs and errors).")
@click.option(
    "--scopes",
    default="read",
    show_default=True,
    help="Comma list of read, submit (submit and cancel jobs), metrics.",
)
def token_create(name: str, scopes: str) -> None:
    """Print a new token (once: it is stored nowhere) and the entry to configure."""
    from minitemporal.api.auth import new_token

    try:
        secret, entry = new_token(name, scopes.split(","))
    except ConfigurationError as exc:
        fail(exc.detail)
    click.echo(f"token:  {secret}")
    click.echo(f"entry:  {entry.entry()}")
    click.echo(
        "Give the token to its user (Authorization: Bearer <token>); add the entry to "
        "MINITEMPORAL_API_TOKENS (separated by spaces) or a line of MINITEMPORAL_API_TOKENS_FILE.",
        err=True,
    )


@token.command("hash")
def token_hash() -> None:
    """Read a token on standard input; print its SHA-256, as a token entry holds it."""
    from minitemporal.api.auth import hash_token

    value = sys.stdin.readline().strip()
    if not value:
        fail("give the token on standard input")
    click.echo(hash_token(value).hex())


# --- the REST client. Its options live on its commands, apart from the server's Settings;
# its modules are imported when a command runs, so that --help and the server start stay fast.
JOB_STATUSES = ("running", "succeeded", "failed", "cancelled")


def client_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option(
        "--json",
        "as_json",
        is_flag=True,
        help="Print the API's JSON (watch, --wait: one JSON object per event line).",
    )(func)
    func = click.option(
        "--token-file",
        type=click.Path(dir_okay=False),
        help=f"Read the API token from this file instead of ${TOKEN_ENV}.",
    )(func)
    return click.option(
        "--api-url",
        envvar=API_URL_ENV,
        default=DEFAULT_API_URL,
        show_default=True,
        show_envvar=True,
        help=f"Base URL of the REST api. The token comes from ${TOKEN_ENV}, never a flag.",
    )(func)


def _run_client(command: Callable[..., int], *args: Any, **kwargs: Any) -> typing.NoReturn:
    """Run a client command with its Console; exit with its code."""
    from minitemporal.client import commands

    opts = commands.Options(kwargs.pop("api_url"), kwargs.pop("token_file"), kwargs.pop("as_json"))
    try:
        code = command(commands.Console(), opts, *args, **kwargs)
    except BrokenPipeError:  # `minitemporal jobs list | head`: the reader left
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 1
    sys.exit(code)


@main.command()
@click.argument("file", metavar="FILE")
@click.option(
    "--idempotency-key",
    help="Submit at most once: the same key and body again gives the same job.",
)
@click.option(
    "--wait", is_flag=True, help="Follow the job live until it ends; exit 1 unless it succeeded."
)
@client_options
def submit(file: str, idempotency_key: str | None, wait: bool, **opts: Any) -> None:
    """Submit the DAG in FILE (JSON or YAML; - for standard input).

    FILE holds either the request body {"job": {...}} or the job itself
    {"name": ..., "nodes": [...]}.
    """
    from minitemporal.client import commands

    _run_client(commands.submit, file, idempotency_key=idempotency_key, wait=wait, **opts)


@main.group()
def jobs() -> None:
    """List, inspect, follow and cancel jobs (the REST api's client)."""


@jobs.command("list")
@click.option("--status", type=click.Choice(JOB_STATUSES), help="Only jobs with this status.")
@click.option("--limit", type=click.IntRange(1, 500), help="At most this many (default 50).")
@click.option("--cursor", help="Continue a listing (the cursor the previous page printed).")
@client_options
def jobs_list(status: str | None, limit: int | None, cursor: str | None, **opts: Any) -> None:
    """Jobs, newest first."""
    from minitemporal.client import commands

    _run_client(commands.list_jobs, status=status, limit=limit, cursor=cursor, **opts)


@jobs.command("get")
@click.argument("job_id", metavar="ID")
@client_options
def jobs_get(job_id: str, **opts: Any) -> None:
    """A job and a table of its nodes: state, attempt, exit code, duration, explanation."""
    from minitemporal.client import commands

    _run_client(commands.get_job, job_id, **opts)


@jobs.command("logs")
@click.argument("job_id", metavar="ID")
@click.argument("node_id", metavar="NODE")
@click.option("--attempt", type=click.IntRange(min=1), help="This attempt (default: the latest).")
@click.option("--stderr", is_flag=True, help="Standard error instead of standard output.")
@client_options
def jobs_logs(job_id: str, node_id: str, attempt: int | None, stderr: bool, **opts: Any) -> None:
    """Print the stored output tail of a node's attempt."""
    from minitemporal.client import commands

    _run_client(commands.logs, job_id, node_id, attempt=attempt, stderr=stderr, **opts)


@jobs.command("cancel")
@click.argument("job_id", metavar="ID")
@client_options
def jobs_cancel(job_id: str, **opts: Any) -> None:
    """Cancel a job: waiting nodes are cancelled, running commands killed."""
    from minitemporal.client import commands

    _run_client(commands.cancel, job_id, **opts)


@jobs.command("watch")
@click.argument("job_id", metavar="ID")
@client_options
def jobs_watch(job_id: str, **opts: Any) -> None:
    """Follow a job live until it ends; exit 1 unless it succeeded."""
    from minitemporal.client import commands

    _run_client(commands.watch, job_id, **opts)


if __name__ == "__main__":  # pragma: no cover
    main()
