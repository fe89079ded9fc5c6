//! One module per group of subcommands; `execute` is the dispatch point. `failure` says how a
//! command that fails ends (its exit code, its message).

mod ai;
mod daemon;
mod email;
mod enqueue;
mod export;
pub mod failure;
mod jobs;
mod output;
mod queues;
mod score;
mod search;
mod webhooks;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use quizworker_jobs::Queue;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};

use crate::cli::{Cli, Command};
use crate::config::Config;
use crate::ops::redact::redacted;
use crate::runtime::queue::RedisQueues;
use failure::{Mark, bad_input, excerpt};

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// The file read when neither `--config` nor `QUIZWORKER_CONFIG` names one, if it exists.
const DEFAULT_CONFIG_FILE: &str = "config.toml";

pub async fn execute(cli: Cli) -> anyhow::Result<()> {
    // Scoring offline needs no settings: it runs wherever the file is.
    if let Command::Score { file, json } = &cli.command {
        return score::score_file(file, *json);
    }
    let (config, file) = load_config(cli.config.as_deref())?;
    match cli.command {
        Command::Migrate => daemon::migrate(&config).await,
        Command::Run { queues } => daemon::run(config, queues.as_deref()).await,
        Command::Check { json } => daemon::check(&config, file.as_deref(), json).await,
        Command::Recover { json } => daemon::recover(&config, json).await,
        Command::Enqueue(args) => enqueue::enqueue(&config, args).await,
        Command::Score { .. } => unreachable!("handled above"),
        Command::Export(command) => export::execute(&config, command).await,
        Command::Ai(command) => ai::execute(&config, command).await,
        Command::Email(command) => email::execute(&config, command).await,
        Command::Search(args) => search::search(&config, args).await,
        Command::Index(command) => search::index(&config, command).await,
        Command::Jobs(command) => jobs::execute(&config, command).await,
        Command::Webhooks(command) => webhooks::execute(&config, command).await,
        Command::Queues { action, json } => queues::execute(&config, action, json).await,
    }
}

/// The settings, and the file they were read from (`None`: defaults and the environment only).
/// A file the operator named must exist: running on defaults instead of what they meant would
/// be worse than stopping.
fn load_config(named: Option<&Path>) -> anyhow::Result<(Config, Option<PathBuf>)> {
    let file = match named {
        Some(path) if !path.is_file() => {
            return Err(bad_input(format!(
                "the config file {} does not exist (named by --config or QUIZWORKER_CONFIG)",
                path.display()
            )));
        }
        Some(path) => Some(path.to_owned()),
        None => Some(PathBuf::from(DEFAULT_CONFIG_FILE)).filter(|path| path.is_file()),
    };
    // Config::load reads the file only if it exists, so without one it takes the default name.
    let path = file
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_FILE));
    let config = Config::load(&path).bad_input()?;
    Ok((config, file))
}

/// A queue named on the command line by `flag`.
fn parse_queue(flag: &str, name: &str) -> anyhow::Result<Queue> {
    name.parse::<Queue>().map_err(|_| {
        let known: Vec<&str> = Queue::ALL.iter().map(|q| q.name()).collect();
        bad_input(format!(
            "unknown queue {} in {flag} (queues: {})",
            excerpt(name),
            known.join(", ")
        ))
    })
}

async fn connect_postgres(config: &Config) -> anyhow::Result<PgPool> {
    let options = PgConnectOptions::from_str(&config.postgres.url)
        .with_context(|| format!("invalid Postgres URL {}", redacted(&config.postgres.url)))
        .bad_input()?
        // The journal's tables grow from empty to millions of rows under one long-lived
        // connection: a generic plan cached while they were small keeps scanning them whole
        // (measured: 30-55 ms per batch at 100,000 rows). Plan each statement afresh.
        .options([("plan_cache_mode", "force_custom_plan")]);
    let connected = PgPoolOptions::new()
        .max_connections(config.postgres.max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options.clone())
        .await;
    let error = match connected {
        Ok(pool) => return Ok(pool),
        // The pool retries a refused connection until its timeout, then says only that it timed
        // out: one more attempt of our own says why.
        Err(sqlx::Error::PoolTimedOut) => match options.connect().await {
            Err(reason) => reason,
            Ok(_) => sqlx::Error::PoolTimedOut,
        },
        Err(e) => e,
    };
    Err(error)
        .with_context(|| {
            format!(
                "could not connect to Postgres at {}",
                redacted(&config.postgres.url)
            )
        })
        .unreachable()
}

async fn connect_redis(config: &Config) -> anyhow::Result<RedisQueues> {
    // A URL that does not parse is a setting to mend, not an outage.
    redis::Client::open(config.redis.url.as_str())
        .with_context(|| format!("invalid Redis URL {}", redacted(&config.redis.url)))
        .bad_input()?;
    RedisQueues::connect(config).await.unreachable()
}
