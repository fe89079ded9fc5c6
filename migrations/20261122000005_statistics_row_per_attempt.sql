-- What an attempt adds to its candidate's statistics, as one row per attempt with a list per
-- column instead of one row per attempt and section or topic. Every row costs a heap insert,
-- two index inserts and a foreign-key check; an attempt of a 90-question test with 15 topics
-- wrote 18 of them. The view reads the same as before.

CREATE TABLE score_attempt_contributions (
    attempt_id   text    PRIMARY KEY REFERENCES score_attempts (attempt_id) ON DELETE CASCADE,
    candidate_id text    NOT NULL,
    -- One entry per section and topic, in the same order in every column.
    scopes       text[]  NOT NULL CHECK (scopes <@ ARRAY['topic', 'section']),
    names        text[]  NOT NULL,
    seen         int4[]  NOT NULL,              -- questions
    judged       int4[]  NOT NULL,              -- answers judged right, wrong or partly right
    correct      int4[]  NOT NULL
);
CREATE INDEX score_attempt_contributions_candidate_idx
    ON score_attempt_contributions (candidate_id);

INSERT INTO score_attempt_contributions
SELECT attempt_id, min(candidate_id), array_agg(scope ORDER BY scope, name),
       array_agg(name ORDER BY scope, name), array_agg(seen ORDER BY scope, name),
       array_agg(judged ORDER BY scope, name), array_agg(correct ORDER BY scope, name)
  FROM score_candidate_contributions
 GROUP BY attempt_id;

DROP VIEW score_candidate_statistics;
DROP TABLE score_candidate_contributions;

CREATE VIEW score_candidate_statistics AS
SELECT a.candidate_id, c.scope, c.name,
       count(*)       AS attempts,
       sum(c.seen)    AS questions_seen,
       sum(c.judged)  AS judged,
       sum(c.correct) AS correct,
       CASE WHEN sum(c.judged) > 0 THEN round(100.0 * sum(c.correct) / sum(c.judged), 2) END
                      AS accuracy_percent
  FROM score_attempt_contributions a
 CROSS JOIN LATERAL unnest(a.scopes, a.names, a.seen, a.judged, a.correct)
           AS c(scope, name, seen, judged, correct)
 GROUP BY a.candidate_id, c.scope, c.name;
