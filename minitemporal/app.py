"""The composition root: build stores, queues, clients and roles from settings, run them under
one task group, stop them in order.

Roles always talk gRPC, even in one process, so `--roles all` and one process per role run the
same code. Signals belong to this module alone: uvicorn's handlers are switched off.
"""

from __future__ import annotations

import contextlib
import gc
import ipaddress
import logging
import os
import signal
from collections.abc import Iterator
from typing import Any

import anyio
import grpc
import uvicorn
from anyio.abc import TaskGroup, TaskStatus
from grpc_health.v1._async import HealthServicer

from minitemporal.api.app import SCOPES, ApiDeps, create_app, open_routes
from minitemporal.api.auth import AuthMiddleware, TokenSet
from minitemporal.api.events import EventStreams
from minitemporal.api.guard import GuardedHttpProtocol
from minitemporal.config import Settings, unknown_variables
from minitemporal.errors import ConfigurationError, Unavailable
from minitemporal.failpoints import Failpoints
from minitemporal.observability.health import Health
from minitemporal.observability.http import create_ops_app
from minitemporal.observability.logging import redact_url
from minitemporal.observability.metrics import Metrics
from minitemporal.queue.base import TaskQueue
from minitemporal.rpc.client import SchedulerClient
from minitemporal.rpc.server import SchedulerServicer, build_server, set_serving
from minitemporal.rpc.tls import channel_credentials, server_credentials
from minitemporal.scheduler.maintenance import Maintenance
from minitemporal.scheduler.service import SchedulerService
from minitemporal.scheduler.watch import WatchHub
from minitemporal.store.base import Store
from minitemporal.worker.environment import UserPool, parse_run_as
from minitemporal.worker.process import ResourceLimits
from minitemporal.worker.worker import Worker, WorkerConfig

log = logging.getLogger("minitemporal")


class EmbeddedUvicorn(uvicorn.Server):
    """uvicorn as one task among others: the launcher owns SIGINT and SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def settle_heap() -> None:
    """Keep what startup built (modules, protobuf descriptors, grpc, the web app...) out of
    the cyclic collector's passes: it lives as long as the process. A full collection walked
    all of it each time, 30-55 ms with the event loop stopped, and a job arriving meanwhile
    waited as long; now it walks only what was made since."""
    gc.collect()
    gc.freeze()


def build_store(settings: Settings) -> Store:
    url = settings.database_url
    if url is None or url.startswith("sqlite:"):
        from minitemporal.store.sqlite import SqliteStore

        return SqliteStore.from_url(url, retry_policy=settings.retry_policy)
    if url.startswith(("postgres://", "postgresql://")):
        from minitemporal.store.postgres import PostgresStore

        return PostgresStore(
            url, retry_policy=settings.retry_policy, pool_size=settings.db_pool_size
        )
    raise ConfigurationError(
        "MINITEMPORAL_DATABASE_URL must start with postgresql:// or sqlite:// "
        f"(got {redact_url(url)!r})"
    )


def build_queue(settings: Settings) -> TaskQueue:
    if settings.redis_url is None:
        from minitemporal.queue.memory import MemoryQueue

        return MemoryQueue()
    from minitemporal.queue.redis import RedisQueue

    return RedisQueue(settings.redis_url, prefix=settings.redis_prefix)


def check_roles(settings: Settings) -> None:
    """Refuse, in one line, a role set that cannot work with the configured backends."""
    roles = settings.role_set
    if settings.redis_url is None and len(roles & {"scheduler", "worker"}) == 1:
        raise ConfigurationError(
            f"--roles {settings.roles} needs MINITEMPORAL_REDIS_URL: the in-process queue only "
            "works when scheduler and worker share a process (--roles all)"
        )


def embedded_parts(settings: Settings) -> list[tuple[str, str]]:
    """What a scheduler of these settings runs embedded, with the setting that replaces it."""
    parts = []
    url = settings.database_url
    if url is None or url.startswith("sqlite:"):
        from minitemporal.store.sqlite import describe, sqlite_path

        parts.append((describe(sqlite_path(url)), "MINITEMPORAL_DATABASE_URL=postgresql://..."))
    if settings.redis_url is None:
        parts.append(("in-process queue", "MINITEMPORAL_REDIS_URL=redis://..."))
    return parts


def is_loopback(host: str) -> bool:
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name that may resolve anywhere


def check_exposure(settings: Settings, tokens: TokenSet) -> None:
    """Submitting a job runs shell commands: refuse, in one line, to serve the api without
    tokens, or gRPC without a secret, beyond loopback, unless explicitly told to."""
    s = settings
    if s.insecure_no_auth:
        log.warning(
            "--insecure-no-auth: whoever reaches this process may be able to run commands on "
            "its workers; configure MINITEMPORAL_API_TOKENS and MINITEMPORAL_GRPC_SECRET instead"
        )
        return
    if "api" in s.role_set and not tokens and not is_loopback(s.api_host):
        raise ConfigurationError(
            f"refusing to serve the api on {s.api_host} without tokens: anyone who reaches it "
            "could run commands. Create one with `minitemporal token create --name NAME "
            "--scopes read,submit` and set MINITEMPORAL_API_TOKENS (or _FILE), or listen on "
            "127.0.0.1, or pass --insecure-no-auth"
        )
    if "scheduler" in s.role_set and s.grpc_secret is None and not is_loopback(s.grpc_host):
        raise ConfigurationError(
            f"refusing to serve gRPC on {s.grpc_host} without MINITEMPORAL_GRPC_SECRET: anyone "
            "who reaches it could submit jobs. Set the same secret on every role, or listen on "
            "127.0.0.1, or pass --insecure-no-auth"
        )


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.roles = settings.role_set
        self.metrics = Metrics()
        self.health = Health()
        self.stopping = anyio.Event()
        self.store: Store | None = None
        self.queue: TaskQueue | None = None
        self.client: SchedulerClient | None = None
        self.grpc_server: grpc.aio.Server | None = None
        self.servicer: SchedulerServicer | None = None
        self.grpc_port: int | None = None
        self.http: EmbeddedUvicorn | None = None
        self.http_done = anyio.Event()  # the HTTP server has stopped (or never started)
        self.events: EventStreams | None = None
        self.service: SchedulerService | None = None
        self.tokens = TokenSet(())
        self.users: UserPool | None = None
        self.limits: ResourceLimits | None = None

    async def run(self) -> None:
        s = self.settings
        check_roles(s)
        self.tokens = TokenSet.load(
            s.api_tokens.get_secret_value() if s.api_tokens else None, s.api_tokens_file
        )
        check_exposure(s, self.tokens)
        # Read certificates and users now: a mistake is a one-line error before anything runs.
        grpc_server_credentials = server_credentials(
            s.grpc_tls_cert, s.grpc_tls_key, s.grpc_tls_client_ca
        )
        grpc_channel_credentials = channel_credentials(
            s.grpc_tls_ca, s.grpc_tls_client_cert, s.grpc_tls_client_key
        )
        if "worker" in self.roles:
            self.users = (
                UserPool(parse_run_as(s.run_as_user), s.worker_slots) if s.run_as_user else None
            )
            self.limits = ResourceLimits.configured(
                cpu_seconds=s.limit_cpu_seconds,
                memory_bytes=s.limit_memory_bytes,
                open_files=s.limit_open_files,
                processes=s.limit_processes,
            )
        self._banner()
        for warning in unknown_variables(os.environ):
            log.warning(warning)
        async with contextlib.AsyncExitStack() as stack:
            grpc_health = HealthServicer()
            if "scheduler" in self.roles:
                self.store = build_store(s)
                self.queue = build_queue(s)
                stack.push_async_callback(self.store.close)
                stack.push_async_callback(self.queue.close)
                self.health.add(self.store.kind, self.store.ping)
                self.health.add(self.queue.kind, self.queue.ping)
            elif "worker" in self.roles:
                self.queue = build_queue(s)
                stack.push_async_callback(self.queue.close)
                self.health.add(self.queue.kind, self.queue.ping)
            if self.roles & {"api", "worker"}:
                self.client = SchedulerClient(
                    s.resolved_scheduler_address,
                    metrics=self.metrics.grpc,
                    secret=s.grpc_secret.get_secret_value() if s.grpc_secret else None,
                    credentials=grpc_channel_credentials,
                    server_name=s.grpc_tls_server_name,
                    wait_for_ready="worker" in self.roles and "api" not in self.roles,
                    # A worker's task calls share a stream, and so do an api's submissions.
                    tasks="worker" in self.roles,
                    submissions="api" in self.roles,
                )
                stack.push_async_callback(self.client.close)
                self.health.add("scheduler", self.client.check_health)

            async with anyio.create_task_group() as tg:
                await tg.start(self._watch_signals, tg)  # handled from here on, not fatal
                tg.start_soon(self._serve_http)
                if self.store is not None and self.queue is not None:
                    service = await self._start_scheduler(
                        tg, grpc_health, self.store, self.queue, grpc_server_credentials
                    )
                    if service is None:  # stopped while waiting for the store
                        tg.cancel_scope.cancel()  # the http server and signal watcher too
                        return
                elif self.queue is not None:
                    await self._open_with_retry("queue", self.queue.open)
                worker_done = anyio.Event()
                if "worker" in self.roles and self.client is not None and self.queue is not None:
                    tg.start_soon(self._run_worker, worker_done, self.client, self.queue)
                else:
                    worker_done.set()
                settle_heap()
                log.info("minitemporal running", extra={"roles": ",".join(sorted(self.roles))})
                await self.stopping.wait()
                log.info("stopping")
                await worker_done.wait()
                if self.events is not None:
                    self.events.close()  # uvicorn would wait for open streams
                if self.http is not None:
                    # Requests in flight finish (uvicorn's own graceful stop bounds it) while
                    # the scheduler, our own or another, still answers them.
                    self.http.should_exit = True
                    await self.http_done.wait()
                if self.client is not None:
                    await self.client.end_session()
                if self.grpc_server is not None:
                    await set_serving(grpc_health, False)
                    if self.service is not None:
                        await self.service.watch.close()  # the apis reconnect elsewhere
                    if self.servicer is not None:
                        self.servicer.end_sessions()  # so do workers and apis
                    await self.grpc_server.stop(grace=5.0)
                tg.cancel_scope.cancel()
            if self.grpc_server is not None:
                # After a second signal the graceful stop above never ran: stop it now, in
                # this loop (grpc would otherwise try from its finalizer, after the loop).
                await self.grpc_server.stop(None)
        log.info("stopped")

    def _banner(self) -> None:
        """One line, before anything starts, when this process runs anything embedded."""
        parts = embedded_parts(self.settings) if "scheduler" in self.roles else []
        if parts:
            print(
                f"minitemporal: embedded mode ({', '.join(what for what, _ in parts)}): one "
                "process, nothing else to run. For production set "
                + " and ".join(setting for _, setting in parts),
                flush=True,
            )

    async def _open_with_retry(self, name: str, opener: Any) -> bool:
        """Open a dependency, retrying with backoff until it answers or we are told to stop."""
        delay = 0.2
        while not self.stopping.is_set():
            try:
                await opener()
                return True
            except Unavailable as exc:
                log.warning("%s not ready: %s (retrying in %.1fs)", name, exc, delay)
            except OSError as exc:
                log.warning("%s not ready: %s (retrying in %.1fs)", name, exc, delay)
            with anyio.move_on_after(delay):
                await self.stopping.wait()
            delay = min(delay * 2, 5.0)
        return False

    async def _start_scheduler(
        self,
        tg: TaskGroup,
        grpc_health: HealthServicer,
        store: Store,
        queue: TaskQueue,
        credentials: grpc.ServerCredentials | None,
    ) -> SchedulerService | None:
        s = self.settings
        if not await self._open_with_retry("store", store.open):
            return None
        if not await self._open_with_retry("queue", queue.open):
            return None
        service = SchedulerService(
            store,
            queue,
            self.metrics.scheduler,
            lease_seconds=s.lease_seconds,
            limits=s.limits,
            failpoints=Failpoints(s.failpoints),
            watch=WatchHub(
                store, poll_seconds=s.watch_poll_seconds, gauge=self.metrics.scheduler.job_watches
            ),
        )
        self.service = service
        self.servicer = SchedulerServicer(service, self.metrics.grpc)
        self.grpc_server, self.grpc_port = build_server(
            service,
            self.metrics.grpc,
            grpc_health,
            secret=s.grpc_secret.get_secret_value() if s.grpc_secret else None,
            credentials=credentials,
            address=f"{s.grpc_host}:{s.grpc_port}",
            servicer=self.servicer,
        )
        await self.grpc_server.start()
        await set_serving(grpc_health, True)
        log.info("scheduler listening", extra={"grpc": f"{s.grpc_host}:{self.grpc_port}"})
        maintenance = Maintenance(
            service, sweep_seconds=s.sweep_seconds, reconcile_seconds=s.reconcile_seconds
        )
        tg.start_soon(maintenance.run)
        tg.start_soon(self._track_serving, grpc_health, store)
        return service

    async def _track_serving(self, grpc_health: HealthServicer, store: Store) -> None:
        """The gRPC health status follows the store: without Redis a scheduler still accepts
        and serves jobs (they run when Redis is back), so only the store makes it unusable."""
        serving = True
        while True:
            await anyio.sleep(1.0)
            ok = True
            with anyio.move_on_after(0.8) as scope:
                try:
                    await store.ping()
                except Unavailable:
                    ok = False
            ok = ok and not scope.cancelled_caught
            if ok != serving:
                serving = ok
                await set_serving(grpc_health, ok)

    async def _run_worker(
        self, done: anyio.Event, client: SchedulerClient, queue: TaskQueue
    ) -> None:
        s = self.settings
        try:
            worker = Worker(
                WorkerConfig(
                    worker_id=s.resolved_worker_id,
                    slots=s.worker_slots,
                    lease_seconds=s.lease_seconds,
                    heartbeat_seconds=s.heartbeat_seconds,
                    drain_seconds=s.drain_seconds,
                    kill_grace_seconds=s.kill_grace_seconds,
                    output_tail_bytes=s.output_tail_bytes,
                    work_dir=s.work_dir,
                    limits=self.limits,
                    prefetch=s.effective_worker_prefetch,
                ),
                client=client,
                queue=queue,
                metrics=self.metrics.worker,
                users=self.users,
            )
            await worker.run(self.stopping)
        finally:
            done.set()

    async def _serve_http(self) -> None:
        s = self.settings
        if "api" in self.roles and self.client is not None:
            self.events = EventStreams(
                self.client,
                limit=s.api_max_event_streams,
                gauge=self.metrics.api.event_streams,
                keepalive_seconds=s.api_event_keepalive_seconds,
            )
            app = create_app(
                ApiDeps(
                    scheduler=self.client,
                    limits=s.limits,
                    max_body_bytes=s.max_body_bytes,
                    metrics=self.metrics,
                    health=self.health,
                    tokens=self.tokens or None,
                    metrics_auth=s.metrics_auth,
                    max_json_depth=s.max_json_depth,
                    body_timeout=s.http_body_timeout_seconds,
                    events=self.events,
                )
            )
            host, port, what = s.api_host, s.api_port, "api"
        else:
            auth = (
                [AuthMiddleware(self.tokens, SCOPES, open_routes(metrics_auth=True))]
                if s.metrics_auth
                else []
            )
            app = create_ops_app(self.health, self.metrics.registry, auth)
            host, port, what = s.metrics_host, s.metrics_port, "metrics"
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            http=GuardedHttpProtocol.with_limits(
                s.http_header_timeout_seconds, s.http_max_header_bytes
            ),
            limit_concurrency=s.http_max_connections,
            timeout_keep_alive=5,
            timeout_graceful_shutdown=10,
        )
        self.http = EmbeddedUvicorn(config)
        log.info("%s listening", what, extra={"http": f"{host}:{port}"})
        try:
            await self.http.serve()
        finally:
            self.http_done.set()
        if not self.http.started and not self.stopping.is_set():
            log.error("could not listen on %s:%s", host, port)
            self.stopping.set()

    async def _watch_signals(
        self, tg: TaskGroup, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            task_status.started()
            async for signum in signals:
                if not self.stopping.is_set():
                    log.info("received %s: stopping gracefully", signal.Signals(signum).name)
                    self.stopping.set()
                else:
                    log.warning("second signal: stopping now")
                    tg.cancel_scope.cancel()
                    return


async def run(settings: Settings) -> None:
    await Runtime(settings).run()
