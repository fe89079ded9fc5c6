//! One module per group of subcommands; `execute` is the dispatch point.

mod daemon;
mod enqueue;
mod jobs;
mod output;
mod queues;

use std::time::Duration;

use anyhow::Context;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::cli::{Cli, Command};
use crate::config::Config;
use crate::queue::redacted;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

pub async fn execute(cli: Cli) -> anyhow::Result<()> {
    let config = Config::load(&cli.config)?;
    match cli.command {
        Command::Migrate => daemon::migrate(&config).await,
        Command::Run { queues } => daemon::run(config, queues.as_deref()).await,
        Command::Check { json } => daemon::check(&config, json).await,
        Command::Enqueue(args) => enqueue::enqueue(&config, args).await,
        Command::Jobs(command) => jobs::execute(&config, command).await,
        Command::Queues { action, json } => queues::execute(&config, action, json).await,
    }
}

async fn connect_postgres(config: &Config) -> anyhow::Result<PgPool> {
    PgPoolOptions::new()
        .max_connections(config.postgres.max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect(&config.postgres.url)
        .await
        .with_context(|| {
            format!(
                "could not connect to Postgres at {}",
                redacted(&config.postgres.url)
            )
        })
}
