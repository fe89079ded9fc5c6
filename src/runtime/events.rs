//! Telling web tiers when a job changes state. Postgres does the telling itself: triggers on
//! `jobs` (migrations `web_tier`, `statement_triggers`) send `NOTIFY quizworker_job_state` with
//! the job's id, kind, queue, state and attempts whenever a state or an attempt changes, whoever
//! changed it (a worker, the relay, an operator's retry or cancel), on commit. This module
//! repeats each notification on a Redis channel, `<prefix>events`, for web tiers that do not
//! share the database.
//!
//! One daemon repeats them, elected by a session advisory lock on its listening connection: with
//! several daemons, each event is published once. When that connection is lost the lock goes
//! with it and another daemon (or this one, reconnected) takes over; what was notified
//! meanwhile is not repeated. Both channels are at most once, like NOTIFY itself: the status
//! view is the record (docs/WEB_TIER.md).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use redis::aio::ConnectionManager;
use sqlx::postgres::PgListener;

use crate::config::Config;

/// The Postgres channel the journal's trigger notifies on.
pub const PG_CHANNEL: &str = "quizworker_job_state";
/// The advisory lock that elects the daemon repeating events: "qwevents" in ASCII.
const LOCK_KEY: i64 = 0x7177_6576_656e_7473;
/// How often a daemon that is not elected asks again.
const ELECTION_INTERVAL: Duration = Duration::from_secs(2);
/// Notifications published in one Redis round trip, at most.
const PUBLISH_BATCH: usize = 1000;

/// The Redis channel events are repeated on.
pub fn redis_channel(config: &Config) -> String {
    format!("{}events", config.redis.prefix)
}

/// Repeats the journal's notifications on Redis whenever this process is elected, until the
/// task is aborted.
pub async fn run(config: Arc<Config>, redis: ConnectionManager) {
    let channel = redis_channel(&config);
    loop {
        match repeat_while_elected(&config.postgres.url, &channel, redis.clone()).await {
            Ok(()) => {}
            Err(e) => tracing::warn!(
                error = format!("{e:#}"),
                "repeating job events on Redis stopped; trying again"
            ),
        }
        tokio::time::sleep(ELECTION_INTERVAL).await;
    }
}

/// Returns when this process is not elected, or when its listening connection is lost.
async fn repeat_while_elected(
    postgres_url: &str,
    channel: &str,
    mut redis: ConnectionManager,
) -> anyhow::Result<()> {
    let mut listener = PgListener::connect(postgres_url)
        .await
        .context("could not connect to Postgres to listen for job events")?;
    // A lost connection must end the election, not be mended silently without the lock.
    listener.eager_reconnect(false);
    let elected: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(LOCK_KEY)
        .fetch_one(&mut listener)
        .await?;
    if !elected {
        return Ok(());
    }
    listener.listen(PG_CHANNEL).await?;
    tracing::info!(channel, "repeating job events on Redis");
    loop {
        let Some(first) = listener.try_recv().await? else {
            tracing::warn!("lost the connection that listens for job events");
            return Ok(());
        };
        let mut pipe = redis::pipe();
        pipe.publish(channel, first.payload()).ignore();
        let mut count = 1;
        while count < PUBLISH_BATCH
            && let Some(next) = listener.next_buffered()
        {
            pipe.publish(channel, next.payload()).ignore();
            count += 1;
        }
        // Redis away: these events are lost (at most once), the next ones are tried again.
        if let Err(e) = pipe.query_async::<()>(&mut redis).await {
            tracing::warn!(error = %e, events = count, "could not publish job events on Redis");
        }
    }
}
