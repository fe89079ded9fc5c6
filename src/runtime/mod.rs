//! The path every job takes, whatever its family: `queue` (Redis) -> `pool` (apalis workers)
//! -> `executor` (one attempt: decode, journal the start, run the handler, decide, journal the
//! end) -> `journal` (Postgres). Around it: `maintenance` (recovery, retention, trimming),
//! `producer` (enqueueing from Rust), `batcher` (group commit), `backoff` (retry waits) and
//! `rate_limit` (per-queue rates shared through Redis). For web tiers: `arrivals` (jobs
//! enqueued with the script journaled as they arrive), `outbox` (the relay of jobs enqueued in
//! the web tier's transactions) and `events` (state changes repeated on Redis).

pub mod arrivals;
pub mod backoff;
pub mod batcher;
pub mod events;
pub mod executor;
pub mod journal;
pub mod maintenance;
pub mod outbox;
pub mod pool;
pub mod process;
pub mod producer;
pub mod queue;
pub mod rate_limit;
