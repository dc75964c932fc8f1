"""Prometheus metrics on one explicit registry per process, shared by its roles.

Each role asks for its group (`metrics.scheduler`, ...) and the group is registered once, on
first use, so roles sharing a process share one /metrics without duplicate registration.
"""

from __future__ import annotations

from functools import cached_property

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

P = "minitemporal_"
# Enqueue-to-start spans 0.5 ms (hot worker) to a minute (a backlog): roughly x2 steps.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
RUN_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0)
RPC_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)


class SchedulerMetrics:
    def __init__(self, r: CollectorRegistry) -> None:
        self.enqueue_to_start = Histogram(
            P + "task_enqueue_to_start_seconds",
            "Time from the scheduler committing an attempt as queued to its process spawning.",
            registry=r,
            buckets=LATENCY_BUCKETS,
        )
        self.run_seconds = Histogram(
            P + "task_run_seconds",
            "Run time of finished attempts, by outcome.",
            ["outcome"],
            registry=r,
            buckets=RUN_BUCKETS,
        )
        self.job_duration = Histogram(
            P + "job_duration_seconds",
            "Submission to completion of finished jobs, by status.",
            ["status"],
            registry=r,
            buckets=RUN_BUCKETS,
        )
        self.retries = Counter(
            P + "task_retries_total", "Attempts scheduled for retry.", registry=r
        )
        self.failures = Counter(
            P + "task_failures_total",
            "Failed attempts, by reason (exit_code, timeout, lost).",
            ["reason"],
            registry=r,
        )
        self.rescued = Counter(
            P + "tasks_rescued_total",
            "Lost attempts recovered by the reaper and queue entries restored from the store.",
            ["kind"],
            registry=r,
        )
        self.claims_rejected = Counter(
            P + "claims_rejected_total",
            "Claimed refs that were stale, taken or cancelled (duplicates are normal).",
            registry=r,
        )
        self.reports_rejected = Counter(
            P + "reports_rejected_total",
            "Heartbeats or results from attempts no longer current.",
            ["kind"],
            registry=r,
        )
        self.jobs_submitted = Counter(P + "jobs_submitted_total", "Jobs created.", registry=r)
        self.jobs_finished = Counter(
            P + "jobs_finished_total", "Jobs finished, by status.", ["status"], registry=r
        )
        self.tasks_completed = Counter(
            P + "tasks_completed_total", "Attempts finished, by outcome.", ["outcome"], registry=r
        )
        self.queue_depth = Gauge(
            P + "queue_depth", "Attempts waiting in the ready queue.", registry=r
        )
        self.submit_batch = Histogram(
            P + "submit_batch_jobs",
            "Jobs stored per transaction: submissions that arrive while others are being "
            "stored are committed together (group commit).",
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=r,
        )
        self.dispatched = Counter(
            P + "tasks_dispatched_total",
            "Ready nodes of new jobs, by how they reached a worker: `offer` (claimed for an idle "
            "worker in the submission's transaction) or `queue` (pushed to the ready queue).",
            ["via"],
            registry=r,
        )
        self.tasks_running = Gauge(P + "tasks_running", "Attempts running now.", registry=r)
        self.workers_alive = Gauge(
            P + "workers_alive", "Workers that heartbeated within one lease.", registry=r
        )
        self.jobs_active = Gauge(P + "jobs_active", "Jobs still running.", registry=r)
        self.oldest_queued = Gauge(
            P + "oldest_queued_task_age_seconds",
            "Age of the oldest queued attempt: grows when nothing takes work.",
            registry=r,
        )
        self.job_watches = Gauge(
            P + "job_watches",
            "WatchJob streams this scheduler serves (api event streams, all apis).",
            registry=r,
        )
        self.queue_rebuilds = Counter(
            P + "queue_rebuilds_total",
            "Times the ready queue was rebuilt from the store.",
            registry=r,
        )


class WorkerMetrics:
    def __init__(self, r: CollectorRegistry) -> None:
        self.slots_total = Gauge(
            P + "worker_slots", "Commands this worker may run at once.", registry=r
        )
        self.slots_busy = Gauge(P + "worker_slots_busy", "Commands running now.", registry=r)
        self.prefetched = Gauge(
            P + "worker_prefetched",
            "Claimed attempts waiting for a free slot (prefetch).",
            registry=r,
        )
        self.spawn_seconds = Histogram(
            P + "worker_spawn_seconds",
            "Time to spawn a command's process.",
            registry=r,
            buckets=LATENCY_BUCKETS,
        )
        self.tasks_run = Counter(
            P + "worker_tasks_total",
            "Attempts this worker ran, by outcome.",
            ["outcome"],
            registry=r,
        )
        self.heartbeat_failures = Counter(
            P + "worker_heartbeat_failures_total",
            "Heartbeats that did not reach a scheduler.",
            registry=r,
        )
        self.claims = Counter(
            P + "worker_claims_total",
            "Attempts taken: refs popped and claimed (won, lost), or claimed for this worker "
            "by a submission that answered its offer of idle slots (offered).",
            ["result"],
            registry=r,
        )


class ApiMetrics:
    def __init__(self, r: CollectorRegistry) -> None:
        self.requests = Counter(
            P + "http_requests_total",
            "REST requests, by method, route template and status.",
            ["method", "route", "status"],
            registry=r,
        )
        self.duration = Histogram(
            P + "http_request_duration_seconds",
            "REST request duration, by route template.",
            ["method", "route"],
            registry=r,
            buckets=RPC_BUCKETS,
        )
        self.event_streams = Gauge(
            P + "http_event_streams",
            "Open event streams (GET /v1/jobs/{id}/events) of this api.",
            registry=r,
        )


class GrpcMetrics:
    def __init__(self, r: CollectorRegistry) -> None:
        self.server_calls = Counter(
            P + "grpc_server_handled_total",
            "gRPC calls served, by method and status code.",
            ["method", "code"],
            registry=r,
        )
        self.server_seconds = Histogram(
            P + "grpc_server_handling_seconds",
            "gRPC call handling time, by method.",
            ["method"],
            registry=r,
            buckets=RPC_BUCKETS,
        )
        self.client_calls = Counter(
            P + "grpc_client_handled_total",
            "gRPC calls made, by method and status code.",
            ["method", "code"],
            registry=r,
        )
        self.client_seconds = Histogram(
            P + "grpc_client_handling_seconds",
            "gRPC call round-trip time, by method.",
            ["method"],
            registry=r,
            buckets=RPC_BUCKETS,
        )


class Metrics:
    """All metric groups of one process, registered lazily on one registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)

    @cached_property
    def scheduler(self) -> SchedulerMetrics:
        return SchedulerMetrics(self.registry)

    @cached_property
    def worker(self) -> WorkerMetrics:
        return WorkerMetrics(self.registry)

    @cached_property
    def api(self) -> ApiMetrics:
        return ApiMetrics(self.registry)

    @cached_property
    def grpc(self) -> GrpcMetrics:
        return GrpcMetrics(self.registry)
