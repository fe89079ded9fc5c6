//! Scoring throughput: `cargo bench --bench scoring`.
//!
//! How many attempts of one JEE-Advanced-like test quizworker scores per second. The test has 90
//! questions in 3 sections of 30 (physics, chemistry, mathematics), each section 6 MCQs at +3/-1,
//! 6 MSQs at +4/-2 with JEE Advanced's partial marking, 6 integer answers at +4/0, 6 numeric
//! answers at +3/0 (half a range, half a value with a tolerance, answers rounded to 2 decimals)
//! and 6 matching-list MCQs at +3/-1/3 (the question's own marking); mathematics' MCQs lose 2/3
//! (the section's marking by type). Every question has a topic, 5 per section. The attempts are
//! generated from a fixed seed (an LCG), so every run scores the same answers: for each question
//! a candidate skips it, leaves it unanswered, only marks it for review, or answers it right or
//! wrong (for an MSQ, wrong is often a partial answer), with their own skill; one answer in ten
//! is also marked for review.
//!
//! Parts:
//! 1. pure: `PreparedTest::score` on one core. BENCH_PURE_ATTEMPTS attempts are generated up
//!    front, then scored in rounds (at least 5, and at least 2 s in all); the best and median
//!    round are reported. Then the rest of the CPU work the daemon does for each job, outside
//!    Postgres and Redis (decoding the envelope, reading the stored test, preparing it, turning
//!    the attempt and its result into JSON), each timed on its own.
//! 2. end to end: the release daemon, as a deployment runs it. One `score.attempt` job carrying
//!    the test stores it; then, with the daemon stopped, BENCH_E2E_ATTEMPTS `score.attempt` jobs
//!    that only name the test (`attempt.test_id`) are pushed through the protocol's Lua script
//!    (docs/PROTOCOL.md), and a fresh `quizworker run --queues scoring` drains them with
//!    BENCH_SCORING_CONCURRENCY. The rate is stored results (`score_results` rows) per second
//!    from the daemon's ready line to the last result. The run then checks that every job
//!    completed with exactly one attempt and that every result is stored with the marks the pure
//!    scorer gives. Each run gets its own Postgres database and Redis key prefix, both removed
//!    at the end, so it can share servers with the tests or a running deployment.
//!
//! Knobs (environment, with defaults): BENCH_PURE_ATTEMPTS=20000, BENCH_E2E_ATTEMPTS=20000
//! (either 0 skips its part), BENCH_SCORING_CONCURRENCY=256 (the scoring queue's concurrency, as shipped),
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres (any database on the server: the
//! run's own database is created next to it), REDIS_URL=redis://127.0.0.1:6379.
//!
//! Prints a Markdown report on stdout and progress on stderr; exits non-zero if anything failed
//! (the report then shows what was measured before the failure). Runs on the harness the benches
//! share (benches/common/harness.rs); the test and its attempts are benches/common/generated.rs.

mod common;

use std::hint::black_box;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use chrono::{DateTime, Utc};
use common::cpu::{CpuTimes, Watched};
use common::generated::{Tally, Workload};
use common::{KnobReader, Report, Run, RunSpec, mib, per_sec, percentile, time_at};
use quizworker_jobs::scoring::ScoreAttempt;
use quizworker_jobs::scoring::{Attempt, AttemptResult, PreparedTest, TestDef};
use quizworker_jobs::{Envelope, JobPayload};

const TEST_ID: &str = "jee-adv-bench";
/// The pure part scores every attempt at least this many times...
const PURE_MIN_ROUNDS: usize = 5;
/// ...and for at least this long in all.
const PURE_MIN_TIME: Duration = Duration::from_secs(2);
/// Jobs whose per-step CPU cost is timed in part 1.
const STEP_SAMPLE: usize = 2000;
/// Envelopes per pipeline when filling the backlog (an envelope is about 6 KB).
const ENQUEUE_BATCH: usize = 500;

fn main() -> ExitCode {
    common::main("scoring", "bench", Knobs::read, |knobs, harness| {
        let workload = match Workload::new(TEST_ID) {
            Ok(workload) => workload,
            Err(e) => return harness.fail("the test", e),
        };
        harness.report.workload(&format!(
            "{} (ranges and tolerances, rounded to 2 decimals), 6 matching-list MCQs +3/-1/3",
            workload.describe()
        ));
        if knobs.pure_attempts > 0
            && let Err(e) = pure(&workload, knobs.pure_attempts, &mut harness.report)
        {
            harness.fail("pure scoring", e);
        }
        if knobs.e2e_attempts > 0 {
            harness.with_run(spec(knobs), async |run, report| {
                let bench = Bench { knobs, run };
                bench.run(&workload, report).await.context("end to end")
            });
        }
    })
}

/// What the run is asked to do, from the environment.
struct Knobs {
    pure_attempts: usize,
    e2e_attempts: usize,
    concurrency: u64,
}

impl Knobs {
    fn read(reader: &mut KnobReader) -> Result<Knobs> {
        Ok(Knobs {
            pure_attempts: reader.read("BENCH_PURE_ATTEMPTS", 20_000, "")?,
            e2e_attempts: reader.read("BENCH_E2E_ATTEMPTS", 20_000, "")?,
            concurrency: reader.at_least("BENCH_SCORING_CONCURRENCY", 256, 1, "")?,
        })
    }
}

/// Attempt number `i` of the workload, with ids starting with `id_prefix`.
fn attempt(workload: &Workload, i: usize, id_prefix: &str) -> Attempt {
    workload.attempt(i, format!("{id_prefix}-{i:06}"), format!("cand-{i:06}"))
}

// ---------------------------------------------------------------------------------------------
// Part 1: the pure function

fn pure(workload: &Workload, n: usize, report: &mut Report) -> Result<()> {
    eprintln!("bench: pure scoring: generating {n} attempts");
    let test = &workload.prepared;
    let attempts: Vec<Attempt> = (0..n).map(|i| attempt(workload, i, "pure")).collect();
    // Untimed: every attempt scores, and what they add up to.
    let mut tally = Tally::default();
    for attempt in &attempts {
        tally.add(&workload.score(attempt)?);
    }
    report.figure(
        "Generated answers, over all questions",
        format!(
            "{}; mean {:.1} of {} marks",
            tally.shares(),
            tally.mean_marks(),
            test.max_marks()
        ),
    );

    eprintln!("bench: pure scoring: timing");
    let mut rates = Vec::new();
    let started = Instant::now();
    while rates.len() < PURE_MIN_ROUNDS || started.elapsed() < PURE_MIN_TIME {
        let round = Instant::now();
        for attempt in &attempts {
            // The result is dropped here, as the daemon drops it: its freeing is part of the cost.
            drop(black_box(test.score(black_box(attempt))));
        }
        rates.push(n as f64 / round.elapsed().as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    let best = rates[rates.len() - 1];
    let median = percentile(&rates, 0.5);
    let label = format!(
        "Pure `PreparedTest::score`, one core ({n} attempts x {} rounds)",
        rates.len()
    );
    report.figure(
        format!("{label}: best round"),
        format!("{} ({:.2} µs each)", per_sec(best, "attempts"), 1e6 / best),
    );
    report.figure(
        format!("{label}: median round"),
        format!(
            "{} ({:.2} µs each)",
            per_sec(median, "attempts"),
            1e6 / median
        ),
    );

    daemon_steps(workload, &attempts, report)
}

/// The daemon's other CPU work for one `score.attempt` job without the test
/// (src/handlers/scoring.rs), each step timed alone on a sample of the attempts, and the work
/// done once per test. Postgres' and
/// Redis' own work, the journal and the runtime are not in these figures.
fn daemon_steps(workload: &Workload, attempts: &[Attempt], report: &mut Report) -> Result<()> {
    eprintln!("bench: pure scoring: the daemon's other steps");
    let sample = &attempts[..attempts.len().min(STEP_SAMPLE)];
    let envelopes = sample
        .iter()
        .map(|attempt| {
            let job = ScoreAttempt {
                test: None,
                attempt: attempt.clone(),
                submitted_at: Some(Utc::now()),
            };
            Ok(Envelope::new(&job, Utc::now())?.encode())
        })
        .collect::<Result<Vec<String>>>()?;
    let results = sample
        .iter()
        .map(|attempt| workload.prepared.score(attempt))
        .collect::<Result<Vec<AttemptResult>, _>>()
        .map_err(|e| anyhow!("{e}"))?;
    // What `load_test` gets from Postgres: the definition's JSON text.
    let definition = serde_json::to_vec(&workload.def)?;

    let mut steps = StepTimer {
        report: &mut *report,
        label: "Daemon CPU per job, one core",
        calls: sample.len(),
        total: 0.0,
    };
    steps.time("decode the envelope and its `ScoreAttempt`", |i| {
        let envelope = Envelope::decode(envelopes[i].as_bytes())?;
        black_box(envelope.payload_as::<ScoreAttempt>()?);
        Ok(())
    })?;
    steps.time("`PreparedTest::score`", |i| {
        drop(black_box(workload.prepared.score(black_box(&sample[i]))));
        Ok(())
    })?;
    steps.time(
        "attempt and result to JSON text (the stored documents)",
        |i| {
            black_box(serde_json::to_string(black_box(&sample[i]))?);
            black_box(serde_json::to_string(black_box(&results[i]))?);
            Ok(())
        },
    )?;
    let total = steps.total;
    report.figure(
        "Daemon CPU per job, one core: these steps together",
        format!(
            "{:.1} µs (at most {} per core)",
            total * 1e6,
            per_sec(1.0 / total, "attempts")
        ),
    );
    // Once per test and key version: the daemon keeps prepared tests (src/prepared_tests.rs).
    let mut once = StepTimer {
        report: &mut *report,
        label: "Daemon CPU once per test and key version, one core",
        calls: sample.len().min(200),
        total: 0.0,
    };
    once.time("read the stored test (JSON text to `TestDef`)", |_| {
        black_box(serde_json::from_slice::<TestDef>(black_box(&definition))?);
        Ok(())
    })?;
    once.time(
        "`PreparedTest::new` (with a clone of the `TestDef`)",
        |_| {
            let test =
                PreparedTest::new(black_box(&workload.def).clone()).map_err(|e| anyhow!("{e}"))?;
            black_box(test);
            Ok(())
        },
    )?;
    report.figure(
        "Sizes: envelope, stored test definition, result JSON (first attempt)",
        format!(
            "{:.1} KB, {:.1} KB, {:.1} KB",
            envelopes[0].len() as f64 / 1000.0,
            definition.len() as f64 / 1000.0,
            serde_json::to_vec(&results[0])?.len() as f64 / 1000.0
        ),
    );
    Ok(())
}

/// Times steps of the daemon's work one by one, and reports each.
struct StepTimer<'r> {
    report: &'r mut Report,
    /// What the figures are, before each step's name.
    label: &'static str,
    /// Calls of a step per pass: `i` goes from 0 to this.
    calls: usize,
    /// Seconds per call of every step timed so far.
    total: f64,
}

impl StepTimer<'_> {
    /// Best of three passes.
    fn time(&mut self, name: &str, mut step: impl FnMut(usize) -> Result<()>) -> Result<()> {
        let mut best = f64::INFINITY;
        for _ in 0..3 {
            let started = Instant::now();
            for i in 0..self.calls {
                step(i)?;
            }
            best = best.min(started.elapsed().as_secs_f64() / self.calls as f64);
        }
        self.total += best;
        self.report.figure(
            format!("{}: {name}", self.label),
            format!("{:.1} µs", best * 1e6),
        );
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Part 2: end to end

/// The run of part 2.
fn spec(knobs: &Knobs) -> RunSpec {
    RunSpec::new("scoring", config_toml())
        // The run's concurrency, over the shipped one.
        .env("QUIZWORKER_QUEUES__SCORING__CONCURRENCY", knobs.concurrency)
}

/// One end-to-end run: its own database, Redis prefix and config file.
struct Bench<'a> {
    knobs: &'a Knobs,
    run: &'a Run,
}

impl Bench<'_> {
    async fn run(&self, workload: &Workload, report: &mut Report) -> Result<()> {
        self.run.migrate()?;

        eprintln!("bench: storing the test through one score.attempt job");
        let mut daemon = self.run.start_daemon("daemon-first").await?;
        let seed = ScoreAttempt {
            test: Some(workload.def.clone()),
            attempt: attempt(workload, 0, "seed"),
            submitted_at: Some(Utc::now()),
        };
        let seed_id = self.run.enqueue_one(&seed).await?;
        self.run.wait_for_job(&mut daemon, &seed_id).await?;
        daemon.stop().await?;

        let n = self.knobs.e2e_attempts;
        eprintln!("bench: generating {n} attempts and their expected marks");
        let attempts: Vec<Attempt> = (0..n).map(|i| attempt(workload, i, "att")).collect();
        let expected = attempts
            .iter()
            .map(|attempt| {
                let marks = workload.score(attempt)?.total.marks;
                Ok((attempt.attempt_id.clone(), marks.to_string()))
            })
            .collect::<Result<Vec<(String, String)>>>()?;
        let backlog_from = Utc::now();
        self.enqueue_backlog(attempts, report).await?;
        self.drain(backlog_from, report).await?;
        self.verify(&seed_id, &expected, workload, report).await
    }

    /// With the daemon stopped: every job pushed as fast as possible.
    async fn enqueue_backlog(&self, attempts: Vec<Attempt>, report: &mut Report) -> Result<()> {
        let jobs = attempts.len();
        eprintln!("bench: enqueueing {jobs} score.attempt jobs");
        let mut pipeline = self.run.pipeline().await?;
        let started = Instant::now();
        let mut attempts = attempts.into_iter().peekable();
        while attempts.peek().is_some() {
            let batch = attempts.by_ref().take(ENQUEUE_BATCH);
            pipeline
                .enqueue(batch.map(|attempt| ScoreAttempt {
                    test: None,
                    attempt,
                    submitted_at: Some(Utc::now()),
                }))
                .await?;
        }
        let secs = started.elapsed().as_secs_f64();
        report.figure(
            format!("Enqueue rate ({jobs} jobs, pipelined EVALSHA, {ENQUEUE_BATCH} a batch)"),
            format!(
                "{} ({:.1} MB of envelopes)",
                per_sec(jobs as f64 / secs, "attempts"),
                pipeline.bytes as f64 / 1e6
            ),
        );
        self.run.ensure_waiting(jobs as u64).await
    }

    /// A fresh daemon drains the backlog (the jobs created since `backlog_from`) while the stored
    /// results are counted.
    async fn drain(&self, backlog_from: DateTime<Utc>, report: &mut Report) -> Result<()> {
        let jobs = self.knobs.e2e_attempts as u64;
        eprintln!(
            "bench: draining the backlog, concurrency {}",
            self.knobs.concurrency
        );
        let mut daemon = self.run.start_daemon("daemon-second").await?;
        let cpu_before = CpuTimes::now(Watched {
            daemon: daemon.child.id(),
            other: None,
            db_name: &self.run.db_name,
        });
        // The seed attempt's result is already there.
        let done = common::sample_until(
            &mut daemon,
            1,
            jobs,
            "result stored",
            "results stored",
            async || self.stored_unless_failing().await,
        )
        .await?;
        let cpu_after = CpuTimes::now(Watched {
            daemon: daemon.child.id(),
            other: None,
            db_name: &self.run.db_name,
        });
        let peak = daemon.status_kb("VmHWM")?;
        daemon.stop().await?;

        let total_secs = time_at(&done, jobs);
        report.figure(
            format!(
                "**Stored attempts/s**, whole backlog ({jobs} jobs, concurrency {}, daemon ready \
                 to last result)",
                self.knobs.concurrency
            ),
            format!(
                "**{}** ({total_secs:.2} s)",
                per_sec(jobs as f64 / total_secs, "attempts")
            ),
        );
        let journal_secs = self.run.journal_secs_since(backlog_from).await?;
        report.backlog_tail("Stored attempts/s", "attempts", &done, jobs, journal_secs);
        if let Some(cores) = cpu_before.until(&cpu_after) {
            report.figure(
                "CPU while draining, cores busy on average (ready to last result; Postgres' other \
                 processes: WAL writer, checkpointer, other databases; the rest: short-lived \
                 processes, the kernel's threads, this bench, other load)",
                cores.describe(),
            );
            report.figure("CPU per stored attempt", cores.per_unit(jobs));
        }
        report.figure("Peak RSS while draining (VmHWM)", mib(peak));
        Ok(())
    }

    /// Stored results; fails at once if a job failed or waits for a retry.
    async fn stored_unless_failing(&self) -> Result<u64> {
        let (stored, failing): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM score_results),
                    (SELECT count(*) FROM jobs WHERE state IN ('failed', 'retrying'))",
        )
        .fetch_one(&self.run.pg)
        .await
        .context("count stored results")?;
        if failing > 0 {
            let error: Option<String> = sqlx::query_scalar(
                "SELECT last_error FROM jobs WHERE state IN ('failed', 'retrying') LIMIT 1",
            )
            .fetch_optional(&self.run.pg)
            .await?
            .flatten();
            bail!(
                "{failing} jobs failed or wait for a retry; one: {}",
                error.unwrap_or_default()
            );
        }
        Ok(stored as u64)
    }

    /// Every job completed with exactly one attempt, and every result is stored with the marks
    /// the pure scorer gives.
    async fn verify(
        &self,
        seed_id: &str,
        expected: &[(String, String)],
        workload: &Workload,
        report: &mut Report,
    ) -> Result<()> {
        let total = expected.len() as i64 + 1;
        let journal = self.run.journal_counts(ScoreAttempt::KIND).await?;
        let (ids, marks): (Vec<&str>, Vec<&str>) = expected
            .iter()
            .map(|(id, marks)| (id.as_str(), marks.as_str()))
            .unzip();
        let (results, attempts_stored, matching, contributions): (i64, i64, i64, i64) =
            sqlx::query_as(
                "SELECT (SELECT count(*) FROM score_results),
                        (SELECT count(*) FROM score_attempts),
                        (SELECT count(*)
                           FROM UNNEST($1::text[], $2::text[]) AS e(attempt_id, marks)
                           JOIN score_results r ON r.attempt_id = e.attempt_id
                                               AND r.marks = e.marks AND r.test_id = $3
                                               AND r.key_version = 1),
                        (SELECT count(*) FROM score_results, json_array_elements(contributions))",
            )
            .bind(&ids)
            .bind(&marks)
            .bind(TEST_ID)
            .fetch_one(&self.run.pg)
            .await
            .context("count the stored results")?;
        // One entry per attempt and section or topic.
        let scopes =
            (workload.prepared.section_ids().len() + workload.prepared.topics().len()) as i64;
        report.figure(
            "Journal check",
            format!(
                "{} score.attempt jobs ({total} enqueued, the test's first {seed_id}), {}",
                journal.jobs,
                journal.outcomes()
            ),
        );
        report.figure(
            "Results check",
            format!(
                "{results} results, {attempts_stored} attempts stored; {matching} of {} \
                 backlog results with the pure scorer's marks; {contributions} statistics entries \
                 ({} expected)",
                expected.len(),
                total * scopes
            ),
        );
        journal.ensure_each_completed_once(total)?;
        ensure!(
            results == total
                && attempts_stored == total
                && matching == total - 1
                && contributions == total * scopes,
            "the stored results are not every attempt's, with the expected marks"
        );
        Ok(())
    }
}

/// The shipped `[queues.scoring]` (config.toml); the run's concurrency comes from
/// QUIZWORKER_QUEUES__SCORING__CONCURRENCY.
fn config_toml() -> String {
    common::config_toml("scoring", "", common::queue_table("scoring", 256, "5m", 5))
}
