//! Maintenance, done by one process at a time (a Postgres advisory lock held for the pass):
//! - recovery: jobs the journal says are waiting (or stale in `running`) but Redis no longer
//!   holds, after a restart without persistence or a failover, go back to Redis;
//! - retention: finished jobs older than their state's retention leave the journal;
//! - trimming: Redis forgets finished jobs' payloads and metadata, apalis' set of
//!   acknowledged ids is emptied and the metadata of dead workers deleted, so Redis memory
//!   stays flat however long the daemon runs; the journal forgets processes long dead.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use quizworker_jobs::Queue;
use serde::Serialize;
use sqlx::PgPool;

use crate::config::Config;
use crate::runtime::journal::store::{self, Retention};
use crate::runtime::process::{self, STALE_MARGIN};
use crate::runtime::queue::RedisQueues;

/// The advisory lock's key: "quizwork" in ASCII.
const LOCK_KEY: i64 = 0x7175_697a_776f_726b;
/// Rows read or deleted per round trip.
const PAGE: i64 = 1000;
/// Pages that trimming (per queue) and pruning may take in one pass. A pass that had to catch up
/// with everything at once could run for minutes on a slow database while the next pass waits;
/// bounded, passes stay short and regular, and what is left goes in the next one.
const PAGES_PER_PASS: usize = 50;

#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Report {
    /// Jobs put back in Redis.
    pub recovered: u64,
    /// Finished jobs deleted from the journal.
    pub pruned: u64,
    /// Finished jobs whose payload Redis forgot.
    pub trimmed: u64,
}

/// Runs maintenance every `maintenance.interval` until the task is aborted.
pub async fn run_periodically(config: Arc<Config>, pg: PgPool, redis: RedisQueues) {
    let mut ticker = tokio::time::interval(config.maintenance.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match run_once(&config, &pg, &redis, true).await {
            Ok(Some(report)) if report.recovered + report.pruned + report.trimmed > 0 => {
                tracing::info!(
                    recovered = report.recovered,
                    pruned = report.pruned,
                    trimmed = report.trimmed,
                    "maintenance done"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(
                error = format!("{e:#}"),
                "maintenance failed; trying again at the next pass"
            ),
        }
    }
}

/// One pass, if no other process is doing one (`None` then). With `full` false only recovery
/// runs (`quizworker recover`).
pub async fn run_once(
    config: &Config,
    pg: &PgPool,
    redis: &RedisQueues,
    full: bool,
) -> anyhow::Result<Option<Report>> {
    // A transaction-scoped lock: released with the transaction, also if this process dies.
    let mut lock = pg.begin().await?;
    let acquired: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
        .bind(LOCK_KEY)
        .fetch_one(&mut *lock)
        .await?;
    if !acquired {
        return Ok(None);
    }
    let mut report = Report::default();
    for queue in Queue::ALL {
        report.recovered += recover(config, pg, redis, queue).await?;
        if full {
            report.trimmed += trim(pg, redis, queue).await?;
            redis.forget_dead_workers(queue).await?;
        }
    }
    if full {
        report.pruned = prune(config, pg, redis).await?;
        process::forget_dead(pg).await?;
    }
    lock.commit().await?;
    Ok(Some(report))
}

/// Puts back in Redis what the journal says should be there and is not.
async fn recover(
    config: &Config,
    pg: &PgPool,
    redis: &RedisQueues,
    queue: Queue,
) -> anyhow::Result<u64> {
    let stale_after = config.queue(queue).timeout + STALE_MARGIN;
    let mut recovered = 0;
    let mut after = String::new();
    // Read from Redis only once some job is expected there, and only after reading the
    // journal: a job enqueued in between is then not a candidate, so it is never pushed twice.
    let mut in_redis: Option<HashSet<String>> = None;
    loop {
        let candidates =
            store::should_be_in_redis(pg, queue.name(), stale_after, &after, PAGE).await?;
        let Some(last) = candidates.last() else {
            break;
        };
        after = last.job.id.clone();
        if in_redis.is_none() {
            in_redis = Some(redis.ids_in_redis(queue).await?);
        }
        let present = in_redis.as_ref().expect("read above");
        let missing: Vec<&store::RecoveryCandidate> = candidates
            .iter()
            .filter(|c| !present.contains(&c.job.id))
            .collect();
        if missing.is_empty() {
            continue;
        }
        recovered += push_unchanged(pg, redis, &missing).await?;
    }
    if recovered > 0 {
        tracing::warn!(%queue, recovered, "put back in Redis jobs it had lost");
    }
    Ok(recovered)
}

/// Watches a job that a second delivery found running in another live process, until that
/// attempt ends or its process dies: then, if Redis no longer holds the job (the skipped
/// delivery was acknowledged), it goes back, as a recovery pass would put it. Without this the
/// job would wait for the next pass when its process died just before the delivery, whose
/// lease had not yet run out.
pub async fn watch_beside(
    config: Arc<Config>,
    pg: PgPool,
    redis: RedisQueues,
    queue: Queue,
    id: String,
    lease: Duration,
) {
    let stale_after = config.queue(queue).timeout + STALE_MARGIN;
    let give_up = tokio::time::Instant::now() + stale_after + lease;
    while tokio::time::Instant::now() < give_up {
        tokio::time::sleep(lease).await;
        match put_back_if_orphaned(&pg, &redis, &id, stale_after).await {
            Ok(Watch::StillRunning) => {}
            Ok(Watch::Over) => return,
            Err(e) => tracing::warn!(job = %id, error = format!("{e:#}"),
                "could not check on a job running in another process; trying again"),
        }
    }
}

enum Watch {
    StillRunning,
    Over,
}

async fn put_back_if_orphaned(
    pg: &PgPool,
    redis: &RedisQueues,
    id: &str,
    stale_after: Duration,
) -> anyhow::Result<Watch> {
    let Some(watched) = store::watched_job(pg, id, stale_after).await? else {
        return Ok(Watch::Over);
    };
    if watched.runs_in_live_process {
        return Ok(Watch::StillRunning);
    }
    let job = &watched.candidate.job;
    let queue: Queue = job.queue.parse()?;
    if job.state != "running" || redis.holds(queue, id).await? {
        // Ended, or in Redis to be delivered again: nothing to put back.
        return Ok(Watch::Over);
    }
    if push_unchanged(pg, redis, &[&watched.candidate]).await? > 0 {
        tracing::warn!(job = %id, %queue, "put back in Redis a job whose process died while it ran");
    }
    Ok(Watch::Over)
}

/// Pushes back those of `candidates` unchanged since the journal was read, each held locked
/// until pushed: a job that a retry pushes meanwhile, or that a worker took and ended, is not
/// pushed again. Returns how many it pushed.
async fn push_unchanged(
    pg: &PgPool,
    redis: &RedisQueues,
    candidates: &[&store::RecoveryCandidate],
) -> anyhow::Result<u64> {
    let mut tx = pg.begin().await?;
    let unchanged: HashSet<String> = store::lock_unchanged(&mut tx, candidates)
        .await?
        .into_iter()
        .collect();
    let mut pushed = 0;
    for candidate in candidates.iter().filter(|c| unchanged.contains(&c.job.id)) {
        let job = &candidate.job;
        let (queue, envelope) = job.envelope()?;
        let run_at = match job.state.as_str() {
            "scheduled" | "retrying" => job.scheduled_at,
            _ => None,
        };
        redis.requeue(queue, &envelope, run_at).await?;
        pushed += 1;
    }
    tx.commit().await?;
    Ok(pushed)
}

/// Empties apalis' set of acknowledged ids, dropping the payload and metadata of the jobs
/// that are finished (or gone from the journal); jobs waiting for a retry keep theirs.
///
/// A finished job's row is held while Redis forgets it: `jobs retry` marks the row before it
/// pushes the payload again, so a retry either waits for the forgetting or is seen here and
/// keeps its payload. (Deciding on states read without a lock once deleted the payload of a
/// job a retry had just pushed, and the worker that fetched it died.)
async fn trim(pg: &PgPool, redis: &RedisQueues, queue: Queue) -> anyhow::Result<u64> {
    let mut trimmed = 0;
    for _ in 0..PAGES_PER_PASS {
        let acknowledged = redis.acknowledged(queue, PAGE as isize).await?;
        if acknowledged.is_empty() {
            break;
        }
        let known: HashSet<String> = store::states(pg, &acknowledged)
            .await?
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        let mut tx = pg.begin().await?;
        let finished: HashSet<String> = store::lock_finished(&mut tx, &acknowledged)
            .await?
            .into_iter()
            .collect();
        // A job the journal no longer has was pruned: nothing can retry it.
        let forgotten: Vec<String> = acknowledged
            .iter()
            .filter(|id| finished.contains(*id) || !known.contains(*id))
            .cloned()
            .collect();
        redis.forget(queue, &acknowledged, &forgotten).await?;
        tx.commit().await?;
        trimmed += forgotten.len() as u64;
    }
    Ok(trimmed)
}

/// Deletes finished jobs past their retention, and what Redis still keeps of them.
async fn prune(config: &Config, pg: &PgPool, redis: &RedisQueues) -> anyhow::Result<u64> {
    let keep = Retention {
        completed: config.maintenance.keep_completed,
        failed: config.maintenance.keep_failed,
        cancelled: config.maintenance.keep_cancelled,
    };
    let mut pruned = 0;
    for _ in 0..PAGES_PER_PASS {
        let gone = store::prune(pg, keep, PAGE).await?;
        if gone.is_empty() {
            break;
        }
        pruned += gone.len() as u64;
        for queue in Queue::ALL {
            let of_queue: Vec<&(String, String, Option<String>)> =
                gone.iter().filter(|(_, q, _)| q == queue.name()).collect();
            if of_queue.is_empty() {
                continue;
            }
            let ids: Vec<String> = of_queue.iter().map(|(id, _, _)| id.clone()).collect();
            redis.forget(queue, &[], &ids).await?;
            for (id, _, key) in of_queue {
                if let Some(key) = key {
                    redis.free_idempotency_key(queue, key, id).await?;
                }
            }
        }
    }
    Ok(pruned)
}
