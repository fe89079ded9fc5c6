//! Memory over a long run: `cargo bench --bench soak`.
//!
//! Shows that Redis memory, the daemon's resident memory and the journal stay flat once the
//! daemon has run for a minute or two under steady load. The release binary runs as a
//! deployment runs it, with maintenance made frequent (`[maintenance] interval = "10s"`,
//! `keep_completed = "30s"`) so that a ten-minute run goes through many passes: every pass
//! deletes finished jobs older than 30 s from the journal and drops finished jobs' payloads and
//! apalis' acknowledged ids from Redis (src/maintenance.rs). A producer task enqueues
//! `diag.noop` envelopes through the protocol's Lua script (docs/PROTOCOL.md) at SOAK_RATE jobs/s,
//! a pipeline of EVALSHA calls every 50 ms, for SOAK_SECS; then the run waits up to 30 s for the
//! daemon to drain what is left. Each run gets its own Postgres database and Redis key prefix,
//! both removed at the end, so it can share servers with the tests or a running deployment.
//!
//! Every SOAK_SAMPLE_SECS it records: jobs completed so far (the daemon's own counter,
//! `quizworker_jobs_finished_total{outcome="completed"}` on /metrics: the journal cannot count
//! them, maintenance deletes them), Redis' `used_memory` (the whole server's, which other users
//! of a shared server move too), this run's own Redis keys (all `prefix*` keys, by SCAN; the
//! entries of the default queue's data hash; its done set; its active list), the journal's row
//! counts and on-disk size, and the daemon's VmRSS. The data hash is also read every second, and
//! the table shows its largest size since the previous sample: maintenance empties it every
//! 10 s, so one reading every 10 s sees the same point of that cycle each time.
//!
//! The verdict compares the first sample after the warm-up minute with the average of the
//! samples in the second half of the load, and fits a line through the second half: a figure
//! that still grows shows a slope.
//!
//! At the end, the daemon's log gives when each maintenance pass ended and what it pruned and
//! trimmed; after the daemon has stopped between two passes, the journal's remaining rows plus the
//! pruned ones are checked against the daemon's count of completed jobs.
//!
//! Knobs (environment, with defaults): SOAK_SECS=600 (at least 60), SOAK_RATE=2000 (jobs/s),
//! SOAK_SAMPLE_SECS=10, DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres (any database on
//! the server: the run's own database is created next to it), REDIS_URL=redis://127.0.0.1:6379.
//!
//! Prints a Markdown report on stdout and progress on stderr; exits non-zero if anything failed,
//! the daemon died, or fewer than 90% of the enqueued jobs had completed 30 s after the last
//! enqueue (the report then shows what was measured before the failure). Structure and helpers
//! follow benches/throughput.rs.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use chrono::{DateTime, Utc};
use quizworker_jobs::diag::Noop;
use quizworker_jobs::{ENQUEUE_SCRIPT, Envelope};
use redis::aio::MultiplexedConnection;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use tokio::time::MissedTickBehavior;
use tokio_util::task::AbortOnDropHandle;

const BIN: &str = env!("CARGO_BIN_EXE_quizworker");

/// The producer sends what is due every this often...
const ENQUEUE_EVERY: Duration = Duration::from_millis(50);
/// ...in pipelines of at most this many envelopes (more only after a stall).
const ENQUEUE_BATCH_MAX: u64 = 1000;
/// The data hash's size and the daemon's health are checked this often between samples.
const POLL_EVERY: Duration = Duration::from_secs(1);
/// The verdict's baseline is the first sample at least this long into the load.
const WARM_UP: Duration = Duration::from_secs(60);
/// After the last enqueue, the daemon gets this long to finish what is left...
const DRAIN: Duration = Duration::from_secs(30);
/// ...and must by then have completed at least this share of the jobs.
const MIN_COMPLETED_SHARE: f64 = 0.9;
/// The maintenance settings of the run's config file (see the module comment).
const MAINTENANCE_INTERVAL: &str = "10s";
const KEEP_COMPLETED: &str = "30s";
/// After the drain, the bench waits this long at most for a maintenance pass to end. Under load a
/// pass can last for minutes: it ends once nothing is older than `keep_completed` (30 s), which
/// after the last job takes up to that long and a page's work more.
const PASS_DEADLINE: Duration = Duration::from_secs(60);
/// The daemon must log "quizworker ready" within this...
const START_DEADLINE: Duration = Duration::from_secs(60);
/// ...and exit within this after SIGTERM (its own shutdown timeout is 30 s).
const STOP_DEADLINE: Duration = Duration::from_secs(60);
/// A request to the daemon's /metrics fails after this.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::main]
async fn main() -> ExitCode {
    let knobs = match Knobs::from_env() {
        Ok(knobs) => knobs,
        Err(e) => {
            eprintln!("soak: error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let mut report = Report::new(&knobs);
    let mut errors = Vec::new();
    match Bench::setup(&knobs, &mut report).await {
        Err(e) => errors.push(format!("setup: {e:#}")),
        Ok(bench) => {
            // Ctrl-C drops the run (and with it the producer task, which is aborted, and the
            // daemon, which is killed) but still cleans up.
            let result = tokio::select! {
                result = bench.run(&mut report) => result,
                _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted by Ctrl-C")),
            };
            if let Err(e) = result {
                errors.push(format!("{e:#}"));
            }
            bench.note_daemon_log(&mut report);
            if let Err(e) = bench.teardown(&mut report).await {
                errors.push(format!("cleanup: {e:#}"));
            }
        }
    }
    for error in &errors {
        report.note(format!("**FAILED**: {error}"));
    }
    println!("{}", report.render());
    if errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        for error in &errors {
            eprintln!("soak: error: {error}");
        }
        ExitCode::FAILURE
    }
}

/// What the run is asked to do, from the environment.
struct Knobs {
    secs: u64,
    rate: f64,
    sample_secs: u64,
    database_url: String,
    redis_url: String,
}

impl Knobs {
    fn from_env() -> Result<Knobs> {
        let knobs = Knobs {
            secs: env_or("SOAK_SECS", 600)?,
            rate: env_or("SOAK_RATE", 2000.0)?,
            sample_secs: env_or("SOAK_SAMPLE_SECS", 10)?,
            database_url: env_or(
                "DATABASE_URL",
                "postgres://postgres@127.0.0.1:5432/postgres".to_owned(),
            )?,
            redis_url: env_or("REDIS_URL", "redis://127.0.0.1:6379".to_owned())?,
        };
        // The verdict needs a sample after the warm-up minute.
        ensure!(
            knobs.secs >= WARM_UP.as_secs(),
            "SOAK_SECS must be at least {}",
            WARM_UP.as_secs()
        );
        ensure!(
            knobs.rate.is_finite() && knobs.rate > 0.0,
            "SOAK_RATE must be more than 0"
        );
        ensure!(
            knobs.sample_secs >= 1,
            "SOAK_SAMPLE_SECS must be at least 1"
        );
        Ok(knobs)
    }
}

fn env_or<T: FromStr>(name: &str, default: T) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    match std::env::var(name) {
        Ok(text) => text
            .trim()
            .parse()
            .map_err(|e| anyhow!("{name}={text:?} is not valid: {e}")),
        Err(std::env::VarError::NotPresent) => Ok(default),
        Err(e) => bail!("{name}: {e}"),
    }
}

/// What one sample saw.
#[derive(Clone, Copy)]
struct Sample {
    /// Seconds since the load started.
    t: f64,
    /// Seconds the sample took.
    took: f64,
    /// Taken after the last enqueue.
    draining: bool,
    enqueued: u64,
    /// The daemon's count of jobs completed.
    completed: u64,
    /// Redis `INFO memory` used_memory, bytes: the whole server's.
    used_memory: u64,
    /// This run's Redis keys (`prefix*`).
    run_keys: u64,
    /// HLEN of the default queue's data hash: one entry per job Redis still holds the payload of.
    data: u64,
    /// The data hash's largest size in the once-a-second readings since the previous sample.
    data_max: u64,
    /// SCARD of apalis' set of acknowledged ids.
    done: u64,
    /// LLEN of the list of jobs ready to run.
    active: u64,
    journal_jobs: u64,
    journal_attempts: u64,
    /// On disk, tables and their indexes.
    journal_bytes: u64,
    rss_kb: u64,
}

/// One soak run: its own database, Redis prefix and config file.
struct Bench<'k> {
    knobs: &'k Knobs,
    /// The URL the run was given: the server's maintenance connection (CREATE/DROP DATABASE).
    admin_url: String,
    db_name: String,
    /// `admin_url` pointing at the run's own database: what the daemon gets.
    db_url: String,
    pg: PgPool,
    redis: MultiplexedConnection,
    /// Every Redis key of the run starts with it.
    prefix: String,
    /// The Redis name of the default queue: the prefix, then `default`.
    queue: String,
    /// Holds the config file and the daemon's log.
    dir: tempfile::TempDir,
}

impl<'k> Bench<'k> {
    /// Everything that can fail is done before CREATE DATABASE, so that a failed setup leaves
    /// nothing behind.
    async fn setup(knobs: &'k Knobs, report: &mut Report) -> Result<Bench<'k>> {
        let client = redis::Client::open(knobs.redis_url.as_str())
            .with_context(|| format!("REDIS_URL {:?} is not a Redis URL", knobs.redis_url))?;
        // redis-rs gives up on a reply after 500 ms by default; a pipeline after a stall, or a
        // SCAN, on a Redis busy with the daemon can take longer without anything being wrong.
        let config =
            redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(30)));
        let mut redis = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .with_context(|| format!("cannot connect to Redis at {}", knobs.redis_url))?;
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut redis)
            .await
            .context("Redis INFO server")?;
        let redis_version = info_field(&info, "redis_version").unwrap_or("unknown".into());
        report.machine("Redis server (INFO redis_version)", redis_version);

        let dir = tempfile::tempdir().context("cannot create a temp dir")?;
        fs::write(dir.path().join("config.toml"), config_toml())
            .context("cannot write the config file")?;

        let id = ulid::Ulid::new();
        let db_name = format!("quizworker_soak_{}", id.to_string().to_lowercase());
        let db_url = with_database(&knobs.database_url, &db_name)?;
        // Lazy: it connects on first use, so it cannot fail after the database exists.
        let pg = PgPoolOptions::new()
            .max_connections(2)
            .connect_lazy(&db_url)
            .context("DATABASE_URL is not a Postgres URL")?;

        let mut admin = PgConnection::connect(&knobs.database_url)
            .await
            .with_context(|| format!("cannot connect to Postgres at {}", knobs.database_url))?;
        let pg_version: String = sqlx::query_scalar("SHOW server_version")
            .fetch_one(&mut admin)
            .await
            .context("SHOW server_version")?;
        report.machine("PostgreSQL (SHOW server_version)", pg_version);
        let autovacuum: String = sqlx::query_scalar("SHOW autovacuum")
            .fetch_one(&mut admin)
            .await
            .context("SHOW autovacuum")?;
        if autovacuum != "on" {
            report.note(
                "autovacuum is off on this Postgres server: the space of the journal rows \
                 maintenance deletes is never made reusable, so the journal's size on disk grows \
                 with every job even while its row count stays flat: read the journal's rows, not \
                 its MiB."
                    .into(),
            );
        }
        report.machine("PostgreSQL autovacuum (SHOW autovacuum)", autovacuum);
        sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE \"{db_name}\"")))
            .execute(&mut admin)
            .await
            .with_context(|| format!("CREATE DATABASE {db_name}"))?;
        let _ = admin.close().await;
        eprintln!("soak: database {db_name}, Redis prefix soak-{id}:");

        let prefix = format!("soak-{id}:");
        Ok(Bench {
            knobs,
            admin_url: knobs.database_url.clone(),
            db_name,
            db_url,
            pg,
            redis,
            queue: format!("{prefix}default"),
            prefix,
            dir,
        })
    }

    async fn run(&self, report: &mut Report) -> Result<()> {
        self.migrate()?;
        let mut daemon = self.start_daemon().await?;
        let metrics = daemon.http_addr()?;
        let result = self.soak(&mut daemon, metrics, report).await;
        // Figures that need the daemon, whatever became of the soak.
        if let Ok(peak) = daemon.status_kb("VmHWM") {
            report.figure("Daemon's peak RSS (VmHWM)", mib(peak));
        }
        // The machine and both servers may be shared: other work shows here.
        report.figure("Load average at the end (/proc/loadavg)", load_average());
        result?;
        let between_passes = self.await_maintenance_pass(&mut daemon).await?;
        daemon.stop().await?;
        self.cross_check(&daemon, between_passes, report).await
    }

    /// Waits for the next "maintenance done" line, so that the daemon is stopped between two
    /// passes rather than during one: a pass cut short prunes rows it never logs. Returns whether
    /// the line came.
    async fn await_maintenance_pass(&self, daemon: &mut Daemon) -> Result<bool> {
        let before = maintenance_lines(&daemon.log_text()).len();
        let started = Instant::now();
        while started.elapsed() < PASS_DEADLINE {
            daemon.ensure_running()?;
            if maintenance_lines(&daemon.log_text()).len() > before {
                return Ok(true);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(false)
    }

    fn migrate(&self) -> Result<()> {
        let output = self
            .command()
            .arg("migrate")
            .output()
            .context("cannot run quizworker migrate")?;
        ensure!(
            output.status.success(),
            "quizworker migrate failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(())
    }

    /// The load, then the drain, sampling throughout; the samples go to the report as taken.
    async fn soak(
        &self,
        daemon: &mut Daemon,
        metrics: SocketAddr,
        report: &mut Report,
    ) -> Result<()> {
        let knobs = self.knobs;
        let sample_every = Duration::from_secs(knobs.sample_secs);
        let mut redis = self.redis.clone();
        let sha = redis::Script::new(ENQUEUE_SCRIPT)
            .load_async(&mut redis)
            .await
            .context("SCRIPT LOAD")?;
        let enqueued = Arc::new(AtomicU64::new(0));

        // The first sample: the daemon idle, just after its ready line.
        let start = Instant::now();
        let first = self.sample(daemon, metrics, start, false, 0, 0).await?;
        report.figure("Idle RSS (VmRSS, just after ready)", mib(first.rss_kb));
        report.sample(first);

        eprintln!(
            "soak: enqueueing {} jobs/s for {} s, a sample every {} s",
            knobs.rate, knobs.secs, knobs.sample_secs
        );
        let start = Instant::now();
        report.load_started = Some(Utc::now());
        let mut producer = AbortOnDropHandle::new(tokio::spawn(produce(
            self.redis.clone(),
            sha,
            self.queue.clone(),
            knobs.rate,
            Duration::from_secs(knobs.secs),
            enqueued.clone(),
        )));
        let mut ticks = tokio::time::interval(POLL_EVERY);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut next_sample = sample_every;
        let mut data_max = 0;
        let mut load_secs = None;
        let mut drain_started = None;
        loop {
            ticks.tick().await;
            daemon.ensure_running()?;
            if load_secs.is_none() && producer.is_finished() {
                let ended = (&mut producer)
                    .await
                    .context("the producer task failed")?
                    .context("enqueueing")?;
                load_secs = Some(ended.duration_since(start).as_secs_f64());
                drain_started = Some(ended);
                eprintln!("soak: load over, draining for up to {DRAIN:?}");
            }
            let draining = load_secs.is_some();
            let data: u64 = redis::cmd("HLEN")
                .arg(format!("{}:data", self.queue))
                .query_async(&mut redis)
                .await
                .context("HLEN of the data hash")?;
            data_max = data_max.max(data);
            let sent = enqueued.load(Ordering::Relaxed);
            if let Some(drain_started) = drain_started {
                let completed = completed_jobs(metrics).await?;
                if completed >= sent || drain_started.elapsed() >= DRAIN {
                    let last = self
                        .sample(daemon, metrics, start, true, sent, data_max)
                        .await?;
                    report.sample(last);
                    let drain_secs = drain_started.elapsed().as_secs_f64();
                    return self.judge(report, sent, load_secs.unwrap_or(0.0), drain_secs);
                }
            }
            if start.elapsed() >= next_sample {
                let sample = self
                    .sample(daemon, metrics, start, draining, sent, data_max)
                    .await?;
                eprintln!(
                    "soak:   {:.0} s: {} enqueued, {} completed, RSS {}, data hash {} (max {}), \
                     journal {} rows",
                    sample.t,
                    sample.enqueued,
                    sample.completed,
                    mib(sample.rss_kb),
                    sample.data,
                    sample.data_max,
                    sample.journal_jobs + sample.journal_attempts
                );
                report.sample(sample);
                data_max = 0;
                while next_sample <= start.elapsed() {
                    next_sample += sample_every;
                }
            }
        }
    }

    /// The figures of the load and the verdict; fails if the daemon fell behind.
    fn judge(
        &self,
        report: &mut Report,
        enqueued: u64,
        load_secs: f64,
        drain_secs: f64,
    ) -> Result<()> {
        let knobs = self.knobs;
        report.figure(
            "Enqueued (pipelined EVALSHA every 50 ms)",
            format!(
                "{} jobs in {load_secs:.1} s: {}",
                thousands(enqueued),
                per_sec(enqueued as f64 / load_secs)
            ),
        );
        let samples = report.samples.clone();
        let last = *samples.last().expect("the last sample was just taken");
        report.figure(
            "Completed after the load and the drain",
            format!(
                "{} of {} ({:.2}%), {drain_secs:.1} s after the last enqueue",
                thousands(last.completed),
                thousands(enqueued),
                percent(last.completed, enqueued)
            ),
        );
        let load: Vec<Sample> = samples.iter().filter(|s| !s.draining).copied().collect();
        let baseline = load.iter().find(|s| s.t >= WARM_UP.as_secs_f64()).copied();
        let half = knobs.secs as f64 / 2.0;
        let second_half: Vec<Sample> = load.iter().filter(|s| s.t >= half).copied().collect();
        match baseline {
            Some(baseline) if !second_half.is_empty() => {
                report.figure(
                    format!(
                        "Verdict: the sample at {:.0} s against the average of the {} samples \
                         from {half:.0} s to the end of the load",
                        baseline.t,
                        second_half.len()
                    ),
                    verdict(&baseline, &second_half),
                );
                report.figure(
                    format!(
                        "Trend over the load's second half (least-squares slope of the same {} \
                         samples)",
                        second_half.len()
                    ),
                    trend(&second_half),
                );
            }
            _ => report.note(format!(
                "no verdict: no sample of the load at or after {} s and in its second half",
                WARM_UP.as_secs()
            )),
        }
        let needed = (enqueued as f64 * MIN_COMPLETED_SHARE).ceil() as u64;
        ensure!(
            last.completed >= needed,
            "the daemon fell behind: {} of {} jobs completed {drain_secs:.0} s after the last \
             enqueue, fewer than {:.0}%",
            last.completed,
            enqueued,
            MIN_COMPLETED_SHARE * 100.0
        );
        Ok(())
    }

    /// One sample, `start` being when the load began.
    async fn sample(
        &self,
        daemon: &mut Daemon,
        metrics: SocketAddr,
        start: Instant,
        draining: bool,
        enqueued: u64,
        data_max: u64,
    ) -> Result<Sample> {
        daemon.ensure_running()?;
        let began = Instant::now();
        let t = start.elapsed().as_secs_f64();
        let rss_kb = daemon.status_kb("VmRSS")?;
        let completed = completed_jobs(metrics).await?;
        let mut redis = self.redis.clone();
        let info: String = redis::cmd("INFO")
            .arg("memory")
            .query_async(&mut redis)
            .await
            .context("Redis INFO memory")?;
        let used_memory = info_field(&info, "used_memory")
            .and_then(|v| v.parse().ok())
            .context("no used_memory in INFO memory")?;
        let (data, done, active): (u64, u64, u64) = redis::pipe()
            .cmd("HLEN")
            .arg(format!("{}:data", self.queue))
            .cmd("SCARD")
            .arg(format!("{}:done", self.queue))
            .cmd("LLEN")
            .arg(format!("{}:active", self.queue))
            .query_async(&mut redis)
            .await
            .context("HLEN, SCARD and LLEN of the queue's keys")?;
        let run_keys = self.run_keys().await?;
        let (journal_jobs, journal_attempts, journal_bytes): (i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM jobs), (SELECT count(*) FROM job_attempts),
                    pg_total_relation_size('jobs') + pg_total_relation_size('job_attempts')",
        )
        .fetch_one(&self.pg)
        .await
        .context("count the journal's rows")?;
        Ok(Sample {
            t,
            took: began.elapsed().as_secs_f64(),
            draining,
            enqueued,
            completed,
            used_memory,
            run_keys,
            data,
            data_max: data_max.max(data),
            done,
            active,
            journal_jobs: journal_jobs as u64,
            journal_attempts: journal_attempts as u64,
            journal_bytes: journal_bytes as u64,
            rss_kb,
        })
    }

    /// How many keys start with the run's prefix.
    async fn run_keys(&self) -> Result<u64> {
        let mut redis = self.redis.clone();
        let pattern = format!("{}*", self.prefix);
        let mut cursor: u64 = 0;
        let mut n = 0;
        loop {
            let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut redis)
                .await
                .context("SCAN the run's Redis keys")?;
            n += keys.len() as u64;
            cursor = next;
            if cursor == 0 {
                return Ok(n);
            }
        }
    }

    /// With the daemon stopped: what the journal still holds plus what maintenance says it
    /// pruned should be every completed job. A figure, not a check: a pass cut short by the
    /// shutdown (`between_passes` false) deletes rows without logging them.
    async fn cross_check(
        &self,
        daemon: &Daemon,
        between_passes: bool,
        report: &mut Report,
    ) -> Result<()> {
        if let Some((mean, max)) = report.sampling_secs() {
            report.figure(
                "Sampling's own cost (one sample's queries; the journal count scans its tables)",
                format!("{mean:.2} s on average, {max:.2} s at most"),
            );
        }
        let (rows, completed_rows): (i64, i64) = sqlx::query_as(
            "SELECT count(*), count(*) FILTER (WHERE state = 'completed') FROM jobs",
        )
        .fetch_one(&self.pg)
        .await
        .context("count the journal's jobs")?;
        let (dead, live): (i64, i64) = sqlx::query_as(
            "SELECT coalesce(sum(n_dead_tup), 0)::int8, coalesce(sum(n_live_tup), 0)::int8
               FROM pg_stat_user_tables WHERE relname IN ('jobs', 'job_attempts')",
        )
        .fetch_one(&self.pg)
        .await
        .context("read pg_stat_user_tables")?;
        report.figure(
            "Journal tables at the end (pg_stat_user_tables, jobs + job_attempts)",
            format!(
                "{} live rows, {} dead rows not yet vacuumed",
                thousands(live as u64),
                thousands(dead as u64)
            ),
        );
        let log = daemon.log_text();
        let passes = maintenance_lines(&log);
        let pruned: u64 = passes.iter().map(|p| p.pruned).sum();
        let trimmed: u64 = passes.iter().map(|p| p.trimmed).sum();
        report.figure(
            "Maintenance (its \"maintenance done\" log lines)",
            format!(
                "{} passes did something: {} jobs pruned from the journal, {} payloads trimmed \
                 from Redis",
                passes.len(),
                thousands(pruned),
                thousands(trimmed)
            ),
        );
        // A pass starts every interval, or at once when the previous one overran it: the gaps
        // between the lines are the passes' lengths once they take longer than the interval.
        if let Some(started) = report.load_started {
            let ends: Vec<String> = passes
                .iter()
                .filter_map(|p| p.at)
                .map(|at| format!("{:.0}", (at - started).as_seconds_f64()))
                .collect();
            report.figure(
                format!(
                    "Maintenance passes ended at (s since the load began; one starts every \
                     {MAINTENANCE_INTERVAL} or when the previous ends)"
                ),
                ends.join(", "),
            );
        }
        let completed = report.samples.last().map_or(0, |s| s.completed);
        report.figure(
            "Journal cross-check after the daemon stopped",
            format!(
                "{} jobs rows ({} completed) + {} pruned = {} (the daemon counted {} completed){}",
                thousands(rows as u64),
                thousands(completed_rows as u64),
                thousands(pruned),
                thousands(rows as u64 + pruned),
                thousands(completed),
                if between_passes {
                    ""
                } else {
                    "; stopped without waiting for a pass to end, so one may have been cut short"
                }
            ),
        );
        Ok(())
    }

    /// `quizworker` with this run's config, database, Redis prefix and log level.
    fn command(&self) -> Command {
        let mut command = Command::new(BIN);
        // Only this run's settings: none from the environment the bench was started in.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("QUIZWORKER_") {
                command.env_remove(name);
            }
        }
        command
            .env("QUIZWORKER_CONFIG", self.dir.path().join("config.toml"))
            .env("DATABASE_URL", &self.db_url)
            .env("REDIS_URL", &self.knobs.redis_url)
            .env("QUIZWORKER_REDIS__PREFIX", &self.prefix)
            // Warnings, plus the daemon's own info lines: "quizworker ready", "http listening"
            // and "maintenance done" are. This is also the daemon's default level.
            .env("RUST_LOG", "warn,quizworker=info");
        command
    }

    /// Starts `quizworker run --queues default` and returns once it has logged that it is ready.
    async fn start_daemon(&self) -> Result<Daemon> {
        let log = self.dir.path().join("daemon.log");
        let file = fs::File::create(&log).context("cannot create the daemon's log file")?;
        let child = self
            .command()
            .args(["run", "--queues", "default"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .context("cannot start quizworker run")?;
        let mut daemon = Daemon { child, log };
        let started = Instant::now();
        while !daemon.log_text().contains("quizworker ready") {
            daemon.ensure_running()?;
            ensure!(
                started.elapsed() < START_DEADLINE,
                "the daemon did not get ready in {START_DEADLINE:?}:\n{}",
                daemon.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(daemon)
    }

    /// Warnings and errors the daemon logged: none are expected, but they do not fail the run.
    fn note_daemon_log(&self, report: &mut Report) {
        let Ok(text) = fs::read_to_string(self.dir.path().join("daemon.log")) else {
            return;
        };
        let mut lines: Vec<&str> = text
            .lines()
            .filter(|line| line.contains(" WARN ") || line.contains(" ERROR "))
            .collect();
        if lines.is_empty() {
            return;
        }
        let total = lines.len();
        lines.truncate(5);
        report.note(format!(
            "the daemon logged {total} warning or error lines; the first: `{}`",
            lines.join("` / `")
        ));
    }

    /// Removes the database and the Redis keys; reports what it did.
    async fn teardown(self, report: &mut Report) -> Result<()> {
        self.pg.close().await;
        // Both are attempted whatever becomes of the other.
        let keys = self.delete_redis_keys().await;
        let database = self.drop_database().await;
        match (keys, database) {
            (Ok(n), Ok(())) => {
                report.note(format!(
                    "cleanup: dropped database {}, unlinked {n} Redis keys {}*",
                    self.db_name, self.prefix
                ));
                Ok(())
            }
            (Err(e), Ok(())) | (Ok(_), Err(e)) => Err(e),
            (Err(keys), Err(database)) => Err(anyhow!("{keys:#}; {database:#}")),
        }
    }

    async fn delete_redis_keys(&self) -> Result<u64> {
        let mut redis = self.redis.clone();
        let pattern = format!("{}*", self.prefix);
        let mut cursor: u64 = 0;
        let mut unlinked = 0;
        loop {
            // Deleting while scanning is fine: SCAN still returns every key that was there
            // throughout.
            let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut redis)
                .await
                .context("SCAN the run's Redis keys")?;
            if !keys.is_empty() {
                let n: u64 = redis::cmd("UNLINK")
                    .arg(&keys)
                    .query_async(&mut redis)
                    .await
                    .context("UNLINK the run's Redis keys")?;
                unlinked += n;
            }
            cursor = next;
            if cursor == 0 {
                return Ok(unlinked);
            }
        }
    }

    async fn drop_database(&self) -> Result<()> {
        let mut admin = PgConnection::connect(&self.admin_url)
            .await
            .context("cannot connect to Postgres to drop the database")?;
        // FORCE (Postgres 13+) ends connections a killed daemon may have left behind.
        let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.db_name);
        sqlx::raw_sql(AssertSqlSafe(sql))
            .execute(&mut admin)
            .await
            .with_context(|| format!("DROP DATABASE {}", self.db_name))?;
        let _ = admin.close().await;
        Ok(())
    }
}

/// The producer: `rate` jobs/s for `secs`, sending every [`ENQUEUE_EVERY`] what is due by the
/// clock so far, so that a late tick is made up at the next one. Returns when the last batch's
/// replies came.
async fn produce(
    mut redis: MultiplexedConnection,
    sha: String,
    queue: String,
    rate: f64,
    secs: Duration,
    enqueued: Arc<AtomicU64>,
) -> Result<Instant> {
    let mut ticks = tokio::time::interval(ENQUEUE_EVERY);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let started = Instant::now();
    let mut sent = 0;
    loop {
        ticks.tick().await;
        let elapsed = started.elapsed().min(secs);
        let due = (rate * elapsed.as_secs_f64()) as u64;
        while sent < due {
            let n = (due - sent).min(ENQUEUE_BATCH_MAX);
            let mut pipe = redis::pipe();
            for _ in 0..n {
                let envelope = Envelope::new(&Noop {}, Utc::now())?;
                pipe.cmd("EVALSHA")
                    .arg(&sha)
                    .arg(0)
                    .arg(&queue)
                    .arg(envelope.encode());
            }
            let replies: Vec<(String, i64)> = pipe
                .query_async(&mut redis)
                .await
                .context("pipelined EVALSHA")?;
            let created = replies.iter().filter(|(_, created)| *created == 1).count() as u64;
            ensure!(
                created == n,
                "only {created} of {n} jobs of a batch were enqueued"
            );
            sent += n;
            enqueued.store(sent, Ordering::Relaxed);
        }
        if elapsed >= secs {
            return Ok(Instant::now());
        }
    }
}

/// The daemon's count of completed jobs of every queue and kind, from /metrics.
async fn completed_jobs(addr: SocketAddr) -> Result<u64> {
    let body = tokio::task::spawn_blocking(move || http_get(addr, "/metrics"))
        .await
        .context("the /metrics request's task failed")??;
    let mut total = 0.0;
    for line in body.lines() {
        let Some(rest) = line.strip_prefix("quizworker_jobs_finished_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once('}') else {
            continue;
        };
        if labels.contains("outcome=\"completed\"") {
            total += value
                .trim()
                .parse::<f64>()
                .with_context(|| format!("not a metric line: {line:?}"))?;
        }
    }
    Ok(total as u64)
}

/// GET over plain HTTP/1.1: the body of a 200 response.
fn http_get(addr: SocketAddr, path: &str) -> Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, HTTP_TIMEOUT)
        .with_context(|| format!("cannot connect to the daemon's http server at {addr}"))?;
    stream.set_read_timeout(Some(HTTP_TIMEOUT))?;
    stream.set_write_timeout(Some(HTTP_TIMEOUT))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .with_context(|| format!("GET {path}"))?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .with_context(|| format!("GET {path}: reading the response"))?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .with_context(|| format!("GET {path}: not an HTTP response"))?;
    ensure!(
        head.split_whitespace().nth(1) == Some("200"),
        "GET {path}: {}",
        head.lines().next().unwrap_or("")
    );
    Ok(body.to_owned())
}

/// One "maintenance done" line of the daemon's log.
struct Pass {
    /// When it was logged: the line's timestamp.
    at: Option<DateTime<Utc>>,
    pruned: u64,
    trimmed: u64,
}

/// The "maintenance done" lines of the daemon's log.
fn maintenance_lines(log: &str) -> Vec<Pass> {
    let field = |line: &str, name: &str| -> u64 {
        line.split_whitespace()
            .find_map(|word| word.strip_prefix(name)?.strip_prefix('='))
            .and_then(|value| value.parse().ok())
            .unwrap_or(0)
    };
    log.lines()
        .filter(|line| line.contains("maintenance done"))
        .map(|line| Pass {
            at: line
                .split_whitespace()
                .next()
                .and_then(|ts| DateTime::parse_from_rfc3339(ts).ok())
                .map(|ts| ts.with_timezone(&Utc)),
            pruned: field(line, "pruned"),
            trimmed: field(line, "trimmed"),
        })
        .collect()
}

/// The shipped defaults (config.toml), but an HTTP port of the system's choosing and frequent
/// maintenance. The default queue's whole table is written so that nothing depends on how
/// tables merge with the defaults.
fn config_toml() -> String {
    format!(
        r#"# Written by benches/soak.rs.
[http]
listen = "127.0.0.1:0"

[maintenance]
interval = "{MAINTENANCE_INTERVAL}"
keep_completed = "{KEEP_COMPLETED}"

[queues.default]
concurrency = 1000
timeout = "1m"
max_attempts = 5
backoff = {{ base = "2s", cap = "10m", jitter = 0.2 }}
"#
    )
}

/// `url` with its database (the path) replaced by `database`. User, password, host and query
/// options are kept as written, so a password is never decoded and re-encoded.
fn with_database(url: &str, database: &str) -> Result<String> {
    let authority = url
        .find("://")
        .map(|i| i + 3)
        .with_context(|| format!("DATABASE_URL {url:?} is not a URL"))?;
    let query = url[authority..]
        .find('?')
        .map_or(url.len(), |i| authority + i);
    let path = url[authority..query]
        .find('/')
        .map_or(query, |i| authority + i);
    Ok(format!("{}/{database}{}", &url[..path], &url[query..]))
}

/// A running `quizworker run`; killed if dropped before [`Daemon::stop`].
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    /// A field of /proc/<pid>/status given in kB, such as VmRSS or VmHWM.
    fn status_kb(&self, field: &str) -> Result<u64> {
        let path = format!("/proc/{}/status", self.child.id());
        let status = fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
        status
            .lines()
            .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|value| value.trim().strip_suffix("kB")?.trim().parse().ok())
            .with_context(|| format!("no {field} in kB in {path}"))
    }

    /// Where the health and metrics server listens, from the log line "http listening
    /// addr=...", which comes before the ready line.
    fn http_addr(&self) -> Result<SocketAddr> {
        let text = self.log_text();
        text.lines()
            .filter(|line| line.contains("http listening"))
            .find_map(|line| {
                line.split("addr=")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .with_context(|| format!("no \"http listening addr=\" line:\n{}", self.log_tail()))
    }

    fn ensure_running(&mut self) -> Result<()> {
        if let Some(status) = self
            .child
            .try_wait()
            .context("cannot check on the daemon")?
        {
            bail!("the daemon exited ({status}):\n{}", self.log_tail());
        }
        Ok(())
    }

    /// SIGTERM, then waits for a clean exit.
    async fn stop(&mut self) -> Result<()> {
        let pid = self.child.id().to_string();
        // Through kill(1): std only sends SIGKILL, and one signal is not worth a dependency.
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .context("cannot run kill")?;
        ensure!(status.success(), "kill -TERM {pid} failed");
        let started = Instant::now();
        loop {
            if let Some(status) = self
                .child
                .try_wait()
                .context("cannot wait for the daemon")?
            {
                ensure!(
                    status.success(),
                    "the daemon exited with {status} after SIGTERM:\n{}",
                    self.log_tail()
                );
                return Ok(());
            }
            ensure!(
                started.elapsed() < STOP_DEADLINE,
                "the daemon did not exit within {STOP_DEADLINE:?} of SIGTERM:\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last lines of the log, for error messages.
    fn log_tail(&self) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One figure of the verdict: how it is read off a sample, and how it is shown.
struct Measure {
    name: &'static str,
    value: fn(&Sample) -> f64,
    show: fn(f64) -> String,
    /// The unit of the slope, per minute.
    unit: &'static str,
}

const MEASURES: &[Measure] = &[
    Measure {
        name: "daemon RSS",
        value: |s| s.rss_kb as f64 / 1024.0,
        show: |v| format!("{v:.1} MiB"),
        unit: "MiB",
    },
    Measure {
        name: "Redis data hash",
        value: |s| s.data as f64,
        show: |v| format!("{} entries", thousands(v.round() as u64)),
        unit: "entries",
    },
    Measure {
        name: "done set",
        value: |s| s.done as f64,
        show: |v| format!("{} ids", thousands(v.round() as u64)),
        unit: "ids",
    },
    Measure {
        name: "this run's Redis keys",
        value: |s| s.run_keys as f64,
        show: |v| format!("{} keys", thousands(v.round() as u64)),
        unit: "keys",
    },
    Measure {
        name: "journal",
        value: |s| (s.journal_jobs + s.journal_attempts) as f64,
        show: |v| format!("{} rows", thousands(v.round() as u64)),
        unit: "rows",
    },
    Measure {
        name: "journal on disk",
        value: |s| s.journal_bytes as f64 / 1024.0 / 1024.0,
        show: |v| format!("{v:.1} MiB"),
        unit: "MiB",
    },
    Measure {
        name: "Redis used_memory (whole server)",
        value: |s| s.used_memory as f64 / 1024.0 / 1024.0,
        show: |v| format!("{v:.1} MiB"),
        unit: "MiB",
    },
];

/// "RSS: 21.3 MiB after 1 min, 21.8 MiB at the end (+2%); ..." with "at the end" the average
/// of `late`.
fn verdict(baseline: &Sample, late: &[Sample]) -> String {
    let parts: Vec<String> = MEASURES
        .iter()
        .map(|m| {
            let before = (m.value)(baseline);
            let after = late.iter().map(|s| (m.value)(s)).sum::<f64>() / late.len() as f64;
            let change = if before > 0.0 {
                format!(" ({:+.0}%)", (after - before) / before * 100.0)
            } else {
                String::new()
            };
            format!(
                "{}: {} after {:.0} s, {} at the end{change}",
                m.name,
                (m.show)(before),
                baseline.t,
                (m.show)(after)
            )
        })
        .collect();
    parts.join("; ")
}

/// Each measure's least-squares slope over `samples`, per minute.
fn trend(samples: &[Sample]) -> String {
    let n = samples.len() as f64;
    let parts: Vec<String> = MEASURES
        .iter()
        .map(|m| {
            let mean_t = samples.iter().map(|s| s.t).sum::<f64>() / n;
            let mean_v = samples.iter().map(|s| (m.value)(s)).sum::<f64>() / n;
            let (num, den) = samples.iter().fold((0.0, 0.0), |(num, den), s| {
                let dt = s.t - mean_t;
                (num + dt * ((m.value)(s) - mean_v), den + dt * dt)
            });
            let slope = if den > 0.0 { num / den * 60.0 } else { 0.0 };
            // Counts in whole units, sizes to the hundredth of a MiB.
            let digits = if m.unit == "MiB" { 2 } else { 0 };
            format!("{} {slope:+.digits$} {}/min", m.name, m.unit)
        })
        .collect();
    parts.join("; ")
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        100.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

fn per_sec(rate: f64) -> String {
    format!("{} jobs/s", thousands(rate.round() as u64))
}

fn mib(kb: u64) -> String {
    format!("{:.1} MiB", kb as f64 / 1024.0)
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The Markdown report, filled in as the run goes, so a failed run still shows what it measured.
struct Report {
    machine: Vec<(String, String)>,
    knobs: Vec<(String, String)>,
    figures: Vec<(String, String)>,
    samples: Vec<Sample>,
    /// When the load began, by the wall clock (the daemon's log lines carry its time).
    load_started: Option<DateTime<Utc>>,
    notes: Vec<String>,
}

impl Report {
    fn new(knobs: &Knobs) -> Report {
        let mut report = Report {
            machine: Vec::new(),
            knobs: vec![
                ("SOAK_SECS".into(), format!("{} s", knobs.secs)),
                ("SOAK_RATE".into(), format!("{} jobs/s", knobs.rate)),
                (
                    "SOAK_SAMPLE_SECS".into(),
                    format!("{} s", knobs.sample_secs),
                ),
                (
                    "daemon config (temp file)".into(),
                    format!(
                        "maintenance.interval = {MAINTENANCE_INTERVAL}, \
                         maintenance.keep_completed = {KEEP_COMPLETED}, default queue as shipped \
                         (concurrency 1000)"
                    ),
                ),
            ],
            figures: Vec::new(),
            samples: Vec::new(),
            load_started: None,
            notes: Vec::new(),
        };
        let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
        report.machine("CPUs (nproc)", nproc.to_string());
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        report.machine(
            "CPU",
            proc_field(&cpuinfo, "model name").unwrap_or("unknown".into()),
        );
        let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory = proc_field(&meminfo, "MemTotal")
            .and_then(|v| v.trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or("unknown".into(), |kb| {
                format!("{:.1} GiB", kb as f64 / 1024.0 / 1024.0)
            });
        report.machine("Memory", memory);
        report.machine(
            "redis-server --version",
            command_line("redis-server", &["--version"]),
        );
        report.machine("Daemon source", daemon_source());
        report.machine("Load average at the start (/proc/loadavg)", load_average());
        report
    }

    fn machine(&mut self, name: &str, value: String) {
        self.machine.push((name.to_owned(), value));
    }

    fn figure(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let (name, value) = (name.into(), value.into());
        eprintln!("soak: {name}: {value}");
        self.figures.push((name, value));
    }

    fn sample(&mut self, sample: Sample) {
        self.samples.push(sample);
    }

    /// The mean and the longest time a sample took.
    fn sampling_secs(&self) -> Option<(f64, f64)> {
        let n = self.samples.len();
        (n > 0).then(|| {
            let secs = self.samples.iter().map(|s| s.took);
            (
                secs.clone().sum::<f64>() / n as f64,
                secs.fold(0.0, f64::max),
            )
        })
    }

    fn note(&mut self, note: String) {
        self.notes.push(note);
    }

    fn render(&self) -> String {
        let table = |header: &str, rows: &[(String, String)]| {
            let mut out = format!("| {header} | value |\n|---|---|\n");
            for (name, value) in rows {
                out.push_str(&format!("| {name} | {} |\n", value.replace('|', "\\|")));
            }
            out
        };
        let mut out = String::from("# quizworker soak benchmark\n\n");
        out.push_str(&format!("## Machine\n\n{}\n", table("item", &self.machine)));
        out.push_str(&format!("## Knobs\n\n{}\n", table("knob", &self.knobs)));
        out.push_str(&format!("## Samples\n\n{}\n", self.samples_table()));
        out.push_str(&format!("## Figures\n\n{}", table("figure", &self.figures)));
        if !self.notes.is_empty() {
            out.push('\n');
            for note in &self.notes {
                out.push_str(&format!("- {note}\n"));
            }
        }
        out
    }

    fn samples_table(&self) -> String {
        let mut out = String::from(
            "t = seconds since the load began (* after the last enqueue); completed = the \
             daemon's counter; jobs/s = completed in the window since the previous sample; \
             used_memory = the whole Redis server's; keys = this run's (`prefix*`, SCAN); data = \
             entries of the default queue's data hash (max = largest of the once-a-second \
             readings since the previous sample); done = apalis' acknowledged set; active = jobs \
             waiting to run; journal rows = jobs + job_attempts, and their size on disk.\n\n\
             | t (s) | enqueued | completed | jobs/s | Redis used_memory MiB | keys | data | \
             data max | done | active | journal rows | journal MiB | daemon RSS MiB |\n\
             |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        let mut previous: Option<&Sample> = None;
        for s in &self.samples {
            let rate = previous.filter(|p| s.t > p.t).map_or("".into(), |p| {
                thousands(
                    ((s.completed.saturating_sub(p.completed)) as f64 / (s.t - p.t)).round() as u64,
                )
            });
            out.push_str(&format!(
                "| {:.0}{} | {} | {} | {rate} | {:.1} | {} | {} | {} | {} | {} | {} + {} | {:.1} \
                 | {:.1} |\n",
                s.t,
                if s.draining { "*" } else { "" },
                thousands(s.enqueued),
                thousands(s.completed),
                s.used_memory as f64 / 1024.0 / 1024.0,
                thousands(s.run_keys),
                thousands(s.data),
                thousands(s.data_max),
                thousands(s.done),
                thousands(s.active),
                thousands(s.journal_jobs),
                thousands(s.journal_attempts),
                s.journal_bytes as f64 / 1024.0 / 1024.0,
                s.rss_kb as f64 / 1024.0,
            ));
            previous = Some(s);
        }
        out
    }
}

/// The value of a `name : value` line of a /proc file.
fn proc_field(text: &str, name: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == name).then(|| value.trim().to_owned())
    })
}

/// The 1, 5 and 15 minute load averages.
fn load_average() -> String {
    let text = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let fields: Vec<&str> = text.split_whitespace().take(3).collect();
    if fields.len() == 3 {
        format!(
            "{} (1 min), {} (5 min), {} (15 min)",
            fields[0], fields[1], fields[2]
        )
    } else {
        "unknown".into()
    }
}

/// The value of a `name:value` line of Redis' INFO.
fn info_field(info: &str, name: &str) -> Option<String> {
    info.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .map(|value| value.trim().to_owned())
}

/// The first line a command prints, or why there is none.
fn command_line(program: &str, args: &[&str]) -> String {
    match Command::new(program).args(args).output() {
        Ok(output) if output.status.success() => String::from_utf8_lossy(&output.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_owned(),
        Ok(output) => format!("{program} failed ({})", output.status),
        Err(e) => format!("{program} not found ({e})"),
    }
}

/// The commit the daemon was built from, and whether its sources had uncommitted changes.
fn daemon_source() -> String {
    let dir = env!("CARGO_MANIFEST_DIR");
    let commit = command_line("git", &["-C", dir, "rev-parse", "--short", "HEAD"]);
    let dirty = Command::new("git")
        .args([
            "-C",
            dir,
            "status",
            "--porcelain",
            "--",
            "src",
            "jobs",
            "migrations",
            "Cargo.lock",
        ])
        .output()
        .map(|output| !output.stdout.is_empty())
        .unwrap_or(false);
    if dirty {
        format!("git {commit}, with uncommitted changes in src/, jobs/ or migrations/")
    } else {
        format!("git {commit}")
    }
}
