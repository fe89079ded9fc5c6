//! The journal writer: one task that takes the state changes of every running job and writes
//! them in batches, so that journaling costs a few statements per batch instead of several per
//! job. Callers wait for their change to be committed: a job starts only once its attempt is on
//! record, which is what lets a crash be counted against the attempt limit.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::JobState;
use crate::ops::health::Health;
use crate::ops::metrics;

/// What the journal needs to know when an attempt starts.
#[derive(Debug, Clone)]
pub struct JobStart {
    pub id: String,
    pub queue: String,
    pub kind: String,
    /// The payload's JSON text, made on the job's own task rather than in the writer's.
    pub payload: String,
    pub idempotency_key: Option<String>,
    pub max_attempts: u32,
    pub created_at: DateTime<Utc>,
    /// The webhook endpoint the envelope names, if any.
    pub webhook: Option<String>,
    pub worker: String,
    /// The process the worker belongs to (`runtime::process`): while its lease is fresh, no
    /// other delivery of this job starts.
    pub process: String,
    /// How long after its start an attempt cannot still be running, wherever it runs (the
    /// queue's timeout and a margin): past that, even a live process' attempt is taken as lost.
    pub stale_after: Duration,
}

/// Whether the job should run now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartOutcome {
    /// Run it: this is attempt `attempt` of at most `max_attempts`.
    Run { attempt: u32, max_attempts: u32 },
    /// Do not run it: it is already finished (a second delivery), was cancelled, or is
    /// `Running` in a process whose lease is fresh (a delivery beside the running attempt).
    Skip(JobState),
}

/// How an attempt ended.
#[derive(Debug, Clone)]
pub enum Finish {
    Completed {
        result: Value,
    },
    Retrying {
        error: String,
        run_at: DateTime<Utc>,
    },
    Failed {
        error: String,
    },
    /// Handed back to the queue at shutdown before it could finish.
    Interrupted,
    /// The handler asked to run again at `run_at` (`JobError::Snooze`): the job waits in
    /// `scheduled`, and this attempt does not use up one of its attempts.
    Snoozed {
        reason: String,
        run_at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum JournalError {
    /// The writer has stopped: the process is shutting down.
    #[error("the journal writer has stopped")]
    Closed,
    /// Postgres refused this change on its own (not the connection): a bug or bad data.
    #[error("Postgres refused the journal write: {0}")]
    Rejected(String),
}

type Reply<T> = oneshot::Sender<Result<T, JournalError>>;

enum Command {
    Start(JobStart, Reply<StartOutcome>),
    Finish {
        id: String,
        attempt: u32,
        finish: Finish,
        reply: Reply<()>,
    },
    Progress {
        id: String,
        percent: u8,
        message: Option<String>,
    },
}

/// A handle to the writer; clone it freely.
#[derive(Clone)]
pub struct Journal {
    /// Each change goes with the moment it was queued: the journal's write lag is measured
    /// from there to its commit.
    tx: mpsc::Sender<(Instant, Command)>,
}

impl Journal {
    /// Starts the writer task. It ends when every handle is dropped and the last batch is written.
    pub fn spawn(pool: PgPool, max_batch: usize, health: Arc<Health>) -> (Journal, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(max_batch * 2);
        let handle = tokio::spawn(run_writer(pool, rx, max_batch, health));
        (Journal { tx }, handle)
    }

    pub async fn start(&self, job: JobStart) -> Result<StartOutcome, JournalError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Start(job, reply)).await?;
        rx.await.map_err(|_| JournalError::Closed)?
    }

    pub async fn finish(&self, id: &str, attempt: u32, finish: Finish) -> Result<(), JournalError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Finish {
            id: id.to_owned(),
            attempt,
            finish,
            reply,
        })
        .await?;
        rx.await.map_err(|_| JournalError::Closed)?
    }

    /// Progress is advisory: when the writer is saturated the update is dropped, never waited on.
    pub fn progress(&self, id: &str, percent: u8, message: Option<String>) {
        let _ = self.tx.try_send((
            Instant::now(),
            Command::Progress {
                id: id.to_owned(),
                percent: percent.min(100),
                message,
            },
        ));
    }

    async fn send(&self, command: Command) -> Result<(), JournalError> {
        self.tx
            .send((Instant::now(), command))
            .await
            .map_err(|_| JournalError::Closed)
    }
}

/// Batches written at once. While one waits for its commit the next fills and goes out, and
/// commits that land together share a WAL flush.
const CONCURRENT_BATCHES: usize = 4;

async fn run_writer(
    pool: PgPool,
    rx: mpsc::Receiver<(Instant, Command)>,
    max_batch: usize,
    health: Arc<Health>,
) {
    crate::runtime::batcher::run(rx, max_batch, CONCURRENT_BATCHES, |commands| {
        let (pool, health) = (pool.clone(), health.clone());
        async move { write_with_retry(&pool, commands, &health).await }
    })
    .await;
}

/// Writes a batch, waiting out Postgres outages with backoff: a change is never dropped
/// because the database was briefly away.
async fn write_with_retry(pool: &PgPool, batch: Vec<(Instant, Command)>, health: &Health) {
    let (queued, batch): (Vec<Instant>, Vec<Command>) = batch.into_iter().unzip();
    let mut parts = Batch::from(batch);
    let mut wait = Duration::from_millis(50);
    loop {
        match parts.write(pool).await {
            Ok(()) => {
                health.set_postgres(true);
                metrics::journal_batch_written(&queued);
                return;
            }
            Err(sqlx::Error::Database(e)) => {
                tracing::error!(error = %e, "journal batch refused; writing its changes one by one");
                parts.write_one_by_one(pool).await;
                metrics::journal_batch_written(&queued);
                return;
            }
            Err(e) => {
                health.set_postgres(false);
                tracing::warn!(error = %e, retry_in = ?wait, "journal write failed; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    }
}

#[derive(Default)]
struct Batch {
    starts: Vec<(JobStart, Reply<StartOutcome>)>,
    finishes: Vec<(String, u32, Finish, Reply<()>)>,
    progress: HashMap<String, (u8, Option<String>)>,
}

impl From<Vec<Command>> for Batch {
    fn from(commands: Vec<Command>) -> Self {
        let mut batch = Batch::default();
        for command in commands {
            match command {
                Command::Start(job, reply) => batch.starts.push((job, reply)),
                Command::Finish {
                    id,
                    attempt,
                    finish,
                    reply,
                } => batch.finishes.push((id, attempt, finish, reply)),
                Command::Progress {
                    id,
                    percent,
                    message,
                } => {
                    batch.progress.insert(id, (percent, message));
                }
            }
        }
        batch
    }
}

impl Batch {
    /// Finishes, then starts (an upsert cannot touch one row twice, so a job delivered twice in
    /// one batch starts in a second round), then progress, in one transaction. A batch of one
    /// statement, the usual batch of a daemon that is not busy (one start, or one finish), is
    /// sent alone and commits by itself, without the round trips of BEGIN and COMMIT. Replies
    /// go out only after the commit.
    async fn write(&mut self, pool: &PgPool) -> Result<(), sqlx::Error> {
        let rounds = self.start_rounds();
        let statements = usize::from(!self.finishes.is_empty())
            + rounds.len()
            + usize::from(!self.progress.is_empty());
        let outcomes = if statements <= 1 {
            let mut conn = pool.acquire().await?;
            self.write_statements(&mut conn, &rounds).await?
        } else {
            let mut tx = pool.begin().await?;
            let outcomes = self.write_statements(&mut tx, &rounds).await?;
            tx.commit().await?;
            outcomes
        };

        for (_, _, _, reply) in self.finishes.drain(..) {
            let _ = reply.send(Ok(()));
        }
        // Rounds preserve the order of first occurrences; match replies by id and occurrence.
        let mut by_id: HashMap<String, Vec<StartOutcome>> = HashMap::new();
        for (id, outcome) in outcomes.into_iter().rev() {
            by_id.entry(id).or_default().push(outcome);
        }
        for (job, reply) in self.starts.drain(..) {
            let outcome = by_id
                .get_mut(&job.id)
                .and_then(Vec::pop)
                .ok_or_else(|| JournalError::Rejected(format!("no start recorded for {}", job.id)));
            let _ = reply.send(outcome);
        }
        self.progress.clear();
        Ok(())
    }

    /// The starts in rounds of distinct ids, in order of first occurrence.
    fn start_rounds(&self) -> Vec<Vec<&JobStart>> {
        let mut rounds = Vec::new();
        let mut pending: Vec<&JobStart> = self.starts.iter().map(|(job, _)| job).collect();
        while !pending.is_empty() {
            let mut seen = HashSet::new();
            let (round, later): (Vec<&JobStart>, Vec<&JobStart>) =
                pending.into_iter().partition(|job| seen.insert(&job.id));
            rounds.push(round);
            pending = later;
        }
        rounds
    }

    /// The batch's statements on `conn`; returns each start's outcome, by id.
    async fn write_statements(
        &self,
        conn: &mut sqlx::PgConnection,
        rounds: &[Vec<&JobStart>],
    ) -> Result<Vec<(String, StartOutcome)>, sqlx::Error> {
        write_finishes(conn, &self.finishes).await?;
        let mut outcomes = Vec::with_capacity(self.starts.len());
        for round in rounds {
            outcomes.extend(write_starts(conn, round).await?);
        }
        write_progress(conn, &self.progress).await?;
        Ok(outcomes)
    }

    /// After Postgres refused a whole batch: each change alone, so one bad change fails alone.
    /// Progress is advisory and is dropped here.
    async fn write_one_by_one(self, pool: &PgPool) {
        for (job, reply) in self.starts {
            let (tx, rx) = oneshot::channel();
            let mut single = Batch {
                starts: vec![(job, tx)],
                ..Batch::default()
            };
            let outcome = match single.write(pool).await {
                Ok(()) => rx.await.unwrap_or(Err(JournalError::Closed)),
                Err(e) => Err(JournalError::Rejected(e.to_string())),
            };
            let _ = reply.send(outcome);
        }
        for (id, attempt, finish, reply) in self.finishes {
            let (tx, _) = oneshot::channel();
            let mut single = Batch {
                finishes: vec![(id, attempt, finish, tx)],
                ..Batch::default()
            };
            let outcome = single.write(pool).await;
            let _ = reply.send(outcome.map_err(|e| JournalError::Rejected(e.to_string())));
        }
    }
}

async fn write_starts(
    tx: &mut sqlx::PgConnection,
    jobs: &[&JobStart],
) -> Result<Vec<(String, StartOutcome)>, sqlx::Error> {
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
    let queues: Vec<&str> = jobs.iter().map(|j| j.queue.as_str()).collect();
    let kinds: Vec<&str> = jobs.iter().map(|j| j.kind.as_str()).collect();
    let payloads: Vec<&str> = jobs.iter().map(|j| j.payload.as_str()).collect();
    let keys: Vec<Option<&str>> = jobs.iter().map(|j| j.idempotency_key.as_deref()).collect();
    let limits: Vec<i32> = jobs
        .iter()
        .map(|j| i32::try_from(j.max_attempts).unwrap_or(i32::MAX))
        .collect();
    let created: Vec<DateTime<Utc>> = jobs.iter().map(|j| j.created_at).collect();
    let workers: Vec<&str> = jobs.iter().map(|j| j.worker.as_str()).collect();
    let processes: Vec<&str> = jobs.iter().map(|j| j.process.as_str()).collect();
    let webhooks: Vec<Option<&str>> = jobs.iter().map(|j| j.webhook.as_deref()).collect();
    let stale_after_ms: Vec<i64> = jobs
        .iter()
        .map(|j| i64::try_from(j.stale_after.as_millis()).unwrap_or(i64::MAX))
        .collect();

    // Per input job: its id, and the new attempt and limit if it starts, else its state.
    type StartRow = (String, Option<i32>, Option<i32>, Option<String>);
    let rows: Vec<StartRow> = sqlx::query_as(
        r#"
        WITH input AS (
            SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                                 $6::int4[], $7::timestamptz[], $8::text[], $9::text[],
                                 $10::int8[], $11::text[])
                AS t(id, queue, kind, payload, idempotency_key, max_attempts, created_at, worker,
                     process, stale_after_ms, webhook)
        ),
        beside AS (
            -- Its current attempt is under way in a live process: this delivery would run the
            -- job beside itself, so it does not start.
            SELECT j.id
              FROM jobs j JOIN input i ON i.id = j.id
             WHERE j.state = 'running'
               AND j.attempted_at > now() - i.stale_after_ms * interval '1 millisecond'
               AND EXISTS (SELECT 1 FROM processes p
                            WHERE p.name = j.process AND p.lease_until > now())
        ),
        lost AS (
            -- A job that starts again while the journal has it running lost its last attempt
            -- with the process that ran it.
            INSERT INTO job_attempts (job_id, attempt, worker, started_at, finished_at,
                                      duration_ms, outcome, error)
            SELECT j.id, j.attempts, COALESCE(j.worker, ''), j.attempted_at, now(),
                   (extract(epoch FROM now() - j.attempted_at) * 1000)::bigint, 'lost',
                   'the worker stopped before this attempt finished'
              FROM jobs j JOIN input i ON i.id = j.id
             WHERE j.state = 'running' AND j.id NOT IN (SELECT id FROM beside)
            ON CONFLICT DO NOTHING
        ),
        upserted AS (
            INSERT INTO jobs AS j (id, queue, kind, payload, idempotency_key, max_attempts,
                                   created_at, state, attempts, worker, process, attempted_at,
                                   webhook)
            SELECT id, queue, kind, payload::json, idempotency_key, max_attempts, created_at,
                   'running', 1, worker, process, now(), webhook
              FROM input
             WHERE id NOT IN (SELECT id FROM beside)
            ON CONFLICT (id) DO UPDATE
               SET state = 'running', attempts = j.attempts + 1, worker = EXCLUDED.worker,
                   process = EXCLUDED.process, queue = EXCLUDED.queue, attempted_at = now(),
                   scheduled_at = NULL, updated_at = now()
             WHERE j.state NOT IN ('completed', 'failed', 'cancelled')
            RETURNING j.id, j.attempts, j.max_attempts
        )
        SELECT i.id, u.attempts, u.max_attempts, j.state
          FROM input i
          LEFT JOIN upserted u ON u.id = i.id
          LEFT JOIN jobs j ON j.id = i.id
        "#,
    )
    .bind(&ids)
    .bind(&queues)
    .bind(&kinds)
    .bind(&payloads)
    .bind(&keys)
    .bind(&limits)
    .bind(&created)
    .bind(&workers)
    .bind(&processes)
    .bind(&stale_after_ms)
    .bind(&webhooks)
    .fetch_all(&mut *tx)
    .await?;

    rows.into_iter()
        .map(|(id, attempt, max_attempts, state)| {
            let outcome = match (attempt, max_attempts, state) {
                (Some(attempt), Some(max_attempts), _) => StartOutcome::Run {
                    attempt: attempt as u32,
                    max_attempts: max_attempts as u32,
                },
                (_, _, Some(state)) => StartOutcome::Skip(
                    state
                        .parse()
                        .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
                ),
                _ => {
                    return Err(sqlx::Error::Protocol(format!(
                        "job {id} neither started nor found"
                    )));
                }
            };
            Ok((id, outcome))
        })
        .collect()
}

async fn write_finishes(
    tx: &mut sqlx::PgConnection,
    finishes: &[(String, u32, Finish, Reply<()>)],
) -> Result<(), sqlx::Error> {
    if finishes.is_empty() {
        return Ok(());
    }
    let mut ids = Vec::with_capacity(finishes.len());
    let mut attempts = Vec::with_capacity(finishes.len());
    let mut states = Vec::with_capacity(finishes.len());
    let mut results: Vec<Option<&Value>> = Vec::with_capacity(finishes.len());
    let mut errors: Vec<Option<&str>> = Vec::with_capacity(finishes.len());
    let mut run_ats: Vec<Option<DateTime<Utc>>> = Vec::with_capacity(finishes.len());
    for (id, attempt, finish, _) in finishes {
        ids.push(id.as_str());
        attempts.push(*attempt as i32);
        let (state, result, error, run_at) = match finish {
            Finish::Completed { result } => (JobState::Completed, Some(result), None, None),
            Finish::Retrying { error, run_at } => (
                JobState::Retrying,
                None,
                Some(error.as_str()),
                Some(*run_at),
            ),
            Finish::Failed { error } => (JobState::Failed, None, Some(error.as_str()), None),
            Finish::Interrupted => (JobState::Queued, None, None, None),
            Finish::Snoozed { reason, run_at } => (
                JobState::Scheduled,
                None,
                Some(reason.as_str()),
                Some(*run_at),
            ),
        };
        states.push(state.as_str());
        results.push(result);
        errors.push(error);
        run_ats.push(run_at);
    }
    sqlx::query(
        r#"
        WITH input AS (
            SELECT * FROM UNNEST($1::text[], $2::int4[], $3::text[], $4::jsonb[], $5::text[],
                                 $6::timestamptz[])
                AS t(id, attempt, state, result, error, run_at)
        ),
        updated AS (
            UPDATE jobs j
               SET state = CASE WHEN j.state = 'cancelled' THEN 'cancelled' ELSE input.state END,
                   result = COALESCE(input.result, j.result),
                   last_error = CASE WHEN input.state = 'completed' THEN NULL
                                     ELSE COALESCE(input.error, j.last_error) END,
                   scheduled_at = input.run_at,
                   progress = CASE WHEN input.state = 'completed' THEN 100 ELSE j.progress END,
                   -- An attempt cut short by a shutdown is not the job's fault, and one that
                   -- asked to wait (scheduled) did not fail: neither uses up one of the job's
                   -- attempts.
                   max_attempts = CASE WHEN input.state IN ('queued', 'scheduled')
                                       THEN j.max_attempts + 1
                                       ELSE j.max_attempts END,
                   finished_at = CASE WHEN input.state IN ('completed', 'failed') THEN now()
                                      ELSE j.finished_at END,
                   updated_at = now()
              FROM input
             WHERE j.id = input.id AND j.attempts = input.attempt
         RETURNING j.id, input.attempt, j.worker, j.attempted_at, input.state, input.error
        )
        -- The attempt's row is written once, when it ends; the journal's job row says who runs
        -- the current one and since when.
        INSERT INTO job_attempts (job_id, attempt, worker, started_at, finished_at, duration_ms,
                                  outcome, error)
        SELECT id, attempt, COALESCE(worker, ''), attempted_at, now(),
               (extract(epoch FROM now() - attempted_at) * 1000)::bigint,
               CASE state WHEN 'completed' THEN 'completed'
                          WHEN 'queued' THEN 'interrupted'
                          WHEN 'scheduled' THEN 'snoozed'
                          ELSE 'failed' END,
               error
          FROM updated
        ON CONFLICT DO NOTHING
        "#,
    )
    .bind(&ids)
    .bind(&attempts)
    .bind(&states)
    .bind(&results)
    .bind(&errors)
    .bind(&run_ats)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

async fn write_progress(
    tx: &mut sqlx::PgConnection,
    progress: &HashMap<String, (u8, Option<String>)>,
) -> Result<(), sqlx::Error> {
    if progress.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = progress.keys().map(String::as_str).collect();
    let percents: Vec<i16> = progress.values().map(|(p, _)| i16::from(*p)).collect();
    let messages: Vec<Option<&str>> = progress.values().map(|(_, m)| m.as_deref()).collect();
    sqlx::query(
        r#"
        UPDATE jobs j
           SET progress = i.percent, progress_message = i.message, updated_at = now()
          FROM UNNEST($1::text[], $2::int2[], $3::text[]) AS i(id, percent, message)
         WHERE j.id = i.id AND j.state = 'running'
        "#,
    )
    .bind(&ids)
    .bind(&percents)
    .bind(&messages)
    .execute(&mut *tx)
    .await?;
    Ok(())
}
