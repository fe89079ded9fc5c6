-- Leases: a job never runs beside itself. Every daemon process registers here and renews its
-- lease on each heartbeat; the journal refuses a second start of a job whose current attempt
-- belongs to a process whose lease is still fresh (a redelivery after a Redis blip, a re-push
-- that raced another), and maintenance puts back sooner the jobs of a process whose lease ran
-- out (it died).

CREATE TABLE processes (
    name         text PRIMARY KEY,           -- host-pid-ulid; its workers are named name-N
    host         text        NOT NULL,
    pid          integer     NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    lease_until  timestamptz NOT NULL        -- alive while this is in the future
);

-- The process that runs the job's current attempt (NULL for attempts started before leases).
ALTER TABLE jobs ADD COLUMN process text;
