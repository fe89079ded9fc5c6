//! The outbox relay: jobs a web tier enqueued inside its own transactions
//! (`quizworker_enqueue()`, docs/sql/outbox.sql) go from its database to the journal, then to
//! Redis, each once.
//!
//! One round, holding a batch of outbox rows locked (`FOR UPDATE SKIP LOCKED`, so that several
//! daemons share the rows without waiting on each other):
//! 1. idempotency keys are taken in Redis, as the script takes them; a row whose key another job
//!    holds makes no job and records that job as `duplicate_of`;
//! 2. the jobs are journaled as queued or scheduled, and committed: from here a Redis data loss
//!    cannot lose them (maintenance puts back what the journal has and Redis lacks);
//! 3. those the journal still has waiting are locked and pushed to Redis, unless Redis already
//!    has their payload (an earlier round pushed them and died before step 4);
//! 4. the rows are marked relayed, and the outbox transaction commits.
//!
//! A round that dies anywhere leaves its rows to the next round, which repeats each step
//! without doing it twice: a key its job already holds is its own, the journal's insert leaves
//! existing jobs alone, and a job is pushed only while the journal has it waiting and Redis
//! has no payload for it. A job a worker already took (running, or finished) is not pushed
//! again, and a job pushed twice anyway would not start twice: the journal refuses a second
//! start (docs/PROTOCOL.md, section 7).

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use quizworker_jobs::{ENVELOPE_VERSION, Envelope, Queue};
use serde_json::value::RawValue;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{PgConnection, PgPool};

use crate::config::Config;
use crate::ops::redact::redacted;
use crate::runtime::journal::store::{self, Waiting};
use crate::runtime::queue::RedisQueues;

/// The channel `quizworker_enqueue()`'s trigger notifies on each commit.
const CHANNEL: &str = "quizworker_outbox";
/// How often relayed rows past `outbox.keep_relayed` are deleted, and how many at a time.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
const PRUNE_PAGE: i64 = 10_000;

/// One outbox row, as read for relaying.
#[derive(Debug, sqlx::FromRow)]
struct Row {
    seq: i64,
    id: String,
    kind: String,
    queue: String,
    payload: String,
    idempotency_key: Option<String>,
    max_attempts: Option<i32>,
    run_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    webhook: Option<String>,
}

/// What a round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    /// Rows taken from the outbox.
    pub rows: usize,
    /// Jobs pushed to Redis.
    pub pushed: u64,
    /// Rows whose idempotency key another job held.
    pub duplicates: usize,
}

pub struct Relay {
    config: Arc<Config>,
    outbox: PgPool,
    journal: PgPool,
    redis: RedisQueues,
}

impl Relay {
    /// A relay of the outbox at `config.outbox.url`. Connections are made when needed, so a
    /// platform database that is down at start is waited for like one that goes down later;
    /// a URL that does not parse is an error now.
    pub fn connect(
        config: Arc<Config>,
        journal: PgPool,
        redis: RedisQueues,
    ) -> anyhow::Result<Relay> {
        let options = PgConnectOptions::from_str(&config.outbox.url)
            .with_context(|| format!("invalid outbox.url {}", redacted(&config.outbox.url)))?;
        // One connection listens, one relays, one prunes.
        let outbox = PgPoolOptions::new()
            .max_connections(3)
            .acquire_timeout(Duration::from_secs(10))
            .connect_lazy_with(options);
        Ok(Relay::new(config, outbox, journal, redis))
    }

    pub fn new(config: Arc<Config>, outbox: PgPool, journal: PgPool, redis: RedisQueues) -> Relay {
        Relay {
            config,
            outbox,
            journal,
            redis,
        }
    }

    /// Relays until the task is aborted. Waits out either database or Redis being away: the
    /// rows wait in the outbox meanwhile.
    pub async fn run(self) {
        let mut listener: Option<PgListener> = None;
        let mut wait = Duration::from_millis(50);
        let mut pruned_at: Option<Instant> = None;
        tracing::info!(outbox = %redacted(&self.config.outbox.url), "relaying the outbox");
        loop {
            if listener.is_none() {
                listener = self.listen().await;
            }
            match self.round().await {
                Ok(round) => {
                    wait = Duration::from_millis(50);
                    if round.rows >= self.config.outbox.batch {
                        continue;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = format!("{e:#}"), retry_in = ?wait,
                        "relaying the outbox failed; its rows wait for the next round");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                    continue;
                }
            }
            if pruned_at.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
                match self.prune().await {
                    Ok(pruned) if pruned > 0 => {
                        tracing::info!(
                            pruned,
                            "deleted relayed outbox rows past outbox.keep_relayed"
                        );
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "could not prune the outbox"),
                }
                pruned_at = Some(Instant::now());
            }
            self.wait_for_work(&mut listener).await;
        }
    }

    async fn listen(&self) -> Option<PgListener> {
        let listening = async {
            let mut listener = PgListener::connect_with(&self.outbox).await?;
            listener.listen(CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        }
        .await;
        listening
            .inspect_err(
                |e| tracing::warn!(error = %e, "cannot listen on the outbox; polling it meanwhile"),
            )
            .ok()
    }

    /// Until a commit is notified or the poll interval passes. A lost listener is dropped, to
    /// be made again before the next round.
    async fn wait_for_work(&self, listener: &mut Option<PgListener>) {
        let poll = self.config.outbox.poll_interval;
        let Some(active) = listener else {
            tokio::time::sleep(poll).await;
            return;
        };
        match tokio::time::timeout(poll, active.try_recv()).await {
            Ok(Ok(Some(_))) => while active.next_buffered().is_some() {},
            Ok(Ok(None)) | Ok(Err(_)) => *listener = None,
            Err(_) => {}
        }
    }

    /// One round (see the module's documentation).
    pub async fn round(&self) -> anyhow::Result<Round> {
        let limit = i64::try_from(self.config.outbox.batch).unwrap_or(i64::MAX);
        let mut tx = self.outbox.begin().await.context("the outbox database")?;
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT seq, id, kind, queue, payload::text AS payload, idempotency_key, max_attempts,
                    run_at, created_at, webhook
               FROM quizworker.outbox
              WHERE relayed_at IS NULL
              ORDER BY seq
              LIMIT $1
                FOR UPDATE SKIP LOCKED",
        )
        .bind(limit)
        .fetch_all(&mut *tx)
        .await
        .context("could not read the outbox")?;
        if rows.is_empty() {
            return Ok(Round::default());
        }
        let jobs: Vec<(i64, Queue, Envelope)> = rows
            .into_iter()
            .map(|row| {
                let seq = row.seq;
                let (queue, envelope) = envelope_of(row)?;
                Ok((seq, queue, envelope))
            })
            .collect::<anyhow::Result<_>>()?;

        let duplicates = self.take_keys(&jobs).await?;
        let new: Vec<&(i64, Queue, Envelope)> = jobs
            .iter()
            .filter(|(seq, _, _)| !duplicates.contains_key(seq))
            .collect();
        self.journal_waiting(&new).await?;
        let pushed = self.push_waiting(&new).await?;
        mark_relayed(&mut tx, &jobs, &duplicates).await?;
        tx.commit()
            .await
            .context("could not mark the outbox rows relayed")?;
        Ok(Round {
            rows: jobs.len(),
            pushed,
            duplicates: duplicates.len(),
        })
    }

    /// Takes the idempotency keys of the jobs that have one; returns the rows whose key another
    /// job holds, with that job's id.
    async fn take_keys(
        &self,
        jobs: &[(i64, Queue, Envelope)],
    ) -> anyhow::Result<HashMap<i64, String>> {
        let mut duplicates = HashMap::new();
        for queue in Queue::ALL {
            let keyed: Vec<(i64, String, &str)> = jobs
                .iter()
                .filter(|(_, q, _)| *q == queue)
                .filter_map(|(seq, _, e)| {
                    let key = e.idempotency_key.as_deref()?;
                    Some((*seq, e.id.to_string(), key))
                })
                .collect();
            let pairs: Vec<(&str, &str)> = keyed
                .iter()
                .map(|(_, id, key)| (id.as_str(), *key))
                .collect();
            let holders = self.redis.take_idempotency_keys(queue, &pairs).await?;
            for ((seq, _, _), holder) in keyed.iter().zip(holders) {
                if let Some(holder) = holder {
                    duplicates.insert(*seq, holder);
                }
            }
        }
        Ok(duplicates)
    }

    async fn journal_waiting(&self, jobs: &[&(i64, Queue, Envelope)]) -> anyhow::Result<()> {
        let waiting: Vec<Waiting> = jobs
            .iter()
            .map(|(_, queue, envelope)| Waiting {
                queue: *queue,
                envelope,
                max_attempts: envelope
                    .max_attempts
                    .unwrap_or(self.config.queue(*queue).max_attempts),
            })
            .collect();
        let mut conn = self.journal.acquire().await.context("the journal")?;
        store::insert_waiting_many(&mut conn, &waiting)
            .await
            .context("could not journal the outbox's jobs")
    }

    /// Pushes the jobs the journal still has waiting, holding their rows locked meanwhile (as
    /// maintenance's recovery does, so that the two never push one job at once, and a worker
    /// that takes one waits for the commit to start it).
    async fn push_waiting(&self, jobs: &[&(i64, Queue, Envelope)]) -> anyhow::Result<u64> {
        let ids: Vec<String> = jobs.iter().map(|(_, _, e)| e.id.to_string()).collect();
        let mut tx = self.journal.begin().await.context("the journal")?;
        let waiting = lock_waiting(&mut tx, &ids).await?;
        let mut pushed = 0;
        for queue in Queue::ALL {
            let envelopes: Vec<&Envelope> = jobs
                .iter()
                .filter(|(_, q, e)| *q == queue && waiting.contains(&e.id.to_string()))
                .map(|(_, _, e)| e)
                .collect();
            pushed += self.redis.push_new(queue, &envelopes).await?;
        }
        tx.commit().await.context("the journal")?;
        Ok(pushed)
    }

    /// Deletes relayed rows past `outbox.keep_relayed`; returns how many.
    async fn prune(&self) -> sqlx::Result<u64> {
        let deleted = sqlx::query(
            "DELETE FROM quizworker.outbox
              WHERE seq IN (SELECT seq FROM quizworker.outbox
                             WHERE relayed_at < now() - $1::interval
                             ORDER BY relayed_at LIMIT $2)",
        )
        .bind(self.config.outbox.keep_relayed)
        .bind(PRUNE_PAGE)
        .execute(&self.outbox)
        .await?;
        Ok(deleted.rows_affected())
    }
}

/// The envelope of an outbox row. The table's checks make every row one; a row that is not
/// (the table was changed by hand) stops the relay with its reason, rather than being skipped
/// and lost.
fn envelope_of(row: Row) -> anyhow::Result<(Queue, Envelope)> {
    let (seq, job) = (row.seq, row.id.clone());
    let refuse = |what: String| anyhow::anyhow!("outbox row {seq} (job {job}): {what}");
    let queue: Queue = row.queue.parse().map_err(|e| refuse(format!("{e}")))?;
    let id = row
        .id
        .parse()
        .map_err(|e| refuse(format!("its id is not a ULID: {e}")))?;
    let payload = RawValue::from_string(row.payload)
        .map_err(|e| refuse(format!("its payload is not JSON: {e}")))?;
    let max_attempts = row
        .max_attempts
        .map(|n| u32::try_from(n).map_err(|_| refuse(format!("max_attempts {n}"))))
        .transpose()?;
    Ok((
        queue,
        Envelope {
            v: ENVELOPE_VERSION,
            id,
            kind: row.kind,
            payload,
            created_at: row.created_at,
            idempotency_key: row.idempotency_key,
            max_attempts,
            run_at: row.run_at,
            webhook: row.webhook,
        },
    ))
}

/// Locks the jobs of `ids` that the journal has queued or scheduled, skipping rows another
/// transaction holds (maintenance pushing it, a worker starting it); returns their ids.
async fn lock_waiting(
    tx: &mut PgConnection,
    ids: &[String],
) -> anyhow::Result<std::collections::HashSet<String>> {
    let locked: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM jobs
          WHERE id = ANY($1) AND state IN ('queued', 'scheduled')
            FOR UPDATE SKIP LOCKED",
    )
    .bind(ids)
    .fetch_all(tx)
    .await
    .context("could not lock the relayed jobs in the journal")?;
    Ok(locked.into_iter().collect())
}

async fn mark_relayed(
    tx: &mut PgConnection,
    jobs: &[(i64, Queue, Envelope)],
    duplicates: &HashMap<i64, String>,
) -> anyhow::Result<()> {
    let seqs: Vec<i64> = jobs.iter().map(|(seq, _, _)| *seq).collect();
    let duplicate_of: Vec<Option<&str>> = seqs
        .iter()
        .map(|seq| duplicates.get(seq).map(String::as_str))
        .collect();
    sqlx::query(
        "UPDATE quizworker.outbox o
            SET relayed_at = now(), duplicate_of = r.duplicate_of
           FROM UNNEST($1::int8[], $2::text[]) AS r(seq, duplicate_of)
          WHERE o.seq = r.seq",
    )
    .bind(&seqs)
    .bind(&duplicate_of)
    .execute(tx)
    .await
    .context("could not mark the outbox rows relayed")?;
    Ok(())
}
