-- The email family (src/families/email/): a ledger of every message the email jobs send, and
-- the addresses that must not be mailed again.

-- One row per message of an email job: recipient 0 for email.send (one message to all of its
-- addresses), the recipient's index for email.bulk. Written before the SMTP transaction
-- (sending) and right after it (sent, failed), so a retry or a restart sends only what was not
-- sent. A row left at 'sending' by a process that died is sent again, with the same message_id.
CREATE TABLE email_deliveries (
    job_id     text        NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    recipient  integer     NOT NULL,
    address    text        NOT NULL,     -- email.send: every envelope recipient, comma-separated
    status     text        NOT NULL CHECK (status IN ('queued', 'sending', 'sent', 'failed', 'suppressed')),
    message_id text        NOT NULL,
    attempt    integer,                  -- the job attempt that last sent or tried it
    reply      text,                     -- the server's last reply, or why it was not sent
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, recipient)
);

-- Addresses not to mail: hard bounces (5xx "no such user") found by sends, and addresses an
-- operator added. Compared lower-cased.
CREATE TABLE email_suppressions (
    address    text        PRIMARY KEY CHECK (address = lower(address)),
    reason     text        NOT NULL CHECK (reason IN ('hard_bounce', 'manual')),
    reply      text,                     -- the server's reply that bounced it
    job_id     text,                     -- the job whose send bounced
    created_at timestamptz NOT NULL DEFAULT now()
);
