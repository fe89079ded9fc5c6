//! AI: `cargo bench --bench ai`.
//!
//! How fast the release daemon runs `ai.hints` jobs (README "AI", docs/AI.md) against a
//! chat-completions server with a fixed latency, and whether its limits hold, with real Redis
//! and Postgres. The server is a local wiremock one the bench starts: every request is answered
//! with valid hints after BENCH_AI_LATENCY_MS, and bills `prompt_tokens` = the request's body
//! bytes / 3 (more than the daemon's estimate of 4 bytes a token, so the limiter must settle
//! debts) and 200 `completion_tokens`; it keeps each request's time of arrival and tokens.
//! Every question has its own text (no cache hits): each is one request.
//!
//! Parts (each a fresh daemon on the run's database and prefix):
//! 1. Throughput at the shipped concurrency (`[queues.ai] concurrency = 8` jobs, `ai.concurrency
//!    = 4` requests each: 32 requests in flight), no rate limit (as shipped): BENCH_AI_QUESTIONS
//!    questions in jobs of BENCH_AI_PER_JOB, pushed through the protocol's script while the
//!    daemon runs. Reported: hints per second at the server (requests from the first arrival
//!    to the last reply, latency included) against the aim, min(rate, in flight / latency); the
//!    daemon's overhead per request: each slot's time per request less the latency (the span
//!    times 32 over the requests: everything between two requests of a slot, the HTTP client,
//!    the cache lookup, storing the hints and the usage, the journal and taking the next job),
//!    the HTTP client's part of it (`ai_usage.duration_ms` less the latency), and a job's
//!    attempt time (the journal's) against the rounds of replies it waits for. Checked:
//!    every job completed with one attempt, one request per question.
//! 2. Requests a minute: BENCH_AI_RATE_REQUESTS questions with `rate = BENCH_AI_RATE` on the ai
//!    queue. Reported: requests a minute at the server (first arrival to last) and their
//!    deviation from the limit, the most requests within any one second.
//! 3. Tokens a minute: BENCH_AI_TPM_REQUESTS questions with `ai.tokens_per_minute =
//!    BENCH_AI_TPM`. Reported: tokens a minute at the server, as billed (the tokens of every
//!    request but the last over the time from the first arrival to the last), and their
//!    deviation from the limit.
//!
//! Knobs (environment, with defaults): BENCH_AI_QUESTIONS=2048, BENCH_AI_PER_JOB=8 (their
//! quotient a multiple of 8 jobs), BENCH_AI_LATENCY_MS=300, BENCH_AI_RATE=1200/min,
//! BENCH_AI_RATE_REQUESTS=600 (0 skips part 2), BENCH_AI_TPM=300000, BENCH_AI_TPM_REQUESTS=150
//! (0 skips part 3),
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres (any database on the server: the
//! run's own database is created next to it), REDIS_URL=redis://127.0.0.1:6379.
//!
//! Prints a Markdown report on stdout and progress on stderr; exits non-zero if anything failed.

mod common;

use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use common::harness::Harness;
use common::{KnobReader, Report, Run, RunSpec, per_sec, thousands};
use quizworker::config::{Rate, RateUnit};
use quizworker_jobs::JobPayload;
use quizworker_jobs::ai::{AiHints, HintQuestion, QuestionType};
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// Completion tokens every reply bills.
const COMPLETION_TOKENS: u64 = 200;
/// Body bytes per prompt token the server bills (the daemon reckons 4).
const SERVER_BYTES_PER_TOKEN: u64 = 3;
/// The aims of the AI issue: the rates held within 5%, under 10 ms of overhead a request.
const AIM_DEVIATION: f64 = 0.05;
const AIM_OVERHEAD_MS: f64 = 10.0;
/// As shipped (config.toml): jobs of the ai queue at once, requests of one job at once.
const QUEUE_CONCURRENCY: u64 = 8;
const JOB_CONCURRENCY: u64 = 4;

fn main() -> ExitCode {
    common::main("ai", "bench", Knobs::read, |knobs, harness| {
        harness.report.machine(
            "Load average at start (/proc/loadavg)",
            common::load_average(),
        );
        harness.report.workload(&format!(
            "`ai.hints` jobs of {} integer questions, each with its own text (no cache hits); \
             a wiremock chat-completions server on loopback answering every request with valid \
             hints after {} ms, billing body bytes / {SERVER_BYTES_PER_TOKEN} prompt tokens and \
             {COMPLETION_TOKENS} completion tokens",
            knobs.per_job, knobs.latency_ms
        ));
        run(knobs, harness);
        harness.report.machine(
            "Load average at end (/proc/loadavg)",
            common::load_average(),
        );
    })
}

struct Knobs {
    questions: usize,
    per_job: usize,
    latency_ms: u64,
    rate: Rate,
    rate_requests: usize,
    tpm: u64,
    tpm_requests: usize,
}

impl Knobs {
    fn read(reader: &mut KnobReader) -> Result<Knobs> {
        let knobs = Knobs {
            questions: reader.at_least("BENCH_AI_QUESTIONS", 2048, 2, "")?,
            per_job: reader.at_least("BENCH_AI_PER_JOB", 8, 1, "")?,
            latency_ms: reader.read("BENCH_AI_LATENCY_MS", 300, " ms")?,
            rate: reader.read("BENCH_AI_RATE", Rate::new(1200, RateUnit::Minute)?, "")?,
            rate_requests: reader.read("BENCH_AI_RATE_REQUESTS", 600, "")?,
            tpm: reader.at_least("BENCH_AI_TPM", 300_000, 1, " tokens/min")?,
            tpm_requests: reader.read("BENCH_AI_TPM_REQUESTS", 150, "")?,
        };
        ensure!(
            knobs.per_job <= 50,
            "BENCH_AI_PER_JOB: a job has at most 50 questions (ai.max_questions)"
        );
        // With a part of a round of jobs left at the end, the workers without one idle while
        // the others run it: 2,000 questions in jobs of 8 (250 jobs, 31.25 a worker) added 7 ms
        // a request to the overhead that was no work of the daemon's.
        let jobs = knobs.questions.div_ceil(knobs.per_job) as u64;
        ensure!(
            jobs.is_multiple_of(QUEUE_CONCURRENCY),
            "BENCH_AI_QUESTIONS / BENCH_AI_PER_JOB = {jobs} jobs: it must be a multiple of \
             {QUEUE_CONCURRENCY} (the ai queue's concurrency), so that every worker runs as \
             many jobs"
        );
        for (name, n) in [
            ("BENCH_AI_RATE_REQUESTS", knobs.rate_requests),
            ("BENCH_AI_TPM_REQUESTS", knobs.tpm_requests),
        ] {
            ensure!(
                n != 1,
                "{name} must be 0 or at least 2 (a rate needs two arrivals)"
            );
        }
        Ok(knobs)
    }
}

/// `[ai]` as shipped but the model, with gpt-4o-mini's prices, and the ai queue as shipped.
fn config_toml() -> String {
    common::config_toml(
        "ai",
        "[ai]\nmodel = \"bench-model\"\ninput_price_per_million = 0.15\n\
         cached_input_price_per_million = 0.075\noutput_price_per_million = 0.60\n\n",
        common::queue_table("ai", QUEUE_CONCURRENCY, "2m", 5),
    )
}

fn run(knobs: &Knobs, harness: &mut Harness) {
    // /metrics on a port of the system's choosing: other daemons may run on this machine.
    let spec = RunSpec::new("ai", config_toml()).env("QUIZWORKER_HTTP__LISTEN", "127.0.0.1:0");
    harness.report.knob(
        "daemon config (temp file)",
        "`[ai]` and `[queues.ai]` as shipped (no rate, no tokens a minute, concurrency 8 jobs \
         of 4 requests) but the model and prices; each part's limit set on its daemon"
            .to_owned(),
    );
    harness.with_run(spec, async |run, report| {
        run.migrate()?;
        let server = Server::start(Duration::from_millis(knobs.latency_ms)).await;
        throughput(knobs, run, &server, report).await?;
        if knobs.rate_requests > 0 {
            request_rate(knobs, run, &server, report).await?;
        }
        if knobs.tpm_requests > 0 {
            token_rate(knobs, run, &server, report).await?;
        }
        Ok(())
    });
}

/// The chat-completions server: its arrivals (time, tokens billed) since the last `take`.
struct Server {
    server: MockServer,
    arrivals: Arc<Mutex<Vec<(Instant, u64)>>>,
    latency: Duration,
}

struct Replier {
    arrivals: Arc<Mutex<Vec<(Instant, u64)>>>,
    latency: Duration,
}

impl Respond for Replier {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let prompt = request.body.len() as u64 / SERVER_BYTES_PER_TOKEN;
        self.arrivals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((Instant::now(), prompt + COMPLETION_TOKENS));
        let content = json!({
            "nudge": "Look at what each part of the sum is.",
            "method": "Add the two numbers column by column.",
            "near_solution": "Carry where a column passes nine, and stop before writing the total."
        });
        ResponseTemplate::new(200)
            .set_delay(self.latency)
            .set_body_json(json!({
                "id": "chatcmpl-bench", "object": "chat.completion", "model": "bench-model",
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": content.to_string()}}],
                "usage": {"prompt_tokens": prompt, "completion_tokens": COMPLETION_TOKENS,
                          "total_tokens": prompt + COMPLETION_TOKENS}
            }))
    }
}

impl Server {
    async fn start(latency: Duration) -> Server {
        let server = MockServer::builder()
            .disable_request_recording()
            .start()
            .await;
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        Mock::given(method("POST"))
            .and(path("/v1/chat/completions"))
            .respond_with(Replier {
                arrivals: arrivals.clone(),
                latency,
            })
            .mount(&server)
            .await;
        Server {
            server,
            arrivals,
            latency,
        }
    }

    fn base_url(&self) -> String {
        format!("{}/v1", self.server.uri())
    }

    fn take(&self) -> Vec<(Instant, u64)> {
        std::mem::take(&mut *self.arrivals.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Jobs of `per_job` questions, `n` in all, each text of its own (`part` keeps the parts apart).
fn jobs(part: &str, n: usize, per_job: usize) -> Vec<AiHints> {
    (0..n)
        .collect::<Vec<_>>()
        .chunks(per_job)
        .map(|chunk| AiHints {
            questions: chunk
                .iter()
                .map(|&i| HintQuestion {
                    id: format!("q{i}"),
                    kind: QuestionType::Integer,
                    text: format!("{part}: what is {i} + {}?", i * 3 + 1),
                    options: Vec::new(),
                    answer: Some(quizworker_jobs::ai::Answer::One((i * 4 + 1).to_string())),
                    tolerance: None,
                })
                .collect(),
        })
        .collect()
}

/// Starts a daemon with `env`, enqueues `n` questions of `part`, waits until every job has
/// completed, stops the daemon and returns the server's arrivals. Checks one request per
/// question and one attempt per job.
async fn drive(
    knobs: &Knobs,
    run: &Run,
    server: &Server,
    part: &str,
    n: usize,
    env: &[(&str, String)],
) -> Result<Vec<(Instant, u64)>> {
    let mut env = env.to_vec();
    env.push(("QUIZWORKER_AI__BASE_URL", server.base_url()));
    let before = run.completed_jobs().await?;
    let mut daemon = run
        .start_daemon_with(&format!("daemon-{part}"), &env)
        .await?;
    server.take();
    let jobs = jobs(part, n, knobs.per_job);
    let count = jobs.len() as u64;
    let mut pipeline = run.pipeline().await?;
    for batch in jobs.chunks(500) {
        pipeline.enqueue(batch.iter().cloned()).await?;
    }
    eprintln!("bench: {part}: {n} questions in {count} jobs");
    common::sample_until(
        &mut daemon,
        before,
        count,
        "job completed",
        "jobs completed",
        async || run.completed_or_failing().await,
    )
    .await?;
    daemon.stop().await?;
    let arrivals = server.take();
    ensure!(
        arrivals.len() == n,
        "{} requests reached the server for {n} questions",
        arrivals.len()
    );
    Ok(arrivals)
}

async fn throughput(knobs: &Knobs, run: &Run, server: &Server, report: &mut Report) -> Result<()> {
    let n = knobs.questions;
    let arrivals = drive(knobs, run, server, "throughput", n, &[]).await?;
    let counts = run.journal_counts(AiHints::KIND).await?;
    report.figure("Part 1 journal", counts.outcomes());
    counts.ensure_each_completed_once(n.div_ceil(knobs.per_job) as i64)?;

    let latency = server.latency.as_secs_f64();
    let first = arrivals[0].0;
    let span = arrivals[n - 1].0.duration_since(first).as_secs_f64() + latency;
    let hints_per_sec = n as f64 / span;
    let slots = (QUEUE_CONCURRENCY * JOB_CONCURRENCY) as f64;
    let aim = slots / latency;
    report.figure(
        "Part 1 hints/s at the server (32 in flight, no rate limit)",
        format!(
            "{} ({n} in {span:.2} s); aim {} (32 / {} ms): {:.0}%",
            per_sec(hints_per_sec, "hints"),
            per_sec(aim, "hints"),
            knobs.latency_ms,
            100.0 * hints_per_sec / aim
        ),
    );
    let overhead_ms = (span * slots / n as f64 - latency) * 1000.0;
    let http_ms: f64 = sqlx::query_scalar::<_, f64>(
        "SELECT avg(duration_ms)::float8 FROM ai_usage u JOIN jobs j ON j.id = u.job_id",
    )
    .fetch_one(&run.pg)
    .await?
        - knobs.latency_ms as f64;
    report.figure(
        "Part 1 daemon overhead per request",
        format!(
            "{overhead_ms:.1} ms a slot (each slot's time per request less {} ms), of which the \
             HTTP client {http_ms:.1} ms (ai_usage.duration_ms less {} ms); aim under \
             {AIM_OVERHEAD_MS} ms: {}",
            knobs.latency_ms,
            knobs.latency_ms,
            met(overhead_ms < AIM_OVERHEAD_MS)
        ),
    );
    // Where a slot's time goes: a job asks its questions in rounds of `ai.concurrency`, so its
    // attempt takes at least that many latencies; the rest is the job's own work.
    let rounds = knobs.per_job.div_ceil(JOB_CONCURRENCY as usize) as f64;
    let attempt_ms: f64 = sqlx::query_scalar(
        "SELECT avg(duration_ms)::float8 FROM job_attempts WHERE outcome = 'completed'",
    )
    .fetch_one(&run.pg)
    .await?;
    report.figure(
        "Part 1 attempt time per job",
        format!(
            "{attempt_ms:.0} ms on average, of which {:.0} ms waiting for {rounds} rounds of \
             replies: {:.0} ms of the job's own work (cache lookups, storing hints and usage)",
            rounds * latency * 1000.0,
            attempt_ms - rounds * latency * 1000.0
        ),
    );
    Ok(())
}

async fn request_rate(
    knobs: &Knobs,
    run: &Run,
    server: &Server,
    report: &mut Report,
) -> Result<()> {
    let n = knobs.rate_requests;
    let env = [("QUIZWORKER_QUEUES__AI__RATE", knobs.rate.to_string())];
    let arrivals = drive(knobs, run, server, "rate", n, &env).await?;
    let times: Vec<Instant> = arrivals.iter().map(|(t, _)| *t).collect();
    let span = times[n - 1].duration_since(times[0]).as_secs_f64();
    let per_min = (n - 1) as f64 / span * 60.0;
    let limit = knobs.rate.per_second() * 60.0;
    let most_in_a_second = (0..n)
        .map(|i| {
            times[i..]
                .iter()
                .take_while(|t| t.duration_since(times[i]) < Duration::from_secs(1))
                .count()
        })
        .max()
        .unwrap_or(0);
    let deviation = per_min / limit - 1.0;
    report.figure(
        format!(
            "Part 2 requests/min at the server (rate = \"{}\")",
            knobs.rate
        ),
        format!(
            "{} requests/min ({n} in {span:.1} s), {:+.2}% of the limit; at most \
             {most_in_a_second} within one second; within {:.0}%: {}",
            thousands(per_min.round() as u64),
            deviation * 100.0,
            AIM_DEVIATION * 100.0,
            met(deviation.abs() <= AIM_DEVIATION)
        ),
    );
    Ok(())
}

async fn token_rate(knobs: &Knobs, run: &Run, server: &Server, report: &mut Report) -> Result<()> {
    let n = knobs.tpm_requests;
    let env = [("QUIZWORKER_AI__TOKENS_PER_MINUTE", knobs.tpm.to_string())];
    let arrivals = drive(knobs, run, server, "tokens", n, &env).await?;
    let span = arrivals[n - 1]
        .0
        .duration_since(arrivals[0].0)
        .as_secs_f64();
    let tokens: u64 = arrivals[..n - 1].iter().map(|(_, t)| t).sum();
    let per_min = tokens as f64 / span * 60.0;
    let mean = arrivals.iter().map(|(_, t)| *t).sum::<u64>() as f64 / n as f64;
    let deviation = per_min / knobs.tpm as f64 - 1.0;
    report.figure(
        format!(
            "Part 3 tokens/min at the server (tokens_per_minute = {})",
            knobs.tpm
        ),
        format!(
            "{} tokens/min ({n} requests of {mean:.0} tokens on average in {span:.1} s), \
             {:+.2}% of the limit; within {:.0}%: {}",
            thousands(per_min.round() as u64),
            deviation * 100.0,
            AIM_DEVIATION * 100.0,
            met(deviation.abs() <= AIM_DEVIATION)
        ),
    );
    Ok(())
}

fn met(yes: bool) -> &'static str {
    if yes { "met" } else { "not met" }
}
