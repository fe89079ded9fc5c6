//! The delivery ledger (`email_deliveries`): one row per message of an email job, written
//! before its SMTP transaction and right after it. It is what makes a retry, or a restart
//! after `kill -9`, send to the recipients not yet sent and skip those sent.

use serde::Serialize;
use sqlx::PgPool;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Not sent yet (or refused for now: `reply` says why).
    Queued,
    /// Its SMTP transaction began and no outcome was written: the process may have died during
    /// it. Sent again by the next attempt, with the same Message-ID.
    Sending,
    Sent,
    /// Refused for good: `reply` has the server's answer or why it could not be built.
    Failed,
    /// Not sent: the address is on the suppression list.
    Suppressed,
}

impl Status {
    pub fn is_final(self) -> bool {
        matches!(self, Status::Sent | Status::Failed | Status::Suppressed)
    }
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Delivery {
    pub recipient: i32,
    pub address: String,
    pub status: Status,
    pub message_id: String,
    pub attempt: Option<i32>,
    pub reply: Option<String>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

/// Adds a row per message, `queued`; rows already there (an earlier attempt's) are left as
/// they are.
pub async fn add_queued(
    pg: &PgPool,
    job_id: &str,
    recipients: &[i32],
    addresses: &[String],
    message_ids: &[String],
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO email_deliveries (job_id, recipient, address, status, message_id)
         SELECT $1, r, a, 'queued', m FROM unnest($2::int[], $3::text[], $4::text[]) AS t(r, a, m)
         ON CONFLICT (job_id, recipient) DO NOTHING",
    )
    .bind(job_id)
    .bind(recipients)
    .bind(addresses)
    .bind(message_ids)
    .execute(pg)
    .await?;
    Ok(())
}

/// Every row of a job, by recipient.
pub async fn of_job(pg: &PgPool, job_id: &str) -> sqlx::Result<Vec<Delivery>> {
    sqlx::query_as(
        "SELECT recipient, address, status, message_id, attempt, reply, updated_at
         FROM email_deliveries WHERE job_id = $1 ORDER BY recipient",
    )
    .bind(job_id)
    .fetch_all(pg)
    .await
}

/// Makes a message that was refused or suppressed `queued` again: an `email.send` runs after
/// such an outcome only because an operator retried the job, to send it this time.
pub async fn reopen(pg: &PgPool, job_id: &str, recipient: i32) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE email_deliveries SET status = 'queued', updated_at = now()
         WHERE job_id = $1 AND recipient = $2 AND status IN ('failed', 'suppressed')",
    )
    .bind(job_id)
    .bind(recipient)
    .execute(pg)
    .await?;
    Ok(())
}

/// Marks a message `sending` by this attempt, just before its SMTP transaction. Returns
/// `false` if it is no longer to be sent (an outcome was written meanwhile).
pub async fn begin(pg: &PgPool, job_id: &str, recipient: i32, attempt: u32) -> sqlx::Result<bool> {
    let updated = sqlx::query(
        "UPDATE email_deliveries SET status = 'sending', attempt = $3, updated_at = now()
         WHERE job_id = $1 AND recipient = $2 AND status IN ('queued', 'sending')",
    )
    .bind(job_id)
    .bind(recipient)
    .bind(attempt as i32)
    .execute(pg)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// Writes a message's outcome.
pub async fn record(
    pg: &PgPool,
    job_id: &str,
    recipient: i32,
    status: Status,
    reply: &str,
    attempt: u32,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE email_deliveries SET status = $3, reply = $4, attempt = $5, updated_at = now()
         WHERE job_id = $1 AND recipient = $2",
    )
    .bind(job_id)
    .bind(recipient)
    .bind(status)
    .bind(reply)
    .bind(attempt as i32)
    .execute(pg)
    .await?;
    Ok(())
}

/// How many of a job's messages are in each state.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Counts {
    pub sent: i64,
    pub failed: i64,
    pub suppressed: i64,
    pub pending: i64,
}

pub async fn counts(pg: &PgPool, job_id: &str) -> sqlx::Result<Counts> {
    let (sent, failed, suppressed, pending): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'sent'),
                count(*) FILTER (WHERE status = 'failed'),
                count(*) FILTER (WHERE status = 'suppressed'),
                count(*) FILTER (WHERE status IN ('queued', 'sending'))
         FROM email_deliveries WHERE job_id = $1",
    )
    .bind(job_id)
    .fetch_one(pg)
    .await?;
    Ok(Counts {
        sent,
        failed,
        suppressed,
        pending,
    })
}
