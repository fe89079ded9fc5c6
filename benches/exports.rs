//! Exports: `cargo bench --bench exports`.
//!
//! How fast the release daemon writes the files of the `export.*` jobs (README "Exports"), with
//! real Redis and Postgres. The workload is the scoring bench's 90-question, 3-section
//! JEE-Advanced-like test and its seeded attempt generator (benches/common/generated.rs, which
//! both benches use); every stored result is what the pure scorer (`PreparedTest::score`) gives
//! for its attempt, ranked with the pure `competition_ranks` and `nta_percentiles`, so the files
//! are what a real finalized test exports. Candidates' names cycle through Latin, Devanagari and
//! Chinese, so the report cards need three of the configured fonts, one of them shaped.
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
//! (the report then shows what was measured before the failure). Runs on the harness the benches
//! share (benches/common/harness.rs).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use chrono::{DateTime, TimeZone, Utc};
use common::generated::{SECTIONS, Tally, Workload};
use common::harness::Harness;
use common::{Daemon, KnobReader, Report, Run, RunSpec, mib, per_sec, percentile, time_at};
use quizworker_jobs::exports::{ExportReportPdf, ExportResultsCsv};
use quizworker_jobs::scoring::{Attempt, AttemptResult, Marks, competition_ranks, nta_percentiles};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::Postgres;
use sqlx::postgres::PgArguments;
use sqlx::query::Query;

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

fn main() -> ExitCode {
    common::main("exports", "bench", Knobs::read, |knobs, harness| {
        harness.report.machine(
            "Load average at start (/proc/loadavg)",
            common::load_average(),
        );
        match Workload::new(TEST_ID) {
            Err(e) => harness.fail("the test", e),
            Ok(workload) => {
                harness.report.workload(&format!(
                    "{}, 6 matching-list MCQs +3/-1/3 (benches/scoring.rs' test); candidates \
                     named in Latin, Devanagari and Chinese in turn",
                    workload.describe()
                ));
                run(knobs, &workload, harness);
            }
        }
        harness.report.machine(
            "Load average at end (/proc/loadavg)",
            common::load_average(),
        );
    })
}

/// Sets up, runs both parts, cleans up.
fn run(knobs: &Knobs, workload: &Workload, harness: &mut Harness) {
    let exports = match export_directory() {
        Ok(exports) => exports,
        Err(e) => return harness.fail("setup", e),
    };
    let spec = RunSpec::new("exports", config_toml())
        .env("QUIZWORKER_EXPORTS__DIRECTORY", exports.path().display())
        // The run's concurrency, over the shipped one.
        .env("QUIZWORKER_QUEUES__EXPORTS__CONCURRENCY", knobs.concurrency);
    harness.with_run(spec, async |run, report| {
        let bench = Bench {
            knobs,
            run,
            exports: exports.path(),
        };
        bench.run(workload, report).await
    });
    // The export directory goes with `exports` (a TempDir), after the run's cleanup.
}

/// Where the daemon writes the files, once the tools that check them are there; removed when
/// dropped.
fn export_directory() -> Result<tempfile::TempDir> {
    for tool in ["qpdf", "pdftotext"] {
        let found = Command::new(tool).arg("--version").output().is_ok();
        ensure!(
            found,
            "{tool} is not installed (scripts/services.sh installs it)"
        );
    }
    tempfile::tempdir().context("cannot create the export directory")
}

/// What the run is asked to do, from the environment.
struct Knobs {
    csv_rows: usize,
    report_cards: usize,
    concurrency: u64,
}

impl Knobs {
    fn read(reader: &mut KnobReader) -> Result<Knobs> {
        let knobs = Knobs {
            csv_rows: reader.read("BENCH_CSV_ROWS", 100_000, "")?,
            report_cards: reader.read("BENCH_REPORT_CARDS", 500, "")?,
            concurrency: reader.at_least("BENCH_EXPORTS_CONCURRENCY", 4, 1, "")?,
        };
        ensure!(
            knobs.csv_rows > 0 || knobs.report_cards > 0,
            "BENCH_CSV_ROWS and BENCH_REPORT_CARDS are both 0: nothing to measure"
        );
        Ok(knobs)
    }

    /// Attempts stored: every one is a row of the CSV, and the report cards pick among them.
    fn attempts(&self) -> usize {
        self.csv_rows.max(self.report_cards)
    }
}

// ---------------------------------------------------------------------------------------------
// The test and the attempts: benches/scoring.rs' test and generator, with names in three scripts.

/// Candidates' names by attempt number: one in three needs each of Noto Sans, Noto Sans
/// Devanagari (shaped: a conjunct and matras) and Noto Sans CJK.
const NAMES: [&str; 3] = ["Asha Verma", "नेहा शर्मा", "王芳"];

/// Attempt `i` and the pure scorer's result of it.
fn scored(workload: &Workload, i: usize) -> Result<(Attempt, AttemptResult)> {
    let attempt = workload.attempt(i, attempt_id(i), candidate(i));
    let result = workload.score(&attempt)?;
    Ok((attempt, result))
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

// ---------------------------------------------------------------------------------------------
// The run

/// One run: its own database, Redis prefix, config file and export directory.
struct Bench<'a> {
    knobs: &'a Knobs,
    run: &'a Run,
    /// Where the daemon writes the files.
    exports: &'a Path,
}

impl Bench<'_> {
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
            let (_, result) = scored(workload, i)?;
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
                 {:.1} KB on average; answers {} (of {} marks)",
                started.elapsed().as_secs_f64(),
                result_bytes as f64 / n as f64 / 1000.0,
                tally.shares(),
                workload.prepared.max_marks()
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
            let (attempt, result) = scored(workload, i)?;
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
        rows.insert(
            "INSERT INTO score_attempts (attempt_id, test_id, candidate_id, attempt, submitted_at)
             SELECT id, $1, candidate, attempt::json, submitted
               FROM UNNEST($2::text[], $3::text[], $4::text[], $5::timestamptz[])
                 AS t(id, candidate, attempt, submitted)",
        )
        .bind(&rows.attempts)
        .bind(&rows.submitted)
        .execute(&mut *tx)
        .await
        .context("store attempts")?;
        rows.insert(
            "INSERT INTO score_results (attempt_id, test_id, candidate_id, key_version, marks,
                                        max_marks, provisional, result, sheet, rank,
                                        percentile, finalized_at)
             SELECT id, $1, candidate, 1, marks, max_marks, false, result::json, sheet::json,
                    rank, percentile, now()
               FROM UNNEST($2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                           $7::text[], $8::int8[], $9::text[])
                 AS t(id, candidate, marks, max_marks, result, sheet, rank, percentile)",
        )
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
        let id = self.run.enqueue_one(&job).await?;
        let row = self.run.wait_for_job(&mut daemon, &id).await?;
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
        let before = self.run.completed_jobs().await?;
        let mut daemon = self.run.start_daemon("daemon-cards").await?;
        let cpu_before = self.cpu(&daemon);
        let done = common::sample_until(
            &mut daemon,
            before,
            n as u64,
            "report card completed",
            "report cards completed",
            async || self.run.completed_or_failing().await,
        )
        .await?;
        let cpu = self.cpu(&daemon).since(&cpu_before);
        let peak = daemon.status_kb("VmHWM")?;
        daemon.stop().await?;

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
        let journal_secs = sqlx::query_scalar(
            "SELECT EXTRACT(EPOCH FROM max(a.finished_at) - min(a.started_at))::float8
               FROM job_attempts a WHERE a.job_id = ANY($1)",
        )
        .bind(&ids)
        .fetch_one(&self.run.pg)
        .await
        .context("read the cards' first start and last finish")?;
        report.journal_rate(
            format!("{label}: cards/s (journal: first start to last finish)"),
            n as u64,
            "cards",
            journal_secs,
        );
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
        let mut pipeline = self.run.pipeline().await?;
        let mut ids = Vec::with_capacity(n);
        for batch in attempts.chunks(ENQUEUE_BATCH) {
            let jobs = batch.iter().map(|&i| ExportReportPdf {
                attempt_id: attempt_id(i),
            });
            ids.extend(pipeline.enqueue(jobs).await?);
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
        let row = self.run.job(id).await?;
        let row = row.with_context(|| format!("job {id} is not in the journal"))?;
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
            path.parent() == Some(self.exports),
            "{} is not in the export directory {}",
            path.display(),
            self.exports.display()
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

impl SeedRows {
    /// `sql`, an INSERT of the rows into a table of the test's attempts, with what both such
    /// tables start with bound: $1 the test, $2 the attempts' ids, $3 their candidates.
    fn insert(&self, sql: &'static str) -> Query<'static, Postgres, PgArguments> {
        sqlx::query(sql)
            .bind(TEST_ID)
            .bind(&self.ids)
            .bind(&self.candidates)
    }
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

/// The shipped `[queues.exports]` and fonts (config.toml); the run's export directory and
/// concurrency come from the environment.
fn config_toml() -> String {
    common::config_toml(
        "exports",
        EXPORTS_TABLE,
        common::queue_table("exports", 4, "15m", 3),
    )
}

/// The shipped `[exports]` table (its fonts are the defaults, the Noto fonts) but for the
/// directory, which comes from the environment.
const EXPORTS_TABLE: &str = r#"[exports]
directory = "/nonexistent/overridden-by-the-environment"

"#;
