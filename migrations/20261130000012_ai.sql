-- The AI family (src/families/ai/): hints stored by cache key, the questions whose hints could
-- not be had, and a ledger of every reply the provider billed (which `quizworker ai usage`
-- will read).

-- One row per question content, prompt version and model: the cache key. The same question in
-- a thousand tests is asked once. Kept when the job that generated it is pruned.
CREATE TABLE ai_hints (
    cache_key      text PRIMARY KEY,            -- SHA-256 hex of (question, prompt version, model)
    model          text        NOT NULL,
    prompt_version text        NOT NULL,
    question       jsonb       NOT NULL,        -- as the job that generated the hints gave it
    hints          jsonb       NOT NULL,        -- {"nudge", "method", "near_solution"}
    requests       integer     NOT NULL,        -- requests they took, retries and regenerations included
    input_tokens   bigint      NOT NULL,        -- summed over those requests
    cached_tokens  bigint      NOT NULL,        -- input tokens served from the provider's prompt cache
    output_tokens  bigint      NOT NULL,
    cost_usd       double precision NOT NULL,
    duration_ms    bigint      NOT NULL,        -- from the first request to the hints checked
    job_id         text        NOT NULL,        -- the job that generated them
    created_at     timestamptz NOT NULL DEFAULT now()
);

-- A question of a job whose hints could not be had, with the model's last reply kept for the
-- operator. A retry of the job does not ask again for a question that has a row here.
CREATE TABLE ai_hint_failures (
    job_id         text        NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    question_id    text        NOT NULL,
    attempt        integer     NOT NULL,
    cache_key      text        NOT NULL,
    model          text        NOT NULL,
    prompt_version text        NOT NULL,
    reason         text        NOT NULL CHECK (reason IN
                       ('leak', 'invalid_reply', 'refused', 'content_filter', 'client_error')),
    detail         text        NOT NULL,
    reply          text,                        -- the reply as received (content or error body)
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, question_id)
);

-- One row per reply the provider returned (tokens billed), whatever became of it.
CREATE TABLE ai_usage (
    id             bigserial   PRIMARY KEY,
    job_id         text        NOT NULL,
    kind           text        NOT NULL,        -- ai.hints
    model          text        NOT NULL,
    prompt_version text        NOT NULL,
    outcome        text        NOT NULL CHECK (outcome IN
                       ('answered', 'invalid', 'leak', 'refused', 'filtered')),
    input_tokens   bigint      NOT NULL,
    cached_tokens  bigint      NOT NULL,
    output_tokens  bigint      NOT NULL,
    cost_usd       double precision NOT NULL,
    duration_ms    bigint      NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ai_usage_created_idx ON ai_usage (created_at);
