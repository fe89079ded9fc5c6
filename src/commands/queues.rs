//! `queues`: what waits, runs and failed per queue; `queues pause|resume`.

use std::collections::HashMap;

use anyhow::Context;
use chrono::{DateTime, Utc};
use quizworker_jobs::Queue;
use serde::Serialize;

use super::output::{self, outln};
use super::{connect_postgres, connect_redis, parse_queue};
use crate::cli::QueuesAction;
use crate::config::Config;
use crate::runtime::journal::store;
use crate::runtime::queue::RedisQueues;

#[derive(Serialize)]
struct QueueRow {
    queue: &'static str,
    paused: bool,
    /// `rate` in the queue's config, as written back (`"20/s"`); null when unlimited.
    rate: Option<String>,
    queued: u64,
    scheduled: u64,
    running: i64,
    retrying: i64,
    failed: i64,
    completed_last_hour: i64,
    /// Seconds since the job at the head of the ready list was created.
    oldest_waiting_secs: Option<i64>,
}

pub async fn execute(
    config: &Config,
    action: Option<QueuesAction>,
    json: bool,
) -> anyhow::Result<()> {
    match action {
        Some(QueuesAction::Pause { queue }) => {
            let queue = parse_queue("queues pause", &queue)?;
            connect_redis(config).await?.set_paused(queue, true).await?;
            outln!("paused {queue}: running processes stop taking its jobs within a second")?;
            Ok(())
        }
        Some(QueuesAction::Resume { queue }) => {
            let queue = parse_queue("queues resume", &queue)?;
            connect_redis(config)
                .await?
                .set_paused(queue, false)
                .await?;
            outln!("resumed {queue}")?;
            Ok(())
        }
        None => show(config, &connect_redis(config).await?, json).await,
    }
}

async fn show(config: &Config, redis: &RedisQueues, json: bool) -> anyhow::Result<()> {
    let pool = connect_postgres(config).await?;
    let stats: HashMap<String, store::QueueStats> = store::queue_stats(&pool)
        .await?
        .into_iter()
        .map(|s| (s.queue.clone(), s))
        .collect();
    let paused = redis
        .paused()
        .await
        .context("could not read the paused queues")?;
    let now = Utc::now();
    let mut rows = Vec::new();
    for queue in Queue::ALL {
        let waiting = redis.waiting_counts(queue).await?;
        let journal = stats.get(queue.name()).cloned().unwrap_or_default();
        let oldest_waiting_secs = waiting
            .oldest_ready
            .and_then(|id| id.parse::<ulid::Ulid>().ok())
            .map(|id| {
                (now - DateTime::<Utc>::from(id.datetime()))
                    .num_seconds()
                    .max(0)
            });
        rows.push(QueueRow {
            queue: queue.name(),
            paused: paused.contains(&queue),
            rate: config.queue(queue).rate.map(|rate| rate.to_string()),
            queued: waiting.ready,
            // The scheduled set also holds the jobs waiting out a retry backoff.
            scheduled: waiting
                .scheduled
                .saturating_sub(u64::try_from(journal.retrying).unwrap_or(0)),
            running: journal.running,
            retrying: journal.retrying,
            failed: journal.failed,
            completed_last_hour: journal.completed_last_hour,
            oldest_waiting_secs,
        });
    }
    if json {
        return output::print_json(&rows);
    }
    let mut table = output::table(&[
        "QUEUE",
        "QUEUED",
        "SCHEDULED",
        "RUNNING",
        "RETRYING",
        "FAILED",
        "COMPLETED 1H",
        "OLDEST WAITING",
        "RATE",
        "PAUSED",
    ]);
    for r in &rows {
        table.add_row(vec![
            r.queue.to_string(),
            r.queued.to_string(),
            r.scheduled.to_string(),
            r.running.to_string(),
            r.retrying.to_string(),
            r.failed.to_string(),
            r.completed_last_hour.to_string(),
            r.oldest_waiting_secs
                .map(|s| {
                    humantime::format_duration(std::time::Duration::from_secs(s as u64)).to_string()
                })
                .unwrap_or_else(|| "-".into()),
            r.rate.clone().unwrap_or_else(|| "-".into()),
            if r.paused { "yes" } else { "no" }.to_string(),
        ]);
    }
    outln!("{table}")?;
    Ok(())
}
