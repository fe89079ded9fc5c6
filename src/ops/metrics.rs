//! Every metric the daemon exports, in one place (in the spirit of Oban's telemetry module):
//! the names, which the README lists with their labels, the Prometheus recorder that keeps
//! them, and one function per event. Other modules call these functions and never name a
//! metric themselves. `/metrics` (`ops::http`) renders them with [`render`]: the recorder's
//! handle, then the counters of seconds kept beside the recorder.
//!
//! Label values come from closed sets only (queue names, the job catalogue's kinds, outcomes),
//! so no producer can blow up the number of series: a job whose envelope cannot be read is
//! counted under the kind `(malformed)`, a job of a kind the catalogue does not know under
//! `(unknown)` ([`kind_label`]).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ::metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use anyhow::Context;
use chrono::{DateTime, Utc};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use quizworker_jobs::{Queue, catalogue};

use crate::config::Config;
use crate::runtime::executor::MALFORMED_KIND;
use crate::runtime::journal::Finish;
use crate::runtime::queue::{RedisQueues, WaitingCounts};

/// Attempts that ended, by `queue`, `kind` and `outcome` (`completed`, `retrying`, `failed`,
/// `interrupted`, `snoozed`): `completed` and `failed` end the job, the others put it back.
pub const JOBS_FINISHED: &str = "quizworker_jobs_finished_total";
/// How long attempts ran (the handler, under its timeout, and before it the wait for the
/// queue's rate if it has one), by `queue` and `kind`.
pub const JOB_DURATION: &str = "quizworker_job_duration_seconds";
/// Retries scheduled after a transient error, by `queue` and `kind`.
pub const JOB_RETRIES: &str = "quizworker_job_retries_total";
/// Jobs waiting in Redis, by `queue` and `state` (`ready`, `scheduled`), sampled.
pub const QUEUE_DEPTH: &str = "quizworker_queue_depth";
/// How long the job at the head of a queue's ready list has waited since it was created, by
/// `queue`; 0 when none waits. Sampled.
pub const QUEUE_OLDEST_WAITING: &str = "quizworker_queue_oldest_waiting_seconds";
/// From a state change being handed to the journal writer to its commit.
pub const JOURNAL_WRITE_LAG: &str = "quizworker_journal_write_lag_seconds";
/// State changes written in one journal transaction.
pub const JOURNAL_BATCH_SIZE: &str = "quizworker_journal_batch_size";
/// Workers that died and were replaced, by `queue`.
pub const WORKER_RESTARTS: &str = "quizworker_worker_restarts_total";
/// Email messages by `outcome`: `sent`, `failed` (refused for good), `suppressed`, `deferred`
/// (refused for now or the server unreachable: a later attempt sends it).
pub const EMAIL_MESSAGES: &str = "quizworker_email_messages_total";
/// From the SMTP server's 250 to the delivery ledger's record of it: the only window in which
/// a crash makes a message go twice (docs/EMAIL.md).
pub const EMAIL_UNRECORDED: &str = "quizworker_email_unrecorded_seconds";
/// Requests to the AI provider by `outcome`: `answered` (a reply that matches the schema),
/// `invalid` (one that does not), `refused`, `filtered` (the provider's content filter),
/// `throttled` (429), `server_error` (5xx, 408, 409, or a 2xx whose body is not a completion),
/// `client_error` (other 4xx), `unreachable`.
pub const AI_REQUESTS: &str = "quizworker_ai_requests_total";
/// Tokens the AI provider billed, by `type`: `input`, `cached_input` (part of `input`), `output`.
pub const AI_TOKENS: &str = "quizworker_ai_tokens_total";
/// Questions of `ai.hints` jobs by `outcome`: `generated`, `cached` (hints stored earlier,
/// no request), `failed`.
pub const AI_QUESTIONS: &str = "quizworker_ai_questions_total";
/// Requests the daily spend cap (`ai.daily_spend_cap_usd`) held back: an AI job found it
/// reached and waits for the next UTC day.
pub const AI_SPEND_CAP_REACHED: &str = "quizworker_ai_spend_cap_reached_total";
/// A queue's rate limit (`rate` in `[queues.<queue>]`) in units per second, by `queue`; 0 when
/// the queue has none (unlimited). Set at start for the queues this process runs.
pub const QUEUE_RATE_LIMIT: &str = "quizworker_queue_rate_limit_per_second";
/// Seconds spent waiting for a queue's rate limit, by `queue` (jobs, or an email handler's
/// messages), counted also when the wait was given up. Rendered by [`render`] itself.
pub const RATE_LIMIT_WAIT: &str = "quizworker_rate_limit_wait_seconds_total";
/// 1 while the process runs.
pub const UP: &str = "quizworker_up";
/// 1 when Redis and Postgres answer and every worker runs (what `/readyz` says), else 0.
pub const READY: &str = "quizworker_ready";

const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
    900.0,
];
const LAG_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0,
];

/// Installs the process-wide recorder and returns the handle `/metrics` renders. Histograms
/// get fixed buckets, so they are Prometheus histograms (which aggregate across processes)
/// rather than summaries.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(JOB_DURATION.into()), DURATION_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(JOURNAL_WRITE_LAG.into()), LAG_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(JOURNAL_BATCH_SIZE.into()), BATCH_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(EMAIL_UNRECORDED.into()), LAG_BUCKETS)?
        .install_recorder()
        .context("could not install the metrics recorder")?;
    describe();
    gauge!(UP).set(1.0);
    gauge!(READY).set(0.0);
    Ok(handle)
}

fn describe() {
    describe_counter!(
        JOBS_FINISHED,
        "Attempts that ended, by queue, kind and outcome (completed, retrying, failed, interrupted, snoozed)"
    );
    describe_histogram!(
        JOB_DURATION,
        Unit::Seconds,
        "How long attempts ran, by queue and kind"
    );
    describe_counter!(
        JOB_RETRIES,
        "Retries scheduled after a transient error, by queue and kind"
    );
    describe_gauge!(
        QUEUE_DEPTH,
        "Jobs waiting in Redis, by queue and state (ready, scheduled)"
    );
    describe_gauge!(
        QUEUE_OLDEST_WAITING,
        Unit::Seconds,
        "Age of the job at the head of the queue's ready list (0 when empty)"
    );
    describe_histogram!(
        JOURNAL_WRITE_LAG,
        Unit::Seconds,
        "Time from a state change being queued for the journal to its commit"
    );
    describe_histogram!(
        JOURNAL_BATCH_SIZE,
        Unit::Count,
        "State changes written in one journal transaction"
    );
    describe_counter!(
        WORKER_RESTARTS,
        "Workers that died and were replaced, by queue"
    );
    describe_counter!(
        EMAIL_MESSAGES,
        "Email messages by outcome (sent, failed, suppressed, deferred)"
    );
    describe_histogram!(
        EMAIL_UNRECORDED,
        Unit::Seconds,
        "Time from the SMTP server accepting a message to the delivery ledger recording it"
    );
    describe_counter!(
        AI_REQUESTS,
        "Requests to the AI provider by outcome (answered, invalid, refused, filtered, throttled, server_error, client_error, unreachable)"
    );
    describe_counter!(
        AI_TOKENS,
        "Tokens the AI provider billed, by type (input, cached_input, output)"
    );
    describe_counter!(
        AI_QUESTIONS,
        "Questions of ai.hints jobs by outcome (generated, cached, failed)"
    );
    describe_counter!(
        AI_SPEND_CAP_REACHED,
        "Requests the daily AI spend cap held back (their job waits for the next UTC day)"
    );
    describe_gauge!(
        QUEUE_RATE_LIMIT,
        "The queue's rate limit in units per second, by queue (0: unlimited)"
    );
    describe_gauge!(UP, "1 while the process runs");
    describe_gauge!(
        READY,
        "1 when Redis and Postgres answer and every worker runs, else 0"
    );
}

/// The `kind` label of every kind the catalogue does not know.
pub const UNKNOWN_KIND: &str = "(unknown)";

/// The `kind` label of a job of kind `kind`: one of the catalogue's kinds, `(malformed)`, or
/// `(unknown)` for any other name a producer sent.
pub fn kind_label(kind: &str) -> &'static str {
    match catalogue::kind(kind) {
        Some(known) => known.name,
        None if kind == MALFORMED_KIND => MALFORMED_KIND,
        None => UNKNOWN_KIND,
    }
}

fn outcome(finish: &Finish) -> &'static str {
    match finish {
        Finish::Completed { .. } => "completed",
        Finish::Retrying { .. } => "retrying",
        Finish::Failed { .. } => "failed",
        Finish::Interrupted => "interrupted",
        Finish::Snoozed { .. } => "snoozed",
    }
}

/// Measures one attempt from the start of its handler. [`AttemptMetrics::end`] records its
/// outcome; an attempt dropped before that (its task stopped at the shutdown timeout) counts
/// as `interrupted`.
pub struct AttemptMetrics {
    queue: Queue,
    kind: &'static str,
    started: Instant,
    ended: bool,
}

impl AttemptMetrics {
    pub fn start(queue: Queue, kind: &str) -> AttemptMetrics {
        AttemptMetrics {
            queue,
            kind: kind_label(kind),
            started: Instant::now(),
            ended: false,
        }
    }

    pub fn end(mut self, finish: &Finish) {
        self.record(outcome(finish));
    }

    fn record(&mut self, outcome: &'static str) {
        self.ended = true;
        let (queue, kind) = (self.queue.name(), self.kind);
        histogram!(JOB_DURATION, "queue" => queue, "kind" => kind).record(self.started.elapsed());
        if outcome == "retrying" {
            counter!(JOB_RETRIES, "queue" => queue, "kind" => kind).increment(1);
        }
        counter!(JOBS_FINISHED, "queue" => queue, "kind" => kind, "outcome" => outcome)
            .increment(1);
    }
}

impl Drop for AttemptMetrics {
    fn drop(&mut self) {
        if !self.ended {
            self.record("interrupted");
        }
    }
}

/// A job that failed without its handler running: a malformed envelope, or an attempt over
/// the limit after crashes.
pub fn failed_without_running(queue: Queue, kind: &str) {
    counter!(JOBS_FINISHED, "queue" => queue.name(), "kind" => kind_label(kind), "outcome" => "failed")
        .increment(1);
}

/// A journal transaction committed (or, after Postgres refused it whole, was written change by
/// change): its size, and each change's wait from being queued.
pub fn journal_batch_written(queued: &[Instant]) {
    histogram!(JOURNAL_BATCH_SIZE).record(queued.len() as f64);
    let lag = histogram!(JOURNAL_WRITE_LAG);
    for at in queued {
        lag.record(at.elapsed());
    }
}

/// One email message settled or put off; `outcome` is one of [`EMAIL_MESSAGES`]' outcomes.
pub fn email_message(outcome: &'static str) {
    counter!(EMAIL_MESSAGES, "outcome" => outcome).increment(1);
}

pub fn email_unrecorded(window: Duration) {
    histogram!(EMAIL_UNRECORDED).record(window);
}

/// One request to the AI provider ended; `outcome` is one of [`AI_REQUESTS`]' outcomes.
pub fn ai_request(outcome: &'static str) {
    counter!(AI_REQUESTS, "outcome" => outcome).increment(1);
}

/// The tokens of one reply.
pub fn ai_tokens(input: u64, cached_input: u64, output: u64) {
    counter!(AI_TOKENS, "type" => "input").increment(input);
    counter!(AI_TOKENS, "type" => "cached_input").increment(cached_input);
    counter!(AI_TOKENS, "type" => "output").increment(output);
}

/// One question of an `ai.hints` job settled; `outcome` is one of [`AI_QUESTIONS`]' outcomes.
pub fn ai_question(outcome: &'static str) {
    counter!(AI_QUESTIONS, "outcome" => outcome).increment(1);
}

/// The daily spend cap held back a request.
pub fn ai_spend_cap_reached() {
    counter!(AI_SPEND_CAP_REACHED).increment(1);
}

pub fn worker_died(queue: Queue) {
    counter!(WORKER_RESTARTS, "queue" => queue.name()).increment(1);
}

pub fn set_ready(ready: bool) {
    gauge!(READY).set(if ready { 1.0 } else { 0.0 });
}

/// Sets each queue's rate limit gauge (0: unlimited) and shows its wait counter from 0, for the
/// queues this process runs.
pub fn rate_limits_set(config: &Config, queues: &[Queue]) {
    for &queue in queues {
        let per_second = config
            .queue(queue)
            .rate
            .map_or(0.0, |rate| rate.per_second());
        gauge!(QUEUE_RATE_LIMIT, "queue" => queue.name()).set(per_second);
        RATE_LIMIT_WAITS[queue_index(queue)]
            .shown
            .store(true, Ordering::Relaxed);
    }
}

/// Time spent waiting for `queue`'s rate limit.
pub fn rate_limit_waited(queue: Queue, waited: Duration) {
    let counter = &RATE_LIMIT_WAITS[queue_index(queue)];
    counter.shown.store(true, Ordering::Relaxed);
    // Adding to an f64 kept as bits: the closure is retried if another waiter added meanwhile.
    let _ = counter
        .seconds
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
            Some((f64::from_bits(bits) + waited.as_secs_f64()).to_bits())
        });
}

/// A counter of seconds, kept beside the recorder: the `metrics` crate's counters count whole
/// numbers only, and one wait for a 20/s limit is at most 50 ms.
struct SecondsCounter {
    /// The f64's bits.
    seconds: AtomicU64,
    /// Rendered once set up or counted, so a queue the process does not run adds no series.
    shown: AtomicBool,
}

/// [`RATE_LIMIT_WAIT`], by the queue's place in `Queue::ALL`.
static RATE_LIMIT_WAITS: [SecondsCounter; Queue::ALL.len()] = [const {
    SecondsCounter {
        seconds: AtomicU64::new(0),
        shown: AtomicBool::new(false),
    }
}; Queue::ALL.len()];

fn queue_index(queue: Queue) -> usize {
    Queue::ALL
        .iter()
        .position(|&q| q == queue)
        .expect("Queue::ALL holds every queue")
}

/// Every metric in Prometheus' text format: the recorder's, then the counters kept beside it.
pub fn render(handle: &PrometheusHandle) -> String {
    let mut text = handle.render();
    let shown: Vec<(Queue, f64)> = Queue::ALL
        .iter()
        .zip(&RATE_LIMIT_WAITS)
        .filter(|(_, counter)| counter.shown.load(Ordering::Relaxed))
        .map(|(&queue, counter)| {
            let bits = counter.seconds.load(Ordering::Relaxed);
            (queue, f64::from_bits(bits))
        })
        .collect();
    if shown.is_empty() {
        return text;
    }
    if !text.is_empty() && !text.ends_with("\n\n") {
        text.push('\n');
    }
    // Writing to a String cannot fail.
    let _ = writeln!(
        text,
        "# HELP {RATE_LIMIT_WAIT} Seconds spent waiting for the queue's rate limit, by queue"
    );
    let _ = writeln!(text, "# TYPE {RATE_LIMIT_WAIT} counter");
    for (queue, seconds) in shown {
        let _ = writeln!(text, "{RATE_LIMIT_WAIT}{{queue=\"{queue}\"}} {seconds}");
    }
    text.push('\n');
    text
}

fn queue_sampled(queue: Queue, counts: &WaitingCounts, now: DateTime<Utc>) {
    let name = queue.name();
    gauge!(QUEUE_DEPTH, "queue" => name, "state" => "ready").set(counts.ready as f64);
    gauge!(QUEUE_DEPTH, "queue" => name, "state" => "scheduled").set(counts.scheduled as f64);
    let oldest = counts
        .oldest_ready
        .as_deref()
        .and_then(|id| id.parse::<ulid::Ulid>().ok())
        .map(|id| {
            (now - DateTime::<Utc>::from(id.datetime()))
                .to_std()
                .unwrap_or_default()
        })
        .unwrap_or_default();
    gauge!(QUEUE_OLDEST_WAITING, "queue" => name).set(oldest.as_secs_f64());
}

/// Reads the queues' depths from Redis every `every`, and keeps the recorder's histograms
/// drained (the exporter leaves that to whoever renders without its own listener). Runs until
/// aborted; while Redis is away the gauges keep their last values (`quizworker_ready` says why).
pub async fn sample_queues(
    redis: RedisQueues,
    queues: Vec<Queue>,
    every: Duration,
    handle: PrometheusHandle,
) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        handle.run_upkeep();
        for &queue in &queues {
            match redis.waiting_counts(queue).await {
                Ok(counts) => queue_sampled(queue, &counts, Utc::now()),
                Err(e) => {
                    tracing::debug!(%queue, error = %format!("{e:#}"), "could not sample the queue");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_and_interruptions_are_rendered() {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(JOB_DURATION.into()), DURATION_BUCKETS)
            .unwrap()
            .build_recorder();
        let handle = recorder.handle();
        ::metrics::with_local_recorder(&recorder, || {
            AttemptMetrics::start(Queue::Default, "diag.noop").end(&Finish::Completed {
                result: serde_json::Value::Null,
            });
            AttemptMetrics::start(Queue::Default, "diag.fail").end(&Finish::Retrying {
                error: "boom".into(),
                run_at: Utc::now(),
            });
            drop(AttemptMetrics::start(Queue::Scoring, "score.attempt"));
            failed_without_running(Queue::Default, "(malformed)");
            AttemptMetrics::start(Queue::Default, "made.up.1").end(&Finish::Failed {
                error: "unknown job kind".into(),
            });
            failed_without_running(Queue::Default, "made.up.2");
        });
        let text = handle.render();
        for line in [
            r#"quizworker_jobs_finished_total{queue="default",kind="diag.noop",outcome="completed"} 1"#,
            r#"quizworker_jobs_finished_total{queue="default",kind="diag.fail",outcome="retrying"} 1"#,
            r#"quizworker_jobs_finished_total{queue="scoring",kind="score.attempt",outcome="interrupted"} 1"#,
            r#"quizworker_jobs_finished_total{queue="default",kind="(malformed)",outcome="failed"} 1"#,
            r#"quizworker_jobs_finished_total{queue="default",kind="(unknown)",outcome="failed"} 2"#,
            r#"quizworker_job_retries_total{queue="default",kind="diag.fail"} 1"#,
            r#"quizworker_job_duration_seconds_count{queue="default",kind="diag.noop"} 1"#,
        ] {
            assert!(text.contains(line), "missing {line} in:\n{text}");
        }
        assert!(
            !text.contains("made.up"),
            "a producer's kind became a label:\n{text}"
        );
    }

    #[test]
    fn rate_limits_and_their_waits_are_rendered() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let mut config = Config::default();
        config.queues.get_mut("ai").unwrap().rate = Some("600/min".parse().unwrap());
        ::metrics::with_local_recorder(&recorder, || {
            rate_limits_set(&config, &[Queue::Ai, Queue::Indexing]);
        });
        rate_limit_waited(Queue::Ai, Duration::from_millis(30));
        rate_limit_waited(Queue::Ai, Duration::from_millis(20));
        let text = render(&handle);
        for line in [
            r#"quizworker_queue_rate_limit_per_second{queue="ai"} 10"#,
            r#"quizworker_queue_rate_limit_per_second{queue="indexing"} 0"#,
            "# TYPE quizworker_rate_limit_wait_seconds_total counter",
            r#"quizworker_rate_limit_wait_seconds_total{queue="ai"} 0.05"#,
            r#"quizworker_rate_limit_wait_seconds_total{queue="indexing"} 0"#,
        ] {
            assert!(text.contains(line), "missing {line} in:\n{text}");
        }
    }
}
