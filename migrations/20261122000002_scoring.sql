-- Scoring: tests (one row per key version), attempts as submitted, their results, the
-- candidates' running statistics and each finalized test's report.

CREATE TABLE score_tests (
    test_id     text        NOT NULL,
    key_version integer     NOT NULL,
    definition  jsonb       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (test_id, key_version)
);

CREATE TABLE score_attempts (
    attempt_id   text PRIMARY KEY,
    test_id      text        NOT NULL,
    candidate_id text,
    attempt      jsonb       NOT NULL,          -- as the web tier submitted it
    submitted_at timestamptz,
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX score_attempts_test_idx ON score_attempts (test_id, attempt_id);

-- One result per attempt: scoring an attempt again replaces it.
CREATE TABLE score_results (
    attempt_id   text PRIMARY KEY REFERENCES score_attempts (attempt_id) ON DELETE CASCADE,
    test_id      text        NOT NULL,
    candidate_id text,
    key_version  integer     NOT NULL,          -- the key the result was scored against
    marks        text        NOT NULL,          -- exact, in lowest terms: "118", "-1/3", "353/6"
    max_marks    text        NOT NULL,
    provisional  boolean     NOT NULL,          -- subjective answers await evaluation
    result       jsonb       NOT NULL,
    rank         integer,                       -- set by score.finalize_test
    percentile   text,                          -- NTA percentile to 7 decimals, likewise
    scored_at    timestamptz NOT NULL DEFAULT now(),
    finalized_at timestamptz
);
CREATE INDEX score_results_test_idx ON score_results (test_id, attempt_id);

-- What each attempt adds to its candidate's statistics, per topic and per section. Scoring an
-- attempt again replaces its rows, so the running totals below never count an attempt twice.
CREATE TABLE score_candidate_contributions (
    attempt_id   text    NOT NULL REFERENCES score_attempts (attempt_id) ON DELETE CASCADE,
    candidate_id text    NOT NULL,
    scope        text    NOT NULL CHECK (scope IN ('topic', 'section')),
    name         text    NOT NULL,
    seen         integer NOT NULL,              -- questions
    judged       integer NOT NULL,              -- answers judged right, wrong or partly right
    correct      integer NOT NULL,
    PRIMARY KEY (attempt_id, scope, name)
);
CREATE INDEX score_candidate_contributions_candidate_idx
    ON score_candidate_contributions (candidate_id);

CREATE VIEW score_candidate_statistics AS
SELECT candidate_id, scope, name,
       count(*)     AS attempts,
       sum(seen)    AS questions_seen,
       sum(judged)  AS judged,
       sum(correct) AS correct,
       CASE WHEN sum(judged) > 0 THEN round(100.0 * sum(correct) / sum(judged), 2) END
                    AS accuracy_percent
  FROM score_candidate_contributions
 GROUP BY candidate_id, scope, name;

CREATE TABLE score_test_reports (
    test_id      text PRIMARY KEY,
    key_version  integer     NOT NULL,
    candidates   integer     NOT NULL,
    statistics   jsonb       NOT NULL,
    finalized_at timestamptz NOT NULL DEFAULT now()
);
