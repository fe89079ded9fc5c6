-- An attempt's row is written only by the journal's statements that take its job id from the
-- job's own row in the same statement, and retention deletes a job's attempts with it
-- (`journal::store::prune`), so the foreign key checked what cannot happen. It cost more than
-- the attempt's insert: the daemon's connections plan every statement afresh (see
-- `commands::connect_postgres`), and so re-planned the check's lookup for every attempt.

ALTER TABLE job_attempts DROP CONSTRAINT job_attempts_job_id_fkey;
