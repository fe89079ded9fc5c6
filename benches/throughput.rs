//! Throughput and latency of the real daemon: `cargo bench --bench throughput`.
//!
//! The release binary is driven the way a deployment drives it: a producer enqueues `diag.noop`
//! envelopes through the protocol's Lua script (docs/PROTOCOL.md), the daemon runs them and
//! journals every start and finish in Postgres, and the figures are read back from the journal.
//! Each run gets its own Postgres database and Redis key prefix, both removed at the end, so it
//! can share servers with the tests or a running deployment.
//!
//! Phases:
//! 1. idle: the daemon's resident memory 2 s after it is ready, with nothing to do;
//! 2. latency: BENCH_LATENCY_JOBS jobs, one at a time at BENCH_LATENCY_RATE/s, to a running
//!    daemon; a job's latency is its producer's `created_at` to the journaled start of attempt 1;
//! 3. throughput: with the daemon stopped, BENCH_JOBS jobs are pushed as fast as possible, then a
//!    fresh daemon drains that backlog while the journal is sampled every 250 ms.
//!
//! Knobs (environment, with defaults): BENCH_JOBS=100000, BENCH_LATENCY_JOBS=500,
//! BENCH_LATENCY_RATE=200 (jobs/s), BENCH_CONCURRENCY=1000 (the default queue's concurrency, as shipped),
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres (any database on the server: the
//! run's own database is created next to it), REDIS_URL=redis://127.0.0.1:6379.
//!
//! Prints a Markdown report on stdout and progress on stderr; exits non-zero if anything failed
//! (the report then shows what was measured before the failure).

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use chrono::Utc;
use quizworker_jobs::diag::Noop;
use quizworker_jobs::{ENQUEUE_SCRIPT, Envelope};
use redis::aio::MultiplexedConnection;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use tokio::time::MissedTickBehavior;

const BIN: &str = env!("CARGO_BIN_EXE_quizworker");

/// Envelopes per pipeline when filling the backlog.
const ENQUEUE_BATCH: u64 = 1000;
/// How often the journal is counted while the backlog drains.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);
/// The daemon must log "quizworker ready" within this...
const START_DEADLINE: Duration = Duration::from_secs(60);
/// ...and exit within this after SIGTERM (its own shutdown timeout is 30 s).
const STOP_DEADLINE: Duration = Duration::from_secs(60);
/// Waiting for jobs fails once no job has completed for this long.
const STALL_DEADLINE: Duration = Duration::from_secs(30);

#[tokio::main]
async fn main() -> ExitCode {
    let knobs = match Knobs::from_env() {
        Ok(knobs) => knobs,
        Err(e) => {
            eprintln!("bench: error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let mut report = Report::new(&knobs);
    let mut errors = Vec::new();
    match Bench::setup(&knobs, &mut report).await {
        Err(e) => errors.push(format!("setup: {e:#}")),
        Ok(bench) => {
            // Ctrl-C drops the run (and with it any daemon, which is killed) but still cleans up.
            let result = tokio::select! {
                result = bench.run(&mut report) => result,
                _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted by Ctrl-C")),
            };
            if let Err(e) = result {
                errors.push(format!("{e:#}"));
            }
            bench.note_daemon_warnings(&mut report);
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
            eprintln!("bench: error: {error}");
        }
        ExitCode::FAILURE
    }
}

/// What the run is asked to do, from the environment.
struct Knobs {
    jobs: u64,
    latency_jobs: u64,
    latency_rate: f64,
    concurrency: u64,
    database_url: String,
    redis_url: String,
}

impl Knobs {
    fn from_env() -> Result<Knobs> {
        let knobs = Knobs {
            jobs: env_or("BENCH_JOBS", 100_000)?,
            latency_jobs: env_or("BENCH_LATENCY_JOBS", 500)?,
            latency_rate: env_or("BENCH_LATENCY_RATE", 200.0)?,
            concurrency: env_or("BENCH_CONCURRENCY", 1000)?,
            database_url: env_or(
                "DATABASE_URL",
                "postgres://postgres@127.0.0.1:5432/postgres".to_owned(),
            )?,
            redis_url: env_or("REDIS_URL", "redis://127.0.0.1:6379".to_owned())?,
        };
        // The report compares the first and last fifth of the backlog.
        ensure!(knobs.jobs >= 5, "BENCH_JOBS must be at least 5");
        ensure!(
            knobs.latency_jobs >= 1,
            "BENCH_LATENCY_JOBS must be at least 1"
        );
        ensure!(
            knobs.latency_rate.is_finite() && knobs.latency_rate > 0.0,
            "BENCH_LATENCY_RATE must be more than 0"
        );
        ensure!(
            knobs.concurrency >= 1,
            "BENCH_CONCURRENCY must be at least 1"
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

/// One benchmark run: its own database, Redis prefix and config file.
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
    /// Holds the config file and the daemons' logs.
    dir: tempfile::TempDir,
}

impl<'k> Bench<'k> {
    /// Everything that can fail is done before CREATE DATABASE, so that a failed setup leaves
    /// nothing behind.
    async fn setup(knobs: &'k Knobs, report: &mut Report) -> Result<Bench<'k>> {
        let client = redis::Client::open(knobs.redis_url.as_str())
            .with_context(|| format!("REDIS_URL {:?} is not a Redis URL", knobs.redis_url))?;
        // redis-rs gives up on a reply after 500 ms by default; a pipeline of a thousand scripts
        // on a Redis busy with the daemon can take longer without anything being wrong.
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
        let redis_version = info
            .lines()
            .find_map(|line| line.strip_prefix("redis_version:"))
            .unwrap_or("unknown")
            .trim()
            .to_owned();
        report.machine("Redis server (INFO redis_version)", redis_version);

        let dir = tempfile::tempdir().context("cannot create a temp dir")?;
        fs::write(
            dir.path().join("config.toml"),
            config_toml(knobs.concurrency),
        )
        .context("cannot write the config file")?;

        let id = ulid::Ulid::new();
        let db_name = format!("quizworker_bench_{}", id.to_string().to_lowercase());
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
        sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE \"{db_name}\"")))
            .execute(&mut admin)
            .await
            .with_context(|| format!("CREATE DATABASE {db_name}"))?;
        let _ = admin.close().await;
        eprintln!("bench: database {db_name}, Redis prefix bench-{id}:");

        let prefix = format!("bench-{id}:");
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

        eprintln!("bench: idle");
        let mut daemon = self.start_daemon("first").await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        report.figure(
            "Idle RSS (VmRSS, 2 s after ready)",
            mib(daemon.status_kb("VmRSS")?),
        );

        self.measure_latency(&mut daemon, report).await?;
        daemon.stop().await?;

        self.measure_throughput(report).await?;
        self.verify(report).await
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

    /// Light load: one job at a time, spaced evenly, to a daemon that is waiting for work.
    async fn measure_latency(&self, daemon: &mut Daemon, report: &mut Report) -> Result<()> {
        let n = self.knobs.latency_jobs;
        eprintln!("bench: latency, {n} jobs at {}/s", self.knobs.latency_rate);
        let script = redis::Script::new(ENQUEUE_SCRIPT);
        let mut redis = self.redis.clone();
        let mut ticks =
            tokio::time::interval(Duration::from_secs_f64(1.0 / self.knobs.latency_rate));
        // After a slow call, keep the spacing rather than send a catch-up burst (the default),
        // which would no longer be light load.
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let started = Instant::now();
        for _ in 0..n {
            ticks.tick().await;
            let envelope = Envelope::new(&Noop {}, Utc::now())?;
            let (id, created): (String, i64) = script
                .arg(&self.queue)
                .arg(envelope.encode())
                .invoke_async(&mut redis)
                .await
                .context("enqueue through the protocol script")?;
            ensure!(created == 1, "the script did not enqueue job {id}");
        }
        let sent_rate = n as f64 / started.elapsed().as_secs_f64();
        self.sample_until_completed(daemon, n).await?;

        // Both times come from this machine's clock: `created_at` from the producer (this
        // program), `started_at` from Postgres' now() in the journal batch that recorded the
        // start. With a remote Postgres the clocks' offset would be in every figure.
        let mut latencies: Vec<f64> = sqlx::query_scalar(
            "SELECT (EXTRACT(EPOCH FROM a.started_at - j.created_at) * 1000)::float8
               FROM jobs j JOIN job_attempts a ON a.job_id = j.id AND a.attempt = 1",
        )
        .fetch_all(&self.pg)
        .await
        .context("read the latencies from the journal")?;
        ensure!(
            latencies.len() as u64 == n,
            "the journal has {} first attempts, {n} expected",
            latencies.len()
        );
        latencies.sort_by(f64::total_cmp);
        let label = format!("Latency, enqueue to start ({n} jobs at {sent_rate:.0}/s)");
        report.figure(format!("{label}: p50"), ms(percentile(&latencies, 0.50)));
        report.figure(format!("{label}: p99"), ms(percentile(&latencies, 0.99)));
        report.figure(format!("{label}: max"), ms(percentile(&latencies, 1.0)));
        Ok(())
    }

    /// Heavy load: the whole backlog is in Redis before the daemon starts.
    async fn measure_throughput(&self, report: &mut Report) -> Result<()> {
        let jobs = self.knobs.jobs;
        eprintln!("bench: enqueueing {jobs} jobs");
        let mut redis = self.redis.clone();
        let sha = redis::Script::new(ENQUEUE_SCRIPT)
            .load_async(&mut redis)
            .await
            .context("SCRIPT LOAD")?;
        let backlog_from = Utc::now();
        let started = Instant::now();
        let mut pushed = 0;
        while pushed < jobs {
            let n = (jobs - pushed).min(ENQUEUE_BATCH);
            let mut pipe = redis::pipe();
            for _ in 0..n {
                let envelope = Envelope::new(&Noop {}, Utc::now())?;
                pipe.cmd("EVALSHA")
                    .arg(&sha)
                    .arg(0)
                    .arg(&self.queue)
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
            pushed += n;
        }
        let enqueue_secs = started.elapsed().as_secs_f64();
        report.figure(
            format!("Enqueue rate ({jobs} jobs, pipelined EVALSHA, {ENQUEUE_BATCH} a batch)"),
            per_sec(jobs as f64 / enqueue_secs),
        );
        let waiting: u64 = redis::cmd("LLEN")
            .arg(format!("{}:active", self.queue))
            .query_async(&mut redis)
            .await
            .context("LLEN of the active list")?;
        ensure!(
            waiting == jobs,
            "{waiting} jobs wait in Redis, {jobs} expected"
        );

        eprintln!("bench: draining the backlog");
        let mut daemon = self.start_daemon("second").await?;
        let before = self.knobs.latency_jobs;
        let samples = self
            .sample_until_completed(&mut daemon, before + jobs)
            .await?;
        let peak = daemon.status_kb("VmHWM")?;
        daemon.stop().await?;

        // The samples count every completed job; keep the backlog's.
        let done: Vec<(f64, u64)> = samples
            .iter()
            .map(|&(t, completed)| (t, completed.saturating_sub(before)))
            .collect();
        let fifth = jobs / 5;
        let total_secs = time_at(&done, jobs);
        let first_secs = time_at(&done, fifth);
        let last_secs = total_secs - time_at(&done, jobs - fifth);
        report.figure(
            format!("Processing rate, whole backlog ({jobs} jobs, ready to last completion)"),
            format!("{} ({total_secs:.2} s)", per_sec(jobs as f64 / total_secs)),
        );
        report.figure(
            "Processing rate, first 20% of the backlog (from ready)",
            per_sec(fifth as f64 / first_secs),
        );
        report.figure(
            "Processing rate, last 20% of the backlog",
            per_sec(fifth as f64 / last_secs),
        );
        // A cross-check free of the sampling step and of startup: the journal's own times.
        let journal_secs: Option<f64> = sqlx::query_scalar(
            "SELECT EXTRACT(EPOCH FROM max(j.finished_at) - min(a.started_at))::float8
               FROM jobs j JOIN job_attempts a ON a.job_id = j.id
              WHERE j.created_at >= $1",
        )
        .bind(backlog_from)
        .fetch_one(&self.pg)
        .await
        .context("read the backlog's first start and last finish")?;
        if let Some(secs) = journal_secs.filter(|s| *s > 0.0) {
            report.figure(
                "Processing rate, whole backlog (journal: first start to last finish)",
                format!("{} ({secs:.2} s)", per_sec(jobs as f64 / secs)),
            );
        }
        report.figure("Peak RSS while draining (VmHWM)", mib(peak));
        Ok(())
    }

    /// Every job, from both phases, completed with exactly one attempt.
    async fn verify(&self, report: &mut Report) -> Result<()> {
        let expected = (self.knobs.latency_jobs + self.knobs.jobs) as i64;
        let (jobs, completed, one_attempt): (i64, i64, i64) = sqlx::query_as(
            "SELECT count(*), count(*) FILTER (WHERE state = 'completed'),
                    count(*) FILTER (WHERE attempts = 1)
               FROM jobs",
        )
        .fetch_one(&self.pg)
        .await
        .context("count the jobs")?;
        let (attempts, completed_attempts): (i64, i64) = sqlx::query_as(
            "SELECT count(*), count(*) FILTER (WHERE outcome = 'completed') FROM job_attempts",
        )
        .fetch_one(&self.pg)
        .await
        .context("count the attempts")?;
        report.figure(
            "Journal check",
            format!(
                "{jobs} jobs ({expected} enqueued), {completed} completed, {one_attempt} with \
                 attempts = 1; {attempts} attempt rows, {completed_attempts} completed"
            ),
        );
        ensure!(
            [jobs, completed, one_attempt, attempts, completed_attempts]
                .iter()
                .all(|&n| n == expected),
            "the journal does not show every job completed with exactly one attempt"
        );
        Ok(())
    }

    /// Counts completed jobs every [`SAMPLE_EVERY`] from the daemon's ready line until `target`
    /// are, and returns the samples: (seconds since ready, completed jobs).
    async fn sample_until_completed(
        &self,
        daemon: &mut Daemon,
        target: u64,
    ) -> Result<Vec<(f64, u64)>> {
        let ready = daemon.ready_at;
        // Nothing is journaled when the ready line appears (the first poll of the log sees it
        // within 10 ms), so the count then is what earlier phases completed.
        let mut samples = vec![(0.0, self.completed().await?)];
        let mut ticks = tokio::time::interval_at(
            tokio::time::Instant::from_std(ready) + SAMPLE_EVERY,
            SAMPLE_EVERY,
        );
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut last_progress = Instant::now();
        let mut last_report = Instant::now();
        loop {
            ticks.tick().await;
            daemon.ensure_running()?;
            // The time of the count is when the query starts: it sees the rows committed then.
            let t = ready.elapsed().as_secs_f64();
            let completed = self.completed().await?;
            let previous = samples.last().map_or(0, |&(_, c)| c);
            samples.push((t, completed));
            if completed >= target {
                return Ok(samples);
            }
            if completed > previous {
                last_progress = Instant::now();
            } else if last_progress.elapsed() > STALL_DEADLINE {
                bail!(
                    "no job completed for {STALL_DEADLINE:?}: {completed} of {target} are\n{}",
                    daemon.log_tail()
                );
            }
            if last_report.elapsed() >= Duration::from_secs(2) {
                eprintln!("bench:   {completed} of {target} completed after {t:.1} s");
                last_report = Instant::now();
            }
        }
    }

    async fn completed(&self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE state = 'completed'")
            .fetch_one(&self.pg)
            .await
            .context("count completed jobs")?;
        Ok(n as u64)
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
            // Warnings, plus the daemon's own info lines: "quizworker ready" is one. This is
            // also the daemon's default level, so per-job spans cost what they cost in production.
            .env("RUST_LOG", "warn,quizworker=info");
        command
    }

    /// Starts `quizworker run --queues default` and returns once it has logged that it is ready.
    async fn start_daemon(&self, name: &str) -> Result<Daemon> {
        let log = self.dir.path().join(format!("daemon-{name}.log"));
        let file = fs::File::create(&log).context("cannot create the daemon's log file")?;
        let child = self
            .command()
            .args(["run", "--queues", "default"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .context("cannot start quizworker run")?;
        let mut daemon = Daemon {
            child,
            log,
            ready_at: Instant::now(),
        };
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
        daemon.ready_at = Instant::now();
        Ok(daemon)
    }

    /// Warnings and errors the daemons logged: none are expected, but they do not fail the run.
    fn note_daemon_warnings(&self, report: &mut Report) {
        let Ok(entries) = fs::read_dir(self.dir.path()) else {
            return;
        };
        let mut lines: Vec<String> = entries
            .flatten()
            .filter(|entry| entry.file_name().to_string_lossy().starts_with("daemon-"))
            .filter_map(|entry| fs::read_to_string(entry.path()).ok())
            .flat_map(|text| {
                text.lines()
                    .filter(|line| line.contains(" WARN ") || line.contains(" ERROR "))
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
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

/// The shipped defaults (config.toml), but the default queue's concurrency. The whole table is
/// written so that nothing depends on how tables merge with the defaults.
fn config_toml(concurrency: u64) -> String {
    format!(
        r#"# Written by benches/throughput.rs.
[queues.default]
concurrency = {concurrency}
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
    /// When the bench saw the "quizworker ready" line.
    ready_at: Instant,
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
    async fn stop(mut self) -> Result<()> {
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

/// Seconds at which `n` jobs were done, interpolated between the two samples around it: the
/// samples are 250 ms apart, too coarse to read a few seconds' run off them directly.
fn time_at(samples: &[(f64, u64)], n: u64) -> f64 {
    let Some(i) = samples.iter().position(|&(_, done)| done >= n) else {
        // Callers only ask for counts up to the last sample's.
        return samples.last().map_or(0.0, |&(t, _)| t);
    };
    if i == 0 {
        return samples[0].0;
    }
    let (t0, d0) = samples[i - 1];
    let (t1, d1) = samples[i];
    t0 + (t1 - t0) * (n - d0) as f64 / (d1 - d0) as f64
}

/// Nearest-rank percentile of sorted values; `q` from 0 to 1.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn per_sec(rate: f64) -> String {
    format!("{} jobs/s", thousands(rate.round() as u64))
}

fn ms(value: f64) -> String {
    format!("{value:.1} ms")
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
    notes: Vec<String>,
}

impl Report {
    fn new(knobs: &Knobs) -> Report {
        let mut report = Report {
            machine: Vec::new(),
            knobs: vec![
                ("BENCH_JOBS".into(), knobs.jobs.to_string()),
                ("BENCH_LATENCY_JOBS".into(), knobs.latency_jobs.to_string()),
                (
                    "BENCH_LATENCY_RATE".into(),
                    format!("{} jobs/s", knobs.latency_rate),
                ),
                ("BENCH_CONCURRENCY".into(), knobs.concurrency.to_string()),
            ],
            figures: Vec::new(),
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
        report
    }

    fn machine(&mut self, name: &str, value: String) {
        self.machine.push((name.to_owned(), value));
    }

    fn figure(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let (name, value) = (name.into(), value.into());
        eprintln!("bench: {name}: {value}");
        self.figures.push((name, value));
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
        let mut out = String::from("# quizworker throughput benchmark\n\n");
        out.push_str(&format!("## Machine\n\n{}\n", table("item", &self.machine)));
        out.push_str(&format!("## Knobs\n\n{}\n", table("knob", &self.knobs)));
        out.push_str(&format!("## Figures\n\n{}", table("figure", &self.figures)));
        if !self.notes.is_empty() {
            out.push('\n');
            for note in &self.notes {
                out.push_str(&format!("- {note}\n"));
            }
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
