-- Every statement the PostgreSQL store runs, each under a `-- name: ...` header.
-- Parameters use psycopg's %(name)s style. State changes are compare-and-set on
-- (id, attempt, state): the attempt number is the fencing token.

-- name: insert_job
-- A submission in one statement: the job, its nodes (roots queued as attempt 1, roots with an
-- idempotency key left pending for admission by key) and its edges, joined against the rows
-- just inserted (not the table: a join on `nodes` would run on a generic plan that goes
-- quadratic on a large job). A taken idempotency key inserts nothing and returns no row.
-- Roots given a `worker` (an idle worker's offer) are claimed for it here, as `claim` would:
-- running, leased, with their attempt row.
WITH job AS (
    INSERT INTO jobs (id, name, nodes_total, nodes_unfinished, idempotency_key, request_digest)
    VALUES (%(id)s, %(name)s, %(n)s, %(n)s, %(idempotency_key)s, %(digest)s)
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING id, created_at
), inserted AS (
    INSERT INTO nodes (job_id, node_id, position, name, command, retries, timeout_seconds,
                       idempotency_key, depends_on, env, backoff_base, backoff_factor,
                       backoff_max, deps_pending, state, attempt, enqueued_at, worker_id,
                       lease_until, deadline_at)
    SELECT job.id, n.id, n.position, n.name, n.command, n.retries, n.timeout_seconds,
           n.idempotency_key, ARRAY(SELECT jsonb_array_elements_text(n.depends_on)), n.env,
           n.backoff_base, n.backoff_factor, n.backoff_max,
           jsonb_array_length(n.depends_on),
           CASE WHEN n.worker IS NOT NULL THEN 'running' WHEN n.queue THEN 'queued'
                ELSE 'pending' END,
           CASE WHEN n.queue THEN 1 ELSE 0 END,
           CASE WHEN n.queue THEN clock_timestamp() END,
           n.worker,
           CASE WHEN n.worker IS NOT NULL
                THEN clock_timestamp() + make_interval(secs => %(lease)s) END,
           CASE WHEN n.worker IS NOT NULL
                THEN clock_timestamp() + make_interval(secs => n.timeout_seconds + %(lease)s) END
    FROM job, jsonb_to_recordset(%(nodes)s::jsonb) AS n(
        id text, position integer, name text, command text, retries integer,
        timeout_seconds double precision, idempotency_key text, depends_on jsonb, env jsonb,
        backoff_base double precision, backoff_factor double precision,
        backoff_max double precision, queue boolean, worker text)
    RETURNING id, node_id, attempt, state, deps_pending, idempotency_key, worker_id, enqueued_at
), claimed AS (
    INSERT INTO attempts (node_id, attempt, worker_id, enqueued_at, claimed_at)
    SELECT id, attempt, worker_id, enqueued_at, clock_timestamp()
    FROM inserted WHERE state = 'running'
), edges AS (
    INSERT INTO node_edges (parent_id, child_id)
    SELECT p.id, c.id
    FROM unnest(%(parents)s::text[], %(children)s::text[]) AS e(parent, child)
    JOIN inserted p ON p.node_id = e.parent
    JOIN inserted c ON c.node_id = e.child
)
SELECT i.id, i.node_id, i.attempt, i.state, i.deps_pending, i.idempotency_key,
       (SELECT created_at FROM job) AS created_at
FROM inserted i;

-- name: insert_jobs
-- Several submissions in one statement (group commit), as `insert_job` stores each: `jobs` holds
-- (k, id, name, n, idempotency_key, digest), each node names its job, each edge too. A job whose
-- idempotency key is taken (by a committed job or one earlier in `jobs`) inserts nothing and
-- returns no row; the others are unaffected. A lone job still goes through `insert_job`: the
-- joins on the job here cost it 0.02-0.07 ms more (one to five nodes), and 10 ms more (a fifth)
-- for 2,000 nodes. (No percent sign in these comments: psycopg reads them as placeholders.)
WITH jin AS (
    SELECT * FROM jsonb_to_recordset(%(jobs)s::jsonb)
        AS j(k integer, id uuid, name text, n integer, idempotency_key text, digest text)
), job AS (
    INSERT INTO jobs (id, name, nodes_total, nodes_unfinished, idempotency_key, request_digest)
    SELECT id, name, n, n, idempotency_key, digest FROM jin ORDER BY k
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING id, created_at
), inserted AS (
    INSERT INTO nodes (job_id, node_id, position, name, command, retries, timeout_seconds,
                       idempotency_key, depends_on, env, backoff_base, backoff_factor,
                       backoff_max, deps_pending, state, attempt, enqueued_at, worker_id,
                       lease_until, deadline_at)
    SELECT job.id, n.id, n.position, n.name, n.command, n.retries, n.timeout_seconds,
           n.idempotency_key, ARRAY(SELECT jsonb_array_elements_text(n.depends_on)), n.env,
           n.backoff_base, n.backoff_factor, n.backoff_max,
           jsonb_array_length(n.depends_on),
           CASE WHEN n.worker IS NOT NULL THEN 'running' WHEN n.queue THEN 'queued'
                ELSE 'pending' END,
           CASE WHEN n.queue THEN 1 ELSE 0 END,
           CASE WHEN n.queue THEN clock_timestamp() END,
           n.worker,
           CASE WHEN n.worker IS NOT NULL
                THEN clock_timestamp() + make_interval(secs => %(lease)s) END,
           CASE WHEN n.worker IS NOT NULL
                THEN clock_timestamp() + make_interval(secs => n.timeout_seconds + %(lease)s) END
    FROM jsonb_to_recordset(%(nodes)s::jsonb) AS n(
        job uuid, id text, position integer, name text, command text, retries integer,
        timeout_seconds double precision, idempotency_key text, depends_on jsonb, env jsonb,
        backoff_base double precision, backoff_factor double precision,
        backoff_max double precision, queue boolean, worker text)
    JOIN job ON job.id = n.job
    RETURNING id, job_id, node_id, position, attempt, state, deps_pending, idempotency_key,
              worker_id, enqueued_at
), claimed AS (
    INSERT INTO attempts (node_id, attempt, worker_id, enqueued_at, claimed_at)
    SELECT id, attempt, worker_id, enqueued_at, clock_timestamp()
    FROM inserted WHERE state = 'running'
), edges AS (
    INSERT INTO node_edges (parent_id, child_id)
    SELECT p.id, c.id
    FROM unnest(%(edge_jobs)s::uuid[], %(parents)s::text[], %(children)s::text[])
        AS e(job, parent, child)
    JOIN inserted p ON p.job_id = e.job AND p.node_id = e.parent
    JOIN inserted c ON c.job_id = e.job AND c.node_id = e.child
)
SELECT i.job_id, i.id, i.node_id, i.position, i.attempt, i.state, i.deps_pending,
       i.idempotency_key, j.created_at
FROM inserted i JOIN job j ON j.id = i.job_id;

-- name: job_by_idempotency_key
SELECT id, request_digest FROM jobs WHERE idempotency_key = %(key)s;

-- name: claim
-- queued -> running for every requested attempt that is still current; one attempt row each.
WITH claimed AS (
    UPDATE nodes n
    SET state = 'running', worker_id = %(worker)s,
        lease_until = clock_timestamp() + make_interval(secs => %(lease)s),
        deadline_at = clock_timestamp() + make_interval(secs => n.timeout_seconds + %(lease)s)
    FROM unnest(%(ids)s::bigint[], %(attempts)s::integer[]) AS r(id, attempt)
    WHERE n.id = r.id AND n.attempt = r.attempt AND n.state = 'queued'
    RETURNING n.id, n.attempt, n.job_id, n.node_id, n.command, n.timeout_seconds, n.env,
              n.enqueued_at
), recorded AS (
    INSERT INTO attempts (node_id, attempt, worker_id, enqueued_at, claimed_at)
    SELECT id, attempt, %(worker)s, enqueued_at, clock_timestamp() FROM claimed
)
SELECT c.id, c.attempt, c.job_id, c.node_id, c.command, c.timeout_seconds, c.env,
       EXISTS (SELECT 1 FROM node_edges e WHERE e.parent_id = c.id) AS has_dependents
FROM claimed c;

-- name: release
-- Claimed attempts a worker never started (prefetched, then not needed): queued again with
-- the same attempt number, as if never claimed. An attempt that reported a start stays.
WITH released AS (
    UPDATE nodes n
    SET state = 'queued', worker_id = NULL, lease_until = NULL, deadline_at = NULL
    FROM unnest(%(ids)s::bigint[], %(attempts)s::integer[]) AS r(id, attempt)
    WHERE n.id = r.id AND n.attempt = r.attempt AND n.state = 'running'
      AND n.worker_id = %(worker)s
      AND NOT EXISTS (SELECT 1 FROM attempts a
                      WHERE a.node_id = n.id AND a.attempt = n.attempt
                        AND a.started_at IS NOT NULL)
    RETURNING n.id, n.attempt
), forgotten AS (
    DELETE FROM attempts a USING released r
    WHERE a.node_id = r.id AND a.attempt = r.attempt
)
SELECT id, attempt FROM released;

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

-- name: succeed_running
-- The hot path, one statement for a whole batch of reported successes: this head, then
-- `unblock_children`. Records the successes, unblocks children whose last pending
-- dependencies these were, counts the nodes as finished on their jobs.
WITH reported AS (
    SELECT * FROM unnest(
        %(ids)s::bigint[], %(attempts)s::integer[], %(started)s::timestamptz[],
        %(finished)s::timestamptz[], %(codes)s::integer[], %(out)s::text[], %(out_bytes)s::bigint[],
        %(err)s::text[], %(err_bytes)s::bigint[]
    ) AS r(id, attempt, started_at, finished_at, exit_code, stdout_tail, stdout_bytes,
           stderr_tail, stderr_bytes)
), done AS (
    UPDATE nodes n
    SET state = 'succeeded', finished_at = r.finished_at, lease_until = NULL, deadline_at = NULL
    FROM reported r
    WHERE n.id = r.id AND n.attempt = r.attempt AND n.state = 'running'
      AND n.worker_id = %(worker)s
    RETURNING n.id, n.job_id, n.idempotency_key
), recorded AS (
    UPDATE attempts a
    SET started_at = COALESCE(a.started_at, r.started_at), finished_at = r.finished_at,
        exit_code = r.exit_code, reason = 'succeeded',
        stdout_tail = r.stdout_tail, stdout_bytes = r.stdout_bytes,
        stderr_tail = r.stderr_tail, stderr_bytes = r.stderr_bytes
    FROM reported r JOIN done d ON d.id = r.id
    WHERE a.node_id = r.id AND a.attempt = r.attempt
    RETURNING a.node_id, a.enqueued_at
),

-- name: succeed_cached
-- Head for a ready node whose idempotency key already succeeded elsewhere: it succeeds from
-- that node's recorded result without running. Followed by `unblock_children`.
WITH done AS (
    UPDATE nodes
    SET state = 'succeeded', cached = true, cached_from = %(source)s, key_wait = false,
        finished_at = clock_timestamp()
    WHERE id = %(id)s AND state = 'pending' AND deps_pending = 0
    RETURNING id, job_id, idempotency_key
), recorded AS (
    SELECT NULL::bigint AS node_id, NULL::timestamptz AS enqueued_at WHERE false
),

-- name: unblock_children
-- Shared tail of the two heads above (they define `done` and `recorded`): a child loses one
-- pending dependency per parent that succeeded here. Children with an idempotency key become
-- ready but stay pending: the store admits them by key.
unblocked AS (
    SELECT e.child_id, count(*)::integer AS n
    FROM node_edges e JOIN done ON e.parent_id = done.id
    GROUP BY e.child_id
), ready AS (
    UPDATE nodes c
    SET deps_pending = c.deps_pending - u.n,
        state = CASE WHEN c.deps_pending = u.n AND c.idempotency_key IS NULL
                     THEN 'queued' ELSE c.state END,
        attempt = CASE WHEN c.deps_pending = u.n AND c.idempotency_key IS NULL
                       THEN 1 ELSE c.attempt END,
        enqueued_at = CASE WHEN c.deps_pending = u.n AND c.idempotency_key IS NULL
                           THEN clock_timestamp() END
    FROM unblocked u
    WHERE c.id = u.child_id AND c.state = 'pending'
    RETURNING c.id, c.attempt, c.state, c.deps_pending, c.idempotency_key
), per_job AS (
    SELECT job_id, count(*)::integer AS n FROM done GROUP BY job_id
), job AS (
    UPDATE jobs j SET nodes_unfinished = j.nodes_unfinished - p.n
    FROM per_job p WHERE j.id = p.job_id
    RETURNING j.id, j.nodes_unfinished, j.nodes_failed,
              j.cancel_requested_at IS NOT NULL AS cancelled
)
SELECT ARRAY(SELECT node_id FROM recorded ORDER BY node_id) AS recorded_ids,
       ARRAY(SELECT enqueued_at FROM recorded ORDER BY node_id) AS recorded_at,
       ARRAY(SELECT DISTINCT idempotency_key FROM done WHERE idempotency_key IS NOT NULL)
           AS keys,
       ARRAY(SELECT id FROM ready WHERE state = 'queued' ORDER BY id) AS ready_ids,
       ARRAY(SELECT attempt FROM ready WHERE state = 'queued' ORDER BY id) AS ready_attempts,
       ARRAY(SELECT id FROM ready WHERE deps_pending = 0 AND idempotency_key IS NOT NULL
             ORDER BY id) AS keyed_ids,
       ARRAY(SELECT id FROM job WHERE nodes_unfinished = 0 ORDER BY id) AS done_jobs,
       ARRAY(SELECT nodes_failed FROM job WHERE nodes_unfinished = 0 ORDER BY id) AS done_failed,
       ARRAY(SELECT cancelled FROM job WHERE nodes_unfinished = 0 ORDER BY id) AS done_cancelled,
       (SELECT count(*) FROM done)::integer AS succeeded;

-- name: succeed_and_hand
-- A report of successes alone, as one autocommitted statement: a chain step's whole store
-- round trip. It records them as `succeed_running` + `unblock_children` do, claims the first
-- %(room)s children they made ready for the reporting worker as `claim` would (running,
-- leased, an attempt row), and finishes the jobs it leaves with no unfinished node (the rule
-- of `job_status_when_done`: cancelled if a cancel was requested, else failed if a node
-- failed, else succeeded). It applies nothing (`applied` false) when the batch needs the
-- store's other steps: a result that is not current, or a node or child with an idempotency
-- key. Readiness is decided on the row as updated (a concurrent parent may have counted
-- first); when there are more children than room, one freed only by that concurrent parent
-- is queued, not claimed. A declined call costs its round trip: a keyed node's success
-- measured 2.0-2.2 ms against 1.3-1.6 ms on the transaction path alone (the report does not
-- say which nodes hold keys).
WITH reported AS (
    SELECT * FROM unnest(
        %(ids)s::bigint[], %(attempts)s::integer[], %(started)s::timestamptz[],
        %(finished)s::timestamptz[], %(codes)s::integer[], %(out)s::text[], %(out_bytes)s::bigint[],
        %(err)s::text[], %(err_bytes)s::bigint[]
    ) AS r(id, attempt, started_at, finished_at, exit_code, stdout_tail, stdout_bytes,
           stderr_tail, stderr_bytes)
), current AS MATERIALIZED (
    -- The reported nodes that are still this attempt, running for this worker, unkeyed: one
    -- lookup by key each (a small table's estimates once made the generic plan scan every
    -- running node instead, a cost per report that grew with the attempts running anywhere).
    SELECT n.tid FROM reported r
    CROSS JOIN LATERAL (SELECT n.ctid AS tid FROM nodes n
                        WHERE n.id = r.id AND n.attempt = r.attempt AND n.state = 'running'
                          AND n.worker_id = %(worker)s AND n.idempotency_key IS NULL
                        OFFSET 0) n
), simple AS (
    SELECT (SELECT count(*) FROM current) = cardinality(%(ids)s::bigint[])
       AND NOT EXISTS (SELECT 1 FROM node_edges e JOIN nodes c ON c.id = e.child_id
                       WHERE e.parent_id = ANY (%(ids)s::bigint[])
                         AND c.idempotency_key IS NOT NULL) AS ok
), done AS (
    -- By the row versions `current` found: one changed since (a heartbeat, a sweep) is not
    -- updated here, and the store's transaction path judges its result. (`IS NOT FALSE` on a
    -- NOT NULL column is `=`, but keeps the planner off the partial indexes of running nodes,
    -- which stale estimates made it prefer.)
    UPDATE nodes n
    SET state = 'succeeded', finished_at = r.finished_at, lease_until = NULL, deadline_at = NULL
    FROM reported r
    WHERE n.ctid = ANY (ARRAY(SELECT tid FROM current))
      AND n.id = r.id AND n.attempt = r.attempt AND (n.state = 'running') IS NOT FALSE
      AND n.worker_id = %(worker)s AND (SELECT ok FROM simple)
    RETURNING n.id, n.job_id
), recorded AS (
    UPDATE attempts a
    SET started_at = COALESCE(a.started_at, r.started_at), finished_at = r.finished_at,
        exit_code = r.exit_code, reason = 'succeeded',
        stdout_tail = r.stdout_tail, stdout_bytes = r.stdout_bytes,
        stderr_tail = r.stderr_tail, stderr_bytes = r.stderr_bytes
    FROM reported r JOIN done d ON d.id = r.id
    WHERE a.node_id = r.id AND a.attempt = r.attempt
    RETURNING a.node_id, a.enqueued_at
), unblocked AS MATERIALIZED (
    -- Per child: how many of its pending dependencies succeeded here, and whether this
    -- snapshot sees it freed. Every join here and below goes by key from the few rows in hand
    -- (a LATERAL lookup, `= ANY` of an array, a correlated count): a small table's estimates
    -- once made the generic plan scan `nodes` and rescan a subquery per child, quadratic in
    -- the width of a fan-out (1->1,000: 0.4-0.7 s).
    SELECT u.child_id, u.n, c.deps_pending = u.n AS freed
    FROM (SELECT e.child_id, count(*)::integer AS n
          FROM node_edges e JOIN done ON e.parent_id = done.id
          GROUP BY e.child_id) u
    CROSS JOIN LATERAL (SELECT c.deps_pending FROM nodes c
                        WHERE c.id = u.child_id AND c.state = 'pending' OFFSET 0) c
), handing AS MATERIALIZED (
    -- The children that go to the worker if freed: every one when there is room for all (a
    -- fan-in's sink freed only once a concurrent parent's report commits is handed, not
    -- queued), else the first %(room)s this snapshot sees freed, in id order.
    SELECT CASE WHEN (SELECT count(*) FROM unblocked) <= %(room)s
                THEN ARRAY(SELECT child_id FROM unblocked)
                ELSE ARRAY(SELECT child_id FROM unblocked WHERE freed
                           ORDER BY child_id LIMIT %(room)s) END AS ids
), ready AS (
    -- Readiness is decided on the row as updated (a concurrent parent may have counted first).
    UPDATE nodes c
    SET (deps_pending, state, attempt, enqueued_at, worker_id, lease_until, deadline_at) = (
        SELECT c.deps_pending - k.n,
               CASE WHEN c.deps_pending <> k.n THEN c.state
                    WHEN k.hand THEN 'running' ELSE 'queued' END,
               CASE WHEN c.deps_pending = k.n THEN 1 ELSE c.attempt END,
               CASE WHEN c.deps_pending = k.n THEN clock_timestamp() END,
               CASE WHEN c.deps_pending = k.n AND k.hand THEN %(worker)s END,
               CASE WHEN c.deps_pending = k.n AND k.hand
                    THEN clock_timestamp() + make_interval(secs => %(lease)s) END,
               CASE WHEN c.deps_pending = k.n AND k.hand
                    THEN clock_timestamp()
                         + make_interval(secs => c.timeout_seconds + %(lease)s) END
        FROM (SELECT count(*)::integer AS n,
                     c.id = ANY ((SELECT ids FROM handing)::bigint[]) AS hand
              FROM unnest(ARRAY(SELECT id FROM done)) AS d (id)
              CROSS JOIN LATERAL (SELECT FROM node_edges e
                                  WHERE e.parent_id = d.id AND e.child_id = c.id OFFSET 0) e) k
    )
    WHERE c.id = ANY (ARRAY(SELECT child_id FROM unblocked)) AND c.state = 'pending'
    RETURNING c.id, c.attempt, c.state, c.job_id, c.node_id, c.command, c.timeout_seconds,
              c.env, c.enqueued_at
), handed AS (
    INSERT INTO attempts (node_id, attempt, worker_id, enqueued_at, claimed_at)
    SELECT id, attempt, %(worker)s, enqueued_at, clock_timestamp()
    FROM ready WHERE state = 'running'
), per_job AS (
    SELECT job_id, count(*)::integer AS n FROM done GROUP BY job_id
), job AS (
    UPDATE jobs j
    SET nodes_unfinished = j.nodes_unfinished - p.n,
        status = CASE WHEN j.nodes_unfinished > p.n OR j.status <> 'running' THEN j.status
                      WHEN j.cancel_requested_at IS NOT NULL THEN 'cancelled'
                      WHEN j.nodes_failed > 0 THEN 'failed' ELSE 'succeeded' END,
        finished_at = CASE WHEN j.nodes_unfinished > p.n OR j.status <> 'running'
                           THEN j.finished_at ELSE clock_timestamp() END
    FROM per_job p WHERE j.id = p.job_id
    RETURNING j.id, j.status, j.nodes_unfinished,
              extract(epoch FROM j.finished_at - j.created_at)::double precision AS duration
)
SELECT (SELECT ok FROM simple) AS applied,
       ARRAY(SELECT node_id FROM recorded ORDER BY node_id) AS recorded_ids,
       ARRAY(SELECT enqueued_at FROM recorded ORDER BY node_id) AS recorded_at,
       ARRAY(SELECT id FROM ready WHERE state = 'queued' ORDER BY id) AS ready_ids,
       ARRAY(SELECT attempt FROM ready WHERE state = 'queued' ORDER BY id) AS ready_attempts,
       (SELECT coalesce(jsonb_agg(jsonb_build_object(
                   'id', h.id, 'attempt', h.attempt, 'job_id', h.job_id, 'node_id', h.node_id,
                   'command', h.command, 'timeout_seconds', h.timeout_seconds, 'env', h.env,
                   'has_dependents',
                   EXISTS (SELECT 1 FROM node_edges e WHERE e.parent_id = h.id))
               ORDER BY h.id), '[]'::jsonb)
        FROM ready h WHERE h.state = 'running') AS handed,
       ARRAY(SELECT id FROM job WHERE nodes_unfinished = 0 AND duration IS NOT NULL
             ORDER BY id) AS done_jobs,
       ARRAY(SELECT status FROM job WHERE nodes_unfinished = 0 AND duration IS NOT NULL
             ORDER BY id) AS done_status,
       ARRAY(SELECT duration FROM job WHERE nodes_unfinished = 0 AND duration IS NOT NULL
             ORDER BY id) AS done_duration;

-- name: lock_key
-- Serialises every decision about one idempotency key (released at commit).
SELECT pg_advisory_xact_lock(hashtextextended(%(key)s, 0));

-- name: keyed_node
SELECT id, job_id, idempotency_key FROM nodes WHERE id = %(id)s AND state = 'pending';

-- name: key_holders
-- Other nodes with the key: one that succeeded by running (its result is reusable), and
-- whether one is in flight (queued, running or backing off).
SELECT
    (SELECT COALESCE(cached_from, id) FROM nodes
     WHERE idempotency_key = %(key)s AND id <> %(id)s AND state = 'succeeded'
     ORDER BY finished_at LIMIT 1) AS succeeded,
    EXISTS (SELECT 1 FROM nodes
            WHERE idempotency_key = %(key)s AND id <> %(id)s
              AND state IN ('queued', 'running', 'retry_wait')) AS in_flight;

-- name: queue_keyed
UPDATE nodes SET state = 'queued', attempt = 1, enqueued_at = clock_timestamp(), key_wait = false
WHERE id = %(id)s AND state = 'pending' AND deps_pending = 0
RETURNING id, attempt;

-- name: wait_keyed
UPDATE nodes SET key_wait = true WHERE id = %(id)s AND state = 'pending'
RETURNING id;

-- name: key_waiters
SELECT id FROM nodes
WHERE idempotency_key = %(key)s AND key_wait AND state = 'pending'
ORDER BY id;

-- name: lock_running
-- The failure path: lock the attempt's node to decide in Python (domain.states) what follows.
SELECT n.id, n.job_id, n.attempt, n.givebacks, n.retries, n.idempotency_key,
       n.backoff_base, n.backoff_factor, n.backoff_max,
       j.cancel_requested_at IS NOT NULL AS cancelled
FROM nodes n JOIN jobs j ON j.id = n.job_id
WHERE n.id = %(id)s AND n.attempt = %(attempt)s AND n.state = 'running'
  AND n.worker_id = %(worker)s
FOR UPDATE OF n;

-- name: lock_unlisted
-- Attempts this worker was granted over `grace` seconds ago but does not list in its
-- heartbeat: the claim reply was lost, or the worker restarted under the same id. They are
-- given back at once (not counted against retries) rather than a whole lease later.
SELECT n.id, n.job_id, n.node_id, n.attempt, n.givebacks, n.retries, n.idempotency_key,
       n.backoff_base, n.backoff_factor, n.backoff_max, n.worker_id,
       j.cancel_requested_at IS NOT NULL AS cancelled
FROM nodes n JOIN jobs j ON j.id = n.job_id
WHERE n.state = 'running' AND n.worker_id = %(worker)s
  AND NOT (n.id = ANY(%(ids)s::bigint[]))
  AND n.lease_until < clock_timestamp() + make_interval(secs => %(lease)s - %(grace)s)
FOR UPDATE OF n SKIP LOCKED;

-- name: already_recorded
-- A report whose compare-and-set failed: is it a retry of one already recorded?
SELECT reason FROM attempts
WHERE node_id = %(id)s AND attempt = %(attempt)s AND worker_id = %(worker)s
  AND finished_at IS NOT NULL;

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
SET state = 'retry_wait', worker_id = NULL, lease_until = NULL, deadline_at = NULL,
    next_attempt_at = clock_timestamp() + make_interval(secs => %(delay)s),
    givebacks = givebacks + %(given_back)s
WHERE id = %(id)s;

-- name: node_to_final
UPDATE nodes
SET state = %(state)s, finished_at = clock_timestamp(), worker_id = NULL, lease_until = NULL,
    deadline_at = NULL
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

-- name: finish_jobs
-- `finish_job` for several jobs at once (those a report's successes left with no unfinished
-- node): one statement instead of one per job. The durations come back by job id.
UPDATE jobs j SET status = f.status, finished_at = clock_timestamp()
FROM unnest(%(jobs)s::uuid[], %(statuses)s::text[]) AS f(id, status)
WHERE j.id = f.id AND j.status = 'running' AND j.nodes_unfinished = 0
RETURNING j.id, extract(epoch FROM j.finished_at - j.created_at)::double precision AS duration;

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
-- Running attempts whose worker stopped renewing the lease, or that are overdue (timeout plus
-- one lease: the worker should have killed and reported them by then).
SELECT n.id, n.job_id, n.node_id, n.attempt, n.givebacks, n.retries, n.idempotency_key,
       n.backoff_base, n.backoff_factor, n.backoff_max, n.worker_id,
       j.cancel_requested_at IS NOT NULL AS cancelled,
       n.deadline_at IS NOT NULL AND n.deadline_at < clock_timestamp() AS overdue
FROM nodes n JOIN jobs j ON j.id = n.job_id
WHERE n.state = 'running'
  AND (n.lease_until < clock_timestamp() OR n.deadline_at < clock_timestamp())
ORDER BY n.lease_until
LIMIT %(limit)s
FOR UPDATE OF n SKIP LOCKED;

-- name: queued_tasks
-- A page of the queue's rebuild: a range of nodes_queued_idx from the previous page's last row.
SELECT id, attempt, enqueued_at FROM nodes
WHERE state = 'queued' AND enqueued_at <= clock_timestamp() - make_interval(secs => %(age)s)
  AND (enqueued_at, id) > (%(after_at)s::timestamptz, %(after_id)s::bigint)
ORDER BY enqueued_at, id
LIMIT %(limit)s;

-- name: request_cancel
UPDATE jobs SET cancel_requested_at = clock_timestamp()
WHERE id = %(job)s AND status = 'running' AND cancel_requested_at IS NULL
RETURNING id;

-- name: cancel_waiting_nodes
WITH waiting AS (
    SELECT id, attempt, state, idempotency_key FROM nodes
    WHERE job_id = %(job)s AND state IN ('pending', 'queued', 'retry_wait')
    FOR UPDATE
), cancelled AS (
    UPDATE nodes n
    SET state = 'cancelled', finished_at = clock_timestamp(), next_attempt_at = NULL,
        key_wait = false
    FROM waiting w WHERE n.id = w.id
)
SELECT id, attempt, state, idempotency_key FROM waiting;

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
       depends_on, attempt, givebacks, enqueued_at, next_attempt_at, worker_id, finished_at,
       cached, cached_from, key_wait
FROM nodes WHERE job_id = %(job)s ORDER BY position;

-- name: job_attempts
SELECT a.node_id, a.attempt, a.worker_id, a.enqueued_at, a.claimed_at, a.started_at,
       a.finished_at, a.exit_code, a.reason, a.stdout_tail, a.stdout_bytes, a.stderr_tail,
       a.stderr_bytes
FROM attempts a JOIN nodes n ON n.id = a.node_id
WHERE n.job_id = %(job)s
ORDER BY a.node_id, a.attempt;

-- name: source_attempts
-- The successful attempts that cached nodes reuse.
SELECT node_id, attempt, worker_id, enqueued_at, claimed_at, started_at, finished_at,
       exit_code, reason, stdout_tail, stdout_bytes, stderr_tail, stderr_bytes
FROM attempts
WHERE node_id = ANY(%(ids)s::bigint[]) AND reason = 'succeeded';

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

-- name: stale_statistics
-- Our tables that changed by more than %(rows)s rows plus %(fraction)s of their size since
-- they were last analyzed (by us or by autovacuum). A young table grows faster than
-- autovacuum looks at it, and the generic plans cached on every connection were costed for
-- it small: a scan of `nodes` looked cheaper than its keys. ANALYZE replaces those plans.
SELECT s.relname
FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
WHERE s.schemaname = current_schema()
  AND s.relname IN ('jobs', 'nodes', 'node_edges', 'attempts')
  AND s.n_mod_since_analyze > %(rows)s + %(fraction)s * greatest(c.reltuples, 0)
ORDER BY s.relname;

-- name: stats
SELECT
    (SELECT count(*) FROM nodes WHERE state = 'queued') AS queued,
    (SELECT count(*) FROM nodes WHERE state = 'running') AS running,
    (SELECT count(*) FROM jobs WHERE status = 'running') AS jobs_active,
    (SELECT count(*) FROM workers
     WHERE last_seen_at > clock_timestamp() - make_interval(secs => %(window)s)) AS workers_alive,
    COALESCE((SELECT extract(epoch FROM clock_timestamp() - min(enqueued_at))::double precision
              FROM nodes WHERE state = 'queued'), 0) AS oldest_queued_age;

-- name: read_snapshot
-- The first statement of every read: its later statements see one snapshot (a job's row, its
-- node counts and its nodes agree, as watchers of the job compare them), and write nothing.
SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY;
