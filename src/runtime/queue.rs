//! The Redis side of the queues, outside what apalis does itself: enqueueing through the
//! protocol's script, scheduling retries, re-pushing from the journal, removing cancelled jobs,
//! counting, pausing and handing jobs back at shutdown. Keys follow apalis-redis 1.0's layout
//! (docs/PROTOCOL.md).

use std::collections::HashSet;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use quizworker_jobs::{ENQUEUE_SCRIPT, Envelope, Queue};
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::config::Config;

/// Re-pushes a journaled job that is not waiting in Redis (a retry by an operator, or a job
/// Redis lost): the payload and metadata are written again, and the id goes to the scheduled
/// set if it has a run time still to come (ARGV[4], epoch seconds), else to the ready list.
const REQUEUE_SCRIPT: &str = r#"
local queue, id, raw, run_at = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
redis.call('HSET', queue .. ':data', id, raw)
redis.call('HSET', queue .. ':meta:' .. id, 'attempts', 0, 'max_attempts', 25, 'status', 'Pending')
if run_at > tonumber(redis.call('TIME')[1]) then
  redis.call('ZADD', queue .. ':scheduled', run_at, id)
  return 1
end
redis.call('ZREM', queue .. ':scheduled', id)
redis.call('RPUSH', queue .. ':active', id)
redis.call('DEL', queue .. ':signal')
redis.call('LPUSH', queue .. ':signal', 1)
redis.call('PUBLISH', 'tasks:' .. queue .. ':active:available', id)
return 1
"#;

/// Gives a stopping worker's unfinished jobs back: to the front of the ready list, since they
/// were taken first.
const HAND_BACK_SCRIPT: &str = r#"
local queue, worker = ARGV[1], ARGV[2]
local inflight = queue .. ':inflight:' .. worker
local ids = redis.call('SMEMBERS', inflight)
if #ids > 0 then
  redis.call('LPUSH', queue .. ':active', unpack(ids))
  redis.call('DEL', queue .. ':signal')
  redis.call('LPUSH', queue .. ':signal', 1)
end
redis.call('DEL', inflight)
redis.call('ZREM', queue .. ':workers', worker)
return #ids
"#;

/// The result of an enqueue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enqueued {
    pub id: String,
    /// False when the idempotency key (or the id) was already used: `id` is the earlier job.
    pub created: bool,
}

/// How many jobs wait in Redis for one queue.
#[derive(Debug, Clone, Default)]
pub struct WaitingCounts {
    pub ready: u64,
    pub scheduled: u64,
    /// The id at the head of the ready list: the job that has waited longest.
    pub oldest_ready: Option<String>,
}

#[derive(Clone)]
pub struct RedisQueues {
    conn: ConnectionManager,
    prefix: String,
    enqueue: redis::Script,
    requeue: redis::Script,
    hand_back: redis::Script,
}

impl RedisQueues {
    pub async fn connect(config: &Config) -> anyhow::Result<RedisQueues> {
        let conn = connect(config).await?;
        Ok(RedisQueues {
            conn,
            prefix: config.redis.prefix.clone(),
            enqueue: redis::Script::new(ENQUEUE_SCRIPT),
            requeue: redis::Script::new(REQUEUE_SCRIPT),
            hand_back: redis::Script::new(HAND_BACK_SCRIPT),
        })
    }

    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// The apalis queue name: the start of every key of the queue.
    pub fn name(&self, queue: Queue) -> String {
        format!("{}{}", self.prefix, queue)
    }

    fn paused_key(&self) -> String {
        format!("{}paused", self.prefix)
    }

    /// Enqueues through the protocol's script, exactly as a producer in any language does.
    pub async fn enqueue(&self, queue: Queue, envelope: &Envelope) -> anyhow::Result<Enqueued> {
        let (id, created): (String, i64) = self
            .enqueue
            .prepare_invoke()
            .arg(self.name(queue))
            .arg(envelope.encode())
            .invoke_async(&mut self.conn.clone())
            .await
            .context("enqueue script failed")?;
        Ok(Enqueued {
            id,
            created: created == 1,
        })
    }

    /// Puts a job that failed an attempt back in the scheduled set for its next attempt.
    pub async fn schedule_retry(
        &self,
        queue: Queue,
        id: &str,
        run_at: DateTime<Utc>,
    ) -> redis::RedisResult<()> {
        let key = format!("{}:scheduled", self.name(queue));
        self.conn
            .clone()
            .zadd::<_, _, _, ()>(key, id, due_second(run_at))
            .await
    }

    /// Puts a journaled job back in Redis; the caller knows it is not waiting there already.
    pub async fn requeue(
        &self,
        queue: Queue,
        envelope: &Envelope,
        run_at: Option<DateTime<Utc>>,
    ) -> anyhow::Result<()> {
        self.requeue
            .prepare_invoke()
            .arg(self.name(queue))
            .arg(envelope.id.to_string())
            .arg(envelope.encode())
            .arg(run_at.map(due_second).unwrap_or(0))
            .invoke_async::<i64>(&mut self.conn.clone())
            .await
            .with_context(|| format!("could not re-push job {} to Redis", envelope.id))?;
        Ok(())
    }

    /// Takes a waiting job out of the ready list and the scheduled set; true if it was there.
    pub async fn remove_waiting(&self, queue: Queue, id: &str) -> anyhow::Result<bool> {
        let name = self.name(queue);
        let (from_ready, from_scheduled): (i64, i64) = redis::pipe()
            .atomic()
            .lrem(format!("{name}:active"), 0, id)
            .zrem(format!("{name}:scheduled"), id)
            .query_async(&mut self.conn.clone())
            .await
            .context("could not remove the job from Redis")?;
        Ok(from_ready + from_scheduled > 0)
    }

    /// The envelope bytes Redis holds for a job, if any.
    pub async fn stored_job(&self, queue: Queue, id: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let key = format!("{}:data", self.name(queue));
        self.conn
            .clone()
            .hget(key, id)
            .await
            .context("could not read the job from Redis")
    }

    pub async fn waiting_counts(&self, queue: Queue) -> anyhow::Result<WaitingCounts> {
        let name = self.name(queue);
        let (ready, scheduled, oldest): (u64, u64, Option<String>) = redis::pipe()
            .llen(format!("{name}:active"))
            .zcard(format!("{name}:scheduled"))
            .lindex(format!("{name}:active"), 0)
            .query_async(&mut self.conn.clone())
            .await
            .context("could not count the queue in Redis")?;
        Ok(WaitingCounts {
            ready,
            scheduled,
            oldest_ready: oldest,
        })
    }

    /// Every id Redis holds as waiting or taken for a queue: ready, scheduled, or in a worker's
    /// hands.
    pub async fn ids_in_redis(&self, queue: Queue) -> redis::RedisResult<HashSet<String>> {
        let name = self.name(queue);
        let mut conn = self.conn.clone();
        let (ready, scheduled): (Vec<String>, Vec<String>) = redis::pipe()
            .lrange(format!("{name}:active"), 0, -1)
            .zrange(format!("{name}:scheduled"), 0, -1)
            .query_async(&mut conn)
            .await?;
        let mut ids: HashSet<String> = ready.into_iter().chain(scheduled).collect();
        let inflight_sets: Vec<String> = {
            let mut keys = conn.scan_match(format!("{name}:inflight:*")).await?;
            let mut found = Vec::new();
            while let Some(key) = keys.next_item().await {
                found.push(key?);
            }
            found
        };
        for set in inflight_sets {
            let members: Vec<String> = conn.smembers(set).await?;
            ids.extend(members);
        }
        Ok(ids)
    }

    /// Up to `count` ids from the set of jobs apalis has acknowledged.
    pub async fn acknowledged(
        &self,
        queue: Queue,
        count: isize,
    ) -> redis::RedisResult<Vec<String>> {
        let key = format!("{}:done", self.name(queue));
        self.conn.clone().srandmember_multiple(key, count).await
    }

    /// Drops what Redis keeps of finished jobs (payload and metadata) and takes every given id
    /// out of the acknowledged set.
    pub async fn forget(
        &self,
        queue: Queue,
        acknowledged: &[String],
        finished: &[String],
    ) -> redis::RedisResult<()> {
        let name = self.name(queue);
        let mut pipe = redis::pipe();
        if !acknowledged.is_empty() {
            pipe.srem(format!("{name}:done"), acknowledged).ignore();
        }
        if !finished.is_empty() {
            pipe.hdel(format!("{name}:data"), finished).ignore();
            let metas: Vec<String> = finished
                .iter()
                .map(|id| format!("{name}:meta:{id}"))
                .collect();
            pipe.del(metas).ignore();
        }
        pipe.query_async(&mut self.conn.clone()).await
    }

    /// Frees an idempotency key whose job has left the journal.
    pub async fn free_idempotency_key(
        &self,
        queue: Queue,
        key: &str,
        id: &str,
    ) -> redis::RedisResult<()> {
        let key = format!("{}:idempotency:{key}", self.name(queue));
        let mut conn = self.conn.clone();
        let holder: Option<String> = conn.get(&key).await?;
        if holder.as_deref() == Some(id) {
            conn.del::<_, ()>(&key).await?;
        }
        Ok(())
    }

    pub async fn hand_back(&self, queue: Queue, worker: &str) -> redis::RedisResult<u64> {
        self.hand_back
            .prepare_invoke()
            .arg(self.name(queue))
            .arg(worker)
            .invoke_async(&mut self.conn.clone())
            .await
    }

    pub async fn set_paused(&self, queue: Queue, paused: bool) -> anyhow::Result<()> {
        let mut conn = self.conn.clone();
        if paused {
            conn.sadd::<_, _, ()>(self.paused_key(), queue.name()).await
        } else {
            conn.srem::<_, _, ()>(self.paused_key(), queue.name()).await
        }
        .context("could not change the paused queues in Redis")
    }

    pub async fn paused(&self) -> redis::RedisResult<HashSet<Queue>> {
        let names: Vec<String> = self.conn.clone().smembers(self.paused_key()).await?;
        Ok(names.iter().filter_map(|n| n.parse().ok()).collect())
    }
}

/// The scheduled-set score of a run time. Scores are whole seconds and due means score <= now:
/// round up, or a job could run up to a second early.
fn due_second(run_at: DateTime<Utc>) -> i64 {
    run_at.timestamp() + i64::from(run_at.timestamp_subsec_nanos() > 0)
}

/// A Redis connection that reconnects by itself, with our response timeout.
pub async fn connect(config: &Config) -> anyhow::Result<ConnectionManager> {
    let client = redis::Client::open(config.redis.url.as_str()).context("invalid Redis URL")?;
    let manager_config = ConnectionManagerConfig::new()
        .set_response_timeout(Some(config.redis.response_timeout))
        .set_connection_timeout(Some(Duration::from_secs(5)));
    client
        .get_connection_manager_with_config(manager_config)
        .await
        .with_context(|| {
            format!(
                "could not connect to Redis at {}",
                redacted(&config.redis.url)
            )
        })
}

/// A URL fit for a log line (the one place that masks credentials is `ops::redact`).
pub use crate::ops::redact::redacted;
