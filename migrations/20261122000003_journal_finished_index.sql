-- Retention deletes finished jobs oldest first, across queues: an index on the finish time lets
-- each of its batches read only the rows it deletes.
CREATE INDEX jobs_finished_at_idx ON jobs (finished_at) WHERE finished_at IS NOT NULL;
