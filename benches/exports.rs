//! Exports: `cargo bench --bench exports`.
//!
//! How fast the release daemon writes the files of the `export.*` jobs (README "Exports"), with
//! real Redis and Postgres. The workload is the scoring bench's 90-question, 3-section
//! JEE-Advanced-like test and its seeded attempt generator (copied from benches/scoring.rs, so
//! the two benches stay independent); every stored result is what the pure scorer
//! (`PreparedTest::score`) gives for its attempt, ranked with the pure `competition_ranks` and
//! `nta_percentiles`, so the files are what a real finalized test exports. Candidates' names
//! cycle through Latin, Devanagari and Chinese, so the report cards need all three configured
//! fonts.
//!
//! Seeding: BENCH_CSV_ROWS attempts (at least BENCH_REPORT_CARDS) are scored in the bench and
//! written straight into the scoring tables with bulk `INSERT ... SELECT FROM UNNEST`, a thousand
//! a statement: scoring 100,000 jobs through the daemon would take minutes and measure scoring,
//! not exports. Candidates' statistics (`score_results.contributions`) are not seeded: no
//! export reads them.
//!
//! Parts:
//! 1. CSV: a fresh `quizworker run --queues exports` gets one `export.results_csv` job for the
//!    whole test. Reported: the handler's time (the journal's `duration_ms`) and rows per
//!    second, the time from enqueue to the journal's completion, the daemon's CPU time, its idle
//!    RSS and its peak RSS (VmHWM: the process only started and ran this export). Checked: the
//!    file parses as CSV with a header and BENCH_CSV_ROWS records in rank order, and its size
//!    and SHA-256 are the ones the job recorded.
//! 2. Report cards: with the daemon stopped, BENCH_REPORT_CARDS `export.report_pdf` jobs for
//!    different attempts (spread over the ranks and the three scripts) are pushed through the
//!    protocol's Lua script (docs/PROTOCOL.md); a fresh daemon drains them at the exports
//!    queue's concurrency (BENCH_EXPORTS_CONCURRENCY). The rate is completed jobs per second from
//!    the daemon's ready line to the last completion (it includes loading the fonts). Checked:
//!    every job completed with one attempt, no warnings, and a file of the recorded size; a
//!    sample of them passes `qpdf --check`, has the recorded SHA-256, and `pdftotext` gives back
//!    the candidate's name.
//!
//! Each run gets its own Postgres database, Redis key prefix and export directory, all removed
//! at the end, so it can share servers with the tests or a running deployment.
//!
//! Knobs (environment, with defaults): BENCH_CSV_ROWS=100000, BENCH_REPORT_CARDS=500 (either 0
//! skips its part), BENCH_EXPORTS_CONCURRENCY=4 (the exports queue's, as shipped),
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres (any database on the server: the
//! run's own database is created next to it), REDIS_URL=redis://127.0.0.1:6379. Needs `qpdf`,
//! `pdftotext` and the fonts of config.toml's [exports] (scripts/services.sh installs them).
//!
//! Prints a Markdown report on stdout and progress on stderr; exits non-zero if anything failed
//! (the report then shows what was measured before the failure). Structure follows
//! benches/scoring.rs; the helpers the benches share are in benches/common/mod.rs.

mod common;

use std::fs;
use std::ops::{Deref, DerefMut};
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use chrono::{DateTime, TimeZone, Utc};
use common::generated::{
    Key, Lcg, OPTIONS, Question, SECTIONS, picked, right_answer, wrong_answer,
};
use common::{Daemon, Run, RunSpec, STALL_DEADLINE, env_or, mib, per_sec, percentile, time_at};
use quizworker_jobs::exports::{ExportReportPdf, ExportResultsCsv};
use quizworker_jobs::scoring::{
    Attempt, AttemptResult, Marks, PreparedTest, Response, ResponseState, TestDef,
    competition_ranks, nta_percentiles,
};
use quizworker_jobs::{ENQUEUE_SCRIPT, Envelope, JobPayload};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const TEST_ID: &str = "jee-adv-exports";
/// Attempts written per INSERT while seeding (a result is about 19 KB of JSON).
const SEED_BATCH: usize = 1000;
/// Envelopes per pipeline when filling the backlog of report cards.
const ENQUEUE_BATCH: usize = 500;
/// Report cards checked with qpdf and pdftotext, spread over the backlog.
const PDF_SAMPLE: usize = 10;
/// The aims of issue 5.
const AIM_CSV_ROWS: u64 = 100_000;
const AIM_CSV_SECS: f64 = 2.0;
const AIM_CSV_RSS_MB: f64 = 50.0;
const AIM_CARDS_PER_SEC: f64 = 100.0;

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
    // Other load on the machine skews every figure: the report says how much there was.
    report.machine("Load average at start (/proc/loadavg)", load_average());
    let mut errors = Vec::new();
    match Workload::new() {
        Err(e) => errors.push(format!("the test: {e:#}")),
        Ok(workload) => {
            report.workload(workload.describe());
            errors.extend(run(&knobs, &workload, &mut report).await);
        }
    }
    report.machine("Load average at end (/proc/loadavg)", load_average());
    let sections = report.sections();
    common::finish(&mut report, &errors, &sections)
}

/// The 1, 5 and 15 minute load averages.
fn load_average() -> String {
    let text = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let fields: Vec<&str> = text.split_whitespace().take(3).collect();
    if fields.len() == 3 {
        fields.join(" ")
    } else {
        "unknown".into()
    }
}

/// Sets up, runs both parts, cleans up; returns what failed.
async fn run(knobs: &Knobs, workload: &Workload, report: &mut Report) -> Vec<String> {
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
                errors.push(format!("{e:#}"));
            }
            bench.run.note_daemon_warnings(report);
            if let Err(e) = bench.run.teardown(report).await {
                errors.push(format!("cleanup: {e:#}"));
            }
            // The export directory goes with `bench.exports` (a TempDir).
        }
    }
    errors
}

/// What the run is asked to do, from the environment.
struct Knobs {
    csv_rows: usize,
    report_cards: usize,
    concurrency: u64,
    database_url: String,
    redis_url: String,
}

impl Knobs {
    fn from_env() -> Result<Knobs> {
        let knobs = Knobs {
            csv_rows: env_or("BENCH_CSV_ROWS", 100_000)?,
            report_cards: env_or("BENCH_REPORT_CARDS", 500)?,
            concurrency: env_or("BENCH_EXPORTS_CONCURRENCY", 4)?,
            database_url: common::database_url()?,
            redis_url: common::redis_url()?,
        };
        ensure!(
            knobs.csv_rows > 0 || knobs.report_cards > 0,
            "BENCH_CSV_ROWS and BENCH_REPORT_CARDS are both 0: nothing to measure"
        );
        ensure!(
            knobs.concurrency >= 1,
            "BENCH_EXPORTS_CONCURRENCY must be at least 1"
        );
        Ok(knobs)
    }

    /// Attempts stored: every one is a row of the CSV, and the report cards pick among them.
    fn attempts(&self) -> usize {
        self.csv_rows.max(self.report_cards)
    }
}

// ---------------------------------------------------------------------------------------------
// The test and the attempts: benches/scoring.rs' generator, with names in three scripts.

/// Candidates' names by attempt number: one in three needs each configured font (DejaVu Sans,
/// Lohit Devanagari, WenQuanYi Micro Hei).
const NAMES: [&str; 3] = ["Asha Verma", "नेहा शर्मा", "王芳"];

/// The test every part exports, and the keys the attempts are generated from.
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
                let (key, mut item) = question(slot, g);
                item["id"] = json!(qid);
                item["topic"] = json!(topics[slot % 5]);
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
             6 numeric +3/0, 6 matching-list MCQs +3/-1/3 (benches/scoring.rs' test); \
             candidates named in Latin, Devanagari and Chinese in turn",
            self.prepared.question_count(),
            self.prepared.section_ids().len(),
            self.prepared.topics().len(),
            self.prepared.max_marks(),
        )
    }

    /// Attempt number `i`: the same every run.
    fn attempt(&self, i: usize) -> Attempt {
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
            attempt_id: attempt_id(i),
            test_id: Some(TEST_ID.to_owned()),
            candidate_id: Some(candidate(i)),
            responses,
        }
    }

    /// Attempt `i` and the pure scorer's result of it.
    fn scored(&self, i: usize) -> Result<(Attempt, AttemptResult)> {
        let attempt = self.attempt(i);
        let result = self
            .prepared
            .score(&attempt)
            .map_err(|e| anyhow!("attempt {} is refused: {e}", attempt.attempt_id))?;
        Ok((attempt, result))
    }
}

fn attempt_id(i: usize) -> String {
    format!("att-{i:06}")
}

fn candidate(i: usize) -> String {
    format!("{} {i:06}", NAMES[i % NAMES.len()])
}

/// When attempt `i` was submitted: a second apart from 09:00 on the day of the test.
fn submitted_at(i: usize) -> DateTime<Utc> {
    let start = Utc.with_ymd_and_hms(2026, 11, 22, 9, 0, 0).single();
    start.unwrap_or_default() + chrono::Duration::seconds(i as i64)
}

/// The key and the definition of the question in `slot` (0 to 29) of a section; `g` spreads the
/// keys over the options and values.
fn question(slot: usize, g: u32) -> (Key, Value) {
    match slot / 6 {
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
                let answer = json!({"min": format!("{k}.40"), "max": format!("{k}.60")});
                let item = json!({"type": "numeric", "answer": answer, "rounding": rounding});
                (Key::Range(k), item)
            } else {
                let answer = json!({"value": format!("{k}.81"), "tolerance": "0.01"});
                let item = json!({"type": "numeric", "answer": answer, "rounding": rounding});
                (Key::Tolerance(k), item)
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The run

/// One run: its own database, Redis prefix, config file and export directory.
struct Bench<'k> {
    knobs: &'k Knobs,
    run: Run,
    /// Where the daemon writes the files; removed when the bench ends.
    exports: tempfile::TempDir,
}

/// A job as the journal has it.
struct JobRow {
    state: String,
    progress: i16,
    result: Option<Value>,
    last_error: Option<String>,
}

impl<'k> Bench<'k> {
    async fn setup(knobs: &'k Knobs, report: &mut Report) -> Result<Bench<'k>> {
        for tool in ["qpdf", "pdftotext"] {
            let found = Command::new(tool).arg("--version").output().is_ok();
            ensure!(
                found,
                "{tool} is not installed (scripts/services.sh installs it)"
            );
        }
        let exports = tempfile::tempdir().context("cannot create the export directory")?;
        let directory = exports.path().to_string_lossy().into_owned();
        let spec = RunSpec {
            tag: "bench",
            queue: "exports",
            config_toml: CONFIG_TOML,
            env: vec![
                ("QUIZWORKER_EXPORTS__DIRECTORY", directory),
                // The run's concurrency, over the shipped one in CONFIG_TOML.
                (
                    "QUIZWORKER_QUEUES__EXPORTS__CONCURRENCY",
                    knobs.concurrency.to_string(),
                ),
            ],
            check_autovacuum: false,
            database_url: &knobs.database_url,
            redis_url: &knobs.redis_url,
        };
        let run = Run::setup(spec, report).await?;
        Ok(Bench {
            knobs,
            run,
            exports,
        })
    }

    async fn run(&self, workload: &Workload, report: &mut Report) -> Result<()> {
        self.run.migrate()?;
        let ranks = self.seed(workload, report).await?;
        if self.knobs.csv_rows > 0 {
            self.csv(report).await?;
        }
        if self.knobs.report_cards > 0 {
            self.report_cards(&ranks, report).await?;
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Seeding

    /// Stores the test, then every attempt with its result, rank and percentile, as
    /// `score.attempt` and `score.finalize_test` would. Returns the ranks, by attempt number.
    async fn seed(&self, workload: &Workload, report: &mut Report) -> Result<Vec<u32>> {
        let n = self.knobs.attempts();
        eprintln!("bench: seeding {n} scored attempts");
        let started = Instant::now();
        // `::json` then the column's own type: the results are `json` or `jsonb` depending on
        // the migrations, and an assignment cast exists both ways.
        sqlx::query(
            "INSERT INTO score_tests (test_id, key_version, definition) VALUES ($1, $2, $3::json)",
        )
        .bind(TEST_ID)
        .bind(i64::from(workload.def.key_version))
        .bind(serde_json::to_string(&workload.def)?)
        .execute(&self.run.pg)
        .await
        .context("store the test")?;

        // Ranks need every total first: score once for the totals, then again to store (the
        // results of 100,000 attempts would take gigabytes of memory).
        let mut totals: Vec<Marks> = Vec::with_capacity(n);
        let mut tally = Tally::default();
        for i in 0..n {
            let (_, result) = workload.scored(i)?;
            tally.add(&result);
            totals.push(result.total.marks);
        }
        let ranks = competition_ranks(&totals);
        let percentiles: Vec<String> = nta_percentiles(&totals)
            .iter()
            .map(ToString::to_string)
            .collect();

        let mut result_bytes = 0;
        for from in (0..n).step_by(SEED_BATCH) {
            let to = (from + SEED_BATCH).min(n);
            result_bytes += self
                .seed_batch(workload, from..to, &ranks, &percentiles)
                .await?;
        }
        report.figure(
            "Seeded results",
            format!(
                "{n} attempts and results in {:.1} s (not timed as an export); results' JSON \
                 {:.1} KB on average; {}",
                started.elapsed().as_secs_f64(),
                result_bytes as f64 / n as f64 / 1000.0,
                tally.describe(workload.prepared.max_marks())
            ),
        );
        Ok(ranks)
    }

    /// Writes attempts `range` and their results in two statements; returns the bytes of the
    /// results' JSON.
    async fn seed_batch(
        &self,
        workload: &Workload,
        range: std::ops::Range<usize>,
        ranks: &[u32],
        percentiles: &[String],
    ) -> Result<usize> {
        let mut rows = SeedRows::default();
        for i in range {
            let (attempt, result) = workload.scored(i)?;
            rows.ids.push(attempt.attempt_id.clone());
            rows.candidates.push(candidate(i));
            rows.attempts.push(serde_json::to_string(&attempt)?);
            rows.submitted.push(submitted_at(i));
            rows.marks.push(result.total.marks.to_string());
            rows.max_marks.push(result.total.max_marks.to_string());
            rows.results.push(serde_json::to_string(&result)?);
            rows.sheets.push(serde_json::to_string(
                &quizworker_jobs::exports::results_sheet::SheetResult::from(&result),
            )?);
            rows.ranks.push(i64::from(ranks[i]));
            rows.percentiles.push(percentiles[i].clone());
        }
        let mut tx = self.run.pg.begin().await?;
        sqlx::query(
            "INSERT INTO score_attempts (attempt_id, test_id, candidate_id, attempt, submitted_at)
             SELECT id, $1, candidate, attempt::json, submitted
               FROM UNNEST($2::text[], $3::text[], $4::text[], $5::timestamptz[])
                 AS t(id, candidate, attempt, submitted)",
        )
        .bind(TEST_ID)
        .bind(&rows.ids)
        .bind(&rows.candidates)
        .bind(&rows.attempts)
        .bind(&rows.submitted)
        .execute(&mut *tx)
        .await
        .context("store attempts")?;
        sqlx::query(
            "INSERT INTO score_results (attempt_id, test_id, candidate_id, key_version, marks,
                                        max_marks, provisional, result, sheet, rank,
                                        percentile, finalized_at)
             SELECT id, $1, candidate, 1, marks, max_marks, false, result::json, sheet::json,
                    rank, percentile, now()
               FROM UNNEST($2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                           $7::text[], $8::int8[], $9::text[])
                 AS t(id, candidate, marks, max_marks, result, sheet, rank, percentile)",
        )
        .bind(TEST_ID)
        .bind(&rows.ids)
        .bind(&rows.candidates)
        .bind(&rows.marks)
        .bind(&rows.max_marks)
        .bind(&rows.results)
        .bind(&rows.sheets)
        .bind(&rows.ranks)
        .bind(&rows.percentiles)
        .execute(&mut *tx)
        .await
        .context("store results")?;
        tx.commit().await?;
        Ok(rows.results.iter().map(String::len).sum())
    }

    // -----------------------------------------------------------------------------------------
    // Part 1: the CSV

    async fn csv(&self, report: &mut Report) -> Result<()> {
        let rows = self.knobs.attempts();
        eprintln!("bench: CSV export of {rows} rows");
        let mut daemon = self.run.start_daemon("daemon-csv").await?;
        let idle = daemon.status_kb("VmRSS")?;
        let cpu_before = self.cpu(&daemon);
        let enqueued = Instant::now();
        let job = ExportResultsCsv {
            test_id: TEST_ID.to_owned(),
            options: Default::default(),
        };
        let id = self.enqueue_one(&job).await?;
        let row = self.wait_for_job(&mut daemon, &id).await?;
        let wall = enqueued.elapsed().as_secs_f64();
        let cpu = self.cpu(&daemon).since(&cpu_before);
        let peak = daemon.status_kb("VmHWM")?;
        daemon.stop().await?;

        let result = row.result.context("the CSV job recorded no result")?;
        let handler_secs = self.handler_secs(&id).await?;
        let label = format!("CSV, {rows} rows (`export.results_csv`)");
        report.figure(
            format!("**{label}: rows/s** (the handler's time, journal `duration_ms`)"),
            format!(
                "**{}** ({handler_secs:.2} s)",
                per_sec(rows as f64 / handler_secs, "rows")
            ),
        );
        report.figure(
            format!("{label}: enqueue to completion seen (polled every 20 ms)"),
            format!("{wall:.2} s"),
        );
        report.figure(
            format!("{label}: CPU time (user + system)"),
            cpu.describe(1.0, "s"),
        );
        report.figure(
            format!("**{label}: peak RSS** (VmHWM of a daemon that started and ran only this)"),
            format!("**{}** (idle after start: {})", mib(peak), mib(idle)),
        );
        let bytes = self.check_csv(&result, rows)?;
        report.figure(
            format!("{label}: file check"),
            format!(
                "{rows} records + header parsed back in rank order; {:.1} MB; size and SHA-256 as \
                 the job recorded",
                bytes as f64 / 1e6
            ),
        );
        // The aim is for 100,000 rows; a smaller run is judged at the same rate.
        let secs_for_aim = handler_secs * AIM_CSV_ROWS as f64 / rows as f64;
        let rss_mb = peak as f64 * 1024.0 / 1e6;
        report.figure(
            format!(
                "{label}: aim (100,000 rows under {AIM_CSV_SECS} s, RSS under {AIM_CSV_RSS_MB} MB)"
            ),
            format!(
                "{secs_for_aim:.2} s for 100,000 rows at this rate ({}); {rss_mb:.1} MB ({})",
                met(secs_for_aim < AIM_CSV_SECS),
                met(rss_mb < AIM_CSV_RSS_MB)
            ),
        );
        Ok(())
    }

    /// The CSV the job wrote: its size and SHA-256 are the recorded ones, and it holds a header
    /// and `rows` records, best rank first. Returns its size.
    fn check_csv(&self, result: &Value, rows: usize) -> Result<u64> {
        let path = self.file_of(result)?;
        let bytes = fs::read(&path).with_context(|| format!("read {}", path.display()))?;
        check_recorded(result, &bytes)?;
        ensure!(
            result["rows"] == json!(rows),
            "the job recorded {} rows, {rows} expected",
            result["rows"]
        );
        let mut reader = csv::ReaderBuilder::new().from_reader(bytes.as_slice());
        let header = reader.headers().context("the CSV header")?.clone();
        let rank_column = header
            .iter()
            .position(|h| h == "rank")
            .context("no rank column")?;
        let mut records = 0;
        let mut last_rank = 0u64;
        for record in reader.records() {
            let record = record.context("a CSV record does not parse")?;
            ensure!(
                record.len() == header.len(),
                "record {records} has {} cells, the header {}",
                record.len(),
                header.len()
            );
            let rank: u64 = record[rank_column]
                .parse()
                .with_context(|| format!("record {records}: rank {:?}", &record[rank_column]))?;
            ensure!(rank >= last_rank, "record {records} is out of rank order");
            last_rank = rank;
            records += 1;
        }
        ensure!(
            records == rows,
            "the CSV has {records} records, {rows} expected"
        );
        Ok(bytes.len() as u64)
    }

    // -----------------------------------------------------------------------------------------
    // Part 2: report cards

    async fn report_cards(&self, ranks: &[u32], report: &mut Report) -> Result<()> {
        let n = self.knobs.report_cards;
        let stored = self.knobs.attempts();
        // Different attempts, spread over the stored ones (and so over ranks and scripts).
        let attempts: Vec<usize> = (0..n).map(|k| k * stored / n).collect();
        let ids = self.enqueue_cards(&attempts, report).await?;

        eprintln!(
            "bench: rendering {n} report cards, concurrency {}",
            self.knobs.concurrency
        );
        let before = self.completed().await?;
        let mut daemon = self.run.start_daemon("daemon-cards").await?;
        let cpu_before = self.cpu(&daemon);
        let samples = common::sample_until(
            &mut daemon,
            before + n as u64,
            "report card completed",
            "report cards completed",
            async || self.completed_or_failing().await,
        )
        .await?;
        let cpu = self.cpu(&daemon).since(&cpu_before);
        let peak = daemon.status_kb("VmHWM")?;
        daemon.stop().await?;

        let done: Vec<(f64, u64)> = samples
            .iter()
            .map(|&(t, completed)| (t, completed.saturating_sub(before)))
            .collect();
        let total_secs = time_at(&done, n as u64);
        let rate = n as f64 / total_secs;
        let label = format!("Report cards, {n} (`export.report_pdf`)");
        report.figure(
            format!(
                "**{label}: cards/s** (concurrency {}, daemon ready to last completion)",
                self.knobs.concurrency
            ),
            format!("**{}** ({total_secs:.2} s)", per_sec(rate, "cards")),
        );
        let journal_secs: Option<f64> = sqlx::query_scalar(
            "SELECT EXTRACT(EPOCH FROM max(a.finished_at) - min(a.started_at))::float8
               FROM job_attempts a WHERE a.job_id = ANY($1)",
        )
        .bind(&ids)
        .fetch_one(&self.run.pg)
        .await
        .context("read the cards' first start and last finish")?;
        if let Some(secs) = journal_secs.filter(|s| *s > 0.0) {
            report.figure(
                format!("{label}: cards/s (journal: first start to last finish)"),
                format!("{} ({secs:.2} s)", per_sec(n as f64 / secs, "cards")),
            );
        }
        let mut durations: Vec<f64> = sqlx::query_scalar(
            "SELECT duration_ms::float8 FROM job_attempts WHERE job_id = ANY($1)",
        )
        .bind(&ids)
        .fetch_all(&self.run.pg)
        .await
        .context("read the cards' durations")?;
        durations.sort_by(f64::total_cmp);
        if !durations.is_empty() {
            report.figure(
                format!("{label}: one job's handler time (journal `duration_ms`), p50 / p99 / max"),
                format!(
                    "{:.0} ms / {:.0} ms / {:.0} ms",
                    percentile(&durations, 0.5),
                    percentile(&durations, 0.99),
                    percentile(&durations, 1.0)
                ),
            );
        }
        report.figure(
            format!("{label}: CPU per card (user + system)"),
            cpu.describe(1000.0 / n as f64, "ms"),
        );
        report.figure(
            format!("{label}: peak RSS while rendering (VmHWM)"),
            mib(peak),
        );
        report.figure(
            format!("{label}: aim (over {AIM_CARDS_PER_SEC} cards/s)"),
            met(rate > AIM_CARDS_PER_SEC).to_owned(),
        );
        self.check_cards(&ids, &attempts, ranks, &label, report)
            .await
    }

    /// Pushes one `export.report_pdf` job per attempt number, with the daemon stopped; returns
    /// the jobs' ids.
    async fn enqueue_cards(&self, attempts: &[usize], report: &mut Report) -> Result<Vec<String>> {
        let n = attempts.len();
        eprintln!("bench: enqueueing {n} export.report_pdf jobs");
        let mut redis = self.run.redis.clone();
        let sha = redis::Script::new(ENQUEUE_SCRIPT)
            .load_async(&mut redis)
            .await
            .context("SCRIPT LOAD")?;
        let mut ids = Vec::with_capacity(n);
        for batch in attempts.chunks(ENQUEUE_BATCH) {
            let mut pipe = redis::pipe();
            for &i in batch {
                let job = ExportReportPdf {
                    attempt_id: attempt_id(i),
                };
                let envelope = Envelope::new(&job, Utc::now())?;
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
            let created = replies.iter().filter(|(_, created)| *created == 1).count();
            ensure!(
                created == batch.len(),
                "only {created} of {} jobs of a batch were enqueued",
                batch.len()
            );
            ids.extend(replies.into_iter().map(|(id, _)| id));
        }
        report.figure(
            "Report cards enqueued (pipelined EVALSHA)",
            format!("{n} jobs for {n} different attempts"),
        );
        Ok(ids)
    }

    /// Every card's job completed with one attempt, no warnings and a file of the recorded size;
    /// a sample is read back with qpdf and pdftotext.
    async fn check_cards(
        &self,
        ids: &[String],
        attempts: &[usize],
        ranks: &[u32],
        label: &str,
        report: &mut Report,
    ) -> Result<()> {
        let rows: Vec<(String, String, i32, Option<Value>)> = sqlx::query_as(
            "SELECT id, state, attempts, result FROM jobs WHERE id = ANY($1) ORDER BY id",
        )
        .bind(ids)
        .fetch_all(&self.run.pg)
        .await
        .context("read the cards' jobs")?;
        ensure!(
            rows.len() == ids.len(),
            "the journal has {} of the {} report card jobs",
            rows.len(),
            ids.len()
        );
        let mut sizes = Vec::with_capacity(rows.len());
        let mut pages = Vec::with_capacity(rows.len());
        for (id, state, tries, result) in &rows {
            ensure!(
                state == "completed" && *tries == 1,
                "job {id} is {state} after {tries} attempts"
            );
            let result = result
                .as_ref()
                .with_context(|| format!("job {id}: no result"))?;
            ensure!(
                result["warnings"] == json!([]),
                "job {id} warns: {}",
                result["warnings"]
            );
            let path = self.file_of(result)?;
            let size = fs::metadata(&path)
                .with_context(|| format!("job {id}: no file {}", path.display()))?
                .len();
            ensure!(
                result["bytes"] == json!(size),
                "job {id}: {size} bytes on disk, {} recorded",
                result["bytes"]
            );
            sizes.push(size as f64);
            pages.push(result["pages"].as_u64().unwrap_or(0) as f64);
        }
        sizes.sort_by(f64::total_cmp);
        pages.sort_by(f64::total_cmp);
        let mean = sizes.iter().sum::<f64>() / sizes.len() as f64;
        report.figure(
            format!("{label}: PDF size, mean (min to max); pages"),
            format!(
                "{:.1} KB ({:.1} to {:.1} KB); {} to {} pages",
                mean / 1000.0,
                sizes[0] / 1000.0,
                sizes[sizes.len() - 1] / 1000.0,
                pages[0],
                pages[pages.len() - 1]
            ),
        );

        let step = (ids.len() / PDF_SAMPLE).max(1);
        let mut checked = 0;
        for k in (0..ids.len()).step_by(step) {
            self.check_card(&ids[k], attempts[k], ranks).await?;
            checked += 1;
        }
        report.figure(
            format!("{label}: check"),
            format!(
                "{} completed with one attempt, no warnings, files of the recorded size; \
                 {checked} sampled pass `qpdf --check`, match their SHA-256 and give back the \
                 candidate's name, rank and every question through `pdftotext`",
                rows.len()
            ),
        );
        Ok(())
    }

    /// One card read back: a sound PDF with the recorded SHA-256, whose text has the candidate's
    /// name (in its own script), rank and every question.
    async fn check_card(&self, id: &str, attempt: usize, ranks: &[u32]) -> Result<()> {
        let row = self.job(id).await?;
        let result = row.result.with_context(|| format!("job {id}: no result"))?;
        let path = self.file_of(&result)?;
        let bytes = fs::read(&path).with_context(|| format!("read {}", path.display()))?;
        check_recorded(&result, &bytes)?;
        let file = path.to_string_lossy();
        tool("qpdf", &["--check", &file])?;
        let text = tool("pdftotext", &["-enc", "UTF-8", &file, "-"])?;
        let rank = ranks[attempt].to_string();
        for expected in [candidate(attempt).as_str(), "Report card", rank.as_str()] {
            ensure!(
                text.contains(expected),
                "{}: no {expected:?} in its text",
                path.display()
            );
        }
        let missing = SECTIONS
            .iter()
            .flat_map(|(id, _, _)| (1..=30).map(move |q| format!("{}-q{q:02}", &id[..3])))
            .find(|q| !text.split_whitespace().any(|w| w == q));
        if let Some(q) = missing {
            bail!("{}: no row of {q} in its text", path.display());
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Jobs and files

    /// Enqueues one job through the protocol script; returns its id.
    async fn enqueue_one(&self, job: &impl JobPayload) -> Result<String> {
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

    /// Waits until the journal shows the job completed; fails if it failed, or if neither its
    /// state nor its progress moved for [`STALL_DEADLINE`].
    async fn wait_for_job(&self, daemon: &mut Daemon, id: &str) -> Result<JobRow> {
        let mut last = (String::new(), -1);
        let mut last_change = Instant::now();
        loop {
            daemon.ensure_running()?;
            if let Some(row) = self.job_if_any(id).await? {
                match row.state.as_str() {
                    "completed" => return Ok(row),
                    "failed" | "retrying" => bail!(
                        "job {id} is {}: {}",
                        row.state,
                        row.last_error.unwrap_or_default()
                    ),
                    _ => {}
                }
                if (row.state.as_str(), row.progress) != (last.0.as_str(), last.1) {
                    last = (row.state, row.progress);
                    last_change = Instant::now();
                }
            }
            ensure!(
                last_change.elapsed() < STALL_DEADLINE,
                "job {id} did not move for {STALL_DEADLINE:?} (state {:?}, progress {}):\n{}",
                last.0,
                last.1,
                daemon.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn job(&self, id: &str) -> Result<JobRow> {
        self.job_if_any(id)
            .await?
            .with_context(|| format!("job {id} is not in the journal"))
    }

    async fn job_if_any(&self, id: &str) -> Result<Option<JobRow>> {
        let row: Option<(String, i16, Option<Value>, Option<String>)> =
            sqlx::query_as("SELECT state, progress, result, last_error FROM jobs WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.run.pg)
                .await
                .context("read the job")?;
        Ok(row.map(|(state, progress, result, last_error)| JobRow {
            state,
            progress,
            result,
            last_error,
        }))
    }

    /// The handler's time of a job's (only) attempt, in seconds.
    async fn handler_secs(&self, id: &str) -> Result<f64> {
        let ms: i64 = sqlx::query_scalar("SELECT duration_ms FROM job_attempts WHERE job_id = $1")
            .bind(id)
            .fetch_one(&self.run.pg)
            .await
            .context("read the job's attempt")?;
        // A job of under a millisecond still counts as one.
        Ok(ms.max(1) as f64 / 1000.0)
    }

    async fn completed(&self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE state = 'completed'")
            .fetch_one(&self.run.pg)
            .await
            .context("count completed jobs")?;
        Ok(n as u64)
    }

    /// Completed jobs; fails at once if one failed or waits for a retry.
    async fn completed_or_failing(&self) -> Result<u64> {
        let (completed, failing, error): (i64, i64, Option<String>) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE state = 'completed'),
                    count(*) FILTER (WHERE state IN ('failed', 'retrying')),
                    max(last_error) FILTER (WHERE state IN ('failed', 'retrying'))
               FROM jobs",
        )
        .fetch_one(&self.run.pg)
        .await
        .context("count completed jobs")?;
        ensure!(
            failing == 0,
            "{failing} jobs failed or wait for a retry; one: {}",
            error.unwrap_or_default()
        );
        Ok(completed as u64)
    }

    /// CPU used so far by the daemon and by the Postgres backends of the run's database.
    fn cpu(&self, daemon: &Daemon) -> CpuUse {
        CpuUse {
            daemon: common::cpu_seconds(daemon.child.id()),
            backends: common::backends_cpu_seconds(&self.run.db_name),
        }
    }

    /// The file a job's result names, which must be in the run's export directory.
    fn file_of(&self, result: &Value) -> Result<PathBuf> {
        let path = PathBuf::from(result["path"].as_str().context("the result has no path")?);
        ensure!(
            path.parent() == Some(self.exports.path()),
            "{} is not in the export directory {}",
            path.display(),
            self.exports.path().display()
        );
        Ok(path)
    }
}

/// CPU seconds (user + system) used by the daemon (`None` if /proc could not tell) and by the
/// Postgres backends serving the run's database: the daemon's connections, and the bench's own
/// two, which only poll counts meanwhile.
struct CpuUse {
    daemon: Option<f64>,
    backends: f64,
}

impl CpuUse {
    /// What was used from `before` to `self`.
    fn since(&self, before: &CpuUse) -> CpuUse {
        CpuUse {
            daemon: self.daemon.zip(before.daemon).map(|(a, b)| a - b),
            backends: self.backends - before.backends,
        }
    }

    /// Both, multiplied by `scale` and followed by `unit`.
    fn describe(&self, scale: f64, unit: &str) -> String {
        let daemon = self
            .daemon
            .map_or("unknown".into(), |d| format!("{:.2} {unit}", d * scale));
        format!(
            "daemon {daemon}, its Postgres backends {:.2} {unit}",
            self.backends * scale
        )
    }
}

/// Columns of the rows seeded by one statement.
#[derive(Default)]
struct SeedRows {
    ids: Vec<String>,
    candidates: Vec<String>,
    attempts: Vec<String>,
    submitted: Vec<DateTime<Utc>>,
    marks: Vec<String>,
    max_marks: Vec<String>,
    results: Vec<String>,
    sheets: Vec<String>,
    ranks: Vec<i64>,
    percentiles: Vec<String>,
}

/// A file's size and SHA-256 are the ones its job recorded.
fn check_recorded(result: &Value, bytes: &[u8]) -> Result<()> {
    let sha256 = hex::encode(Sha256::digest(bytes));
    ensure!(
        result["sha256"] == json!(sha256) && result["bytes"] == json!(bytes.len()),
        "the file has {} bytes and SHA-256 {sha256}; the job recorded {} and {}",
        bytes.len(),
        result["bytes"],
        result["sha256"]
    );
    Ok(())
}

/// Runs `program` (qpdf, pdftotext) and returns its standard output; fails if it does.
fn tool(program: &str, args: &[&str]) -> Result<String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    ensure!(
        output.status.success(),
        "{program} {args:?} failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).with_context(|| format!("{program} printed no UTF-8"))
}

fn met(yes: bool) -> &'static str {
    if yes { "met" } else { "**not met**" }
}

/// Outcomes of every question of the seeded attempts.
#[derive(Default)]
struct Tally {
    attempts: u64,
    correct: u64,
    partial: u64,
    incorrect: u64,
    unattempted: u64,
}

impl Tally {
    fn add(&mut self, result: &AttemptResult) {
        let counts = &result.total.counts;
        self.attempts += 1;
        self.correct += u64::from(counts.correct);
        self.partial += u64::from(counts.partial);
        self.incorrect += u64::from(counts.incorrect);
        self.unattempted += u64::from(counts.unattempted);
    }

    fn describe(&self, max_marks: impl std::fmt::Display) -> String {
        let questions = (self.correct + self.partial + self.incorrect + self.unattempted) as f64;
        let share = |n: u64| 100.0 * n as f64 / questions;
        format!(
            "answers {:.0}% correct, {:.0}% partial, {:.0}% incorrect, {:.0}% unattempted \
             (of {max_marks} marks)",
            share(self.correct),
            share(self.partial),
            share(self.incorrect),
            share(self.unattempted),
        )
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
            ("BENCH_CSV_ROWS".into(), knobs.csv_rows.to_string()),
            ("BENCH_REPORT_CARDS".into(), knobs.report_cards.to_string()),
            (
                "BENCH_EXPORTS_CONCURRENCY".into(),
                knobs.concurrency.to_string(),
            ),
        ];
        Report {
            base: common::Report::new("exports", "bench", knobs),
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

/// The common report's machine, figure and note calls, as on the other benches'.
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

/// The shipped `[queues.exports]` and fonts (config.toml); the run's export directory and
/// concurrency come from the environment. Whole tables are written so that nothing depends on
/// the shipped file.
const CONFIG_TOML: &str = r#"# Written by benches/exports.rs.
[exports]
directory = "/nonexistent/overridden-by-the-environment"
fonts = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/lohit-devanagari/Lohit-Devanagari.ttf",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
]

[queues.exports]
concurrency = 4
timeout = "15m"
max_attempts = 3
backoff = { base = "2s", cap = "10m", jitter = 0.2 }
"#;
