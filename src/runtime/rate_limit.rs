//! Per-queue rate limits (`rate = "20/s"` in `[queues.<queue>]`), held across every process
//! that shares the Redis prefix, so a provider's limit holds however many daemons run.
//!
//! The limit is GCRA (the generic cell rate algorithm) in one Lua script: Redis keeps, per
//! queue, the theoretical arrival time (TAT) of the next unit, read on Redis' own clock
//! (`TIME`), so every process shares one clock whatever theirs say. A call either takes the
//! slot (the TAT moves on by one emission interval) or says how long to wait; the caller
//! sleeps that long and asks again. Nothing is reserved while it waits, so a wait that is
//! abandoned (the job timed out, the process stopped) costs the others nothing.
//!
//! A unit may cost more than one: the AI provider's tokens per minute (`ai.tokens_per_minute`)
//! are a second limit of the same kind, where a request takes the tokens reckoned for it
//! ([`RateLimits::acquire_n`]). The check is made before the cost is added: a request waits
//! until the tokens of those before it have been spaced out, then moves the TAT on by its own.
//! Once its reply says what it really took, [`RateLimits::settle`] moves the TAT by the
//! difference (later for a debt, earlier for tokens reserved and not used, never before now).

use std::sync::Arc;
use std::time::{Duration, Instant};

use quizworker_jobs::Queue;
use redis::aio::ConnectionManager;

use crate::config::Config;
use crate::ops::metrics;

/// KEYS[1]: the limit. ARGV[1]: the emission interval (microseconds, a fraction allowed),
/// ARGV[2]: the tolerance (microseconds), ARGV[3]: the units taken. Returns 0 when they are
/// taken, else the microseconds to wait before asking again. Times are microseconds of Redis'
/// clock since the epoch (about 1.8e15: a Lua number, a double, holds them exactly below
/// 9e15), and the TAT is written with `%.0f` because Lua's own conversion to text keeps only
/// 14 digits.
const GCRA_SCRIPT: &str = r#"
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local units = tonumber(ARGV[3])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local allowed_at = tat - tolerance
if now < allowed_at then
  return math.ceil(allowed_at - now)
end
local next_tat = tat + interval * units
-- The key matters only until its TAT has passed (then a missing key means the same), so it
-- lives that long plus one interval: an idle limit leaves nothing behind.
local ttl_ms = math.ceil((next_tat - now + interval) / 1000)
redis.call('SET', KEYS[1], string.format('%.0f', next_tat), 'PX', ttl_ms)
return 0
"#;

/// KEYS[1]: the limit. ARGV[1]: microseconds to move its TAT by (negative: back). The TAT never
/// moves back before now: units reserved and not used give back time not yet spent, never
/// credit for time already past. Returns nothing.
const SETTLE_SCRIPT: &str = r#"
local shift = tonumber(ARGV[1])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local next_tat = tat + shift
if next_tat <= now then
  redis.call('DEL', KEYS[1])
  return 0
end
redis.call('SET', KEYS[1], string.format('%.0f', next_tat), 'PX', math.ceil((next_tat - now) / 1000) + 1000)
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

/// What a limit meters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Meter {
    /// A queue's `rate` (`[queues.<queue>]`): jobs, email messages, AI requests.
    Queue(Queue),
    /// The AI provider's tokens per minute (`ai.tokens_per_minute`), over every AI job.
    AiTokens,
}

impl Meter {
    /// Every meter, in the order `RateLimits` keeps them.
    const ALL: [Meter; Queue::ALL.len() + 1] = {
        let mut all = [Meter::AiTokens; Queue::ALL.len() + 1];
        let mut i = 0;
        while i < Queue::ALL.len() {
            all[i] = Meter::Queue(Queue::ALL[i]);
            i += 1;
        }
        all
    };

    /// The queue whose wait counter the time spent waiting goes to.
    fn queue(self) -> Queue {
        match self {
            Meter::Queue(queue) => queue,
            Meter::AiTokens => Queue::Ai,
        }
    }
}

impl std::fmt::Display for Meter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Meter::Queue(queue) => write!(f, "the {queue} queue's rate limit"),
            Meter::AiTokens => f.write_str("the AI tokens-per-minute limit (ai.tokens_per_minute)"),
        }
    }
}

/// A Redis failure while asking for a slot. The executor makes it a transient failure of the
/// attempt, so the queue's retry rules apply.
#[derive(Debug, thiserror::Error)]
#[error("could not ask Redis for a slot of {meter}")]
pub struct RateLimitError {
    pub meter: Meter,
    #[source]
    pub source: redis::RedisError,
}

/// Every limit of this process; cheap to clone (an `Arc`).
#[derive(Clone)]
pub struct RateLimits {
    inner: Arc<Inner>,
}

struct Inner {
    conn: ConnectionManager,
    script: redis::Script,
    settle: redis::Script,
    /// By the meter's place in `Meter::ALL`; `None`: unlimited.
    limits: [Option<Limit>; Meter::ALL.len()],
}

struct Limit {
    key: String,
    /// Microseconds per unit; a fraction for a limit of more than a million units a second
    /// (tokens).
    interval_micros: f64,
    /// One waiter per limit per process asks Redis; the others queue up here (tokio's mutex is
    /// fair, so they take their turns in order). Without it every waiting job would ask about
    /// once per interval: 1000 jobs waiting on a 20/s queue would make 20,000 calls a second.
    /// With it, Redis sees about one call per unit per process. The turn is only this
    /// process' order of asking: nothing is reserved, and a waiter dropped mid-wait gives its
    /// turn to the next.
    turn: tokio::sync::Mutex<()>,
}

impl Limit {
    fn new(key: String, interval_micros: f64) -> Limit {
        Limit {
            key,
            interval_micros,
            turn: tokio::sync::Mutex::new(()),
        }
    }
}

impl RateLimits {
    /// The limits of `config`'s queues and of the AI provider's tokens, on `conn` (a connection
    /// the process already has: the script is one short call per acquire).
    pub fn new(config: &Config, conn: ConnectionManager) -> RateLimits {
        let prefix = &config.redis.prefix;
        let limits = Meter::ALL.map(|meter| match meter {
            Meter::Queue(queue) => config.queue(queue).rate.map(|rate| {
                Limit::new(
                    format!("{prefix}rate:{queue}"),
                    rate.emission_interval_micros() as f64,
                )
            }),
            Meter::AiTokens => config
                .ai
                .tokens_per_minute
                .filter(|&tokens| tokens > 0)
                .map(|tokens| Limit::new(format!("{prefix}rate:ai:tokens"), 60e6 / tokens as f64)),
        });
        RateLimits {
            inner: Arc::new(Inner {
                conn,
                script: redis::Script::new(GCRA_SCRIPT),
                settle: redis::Script::new(SETTLE_SCRIPT),
                limits,
            }),
        }
    }

    /// Waits until one more unit of `queue` is allowed, and takes it. Returns at once, without
    /// asking Redis, for a queue without a rate. The time spent here goes to
    /// `quizworker_rate_limit_wait_seconds_total`, also when the caller gives up waiting.
    pub async fn acquire(&self, queue: Queue) -> Result<(), RateLimitError> {
        self.acquire_n(Meter::Queue(queue), 1).await
    }

    /// Waits until `meter` allows more, and takes `units` of it. Returns at once, without
    /// asking Redis, for a meter without a limit. Time spent here counts as the queue's wait
    /// (the `ai` queue's for tokens).
    pub async fn acquire_n(&self, meter: Meter, units: u64) -> Result<(), RateLimitError> {
        let Some(limit) = self.limit(meter) else {
            return Ok(());
        };
        let _waiting = WaitTimer {
            queue: meter.queue(),
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
                .arg(units)
                .invoke_async(&mut conn)
                .await
                .map_err(|source| RateLimitError { meter, source })?;
            if wait_micros == 0 {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_micros(wait_micros)).await;
        }
    }

    /// Corrects what an `acquire_n` took by `units` (negative: gives back units it reserved
    /// and did not use, as far as their time has not passed yet).
    pub async fn settle(&self, meter: Meter, units: i64) -> Result<(), RateLimitError> {
        let Some(limit) = self.limit(meter) else {
            return Ok(());
        };
        if units == 0 {
            return Ok(());
        }
        self.inner
            .settle
            .key(&limit.key)
            .arg(units as f64 * limit.interval_micros)
            .invoke_async::<()>(&mut self.inner.conn.clone())
            .await
            .map_err(|source| RateLimitError { meter, source })
    }

    /// Whether `meter` has a limit.
    pub fn is_limited(&self, meter: Meter) -> bool {
        self.limit(meter).is_some()
    }

    fn limit(&self, meter: Meter) -> Option<&Limit> {
        let index = Meter::ALL.iter().position(|&m| m == meter)?;
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
