-- Every statement the PostgreSQL store runs, each under a `-- name: ...` header.
-- Parameters use psycopg's %(name)s style. State changes are compare-and-set on
-- (id, attempt, state): the attempt number is the fencing token.

-- name: insert_job
INSERT INTO jobs (id, name, nodes_total, nodes_unfinished, idempotency_key, request_digest)
VALUES (%(id)s, %(name)s, %(n)s, %(n)s, %(idempotency_key)s, %(digest)s)
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING id;

-- name: job_by_idempotency_key
SELECT id, request_digest FROM jobs WHERE idempotency_key = %(key)s;

-- name: insert_nodes
-- Roots are queued (attempt 1) in the same statement that creates them.
INSERT INTO nodes (job_id, node_id, position, name, command, retries, timeout_seconds,
                   idempotency_key, depends_on, env, backoff_base, backoff_factor, backoff_max,
                   deps_pending, state, attempt, enqueued_at)
SELECT %(job)s, n.id, n.position, n.name, n.command, n.retries, n.timeout_seconds,
       n.idempotency_key, ARRAY(SELECT jsonb_array_elements_text(n.depends_on)), n.env,
       n.backoff_base, n.backoff_factor, n.backoff_max,
       jsonb_array_length(n.depends_on),
       CASE WHEN jsonb_array_length(n.depends_on) = 0 THEN 'queued' ELSE 'pending' END,
       CASE WHEN jsonb_array_length(n.depends_on) = 0 THEN 1 ELSE 0 END,
       CASE WHEN jsonb_array_length(n.depends_on) = 0 THEN clock_timestamp() END
FROM jsonb_to_recordset(%(nodes)s::jsonb) AS n(
    id text, position integer, name text, command text, retries integer,
    timeout_seconds double precision, idempotency_key text, depends_on jsonb, env jsonb,
    backoff_base double precision, backoff_factor double precision,
    backoff_max double precision)
RETURNING id, attempt, state, enqueued_at, idempotency_key;

-- name: insert_edges
INSERT INTO node_edges (parent_id, child_id)
SELECT p.id, c.id
FROM nodes c
CROSS JOIN LATERAL unnest(c.depends_on) AS d(dep)
JOIN nodes p ON p.job_id = c.job_id AND p.node_id = d.dep
WHERE c.job_id = %(job)s;

-- name: claim
-- queued -> running for every requested attempt that is still current; one attempt row each.
WITH claimed AS (
    UPDATE nodes n
    SET state = 'running', worker_id = %(worker)s,
        lease_until = clock_timestamp() + make_interval(secs => %(lease)s)
    FROM unnest(%(ids)s::bigint[], %(attempts)s::integer[]) AS r(id, attempt)
    WHERE n.id = r.id AND n.attempt = r.attempt AND n.state = 'queued'
    RETURNING n.id, n.attempt, n.job_id, n.node_id, n.command, n.timeout_seconds, n.env,
              n.enqueued_at
), recorded AS (
    INSERT INTO attempts (node_id, attempt, worker_id, enqueued_at, claimed_at)
    SELECT id, attempt, %(worker)s, enqueued_at, clock_timestamp() FROM claimed
)
SELECT id, attempt, job_id, node_id, command, timeout_seconds, env FROM claimed;

-- name: heartbeat
WITH held AS (
    UPDATE nodes n
    SET lease_until = clock_timestamp() + make_interval(secs => %(lease)s)
    FROM unnest(%(ids)s::bigint[], %(attempts)s::integer[]) AS r(id, attempt)
    WHERE n.id = r.id AND n.attempt = r.attempt AND n.state = 'running'
      AND n.worker_id = %(worker)s
    RETURNING n.id, n.attempt, n.job_id
), started AS (
    UPDATE attempts a SET started_at = s.started_at
    FROM unnest(%(ids)s::bigint[], %(attempts)s::integer[], %(started)s::timestamptz[])
         AS s(id, attempt, started_at)
    WHERE a.node_id = s.id AND a.attempt = s.attempt AND a.started_at IS NULL
      AND s.started_at IS NOT NULL AND a.worker_id = %(worker)s
), seen AS (
    INSERT INTO workers (worker_id, last_seen_at, running)
    VALUES (%(worker)s, clock_timestamp(), cardinality(%(ids)s::bigint[]))
    ON CONFLICT (worker_id) DO UPDATE
    SET last_seen_at = excluded.last_seen_at, running = excluded.running
)
SELECT h.id, h.attempt, j.cancel_requested_at IS NOT NULL AS cancel
FROM held h JOIN jobs j ON j.id = h.job_id;

-- name: complete_succeeded
-- The hot path in one round trip: record the success, unblock children whose last pending
-- dependency this was, and count the node as finished on its job.
WITH done AS (
    UPDATE nodes
    SET state = 'succeeded', finished_at = %(finished_at)s, lease_until = NULL
    WHERE id = %(id)s AND attempt = %(attempt)s AND state = 'running' AND worker_id = %(worker)s
    RETURNING id, job_id
), recorded AS (
    UPDATE attempts
    SET started_at = COALESCE(started_at, %(started_at)s), finished_at = %(finished_at)s,
        exit_code = %(exit_code)s, reason = 'succeeded',
        stdout_tail = %(stdout_tail)s, stdout_bytes = %(stdout_bytes)s,
        stderr_tail = %(stderr_tail)s, stderr_bytes = %(stderr_bytes)s
    WHERE node_id = %(id)s AND attempt = %(attempt)s AND EXISTS (SELECT 1 FROM done)
    RETURNING enqueued_at
), ready AS (
    UPDATE nodes c
    SET deps_pending = c.deps_pending - 1,
        state = CASE WHEN c.deps_pending = 1 THEN 'queued' ELSE c.state END,
        attempt = CASE WHEN c.deps_pending = 1 THEN 1 ELSE c.attempt END,
        enqueued_at = CASE WHEN c.deps_pending = 1 THEN clock_timestamp() END
    FROM node_edges e JOIN done ON e.parent_id = done.id
    WHERE c.id = e.child_id AND c.state = 'pending'
    RETURNING c.id, c.attempt, c.state, c.enqueued_at
), job AS (
    UPDATE jobs j SET nodes_unfinished = j.nodes_unfinished - 1
    FROM done WHERE j.id = done.job_id
    RETURNING j.id, j.nodes_unfinished, j.nodes_failed, j.cancel_requested_at IS NOT NULL AS cancelled
)
SELECT (SELECT id FROM job) AS job_id,
       (SELECT enqueued_at FROM recorded) AS enqueued_at,
       (SELECT nodes_unfinished FROM job) AS unfinished,
       (SELECT nodes_failed FROM job) AS failed,
       (SELECT cancelled FROM job) AS cancelled,
       ARRAY(SELECT id FROM ready WHERE state = 'queued' ORDER BY id) AS ready_ids,
       ARRAY(SELECT attempt FROM ready WHERE state = 'queued' ORDER BY id) AS ready_attempts;

-- name: lock_running
-- The failure path: lock the attempt's node to decide in Python (domain.states) what follows.
SELECT n.id, n.job_id, n.attempt, n.retries, n.backoff_base, n.backoff_factor, n.backoff_max,
       j.cancel_requested_at IS NOT NULL AS cancelled
FROM nodes n JOIN jobs j ON j.id = n.job_id
WHERE n.id = %(id)s AND n.attempt = %(attempt)s AND n.state = 'running'
  AND n.worker_id = %(worker)s
FOR UPDATE OF n;

-- name: record_attempt
UPDATE attempts
SET started_at = COALESCE(started_at, %(started_at)s),
    finished_at = COALESCE(%(finished_at)s::timestamptz, clock_timestamp()),
    exit_code = %(exit_code)s, reason = %(reason)s,
    stdout_tail = %(stdout_tail)s, stdout_bytes = %(stdout_bytes)s,
    stderr_tail = %(stderr_tail)s, stderr_bytes = %(stderr_bytes)s
WHERE node_id = %(id)s AND attempt = %(attempt)s
RETURNING enqueued_at;

-- name: node_to_retry_wait
UPDATE nodes
SET state = 'retry_wait', worker_id = NULL,
    next_attempt_at = clock_timestamp() + make_interval(secs => %(delay)s),
    lease_until = NULL
WHERE id = %(id)s;

-- name: node_to_final
UPDATE nodes
SET state = %(state)s, finished_at = clock_timestamp(), worker_id = NULL, lease_until = NULL
WHERE id = %(id)s;

-- name: cascade_upstream_failed
-- Everything downstream of a failed node is still pending (it needed the failed node).
WITH RECURSIVE below(id) AS (
    SELECT child_id FROM node_edges WHERE parent_id = %(id)s
    UNION
    SELECT e.child_id FROM node_edges e JOIN below ON e.parent_id = below.id
)
UPDATE nodes SET state = 'upstream_failed', finished_at = clock_timestamp()
WHERE id IN (SELECT id FROM below) AND state = 'pending'
RETURNING id;

-- name: count_finished
UPDATE jobs
SET nodes_unfinished = nodes_unfinished - %(finished)s, nodes_failed = nodes_failed + %(failed)s
WHERE id = %(job)s
RETURNING id, nodes_unfinished, nodes_failed, cancel_requested_at IS NOT NULL AS cancelled;

-- name: finish_job
UPDATE jobs SET status = %(status)s, finished_at = clock_timestamp()
WHERE id = %(job)s AND status = 'running' AND nodes_unfinished = 0
RETURNING extract(epoch FROM finished_at - created_at)::double precision AS duration;

-- name: requeue_due_retries
UPDATE nodes
SET state = 'queued', attempt = attempt + 1, enqueued_at = clock_timestamp(),
    next_attempt_at = NULL
WHERE id IN (
    SELECT id FROM nodes
    WHERE state = 'retry_wait' AND next_attempt_at <= clock_timestamp()
    ORDER BY next_attempt_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
RETURNING id, attempt, enqueued_at;

-- name: lock_expired
SELECT n.id, n.job_id, n.attempt, n.retries, n.backoff_base, n.backoff_factor, n.backoff_max,
       n.worker_id, j.cancel_requested_at IS NOT NULL AS cancelled
FROM nodes n JOIN jobs j ON j.id = n.job_id
WHERE n.state = 'running' AND n.lease_until < clock_timestamp()
ORDER BY n.lease_until
LIMIT %(limit)s
FOR UPDATE OF n SKIP LOCKED;

-- name: queued_tasks
SELECT id, attempt, enqueued_at FROM nodes
WHERE state = 'queued' AND enqueued_at <= clock_timestamp() - make_interval(secs => %(age)s)
ORDER BY enqueued_at, id
LIMIT %(limit)s;

-- name: request_cancel
UPDATE jobs SET cancel_requested_at = clock_timestamp()
WHERE id = %(job)s AND status = 'running' AND cancel_requested_at IS NULL
RETURNING id;

-- name: cancel_waiting_nodes
WITH waiting AS (
    SELECT id, attempt, state FROM nodes
    WHERE job_id = %(job)s AND state IN ('pending', 'queued', 'retry_wait')
    FOR UPDATE
), cancelled AS (
    UPDATE nodes n
    SET state = 'cancelled', finished_at = clock_timestamp(), next_attempt_at = NULL
    FROM waiting w WHERE n.id = w.id
)
SELECT id, attempt, state FROM waiting;

-- name: job_status
SELECT id, status FROM jobs WHERE id = %(job)s;

-- name: get_job
SELECT id, name, status, created_at, finished_at, nodes_total, cancel_requested_at
FROM jobs WHERE id = %(job)s;

-- name: job_node_counts
SELECT job_id, state, count(*) AS n FROM nodes
WHERE job_id = ANY(%(jobs)s::uuid[])
GROUP BY job_id, state;

-- name: job_nodes
SELECT id, node_id, name, command, state, retries, timeout_seconds, idempotency_key,
       depends_on, attempt, enqueued_at, next_attempt_at, worker_id, finished_at, cached
FROM nodes WHERE job_id = %(job)s ORDER BY position;

-- name: job_attempts
SELECT a.node_id, a.attempt, a.worker_id, a.enqueued_at, a.claimed_at, a.started_at,
       a.finished_at, a.exit_code, a.reason, a.stdout_tail, a.stdout_bytes, a.stderr_tail,
       a.stderr_bytes
FROM attempts a JOIN nodes n ON n.id = a.node_id
WHERE n.job_id = %(job)s
ORDER BY a.node_id, a.attempt;

-- name: queue_positions
-- For each queued node of the job: how many queued attempts (of any job) are ahead of it.
SELECT id, ahead FROM (
    SELECT id, job_id, row_number() OVER (ORDER BY enqueued_at, id) - 1 AS ahead
    FROM nodes WHERE state = 'queued'
) q WHERE job_id = %(job)s;

-- name: list_jobs
SELECT id, name, status, created_at, finished_at, nodes_total, cancel_requested_at
FROM jobs
WHERE (%(status)s::text IS NULL OR status = %(status)s)
  AND (%(before_created)s::timestamptz IS NULL
       OR (created_at, id) < (%(before_created)s, %(before_id)s::uuid))
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s;
