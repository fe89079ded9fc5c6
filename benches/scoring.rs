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
//! (the report then shows what was measured before the failure). Structure follows
//! benches/throughput.rs; the helpers the benches share are in benches/common/mod.rs.

mod common;

use std::collections::HashMap;
use std::fs;
use std::hint::black_box;
use std::ops::{Deref, DerefMut};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use chrono::Utc;
use common::generated::{
    Key, Lcg, OPTIONS, Question, SECTIONS, picked, right_answer, wrong_answer,
};
use common::{
    Daemon, Run, RunSpec, STALL_DEADLINE, command_line, env_or, mib, per_sec, percentile, time_at,
};
use quizworker_jobs::scoring::ScoreAttempt;
use quizworker_jobs::scoring::{
    Attempt, AttemptResult, PreparedTest, Response, ResponseState, TestDef,
};
use quizworker_jobs::{ENQUEUE_SCRIPT, Envelope};
use serde_json::json;

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
    let knobs = match Knobs::from_env() {
        Ok(knobs) => knobs,
        Err(e) => {
            eprintln!("bench: error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let mut report = Report::new(&knobs);
    let mut errors = Vec::new();
    match Workload::new() {
        Err(e) => errors.push(format!("the test: {e:#}")),
        Ok(workload) => {
            report.workload(workload.describe());
            if knobs.pure_attempts > 0
                && let Err(e) = pure(&workload, knobs.pure_attempts, &mut report)
            {
                errors.push(format!("pure scoring: {e:#}"));
            }
            if knobs.e2e_attempts > 0 {
                let runtime = tokio::runtime::Runtime::new().expect("a Tokio runtime");
                errors.extend(runtime.block_on(end_to_end(&knobs, &workload, &mut report)));
            }
        }
    }
    let sections = report.sections();
    common::finish(&mut report, &errors, &sections)
}

/// What the run is asked to do, from the environment.
struct Knobs {
    pure_attempts: usize,
    e2e_attempts: usize,
    concurrency: u64,
    database_url: String,
    redis_url: String,
}

impl Knobs {
    fn from_env() -> Result<Knobs> {
        let knobs = Knobs {
            pure_attempts: env_or("BENCH_PURE_ATTEMPTS", 20_000)?,
            e2e_attempts: env_or("BENCH_E2E_ATTEMPTS", 20_000)?,
            concurrency: env_or("BENCH_SCORING_CONCURRENCY", 256)?,
            database_url: common::database_url()?,
            redis_url: common::redis_url()?,
        };
        ensure!(
            knobs.concurrency >= 1,
            "BENCH_SCORING_CONCURRENCY must be at least 1"
        );
        Ok(knobs)
    }
}

// ---------------------------------------------------------------------------------------------
// The test and the attempts

/// The test every part scores, and the keys the attempts are generated from.
struct Workload {
    def: TestDef,
    prepared: PreparedTest,
    /// In the test's order.
    questions: Vec<Question>,
}

impl Workload {
    fn new() -> Result<Workload> {
        let mut questions = Vec::new();
        let mut sections = Vec::new();
        for (section, (id, title, topics)) in SECTIONS.iter().enumerate() {
            let mut items = Vec::new();
            for slot in 0..30 {
                // Spread the keys over the options and values.
                let g = (section * 30 + slot) as u32;
                let qid = format!("{}-q{:02}", &id[..3], slot + 1);
                let topic = topics[slot % 5];
                let (key, mut item) = match slot / 6 {
                    0 | 4 => {
                        let k = (g as usize * 3 + 1) % 4;
                        let mut item = json!({"type": "mcq", "answer": OPTIONS[k]});
                        if slot / 6 == 4 {
                            // Matching-list questions: a wrong match loses a third of a mark.
                            item["marking"] = json!({"correct": 3, "incorrect": "-1/3"});
                        }
                        (Key::Mcq(k), item)
                    }
                    1 => {
                        let mask = 1 + (g * 7 % 15) as u8;
                        let answer: Vec<&str> = picked(mask).collect();
                        (Key::Msq(mask), json!({"type": "msq", "answer": answer}))
                    }
                    2 => {
                        let n = g * 7 % 60;
                        let item = json!({"type": "integer", "answer": n.to_string()});
                        (Key::Integer(n), item)
                    }
                    _ => {
                        let k = 1 + g % 20;
                        let rounding = json!({"mode": "round", "decimals": 2});
                        if g.is_multiple_of(2) {
                            let answer =
                                json!({"min": format!("{k}.40"), "max": format!("{k}.60")});
                            let item =
                                json!({"type": "numeric", "answer": answer, "rounding": rounding});
                            (Key::Range(k), item)
                        } else {
                            let answer = json!({"value": format!("{k}.81"), "tolerance": "0.01"});
                            let item =
                                json!({"type": "numeric", "answer": answer, "rounding": rounding});
                            (Key::Tolerance(k), item)
                        }
                    }
                };
                item["id"] = json!(qid);
                item["topic"] = json!(topic);
                items.push(item);
                questions.push(Question { id: qid, key });
            }
            let mut section = json!({"id": id, "title": title, "questions": items});
            if *id == "mathematics" {
                section["marking_by_type"] = json!({"mcq": {"incorrect": "-2/3"}});
            }
            sections.push(section);
        }
        let def = json!({
            "test_id": TEST_ID,
            "key_version": 1,
            "title": "JEE Advanced-like mock, paper 1",
            "marking_by_type": {
                "mcq": {"correct": 3, "incorrect": -1},
                "msq": {"correct": 4, "incorrect": -2, "msq": {"scheme": "partial", "per_option": 1}},
                "integer": {"correct": 4, "incorrect": 0},
                "numeric": {"correct": 3, "incorrect": 0}
            },
            "sections": sections,
        });
        let def: TestDef = serde_json::from_value(def).context("the test does not parse")?;
        let prepared =
            PreparedTest::new(def.clone()).map_err(|e| anyhow!("the test is refused: {e}"))?;
        Ok(Workload {
            def,
            prepared,
            questions,
        })
    }

    fn describe(&self) -> String {
        format!(
            "`{TEST_ID}`: {} questions in {} sections of 30, {} topics, {} marks; per section 6 \
             MCQs +3/-1 (mathematics -2/3), 6 MSQs +4/-2 with partial marking, 6 integer +4/0, \
             6 numeric +3/0 (ranges and tolerances, rounded to 2 decimals), 6 matching-list \
             MCQs +3/-1/3",
            self.prepared.question_count(),
            self.prepared.section_ids().len(),
            self.prepared.topics().len(),
            self.prepared.max_marks(),
        )
    }

    /// Attempt number `i`: the same every run.
    fn attempt(&self, i: usize, id_prefix: &str) -> Attempt {
        let mut rng = Lcg::new(i as u64);
        // The share of answered questions this candidate gets right, in percent.
        let skill = 25 + rng.below(60);
        let mut responses = Vec::with_capacity(self.questions.len());
        for question in &self.questions {
            let roll = rng.below(100);
            let time_spent_ms = Some(u64::from(5_000 + rng.below(295_000)));
            let (state, answer) = match roll {
                // Never visited: no response at all.
                0..8 => continue,
                8..12 => (Some(ResponseState::NotAnswered), None),
                12..16 => (Some(ResponseState::MarkedForReview), None),
                _ => {
                    let answer = if rng.below(100) < skill {
                        right_answer(question.key, &mut rng)
                    } else {
                        wrong_answer(question.key, &mut rng)
                    };
                    let state = match rng.below(10) {
                        0 => Some(ResponseState::AnsweredAndMarkedForReview),
                        1 => Some(ResponseState::Answered),
                        _ => None,
                    };
                    (state, Some(answer))
                }
            };
            responses.push(Response {
                question: question.id.clone(),
                state,
                answer,
                awarded: None,
                time_spent_ms,
            });
        }
        Attempt {
            attempt_id: format!("{id_prefix}-{i:06}"),
            test_id: Some(TEST_ID.to_owned()),
            candidate_id: Some(format!("cand-{i:06}")),
            responses,
        }
    }
}

/// Outcomes of every question of the scored attempts.
#[derive(Default)]
struct Tally {
    attempts: u64,
    correct: u64,
    partial: u64,
    incorrect: u64,
    unattempted: u64,
    marks: f64,
}

impl Tally {
    fn add(&mut self, result: &AttemptResult) {
        let counts = &result.total.counts;
        self.attempts += 1;
        self.correct += u64::from(counts.correct);
        self.partial += u64::from(counts.partial);
        self.incorrect += u64::from(counts.incorrect);
        self.unattempted += u64::from(counts.unattempted);
        let marks = result.total.marks;
        self.marks += marks.numer() as f64 / marks.denom() as f64;
    }

    fn describe(&self, max_marks: impl std::fmt::Display) -> String {
        let questions = (self.correct + self.partial + self.incorrect + self.unattempted) as f64;
        let share = |n: u64| 100.0 * n as f64 / questions;
        format!(
            "{:.0}% correct, {:.0}% partial, {:.0}% incorrect, {:.0}% unattempted; \
             mean {:.1} of {max_marks} marks",
            share(self.correct),
            share(self.partial),
            share(self.incorrect),
            share(self.unattempted),
            self.marks / self.attempts as f64,
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Part 1: the pure function

fn pure(workload: &Workload, n: usize, report: &mut Report) -> Result<()> {
    eprintln!("bench: pure scoring: generating {n} attempts");
    let test = &workload.prepared;
    let attempts: Vec<Attempt> = (0..n).map(|i| workload.attempt(i, "pure")).collect();
    // Untimed: every attempt scores, and what they add up to.
    let mut tally = Tally::default();
    for attempt in &attempts {
        let result = test
            .score(attempt)
            .map_err(|e| anyhow!("attempt {} is refused: {e}", attempt.attempt_id))?;
        tally.add(&result);
    }
    report.figure(
        "Generated answers, over all questions",
        tally.describe(test.max_marks()),
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

/// Runs part 2 and cleans up; returns what failed.
async fn end_to_end(knobs: &Knobs, workload: &Workload, report: &mut Report) -> Vec<String> {
    let mut errors = Vec::new();
    match Bench::setup(knobs, report).await {
        Err(e) => errors.push(format!("setup: {e:#}")),
        Ok(bench) => {
            // Ctrl-C drops the run (and with it any daemon, which is killed) but still cleans up.
            let result = tokio::select! {
                result = bench.run(workload, report) => result,
                _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted by Ctrl-C")),
            };
            if let Err(e) = result {
                errors.push(format!("end to end: {e:#}"));
            }
            bench.run.note_daemon_warnings(report);
            if let Err(e) = bench.run.teardown(report).await {
                errors.push(format!("cleanup: {e:#}"));
            }
        }
    }
    errors
}

/// One end-to-end run: its own database, Redis prefix and config file.
struct Bench<'k> {
    knobs: &'k Knobs,
    run: Run,
}

impl<'k> Bench<'k> {
    async fn setup(knobs: &'k Knobs, report: &mut Report) -> Result<Bench<'k>> {
        let spec = RunSpec {
            tag: "bench",
            queue: "scoring",
            config_toml: CONFIG_TOML,
            // The run's concurrency, over the shipped one in CONFIG_TOML.
            env: vec![(
                "QUIZWORKER_QUEUES__SCORING__CONCURRENCY",
                knobs.concurrency.to_string(),
            )],
            check_autovacuum: false,
            database_url: &knobs.database_url,
            redis_url: &knobs.redis_url,
        };
        let run = Run::setup(spec, report).await?;
        Ok(Bench { knobs, run })
    }

    async fn run(&self, workload: &Workload, report: &mut Report) -> Result<()> {
        self.run.migrate()?;

        eprintln!("bench: storing the test through one score.attempt job");
        let mut daemon = self.run.start_daemon("daemon-first").await?;
        let seed = ScoreAttempt {
            test: Some(workload.def.clone()),
            attempt: workload.attempt(0, "seed"),
            submitted_at: Some(Utc::now()),
        };
        let seed_id = self.enqueue_one(&seed).await?;
        self.wait_for_job(&mut daemon, &seed_id).await?;
        daemon.stop().await?;

        let n = self.knobs.e2e_attempts;
        eprintln!("bench: generating {n} attempts and their expected marks");
        let attempts: Vec<Attempt> = (0..n).map(|i| workload.attempt(i, "att")).collect();
        let expected = attempts
            .iter()
            .map(|attempt| {
                let result = workload
                    .prepared
                    .score(attempt)
                    .map_err(|e| anyhow!("attempt {} is refused: {e}", attempt.attempt_id))?;
                Ok((attempt.attempt_id.clone(), result.total.marks.to_string()))
            })
            .collect::<Result<Vec<(String, String)>>>()?;
        self.enqueue_backlog(attempts, report).await?;
        self.drain(&seed_id, report).await?;
        self.verify(&seed_id, &expected, workload, report).await
    }

    /// Enqueues one job through the protocol script; returns its id.
    async fn enqueue_one(&self, job: &ScoreAttempt) -> Result<String> {
        let envelope = Envelope::new(job, Utc::now())?;
        let mut redis = self.run.redis.clone();
        let (id, created): (String, i64) = redis::Script::new(ENQUEUE_SCRIPT)
            .arg(&self.run.queue)
            .arg(envelope.encode())
            .invoke_async(&mut redis)
            .await
            .context("enqueue through the protocol script")?;
        ensure!(created == 1, "the script did not enqueue job {id}");
        Ok(id)
    }

    /// Waits until the journal shows the job completed; fails if it failed or stalled.
    async fn wait_for_job(&self, daemon: &mut Daemon, id: &str) -> Result<()> {
        let started = Instant::now();
        loop {
            daemon.ensure_running()?;
            let row: Option<(String, Option<String>)> =
                sqlx::query_as("SELECT state, last_error FROM jobs WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&self.run.pg)
                    .await
                    .context("read the job's state")?;
            match row {
                Some((state, _)) if state == "completed" => return Ok(()),
                Some((state, Some(error))) if state == "failed" || state == "retrying" => {
                    bail!("job {id} is {state}: {error}")
                }
                _ => {}
            }
            ensure!(
                started.elapsed() < STALL_DEADLINE,
                "job {id} did not complete in {STALL_DEADLINE:?} (state {:?}):\n{}",
                row.map(|(state, _)| state),
                daemon.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// With the daemon stopped: every job pushed as fast as possible.
    async fn enqueue_backlog(&self, attempts: Vec<Attempt>, report: &mut Report) -> Result<()> {
        let jobs = attempts.len();
        eprintln!("bench: enqueueing {jobs} score.attempt jobs");
        let mut redis = self.run.redis.clone();
        let sha = redis::Script::new(ENQUEUE_SCRIPT)
            .load_async(&mut redis)
            .await
            .context("SCRIPT LOAD")?;
        let started = Instant::now();
        let mut bytes = 0;
        let mut attempts = attempts.into_iter().peekable();
        while attempts.peek().is_some() {
            let mut pipe = redis::pipe();
            let mut n = 0;
            for attempt in attempts.by_ref().take(ENQUEUE_BATCH) {
                let job = ScoreAttempt {
                    test: None,
                    attempt,
                    submitted_at: Some(Utc::now()),
                };
                let envelope = Envelope::new(&job, Utc::now())?.encode();
                bytes += envelope.len();
                pipe.cmd("EVALSHA")
                    .arg(&sha)
                    .arg(0)
                    .arg(&self.run.queue)
                    .arg(envelope);
                n += 1;
            }
            let replies: Vec<(String, i64)> = pipe
                .query_async(&mut redis)
                .await
                .context("pipelined EVALSHA")?;
            let created = replies.iter().filter(|(_, created)| *created == 1).count();
            ensure!(
                created == n,
                "only {created} of {n} jobs of a batch were enqueued"
            );
        }
        let secs = started.elapsed().as_secs_f64();
        report.figure(
            format!("Enqueue rate ({jobs} jobs, pipelined EVALSHA, {ENQUEUE_BATCH} a batch)"),
            format!(
                "{} ({:.1} MB of envelopes)",
                per_sec(jobs as f64 / secs, "attempts"),
                bytes as f64 / 1e6
            ),
        );
        let waiting: usize = redis::cmd("LLEN")
            .arg(format!("{}:active", self.run.queue))
            .query_async(&mut redis)
            .await
            .context("LLEN of the active list")?;
        ensure!(
            waiting == jobs,
            "{waiting} jobs wait in Redis, {jobs} expected"
        );
        Ok(())
    }

    /// A fresh daemon drains the backlog while the stored results are counted.
    async fn drain(&self, seed_id: &str, report: &mut Report) -> Result<()> {
        let jobs = self.knobs.e2e_attempts as u64;
        eprintln!(
            "bench: draining the backlog, concurrency {}",
            self.knobs.concurrency
        );
        let mut daemon = self.run.start_daemon("daemon-second").await?;
        let cpu_before = CpuTimes::now(daemon.child.id(), &self.run.db_name);
        // The seed attempt's result is already there.
        let samples = self.sample_until_stored(&mut daemon, 1 + jobs).await?;
        let cpu_after = CpuTimes::now(daemon.child.id(), &self.run.db_name);
        let peak = daemon.status_kb("VmHWM")?;
        daemon.stop().await?;

        let done: Vec<(f64, u64)> = samples
            .iter()
            .map(|&(t, stored)| (t, stored.saturating_sub(1)))
            .collect();
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
        let fifth = jobs / 5;
        if fifth > 0 {
            let last_secs = total_secs - time_at(&done, jobs - fifth);
            report.figure(
                "Stored attempts/s, last 20% of the backlog",
                per_sec(fifth as f64 / last_secs, "attempts"),
            );
        }
        // A cross-check free of the sampling step and of startup: the journal's own times.
        let journal_secs: Option<f64> = sqlx::query_scalar(
            "SELECT EXTRACT(EPOCH FROM max(j.finished_at) - min(a.started_at))::float8
               FROM jobs j JOIN job_attempts a ON a.job_id = j.id
              WHERE j.kind = 'score.attempt' AND j.id <> $1",
        )
        .bind(seed_id)
        .fetch_one(&self.run.pg)
        .await
        .context("read the backlog's first start and last finish")?;
        if let Some(secs) = journal_secs.filter(|s| *s > 0.0) {
            report.figure(
                "Stored attempts/s, whole backlog (journal: first start to last finish)",
                format!("{} ({secs:.2} s)", per_sec(jobs as f64 / secs, "attempts")),
            );
        }
        if let Some(cores) = cpu_before.until(&cpu_after) {
            report.figure(
                "CPU while draining, cores busy on average (ready to last result; Postgres' other \
                 processes: WAL writer, checkpointer, other databases; the rest: short-lived \
                 processes, the kernel's threads, this bench, other load)",
                cores.describe(),
            );
            report.figure("CPU per stored attempt", cores.per_job(jobs));
        }
        report.figure("Peak RSS while draining (VmHWM)", mib(peak));
        Ok(())
    }

    /// Counts stored results until `target` are ([`common::sample_until`]); fails early if a
    /// job fails or waits for a retry.
    async fn sample_until_stored(
        &self,
        daemon: &mut Daemon,
        target: u64,
    ) -> Result<Vec<(f64, u64)>> {
        common::sample_until(
            daemon,
            target,
            "result stored",
            "results stored",
            async || {
                let (stored, failing) = self.stored().await?;
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
                Ok(stored)
            },
        )
        .await
    }

    /// Stored results, and jobs the journal shows failed or waiting for a retry.
    async fn stored(&self) -> Result<(u64, u64)> {
        let (stored, failing): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM score_results),
                    (SELECT count(*) FROM jobs WHERE state IN ('failed', 'retrying'))",
        )
        .fetch_one(&self.run.pg)
        .await
        .context("count stored results")?;
        Ok((stored as u64, failing as u64))
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
        let (jobs, completed, one_attempt, attempts, completed_attempts): (
            i64,
            i64,
            i64,
            i64,
            i64,
        ) = sqlx::query_as(
            "SELECT count(*), count(*) FILTER (WHERE state = 'completed'),
                        count(*) FILTER (WHERE attempts = 1),
                        (SELECT count(*) FROM job_attempts),
                        (SELECT count(*) FROM job_attempts WHERE outcome = 'completed')
                   FROM jobs WHERE kind = 'score.attempt'",
        )
        .fetch_one(&self.run.pg)
        .await
        .context("count the jobs")?;
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
                "{jobs} score.attempt jobs ({total} enqueued, the test's first {seed_id}), \
                 {completed} completed, {one_attempt} with attempts = 1; {attempts} attempt \
                 rows, {completed_attempts} completed"
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
        ensure!(
            [jobs, completed, one_attempt, attempts, completed_attempts]
                .iter()
                .all(|&n| n == total),
            "the journal does not show every job completed with exactly one attempt"
        );
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

/// The common report, plus the workload's description.
struct Report {
    base: common::Report,
    workload: Vec<String>,
}

impl Report {
    fn new(knobs: &Knobs) -> Report {
        let knobs = vec![
            (
                "BENCH_PURE_ATTEMPTS".into(),
                knobs.pure_attempts.to_string(),
            ),
            ("BENCH_E2E_ATTEMPTS".into(), knobs.e2e_attempts.to_string()),
            (
                "BENCH_SCORING_CONCURRENCY".into(),
                knobs.concurrency.to_string(),
            ),
        ];
        Report {
            base: common::Report::new("scoring", "bench", knobs),
            workload: Vec::new(),
        }
    }

    fn workload(&mut self, line: String) {
        self.workload.push(line);
    }

    /// The workload's section of the report, for [`common::finish`].
    fn sections(&self) -> String {
        let mut workload = String::new();
        if !self.workload.is_empty() {
            workload.push_str("## Workload\n\n");
            for line in &self.workload {
                workload.push_str(&format!("- {line}\n"));
            }
            workload.push('\n');
        }
        workload
    }
}

/// The common report's machine, figure and note calls, as on the throughput bench's.
impl Deref for Report {
    type Target = common::Report;

    fn deref(&self) -> &common::Report {
        &self.base
    }
}

impl DerefMut for Report {
    fn deref_mut(&mut self) -> &mut common::Report {
        &mut self.base
    }
}

/// The shipped `[queues.scoring]` (config.toml); the run's concurrency comes from
/// QUIZWORKER_QUEUES__SCORING__CONCURRENCY. The whole table is written so that nothing depends
/// on the shipped file.
const CONFIG_TOML: &str = r#"# Written by benches/scoring.rs.
[queues.scoring]
concurrency = 256
timeout = "5m"
max_attempts = 5
backoff = { base = "2s", cap = "10m", jitter = 0.2 }
"#;

/// CPU time used so far (user + system, in clock ticks) by the daemon, Postgres' processes and
/// Redis, and by the whole machine, from /proc. Postgres' backends serving the run's database
/// (its name is in their process title) are told from its other processes: the WAL writer,
/// the checkpointer, and backends of other databases, which may belong to other load.
struct CpuTimes {
    at: Instant,
    daemon: u64,
    /// Per pid: a process started between two readings counts from 0. Processes that exit
    /// between two readings (autovacuum workers) are missed: they count as the rest. The
    /// daemon's connections live until it stops.
    backends: HashMap<u32, u64>,
    postgres: HashMap<u32, u64>,
    redis: u64,
    /// The machine's busy and total ticks, all CPUs together (/proc/stat).
    machine_busy: u64,
    machine_total: u64,
}

/// Average cores busy between two [`CpuTimes`].
struct Cores {
    wall: f64,
    daemon: f64,
    backends: f64,
    postgres: f64,
    redis: f64,
    machine: f64,
    cpus: f64,
}

impl CpuTimes {
    fn now(daemon_pid: u32, db_name: &str) -> CpuTimes {
        let mut times = CpuTimes {
            at: Instant::now(),
            daemon: 0,
            backends: HashMap::new(),
            postgres: HashMap::new(),
            redis: 0,
            machine_busy: 0,
            machine_total: 0,
        };
        for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Some((command, ticks)) = process_ticks(pid) else {
                continue;
            };
            if pid == daemon_pid {
                times.daemon = ticks;
            } else if command == "postgres" {
                // "postgres: 15/main: user database host(port) state"
                let title = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let title = String::from_utf8_lossy(&title);
                if title.split([' ', '\0']).any(|word| word == db_name) {
                    times.backends.insert(pid, ticks);
                } else {
                    times.postgres.insert(pid, ticks);
                }
            } else if command == "redis-server" {
                times.redis += ticks;
            }
        }
        let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
        if let Some(line) = stat.lines().find(|line| line.starts_with("cpu ")) {
            // user nice system idle iowait irq softirq steal ...
            let fields: Vec<u64> = line
                .split_whitespace()
                .skip(1)
                .take(8)
                .filter_map(|f| f.parse().ok())
                .collect();
            times.machine_total = fields.iter().sum();
            times.machine_busy = times.machine_total
                - fields.get(3).copied().unwrap_or(0)
                - fields.get(4).copied().unwrap_or(0);
        }
        times
    }

    /// What was used from `self` to `later`; `None` if /proc could not tell.
    fn until(&self, later: &CpuTimes) -> Option<Cores> {
        let wall = later.at.duration_since(self.at).as_secs_f64();
        if wall <= 0.0 || later.machine_total <= self.machine_total {
            return None;
        }
        let tick = clock_ticks_per_sec();
        let cores = |ticks: u64| ticks as f64 / tick / wall;
        let since = |before: &HashMap<u32, u64>, after: &HashMap<u32, u64>| -> u64 {
            after
                .iter()
                .map(|(pid, &t)| t.saturating_sub(before.get(pid).copied().unwrap_or(0)))
                .sum()
        };
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        Some(Cores {
            wall,
            daemon: cores(later.daemon.saturating_sub(self.daemon)),
            backends: cores(since(&self.backends, &later.backends)),
            postgres: cores(since(&self.postgres, &later.postgres)),
            redis: cores(later.redis.saturating_sub(self.redis)),
            machine: (later.machine_busy - self.machine_busy) as f64
                / (later.machine_total - self.machine_total) as f64
                * cpus,
            cpus,
        })
    }
}

impl Cores {
    fn describe(&self) -> String {
        let rest = self.machine - self.daemon - self.backends - self.postgres - self.redis;
        format!(
            "daemon {:.2}, its Postgres backends {:.2}, Postgres' other processes {:.2}, Redis \
             {:.2}, the rest {rest:.2}; machine {:.2} of {:.0}",
            self.daemon, self.backends, self.postgres, self.redis, self.machine, self.cpus
        )
    }

    /// CPU milliseconds per job, of `jobs` done in the interval.
    fn per_job(&self, jobs: u64) -> String {
        let ms = |cores: f64| cores * self.wall * 1000.0 / jobs as f64;
        format!(
            "daemon {:.2} ms, its Postgres backends {:.2} ms, Postgres' other processes {:.2} ms, \
             Redis {:.2} ms",
            ms(self.daemon),
            ms(self.backends),
            ms(self.postgres),
            ms(self.redis)
        )
    }
}

/// The command name and user + system ticks of a process, from /proc/<pid>/stat.
fn process_ticks(pid: u32) -> Option<(String, u64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ..." where comm may hold spaces and parentheses.
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let command = stat[open + 1..close].to_owned();
    let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    // After the command: state is field 3 of stat(5), utime 14 and stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((command, utime + stime))
}

fn clock_ticks_per_sec() -> f64 {
    command_line("getconf", &["CLK_TCK"])
        .parse()
        .unwrap_or(100.0)
}
