-- The journal keeps each job's payload as the text its producer sent (`json`), no longer as
-- `jsonb`. The daemon already read the payload; Postgres only needs to check it is JSON, which
-- costs a fraction of building the binary form: for a 6 KB `score.attempt` payload, `jsonb`'s
-- parse was the largest single cost Postgres had per scoring job. Payloads are written once and
-- read whole (`quizworker jobs show`, retries, recovery); `->`, `->>` and `#>>` work on `json`
-- as they did, only the containment operators (`@>`, `?`) need a cast (`payload::jsonb`).
--
-- This rewrites the table: on a large journal, apply it when the daemon is stopped.

ALTER TABLE jobs
    ALTER COLUMN payload TYPE json USING payload::json,
    ALTER COLUMN payload SET COMPRESSION lz4;

