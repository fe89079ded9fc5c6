-- The web tier's contract (docs/WEB_TIER.md): a versioned, read-only view of every job, and a
-- notification on every change of a job's state.

-- A schema of its own, so that a web tier's role can be given the contract and nothing else:
--   GRANT USAGE ON SCHEMA quizworker TO web; GRANT SELECT ON quizworker.job_status_v1 TO web;
-- The view reads `jobs` with its owner's rights, so that role needs none on the journal.
CREATE SCHEMA IF NOT EXISTS quizworker;

-- Version 1 of the status contract. Its columns are the keys of `quizworker jobs show --json`
-- (without the attempt history), with the same names and meanings. A later version is a new
-- view beside this one; this one keeps its columns for as long as it exists.
CREATE VIEW quizworker.job_status_v1 AS
SELECT id,
       queue,
       kind,
       state,
       attempts,
       max_attempts,
       progress,
       progress_message,
       last_error AS error,
       result,
       payload,
       idempotency_key,
       worker,
       created_at,
       scheduled_at,
       attempted_at,
       finished_at
  FROM jobs;

-- Every change of a job's state, and every new attempt, is told on the channel
-- `quizworker_job_state` when its transaction commits, as JSON:
-- {"id", "kind", "queue", "state", "attempts"}. The kind is cut to 200 characters (kinds are at
-- most `limits.max_kind_bytes`, 100 by default, but that is a setting), so a payload stays far
-- below NOTIFY's 8,000-byte limit, over which the journal's write itself would fail.
CREATE FUNCTION quizworker.notify_job_state() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('quizworker_job_state', json_build_object(
        'id', NEW.id, 'kind', left(NEW.kind, 200), 'queue', NEW.queue, 'state', NEW.state,
        'attempts', NEW.attempts)::text);
    RETURN NULL;
END;
$$;

CREATE TRIGGER jobs_state_inserted
    AFTER INSERT ON jobs
    FOR EACH ROW EXECUTE FUNCTION quizworker.notify_job_state();

CREATE TRIGGER jobs_state_changed
    AFTER UPDATE OF state, attempts ON jobs
    FOR EACH ROW
    WHEN (OLD.state IS DISTINCT FROM NEW.state OR OLD.attempts IS DISTINCT FROM NEW.attempts)
    EXECUTE FUNCTION quizworker.notify_job_state();

-- Completion webhooks (docs/WEB_TIER.md, section 4). A job's endpoints are those configured for
-- its kind (`webhook_routes`, which each daemon rewrites from its config at start) and the one
-- its envelope names (`jobs.webhook`). When the job completes or fails, one delivery per
-- endpoint is queued here, in the transaction that finishes the job, so none is lost; the
-- daemons send them.
ALTER TABLE jobs ADD COLUMN webhook text;

CREATE TABLE webhook_routes (
    kind     text NOT NULL,
    endpoint text NOT NULL,
    PRIMARY KEY (kind, endpoint)
);

CREATE TABLE webhook_deliveries (
    id              text PRIMARY KEY,             -- the `webhook-id` header
    -- Pruned with its job: maintenance deletes finished jobs after their retention.
    job_id          text        NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    endpoint        text        NOT NULL,         -- a name of [webhooks.endpoints]
    event           text        NOT NULL,         -- job.completed, job.failed
    state           text        NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),  -- due, or leased to a sender till then
    last_status     integer,                      -- the HTTP status of the latest attempt
    last_response   text,                         -- the start of its body
    last_error      text,                         -- why it failed, if it did
    redelivery_of   text,                         -- the delivery an operator sent again
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_job ON webhook_deliveries (job_id);

CREATE FUNCTION quizworker.queue_webhooks() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO webhook_deliveries (id, job_id, endpoint, event)
    SELECT 'msg_' || replace(gen_random_uuid()::text, '-', ''), NEW.id, e.endpoint,
           CASE NEW.state WHEN 'completed' THEN 'job.completed' ELSE 'job.failed' END
      FROM (SELECT r.endpoint FROM webhook_routes r WHERE r.kind = NEW.kind
            UNION
            SELECT NEW.webhook WHERE NEW.webhook IS NOT NULL) e;
    IF FOUND THEN
        PERFORM pg_notify('quizworker_webhooks', '');
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER jobs_finished_webhooks
    AFTER UPDATE OF state ON jobs
    FOR EACH ROW
    WHEN (NEW.state IN ('completed', 'failed') AND OLD.state IS DISTINCT FROM NEW.state)
    EXECUTE FUNCTION quizworker.queue_webhooks();
