-- The journal: Postgres is quizworker's system of record for every job it has taken off Redis.

CREATE TABLE jobs (
    id               text PRIMARY KEY,          -- the envelope's ULID
    queue            text        NOT NULL,
    kind             text        NOT NULL,
    payload          jsonb       NOT NULL,      -- the envelope's payload, or the raw text of a malformed job
    state            text        NOT NULL CHECK (state IN
                         ('scheduled', 'queued', 'running', 'retrying', 'completed', 'failed', 'cancelled')),
    attempts         integer     NOT NULL DEFAULT 0,
    max_attempts     integer     NOT NULL,
    progress         smallint    NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 100),
    progress_message text,
    result           jsonb,
    last_error       text,
    idempotency_key  text,
    worker           text,                      -- the worker of the latest attempt
    created_at       timestamptz NOT NULL,      -- when the producer made the job
    scheduled_at     timestamptz,               -- when a scheduled or retrying job runs next
    attempted_at     timestamptz,               -- start of the latest attempt
    finished_at      timestamptz,               -- when it reached completed, failed or cancelled
    updated_at       timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX jobs_state_queue_idx ON jobs (state, queue);
CREATE INDEX jobs_queue_finished_idx ON jobs (queue, finished_at) WHERE finished_at IS NOT NULL;

-- One row per ended attempt, written when it ends (the attempt under way is the job row's
-- attempts, worker and attempted_at), so that journaling an attempt costs one insert.
CREATE TABLE job_attempts (
    job_id      text        NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt     integer     NOT NULL,
    worker      text        NOT NULL,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz NOT NULL,
    duration_ms bigint      NOT NULL,
    -- lost: its worker died; interrupted: handed back at shutdown
    outcome     text        NOT NULL CHECK (outcome IN
                    ('completed', 'failed', 'lost', 'interrupted')),
    error       text,
    PRIMARY KEY (job_id, attempt)
);
