//! Jobs enqueued with the script enter the journal as they arrive, not only when a worker takes
//! them: the script adds each job's id to its queue's stream `Q:arrivals`, and every daemon reads
//! those streams in one consumer group and journals each job as queued or scheduled. So the
//! status view (docs/WEB_TIER.md) shows a waiting job, and maintenance can put it back if Redis
//! loses it.
//!
//! Journaling is an insert that leaves a job the journal already has alone, so an entry read
//! twice (a daemon died before acknowledging it, and another claimed it) does no harm.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use quizworker_jobs::{Envelope, Queue};
use redis::aio::ConnectionManager;
use sqlx::PgPool;

use crate::config::Config;
use crate::runtime::journal::store::{self, Waiting};
use crate::runtime::queue;

/// The consumer group every daemon reads the arrival streams in.
const GROUP: &str = "quizworker";
/// Entries read in one call.
const READ_COUNT: usize = 1000;
/// Arrivals whose payloads are read and journaled at once. A read of 1,000 is journaled in
/// slices, so that the daemon holds this many payloads at most (each up to
/// `limits.max_job_bytes`), however large the jobs: all 500 of a burst of 100 KB jobs at once
/// took the daemon to 224 MiB.
const JOURNAL_SLICE: usize = 100;
/// How long one read waits for an entry; well under the Redis response timeout.
const BLOCK: Duration = Duration::from_millis(1000);
/// An entry read but not acknowledged for this long belongs to a daemon that died, or to this
/// one while Postgres was away: it is read again.
const CLAIM_IDLE: Duration = Duration::from_secs(10);

/// Entries read from one queue's stream: (entry id, job id).
type Entries = Vec<(String, String)>;
/// Stream entries as Redis replies with them: (entry id, fields).
type StreamEntries = Vec<(String, HashMap<String, String>)>;

/// The stream the script notes a queue's arrivals in.
pub fn stream_key(config: &Config, queue: Queue) -> String {
    format!("{}{}:arrivals", config.redis.prefix, queue)
}

/// Reads the arrival streams until the task is aborted, starting over after an error.
pub async fn run(config: Arc<Config>, pg: PgPool, consumer: String) {
    let mut wait = Duration::from_millis(100);
    loop {
        if let Err(e) = follow(&config, &pg, &consumer).await {
            tracing::warn!(error = format!("{e:#}"), retry_in = ?wait,
                "reading the arrival streams failed; starting over");
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(5));
    }
}

async fn follow(config: &Config, pg: &PgPool, consumer: &str) -> anyhow::Result<()> {
    // A connection of its own: a blocking read holds the connection it is sent on.
    let mut conn = queue::connect(config).await?;
    let keys: Vec<(Queue, String)> = Queue::ALL
        .into_iter()
        .map(|q| (q, stream_key(config, q)))
        .collect();
    for (_, key) in &keys {
        let created: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(key)
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut conn)
            .await;
        match created {
            Err(e) if e.code() == Some("BUSYGROUP") => {}
            other => other.with_context(|| format!("could not create the group of {key}"))?,
        }
    }
    let mut claimed_at: Option<Instant> = None;
    loop {
        if claimed_at.is_none_or(|at| at.elapsed() >= CLAIM_IDLE / 2) {
            for (queue, key) in &keys {
                let entries = claim_idle(&mut conn, key, consumer).await?;
                record(config, pg, &mut conn, &[(*queue, key.as_str(), entries)]).await?;
            }
            claimed_at = Some(Instant::now());
        }
        let mut read = redis::cmd("XREADGROUP");
        read.arg("GROUP")
            .arg(GROUP)
            .arg(consumer)
            .arg("COUNT")
            .arg(READ_COUNT)
            .arg("BLOCK")
            .arg(BLOCK.as_millis() as u64)
            .arg("STREAMS");
        for (_, key) in &keys {
            read.arg(key);
        }
        for _ in &keys {
            read.arg(">");
        }
        type Reply = Option<Vec<(String, StreamEntries)>>;
        let reply: Reply = read
            .query_async(&mut conn)
            .await
            .context("XREADGROUP on the arrival streams failed")?;
        let mut batch = Vec::new();
        for (key, entries) in reply.unwrap_or_default() {
            let Some((queue, key)) = keys.iter().find(|(_, k)| *k == key) else {
                continue;
            };
            batch.push((*queue, key.as_str(), job_ids(entries)));
        }
        record(config, pg, &mut conn, &batch).await?;
    }
}

/// Entries of `key` that another consumer read and did not acknowledge for [`CLAIM_IDLE`].
async fn claim_idle(
    conn: &mut ConnectionManager,
    key: &str,
    consumer: &str,
) -> anyhow::Result<Entries> {
    let (_, entries, _): (String, StreamEntries, Vec<String>) = redis::cmd("XAUTOCLAIM")
        .arg(key)
        .arg(GROUP)
        .arg(consumer)
        .arg(CLAIM_IDLE.as_millis() as u64)
        .arg("0-0")
        .arg("COUNT")
        .arg(READ_COUNT)
        .query_async(conn)
        .await
        .with_context(|| format!("XAUTOCLAIM on {key} failed"))?;
    Ok(job_ids(entries))
}

fn job_ids(entries: StreamEntries) -> Entries {
    entries
        .into_iter()
        .map(|(entry, mut fields)| (entry, fields.remove("id").unwrap_or_default()))
        .collect()
}

/// Journals the jobs of `batch` that Redis still holds and that can be read, then acknowledges
/// and deletes every entry. A job that cannot be read is journaled by the worker that takes it
/// (as failed, with the reason); one whose payload Redis no longer holds has been taken and
/// trimmed already.
async fn record(
    config: &Config,
    pg: &PgPool,
    conn: &mut ConnectionManager,
    batch: &[(Queue, &str, Entries)],
) -> anyhow::Result<()> {
    if batch.iter().all(|(_, _, entries)| entries.is_empty()) {
        return Ok(());
    }
    for (queue, _, entries) in batch {
        for slice in entries.chunks(JOURNAL_SLICE) {
            journal_slice(config, pg, conn, *queue, slice).await?;
        }
    }
    let mut ack = redis::pipe();
    for (_, key, entries) in batch.iter().filter(|(_, _, e)| !e.is_empty()) {
        let ids: Vec<&str> = entries.iter().map(|(entry, _)| entry.as_str()).collect();
        ack.cmd("XACK").arg(key).arg(GROUP).arg(&ids).ignore();
        ack.cmd("XDEL").arg(key).arg(&ids).ignore();
    }
    ack.query_async::<()>(conn)
        .await
        .context("could not acknowledge the arrivals")
}

/// Reads the payloads of one slice of a queue's arrivals and journals those that can be read
/// and that the journal does not have yet.
async fn journal_slice(
    config: &Config,
    pg: &PgPool,
    conn: &mut ConnectionManager,
    queue: Queue,
    slice: &[(String, String)],
) -> anyhow::Result<()> {
    let ids = not_journaled(pg, slice).await;
    if ids.is_empty() {
        return Ok(());
    }
    let stored: Vec<Option<Vec<u8>>> = redis::cmd("HMGET")
        .arg(format!("{}{}:data", config.redis.prefix, queue))
        .arg(&ids)
        .query_async(conn)
        .await
        .context("could not read the arrived jobs from Redis")?;
    let envelopes: Vec<Envelope> = ids
        .iter()
        .zip(stored)
        .filter_map(|(id, raw)| {
            let envelope = Envelope::decode_within(&raw?, &config.limits).ok()?;
            (envelope.id.to_string() == *id).then_some(envelope)
        })
        .collect();
    let waiting: Vec<Waiting> = envelopes
        .iter()
        .map(|envelope| Waiting {
            queue,
            envelope,
            max_attempts: envelope
                .max_attempts
                .unwrap_or(config.queue(queue).max_attempts),
        })
        .collect();
    journal_with_retry(pg, &waiting).await;
    Ok(())
}

/// The job ids of `slice` the journal does not have. While a backlog drains, workers take most
/// jobs before their arrivals are read (in the throughput bench, 99 in 100): their payloads
/// need not be read from Redis, decoded and offered to an insert that leaves them alone. If
/// Postgres cannot say, every id: the insert leaves alone what it has, and waits out an outage.
async fn not_journaled<'a>(pg: &PgPool, slice: &'a [(String, String)]) -> Vec<&'a str> {
    let ids: Vec<String> = slice.iter().map(|(_, id)| id.clone()).collect();
    let known: HashSet<String> = match store::states(pg, &ids).await {
        Ok(states) => states.into_iter().map(|(id, _)| id).collect(),
        Err(e) => {
            tracing::debug!(error = %e, "could not ask which arrivals are journaled");
            HashSet::new()
        }
    };
    slice
        .iter()
        .map(|(_, id)| id.as_str())
        .filter(|id| !known.contains(*id))
        .collect()
}

/// Waits out a Postgres outage: the entries stay unacknowledged meanwhile. A batch Postgres
/// refuses is logged and dropped: those jobs enter the journal when a worker takes them.
async fn journal_with_retry(pg: &PgPool, waiting: &[Waiting<'_>]) {
    let mut wait = Duration::from_millis(50);
    loop {
        let written = async {
            let mut conn = pg.acquire().await?;
            store::insert_waiting_many(&mut conn, waiting).await
        }
        .await;
        match written {
            Ok(()) => return,
            Err(sqlx::Error::Database(e)) => {
                tracing::error!(error = %e, jobs = waiting.len(),
                    "Postgres refused to journal arrived jobs; they are journaled when taken");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?wait,
                    "could not journal arrived jobs; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    }
}
