//! `migrate`, `run` and `check`: bringing the daemon up and seeing that it can be.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::failure::{Mark, error_text};
use super::output::{self, outln};
use super::{MIGRATOR, connect_postgres, connect_redis, parse_queue};
use crate::config::Config;
use crate::families::Services;
use crate::ops::health::Health;
use crate::ops::redact::redacted;
use crate::ops::{http, metrics, systemd};
use crate::runtime::executor::Executor;
use crate::runtime::journal::Journal;
use crate::runtime::pool;
use crate::runtime::process::Process;
use crate::runtime::rate_limit::RateLimits;
use crate::runtime::{arrivals, events, maintenance, outbox};

pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    let pool = connect_postgres(config).await?;
    let pending = pending_migrations(&pool).await?;
    MIGRATOR
        .run(&pool)
        .await
        .context("could not apply migrations")?;
    if pending.is_empty() {
        outln!(
            "applied 0 migrations: all {} were applied before",
            MIGRATOR.iter().count()
        )?;
    } else {
        outln!(
            "applied {} migration(s): {}",
            pending.len(),
            pending.join(", ")
        )?;
    }
    outln!("migrations are current")?;
    Ok(())
}

/// The migrations this binary has that the database has not applied, as "version description".
async fn pending_migrations(pool: &PgPool) -> anyhow::Result<Vec<String>> {
    let applied: Vec<i64> = match sqlx::query_scalar(
        "SELECT version FROM _sqlx_migrations WHERE success ORDER BY version",
    )
    .fetch_all(pool)
    .await
    {
        Ok(applied) => applied,
        // A database that never saw a migration has no table of them yet.
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => Vec::new(),
        Err(e) => return Err(e).context("could not read the applied migrations"),
    };
    Ok(MIGRATOR
        .iter()
        .filter(|m| !applied.contains(&m.version))
        .map(|m| format!("{} {}", m.version, m.description))
        .collect())
}

pub async fn run(config: Config, queues: Option<&str>) -> anyhow::Result<()> {
    for name in queues.unwrap_or_default().split(',').map(str::trim) {
        if !name.is_empty() {
            parse_queue("--queues", name)?;
        }
    }
    let queues = pool::select_queues(queues).bad_input()?;
    let config = Arc::new(config);
    // Settings no job could mend (a DKIM key or SMTP CA file that does not load, half of the
    // SMTP credentials) stop the daemon here, before it connects or registers anywhere.
    let email = crate::families::email::EmailService::new(&config)?;
    let ai = crate::families::ai::AiService::new(&config)?;
    let indexing = crate::families::indexing::IndexingService::new(&config)?;
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
    let redis = connect_redis(&config).await?;
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
    // For web tiers (docs/WEB_TIER.md): script-enqueued jobs journaled as they arrive, state
    // changes repeated on Redis, and the outbox relayed if there is one.
    let arrivals = tokio::spawn(arrivals::run(
        config.clone(),
        pg.clone(),
        process.name().to_owned(),
    ));
    let events = tokio::spawn(events::run(config.clone(), redis.connection()));
    // Always: with no endpoints it still rewrites the routes, and fails the deliveries that
    // name an endpoint no longer configured, rather than leave them waiting.
    let webhooks =
        crate::webhooks::dispatcher::Dispatcher::new(config.clone(), pg.clone()).bad_input()?;
    let webhooks = Some(tokio::spawn(webhooks.run()));
    let relay = if config.outbox.url.is_empty() {
        None
    } else {
        let relay =
            outbox::Relay::connect(config.clone(), pg.clone(), redis.clone()).bad_input()?;
        Some(tokio::spawn(relay.run()))
    };
    let services = Services {
        email,
        ai,
        indexing,
        stopping: stopping.clone(),
        tests: Default::default(),
        scores: crate::families::scoring::writer::ScoreWriter::spawn(pg.clone()),
        pg: pg.clone(),
        exports: config.exports.clone(),
        pdf: Arc::new(crate::families::exports::assets::PdfAssets::new(
            &config.exports,
        )),
        rates: RateLimits::new(&config, redis.connection()),
    };
    metrics::rate_limits_set(&config, &queues);
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
    arrivals.abort();
    events.abort();
    for task in [relay, webhooks].into_iter().flatten() {
        task.abort();
    }
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
    let redis = connect_redis(config).await?;
    let Some(report) = maintenance::run_once(config, &pg, &redis, false).await? else {
        anyhow::bail!("another process is doing maintenance right now; try again in a moment");
    };
    if json {
        output::print_json(&report)
    } else {
        outln!("put {} job(s) back in Redis", report.recovered)?;
        Ok(())
    }
}

#[derive(Serialize)]
struct CheckResult {
    check: &'static str,
    ok: bool,
    detail: String,
}

/// Whether the daemon could run with these settings, and which settings they are: the config
/// file, the database, the Redis prefix and the export directory it would use.
pub async fn check(config: &Config, file: Option<&Path>, json: bool) -> anyhow::Result<()> {
    let mut results = vec![CheckResult {
        check: "config",
        ok: true,
        detail: match file {
            Some(file) => format!(
                "valid: file {}",
                std::fs::canonicalize(file)
                    .unwrap_or_else(|_| file.to_owned())
                    .display()
            ),
            None => "valid: no file, the defaults and the environment".to_owned(),
        },
    }];
    results.push(result("redis", check_redis(config).await));
    match check_postgres(config).await {
        Ok((version, missing)) => {
            results.push(CheckResult {
                check: "postgres",
                ok: true,
                detail: format!("version {version} at {}", redacted(&config.postgres.url)),
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
        Err(e) => results.push(result("postgres", Err(e))),
    }
    results.push(result(
        "exports",
        check_export_directory(&config.exports.directory),
    ));
    results.extend(check_email(config).await);
    results.push(check_ai(config, file).await);

    if json {
        output::print_json(&results)?;
    } else {
        let mut table = output::table(&["CHECK", "OK", "DETAIL"]);
        for r in &results {
            table.add_row(vec![r.check, if r.ok { "yes" } else { "NO" }, &r.detail]);
        }
        outln!("{table}")?;
    }
    let failed: Vec<&str> = results.iter().filter(|r| !r.ok).map(|r| r.check).collect();
    if failed.is_empty() {
        return Ok(());
    }
    let error = anyhow::anyhow!("failed checks: {}", failed.join(", "));
    // A service that does not answer is an outage, not a setting to mend: its own exit code.
    if failed
        .iter()
        .any(|check| matches!(*check, "redis" | "postgres"))
    {
        Err(error).unreachable()
    } else {
        Err(error)
    }
}

async fn check_redis(config: &Config) -> anyhow::Result<String> {
    let mut conn = crate::runtime::queue::connect(config).await?;
    let pong: String = redis::cmd("PING").query_async(&mut conn).await?;
    Ok(format!(
        "{pong} from {}, key prefix `{}`",
        redacted(&config.redis.url),
        config.redis.prefix
    ))
}

/// The server's version and the migrations it lacks.
async fn check_postgres(config: &Config) -> anyhow::Result<(String, Vec<String>)> {
    let pool = connect_postgres(config).await?;
    let version: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&pool)
        .await?;
    Ok((version, pending_migrations(&pool).await?))
}

/// The email templates and the SMTP server, if email is set up: its templates directory
/// exists. (A deployment that sends no mail has none, and its checks should not fail for it.)
async fn check_email(config: &Config) -> Vec<CheckResult> {
    let dir = &config.email.templates;
    if !dir.exists() {
        return vec![CheckResult {
            check: "email",
            ok: true,
            detail: format!(
                "not set up: no templates directory {} (email.templates)",
                dir.display()
            ),
        }];
    }
    let templates = crate::families::email::templates::load(dir, &config.email.default_locale)
        .map(|t| {
            let names: Vec<String> = t
                .names()
                .map(|(name, locales)| {
                    let locales: Vec<&str> = locales.iter().map(String::as_str).collect();
                    format!("{name} ({})", locales.join(", "))
                })
                .collect();
            format!("{}: {}", dir.display(), names.join(", "))
        })
        .map_err(anyhow::Error::from);
    let smtp = async {
        let mailer = crate::families::email::smtp::Mailer::new(&config.email)?;
        mailer.test_connection().await?;
        let smtp = &config.email.smtp;
        Ok(format!(
            "{}:{} answers ({:?})",
            smtp.host, smtp.port, smtp.security
        ))
    }
    .await;
    vec![result("templates", templates), result("smtp", smtp)]
}

/// The AI provider, if AI is set up: the config file has an `[ai]` table, or the environment
/// sets `AI_API_KEY` or a `QUIZWORKER_AI__*` variable. (Every setting has a default, the local
/// Ollama's address among them; a deployment that runs no AI jobs should not fail for it.)
async fn check_ai(config: &Config, file: Option<&Path>) -> CheckResult {
    use figment::providers::{Format, Toml};
    let in_file = file.is_some_and(|file| {
        figment::Figment::from(Toml::file(file))
            .find_value("ai")
            .is_ok()
    });
    let in_env = std::env::vars_os().any(|(name, _)| {
        name.to_str().is_some_and(|name| {
            name == crate::families::ai::provider::API_KEY_VAR
                || name.starts_with("QUIZWORKER_AI__")
        })
    });
    if !(in_file || in_env) {
        return CheckResult {
            check: "ai",
            ok: true,
            detail: "not set up: no [ai] in the config file and no AI_API_KEY".to_owned(),
        };
    }
    result("ai", check_ai_provider(config).await)
}

/// Whether the provider answers, knows the model and takes the key.
async fn check_ai_provider(config: &Config) -> anyhow::Result<String> {
    use crate::families::ai::provider::{Models, Provider, ProviderError};
    let provider = Provider::new(&config.ai)?;
    let key = if provider.has_key() {
        "key set (AI_API_KEY)"
    } else {
        "no key (AI_API_KEY unset)"
    };
    let model = &config.ai.model;
    let models = provider.models().await.map_err(|e| match e {
        ProviderError::Transient { reason, .. } => anyhow::anyhow!("{reason}; {key}"),
        ProviderError::Permanent {
            status: 401 | 403,
            reason,
        } => {
            anyhow::anyhow!("{reason}; {key}: check AI_API_KEY")
        }
        ProviderError::Permanent { reason, .. } => anyhow::anyhow!("{reason}; {key}"),
    })?;
    let at = redacted(&config.ai.base_url);
    match models {
        Models::Listed { count } => Ok(format!(
            "{at} answers; model `{model}` is among its {count} models; {key}"
        )),
        Models::NotServed { status } => Ok(format!(
            "{at} answers; it has no model list ({status} to GET /models), so model `{model}` is not checked; {key}"
        )),
        Models::NotListed { ids } => {
            const SHOWN: usize = 10;
            let mut listed = ids
                .iter()
                .take(SHOWN)
                .map(|id| format!("`{}`", quizworker_jobs::limits::shorten(id, 60)))
                .collect::<Vec<_>>()
                .join(", ");
            if ids.len() > SHOWN {
                listed.push_str(&format!(" and {} more", ids.len() - SHOWN));
            }
            anyhow::bail!(
                "{at} answers, but model `{model}` (ai.model) is not among its models: {}; {key}",
                if ids.is_empty() {
                    "it lists none".to_owned()
                } else {
                    listed
                }
            )
        }
    }
}

/// The daemon writes exports into the directory, creating it if missing: do both now, so that
/// a directory it cannot use shows here rather than in the first export job.
fn check_export_directory(dir: &Path) -> anyhow::Result<String> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let probe = dir.join(format!(".quizworker-check-{}", ulid::Ulid::new()));
    std::fs::File::create_new(&probe)
        .with_context(|| format!("cannot write into {}", dir.display()))?;
    // The probe is empty and hidden, like an export under way; a failure to remove it is not
    // the directory's.
    let _ = std::fs::remove_file(&probe);
    Ok(format!("{} is writable", dir.display()))
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
            detail: error_text(&e),
        },
    }
}
