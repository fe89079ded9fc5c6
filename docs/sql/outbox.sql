-- quizworker's outbox: enqueue jobs inside the web tier's own transactions (docs/WEB_TIER.md).
--
-- Run this in the platform's database (the web tier's, not necessarily quizworker's); running it
-- again keeps the table and its rows and replaces the functions:
--   psql "$PLATFORM_DATABASE_URL" -v ON_ERROR_STOP=1 -f docs/sql/outbox.sql
-- then point the daemon at that database (`outbox.url`, env QUIZWORKER_OUTBOX__URL). Enqueue with
--   SELECT quizworker_enqueue('score.attempt', '{"attempt": ...}'::json);
-- in the transaction that writes the rows the job is about: the job exists if and only if that
-- transaction commits. The daemon's relay journals it, then pushes it to Redis, once.
--
-- This file is version 1 of the outbox. It is the daemon's contract with the web tier: a later
-- daemon that needs a change ships a new file that alters this one's objects.

CREATE SCHEMA IF NOT EXISTS quizworker;

-- A ULID (docs/PROTOCOL.md, section 1): 48 bits of Unix time in milliseconds, then 80 random
-- bits, as 26 Crockford base32 digits, upper case. The random bits are those of a version 4
-- UUID that are random (bytes 0-2 and 9-15; its version and variant bits are left out).
CREATE OR REPLACE FUNCTION quizworker.ulid() RETURNS text
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    digits constant text := '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
    ms     constant bigint := floor(extract(epoch FROM clock_timestamp()) * 1000);
    uuid   constant bytea := uuid_send(gen_random_uuid());
    bytes  constant bytea := substring(int8send(ms) FROM 3 FOR 6)
                             || substring(uuid FROM 10 FOR 7) || substring(uuid FROM 1 FOR 3);
    bits   constant bit(130) := B'00' || ('x' || encode(bytes, 'hex'))::bit(128);
    ulid   text := '';
BEGIN
    FOR i IN 0..25 LOOP
        ulid := ulid || substr(digits, substring(bits FROM i * 5 + 1 FOR 5)::int + 1, 1);
    END LOOP;
    RETURN ulid;
END;
$$;

-- One row per job enqueued. Rows stay after they are relayed (`relayed_at`), for the
-- idempotency keys and for looking back, until the relay prunes them (`outbox.keep_relayed`).
CREATE TABLE IF NOT EXISTS quizworker.outbox (
    seq             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- relay order
    id              text        NOT NULL UNIQUE
                    CHECK (id ~ '^[0-7][0-9A-HJKMNP-TV-Z]{25}$'),      -- the job id, a ULID
    kind            text        NOT NULL CHECK (kind <> ''),
    queue           text        NOT NULL
                    CHECK (queue IN ('default', 'scoring', 'emails', 'exports', 'ai', 'indexing')),
    payload         json        NOT NULL,
    idempotency_key text        CHECK (idempotency_key <> ''),
    max_attempts    integer     CHECK (max_attempts BETWEEN 1 AND 1000),
    run_at          timestamptz,                                      -- run no earlier than this
    webhook         text        CHECK (webhook <> ''),                -- a webhook endpoint's name
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    relayed_at      timestamptz,       -- when the daemon journaled it and pushed it to Redis
    duplicate_of    text               -- set instead when its idempotency key was already taken
                                       -- in Redis by this job (enqueued with the script): no
                                       -- job was made
);

-- An idempotency key holds once per queue, as with the script.
CREATE UNIQUE INDEX IF NOT EXISTS outbox_idempotency_key ON quizworker.outbox (queue, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- What the relay reads: the rows not yet relayed, in order.
CREATE INDEX IF NOT EXISTS outbox_waiting ON quizworker.outbox (seq) WHERE relayed_at IS NULL;
-- What pruning reads.
CREATE INDEX IF NOT EXISTS outbox_relayed ON quizworker.outbox (relayed_at) WHERE relayed_at IS NOT NULL;

-- Wakes the relay when a transaction that enqueued commits (one notification per transaction:
-- Postgres folds identical ones). The relay also polls, so nothing waits on this alone.
CREATE OR REPLACE FUNCTION quizworker.outbox_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('quizworker_outbox', '');
    RETURN NULL;
END;
$$;

CREATE OR REPLACE TRIGGER outbox_inserted
    AFTER INSERT ON quizworker.outbox
    FOR EACH STATEMENT EXECUTE FUNCTION quizworker.outbox_notify();

-- Enqueues a job in the caller's transaction and returns its id. `queue` defaults to the kind's
-- queue (the catalogue of docs/PROTOCOL.md, section 2: by the kind's family); a kind of another
-- family needs it named. With an idempotency key already used on the queue, nothing is
-- enqueued and the id returned is the earlier job's (its `duplicate_of` if it had one).
-- The kind and payload are checked when the job runs, as with the script. `webhook` names an
-- endpoint of the daemon's [webhooks.endpoints] to tell when the job completes or fails.
CREATE OR REPLACE FUNCTION quizworker_enqueue(
    kind            text,
    payload         json,
    queue           text        DEFAULT NULL,
    idempotency_key text        DEFAULT NULL,
    run_at          timestamptz DEFAULT NULL,
    max_attempts    integer     DEFAULT NULL,
    webhook         text        DEFAULT NULL
) RETURNS text
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    job_queue text := coalesce(quizworker_enqueue.queue,
                               CASE split_part(quizworker_enqueue.kind, '.', 1)
                                          WHEN 'diag' THEN 'default'
                                          WHEN 'score' THEN 'scoring'
                                          WHEN 'export' THEN 'exports'
                                          WHEN 'email' THEN 'emails'
                                          WHEN 'ai' THEN 'ai'
                                          WHEN 'index' THEN 'indexing'
                                      END);
    job_id    text;
BEGIN
    IF quizworker_enqueue.kind IS NULL OR quizworker_enqueue.kind = '' THEN
        RAISE EXCEPTION 'quizworker_enqueue: kind must be a non-empty string';
    END IF;
    IF quizworker_enqueue.payload IS NULL THEN
        RAISE EXCEPTION 'quizworker_enqueue: payload is missing (pass ''{}''::json for none)';
    END IF;
    IF job_queue IS NULL THEN
        RAISE EXCEPTION 'quizworker_enqueue: no default queue for kind "%": name its queue',
            quizworker_enqueue.kind;
    END IF;
    INSERT INTO quizworker.outbox AS o (id, kind, queue, payload, idempotency_key, max_attempts,
                                        run_at, webhook)
    VALUES (quizworker.ulid(), quizworker_enqueue.kind, job_queue, quizworker_enqueue.payload,
            quizworker_enqueue.idempotency_key, quizworker_enqueue.max_attempts,
            quizworker_enqueue.run_at, quizworker_enqueue.webhook)
    ON CONFLICT (queue, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING o.id INTO job_id;
    IF job_id IS NULL THEN
        SELECT coalesce(o.duplicate_of, o.id) INTO job_id
          FROM quizworker.outbox o
         WHERE o.queue = job_queue AND o.idempotency_key = quizworker_enqueue.idempotency_key;
    END IF;
    RETURN job_id;
END;
$$;
