-- What an attempt adds to its candidate's statistics moves into its result's row, as a small
-- JSON list: `[{"scope": "section", "name": "physics", "seen": 30, "judged": 25, "correct":
-- 12}, ...]`, one entry per section and topic (NULL for an attempt without a candidate). A row
-- of its own per attempt cost a heap insert, two index inserts, a foreign-key check and five
-- sorted aggregates to build its lists: more than Postgres spent storing the result itself.
-- Rescoring an attempt replaces its result and so its statistics; the view reads as before.

ALTER TABLE score_results ADD COLUMN contributions json;

-- When a result makes its row too long, Postgres compresses its other documents too: with lz4,
-- as the result itself, not the slower default pglz.
ALTER TABLE score_results
    ALTER COLUMN sheet SET COMPRESSION lz4,
    ALTER COLUMN contributions SET COMPRESSION lz4;

UPDATE score_results r
   SET contributions = (
        SELECT json_agg(json_build_object('scope', c.scope, 'name', c.name, 'seen', c.seen,
                                          'judged', c.judged, 'correct', c.correct) ORDER BY c.n)
          FROM score_attempt_contributions a
         CROSS JOIN LATERAL unnest(a.scopes, a.names, a.seen, a.judged, a.correct)
                   WITH ORDINALITY AS c(scope, name, seen, judged, correct, n)
         WHERE a.attempt_id = r.attempt_id)
 WHERE r.candidate_id IS NOT NULL;

DROP VIEW score_candidate_statistics;
DROP TABLE score_attempt_contributions;

CREATE INDEX score_results_candidate_idx ON score_results (candidate_id)
    WHERE candidate_id IS NOT NULL;

CREATE VIEW score_candidate_statistics AS
SELECT r.candidate_id, c.scope, c.name,
       count(*)       AS attempts,
       sum(c.seen)    AS questions_seen,
       sum(c.judged)  AS judged,
       sum(c.correct) AS correct,
       CASE WHEN sum(c.judged) > 0 THEN round(100.0 * sum(c.correct) / sum(c.judged), 2) END
                      AS accuracy_percent
  FROM score_results r
 CROSS JOIN LATERAL json_to_recordset(r.contributions)
           AS c(scope text, name text, seen int4, judged int4, correct int4)
 WHERE r.candidate_id IS NOT NULL
 GROUP BY r.candidate_id, c.scope, c.name;
