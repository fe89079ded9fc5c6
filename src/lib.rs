//! quizworker: takes typed jobs off Redis, runs them, and journals their life in Postgres.
//!
//! A job's path through the modules:
//!
//! ```text
//! runtime::queue ──▶ runtime::pool ──▶ runtime::executor ──▶ families::dispatch ──▶ runtime::journal
//!   (Redis)          (apalis workers)   (decode, attempt,     (one folder per        (Postgres: state,
//!                                        timeout, retry)       job family)            attempts, results)
//! ```
//!
//! - [`runtime`]: the path every job takes and the services around it (maintenance, the Rust
//!   producer, batching, backoff).
//! - [`families`]: what each kind of job does: one folder per family with its handler, its
//!   Postgres store and its clients; the one dispatch point.
//! - [`ops`]: what operators and their tools watch: health, metrics, the HTTP server, systemd.
//! - [`webhooks`]: completion webhooks to the web tier's endpoints (docs/WEB_TIER.md).
//! - [`cli`] and [`commands`]: the operator's side; [`config`]: every setting.
//!
//! docs/ARCHITECTURE.md draws the same path with who owns which state, and how to add a family.

pub mod cli;
pub mod commands;
pub mod config;
pub mod families;
pub mod ops;
pub mod runtime;
pub mod webhooks;
