-- Every statement the SQLite store runs, each under a `-- name: ...` header, with the same
-- names and meaning as the PostgreSQL ones where one statement does the same thing.
-- Parameters use sqlite3's :name style; `:now` is the store's clock in microseconds (UTC).
-- Every write runs on the one writer connection inside BEGIN IMMEDIATE, so reading a row
-- and then changing it needs no row lock; state changes stay compare-and-set on
-- (id, attempt, state) all the same, so that they are fenced whatever runs them.

-- name: insert_job
INSERT INTO jobs (id, name, nodes_total, nodes_unfinished, idempotency_key, request_digest,
                  created_at)
VALUES (:id, :name, :n, :n, :idempotency_key, :digest, :now)
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING created_at;

-- name: job_by_idempotency_key
SELECT id, request_digest FROM jobs WHERE idempotency_key = :key;

-- name: insert_node
INSERT INTO nodes (job_id, node_id, position, name, command, retries, timeout_seconds,
                   idempotency_key, depends_on, env, backoff_base, backoff_factor, backoff_max,
                   deps_pending, state, attempt, enqueued_at)
VALUES (:job, :id, :position, :name, :command, :retries, :timeout_seconds,
        :idempotency_key, :depends_on, :env, :backoff_base, :backoff_factor, :backoff_max,
        :deps_pending, :state, :attempt, :enqueued_at)
RETURNING id, attempt, state, deps_pending;

-- name: insert_edge
INSERT INTO node_edges (parent_id, child_id) VALUES (:parent, :child);

-- name: claim
UPDATE nodes
SET state = 'running', worker_id = :worker, lease_until = :now + :lease,
    deadline_at = :now + CAST(round((timeout_seconds * 1000000) + :lease) AS INTEGER)
WHERE id = :id AND attempt = :attempt AND state = 'queued'
RETURNING id, attempt, job_id, node_id, command, timeout_seconds, env, enqueued_at,
          EXISTS (SELECT 1 FROM node_edges e WHERE e.parent_id = nodes.id) AS has_dependents;

-- name: record_claim
INSERT INTO attempts (node_id, attempt, worker_id, enqueued_at, claimed_at)
VALUES (:id, :attempt, :worker, :enqueued_at, :now);

-- name: release
UPDATE nodes
SET state = 'queued', worker_id = NULL, lease_until = NULL, deadline_at = NULL
WHERE id = :id AND attempt = :attempt AND state = 'running' AND worker_id = :worker
  AND NOT EXISTS (SELECT 1 FROM attempts a
                  WHERE a.node_id = nodes.id AND a.attempt = nodes.attempt
                    AND a.started_at IS NOT NULL)
RETURNING id, attempt;

-- name: forget_attempt
DELETE FROM attempts WHERE node_id = :id AND attempt = :attempt;

-- name: heartbeat
UPDATE nodes SET lease_until = :now + :lease
WHERE id = :id AND attempt = :attempt AND state = 'running' AND worker_id = :worker
RETURNING id, attempt,
          (SELECT cancel_requested_at IS NOT NULL FROM jobs WHERE jobs.id = nodes.job_id)
          AS cancel;

-- name: record_start
UPDATE attempts SET started_at = :started_at
WHERE node_id = :id AND attempt = :attempt AND started_at IS NULL
  AND :started_at IS NOT NULL AND worker_id = :worker;

-- name: worker_seen
INSERT INTO workers (worker_id, last_seen_at, running) VALUES (:worker, :now, :running)
ON CONFLICT (worker_id) DO UPDATE
SET last_seen_at = excluded.last_seen_at, running = excluded.running;

-- name: lock_unlisted
-- Attempts this worker was granted over `grace` ago; those its heartbeat lists are left out
-- by the caller. They are given back at once (not counted against retries).
SELECT n.id, n.job_id, n.node_id, n.attempt, n.givebacks, n.retries, n.idempotency_key,
       n.backoff_base, n.backoff_factor, n.backoff_max, n.worker_id,
       j.cancel_requested_at IS NOT NULL AS cancelled
FROM nodes n JOIN jobs j ON j.id = n.job_id
WHERE n.state = 'running' AND n.worker_id = :worker
  AND n.lease_until < :now + :lease - :grace
ORDER BY n.id;

-- name: already_recorded
-- A report whose compare-and-set failed: is it a retry of one already recorded?
SELECT reason FROM attempts
WHERE node_id = :id AND attempt = :attempt AND worker_id = :worker
  AND finished_at IS NOT NULL;

-- name: succeed_running
UPDATE nodes
SET state = 'succeeded', finished_at = :finished_at, lease_until = NULL, deadline_at = NULL
WHERE id = :id AND attempt = :attempt AND state = 'running' AND worker_id = :worker
RETURNING id, job_id, idempotency_key;

-- name: succeed_cached
UPDATE nodes
SET state = 'succeeded', cached = 1, cached_from = :source, key_wait = 0, finished_at = :now
WHERE id = :id AND state = 'pending' AND deps_pending = 0
RETURNING id, job_id, idempotency_key;

-- name: unblock_children
-- Children with an idempotency key become ready but stay pending: admitted by key.
UPDATE nodes
SET deps_pending = deps_pending - 1,
    state = CASE WHEN deps_pending = 1 AND idempotency_key IS NULL
                 THEN 'queued' ELSE state END,
    attempt = CASE WHEN deps_pending = 1 AND idempotency_key IS NULL
                   THEN 1 ELSE attempt END,
    enqueued_at = CASE WHEN deps_pending = 1 AND idempotency_key IS NULL THEN :now END
WHERE state = 'pending' AND id IN (SELECT child_id FROM node_edges WHERE parent_id = :id)
RETURNING id, attempt, state, deps_pending, idempotency_key;

-- name: keyed_node
SELECT idempotency_key FROM nodes WHERE id = :id AND state = 'pending';

-- name: key_holders
SELECT
    (SELECT COALESCE(cached_from, id) FROM nodes
     WHERE idempotency_key = :key AND id <> :id AND state = 'succeeded'
     ORDER BY finished_at LIMIT 1) AS succeeded,
    EXISTS (SELECT 1 FROM nodes
            WHERE idempotency_key = :key AND id <> :id
              AND state IN ('queued', 'running', 'retry_wait')) AS in_flight;

-- name: queue_keyed
UPDATE nodes SET state = 'queued', attempt = 1, enqueued_at = :now, key_wait = 0
WHERE id = :id AND state = 'pending' AND deps_pending = 0
RETURNING id, attempt;

-- name: wait_keyed
UPDATE nodes SET key_wait = 1 WHERE id = :id AND state = 'pending';

-- name: key_waiters
SELECT id FROM nodes
WHERE idempotency_key = :key AND key_wait AND state = 'pending'
ORDER BY id;

-- name: lock_running
SELECT n.id, n.job_id, n.attempt, n.givebacks, n.retries, n.idempotency_key,
       n.backoff_base, n.backoff_factor, n.backoff_max,
       j.cancel_requested_at IS NOT NULL AS cancelled
FROM nodes n JOIN jobs j ON j.id = n.job_id
WHERE n.id = :id AND n.attempt = :attempt AND n.state = 'running' AND n.worker_id = :worker;

-- name: record_attempt
UPDATE attempts
SET started_at = COALESCE(started_at, :started_at),
    finished_at = COALESCE(:finished_at, :now),
    exit_code = :exit_code, reason = :reason,
    stdout_tail = :stdout_tail, stdout_bytes = :stdout_bytes,
    stderr_tail = :stderr_tail, stderr_bytes = :stderr_bytes
WHERE node_id = :id AND attempt = :attempt
RETURNING enqueued_at;

-- name: node_to_retry_wait
UPDATE nodes
SET state = 'retry_wait', worker_id = NULL, lease_until = NULL, deadline_at = NULL,
    next_attempt_at = :now + :delay, givebacks = givebacks + :given_back
WHERE id = :id;

-- name: node_to_final
UPDATE nodes
SET state = :state, finished_at = :now, worker_id = NULL, lease_until = NULL,
    deadline_at = NULL
WHERE id = :id;

-- name: cascade_upstream_failed
-- Everything downstream of a failed node is still pending (it needed the failed node).
WITH RECURSIVE below(id) AS (
    SELECT child_id FROM node_edges WHERE parent_id = :id
    UNION
    SELECT e.child_id FROM node_edges e JOIN below ON e.parent_id = below.id
)
UPDATE nodes SET state = 'upstream_failed', finished_at = :now
WHERE id IN (SELECT id FROM below) AND state = 'pending'
RETURNING id;

-- name: count_finished
UPDATE jobs
SET nodes_unfinished = nodes_unfinished - :finished, nodes_failed = nodes_failed + :failed
WHERE id = :job
RETURNING id, nodes_unfinished, nodes_failed, cancel_requested_at IS NOT NULL AS cancelled;

-- name: finish_job
UPDATE jobs SET status = :status, finished_at = :now
WHERE id = :job AND status = 'running' AND nodes_unfinished = 0
RETURNING (finished_at - created_at) / 1e6 AS duration;

-- name: requeue_due_retries
UPDATE nodes
SET state = 'queued', attempt = attempt + 1, enqueued_at = :now, next_attempt_at = NULL
WHERE id IN (
    SELECT id FROM nodes
    WHERE state = 'retry_wait' AND next_attempt_at <= :now
    ORDER BY next_attempt_at
    LIMIT :limit
)
RETURNING id, attempt;

-- name: lock_expired
-- Running attempts whose worker stopped renewing the lease, or that are overdue (timeout plus
-- one lease: the worker should have killed and reported them by then).
SELECT n.id, n.job_id, n.node_id, n.attempt, n.givebacks, n.retries, n.idempotency_key,
       n.backoff_base, n.backoff_factor, n.backoff_max, n.worker_id,
       j.cancel_requested_at IS NOT NULL AS cancelled,
       n.deadline_at IS NOT NULL AND n.deadline_at < :now AS overdue
FROM nodes n JOIN jobs j ON j.id = n.job_id
WHERE n.state = 'running' AND (n.lease_until < :now OR n.deadline_at < :now)
ORDER BY n.lease_until
LIMIT :limit;

-- name: queued_tasks
-- A page of the queue's rebuild: a range of nodes_queued_idx from the previous page's last row.
SELECT id, attempt, enqueued_at FROM nodes
WHERE state = 'queued' AND enqueued_at <= :now - :age AND (enqueued_at, id) > (:after_at, :after_id)
ORDER BY enqueued_at, id
LIMIT :limit;

-- name: request_cancel
UPDATE jobs SET cancel_requested_at = :now
WHERE id = :job AND status = 'running' AND cancel_requested_at IS NULL
RETURNING id;

-- name: waiting_nodes
SELECT id, attempt, state, idempotency_key FROM nodes
WHERE job_id = :job AND state IN ('pending', 'queued', 'retry_wait')
ORDER BY id;

-- name: cancel_waiting_nodes
UPDATE nodes
SET state = 'cancelled', finished_at = :now, next_attempt_at = NULL, key_wait = 0
WHERE job_id = :job AND state IN ('pending', 'queued', 'retry_wait');

-- name: job_status
SELECT id, status FROM jobs WHERE id = :job;

-- name: get_job
SELECT id, name, status, created_at, finished_at, nodes_total, cancel_requested_at
FROM jobs WHERE id = :job;

-- name: job_node_counts
SELECT job_id, state, count(*) AS n FROM nodes WHERE job_id = :job GROUP BY state;

-- name: job_nodes
SELECT id, node_id, name, command, state, retries, timeout_seconds, idempotency_key,
       depends_on, attempt, givebacks, enqueued_at, next_attempt_at, worker_id, finished_at,
       cached, cached_from, key_wait
FROM nodes WHERE job_id = :job ORDER BY position;

-- name: job_attempts
SELECT a.node_id, a.attempt, a.worker_id, a.enqueued_at, a.claimed_at, a.started_at,
       a.finished_at, a.exit_code, a.reason, a.stdout_tail, a.stdout_bytes, a.stderr_tail,
       a.stderr_bytes
FROM attempts a JOIN nodes n ON n.id = a.node_id
WHERE n.job_id = :job
ORDER BY a.node_id, a.attempt;

-- name: source_attempt
-- The successful attempt that cached nodes reuse.
SELECT node_id, attempt, worker_id, enqueued_at, claimed_at, started_at, finished_at,
       exit_code, reason, stdout_tail, stdout_bytes, stderr_tail, stderr_bytes
FROM attempts
WHERE node_id = :id AND reason = 'succeeded';

-- name: queue_positions
-- For each queued node of the job: how many queued attempts (of any job) are ahead of it.
SELECT id, ahead FROM (
    SELECT id, job_id, row_number() OVER (ORDER BY enqueued_at, id) - 1 AS ahead
    FROM nodes WHERE state = 'queued'
) WHERE job_id = :job;

-- name: list_jobs
SELECT id, name, status, created_at, finished_at, nodes_total, cancel_requested_at
FROM jobs
WHERE (:status IS NULL OR status = :status)
  AND (:before_created IS NULL OR (created_at, id) < (:before_created, :before_id))
ORDER BY created_at DESC, id DESC
LIMIT :limit;

-- name: stats
SELECT
    (SELECT count(*) FROM nodes WHERE state = 'queued') AS queued,
    (SELECT count(*) FROM nodes WHERE state = 'running') AS running,
    (SELECT count(*) FROM jobs WHERE status = 'running') AS jobs_active,
    (SELECT count(*) FROM workers WHERE last_seen_at > :now - :window) AS workers_alive,
    COALESCE((SELECT (:now - min(enqueued_at)) / 1e6 FROM nodes WHERE state = 'queued'), 0.0)
        AS oldest_queued_age;
