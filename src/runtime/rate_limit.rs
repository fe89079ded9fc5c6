//! Per-queue rate limits (`rate = "20/s"` in `[queues.<queue>]`), held across every process
//! that shares the Redis prefix, so a provider's limit holds however many daemons run.
//!
//! The limit is GCRA (the generic cell rate algorithm) in one Lua script: Redis keeps, per
//! queue, the theoretical arrival time (TAT) of the next unit, read on Redis' own clock
//! (`TIME`), so every process shares one clock whatever theirs say. A call either takes the
//! slot (the TAT moves on by one emission interval) or says how long to wait; the caller
//! sleeps that long and asks again. Nothing is reserved while it waits, so a wait that is
//! abandoned (the job timed out, the process stopped) costs the others nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use quizworker_jobs::Queue;
use redis::aio::ConnectionManager;

use crate::config::Config;
use crate::ops::metrics;

/// KEYS[1]: the queue's limit. ARGV[1]: the emission interval, ARGV[2]: the tolerance, both in
/// microseconds. Returns 0 when the unit is taken, else the microseconds to wait before asking
/// again. Times are microseconds of Redis' clock since the epoch (about 1.8e15: a Lua number,
/// a double, holds them exactly below 9e15), and the TAT is written with `%.0f` because Lua's
/// own conversion to text keeps only 14 digits.
const GCRA_SCRIPT: &str = r#"
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local allowed_at = tat - tolerance
if now < allowed_at then
  return allowed_at - now
end
local next_tat = tat + interval
-- The key matters only until its TAT has passed (then a missing key means the same), so it
-- lives that long plus one interval: an idle limit leaves nothing behind.
local ttl_ms = math.ceil((next_tat - now + interval) / 1000)
redis.call('SET', KEYS[1], string.format('%.0f', next_tat), 'PX', ttl_ms)
return 0
"#;

/// How far ahead of its turn a unit may be taken, in microseconds.
///
/// Strict spacing (0) falls well short at high rates. Measured on this project's 2-core VM
/// (shared, load 3 to 5), Redis 7.0.15 on the same machine, the debug build: 50 tasks taking
/// units for 3 s through one `RateLimits`, or two (as two processes would), one or two runs
/// of each; the rate counted where the units were taken, from the first to the last:
///
/// | limit  | strict (0)     | 1 ms       | 2 ms       | 5 ms (chosen)    |
/// |--------|----------------|------------|------------|------------------|
/// | 1000/s | 374 to 426/s   | 794, 819/s | 909, 937/s | 946 to 1002/s    |
/// | 200/s  | 136 to 153/s   | 179, 182/s | 192, 194/s | 199.5 to 200.2/s |
/// | 20/s   | 19.2 to 19.4/s | 19.5/s     | 19.8/s     | 20.0/s           |
///
/// (Over 1000/s: the first few units of a run may come at once, see below, and the times are
/// taken when each reply is read.) A waiter sleeps on tokio's 1 ms timer wheel and then needs
/// a round trip, so it asks again a millisecond or more after its turn (more on a busy
/// machine); with strict spacing that lateness is lost at every unit, and at 1000/s it is the
/// whole interval. With a tolerance the waiter is told to come back that much before its turn,
/// so lateness up to the tolerance loses nothing. GCRA still lets no more than one unit per
/// interval through over time; a unit is at most 5 ms early, so at most 1 + 5 ms / interval
/// come at once (one below 200/s), and a span of time holds at most one unit more than strict
/// spacing would let through (a second at 20/s: 21 either way).
const TOLERANCE_MICROS: u64 = 5_000;

/// A Redis failure while asking for a slot. The executor makes it a transient failure of the
/// attempt, so the queue's retry rules apply.
#[derive(Debug, thiserror::Error)]
#[error("could not ask Redis for a slot of the {queue} queue's rate limit")]
pub struct RateLimitError {
    pub queue: Queue,
    #[source]
    pub source: redis::RedisError,
}

/// Every queue's limit for this process; cheap to clone (an `Arc`).
#[derive(Clone)]
pub struct RateLimits {
    inner: Arc<Inner>,
}

struct Inner {
    conn: ConnectionManager,
    script: redis::Script,
    /// By the queue's place in `Queue::ALL`; `None`: unlimited.
    limits: [Option<Limit>; Queue::ALL.len()],
}

struct Limit {
    key: String,
    interval_micros: u64,
    /// One waiter per queue per process asks Redis; the others queue up here (tokio's mutex is
    /// fair, so they take their turns in order). Without it every waiting job would ask about
    /// once per interval: 1000 jobs waiting on a 20/s queue would make 20,000 calls a second.
    /// With it, Redis sees about one call per unit per process. The turn is only this
    /// process' order of asking: nothing is reserved, and a waiter dropped mid-wait gives its
    /// turn to the next.
    turn: tokio::sync::Mutex<()>,
}

impl RateLimits {
    /// The limits of `config`'s queues, on `conn` (a connection the process already has: the
    /// script is one short call per unit).
    pub fn new(config: &Config, conn: ConnectionManager) -> RateLimits {
        let limits = Queue::ALL.map(|queue| {
            config.queue(queue).rate.map(|rate| Limit {
                key: format!("{}rate:{queue}", config.redis.prefix),
                interval_micros: rate.emission_interval_micros(),
                turn: tokio::sync::Mutex::new(()),
            })
        });
        RateLimits {
            inner: Arc::new(Inner {
                conn,
                script: redis::Script::new(GCRA_SCRIPT),
                limits,
            }),
        }
    }

    /// Waits until one more unit of `queue` is allowed, and takes it. Returns at once, without
    /// asking Redis, for a queue without a rate. The time spent here goes to
    /// `quizworker_rate_limit_wait_seconds_total`, also when the caller gives up waiting.
    pub async fn acquire(&self, queue: Queue) -> Result<(), RateLimitError> {
        let Some(limit) = self.limit(queue) else {
            return Ok(());
        };
        let _waiting = WaitTimer {
            queue,
            since: Instant::now(),
        };
        let _turn = limit.turn.lock().await;
        let mut conn = self.inner.conn.clone();
        loop {
            let wait_micros: u64 = self
                .inner
                .script
                .key(&limit.key)
                .arg(limit.interval_micros)
                .arg(TOLERANCE_MICROS)
                .invoke_async(&mut conn)
                .await
                .map_err(|source| RateLimitError { queue, source })?;
            if wait_micros == 0 {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_micros(wait_micros)).await;
        }
    }

    fn limit(&self, queue: Queue) -> Option<&Limit> {
        let index = Queue::ALL.iter().position(|&q| q == queue)?;
        self.inner.limits[index].as_ref()
    }
}

/// Counts the time an `acquire` took when it ends, however it ends.
struct WaitTimer {
    queue: Queue,
    since: Instant,
}

impl Drop for WaitTimer {
    fn drop(&mut self) {
        metrics::rate_limit_waited(self.queue, self.since.elapsed());
    }
}
