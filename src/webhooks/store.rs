//! The deliveries' table (`webhook_deliveries`) and the routes by kind (`webhook_routes`).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::config::Config;

/// A delivery taken to be sent, with the job as the status view shows it now (without its
/// payload: a webhook tells what became of a job, not what it was asked).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Due {
    pub id: String,
    pub job_id: String,
    pub endpoint: String,
    pub event: String,
    /// This attempt's number, from 1.
    pub attempts: i32,
    /// `None` if the job has left the journal since.
    pub job: Option<serde_json::Value>,
}

/// A delivery as the CLI shows it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct DeliveryRow {
    pub id: String,
    pub job_id: String,
    pub endpoint: String,
    pub event: String,
    pub state: String,
    pub attempts: i32,
    pub last_status: Option<i32>,
    pub last_response: Option<String>,
    pub last_error: Option<String>,
    pub redelivery_of: Option<String>,
    pub created_at: DateTime<Utc>,
    pub next_attempt_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
}

/// Where an attempt leaves its delivery.
#[derive(Debug, Clone)]
pub enum Settled {
    Delivered {
        status: u16,
        response: String,
    },
    /// Tried again at `at`.
    Retry {
        at: DateTime<Utc>,
        status: Option<u16>,
        response: Option<String>,
        error: String,
    },
    Failed {
        status: Option<u16>,
        response: Option<String>,
        error: String,
    },
}

/// Rewrites the routes by kind from this daemon's config (every daemon should have the same
/// endpoints: the last to start wins).
pub async fn sync_routes(pg: &PgPool, config: &Config) -> sqlx::Result<()> {
    let (kinds, endpoints): (Vec<&str>, Vec<&str>) = config
        .webhooks
        .endpoints
        .iter()
        .flat_map(|(name, e)| {
            e.kinds
                .iter()
                .map(move |kind| (kind.as_str(), name.as_str()))
        })
        .unzip();
    let mut tx = pg.begin().await?;
    sqlx::query("DELETE FROM webhook_routes")
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO webhook_routes (kind, endpoint)
         SELECT * FROM UNNEST($1::text[], $2::text[]) ON CONFLICT DO NOTHING",
    )
    .bind(&kinds)
    .bind(&endpoints)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// Takes up to `limit` due deliveries and counts their attempt; each is leased for `lease` (due
/// again after it, if this process dies before recording the outcome).
pub async fn take_due(
    pg: &PgPool,
    limit: i64,
    lease: std::time::Duration,
) -> sqlx::Result<Vec<Due>> {
    sqlx::query_as(
        "WITH due AS (
            SELECT id FROM webhook_deliveries
             WHERE state = 'pending' AND next_attempt_at <= now()
             ORDER BY next_attempt_at
             LIMIT $1
               FOR UPDATE SKIP LOCKED)
         UPDATE webhook_deliveries d
            SET attempts = d.attempts + 1, next_attempt_at = now() + $2::interval,
                updated_at = now()
           FROM due
          WHERE d.id = due.id
      RETURNING d.id, d.job_id, d.endpoint, d.event, d.attempts,
                (SELECT to_jsonb(s) - 'payload' FROM quizworker.job_status_v1 s
                  WHERE s.id = d.job_id) AS job",
    )
    .bind(limit)
    .bind(lease)
    .fetch_all(pg)
    .await
}

/// Records the outcomes of a round of attempts in one statement (one commit for the round,
/// not one per delivery), except of deliveries taken again since (their lease ran out).
pub async fn settle_all(pg: &PgPool, settled: &[(Due, Settled)]) -> sqlx::Result<()> {
    let mut ids = Vec::with_capacity(settled.len());
    let mut attempts = Vec::with_capacity(settled.len());
    let mut states = Vec::with_capacity(settled.len());
    let mut statuses: Vec<Option<i32>> = Vec::with_capacity(settled.len());
    let mut responses: Vec<Option<String>> = Vec::with_capacity(settled.len());
    let mut errors: Vec<Option<String>> = Vec::with_capacity(settled.len());
    let mut next: Vec<Option<DateTime<Utc>>> = Vec::with_capacity(settled.len());
    for (due, outcome) in settled {
        let (state, status, response, error, at) = match outcome {
            Settled::Delivered { status, response } => {
                ("delivered", Some(*status), Some(response), None, None)
            }
            Settled::Retry {
                at,
                status,
                response,
                error,
            } => (
                "pending",
                *status,
                response.as_ref(),
                Some(error),
                Some(*at),
            ),
            Settled::Failed {
                status,
                response,
                error,
            } => ("failed", *status, response.as_ref(), Some(error), None),
        };
        ids.push(due.id.as_str());
        attempts.push(due.attempts);
        states.push(state);
        statuses.push(status.map(i32::from));
        responses.push(response.map(|r| crate::runtime::journal::sanitize_text(r)));
        errors.push(error.map(|e| crate::runtime::journal::sanitize_text(e)));
        next.push(at);
    }
    sqlx::query(
        "UPDATE webhook_deliveries d
            SET state = s.state, last_status = s.status, last_response = s.response,
                last_error = s.error, next_attempt_at = COALESCE(s.next, d.next_attempt_at),
                delivered_at = CASE WHEN s.state = 'delivered' THEN now() END,
                updated_at = now()
           FROM UNNEST($1::text[], $2::int4[], $3::text[], $4::int4[], $5::text[], $6::text[],
                       $7::timestamptz[])
                AS s(id, attempts, state, status, response, error, next)
          WHERE d.id = s.id AND d.attempts = s.attempts",
    )
    .bind(&ids)
    .bind(&attempts)
    .bind(&states)
    .bind(&statuses)
    .bind(&responses)
    .bind(&errors)
    .bind(&next)
    .execute(pg)
    .await?;
    Ok(())
}

/// Which deliveries an operator means; `None` matches all.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    pub job: Option<String>,
    pub state: Option<String>,
}

pub async fn list(
    pg: &PgPool,
    filter: &DeliveryFilter,
    limit: i64,
) -> sqlx::Result<Vec<DeliveryRow>> {
    sqlx::query_as(
        "SELECT id, job_id, endpoint, event, state, attempts, last_status, last_response,
                last_error, redelivery_of, created_at, next_attempt_at, delivered_at
           FROM webhook_deliveries
          WHERE ($1::text IS NULL OR job_id = $1) AND ($2::text IS NULL OR state = $2)
          ORDER BY created_at DESC, id DESC
          LIMIT $3",
    )
    .bind(filter.job.as_deref())
    .bind(filter.state.as_deref())
    .bind(limit)
    .fetch_all(pg)
    .await
}

/// Sends deliveries again, whatever became of them: each gets a new delivery (a new
/// `webhook-id`, due now) that names the one it repeats. Returns (old id, new id) for each
/// delivery found.
pub async fn redeliver(pg: &PgPool, ids: &[String]) -> sqlx::Result<Vec<(String, String)>> {
    let mut tx = pg.begin().await?;
    let made: Vec<(String, String)> = sqlx::query_as(
        "INSERT INTO webhook_deliveries (id, job_id, endpoint, event, redelivery_of)
         SELECT 'msg_' || replace(gen_random_uuid()::text, '-', ''), job_id, endpoint, event, id
           FROM webhook_deliveries WHERE id = ANY($1)
      RETURNING redelivery_of, id",
    )
    .bind(ids)
    .fetch_all(&mut *tx)
    .await?;
    // Wakes the daemons' senders at the commit.
    sqlx::query(concat!(
        "SELECT pg_notify('",
        super::dispatcher::CHANNEL!(),
        "', '')"
    ))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(made)
}
