//! Email: `cargo bench --bench email`.
//!
//! How fast the release daemon sends the `email.*` jobs (README "Email", docs/EMAIL.md) to a real
//! SMTP server, with real Redis and Postgres. The server is tests/smtp_sink.py (Debian's aiosmtpd,
//! run by /usr/bin/python3) in its count-only mode, which keeps each message's envelope, size and
//! time of arrival; the bench starts one for each part, on a free port of 127.0.0.1 (plain SMTP,
//! no TLS, no authentication, no DKIM). Every message is rendered from one template the bench
//! writes (a subject and an HTML body, the text part derived from it; names in Latin, Devanagari
//! and Chinese in turn; about 1.3 KB a message) and goes through the delivery ledger
//! (`email_deliveries`: `sending` before its SMTP transaction, its outcome right after).
//!
//! Parts:
//! 0. SMTP alone, the ceiling the server and the mailer set: BENCH_EMAIL_SENDS messages from the
//!    daemon's own mailer (`quizworker::families::email::smtp::Mailer`, lettre's pool) driven
//!    from the bench, each rendered, built and sent as an `email.send` job's, at the queue's
//!    concurrency over a pool of the same size, with no Redis, journal or ledger. Reported:
//!    messages per second at the server, CPU per message. Checked: one message for each address.
//! 1. `email.send`: with the daemon stopped, BENCH_EMAIL_SENDS one-recipient jobs are pushed
//!    through the protocol's Lua script (docs/PROTOCOL.md); a fresh daemon drains them at the
//!    emails queue's concurrency (BENCH_EMAILS_CONCURRENCY) over BENCH_SMTP_POOL pooled
//!    connections. Reported: messages per second at the server (its count over the time from the
//!    first message's arrival to the last's), jobs per second by the journal (first start to last
//!    finish), CPU per message of the daemon, its Postgres backends, Redis and the server, and the
//!    daemon's peak RSS. Checked: every job completed with one attempt, the server got exactly
//!    one message for each address, and the ledger has a `sent` row for each job.
//! 2. `email.bulk`: one job of BENCH_BULK_RECIPIENTS recipients, each with their own variables,
//!    run by a fresh daemon (BENCH_BULK_CONCURRENCY messages in flight). Reported: messages per
//!    second at the server, the job's handler time (the journal's `duration_ms`), CPU per
//!    message, the daemon's peak RSS (VmHWM: it started and ran only this job). Checked: the
//!    server got exactly one message for each recipient, the ledger has a `sent` row for each,
//!    the job's result counts them all sent.
//! 3. The rate limit: part 2 again with BENCH_RATE_RECIPIENTS recipients and `rate =
//!    BENCH_EMAIL_RATE` in `[queues.emails]`. Reported: the rate at the server (first arrival to
//!    last), its deviation from the limit, and the most messages that arrived within any one
//!    second. Checked as part 2.
//!
//! Each part also reads the daemon's /metrics before stopping it (`http.listen` on port 0: the
//! address is read from its log): the histogram `quizworker_email_unrecorded_seconds`, the time
//! from the server's 250 to the ledger's record of it, the window in which a crash makes a
//! message go twice (docs/EMAIL.md). Reported: its count (checked: one per message), mean, and
//! p50 and p99 estimated from its buckets (linear within a bucket, as Prometheus'
//! `histogram_quantile`).
//!
//! Each run gets its own Postgres database, Redis key prefix and templates directory, all removed
//! at the end, so it can share servers with the tests or a running deployment.
//!
//! Knobs (environment, with defaults): BENCH_EMAIL_SENDS=5000 (parts 0 and 1),
//! BENCH_BULK_RECIPIENTS=10000, BENCH_RATE_RECIPIENTS=1000 (0 skips a part),
//! BENCH_EMAIL_RATE=200/s (part 3's limit), BENCH_EMAILS_CONCURRENCY=16, BENCH_SMTP_POOL=8,
//! BENCH_BULK_CONCURRENCY=8 (the emails queue's concurrency, `email.smtp.pool_size` and
//! `email.bulk_concurrency` as shipped),
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres (any database on the server: the
//! run's own database is created next to it), REDIS_URL=redis://127.0.0.1:6379. Needs
//! /usr/bin/python3 with aiosmtpd (scripts/services.sh installs it).
//!
//! Prints a Markdown report on stdout and progress on stderr; exits non-zero if anything failed
//! (the report then shows what was measured before the failure). Runs on the harness the benches
//! share (benches/common/harness.rs).

mod common;

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, ensure};
use chrono::Utc;
use common::cpu::{CpuTimes, Watched};
use common::harness::Harness;
use common::{Daemon, KnobReader, Report, Run, RunSpec, mib, per_sec, thousands, time_at};
use futures::{StreamExt, TryStreamExt};
use quizworker::config::{Rate, RateUnit, SmtpSecurity};
use quizworker::families::email::smtp::{Mailer, Outgoing};
use quizworker::families::email::templates as email_templates;
use quizworker_jobs::JobPayload;
use quizworker_jobs::email::headers::message_id;
use quizworker_jobs::email::{BulkRecipient, EmailBulk, EmailSend, Mailbox};
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// The SMTP server, and the interpreter that has aiosmtpd (the `python3` on PATH may not).
const SINK_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/smtp_sink.py");
const PYTHON: &str = "/usr/bin/python3";
/// The server must say `listening on PORT` within this.
const SINK_DEADLINE: Duration = Duration::from_secs(30);
/// Envelopes per pipeline when filling the backlog of `email.send` jobs.
const ENQUEUE_BATCH: usize = 500;
/// `limits.max_job_bytes` of the run. A bulk job of 10,000 recipients with variables of their
/// own (a name, a score, a rank, an attempt and three section marks: about 270 bytes each) is
/// 2.7 MB, over the shipped 1 MiB, which config.toml sizes for recipients without variables of
/// their own (~100 B each); a platform that sends such jobs raises it the same way.
const MAX_JOB_BYTES: u64 = 16 * 1024 * 1024;
/// The sender of every message.
const FROM: &str = "Exam Results <results@exams.example>";
/// The template every message is rendered from (see [`write_templates`]).
const TEMPLATE: &str = "result-ready";
/// The aims of the email issue.
const AIM_MESSAGES_PER_SEC: f64 = 1000.0;
const AIM_RATE_DEVIATION: f64 = 0.05;
const AIM_RSS_MB: f64 = 100.0;

fn main() -> ExitCode {
    common::main("email", "bench", Knobs::read, |knobs, harness| {
        harness.report.machine(
            "Load average at start (/proc/loadavg)",
            common::load_average(),
        );
        harness.report.machine(
            "SMTP server (tests/smtp_sink.py --count-only)",
            sink_version(),
        );
        harness.report.workload(
            "one template (`subject.txt`, `body.html`; the text part derived from the HTML) \
             with a candidate's name, score, rank and section marks; names in Latin, Devanagari \
             and Chinese in turn; one recipient a message; plain SMTP on loopback, no DKIM; bulk \
             mail with `List-Unsubscribe`",
        );
        run(knobs, harness);
        harness.report.machine(
            "Load average at end (/proc/loadavg)",
            common::load_average(),
        );
    })
}

/// aiosmtpd's and Python's versions.
fn sink_version() -> String {
    let script = "import aiosmtpd, sys; print('aiosmtpd', aiosmtpd.__version__, 'on Python', \
                  sys.version.split()[0])";
    common::command_line(PYTHON, &["-c", script])
}

/// Sets up, runs the parts, cleans up.
fn run(knobs: &Knobs, harness: &mut Harness) {
    let templates = match write_templates() {
        Ok(templates) => templates,
        Err(e) => return harness.fail("setup", e),
    };
    let spec = RunSpec::new("emails", config_toml())
        .env("QUIZWORKER_EMAIL__TEMPLATES", templates.path().display())
        // /metrics on a port of the system's choosing, read from the daemon's log.
        .env("QUIZWORKER_HTTP__LISTEN", "127.0.0.1:0")
        .env("QUIZWORKER_LIMITS__MAX_JOB_BYTES", MAX_JOB_BYTES)
        // The run's settings, over the shipped ones.
        .env("QUIZWORKER_QUEUES__EMAILS__CONCURRENCY", knobs.concurrency)
        .env("QUIZWORKER_EMAIL__SMTP__POOL_SIZE", knobs.pool)
        .env("QUIZWORKER_EMAIL__BULK_CONCURRENCY", knobs.bulk_concurrency);
    harness.report.knob(
        "daemon config (temp file)",
        format!(
            "`[email]` and `[queues.emails]` as shipped but the above; \
             limits.max_job_bytes = {MAX_JOB_BYTES} (a 10,000-recipient bulk job is 2.7 MB)"
        ),
    );
    harness.with_run(spec, async |run, report| {
        let bench = Bench {
            knobs,
            run,
            templates: templates.path(),
        };
        bench.run(report).await
    });
    // The templates directory goes with `templates` (a TempDir), after the run's cleanup.
}

/// What the run is asked to do, from the environment.
struct Knobs {
    sends: usize,
    bulk_recipients: usize,
    rate_recipients: usize,
    rate: Rate,
    concurrency: u64,
    pool: u64,
    bulk_concurrency: u64,
}

impl Knobs {
    fn read(reader: &mut KnobReader) -> Result<Knobs> {
        let knobs = Knobs {
            sends: reader.read("BENCH_EMAIL_SENDS", 5000, "")?,
            bulk_recipients: reader.read("BENCH_BULK_RECIPIENTS", 10_000, "")?,
            rate_recipients: reader.read("BENCH_RATE_RECIPIENTS", 1000, "")?,
            rate: reader.read("BENCH_EMAIL_RATE", Rate::new(200, RateUnit::Second)?, "")?,
            concurrency: reader.at_least("BENCH_EMAILS_CONCURRENCY", 16, 1, "")?,
            pool: reader.at_least("BENCH_SMTP_POOL", 8, 1, "")?,
            bulk_concurrency: reader.at_least("BENCH_BULK_CONCURRENCY", 8, 1, "")?,
        };
        ensure!(
            knobs.sends > 0 || knobs.bulk_recipients > 0 || knobs.rate_recipients > 0,
            "BENCH_EMAIL_SENDS, BENCH_BULK_RECIPIENTS and BENCH_RATE_RECIPIENTS are all 0: \
             nothing to measure"
        );
        for (name, n) in [
            ("BENCH_EMAIL_SENDS", knobs.sends),
            ("BENCH_BULK_RECIPIENTS", knobs.bulk_recipients),
            ("BENCH_RATE_RECIPIENTS", knobs.rate_recipients),
        ] {
            // A rate at the server needs two arrivals; email.max_bulk_recipients as shipped.
            ensure!(n != 1, "{name} must be 0 or at least 2");
            ensure!(
                n <= 10_000 || name == "BENCH_EMAIL_SENDS",
                "{name}: a bulk job has at most 10,000 recipients (email.max_bulk_recipients)"
            );
        }
        Ok(knobs)
    }
}

// ---------------------------------------------------------------------------------------------
// The template and the messages

/// Candidates' names by number, one in three in each script: two in three display names are
/// RFC 2047 words and two in three bodies are not ASCII.
const NAMES: [&str; 3] = ["Asha Verma", "नेहा शर्मा", "王芳"];
const SECTIONS: [&str; 3] = ["Physics", "Chemistry", "Mathematics"];
const TEST_NAME: &str = "JEE Advanced Mock 3";
const MAX_MARKS: u32 = 360;

/// The templates directory: one template, `result-ready`, whose text part is derived from its
/// HTML (html2text). Removed when dropped.
fn write_templates() -> Result<tempfile::TempDir> {
    let dir = tempfile::tempdir().context("cannot create the templates directory")?;
    let files = [
        (
            "result-ready/subject.txt",
            "{{ test_name }}: your result, rank {{ rank }}",
        ),
        (
            "result-ready/body.html",
            r#"<html><body>
<p>Dear {{ name }},</p>
<p>Your result for <b>{{ test_name }}</b>: <b>{{ score }}</b> of {{ max_marks }}, rank {{ rank }}.</p>
<ul>{% for section in sections %}<li>{{ section.name }}: {{ section.marks }}</li>{% endfor %}</ul>
<p><a href="https://exams.example/results/{{ attempt }}">Your answers</a></p>
</body></html>
"#,
        ),
    ];
    for (path, text) in files {
        let path = dir.path().join(path);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
    }
    Ok(dir)
}

/// Recipient `i` of a part (`part` keeps the parts' addresses apart).
fn address(part: &str, i: usize) -> String {
    format!("{part}-{i:05}@candidates.example")
}

fn name(i: usize) -> String {
    format!("{} {i:05}", NAMES[i % NAMES.len()])
}

/// The variables of candidate `i`'s result.
fn candidate_vars(i: usize) -> Map<String, Value> {
    let marks: Vec<u32> = (0..3).map(|s| ((i * 37 + s * 53) % 121) as u32).collect();
    let vars = json!({
        "name": name(i),
        "score": marks.iter().sum::<u32>(),
        "rank": i + 1,
        "attempt": format!("att-{i:06}"),
        "sections": SECTIONS.iter().zip(&marks)
            .map(|(name, marks)| json!({"name": name, "marks": marks}))
            .collect::<Vec<_>>(),
    });
    let Value::Object(vars) = vars else {
        unreachable!("an object")
    };
    vars
}

/// Variables every message shares.
fn shared_vars() -> Map<String, Value> {
    let mut vars = Map::new();
    vars.insert("test_name".into(), json!(TEST_NAME));
    vars.insert("max_marks".into(), json!(MAX_MARKS));
    vars
}

/// Candidate `i`'s result as one `email.send`.
fn send_job(i: usize) -> EmailSend {
    let mut vars = shared_vars();
    vars.extend(candidate_vars(i));
    EmailSend {
        template: TEMPLATE.into(),
        locale: None,
        to: vec![Mailbox {
            email: address("send", i),
            name: Some(name(i)),
        }],
        cc: Vec::new(),
        bcc: Vec::new(),
        reply_to: None,
        vars,
        attachments: Vec::new(),
    }
}

/// `n` candidates' results as one `email.bulk`, each recipient with their own variables.
fn bulk_job(part: &str, n: usize) -> EmailBulk {
    EmailBulk {
        template: TEMPLATE.into(),
        locale: None,
        vars: shared_vars(),
        recipients: (0..n)
            .map(|i| BulkRecipient {
                email: address(part, i),
                name: Some(name(i)),
                locale: None,
                vars: candidate_vars(i),
            })
            .collect(),
        reply_to: None,
    }
}

// ---------------------------------------------------------------------------------------------
// The run

/// One run: its own database, Redis prefix, config file and templates directory.
struct Bench<'a> {
    knobs: &'a Knobs,
    run: &'a Run,
    /// The templates directory the daemons read.
    templates: &'a Path,
}

impl Bench<'_> {
    async fn run(&self, report: &mut Report) -> Result<()> {
        self.run.migrate()?;
        if self.knobs.sends > 0 {
            self.smtp_alone(report).await?;
            self.send(report).await?;
        }
        let mut unlimited = None;
        if self.knobs.bulk_recipients > 0 {
            let n = self.knobs.bulk_recipients;
            unlimited = Some(self.bulk("bulk", n, None, None, report).await?);
        }
        if self.knobs.rate_recipients > 0 {
            let n = self.knobs.rate_recipients;
            let rate = Some(self.knobs.rate);
            self.bulk("rate", n, rate, unlimited, report).await?;
        }
        Ok(())
    }

    /// A daemon sending to `sink`, with `env` over the run's settings.
    async fn start_daemon(
        &self,
        log_name: &str,
        sink: &Sink,
        env: &[(&str, String)],
    ) -> Result<Daemon> {
        let mut env = env.to_vec();
        env.push(("QUIZWORKER_EMAIL__SMTP__PORT", sink.port.to_string()));
        self.run.start_daemon_with(log_name, &env).await
    }

    // -----------------------------------------------------------------------------------------
    // Part 1: email.send

    /// The ceiling the server and the mailer set: the daemon's own mailer (lettre's pool, in
    /// `quizworker::families::email::smtp`) driven from the bench, each message rendered from the
    /// same template, built and sent as a job's is, at the queue's concurrency over a pool of
    /// the same size, but with no Redis, journal or ledger.
    async fn smtp_alone(&self, report: &mut Report) -> Result<()> {
        let n = self.knobs.sends;
        let concurrency = self.knobs.concurrency as usize;
        eprintln!("bench: {n} messages from the bench's own mailer, concurrency {concurrency}");
        let sink = Sink::start()?;
        let mut config = quizworker::config::Config::default();
        config.email.from = FROM.into();
        config.email.smtp.host = "127.0.0.1".into();
        config.email.smtp.port = sink.port;
        config.email.smtp.security = SmtpSecurity::Plain;
        config.email.smtp.pool_size = u32::try_from(self.knobs.pool)?;
        let mailer = Mailer::new(&config.email)?;
        let templates = email_templates::load(self.templates, "en")?;
        let cpu_before = CpuTimes::now(sink.watched(std::process::id(), &self.run.db_name));
        futures::stream::iter(0..n)
            .map(|i| {
                let (mailer, templates) = (&mailer, &templates);
                async move {
                    let job = send_job(i);
                    let content = templates.render(TEMPLATE, None, &Value::Object(job.vars))?;
                    let to: lettre::message::Mailbox =
                        format!("{} <{}>", name(i), address("alone", i)).parse()?;
                    let out = Outgoing {
                        message_id: message_id("alone", i as u32, "exams.example"),
                        to: std::slice::from_ref(&to),
                        cc: &[],
                        bcc: &[],
                        reply_to: None,
                        content: &content,
                        attachments: &[],
                        unsubscribe: None,
                    };
                    let message = mailer.build(&out)?;
                    mailer.send(message).await?;
                    anyhow::Ok(())
                }
            })
            .buffer_unordered(concurrency)
            .try_collect::<()>()
            .await
            .context("a message from the bench's own mailer")?;
        let cpu = cpu_before.until(&CpuTimes::now(
            sink.watched(std::process::id(), &self.run.db_name),
        ));

        let label = format!(
            "Send, SMTP alone: {} messages from the daemon's mailer in the bench (concurrency \
             {concurrency}, pool {}; no Redis, journal or ledger)",
            thousands(n as u64),
            self.knobs.pool
        );
        let arrivals = Arrivals::read(&sink)?;
        arrivals.report_rate(report, &label, false);
        if let Some(cores) = cpu {
            report.figure(
                format!("{label}: CPU per message (\"daemon\": the bench)"),
                cores.per_unit(n as u64),
            );
        }
        let addresses: Vec<String> = (0..n).map(|i| address("alone", i)).collect();
        arrivals.ensure_one_each(&addresses)
    }

    async fn send(&self, report: &mut Report) -> Result<()> {
        let n = self.knobs.sends;
        eprintln!("bench: enqueueing {n} email.send jobs");
        let backlog_from = Utc::now();
        let mut pipeline = self.run.pipeline().await?;
        let mut ids = Vec::with_capacity(n);
        for from in (0..n).step_by(ENQUEUE_BATCH) {
            let to = (from + ENQUEUE_BATCH).min(n);
            ids.extend(pipeline.enqueue((from..to).map(send_job)).await?);
        }
        self.run.ensure_waiting(n as u64).await?;
        report.figure(
            "Send jobs enqueued (pipelined EVALSHA)",
            format!(
                "{} one-recipient jobs, {:.1} KB each on average",
                thousands(n as u64),
                pipeline.bytes as f64 / n as f64 / 1000.0
            ),
        );

        eprintln!(
            "bench: sending {n} email.send jobs, concurrency {}, pool {}",
            self.knobs.concurrency, self.knobs.pool
        );
        let sink = Sink::start()?;
        let before = self.run.completed_or_failing().await?;
        let commits_before = self.commits().await?;
        let mut daemon = self.start_daemon("daemon-send", &sink, &[]).await?;
        let cpu_before = CpuTimes::now(sink.watched(daemon.child.id(), &self.run.db_name));
        let done = common::sample_until(
            &mut daemon,
            before,
            n as u64,
            "email.send job completed",
            "jobs completed",
            async || self.run.completed_or_failing().await,
        )
        .await?;
        let cpu = cpu_before.until(&CpuTimes::now(
            sink.watched(daemon.child.id(), &self.run.db_name),
        ));
        let peak = daemon.status_kb("VmHWM")?;
        let window = unrecorded_window(&daemon).await?;
        daemon.stop().await?;
        let commits = self.commits().await? - commits_before;

        let label = format!(
            "Send, {} jobs (`email.send`, concurrency {}, pool {})",
            thousands(n as u64),
            self.knobs.concurrency,
            self.knobs.pool
        );
        let arrivals = Arrivals::read(&sink)?;
        let at_server = arrivals.report_rate(report, &label, true);
        let total_secs = time_at(&done, n as u64);
        report.figure(
            format!("{label}: jobs/s, daemon ready to last completion"),
            format!(
                "{} ({total_secs:.2} s)",
                per_sec(n as f64 / total_secs, "jobs")
            ),
        );
        let journal_secs = self.run.journal_secs_since(backlog_from).await?;
        report.journal_rate(
            format!("{label}: jobs/s (journal: first start to last finish)"),
            n as u64,
            "jobs",
            journal_secs,
        );
        if let Some(cores) = cpu {
            report.figure(
                format!("{label}: CPU, cores busy on average (ready to last completion)"),
                cores.describe(),
            );
            report.figure(
                format!("{label}: CPU per message"),
                cores.per_unit(n as u64),
            );
        }
        report.commits(&label, commits, n as u64);
        report.figure(format!("{label}: peak RSS (VmHWM)"), mib(peak));
        report.figure(
            format!("{label}: message size at the server"),
            arrivals.sizes(),
        );
        window.report(&label, n as u64, report)?;
        report.figure(
            format!("{label}: aim (at least {AIM_MESSAGES_PER_SEC} messages/s)"),
            met(at_server >= AIM_MESSAGES_PER_SEC).to_owned(),
        );

        let journal = self.run.journal_counts(EmailSend::KIND).await?;
        journal.ensure_each_completed_once(n as i64)?;
        let addresses: Vec<String> = (0..n).map(|i| address("send", i)).collect();
        arrivals.ensure_one_each(&addresses)?;
        let sent = self.ledger_sent(&ids).await?;
        ensure!(
            sent == n as i64,
            "the ledger has {sent} `sent` rows for the {n} jobs"
        );
        report.figure(
            format!("{label}: check"),
            format!(
                "{}; the server got one message for each of the {n} addresses; the ledger has \
                 {sent} `sent` rows",
                journal.outcomes()
            ),
        );
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Parts 2 and 3: email.bulk, without and with a rate limit

    /// One `email.bulk` job of `n` recipients (addresses `part-NNNNN@...`), run by a fresh
    /// daemon, under `rate` if given (`unlimited`: part 2's rate, if it ran). Returns the rate
    /// at the server.
    async fn bulk(
        &self,
        part: &str,
        n: usize,
        rate: Option<Rate>,
        unlimited: Option<f64>,
        report: &mut Report,
    ) -> Result<f64> {
        eprintln!("bench: enqueueing one email.bulk job of {n} recipients");
        let mut pipeline = self.run.pipeline().await?;
        let ids = pipeline.enqueue([bulk_job(part, n)]).await?;
        let id = ids.first().context("no job id")?;
        let label = match rate {
            None => format!(
                "Bulk, {} recipients (`email.bulk`, bulk_concurrency {}, pool {})",
                thousands(n as u64),
                self.knobs.bulk_concurrency,
                self.knobs.pool
            ),
            Some(rate) => format!(
                "Rate limit, bulk of {} recipients at `rate = \"{rate}\"`",
                thousands(n as u64)
            ),
        };
        report.figure(
            format!("{label}: the job"),
            format!("{:.2} MB enqueued", pipeline.bytes as f64 / 1e6),
        );

        eprintln!("bench: sending the bulk job");
        let sink = Sink::start()?;
        let env: Vec<(&str, String)> = rate
            .iter()
            .map(|rate| ("QUIZWORKER_QUEUES__EMAILS__RATE", rate.to_string()))
            .collect();
        let mut daemon = self
            .start_daemon(&format!("daemon-{part}"), &sink, &env)
            .await?;
        let idle = daemon.status_kb("VmRSS")?;
        let commits_before = self.commits().await?;
        let cpu_before = CpuTimes::now(sink.watched(daemon.child.id(), &self.run.db_name));
        let started = Instant::now();
        let row = self.run.wait_for_job(&mut daemon, id).await?;
        let wall = started.elapsed().as_secs_f64();
        let cpu = cpu_before.until(&CpuTimes::now(
            sink.watched(daemon.child.id(), &self.run.db_name),
        ));
        let peak = daemon.status_kb("VmHWM")?;
        let window = unrecorded_window(&daemon).await?;
        daemon.stop().await?;
        let commits = self.commits().await? - commits_before;

        let arrivals = Arrivals::read(&sink)?;
        let at_server = arrivals.report_rate(report, &label, true);
        let handler_secs = self.handler_secs(id).await?;
        report.figure(
            format!("{label}: the job's handler time (journal `duration_ms`)"),
            format!(
                "{handler_secs:.2} s ({}); daemon ready to completion seen: {wall:.2} s",
                per_sec(n as f64 / handler_secs, "messages")
            ),
        );
        match rate {
            None => {
                if let Some(cores) = cpu {
                    report.figure(
                        format!("{label}: CPU per message"),
                        cores.per_unit(n as u64),
                    );
                }
                report.commits(&label, commits, n as u64);
                let rss_mb = peak as f64 * 1024.0 / 1e6;
                report.figure(
                    format!(
                        "**{label}: peak RSS** (VmHWM of a daemon that started and ran only \
                         this job)"
                    ),
                    format!("**{}** (idle after start: {})", mib(peak), mib(idle)),
                );
                report.figure(
                    format!(
                        "{label}: aim (at least {AIM_MESSAGES_PER_SEC} messages/s, RSS under \
                         {AIM_RSS_MB} MB)"
                    ),
                    format!(
                        "{} ({}); {rss_mb:.1} MB ({})",
                        per_sec(at_server, "messages"),
                        met(at_server >= AIM_MESSAGES_PER_SEC),
                        met(rss_mb < AIM_RSS_MB)
                    ),
                );
            }
            Some(rate) => {
                let limit = rate.per_second();
                let deviation = at_server / limit - 1.0;
                report.figure(
                    format!(
                        "**{label}: deviation from the limit** (aim: within {:.0}%)",
                        AIM_RATE_DEVIATION * 100.0
                    ),
                    format!(
                        "**{:+.2}%** ({at_server:.1} against {limit}/s; {})",
                        deviation * 100.0,
                        met(deviation.abs() <= AIM_RATE_DEVIATION)
                    ),
                );
                report.figure(
                    format!("{label}: the most messages that arrived within one second"),
                    format!("{} (any window of 1 s)", arrivals.most_in(1.0)),
                );
                if let Some(unlimited) = unlimited.filter(|u| *u < limit) {
                    report.note(format!(
                        "the rate limit's part cannot show whether the limit holds: without a \
                         limit the same settings sent only {} (part 2), under the limit of \
                         {limit}/s",
                        per_sec(unlimited, "messages")
                    ));
                }
            }
        }
        window.report(&label, n as u64, report)?;

        let result = row.result.context("the bulk job recorded no result")?;
        ensure!(
            result["sent"] == json!(n) && result["failed"] == json!(0),
            "the bulk job's result: {result}"
        );
        let addresses: Vec<String> = (0..n).map(|i| address(part, i)).collect();
        arrivals.ensure_one_each(&addresses)?;
        let sent = self.ledger_sent(&ids).await?;
        ensure!(
            sent == n as i64,
            "the ledger has {sent} `sent` rows for the {n} recipients"
        );
        report.figure(
            format!("{label}: check"),
            format!(
                "completed; the server got one message for each of the {n} recipients; the \
                 ledger has {sent} `sent` rows; the result counts {} sent",
                result["sent"]
            ),
        );
        Ok(at_server)
    }

    // -----------------------------------------------------------------------------------------
    // The journal and the ledger

    /// The handler's time of a job's (only) attempt, in seconds.
    async fn handler_secs(&self, id: &str) -> Result<f64> {
        let ms: i64 = sqlx::query_scalar("SELECT duration_ms FROM job_attempts WHERE job_id = $1")
            .bind(id)
            .fetch_one(&self.run.pg)
            .await
            .context("read the job's attempt")?;
        Ok(ms.max(1) as f64 / 1000.0)
    }

    /// Transactions committed so far in the run's database (`pg_stat_database`). A backend
    /// reports its counts at the latest when it exits: read after the daemon has stopped.
    async fn commits(&self) -> Result<i64> {
        sqlx::query_scalar(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
        )
        .fetch_one(&self.run.pg)
        .await
        .context("read pg_stat_database")
    }

    /// The ledger's `sent` rows of `jobs`; fails if it has a row of another status.
    async fn ledger_sent(&self, jobs: &[String]) -> Result<i64> {
        let (sent, other): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE status = 'sent'),
                    count(*) FILTER (WHERE status <> 'sent')
               FROM email_deliveries WHERE job_id = ANY($1)",
        )
        .bind(jobs)
        .fetch_one(&self.run.pg)
        .await
        .context("count the ledger's rows")?;
        ensure!(
            other == 0,
            "the ledger has {other} rows that are not `sent`"
        );
        Ok(sent)
    }
}

// ---------------------------------------------------------------------------------------------
// The SMTP server

/// tests/smtp_sink.py in count-only mode on a free port of 127.0.0.1: each message it accepts is
/// a line of its out file (envelope, size, time of arrival). Killed when dropped; it also exits
/// when its stdin closes, so a bench that dies leaves no server behind.
struct Sink {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

/// A line of the server's out file.
#[derive(Deserialize)]
struct Arrival {
    rcpt_tos: Vec<String>,
    size: u64,
    /// Seconds since the epoch, on this machine's clock.
    received_at: f64,
}

impl Sink {
    /// The processes whose CPU a part reports: `worker` (the daemon, or the bench itself) and
    /// this server.
    fn watched<'a>(&self, worker: u32, db_name: &'a str) -> Watched<'a> {
        Watched {
            daemon: worker,
            other: Some(("the SMTP server", self.child.id())),
            db_name,
        }
    }

    fn start() -> Result<Sink> {
        let dir = tempfile::tempdir().context("cannot create the SMTP server's dir")?;
        let log = fs::File::create(dir.path().join("sink.log"))?;
        let mut child = Command::new(PYTHON)
            .arg(SINK_SCRIPT)
            .args(["--port", "0", "--count-only", "--out"])
            .arg(dir.path().join("messages.jsonl"))
            // It exits when this pipe closes: when `child` is dropped, or the bench dies.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot run {PYTHON} (scripts/services.sh installs it)"))?;
        let stdout = child.stdout.take().context("the server's stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let mut sink = Sink {
            child,
            port: 0,
            dir,
        };
        let line = rx.recv_timeout(SINK_DEADLINE).map_err(|_| {
            anyhow!(
                "the SMTP server did not say `listening on PORT` in {SINK_DEADLINE:?}:\n{}",
                sink.log_text()
            )
        })?;
        sink.port = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|port| port.parse().ok())
            .with_context(|| {
                format!(
                    "the SMTP server said {line:?}, not `listening on PORT`:\n{}",
                    sink.log_text()
                )
            })?;
        Ok(sink)
    }

    /// What it wrote on stderr (aiosmtpd's errors).
    fn log_text(&self) -> String {
        fs::read_to_string(self.dir.path().join("sink.log")).unwrap_or_default()
    }

    /// Every message accepted so far, in the order written.
    fn arrivals(&self) -> Result<Vec<Arrival>> {
        let path = self.dir.path().join("messages.jsonl");
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e).context("read the SMTP server's out file"),
        };
        // Each line is written whole and flushed; one without its newline is being written.
        text.split_inclusive('\n')
            .filter(|line| line.ends_with('\n'))
            .map(|line| {
                serde_json::from_str(line)
                    .with_context(|| format!("the SMTP server wrote a bad line: {line}"))
            })
            .collect()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the server received in a part.
struct Arrivals {
    list: Vec<Arrival>,
    /// Times of arrival, sorted.
    times: Vec<f64>,
}

impl Arrivals {
    /// Reports the rate at the server as a figure of `label` (in bold for a headline figure)
    /// and returns it.
    fn report_rate(&self, report: &mut Report, label: &str, headline: bool) -> f64 {
        let rate = self.rate();
        let bold = if headline { "**" } else { "" };
        report.figure(
            format!("{bold}{label}: messages/s at the server{bold} (first arrival to last)"),
            format!(
                "{bold}{}{bold} ({:.2} s)",
                per_sec(rate, "messages"),
                self.span()
            ),
        );
        rate
    }

    fn read(sink: &Sink) -> Result<Arrivals> {
        let list = sink.arrivals()?;
        ensure!(
            list.len() > 1,
            "the SMTP server got {} messages",
            list.len()
        );
        let mut times: Vec<f64> = list.iter().map(|a| a.received_at).collect();
        times.sort_by(f64::total_cmp);
        Ok(Arrivals { list, times })
    }

    /// Seconds from the first arrival to the last.
    fn span(&self) -> f64 {
        self.times[self.times.len() - 1] - self.times[0]
    }

    /// Messages per second: the intervals between arrivals over the span.
    fn rate(&self) -> f64 {
        (self.times.len() - 1) as f64 / self.span()
    }

    /// The most arrivals within any `secs` (a window starting at an arrival).
    fn most_in(&self, secs: f64) -> usize {
        let mut most = 0;
        let mut end = 0;
        for (start, t) in self.times.iter().enumerate() {
            while end < self.times.len() && self.times[end] < t + secs {
                end += 1;
            }
            most = most.max(end - start);
        }
        most
    }

    /// The messages' sizes as the server got them (the bytes after DATA).
    fn sizes(&self) -> String {
        let sizes: Vec<u64> = self.list.iter().map(|a| a.size).collect();
        let mean = sizes.iter().sum::<u64>() as f64 / sizes.len() as f64;
        let (min, max) = (sizes.iter().min(), sizes.iter().max());
        format!(
            "{:.2} KB on average ({:.2} to {:.2} KB)",
            mean / 1000.0,
            min.copied().unwrap_or(0) as f64 / 1000.0,
            max.copied().unwrap_or(0) as f64 / 1000.0
        )
    }

    /// Each of `addresses` got exactly one message, with it as the only recipient, and no one
    /// else got any.
    fn ensure_one_each(&self, addresses: &[String]) -> Result<()> {
        let mut got: HashMap<&str, usize> = HashMap::new();
        for arrival in &self.list {
            ensure!(
                arrival.rcpt_tos.len() == 1,
                "a message went to {:?}, not to one recipient",
                arrival.rcpt_tos
            );
            *got.entry(arrival.rcpt_tos[0].as_str()).or_default() += 1;
        }
        for address in addresses {
            let n = got.remove(address.as_str()).unwrap_or(0);
            ensure!(n == 1, "{address} got {n} messages");
        }
        ensure!(
            got.is_empty(),
            "messages went to {} addresses not in the jobs, e.g. {:?}",
            got.len(),
            got.keys().next()
        );
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The unrecorded window, from /metrics

/// `quizworker_email_unrecorded_seconds` as a daemon's /metrics shows it.
struct Histogram {
    /// (upper bound, cumulative count), by bound; the last is +Inf.
    buckets: Vec<(f64, u64)>,
    sum: f64,
    count: u64,
}

const UNRECORDED: &str = "quizworker_email_unrecorded_seconds";

/// Reads the histogram off the daemon's /metrics.
async fn unrecorded_window(daemon: &Daemon) -> Result<Histogram> {
    let addr: SocketAddr = daemon.http_addr()?;
    let body = tokio::task::spawn_blocking(move || common::http_get(addr, "/metrics"))
        .await
        .context("the /metrics request's task failed")??;
    Histogram::parse(&body, UNRECORDED)
}

impl Histogram {
    /// The histogram `name` of a Prometheus text exposition (no labels but `le`).
    fn parse(body: &str, name: &str) -> Result<Histogram> {
        let mut histogram = Histogram {
            buckets: Vec::new(),
            sum: 0.0,
            count: 0,
        };
        let number = |line: &str, value: &str| -> Result<f64> {
            value
                .trim()
                .parse()
                .with_context(|| format!("not a metric line: {line:?}"))
        };
        for line in body.lines() {
            let Some(rest) = line.strip_prefix(name) else {
                continue;
            };
            if let Some(rest) = rest.strip_prefix("_bucket{le=\"") {
                let (le, value) = rest
                    .split_once("\"}")
                    .with_context(|| format!("not a bucket line: {line:?}"))?;
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    number(line, le)?
                };
                histogram.buckets.push((le, number(line, value)? as u64));
            } else if let Some(value) = rest.strip_prefix("_sum ") {
                histogram.sum = number(line, value)?;
            } else if let Some(value) = rest.strip_prefix("_count ") {
                histogram.count = number(line, value)? as u64;
            }
        }
        ensure!(
            !histogram.buckets.is_empty(),
            "/metrics has no {name} histogram"
        );
        histogram.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        Ok(histogram)
    }

    /// The `q` quantile, linear within the bucket it falls in (as Prometheus'
    /// `histogram_quantile`); in the +Inf bucket, the largest finite bound.
    fn quantile(&self, q: f64) -> f64 {
        let rank = q * self.count as f64;
        let mut below = (0.0, 0u64);
        for &(le, cumulative) in &self.buckets {
            if cumulative as f64 >= rank {
                if le.is_infinite() {
                    return below.0;
                }
                let share = (rank - below.1 as f64) / (cumulative - below.1).max(1) as f64;
                return below.0 + (le - below.0) * share;
            }
            below = (le, cumulative);
        }
        below.0
    }

    /// The figure of a part whose daemon sent `messages`; fails unless it counted each once.
    fn report(&self, label: &str, messages: u64, report: &mut Report) -> Result<()> {
        let ms = |secs: f64| secs * 1000.0;
        let bounds: Vec<String> = self
            .buckets
            .iter()
            .take_while(|(le, _)| le.is_finite() && *le <= 0.1)
            .map(|(le, n)| format!("≤{} ms: {n}", ms(*le)))
            .collect();
        report.figure(
            format!(
                "{label}: the unrecorded window, server's 250 to the ledger's record \
                 (`{UNRECORDED}`): count, mean, p50 / p99 estimated from the buckets"
            ),
            format!(
                "{}, {:.2} ms, {:.2} ms / {:.2} ms (cumulative {})",
                thousands(self.count),
                ms(self.sum / self.count.max(1) as f64),
                ms(self.quantile(0.5)),
                ms(self.quantile(0.99)),
                bounds.join(", ")
            ),
        );
        ensure!(
            self.count == messages,
            "{UNRECORDED} counted {} messages, {messages} were sent",
            self.count
        );
        Ok(())
    }
}

/// What only this bench reports.
impl Report {
    /// Postgres transactions per message of a part: the daemon's journal, its ledger writes and
    /// its other statements (each one outside a transaction is one), and the bench's own polls.
    fn commits(&mut self, label: &str, commits: i64, messages: u64) {
        self.figure(
            format!(
                "{label}: Postgres transactions committed per message (pg_stat_database \
                 `xact_commit`; the bench's polls included)"
            ),
            format!("{:.2}", commits as f64 / messages as f64),
        );
    }
}

fn met(yes: bool) -> &'static str {
    if yes { "met" } else { "**not met**" }
}

/// The shipped `[queues.emails]` and `[email]` (config.toml), with a sender of the bench's; the
/// templates directory, the server's port and the knobs come from the environment.
fn config_toml() -> String {
    let tables = format!("[email]\nfrom = \"{FROM}\"\n{EMAIL_TABLES}");
    common::config_toml(
        "email",
        &tables,
        common::queue_table("emails", 16, "30m", 8),
    )
}

/// The shipped `[email]` (but the sender, above, and an unsubscribe URL: bulk mail carries
/// `List-Unsubscribe`) and `[email.smtp]`; the directory and the port come from the environment.
const EMAIL_TABLES: &str = r#"templates = "/nonexistent/overridden-by-the-environment"
unsubscribe_url = "https://exams.example/unsubscribe?e={email}&j={job}"
bulk_concurrency = 8

[email.smtp]
host = "127.0.0.1"
port = 25
security = "plain"
timeout = "30s"
pool_size = 8

"#;
