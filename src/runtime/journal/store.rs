//! The operator's queries and changes on the journal: listing, showing, retrying, cancelling
//! and counting jobs. The daemon's own writes are in `writer`.

use anyhow::Context;
use chrono::{DateTime, Utc};
use quizworker_jobs::{ENVELOPE_VERSION, Envelope, Queue};
use serde::Serialize;
use sqlx::PgPool;

use super::JobState;
use super::stored_json::StoredJson;

/// A job as the CLI shows it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct JobRow {
    pub id: String,
    pub queue: String,
    pub kind: String,
    pub state: String,
    pub attempts: i32,
    pub max_attempts: i32,
    pub progress: i16,
    pub progress_message: Option<String>,
    #[serde(rename = "error")]
    pub last_error: Option<String>,
    pub result: Option<StoredJson>,
    pub payload: StoredJson,
    pub idempotency_key: Option<String>,
    pub worker: Option<String>,
    pub created_at: DateTime<Utc>,
    pub scheduled_at: Option<DateTime<Utc>>,
    pub attempted_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl JobRow {
    /// The job's envelope, rebuilt from the journal for re-pushing, and its queue.
    pub fn envelope(&self) -> anyhow::Result<(Queue, Envelope)> {
        let queue: Queue = self.queue.parse()?;
        let envelope = Envelope {
            v: ENVELOPE_VERSION,
            id: self
                .id
                .parse()
                .with_context(|| format!("job id {} is not a ULID", self.id))?,
            kind: self.kind.clone(),
            payload: self.payload.raw().to_owned(),
            created_at: self.created_at,
            idempotency_key: self.idempotency_key.clone(),
            max_attempts: u32::try_from(self.max_attempts).ok(),
            run_at: None,
            // The journal keeps it in its own column, which a re-push leaves as it is.
            webhook: None,
        };
        Ok((queue, envelope))
    }
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct AttemptRow {
    pub attempt: i32,
    pub worker: String,
    pub started_at: DateTime<Utc>,
    /// `None` for the attempt under way.
    pub finished_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<i64>,
    pub outcome: String,
    pub error: Option<String>,
}

/// Which jobs an operator means; `None` matches everything.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub state: Option<JobState>,
    pub queue: Option<String>,
    pub kind: Option<String>,
}

/// The columns of [`JobRow`]; a macro so that queries stay static strings.
macro_rules! job_columns {
    () => {
        "id, queue, kind, state, attempts, max_attempts, progress, progress_message, last_error, \
         result, payload, idempotency_key, worker, created_at, scheduled_at, attempted_at, \
         finished_at"
    };
}

pub async fn list(pool: &PgPool, filter: &JobFilter, limit: i64) -> sqlx::Result<Vec<JobRow>> {
    sqlx::query_as(concat!(
        "SELECT ",
        job_columns!(),
        " FROM jobs
          WHERE ($1::text IS NULL OR state = $1)
            AND ($2::text IS NULL OR queue = $2)
            AND ($3::text IS NULL OR kind = $3)
          ORDER BY created_at DESC, id DESC
          LIMIT $4"
    ))
    .bind(filter.state.map(JobState::as_str))
    .bind(filter.queue.as_deref())
    .bind(filter.kind.as_deref())
    .bind(limit)
    .fetch_all(pool)
    .await
}

pub async fn get(pool: &PgPool, id: &str) -> sqlx::Result<Option<JobRow>> {
    sqlx::query_as(concat!(
        "SELECT ",
        job_columns!(),
        " FROM jobs WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// Every attempt of a job, the one under way included.
pub async fn attempts(pool: &PgPool, id: &str) -> sqlx::Result<Vec<AttemptRow>> {
    sqlx::query_as(
        "SELECT attempt, worker, started_at, finished_at, duration_ms, outcome, error
           FROM job_attempts WHERE job_id = $1
         UNION ALL
         SELECT attempts, COALESCE(worker, ''), attempted_at, NULL, NULL, 'running', NULL
           FROM jobs WHERE id = $1 AND state = 'running' AND attempted_at IS NOT NULL
          ORDER BY attempt",
    )
    .bind(id)
    .fetch_all(pool)
    .await
}

/// The ids of the jobs a bulk retry would touch.
pub async fn ids_matching(pool: &PgPool, filter: &JobFilter) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(
        "SELECT id FROM jobs
          WHERE ($1::text IS NULL OR state = $1)
            AND ($2::text IS NULL OR queue = $2)
            AND ($3::text IS NULL OR kind = $3)
          ORDER BY id",
    )
    .bind(filter.state.map(JobState::as_str))
    .bind(filter.queue.as_deref())
    .bind(filter.kind.as_deref())
    .fetch_all(pool)
    .await
}

/// Moves failed or cancelled jobs back to queued, each with at least one attempt left, and
/// returns them so the caller can push them to Redis. Jobs in other states are left alone.
///
/// Call it in a transaction and push before committing: until then, maintenance still reads
/// the jobs as failed and does not push them too, and a worker that takes one waits for the
/// commit to start it.
pub async fn mark_for_retry(
    tx: &mut sqlx::PgConnection,
    ids: &[String],
) -> sqlx::Result<Vec<JobRow>> {
    sqlx::query_as(concat!(
        "UPDATE jobs
            SET state = 'queued', max_attempts = GREATEST(max_attempts, attempts + 1),
                finished_at = NULL, scheduled_at = NULL, updated_at = now()
          WHERE id = ANY($1) AND state IN ('failed', 'cancelled')
      RETURNING ",
        job_columns!()
    ))
    .bind(ids)
    .fetch_all(tx)
    .await
}

/// Cancels a job that has not finished; returns its queue, or `None` when there was nothing
/// to cancel.
pub async fn cancel(pool: &PgPool, id: &str) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar(
        "UPDATE jobs SET state = 'cancelled', finished_at = now(), scheduled_at = NULL,
                         updated_at = now()
          WHERE id = $1 AND state NOT IN ('completed', 'failed', 'cancelled')
      RETURNING queue",
    )
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// Records that a job waiting for its time (`scheduled` or `retrying`) was made due now by an
/// operator; a job that has started meanwhile is left alone.
pub async fn mark_due(pool: &PgPool, id: &str) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE jobs SET scheduled_at = now(), updated_at = now()
          WHERE id = $1 AND state IN ('scheduled', 'retrying')",
    )
    .bind(id)
    .execute(pool)
    .await?;
    Ok(())
}

/// Journals a job just enqueued as waiting (queued, or scheduled if its run time is still to
/// come), so that the journal can put it back in Redis if Redis loses it. A job a worker has
/// already taken is left alone.
pub async fn insert_waiting(
    pool: &PgPool,
    queue: &str,
    envelope: &Envelope,
    max_attempts: u32,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO jobs (id, queue, kind, payload, state, max_attempts, idempotency_key,
                           created_at, scheduled_at, webhook)
         VALUES ($1, $2, $3, $4::json,
                 CASE WHEN $8::timestamptz > now() THEN 'scheduled' ELSE 'queued' END,
                 $5, $6, $7, $8, $9)
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(envelope.id.to_string())
    .bind(queue)
    .bind(super::sanitize_text(&envelope.kind))
    .bind(super::json_text(envelope.payload.get()))
    .bind(i32::try_from(max_attempts).unwrap_or(i32::MAX))
    .bind(envelope.idempotency_key.as_deref())
    .bind(envelope.created_at)
    .bind(envelope.run_at)
    .bind(envelope.webhook.as_deref().map(super::sanitize_text))
    .execute(pool)
    .await?;
    Ok(())
}

/// A job to journal as waiting: its queue, its envelope and its attempt limit.
pub struct Waiting<'a> {
    pub queue: Queue,
    pub envelope: &'a Envelope,
    pub max_attempts: u32,
}

/// [`insert_waiting`] for many jobs in one statement. Jobs the journal already has (a worker
/// took one first, an operator cancelled it) are left alone.
pub async fn insert_waiting_many(
    conn: &mut sqlx::PgConnection,
    jobs: &[Waiting<'_>],
) -> sqlx::Result<()> {
    if jobs.is_empty() {
        return Ok(());
    }
    let ids: Vec<String> = jobs.iter().map(|j| j.envelope.id.to_string()).collect();
    let queues: Vec<&str> = jobs.iter().map(|j| j.queue.name()).collect();
    let kinds: Vec<String> = jobs
        .iter()
        .map(|j| super::sanitize_text(&j.envelope.kind))
        .collect();
    let payloads: Vec<String> = jobs
        .iter()
        .map(|j| super::json_text(j.envelope.payload.get()))
        .collect();
    let limits: Vec<i32> = jobs
        .iter()
        .map(|j| i32::try_from(j.max_attempts).unwrap_or(i32::MAX))
        .collect();
    let keys: Vec<Option<String>> = jobs
        .iter()
        .map(|j| {
            j.envelope
                .idempotency_key
                .as_deref()
                .map(super::sanitize_text)
        })
        .collect();
    let created: Vec<DateTime<Utc>> = jobs.iter().map(|j| j.envelope.created_at).collect();
    let run_at: Vec<Option<DateTime<Utc>>> = jobs.iter().map(|j| j.envelope.run_at).collect();
    let webhooks: Vec<Option<String>> = jobs
        .iter()
        .map(|j| j.envelope.webhook.as_deref().map(super::sanitize_text))
        .collect();
    sqlx::query(
        "INSERT INTO jobs (id, queue, kind, payload, state, max_attempts, idempotency_key,
                           created_at, scheduled_at, webhook)
         SELECT id, queue, kind, payload::json,
                CASE WHEN run_at > now() THEN 'scheduled' ELSE 'queued' END,
                max_attempts, idempotency_key, created_at, run_at, webhook
           FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::int4[], $6::text[],
                       $7::timestamptz[], $8::timestamptz[], $9::text[])
                AS t(id, queue, kind, payload, max_attempts, idempotency_key, created_at, run_at,
                     webhook)
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(&ids)
    .bind(&queues)
    .bind(&kinds)
    .bind(&payloads)
    .bind(&limits)
    .bind(&keys)
    .bind(&created)
    .bind(&run_at)
    .bind(&webhooks)
    .execute(conn)
    .await?;
    Ok(())
}

/// A job maintenance may put back in Redis, as it was when read.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RecoveryCandidate {
    #[sqlx(flatten)]
    pub job: JobRow,
    pub updated_at: DateTime<Utc>,
}

/// Jobs the journal says are waiting in Redis (queued, scheduled, retrying), and jobs it says
/// are running but that no live process runs: their process' lease ran out, or their attempt
/// started longer ago than `stale_after` (its timeout and more). After `after` in id order.
pub async fn should_be_in_redis(
    pool: &PgPool,
    queue: &str,
    stale_after: std::time::Duration,
    after: &str,
    limit: i64,
) -> sqlx::Result<Vec<RecoveryCandidate>> {
    sqlx::query_as(concat!(
        "SELECT ",
        job_columns!(),
        ", updated_at FROM jobs j
          WHERE queue = $1 AND id > $3
            AND (state IN ('queued', 'scheduled', 'retrying')
                 OR (state = 'running'
                     AND (attempted_at < now() - $2::interval
                          OR NOT EXISTS (SELECT 1 FROM processes p
                                          WHERE p.name = j.process AND p.lease_until > now()))))
          ORDER BY id LIMIT $4"
    ))
    .bind(queue)
    .bind(stale_after)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// One job as maintenance sees it, with whether a live process runs its current attempt
/// (`running` in a process whose lease is fresh, started less than `stale_after` ago).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WatchedJob {
    #[sqlx(flatten)]
    pub candidate: RecoveryCandidate,
    pub runs_in_live_process: bool,
}

pub async fn watched_job(
    pool: &PgPool,
    id: &str,
    stale_after: std::time::Duration,
) -> sqlx::Result<Option<WatchedJob>> {
    sqlx::query_as(concat!(
        "SELECT ",
        job_columns!(),
        ", updated_at,
           (state = 'running' AND attempted_at >= now() - $2::interval
            AND EXISTS (SELECT 1 FROM processes p
                         WHERE p.name = j.process AND p.lease_until > now()))
             AS runs_in_live_process
          FROM jobs j WHERE id = $1"
    ))
    .bind(id)
    .bind(stale_after)
    .fetch_optional(pool)
    .await
}

/// Locks those of `candidates` that have not changed since they were read, and returns their
/// ids; a row another transaction holds (a retry being pushed, a start being written) is
/// skipped. Pushing a locked job before the commit cannot race a retry or a worker's start.
pub async fn lock_unchanged(
    tx: &mut sqlx::PgConnection,
    candidates: &[&RecoveryCandidate],
) -> sqlx::Result<Vec<String>> {
    let ids: Vec<&str> = candidates.iter().map(|c| c.job.id.as_str()).collect();
    let states: Vec<&str> = candidates.iter().map(|c| c.job.state.as_str()).collect();
    let attempts: Vec<i32> = candidates.iter().map(|c| c.job.attempts).collect();
    let updated: Vec<DateTime<Utc>> = candidates.iter().map(|c| c.updated_at).collect();
    sqlx::query_scalar(
        "SELECT j.id FROM jobs j
           JOIN UNNEST($1::text[], $2::text[], $3::int4[], $4::timestamptz[])
                AS c(id, state, attempts, updated_at)
             ON j.id = c.id AND j.state = c.state AND j.attempts = c.attempts
            AND j.updated_at = c.updated_at
         FOR UPDATE OF j SKIP LOCKED",
    )
    .bind(&ids)
    .bind(&states)
    .bind(&attempts)
    .bind(&updated)
    .fetch_all(tx)
    .await
}

/// Locks those of `ids` the journal has finished and returns their ids; a row another
/// transaction holds (a retry being marked, most likely) is skipped. Forgetting a finished job's
/// payload in Redis while holding its row cannot race a retry, which must update the row
/// before it pushes the payload again.
pub async fn lock_finished(
    tx: &mut sqlx::PgConnection,
    ids: &[String],
) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(
        "SELECT id FROM jobs
          WHERE id = ANY($1) AND state IN ('completed', 'failed', 'cancelled')
            FOR SHARE SKIP LOCKED",
    )
    .bind(ids)
    .fetch_all(tx)
    .await
}

/// The states of those of `ids` the journal knows.
pub async fn states(pool: &PgPool, ids: &[String]) -> sqlx::Result<Vec<(String, String)>> {
    sqlx::query_as("SELECT id, state FROM jobs WHERE id = ANY($1)")
        .bind(ids)
        .fetch_all(pool)
        .await
}

/// How long finished jobs stay in the journal.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub completed: std::time::Duration,
    pub failed: std::time::Duration,
    pub cancelled: std::time::Duration,
}

/// Deletes up to `limit` finished jobs older than their retention, with their attempts;
/// returns their id, queue and idempotency key.
pub async fn prune(
    pool: &PgPool,
    keep: Retention,
    limit: i64,
) -> sqlx::Result<Vec<(String, String, Option<String>)>> {
    sqlx::query_as(
        "WITH doomed AS (
            SELECT id FROM jobs
             WHERE finished_at < now() - LEAST($1::interval, $2::interval, $3::interval)
               AND ((state = 'completed' AND finished_at < now() - $1::interval)
                 OR (state = 'failed' AND finished_at < now() - $2::interval)
                 OR (state = 'cancelled' AND finished_at < now() - $3::interval))
             ORDER BY finished_at
             LIMIT $4)
         , gone AS (
            DELETE FROM jobs j USING doomed d WHERE j.id = d.id
            RETURNING j.id, j.queue, j.idempotency_key)
         , attempts AS (
            DELETE FROM job_attempts a USING gone g WHERE a.job_id = g.id)
         SELECT id, queue, idempotency_key FROM gone",
    )
    .bind(keep.completed)
    .bind(keep.failed)
    .bind(keep.cancelled)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Journals a job that only Redis knew of (it never ran) as cancelled.
pub async fn insert_cancelled(
    pool: &PgPool,
    queue: &str,
    envelope: &quizworker_jobs::Envelope,
    max_attempts: u32,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO jobs (id, queue, kind, payload, state, max_attempts, idempotency_key,
                           created_at, finished_at, webhook)
         VALUES ($1, $2, $3, $4::json, 'cancelled', $5, $6, $7, now(), $8)
         ON CONFLICT (id) DO UPDATE SET state = 'cancelled', finished_at = now(), updated_at = now()
          WHERE jobs.state NOT IN ('completed', 'failed', 'cancelled')",
    )
    .bind(envelope.id.to_string())
    .bind(queue)
    .bind(super::sanitize_text(&envelope.kind))
    .bind(super::json_text(envelope.payload.get()))
    .bind(i32::try_from(max_attempts).unwrap_or(i32::MAX))
    .bind(envelope.idempotency_key.as_deref())
    .bind(envelope.created_at)
    .bind(envelope.webhook.as_deref().map(super::sanitize_text))
    .execute(pool)
    .await?;
    Ok(())
}

/// Per queue, how many journaled jobs are in each live state, failed, and completed lately.
#[derive(Debug, Clone, Default, Serialize, sqlx::FromRow)]
pub struct QueueStats {
    pub queue: String,
    pub running: i64,
    pub retrying: i64,
    pub failed: i64,
    pub completed_last_hour: i64,
}

pub async fn queue_stats(pool: &PgPool) -> sqlx::Result<Vec<QueueStats>> {
    sqlx::query_as(
        "SELECT queue,
                count(*) FILTER (WHERE state = 'running') AS running,
                count(*) FILTER (WHERE state = 'retrying') AS retrying,
                count(*) FILTER (WHERE state = 'failed') AS failed,
                count(*) FILTER (WHERE state = 'completed'
                                   AND finished_at > now() - interval '1 hour') AS completed_last_hour
           FROM jobs
          WHERE state IN ('running', 'retrying', 'failed')
             OR (state = 'completed' AND finished_at > now() - interval '1 hour')
          GROUP BY queue",
    )
    .fetch_all(pool)
    .await
}
