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

use anyhow::{Context, Result, ensure};
use chrono::Utc;
use common::{Daemon, KnobReader, Report, Run, RunSpec, mib, per_sec, percentile, time_at};
use quizworker_jobs::JobPayload;
use quizworker_jobs::diag::Noop;
use tokio::time::MissedTickBehavior;

/// Envelopes per pipeline when filling the backlog.
const ENQUEUE_BATCH: u64 = 1000;

fn main() -> ExitCode {
    common::main("throughput", "bench", Knobs::read, |knobs, harness| {
        let spec = RunSpec::new("default", config_toml(knobs.concurrency));
        harness.with_run(spec, async |run, report| {
            Bench { knobs, run }.run(report).await
        });
    })
}

/// What the run is asked to do, from the environment.
struct Knobs {
    jobs: u64,
    latency_jobs: u64,
    latency_rate: f64,
    concurrency: u64,
}

impl Knobs {
    fn read(reader: &mut KnobReader) -> Result<Knobs> {
        Ok(Knobs {
            // The report compares the first and last fifth of the backlog.
            jobs: reader.at_least("BENCH_JOBS", 100_000, 5, "")?,
            latency_jobs: reader.at_least("BENCH_LATENCY_JOBS", 500, 1, "")?,
            latency_rate: reader.rate("BENCH_LATENCY_RATE", 200.0)?,
            concurrency: reader.at_least("BENCH_CONCURRENCY", 1000, 1, "")?,
        })
    }
}

/// One benchmark run: its own database, Redis prefix and config file.
struct Bench<'a> {
    knobs: &'a Knobs,
    run: &'a Run,
}

impl Bench<'_> {
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
        let mut ticks =
            tokio::time::interval(Duration::from_secs_f64(1.0 / self.knobs.latency_rate));
        // After a slow call, keep the spacing rather than send a catch-up burst (the default),
        // which would no longer be light load.
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let started = Instant::now();
        for _ in 0..n {
            ticks.tick().await;
            self.run.enqueue_one(&Noop {}).await?;
        }
        let sent_rate = n as f64 / started.elapsed().as_secs_f64();
        self.sample_until_completed(daemon, 0, n).await?;

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
        let mut pipeline = self.run.pipeline().await?;
        let backlog_from = Utc::now();
        let started = Instant::now();
        let mut pushed = 0;
        while pushed < jobs {
            let n = (jobs - pushed).min(ENQUEUE_BATCH);
            pipeline.enqueue((0..n).map(|_| Noop {})).await?;
            pushed += n;
        }
        let enqueue_secs = started.elapsed().as_secs_f64();
        report.figure(
            format!("Enqueue rate ({jobs} jobs, pipelined EVALSHA, {ENQUEUE_BATCH} a batch)"),
            per_sec(jobs as f64 / enqueue_secs, "jobs"),
        );
        self.run.ensure_waiting(jobs).await?;

        eprintln!("bench: draining the backlog");
        let mut daemon = self.run.start_daemon("daemon-second").await?;
        // The backlog's own: the latency phase's jobs are completed already.
        let done = self
            .sample_until_completed(&mut daemon, self.knobs.latency_jobs, jobs)
            .await?;
        let peak = daemon.status_kb("VmHWM")?;
        daemon.stop().await?;

        let fifth = jobs / 5;
        let total_secs = time_at(&done, jobs);
        report.figure(
            format!("Processing rate, whole backlog ({jobs} jobs, ready to last completion)"),
            format!(
                "{} ({total_secs:.2} s)",
                per_sec(jobs as f64 / total_secs, "jobs")
            ),
        );
        report.figure(
            "Processing rate, first 20% of the backlog (from ready)",
            per_sec(fifth as f64 / time_at(&done, fifth), "jobs"),
        );
        let journal_secs = self.run.journal_secs_since(backlog_from).await?;
        report.backlog_tail("Processing rate", "jobs", &done, jobs, journal_secs);
        report.figure("Peak RSS while draining (VmHWM)", mib(peak));
        Ok(())
    }

    /// Every job, from both phases, completed with exactly one attempt.
    async fn verify(&self, report: &mut Report) -> Result<()> {
        let expected = (self.knobs.latency_jobs + self.knobs.jobs) as i64;
        let journal = self.run.journal_counts(Noop::KIND).await?;
        report.figure(
            "Journal check",
            format!(
                "{} jobs ({expected} enqueued), {}",
                journal.jobs,
                journal.outcomes()
            ),
        );
        journal.ensure_each_completed_once(expected)
    }

    /// Counts completed jobs until `n` more than `before` are: [`common::sample_until`].
    async fn sample_until_completed(
        &self,
        daemon: &mut Daemon,
        before: u64,
        n: u64,
    ) -> Result<Vec<(f64, u64)>> {
        common::sample_until(
            daemon,
            before,
            n,
            "job completed",
            "completed",
            async || self.run.completed_jobs().await,
        )
        .await
    }
}

/// The shipped defaults (config.toml), but the default queue's concurrency.
fn config_toml(concurrency: u64) -> String {
    let queue = common::queue_table("default", concurrency, "1m", 5);
    common::config_toml("throughput", "", queue)
}

fn ms(value: f64) -> String {
    format!("{value:.1} ms")
}
