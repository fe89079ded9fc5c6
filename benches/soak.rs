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
//! enqueue (the report then shows what was measured before the failure). Runs on the harness the
//! benches share (benches/common/harness.rs).

mod common;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use chrono::{DateTime, Utc};
use common::{
    Daemon, KnobReader, Pipeline, Report, Run, RunSpec, http_get, info_field, mib, per_sec,
    thousands,
};
use quizworker_jobs::diag::Noop;
use tokio::time::MissedTickBehavior;
use tokio_util::task::AbortOnDropHandle;

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

fn main() -> ExitCode {
    common::main("soak", "soak", Knobs::read, |knobs, harness| {
        harness
            .report
            .machine("Load average at the start (/proc/loadavg)", load_average());
        harness.report.knob(
            "daemon config (temp file)",
            format!(
                "maintenance.interval = {MAINTENANCE_INTERVAL}, maintenance.keep_completed = \
                 {KEEP_COMPLETED}, default queue as shipped (concurrency 1000)"
            ),
        );
        let spec = RunSpec::new("default", config_toml())
            // The journal's size on disk is one of the soak's figures.
            .check_autovacuum();
        // Outside the run, so that the samples of a run cut short by Ctrl-C are still reported.
        let mut samples = Samples::default();
        harness.with_run(spec, async |run, report| {
            let mut bench = Bench {
                knobs,
                run,
                samples: &mut samples,
            };
            bench.run(report).await
        });
        harness.report.section(&samples.section());
    })
}

/// What the run is asked to do, from the environment.
struct Knobs {
    secs: u64,
    rate: f64,
    sample_secs: u64,
}

impl Knobs {
    fn read(reader: &mut KnobReader) -> Result<Knobs> {
        Ok(Knobs {
            // The verdict needs a sample after the warm-up minute.
            secs: reader.at_least("SOAK_SECS", 600, WARM_UP.as_secs(), " s")?,
            rate: reader.rate("SOAK_RATE", 2000.0)?,
            sample_secs: reader.at_least("SOAK_SAMPLE_SECS", 10, 1, " s")?,
        })
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

/// One soak run: its own database, Redis prefix and config file, and the samples it takes.
struct Bench<'a> {
    knobs: &'a Knobs,
    run: &'a Run,
    samples: &'a mut Samples,
}

impl Bench<'_> {
    async fn run(&mut self, report: &mut Report) -> Result<()> {
        self.run.migrate()?;
        let mut daemon = self.run.start_daemon("daemon").await?;
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

    /// The load, then the drain, sampling throughout; the samples are kept as taken.
    async fn soak(
        &mut self,
        daemon: &mut Daemon,
        metrics: SocketAddr,
        report: &mut Report,
    ) -> Result<()> {
        let knobs = self.knobs;
        let sample_every = Duration::from_secs(knobs.sample_secs);
        let mut redis = self.run.redis.clone();
        let pipeline = self.run.pipeline().await?;
        let enqueued = Arc::new(AtomicU64::new(0));

        // The first sample: the daemon idle, just after its ready line.
        let start = Instant::now();
        let first = self.sample(daemon, metrics, start, false, 0, 0).await?;
        report.figure("Idle RSS (VmRSS, just after ready)", mib(first.rss_kb));
        self.samples.taken.push(first);

        eprintln!(
            "soak: enqueueing {} jobs/s for {} s, a sample every {} s",
            knobs.rate, knobs.secs, knobs.sample_secs
        );
        let start = Instant::now();
        self.samples.load_started = Some(Utc::now());
        let mut producer = AbortOnDropHandle::new(tokio::spawn(produce(
            pipeline,
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
                .arg(format!("{}:data", self.run.queue))
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
                    self.samples.taken.push(last);
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
                self.samples.taken.push(sample);
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
                per_sec(enqueued as f64 / load_secs, "jobs")
            ),
        );
        let samples = &self.samples.taken;
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
        let mut redis = self.run.redis.clone();
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
            .arg(format!("{}:data", self.run.queue))
            .cmd("SCARD")
            .arg(format!("{}:done", self.run.queue))
            .cmd("LLEN")
            .arg(format!("{}:active", self.run.queue))
            .query_async(&mut redis)
            .await
            .context("HLEN, SCARD and LLEN of the queue's keys")?;
        let run_keys = self.run.count_keys().await?;
        let (journal_jobs, journal_attempts, journal_bytes): (i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM jobs), (SELECT count(*) FROM job_attempts),
                    pg_total_relation_size('jobs') + pg_total_relation_size('job_attempts')",
        )
        .fetch_one(&self.run.pg)
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

    /// With the daemon stopped: what the journal still holds plus what maintenance says it
    /// pruned should be every completed job. A figure, not a check: a pass cut short by the
    /// shutdown (`between_passes` false) deletes rows without logging them.
    async fn cross_check(
        &self,
        daemon: &Daemon,
        between_passes: bool,
        report: &mut Report,
    ) -> Result<()> {
        if let Some((mean, max)) = self.samples.sampling_secs() {
            report.figure(
                "Sampling's own cost (one sample's queries; the journal count scans its tables)",
                format!("{mean:.2} s on average, {max:.2} s at most"),
            );
        }
        let (rows, completed_rows): (i64, i64) = sqlx::query_as(
            "SELECT count(*), count(*) FILTER (WHERE state = 'completed') FROM jobs",
        )
        .fetch_one(&self.run.pg)
        .await
        .context("count the journal's jobs")?;
        let (dead, live): (i64, i64) = sqlx::query_as(
            "SELECT coalesce(sum(n_dead_tup), 0)::int8, coalesce(sum(n_live_tup), 0)::int8
               FROM pg_stat_user_tables WHERE relname IN ('jobs', 'job_attempts')",
        )
        .fetch_one(&self.run.pg)
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
        if let Some(started) = self.samples.load_started {
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
        let completed = self.samples.taken.last().map_or(0, |s| s.completed);
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
}

/// The producer: `rate` jobs/s for `secs`, sending every [`ENQUEUE_EVERY`] what is due by the
/// clock so far, so that a late tick is made up at the next one. Returns when the last batch's
/// replies came.
async fn produce(
    mut pipeline: Pipeline,
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
            pipeline.enqueue((0..n).map(|_| Noop {})).await?;
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
/// maintenance.
fn config_toml() -> String {
    let tables = format!(
        r#"[http]
listen = "127.0.0.1:0"

[maintenance]
interval = "{MAINTENANCE_INTERVAL}"
keep_completed = "{KEEP_COMPLETED}"

"#
    );
    common::config_toml(
        "soak",
        &tables,
        common::queue_table("default", 1000, "1m", 5),
    )
}

/// One figure of the verdict: what it is called and how it is read off a sample.
struct Measure {
    name: &'static str,
    /// "MiB" for a size, else what is counted.
    unit: &'static str,
    /// Bytes, for a size.
    value: fn(&Sample) -> u64,
}

impl Measure {
    /// A size, read in bytes.
    const fn mib(name: &'static str, bytes: fn(&Sample) -> u64) -> Measure {
        Measure {
            name,
            unit: "MiB",
            value: bytes,
        }
    }

    /// A count of `unit`.
    const fn count(name: &'static str, unit: &'static str, value: fn(&Sample) -> u64) -> Measure {
        Measure { name, unit, value }
    }

    /// Its value in a sample, in its unit.
    fn of(&self, sample: &Sample) -> f64 {
        let value = (self.value)(sample) as f64;
        if self.unit == "MiB" {
            value / 1024.0 / 1024.0
        } else {
            value
        }
    }

    /// A value of it, to a tenth of a MiB or to the unit.
    fn show(&self, value: f64) -> String {
        if self.unit == "MiB" {
            format!("{value:.1} MiB")
        } else {
            format!("{} {}", thousands(value.round() as u64), self.unit)
        }
    }
}

const MEASURES: &[Measure] = &[
    Measure::mib("daemon RSS", |s| s.rss_kb * 1024),
    Measure::count("Redis data hash", "entries", |s| s.data),
    Measure::count("done set", "ids", |s| s.done),
    Measure::count("this run's Redis keys", "keys", |s| s.run_keys),
    Measure::count("journal", "rows", |s| s.journal_jobs + s.journal_attempts),
    Measure::mib("journal on disk", |s| s.journal_bytes),
    Measure::mib("Redis used_memory (whole server)", |s| s.used_memory),
];

/// "RSS: 21.3 MiB after 1 min, 21.8 MiB at the end (+2%); ..." with "at the end" the average
/// of `late`.
fn verdict(baseline: &Sample, late: &[Sample]) -> String {
    let parts: Vec<String> = MEASURES
        .iter()
        .map(|m| {
            let before = m.of(baseline);
            let after = late.iter().map(|s| m.of(s)).sum::<f64>() / late.len() as f64;
            let change = if before > 0.0 {
                format!(" ({:+.0}%)", (after - before) / before * 100.0)
            } else {
                String::new()
            };
            format!(
                "{}: {} after {:.0} s, {} at the end{change}",
                m.name,
                m.show(before),
                baseline.t,
                m.show(after)
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
            let mean_v = samples.iter().map(|s| m.of(s)).sum::<f64>() / n;
            let (num, den) = samples.iter().fold((0.0, 0.0), |(num, den), s| {
                let dt = s.t - mean_t;
                (num + dt * (m.of(s) - mean_v), den + dt * dt)
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

/// The samples of a soak, and when its load began: a section of the report.
#[derive(Default)]
struct Samples {
    taken: Vec<Sample>,
    /// When the load began, by the wall clock (the daemon's log lines carry its time).
    load_started: Option<DateTime<Utc>>,
}

impl Samples {
    /// The mean and the longest time a sample took.
    fn sampling_secs(&self) -> Option<(f64, f64)> {
        let n = self.taken.len();
        (n > 0).then(|| {
            let secs = self.taken.iter().map(|s| s.took);
            (
                secs.clone().sum::<f64>() / n as f64,
                secs.fold(0.0, f64::max),
            )
        })
    }

    /// The samples' section of the report.
    fn section(&self) -> String {
        format!("## Samples\n\n{}\n", self.table())
    }

    fn table(&self) -> String {
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
        for s in &self.taken {
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

/// The 1, 5 and 15 minute load averages.
fn load_average() -> String {
    common::load_averages().map_or("unknown".into(), |[one, five, fifteen]| {
        format!("{one} (1 min), {five} (5 min), {fifteen} (15 min)")
    })
}
