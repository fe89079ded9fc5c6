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

mod common;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, ensure};
use chrono::Utc;
use common::{Daemon, Report, Run, RunSpec, env_or, mib, per_sec, percentile, time_at};
use quizworker_jobs::diag::Noop;
use quizworker_jobs::{ENQUEUE_SCRIPT, Envelope};
use tokio::time::MissedTickBehavior;

/// Envelopes per pipeline when filling the backlog.
const ENQUEUE_BATCH: u64 = 1000;

#[tokio::main]
async fn main() -> ExitCode {
    let knobs = match Knobs::from_env() {
        Ok(knobs) => knobs,
        Err(e) => {
            eprintln!("bench: error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let mut report = report(&knobs);
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
            bench.run.note_daemon_warnings(&mut report);
            if let Err(e) = bench.run.teardown(&mut report).await {
                errors.push(format!("cleanup: {e:#}"));
            }
        }
    }
    common::finish(&mut report, &errors, "")
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
            database_url: common::database_url()?,
            redis_url: common::redis_url()?,
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

/// One benchmark run: its own database, Redis prefix and config file.
struct Bench<'k> {
    knobs: &'k Knobs,
    run: Run,
}

impl<'k> Bench<'k> {
    async fn setup(knobs: &'k Knobs, report: &mut Report) -> Result<Bench<'k>> {
        let spec = RunSpec {
            tag: "bench",
            queue: "default",
            config_toml: &config_toml(knobs.concurrency),
            env: Vec::new(),
            check_autovacuum: false,
            database_url: &knobs.database_url,
            redis_url: &knobs.redis_url,
        };
        let run = Run::setup(spec, report).await?;
        Ok(Bench { knobs, run })
    }

    async fn run(&self, report: &mut Report) -> Result<()> {
        self.run.migrate()?;

        eprintln!("bench: idle");
        let mut daemon = self.run.start_daemon("daemon-first").await?;
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

    /// Light load: one job at a time, spaced evenly, to a daemon that is waiting for work.
    async fn measure_latency(&self, daemon: &mut Daemon, report: &mut Report) -> Result<()> {
        let n = self.knobs.latency_jobs;
        eprintln!("bench: latency, {n} jobs at {}/s", self.knobs.latency_rate);
        let script = redis::Script::new(ENQUEUE_SCRIPT);
        let mut redis = self.run.redis.clone();
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
                .arg(&self.run.queue)
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
        .fetch_all(&self.run.pg)
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
        let mut redis = self.run.redis.clone();
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
                    .arg(&self.run.queue)
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
            per_sec(jobs as f64 / enqueue_secs, "jobs"),
        );
        let waiting: u64 = redis::cmd("LLEN")
            .arg(format!("{}:active", self.run.queue))
            .query_async(&mut redis)
            .await
            .context("LLEN of the active list")?;
        ensure!(
            waiting == jobs,
            "{waiting} jobs wait in Redis, {jobs} expected"
        );

        eprintln!("bench: draining the backlog");
        let mut daemon = self.run.start_daemon("daemon-second").await?;
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
            format!(
                "{} ({total_secs:.2} s)",
                per_sec(jobs as f64 / total_secs, "jobs")
            ),
        );
        report.figure(
            "Processing rate, first 20% of the backlog (from ready)",
            per_sec(fifth as f64 / first_secs, "jobs"),
        );
        report.figure(
            "Processing rate, last 20% of the backlog",
            per_sec(fifth as f64 / last_secs, "jobs"),
        );
        // A cross-check free of the sampling step and of startup: the journal's own times.
        let journal_secs: Option<f64> = sqlx::query_scalar(
            "SELECT EXTRACT(EPOCH FROM max(j.finished_at) - min(a.started_at))::float8
               FROM jobs j JOIN job_attempts a ON a.job_id = j.id
              WHERE j.created_at >= $1",
        )
        .bind(backlog_from)
        .fetch_one(&self.run.pg)
        .await
        .context("read the backlog's first start and last finish")?;
        if let Some(secs) = journal_secs.filter(|s| *s > 0.0) {
            report.figure(
                "Processing rate, whole backlog (journal: first start to last finish)",
                format!("{} ({secs:.2} s)", per_sec(jobs as f64 / secs, "jobs")),
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
        .fetch_one(&self.run.pg)
        .await
        .context("count the jobs")?;
        let (attempts, completed_attempts): (i64, i64) = sqlx::query_as(
            "SELECT count(*), count(*) FILTER (WHERE outcome = 'completed') FROM job_attempts",
        )
        .fetch_one(&self.run.pg)
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

    /// Counts completed jobs until `target` are: [`common::sample_until`].
    async fn sample_until_completed(
        &self,
        daemon: &mut Daemon,
        target: u64,
    ) -> Result<Vec<(f64, u64)>> {
        common::sample_until(daemon, target, "job completed", "completed", async || {
            self.completed().await
        })
        .await
    }

    async fn completed(&self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE state = 'completed'")
            .fetch_one(&self.run.pg)
            .await
            .context("count completed jobs")?;
        Ok(n as u64)
    }
}

/// The report, with this bench's knobs.
fn report(knobs: &Knobs) -> Report {
    let knobs = vec![
        ("BENCH_JOBS".into(), knobs.jobs.to_string()),
        ("BENCH_LATENCY_JOBS".into(), knobs.latency_jobs.to_string()),
        (
            "BENCH_LATENCY_RATE".into(),
            format!("{} jobs/s", knobs.latency_rate),
        ),
        ("BENCH_CONCURRENCY".into(), knobs.concurrency.to_string()),
    ];
    Report::new("throughput", "bench", knobs)
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

fn ms(value: f64) -> String {
    format!("{value:.1} ms")
}
