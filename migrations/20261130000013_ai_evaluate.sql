-- ai.evaluate (src/families/ai/evaluate.rs): the grade of each subjective answer a model
-- graded against its rubric, and the answers it could not grade. The marks themselves go into
-- the attempt (its response's `awarded` and `awarded_by`) and its rescored result.

-- One grade per attempt and question. A retry of the job, or a second job, reuses a grade
-- whose key matches (same answer, rubric, prompt version and model) instead of asking again;
-- a grade under another key (the answer or the rubric changed) is replaced.
CREATE TABLE ai_evaluations (
    attempt_id     text        NOT NULL REFERENCES score_attempts (attempt_id) ON DELETE CASCADE,
    question_id    text        NOT NULL,
    grade_key      text        NOT NULL,        -- SHA-256 hex of what was graded, prompt version, model
    model          text        NOT NULL,
    prompt_version text        NOT NULL,
    awarded        text        NOT NULL,        -- exact, in lowest terms: "7/2"
    max_marks      text        NOT NULL,
    criteria       jsonb       NOT NULL,        -- [{"id", "awarded", "marks", "feedback"}], the rubric's order
    feedback       text        NOT NULL,        -- overall, for the candidate
    requests       integer     NOT NULL,        -- requests it took, asked-again included
    input_tokens   bigint      NOT NULL,
    cached_tokens  bigint      NOT NULL,
    output_tokens  bigint      NOT NULL,
    cost_usd       double precision NOT NULL,
    duration_ms    bigint      NOT NULL,
    job_id         text        NOT NULL,        -- the job that graded it
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (attempt_id, question_id)
);

-- An answer a job could not grade, with the model's last reply kept for the operator. A retry of
-- the job does not ask again for an answer that has a row here; a new job does.
CREATE TABLE ai_evaluation_failures (
    job_id         text        NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    question_id    text        NOT NULL,
    attempt_id     text        NOT NULL,
    attempt        integer     NOT NULL,        -- the job's attempt that failed it
    model          text        NOT NULL,
    prompt_version text        NOT NULL,
    reason         text        NOT NULL CHECK (reason IN
                       ('invalid_reply', 'refused', 'content_filter', 'client_error', 'too_long')),
    detail         text        NOT NULL,
    reply          text,                        -- the reply as received (content or error body)
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, question_id)
);
