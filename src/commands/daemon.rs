//! `migrate`, `run` and `check`: bringing the daemon up and seeing that it can be.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::{MIGRATOR, connect_postgres, output};
use crate::config::Config;
use crate::families::Services;
use crate::ops::health::Health;
use crate::ops::{http, metrics, systemd};
use crate::runtime::executor::Executor;
use crate::runtime::journal::Journal;
use crate::runtime::maintenance;
use crate::runtime::pool;
use crate::runtime::process::Process;
use crate::runtime::queue::RedisQueues;

pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    let pool = connect_postgres(config).await?;
    MIGRATOR
        .run(&pool)
        .await
        .context("could not apply migrations")?;
    println!("migrations are current");
    Ok(())
}

pub async fn run(config: Config, queues: Option<&str>) -> anyhow::Result<()> {
    let queues = pool::select_queues(queues)?;
    let config = Arc::new(config);
    let health = Arc::new(Health::default());
    let metrics_handle = metrics::install()?;
    // Up before anything else, so that /healthz answers while we connect and migrate.
    let http = http::start(config.http.listen, health.clone(), metrics_handle.clone()).await?;
    let stopping = CancellationToken::new();
    let watchdog = systemd::spawn_watchdog(health.clone(), stopping.clone());
    let pg = connect_postgres(&config).await?;
    if config.postgres.migrate_on_start {
        MIGRATOR
            .run(&pg)
            .await
            .context("could not apply migrations")?;
    }
    let redis = RedisQueues::connect(&config).await?;
    // The lease lasts as long as apalis waits before it takes a silent worker's jobs back.
    let process = Process::new(config.worker.heartbeat_interval * config.worker.missed_heartbeats);
    process
        .register(&pg)
        .await
        .context("could not register this process in Postgres")?;
    let lease = tokio::spawn(
        process
            .clone()
            .keep_alive(pg.clone(), config.worker.heartbeat_interval),
    );
    let (journal, writer) = Journal::spawn(pg.clone(), config.journal.max_batch, health.clone());
    let upkeep = tokio::spawn(maintenance::run_periodically(
        config.clone(),
        pg.clone(),
        redis.clone(),
    ));
    let services = Services {
        tests: Default::default(),
        scores: crate::families::scoring::writer::ScoreWriter::spawn(pg.clone()),
        pg: pg.clone(),
        exports: config.exports.clone(),
        fonts: Arc::new(crate::families::exports::pdf::Fonts::new(
            config.exports.fonts.clone(),
        )),
    };
    let executor = Executor::new(
        config.clone(),
        journal,
        redis.clone(),
        services,
        process.clone(),
    );
    let sampler = tokio::spawn(metrics::sample_queues(
        redis.clone(),
        queues.clone(),
        config.http.queue_sample_interval,
        metrics_handle,
    ));
    let shutdown = async move {
        shutdown_signal().await;
        systemd::stopping();
        stopping.cancel();
    };
    let result = pool::run(config, executor, redis, health, &process, &queues, shutdown).await;
    sampler.abort();
    upkeep.abort();
    // The writer ends when the last handle is gone, after its final batch; a handler abandoned
    // at the shutdown timeout may still hold one, so do not wait for ever.
    if tokio::time::timeout(Duration::from_secs(10), writer)
        .await
        .is_err()
    {
        tracing::warn!("the journal writer did not finish in time");
    }
    // Every attempt of this process has ended or been recorded as interrupted by now.
    lease.abort();
    if let Err(e) = process.deregister(&pg).await {
        tracing::warn!(error = %e, "could not give up this process' lease; it runs out by itself");
    }
    if let Some(watchdog) = watchdog {
        watchdog.abort();
    }
    http.stop().await;
    if result.is_ok() {
        tracing::info!("stopped");
    }
    result
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM; only SIGINT stops the daemon");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}

pub async fn recover(config: &Config, json: bool) -> anyhow::Result<()> {
    let pg = connect_postgres(config).await?;
    let redis = RedisQueues::connect(config).await?;
    let Some(report) = maintenance::run_once(config, &pg, &redis, false).await? else {
        anyhow::bail!("another process is doing maintenance right now; try again in a moment");
    };
    if json {
        output::print_json(&report)
    } else {
        println!("put {} job(s) back in Redis", report.recovered);
        Ok(())
    }
}

#[derive(Serialize)]
struct CheckResult {
    check: &'static str,
    ok: bool,
    detail: String,
}

pub async fn check(config: &Config, json: bool) -> anyhow::Result<()> {
    let mut results = vec![CheckResult {
        check: "config",
        ok: true,
        detail: "valid".to_owned(),
    }];
    let redis = async {
        let mut conn = crate::runtime::queue::connect(config).await?;
        let pong: String = redis::cmd("PING").query_async(&mut conn).await?;
        anyhow::Ok(format!(
            "{pong} from {}",
            crate::runtime::queue::redacted(&config.redis.url)
        ))
    }
    .await;
    results.push(result("redis", redis));
    let postgres = async {
        let pool = connect_postgres(config).await?;
        let version: String = sqlx::query_scalar("SHOW server_version")
            .fetch_one(&pool)
            .await?;
        let applied: Vec<i64> = sqlx::query_scalar(
            "SELECT version FROM _sqlx_migrations WHERE success ORDER BY version",
        )
        .fetch_all(&pool)
        .await
        .unwrap_or_default();
        let missing: Vec<String> = MIGRATOR
            .iter()
            .filter(|m| !applied.contains(&m.version))
            .map(|m| format!("{} {}", m.version, m.description))
            .collect();
        anyhow::Ok((version, missing))
    }
    .await;
    match postgres {
        Ok((version, missing)) => {
            results.push(CheckResult {
                check: "postgres",
                ok: true,
                detail: format!("version {version}"),
            });
            results.push(CheckResult {
                check: "migrations",
                ok: missing.is_empty(),
                detail: if missing.is_empty() {
                    "current".to_owned()
                } else {
                    format!("pending: {} (run `quizworker migrate`)", missing.join(", "))
                },
            });
        }
        Err(e) => results.push(result("postgres", Err::<String, _>(e))),
    }

    if json {
        output::print_json(&results)?;
    } else {
        let mut table = output::table(&["CHECK", "OK", "DETAIL"]);
        for r in &results {
            table.add_row(vec![r.check, if r.ok { "yes" } else { "NO" }, &r.detail]);
        }
        println!("{table}");
    }
    let failed: Vec<&str> = results.iter().filter(|r| !r.ok).map(|r| r.check).collect();
    anyhow::ensure!(failed.is_empty(), "failed checks: {}", failed.join(", "));
    Ok(())
}

fn result(check: &'static str, outcome: anyhow::Result<String>) -> CheckResult {
    match outcome {
        Ok(detail) => CheckResult {
            check,
            ok: true,
            detail,
        },
        Err(e) => CheckResult {
            check,
            ok: false,
            detail: format!("{e:#}"),
        },
    }
}
