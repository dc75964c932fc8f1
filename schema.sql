-- minitemporal schema for PostgreSQL. Applied idempotently by every scheduler at start (under an
-- advisory lock) and by `minitemporal db migrate`. PostgreSQL is the only source of truth:
-- everything in Redis can be rebuilt from these tables.

CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer PRIMARY KEY,
    applied_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS jobs (
    id                   uuid PRIMARY KEY,
    name                 text NOT NULL,
    status               text NOT NULL DEFAULT 'running'
                         CHECK (status IN ('running', 'succeeded', 'failed', 'cancelled')),
    created_at           timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at          timestamptz,
    cancel_requested_at  timestamptz,
    nodes_total          integer NOT NULL CHECK (nodes_total > 0),
    -- Nodes not yet in a final state; the job finishes when this reaches 0. Updated in the
    -- same transaction as every node that reaches a final state, so it cannot drift.
    nodes_unfinished     integer NOT NULL CHECK (nodes_unfinished >= 0),
    nodes_failed         integer NOT NULL DEFAULT 0 CHECK (nodes_failed >= 0),
    -- The Idempotency-Key header of the submission, and a digest of its body.
    idempotency_key      text UNIQUE,
    request_digest       text,
    CHECK ((status = 'running') = (finished_at IS NULL)),
    CHECK (status = 'running' OR nodes_unfinished = 0),
    CHECK (idempotency_key IS NULL OR request_digest IS NOT NULL)
);
CREATE INDEX IF NOT EXISTS jobs_created_idx ON jobs (created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS jobs_status_created_idx ON jobs (status, created_at DESC, id DESC);

CREATE TABLE IF NOT EXISTS nodes (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id           uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    node_id          text NOT NULL,          -- the id the user gave the node
    position         integer NOT NULL,       -- its index in the submitted job
    name             text NOT NULL,
    command          text NOT NULL,
    retries          integer NOT NULL CHECK (retries >= 0),
    timeout_seconds  double precision CHECK (timeout_seconds > 0),
    idempotency_key  text,
    depends_on       text[] NOT NULL DEFAULT '{}',
    env              jsonb NOT NULL DEFAULT '[]',
    backoff_base     double precision CHECK (backoff_base >= 0),
    backoff_factor   double precision CHECK (backoff_factor >= 1),
    backoff_max      double precision CHECK (backoff_max >= 0),
    state            text NOT NULL CHECK (state IN ('pending', 'queued', 'running', 'retry_wait',
                     'succeeded', 'failed', 'upstream_failed', 'cancelled')),
    -- The current attempt number: the fencing token every claim, heartbeat and report must
    -- carry. 0 until the node is first queued. Attempts a worker gave back on shutdown
    -- (`givebacks`) do not count against `retries`.
    attempt          integer NOT NULL DEFAULT 0,
    givebacks        integer NOT NULL DEFAULT 0 CHECK (givebacks >= 0),
    deps_pending     integer NOT NULL CHECK (deps_pending >= 0),
    -- Ready, but another node with the same idempotency key is in flight: wait for its result.
    key_wait         boolean NOT NULL DEFAULT false,
    enqueued_at      timestamptz,
    next_attempt_at  timestamptz,
    worker_id        text,
    lease_until      timestamptz,
    -- When a running attempt is overdue even if its worker still heartbeats: the scheduler's
    -- backstop for timeout_seconds.
    deadline_at      timestamptz,
    finished_at      timestamptz,
    -- Succeeded from the recorded result of another node with the same idempotency key.
    cached_from      bigint REFERENCES nodes (id) ON DELETE SET NULL,
    cached           boolean NOT NULL DEFAULT false,
    UNIQUE (job_id, node_id),
    UNIQUE (job_id, position),
    CHECK (attempt >= 0 AND attempt <= retries + 1 + givebacks),
    CHECK (state <> 'queued' OR (attempt >= 1 AND enqueued_at IS NOT NULL AND deps_pending = 0)),
    CHECK (NOT key_wait OR (state = 'pending' AND deps_pending = 0 AND idempotency_key IS NOT NULL)),
    CHECK (state <> 'running' OR (worker_id IS NOT NULL AND lease_until IS NOT NULL)),
    CHECK (state <> 'retry_wait' OR next_attempt_at IS NOT NULL),
    CHECK ((state IN ('succeeded', 'failed', 'upstream_failed', 'cancelled'))
           = (finished_at IS NOT NULL))
);
CREATE INDEX IF NOT EXISTS nodes_queued_idx ON nodes (enqueued_at, id) WHERE state = 'queued';
CREATE INDEX IF NOT EXISTS nodes_retry_idx ON nodes (next_attempt_at) WHERE state = 'retry_wait';
CREATE INDEX IF NOT EXISTS nodes_lease_idx ON nodes (lease_until) WHERE state = 'running';
CREATE INDEX IF NOT EXISTS nodes_deadline_idx ON nodes (deadline_at) WHERE state = 'running';
CREATE INDEX IF NOT EXISTS nodes_idem_idx ON nodes (idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- One row per dependency: parent must succeed before child runs. Both in the same job.
CREATE TABLE IF NOT EXISTS node_edges (
    parent_id  bigint NOT NULL REFERENCES nodes (id) ON DELETE CASCADE,
    child_id   bigint NOT NULL REFERENCES nodes (id) ON DELETE CASCADE,
    PRIMARY KEY (parent_id, child_id),
    CHECK (parent_id <> child_id)
);
CREATE INDEX IF NOT EXISTS node_edges_child_idx ON node_edges (child_id);

-- One row per attempt, created when a worker claims it.
CREATE TABLE IF NOT EXISTS attempts (
    node_id      bigint NOT NULL REFERENCES nodes (id) ON DELETE CASCADE,
    attempt      integer NOT NULL CHECK (attempt >= 1),
    worker_id    text NOT NULL,
    enqueued_at  timestamptz NOT NULL,   -- the scheduler committed the node as queued
    claimed_at   timestamptz NOT NULL,   -- the scheduler granted the claim
    started_at   timestamptz,            -- the worker's child process was spawned
    finished_at  timestamptz,            -- the child exited (or the attempt was given up)
    exit_code    integer,
    reason       text CHECK (reason IN ('succeeded', 'exit_code', 'timeout', 'lost', 'cancelled',
                                        'interrupted')),
    stdout_tail  text NOT NULL DEFAULT '',
    stdout_bytes bigint NOT NULL DEFAULT 0,
    stderr_tail  text NOT NULL DEFAULT '',
    stderr_bytes bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (node_id, attempt),
    CHECK ((reason IS NULL) = (finished_at IS NULL))
);

-- Workers seen recently: heartbeats keep last_seen_at fresh.
CREATE TABLE IF NOT EXISTS workers (
    worker_id     text PRIMARY KEY,
    last_seen_at  timestamptz NOT NULL,
    running       integer NOT NULL DEFAULT 0
);

INSERT INTO schema_migrations (version) VALUES (1) ON CONFLICT DO NOTHING;
