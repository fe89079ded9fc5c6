-- A day's AI spend was one row of `ai_spend_daily`, updated by every usage insert: replies
-- that came back together queued on that row's lock, each holding a pooled connection until
-- the insert before it had committed (the AI bench: 32 replies a round, 2-4 ms to store each).
-- The day is now spread over 16 rows, one per backend (`pg_backend_pid() % 16`, so the
-- connections of one pool rarely share a row), and read as their sum.
ALTER TABLE ai_spend_daily ADD COLUMN shard smallint NOT NULL DEFAULT 0;
ALTER TABLE ai_spend_daily DROP CONSTRAINT ai_spend_daily_pkey;
ALTER TABLE ai_spend_daily ADD PRIMARY KEY (day, shard);
ALTER TABLE ai_spend_daily ALTER COLUMN shard DROP DEFAULT;

CREATE OR REPLACE FUNCTION ai_spend_daily_add() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO ai_spend_daily AS s (day, shard, requests, cost_usd)
    VALUES ((NEW.created_at AT TIME ZONE 'UTC')::date, pg_backend_pid() % 16, 1, NEW.cost_usd)
    ON CONFLICT (day, shard) DO UPDATE
       SET requests = s.requests + 1, cost_usd = s.cost_usd + EXCLUDED.cost_usd;
    RETURN NULL;
END
$$;
