//! Search indexing: `cargo bench --bench search`.
//!
//! How fast the release daemon writes documents into the Postgres backend, rebuilds a whole
//! index, and how fast `quizworker_search` answers over it, with real Redis and Postgres (README
//! "Search", docs/SEARCH.md). Documents are questions of about 1 KB (BENCH_DOC_BYTES): a title,
//! a text, four options and a test id, the words drawn (seeded, Zipf-like) from a vocabulary of
//! 50,000 words, a third of them Devanagari; the words the queries use are real English and
//! Hindi science words, each in about 0.3 to 1% of the documents, as a subject's terms are in a
//! question bank. The index is `questions`, with the shipped defaults (`simple`, strict).
//!
//! Parts:
//! 1. Upserts: BENCH_UPSERT_DOCS documents in `index.upsert` jobs of BENCH_UPSERT_BATCH each,
//!    pushed through the protocol's Lua script with the daemon stopped, then drained by a fresh
//!    `quizworker run --queues indexing` at the queue's concurrency (BENCH_CONCURRENCY).
//!    Reported: documents per second from the daemon's ready line to the last completion, and
//!    by the journal's first start and last finish. Checked: every job completed once, and the
//!    index holds every document.
//! 2. Rebuild: BENCH_REBUILD_DOCS rows in a `platform.questions` table of the run's database
//!    (read through the read-only source connection, as a platform's would be), then one
//!    `index.rebuild` job on a fresh daemon. Reported: the job's time (the journal's
//!    `duration_ms`), rows per second, and the daemon's peak RSS (VmHWM: the process only
//!    started and ran this rebuild). Checked: the index then holds exactly the source's rows.
//! 3. Search: BENCH_QUERIES calls of `quizworker_search(index, query, filters, 20, 0)` one after
//!    another over the rebuilt index, cycling through single English and Hindi words, two
//!    words, a quoted phrase, an exclusion, a typo and a filter. Reported: p50, p99 and max.
//!
//! Each run gets its own Postgres database and Redis key prefix, removed at the end.
//!
//! Knobs (environment, with defaults): BENCH_UPSERT_DOCS=50000, BENCH_UPSERT_BATCH=100,
//! BENCH_CONCURRENCY=8 (the indexing queue's, as shipped), BENCH_REBUILD_DOCS=100000,
//! BENCH_QUERIES=2000, BENCH_DOC_BYTES=1000, DATABASE_URL, REDIS_URL (as the other benches).
//!
//! Prints a Markdown report on stdout and progress on stderr; exits non-zero if anything failed.

mod common;

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use common::harness::Harness;
use common::{KnobReader, Report, Run, RunSpec, mib, per_sec, percentile, time_at};
use quizworker_jobs::JobPayload;
use quizworker_jobs::indexing::{IndexRebuild, IndexUpsert};
use serde_json::{Value, json};

/// Jobs pushed per pipeline while filling the backlog.
const ENQUEUE_BATCH: usize = 200;
/// Rows inserted per statement while seeding the source.
const SEED_BATCH: usize = 5000;
/// The aims of issue 14.
const AIM_DOCS_PER_SEC: f64 = 5000.0;
const AIM_REBUILD_SECS: f64 = 60.0;
const AIM_REBUILD_RSS_MB: f64 = 100.0;
const AIM_P99_MS: f64 = 50.0;

const ENGLISH: &[&str] = &[
    "photosynthesis",
    "gravity",
    "energy",
    "cell",
    "atom",
    "molecule",
    "plant",
    "light",
    "water",
    "force",
    "motion",
    "velocity",
    "acceleration",
    "electron",
    "proton",
    "neutron",
    "reaction",
    "acid",
    "base",
    "salt",
    "carbon",
    "oxygen",
    "nitrogen",
    "current",
    "voltage",
    "resistance",
    "magnet",
    "field",
    "wave",
    "sound",
    "heat",
    "temperature",
    "pressure",
    "volume",
    "density",
    "mass",
    "weight",
    "friction",
    "lens",
    "mirror",
    "refraction",
    "reflection",
    "organism",
    "enzyme",
    "protein",
    "gene",
    "chromosome",
    "evolution",
    "ecosystem",
    "habitat",
    "which",
    "what",
    "explain",
    "calculate",
    "the",
    "of",
    "and",
    "in",
    "is",
    "a",
    "to",
    "for",
    "find",
];
const HINDI: &[&str] = &[
    "प्रकाश",
    "संश्लेषण",
    "ऊर्जा",
    "कोशिका",
    "परमाणु",
    "अणु",
    "पौधा",
    "जल",
    "बल",
    "गति",
    "वेग",
    "त्वरण",
    "अभिक्रिया",
    "अम्ल",
    "क्षार",
    "लवण",
    "धारा",
    "विभव",
    "प्रतिरोध",
    "चुंबक",
    "तरंग",
    "ध्वनि",
    "ऊष्मा",
    "ताप",
    "दाब",
    "आयतन",
    "घनत्व",
    "द्रव्यमान",
    "भार",
    "घर्षण",
    "क्या",
    "है",
    "का",
    "की",
    "में",
    "और",
    "से",
    "ज्ञात",
    "कीजिए",
];

fn main() -> ExitCode {
    common::main("search", "bench", Knobs::read, |knobs, harness| {
        harness.report.machine(
            "Load average at start (/proc/loadavg)",
            common::load_average(),
        );
        harness.report.workload(&format!(
            "questions of about {} bytes as JSON (title, text, four options, test id), words \
             drawn (Zipf-like) from {VOCABULARY} words, a third Devanagari, among them {} \
             English and {} Hindi science words each in about 1% of the documents (the \
             queries' words); index `questions`, Postgres backend, `simple` configuration, \
             title typo-matched",
            knobs.doc_bytes,
            ENGLISH.len(),
            HINDI.len()
        ));
        run(knobs, harness);
        harness.report.machine(
            "Load average at end (/proc/loadavg)",
            common::load_average(),
        );
    })
}

struct Knobs {
    upsert_docs: usize,
    upsert_batch: usize,
    concurrency: u64,
    rebuild_docs: usize,
    queries: usize,
    doc_bytes: usize,
}

impl Knobs {
    fn read(reader: &mut KnobReader) -> Result<Knobs> {
        Ok(Knobs {
            upsert_docs: reader.read("BENCH_UPSERT_DOCS", 50_000, "")?,
            upsert_batch: reader.at_least("BENCH_UPSERT_BATCH", 100, 1, "")?,
            concurrency: reader.at_least("BENCH_CONCURRENCY", 8, 1, "")?,
            rebuild_docs: reader.read("BENCH_REBUILD_DOCS", 100_000, "")?,
            queries: reader.read("BENCH_QUERIES", 2000, "")?,
            doc_bytes: reader.at_least("BENCH_DOC_BYTES", 1000, 200, " bytes")?,
        })
    }
}

fn config_toml(knobs: &Knobs) -> String {
    common::config_toml(
        "search",
        &format!(
            r#"[search]
max_documents = {max}

[search.indexes.questions]
searchable = {{ title = "A", text = "B", options = "C" }}
typo_fields = ["title"]
filterable = ["test_id"]
source = "SELECT id, version, title, text, options, test_id FROM platform.questions"

"#,
            max = knobs.upsert_batch.max(1000)
        ),
        common::queue_table("indexing", knobs.concurrency, "5m", 5),
    )
}

fn run(knobs: &Knobs, harness: &mut Harness) {
    let spec = RunSpec::new("indexing", config_toml(knobs));
    harness.with_run(spec, async |run, report| {
        run.migrate()?;
        let bench = Bench { knobs, run };
        if knobs.upsert_docs > 0 {
            bench.upserts(report).await?;
        }
        if knobs.rebuild_docs > 0 {
            bench.rebuild(report).await?;
            if knobs.queries > 0 {
                bench.search(report).await?;
            }
        }
        Ok(())
    });
}

/// Distinct words of the vocabulary: a question bank's order of magnitude.
const VOCABULARY: u64 = 50_000;
/// The rank of the first real word (ENGLISH, then HINDI), and the ranks between two: real words
/// sit in the middle of the distribution, each in about 1% of the documents, as a subject's
/// terms are in a question bank (the synthetic words of lower ranks are the common ones).
const FIRST_REAL_RANK: u64 = 1000;
const REAL_RANK_STEP: u64 = 97;
const LATIN_SYLLABLES: [&str; 16] = [
    "ka", "to", "mi", "re", "su", "la", "po", "ni", "da", "ve", "bo", "gu", "fe", "ri", "sa", "ze",
];
const DEVANAGARI_SYLLABLES: [&str; 16] = [
    "क", "त", "मि", "रे", "सु", "ला", "पो", "नि", "द", "वे", "बो", "गु", "फे", "री", "सा", "जो",
];

/// A seeded generator of words (xorshift: the same documents every run), with a skewed
/// (Zipf-like) distribution over [`VOCABULARY`] words, a third of them Devanagari.
struct Words(u64);

impl Words {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn word(&mut self) -> String {
        let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        let rank = ((VOCABULARY as f64) * u.powf(2.5)) as u64;
        if rank >= FIRST_REAL_RANK && (rank - FIRST_REAL_RANK).is_multiple_of(REAL_RANK_STEP) {
            let i = ((rank - FIRST_REAL_RANK) / REAL_RANK_STEP) as usize;
            if let Some(word) = ENGLISH
                .get(i)
                .or_else(|| HINDI.get(i - ENGLISH.len().min(i)))
            {
                return (*word).to_owned();
            }
        }
        let syllables = if rank.is_multiple_of(3) {
            &DEVANAGARI_SYLLABLES
        } else {
            &LATIN_SYLLABLES
        };
        let mut word = String::new();
        let mut r = rank + 16;
        while r > 0 {
            word.push_str(syllables[(r % 16) as usize]);
            r /= 16;
        }
        word
    }

    fn text(&mut self, bytes: usize) -> String {
        let mut text = String::with_capacity(bytes + 32);
        while text.len() < bytes {
            if !text.is_empty() {
                text.push(' ');
            }
            text.push_str(&self.word());
        }
        text
    }
}

/// Document `i`, of about `bytes` bytes as JSON.
fn document(i: usize, version: u64, bytes: usize) -> Value {
    let mut words =
        Words(0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1).wrapping_mul(0x2545_F491_4F6C_DD1D));
    let title = words.text(30);
    let options: Vec<String> = (0..4).map(|_| words.text(20)).collect();
    let text = words.text(bytes.saturating_sub(250));
    json!({"id": format!("q{i}"), "version": version, "title": title, "text": text,
           "options": options, "test_id": format!("t{}", i % 100)})
}

struct Bench<'a> {
    knobs: &'a Knobs,
    run: &'a Run,
}

impl Bench<'_> {
    async fn live_documents(&self) -> Result<i64> {
        sqlx::query_scalar(
            "SELECT count(*) FROM search_documents d JOIN search_indexes i
                 ON i.name = d.index_name AND i.live_generation = d.generation
              WHERE d.index_name = 'questions' AND d.document IS NOT NULL",
        )
        .fetch_one(&self.run.pg)
        .await
        .context("count the live documents")
    }

    // -----------------------------------------------------------------------------------------
    // Part 1: upserts

    async fn upserts(&self, report: &mut Report) -> Result<()> {
        let (n, batch) = (self.knobs.upsert_docs, self.knobs.upsert_batch);
        let jobs = n.div_ceil(batch);
        eprintln!("bench: enqueueing {jobs} index.upsert jobs of {batch} documents");
        let mut pipeline = self.run.pipeline().await?;
        let mut sample_bytes = 0;
        let starts: Vec<usize> = (0..n).step_by(batch).collect();
        for chunk in starts.chunks(ENQUEUE_BATCH) {
            let payloads: Vec<IndexUpsert> = chunk
                .iter()
                .map(|&start| IndexUpsert {
                    index: "questions".into(),
                    documents: (start..(start + batch).min(n))
                        .map(|i| document(i, 1, self.knobs.doc_bytes))
                        .collect(),
                })
                .collect();
            if sample_bytes == 0 {
                sample_bytes = serde_json::to_string(&payloads[0].documents[0])?.len();
            }
            pipeline.enqueue(payloads).await?;
        }
        report.knob(
            "a document as JSON (the first)",
            format!("{sample_bytes} bytes"),
        );

        let before = self.run.completed_jobs().await?;
        let mut daemon = self.run.start_daemon("daemon-upserts").await?;
        let done = common::sample_until(
            &mut daemon,
            before,
            jobs as u64,
            "index.upsert completed",
            "index.upsert jobs completed",
            async || self.run.completed_or_failing().await,
        )
        .await?;
        let peak = daemon.status_kb("VmHWM")?;
        daemon.stop().await?;
        let secs = time_at(&done, jobs as u64);
        let rate = n as f64 / secs;
        let label = format!("Upserts, {n} documents in jobs of {batch}");
        report.figure(
            format!(
                "**{label}: documents/s** (concurrency {}, daemon ready to last completion)",
                self.knobs.concurrency
            ),
            format!("**{}** ({secs:.2} s)", per_sec(rate, "docs")),
        );
        let journal_secs = self
            .run
            .journal_secs_since(chrono::DateTime::UNIX_EPOCH)
            .await?;
        report.journal_rate(
            format!("{label}: documents/s (journal: first start to last finish)"),
            n as u64,
            "docs",
            journal_secs,
        );
        report.figure(format!("{label}: daemon peak RSS (VmHWM)"), mib(peak));
        report.figure(
            format!("{label}: aim (at least {AIM_DOCS_PER_SEC} documents/s)"),
            met(rate >= AIM_DOCS_PER_SEC).to_owned(),
        );
        self.run
            .journal_counts(IndexUpsert::KIND)
            .await?
            .ensure_each_completed_once(jobs as i64)?;
        let live = self.live_documents().await?;
        ensure!(
            live == n as i64,
            "the index holds {live} documents, not {n}"
        );
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Part 2: rebuild

    async fn rebuild(&self, report: &mut Report) -> Result<()> {
        let n = self.knobs.rebuild_docs;
        eprintln!("bench: seeding {n} rows of platform.questions");
        sqlx::raw_sql(
            "CREATE SCHEMA platform;
             CREATE TABLE platform.questions (id text PRIMARY KEY, version bigint NOT NULL,
                 title text NOT NULL, text text NOT NULL, options jsonb NOT NULL,
                 test_id text NOT NULL)",
        )
        .execute(&self.run.pg)
        .await
        .context("create the source table")?;
        for start in (0..n).step_by(SEED_BATCH) {
            let docs: Vec<Value> = (start..(start + SEED_BATCH).min(n))
                .map(|i| document(i, 2, self.knobs.doc_bytes))
                .collect();
            sqlx::query(
                "INSERT INTO platform.questions
                 SELECT d->>'id', (d->>'version')::bigint, d->>'title', d->>'text', d->'options',
                        d->>'test_id'
                   FROM unnest($1::jsonb[]) AS d",
            )
            .bind(&docs)
            .execute(&self.run.pg)
            .await
            .context("seed the source")?;
        }

        let before = self.run.completed_jobs().await?;
        let mut daemon = self
            .run
            .start_daemon_with(
                "daemon-rebuild",
                &[("PLATFORM_DATABASE_URL", self.run.db_url.clone())],
            )
            .await?;
        let idle = daemon.status_kb("VmRSS")?;
        let id = self
            .run
            .enqueue_one(&IndexRebuild {
                index: "questions".into(),
            })
            .await?;
        eprintln!("bench: rebuilding {n} documents");
        let row = self.run.wait_for_job(&mut daemon, &id).await?;
        let peak = daemon.status_kb("VmHWM")?;
        daemon.stop().await?;
        ensure!(self.run.completed_jobs().await? == before + 1);
        let secs: f64 = sqlx::query_scalar(
            "SELECT duration_ms::float8 / 1000 FROM job_attempts WHERE job_id = $1",
        )
        .bind(&id)
        .fetch_one(&self.run.pg)
        .await
        .context("read the rebuild's duration")?;
        let result = row.result.unwrap_or_default();
        let label = format!("Rebuild, {n} documents (`index.rebuild`)");
        report.figure(
            format!("**{label}: time** (the journal's duration_ms)"),
            format!("**{secs:.1} s** ({})", per_sec(n as f64 / secs, "rows")),
        );
        report.figure(
            format!(
                "**{label}: daemon peak RSS** (VmHWM; {} idle before)",
                mib(idle)
            ),
            format!("**{}**", mib(peak)),
        );
        report.figure(
            format!("{label}: aim (under {AIM_REBUILD_SECS} s and {AIM_REBUILD_RSS_MB} MB)"),
            met(secs < AIM_REBUILD_SECS && (peak as f64 / 1024.0) < AIM_REBUILD_RSS_MB).to_owned(),
        );
        ensure!(
            result["rows"] == n && result["documents"] == n,
            "the rebuild read {} rows and left {} documents, not {n}",
            result["rows"],
            result["documents"]
        );
        let live = self.live_documents().await?;
        ensure!(
            live == n as i64,
            "the index holds {live} documents, not {n}"
        );
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Part 3: search

    async fn search(&self, report: &mut Report) -> Result<()> {
        let queries: [(&str, Value); 8] = [
            ("photosynthesis", json!({})),
            ("प्रकाश", json!({})),
            ("electron reaction", json!({})),
            ("\"electron reaction\"", json!({})),
            ("energy -heat", json!({})),
            ("photosynthsis", json!({})),
            ("gravity", json!({"test_id": "t7"})),
            ("घनत्व दाब", json!({})),
        ];
        let n = self.knobs.queries;
        eprintln!(
            "bench: {n} searches over {} documents",
            self.knobs.rebuild_docs
        );
        let mut times = Vec::with_capacity(n);
        let mut hits = 0u64;
        for i in 0..n {
            let (query, filters) = &queries[i % queries.len()];
            let started = Instant::now();
            let rows: Vec<(String,)> =
                sqlx::query_as("SELECT id FROM quizworker_search('questions', $1, $2, 20, 0)")
                    .bind(query)
                    .bind(filters)
                    .fetch_all(&self.run.pg)
                    .await
                    .context("quizworker_search")?;
            times.push(started.elapsed().as_secs_f64() * 1000.0);
            hits += rows.len() as u64;
        }
        times.sort_by(f64::total_cmp);
        let p99 = percentile(&times, 0.99);
        let label = format!(
            "Search, {n} queries over {} documents (`quizworker_search`, 20 hits a page)",
            self.knobs.rebuild_docs
        );
        report.figure(
            format!("**{label}: p50 / p99 / max**"),
            format!(
                "**{:.1} ms / {p99:.1} ms** / {:.1} ms",
                percentile(&times, 0.5),
                percentile(&times, 1.0)
            ),
        );
        report.figure(
            format!("{label}: aim (p99 under {AIM_P99_MS} ms)"),
            met(p99 < AIM_P99_MS).to_owned(),
        );
        ensure!(hits > 0, "no query found anything");
        Ok(())
    }
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "**not met**" }
}
