-- minitemporal schema for the embedded SQLite store: the tables, columns and CHECK constraints
-- of the PostgreSQL schema (/schema.sql), adapted. Applied idempotently at every start.
--
-- Adaptations: timestamps are INTEGER microseconds since the Unix epoch, UTC; booleans are
-- 0/1; `depends_on` and `env` are JSON text; job ids are UUID text. Not STRICT: SQLite 3.40's
-- RETURNING computes `col IS NOT NULL` wrongly on STRICT tables when col is NULL.

CREATE TABLE IF NOT EXISTS schema_migrations (
    version     INTEGER PRIMARY KEY,
    applied_at  INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS jobs (
    id                   TEXT PRIMARY KEY,
    name                 TEXT NOT NULL,
    status               TEXT NOT NULL DEFAULT 'running'
                         CHECK (status IN ('running', 'succeeded', 'failed', 'cancelled')),
    created_at           INTEGER NOT NULL,
    finished_at          INTEGER,
    cancel_requested_at  INTEGER,
    nodes_total          INTEGER NOT NULL CHECK (nodes_total > 0),
    -- Nodes not yet in a final state; the job finishes when this reaches 0.
    nodes_unfinished     INTEGER NOT NULL CHECK (nodes_unfinished >= 0),
    nodes_failed         INTEGER NOT NULL DEFAULT 0 CHECK (nodes_failed >= 0),
    -- The Idempotency-Key header of the submission, and a digest of its body.
    idempotency_key      TEXT UNIQUE,
    request_digest       TEXT,
    CHECK ((status = 'running') = (finished_at IS NULL)),
    CHECK (status = 'running' OR nodes_unfinished = 0),
    CHECK (idempotency_key IS NULL OR request_digest IS NOT NULL)
);
CREATE INDEX IF NOT EXISTS jobs_created_idx ON jobs (created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS jobs_status_created_idx ON jobs (status, created_at DESC, id DESC);

CREATE TABLE IF NOT EXISTS nodes (
    -- AUTOINCREMENT: an id is never reused, so a stale queue entry cannot name a new node.
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id           TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    node_id          TEXT NOT NULL,          -- the id the user gave the node
    position         INTEGER NOT NULL,       -- its index in the submitted job
    name             TEXT NOT NULL,
    command          TEXT NOT NULL,
    retries          INTEGER NOT NULL CHECK (retries >= 0),
    timeout_seconds  REAL CHECK (timeout_seconds > 0),
    idempotency_key  TEXT,
    depends_on       TEXT NOT NULL DEFAULT '[]',
    env              TEXT NOT NULL DEFAULT '[]',
    backoff_base     REAL CHECK (backoff_base >= 0),
    backoff_factor   REAL CHECK (backoff_factor >= 1),
    backoff_max      REAL CHECK (backoff_max >= 0),
    state            TEXT NOT NULL CHECK (state IN ('pending', 'queued', 'running', 'retry_wait',
                     'succeeded', 'failed', 'upstream_failed', 'cancelled')),
    -- The fencing token (see /schema.sql); attempts given back do not count against retries.
    attempt          INTEGER NOT NULL DEFAULT 0,
    givebacks        INTEGER NOT NULL DEFAULT 0 CHECK (givebacks >= 0),
    deps_pending     INTEGER NOT NULL CHECK (deps_pending >= 0),
    key_wait         INTEGER NOT NULL DEFAULT 0 CHECK (key_wait IN (0, 1)),
    enqueued_at      INTEGER,
    next_attempt_at  INTEGER,
    worker_id        TEXT,
    lease_until      INTEGER,
    deadline_at      INTEGER,
    finished_at      INTEGER,
    cached_from      INTEGER REFERENCES nodes (id) ON DELETE SET NULL,
    cached           INTEGER NOT NULL DEFAULT 0 CHECK (cached IN (0, 1)),
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
    parent_id  INTEGER NOT NULL REFERENCES nodes (id) ON DELETE CASCADE,
    child_id   INTEGER NOT NULL REFERENCES nodes (id) ON DELETE CASCADE,
    PRIMARY KEY (parent_id, child_id),
    CHECK (parent_id <> child_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS node_edges_child_idx ON node_edges (child_id);

-- One row per attempt, created when a worker claims it.
CREATE TABLE IF NOT EXISTS attempts (
    node_id      INTEGER NOT NULL REFERENCES nodes (id) ON DELETE CASCADE,
    attempt      INTEGER NOT NULL CHECK (attempt >= 1),
    worker_id    TEXT NOT NULL,
    enqueued_at  INTEGER NOT NULL,   -- the scheduler committed the node as queued
    claimed_at   INTEGER NOT NULL,   -- the scheduler granted the claim
    started_at   INTEGER,            -- the worker's child process was spawned
    finished_at  INTEGER,            -- the child exited (or the attempt was given up)
    exit_code    INTEGER,
    reason       TEXT CHECK (reason IN ('succeeded', 'exit_code', 'timeout', 'lost', 'cancelled',
                                        'interrupted')),
    stdout_tail  TEXT NOT NULL DEFAULT '',
    stdout_bytes INTEGER NOT NULL DEFAULT 0,
    stderr_tail  TEXT NOT NULL DEFAULT '',
    stderr_bytes INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (node_id, attempt),
    CHECK ((reason IS NULL) = (finished_at IS NULL))
);  -- with a rowid: output tails make rows too large for WITHOUT ROWID

-- Workers seen recently: heartbeats keep last_seen_at fresh.
CREATE TABLE IF NOT EXISTS workers (
    worker_id     TEXT PRIMARY KEY,
    last_seen_at  INTEGER NOT NULL,
    running       INTEGER NOT NULL DEFAULT 0
);

INSERT INTO schema_migrations (version, applied_at)
VALUES (1, CAST(strftime('%s', 'now') AS INTEGER) * 1000000)
ON CONFLICT DO NOTHING;
