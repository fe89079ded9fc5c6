//! quizworker: takes typed jobs off Redis, runs them, and journals their life in Postgres.
//! A job's path through the modules: `queue` (Redis) -> `pool` (apalis workers) -> `executor`
//! -> `handlers` -> `journal`. `cli` and `commands` are the operator's side.

pub mod backoff;
pub mod batcher;
pub mod cli;
pub mod commands;
pub mod config;
pub mod executor;
pub mod export_files;
pub mod export_store;
pub mod handlers;
pub mod health;
pub mod http;
pub mod journal;
pub mod maintenance;
pub mod metrics;
pub mod pool;
pub mod prepared_tests;
pub mod producer;
pub mod queue;
pub mod report_pdf;
pub mod score_writer;
pub mod scoring_store;
pub mod systemd;
