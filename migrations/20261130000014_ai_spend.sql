-- The daily AI spend cap (`ai.daily_spend_cap_usd`, docs/AI.md) and the attempts it holds back.

-- What the AI provider billed per UTC day, kept by a trigger on the usage ledger so that every
-- process, and every path that records usage, counts in it: checking the cap before a request
-- reads one row instead of summing a day of the ledger.
CREATE TABLE ai_spend_daily (
    day       date             PRIMARY KEY,  -- UTC
    requests  bigint           NOT NULL,
    cost_usd  double precision NOT NULL
);

CREATE FUNCTION ai_spend_daily_add() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO ai_spend_daily AS s (day, requests, cost_usd)
    VALUES ((NEW.created_at AT TIME ZONE 'UTC')::date, 1, NEW.cost_usd)
    ON CONFLICT (day) DO UPDATE
       SET requests = s.requests + 1, cost_usd = s.cost_usd + EXCLUDED.cost_usd;
    RETURN NULL;
END
$$;

CREATE TRIGGER ai_usage_spend_daily AFTER INSERT ON ai_usage
    FOR EACH ROW EXECUTE FUNCTION ai_spend_daily_add();

INSERT INTO ai_spend_daily (day, requests, cost_usd)
SELECT (created_at AT TIME ZONE 'UTC')::date, count(*), sum(cost_usd)
  FROM ai_usage
 GROUP BY 1;

-- snoozed: the handler asked to run again later (the spend cap was reached); not one of the
-- job's attempts.
ALTER TABLE job_attempts DROP CONSTRAINT job_attempts_outcome_check;
ALTER TABLE job_attempts ADD CONSTRAINT job_attempts_outcome_check CHECK (outcome IN
    ('completed', 'failed', 'lost', 'interrupted', 'snoozed'));
