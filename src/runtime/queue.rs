//! The Redis side of the queues, outside what apalis does itself: enqueueing through the
//! protocol's script, scheduling retries, re-pushing from the journal, removing cancelled jobs,
//! counting, pausing and handing jobs back at shutdown. Keys follow apalis-redis 1.0's layout
//! (docs/PROTOCOL.md).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use anyhow::Context;
use apalis_core::task::status::Status as TaskStatus;
use chrono::{DateTime, Utc};
use quizworker_jobs::limits::{ECHO_BYTES, shorten};
use quizworker_jobs::{ENQUEUE_SCRIPT, Envelope, Queue};
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ulid::Ulid;

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

/// Pushes journaled jobs that no run has pushed yet (ARGV[2..], four per job: id, envelope,
/// run-at epoch seconds, idempotency key or ""): a job whose payload Redis already holds was
/// pushed before (a relay that died before it could say so) and is skipped. Returns how many
/// it pushed.
const PUSH_NEW_SCRIPT: &str = r#"
local queue = ARGV[1]
local now = tonumber(redis.call('TIME')[1])
local ready, pushed = {}, 0
for i = 2, #ARGV, 4 do
  local id, raw, run_at, key = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]), ARGV[i + 3]
  if redis.call('HSETNX', queue .. ':data', id, raw) == 1 then
    redis.call('HSET', queue .. ':meta:' .. id,
      'attempts', 0, 'max_attempts', 25, 'status', 'Pending', 'idempotency_key', key)
    if run_at > now then
      redis.call('ZADD', queue .. ':scheduled', run_at, id)
    else
      table.insert(ready, id)
    end
    pushed = pushed + 1
  end
end
for i = 1, #ready, 1000 do
  redis.call('RPUSH', queue .. ':active', unpack(ready, i, math.min(i + 999, #ready)))
end
if #ready > 0 then
  redis.call('DEL', queue .. ':signal')
  redis.call('LPUSH', queue .. ':signal', 1)
  redis.call('PUBLISH', 'tasks:' .. queue .. ':active:available', ready[#ready])
end
return pushed
"#;

/// Gives a stopped or dead worker's jobs back, to the front of the ready list since they were
/// taken first, except those still running in this process (ARGV[3..]): they stay in the
/// worker's in-flight set until they end ([`RELEASE_SCRIPT`]), and the worker stays
/// registered meanwhile, so that if this process dies too, apalis' orphan recovery gives them
/// back. A worker left with nothing is unregistered and its keys deleted. Returns the ids kept.
const HAND_BACK_SCRIPT: &str = r#"
local queue, worker = ARGV[1], ARGV[2]
local inflight = queue .. ':inflight:' .. worker
local running = {}
for i = 3, #ARGV do running[ARGV[i]] = true end
local back, kept = {}, {}
for _, id in ipairs(redis.call('SMEMBERS', inflight)) do
  if running[id] then table.insert(kept, id) else table.insert(back, id) end
end
for i = 1, #back, 1000 do
  local page = {unpack(back, i, math.min(i + 999, #back))}
  redis.call('LPUSH', queue .. ':active', unpack(page))
  redis.call('SREM', inflight, unpack(page))
end
if #back > 0 then
  redis.call('DEL', queue .. ':signal')
  redis.call('LPUSH', queue .. ':signal', 1)
end
if #kept == 0 then
  redis.call('DEL', inflight)
  redis.call('ZREM', queue .. ':workers', worker)
  redis.call('DEL', queue .. ':workers:metadata:' .. worker)
else
  redis.call('ZADD', queue .. ':workers', tonumber(redis.call('TIME')[1]), worker)
end
return {#back, kept}
"#;

/// Takes jobs that have ended (ARGV[3..]) out of a dead worker's in-flight set, as apalis'
/// acknowledgement would have; the journal has their outcome. The worker is unregistered once
/// its set is empty, and otherwise kept alive.
const RELEASE_SCRIPT: &str = r#"
local queue, worker = ARGV[1], ARGV[2]
local inflight = queue .. ':inflight:' .. worker
for i = 3, #ARGV do redis.call('SREM', inflight, ARGV[i]) end
if redis.call('SCARD', inflight) == 0 then
  redis.call('ZREM', queue .. ':workers', worker)
  redis.call('DEL', queue .. ':workers:metadata:' .. worker)
  return 0
end
redis.call('ZADD', queue .. ':workers', 'XX', tonumber(redis.call('TIME')[1]), worker)
return redis.call('SCARD', inflight)
"#;

/// Makes a job of the scheduled set due (ARGV[1] queue, ARGV[2] id) and wakes the workers: the
/// next fetch moves it to the ready list, as it does any due job. Its score becomes 0, due by
/// any clock (apalis compares scores with the fetching process' clock). Returns 0 if the id is
/// not in the scheduled set: already due or taken, or not in Redis.
const DUE_NOW_SCRIPT: &str = r#"
local queue, id = ARGV[1], ARGV[2]
if not redis.call('ZSCORE', queue .. ':scheduled', id) then
  return 0
end
redis.call('ZADD', queue .. ':scheduled', 0, id)
redis.call('PUBLISH', 'tasks:' .. queue .. ':active:available', id)
return 1
"#;

/// The result of an enqueue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enqueued {
    pub id: String,
    /// False when the idempotency key (or the id) was already used: `id` is the earlier job.
    pub created: bool,
}

/// One id of a worker's in-flight set, with what Redis holds of it.
#[derive(Debug, Clone)]
pub struct HeldEntry {
    pub id: String,
    /// `Q:data`'s field, if there is one.
    pub data: Option<Vec<u8>>,
    /// `Q:meta:<id>`, empty if missing.
    pub meta: HashMap<String, String>,
}

impl HeldEntry {
    /// Why apalis-redis 1.0 cannot take or acknowledge this entry, if it cannot: its fetch
    /// fails as a whole on one such entry (`deserialize_with_meta`), and a worker that
    /// acknowledges an id other than the one it stored fails too, so either kills the worker.
    /// The checks mirror apalis-redis' own.
    pub fn unreadable(&self) -> Option<String> {
        let Ok(ulid) = self.id.parse::<Ulid>() else {
            return Some(format!(
                "its id `{}` is not a ULID",
                shorten(&self.id, ECHO_BYTES)
            ));
        };
        if ulid.to_string() != self.id {
            return Some(format!(
                "its id `{}` is not in canonical form (upper case: {ulid})",
                self.id
            ));
        }
        if self.data.is_none() {
            return Some(
                "Redis holds no payload for it (no field in the queue's data hash)".into(),
            );
        }
        if self.meta.is_empty() {
            return Some("Redis holds no metadata for it (no meta hash)".into());
        }
        for field in ["attempts", "max_attempts"] {
            match self.meta.get(field) {
                None => return Some(format!("its metadata has no `{field}`")),
                Some(value) if value.parse::<u32>().is_err() => {
                    return Some(format!(
                        "its metadata's `{field}` is `{}`, not an integer from 0 to 4294967295",
                        shorten(value, ECHO_BYTES)
                    ));
                }
                Some(_) => {}
            }
        }
        match self.meta.get("status") {
            None => Some("its metadata has no `status`".into()),
            Some(status) if status.parse::<TaskStatus>().is_err() => Some(format!(
                "its metadata's `status` is `{}`, not one of apalis' states",
                shorten(status, ECHO_BYTES)
            )),
            Some(_) => None,
        }
    }
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
    release: redis::Script,
    push_new: redis::Script,
    due_now: redis::Script,
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
            release: redis::Script::new(RELEASE_SCRIPT),
            push_new: redis::Script::new(PUSH_NEW_SCRIPT),
            due_now: redis::Script::new(DUE_NOW_SCRIPT),
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

    /// Takes each job's idempotency key on `queue` for it, unless another job holds it already:
    /// returns, per job in order, the holder when it is another job. A key taken once stays
    /// taken by its job, so taking it again for the same job is no change.
    pub async fn take_idempotency_keys(
        &self,
        queue: Queue,
        jobs: &[(&str, &str)],
    ) -> anyhow::Result<Vec<Option<String>>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let name = self.name(queue);
        let mut pipe = redis::pipe();
        for (id, key) in jobs {
            pipe.cmd("SET")
                .arg(format!("{name}:idempotency:{key}"))
                .arg(id)
                .arg("NX")
                .arg("GET");
        }
        let holders: Vec<Option<String>> = pipe
            .query_async(&mut self.conn.clone())
            .await
            .context("could not take idempotency keys in Redis")?;
        Ok(jobs
            .iter()
            .zip(holders)
            .map(|((id, _), holder)| holder.filter(|holder| holder != id))
            .collect())
    }

    /// Pushes journaled jobs of one queue that were never pushed (see [`PUSH_NEW_SCRIPT`]);
    /// returns how many it pushed.
    pub async fn push_new(&self, queue: Queue, envelopes: &[&Envelope]) -> anyhow::Result<u64> {
        if envelopes.is_empty() {
            return Ok(0);
        }
        let mut invocation = self.push_new.prepare_invoke();
        invocation.arg(self.name(queue));
        for envelope in envelopes {
            invocation
                .arg(envelope.id.to_string())
                .arg(envelope.encode())
                .arg(envelope.run_at.map(due_second).unwrap_or(0))
                .arg(envelope.idempotency_key.as_deref().unwrap_or(""));
        }
        invocation
            .invoke_async(&mut self.conn.clone())
            .await
            .with_context(|| format!("could not push jobs to Redis queue {queue}"))
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

    /// Makes a job that waits for its time in the scheduled set due now; false if it is not
    /// there.
    pub async fn make_due(&self, queue: Queue, id: &str) -> anyhow::Result<bool> {
        let moved: i64 = self
            .due_now
            .prepare_invoke()
            .arg(self.name(queue))
            .arg(id)
            .invoke_async(&mut self.conn.clone())
            .await
            .context("could not make the job due in Redis")?;
        Ok(moved == 1)
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

    /// The keys that match a `SCAN` pattern (a few per queue: workers' sets and hashes).
    async fn keys_matching(&self, pattern: &str) -> redis::RedisResult<Vec<String>> {
        let mut conn = self.conn.clone();
        let mut scan = conn.scan_match::<_, String>(pattern).await?;
        let mut keys = Vec::new();
        while let Some(key) = scan.next_item().await {
            keys.push(key?);
        }
        Ok(keys)
    }

    /// Whether Redis holds the job as waiting or taken: ready, scheduled, or in a worker's hands.
    pub async fn holds(&self, queue: Queue, id: &str) -> redis::RedisResult<bool> {
        let name = self.name(queue);
        let mut conn = self.conn.clone();
        let (ready, scheduled): (Option<i64>, Option<f64>) = redis::pipe()
            .cmd("LPOS")
            .arg(format!("{name}:active"))
            .arg(id)
            .zscore(format!("{name}:scheduled"), id)
            .query_async(&mut conn)
            .await?;
        if ready.is_some() || scheduled.is_some() {
            return Ok(true);
        }
        for key in self.keys_matching(&format!("{name}:inflight:*")).await? {
            if conn.sismember(key, id).await? {
                return Ok(true);
            }
        }
        Ok(false)
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
        let inflight_sets = self.keys_matching(&format!("{name}:inflight:*")).await?;
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

    /// Deletes apalis' metadata hashes of workers no longer registered (apalis writes one per
    /// worker and never deletes it: every restart and every worker death left one behind).
    /// Returns how many it deleted.
    pub async fn forget_dead_workers(&self, queue: Queue) -> redis::RedisResult<u64> {
        let name = self.name(queue);
        let prefix = format!("{name}:workers:metadata:");
        let mut conn = self.conn.clone();
        let keys = self.keys_matching(&format!("{prefix}*")).await?;
        let mut deleted = 0;
        for key in keys {
            let worker = &key[prefix.len()..];
            let registered: Option<f64> = conn.zscore(format!("{name}:workers"), worker).await?;
            if registered.is_none() {
                deleted += conn.del::<_, u64>(&key).await?;
            }
        }
        Ok(deleted)
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

    /// Gives a worker's jobs back to the queue, except `running` (see [`HAND_BACK_SCRIPT`]);
    /// returns how many went back and the ids kept.
    pub async fn hand_back(
        &self,
        queue: Queue,
        worker: &str,
        running: &HashSet<String>,
    ) -> redis::RedisResult<(u64, Vec<String>)> {
        self.hand_back
            .prepare_invoke()
            .arg(self.name(queue))
            .arg(worker)
            .arg(running.iter().collect::<Vec<_>>())
            .invoke_async(&mut self.conn.clone())
            .await
    }

    /// Takes ended jobs out of a dead worker's in-flight set (see [`RELEASE_SCRIPT`]); returns
    /// how many it still holds.
    pub async fn release(
        &self,
        queue: Queue,
        worker: &str,
        ended: &[String],
    ) -> redis::RedisResult<u64> {
        self.release
            .prepare_invoke()
            .arg(self.name(queue))
            .arg(worker)
            .arg(ended)
            .invoke_async(&mut self.conn.clone())
            .await
    }

    /// What a worker's in-flight set holds, each id with its payload and apalis' metadata as
    /// Redis has them, for finding the entries apalis cannot read.
    pub async fn held_by(&self, queue: Queue, worker: &str) -> redis::RedisResult<Vec<HeldEntry>> {
        let name = self.name(queue);
        let mut conn = self.conn.clone();
        let ids: Vec<String> = conn.smembers(format!("{name}:inflight:{worker}")).await?;
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.hget(format!("{name}:data"), id)
                .hgetall(format!("{name}:meta:{id}"));
        }
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let replies: Vec<redis::Value> = pipe.query_async(&mut conn).await?;
        ids.into_iter()
            .zip(replies.chunks(2))
            .map(|(id, pair)| {
                Ok(HeldEntry {
                    id,
                    data: redis::from_redis_value(pair[0].clone())?,
                    // A meta key of another type is as unreadable to apalis as a missing one.
                    meta: redis::from_redis_value(pair[1].clone()).unwrap_or_default(),
                })
            })
            .collect()
    }

    /// Takes entries out of a dead worker's in-flight set, with their payload and metadata:
    /// the journal keeps what they were.
    pub async fn discard(
        &self,
        queue: Queue,
        worker: &str,
        ids: &[String],
    ) -> redis::RedisResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let name = self.name(queue);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .srem(format!("{name}:inflight:{worker}"), ids)
            .ignore()
            .hdel(format!("{name}:data"), ids)
            .ignore();
        for id in ids {
            pipe.del(format!("{name}:meta:{id}")).ignore();
        }
        pipe.query_async(&mut self.conn.clone()).await
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
