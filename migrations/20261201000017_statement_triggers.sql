-- The web tier's notifications and webhook deliveries (migration `web_tier`), from triggers
-- that run once per statement instead of once per row.
--
-- Why: the journal writes jobs in batches of hundreds of rows per statement. As row triggers,
-- each row of each batch ran a PL/pgSQL function, and the webhook function's query (with a
-- UNION that folds away when the job names no endpoint) was planned again for every finished
-- job: the throughput bench spent a quarter of all CPU in these triggers, and the daemon
-- drained a backlog a third slower than before the web tier. As statement triggers, one call
-- and one plan serve the whole batch. What they send is unchanged: one notification per state
-- change or new attempt, one delivery per endpoint of a job that completes or fails.

DROP TRIGGER jobs_state_inserted ON jobs;
DROP TRIGGER jobs_state_changed ON jobs;
DROP TRIGGER jobs_finished_webhooks ON jobs;
DROP FUNCTION quizworker.notify_job_state();
DROP FUNCTION quizworker.queue_webhooks();

-- The message told on `quizworker_job_state` (docs/WEB_TIER.md, section 3), unchanged. The kind
-- is cut to 200 characters so that a message stays far below NOTIFY's 8,000-byte limit (see
-- migration `web_tier`). A one-statement SQL function: Postgres inlines it into the queries
-- below.
CREATE FUNCTION quizworker.job_state_message(job jobs) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT json_build_object('id', job.id, 'kind', left(job.kind, 200), 'queue', job.queue,
                             'state', job.state, 'attempts', job.attempts)::text
$$;

-- A job that enters the journal: as it arrives, as a worker takes one the journal has not seen,
-- or as the outbox relay writes it.
CREATE FUNCTION quizworker.jobs_inserted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('quizworker_job_state', quizworker.job_state_message(n)) FROM inserted n;
    RETURN NULL;
END;
$$;

-- A statement that updated jobs (an `INSERT ... ON CONFLICT DO UPDATE` counts): each row whose
-- state or attempts changed is told, and each job that now completed or failed gets a delivery
-- per endpoint of its kind (`webhook_routes`) and per the one its envelope names.
CREATE FUNCTION quizworker.jobs_updated() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- Old and new rows are matched with `NOT IN`, which Postgres runs as a hash lookup at any
    -- size, not with a join: PL/pgSQL keeps the plan made for the first batch, and a join
    -- planned for a batch of one row is a nested loop that compares every pair of a later
    -- batch (250,000 for 500 rows).
    PERFORM pg_notify('quizworker_job_state', quizworker.job_state_message(n))
       FROM updated_new n
      WHERE (n.id, n.state, n.attempts) NOT IN (SELECT id, state, attempts FROM updated_old);

    IF NOT EXISTS (SELECT 1 FROM webhook_routes)
       AND NOT EXISTS (SELECT 1 FROM updated_new WHERE webhook IS NOT NULL) THEN
        RETURN NULL;
    END IF;
    INSERT INTO webhook_deliveries (id, job_id, endpoint, event)
    SELECT 'msg_' || replace(gen_random_uuid()::text, '-', ''), n.id, e.endpoint,
           CASE n.state WHEN 'completed' THEN 'job.completed' ELSE 'job.failed' END
      FROM updated_new n
     CROSS JOIN LATERAL (SELECT r.endpoint FROM webhook_routes r WHERE r.kind = n.kind
                         UNION
                         SELECT n.webhook WHERE n.webhook IS NOT NULL) e
     WHERE n.state IN ('completed', 'failed')
       AND (n.id, n.state) NOT IN (SELECT id, state FROM updated_old);
    IF FOUND THEN
        PERFORM pg_notify('quizworker_webhooks', '');
    END IF;
    RETURN NULL;
END;
$$;

-- Transition tables cannot be limited to some columns (`UPDATE OF state`), so every update of
-- `jobs` runs the function; one that changes no state (progress) finds nothing to tell.
CREATE TRIGGER jobs_inserted
    AFTER INSERT ON jobs
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION quizworker.jobs_inserted();

CREATE TRIGGER jobs_updated
    AFTER UPDATE ON jobs
    REFERENCING OLD TABLE AS updated_old NEW TABLE AS updated_new
    FOR EACH STATEMENT EXECUTE FUNCTION quizworker.jobs_updated();
