//! What each kind of job does: one folder per job family (`diag`, `scoring`, `exports`, `email`,
//! `ai`, `indexing`), each holding its handler, its Postgres store and its clients, and [`dispatch`], the
//! one place that maps a kind to its handler. A handler sees a typed payload, a [`JobContext`] and the
//! [`Services`], never Redis or the journal's tables. Adding a family: docs/ARCHITECTURE.md.

pub mod ai;
mod diag;
pub mod email;
pub mod exports;
pub mod indexing;
pub mod scoring;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use quizworker_jobs::ai::{AiEvaluate, AiHints};
use quizworker_jobs::diag::{Fail, Noop, Sleep};
use quizworker_jobs::email::{EmailBulk, EmailSend};
use quizworker_jobs::exports::{ExportReportPdf, ExportResultsCsv, ExportTestReportPdf};
use quizworker_jobs::indexing::{IndexDelete, IndexRebuild, IndexUpsert};
use quizworker_jobs::scoring::{FinalizeTest, RescoreTest, ScoreAttempt, SubmittedAttempt};
use quizworker_jobs::{Envelope, EnvelopeError, JobPayload, Queue};
use serde_json::Value;
use sqlx::PgPool;

use crate::config::ExportsConfig;
use crate::runtime::journal::Journal;
use crate::runtime::rate_limit::RateLimits;
use exports::assets::PdfAssets;
use exports::files::ExportDir;
use scoring::prepared_tests::PreparedTests;
use scoring::writer::ScoreWriter;

/// How an attempt failed, which decides whether it is retried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    /// No retry can mend it (the payload does not validate, the kind is unknown, ...).
    #[error("{0}")]
    Permanent(String),
    /// Worth another attempt after a backoff (a dependency failed, a timeout, ...).
    #[error("{0}")]
    Transient(String),
    /// Not a failure: the job cannot go on before `until` (the AI spend cap is reached for the
    /// day), so it waits in `scheduled` until then, and this attempt is not counted against its
    /// limit. Only the process that ran the attempt reschedules it, once the handler returned.
    #[error("{reason} (runs again at {until})")]
    Snooze {
        until: chrono::DateTime<chrono::Utc>,
        reason: String,
    },
}

impl From<EnvelopeError> for JobError {
    fn from(e: EnvelopeError) -> Self {
        JobError::Permanent(e.to_string())
    }
}

/// What a handler may know of and do to its job beyond the payload.
pub struct JobContext {
    pub id: String,
    /// This attempt's number, from 1.
    pub attempt: u32,
    pub max_attempts: u32,
    journal: Journal,
    progress_interval: Duration,
    last_progress: Mutex<Option<Instant>>,
}

impl JobContext {
    pub fn new(
        id: String,
        attempt: u32,
        max_attempts: u32,
        journal: Journal,
        progress_interval: Duration,
    ) -> Self {
        JobContext {
            id,
            attempt,
            max_attempts,
            journal,
            progress_interval,
            last_progress: Mutex::new(None),
        }
    }

    /// Reports progress. Writes are throttled to one per `journal.progress_interval`, so a
    /// handler may call this as often as it likes; 100% is always written.
    pub fn progress(&self, percent: u8, message: impl Into<String>) {
        let now = Instant::now();
        {
            let mut last = self
                .last_progress
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if percent < 100 && last.is_some_and(|t| now - t < self.progress_interval) {
                return;
            }
            *last = Some(now);
        }
        self.journal
            .progress(&self.id, percent, Some(message.into()));
    }
}

/// The outside services handlers use; built once per process.
pub struct Services {
    /// The daemon's Postgres: the journal's database also holds the jobs' own tables.
    pub pg: PgPool,
    /// Where `export.*` jobs write, and the fonts of their PDFs.
    pub exports: ExportsConfig,
    /// The fonts, logo and style of the PDFs (`[exports]`), read on the first PDF and kept.
    pub pdf: std::sync::Arc<PdfAssets>,
    /// Tests the scoring jobs have prepared, kept between jobs.
    pub tests: PreparedTests,
    /// Stores `score.attempt` results in batches.
    pub scores: ScoreWriter,
    /// Templates, the SMTP transport and the limits of the `email.*` jobs.
    pub email: email::EmailService,
    /// The AI provider's client and the settings of the `ai.*` jobs.
    pub ai: ai::AiService,
    /// The indexes, their backends' clients and the settings of the `index.*` jobs.
    pub indexing: indexing::IndexingService,
    /// Cancelled when the process begins to shut down: a handler of many small steps (a bulk
    /// email) starts no new step, finishes those under way and returns, so nothing is cut off
    /// mid-send when the shutdown timeout runs out.
    pub stopping: tokio_util::sync::CancellationToken,
    /// Each queue's rate limit, shared with every process through Redis. The executor takes one
    /// unit per job before the handler runs, except on queues whose handler meters itself
    /// ([`meters_own_rate`]), which call `rates.acquire(queue)` once per unit they spend.
    pub rates: RateLimits,
}

/// Whether `queue`'s handler takes its queue's rate limit itself, so the executor does not take
/// a unit per job. True for `emails`, where a unit is a message (one bulk job sends thousands,
/// so its handler calls `services.rates.acquire(Queue::Emails)` before each message), and for
/// `ai`, where a unit is a request to the provider (one `ai.hints` job makes one per question
/// not cached, and more for retries; a cached question makes none).
pub fn meters_own_rate(queue: Queue) -> bool {
    matches!(queue, Queue::Emails | Queue::Ai)
}

/// Runs the handler of the envelope's kind.
pub async fn dispatch(
    envelope: &Envelope,
    ctx: &JobContext,
    services: &Services,
) -> Result<Value, JobError> {
    let pg = &services.pg;
    match envelope.kind.as_str() {
        Noop::KIND => diag::noop(envelope.payload_as()?).await,
        Sleep::KIND => diag::sleep(envelope.payload_as()?, ctx).await,
        Fail::KIND => diag::fail(envelope.payload_as()?, ctx).await,
        ScoreAttempt::KIND => {
            let submitted = SubmittedAttempt::from_json(envelope.payload.get()).map_err(|e| {
                EnvelopeError::PayloadMismatch {
                    kind: envelope.kind.clone(),
                    reason: e.to_string(),
                }
            })?;
            scoring::score_attempt(submitted, services).await
        }
        RescoreTest::KIND => scoring::rescore_test(envelope.payload_as()?, ctx, services).await,
        FinalizeTest::KIND => scoring::finalize_test(envelope.payload_as()?, ctx, services).await,
        ExportResultsCsv::KIND => {
            let dir = ExportDir::new(&services.exports.directory);
            let progress = |percent: u8, message: String| ctx.progress(percent, message);
            exports::results_csv(envelope.payload_as()?, pg, &dir, &progress).await
        }
        ExportReportPdf::KIND => {
            let dir = ExportDir::new(&services.exports.directory);
            exports::report_pdf(envelope.payload_as()?, pg, &dir, &services.pdf).await
        }
        ExportTestReportPdf::KIND => {
            let dir = ExportDir::new(&services.exports.directory);
            exports::test_report_pdf(envelope.payload_as()?, pg, &dir, &services.pdf).await
        }
        EmailSend::KIND => email::send(envelope.payload_as()?, ctx, services).await,
        EmailBulk::KIND => email::bulk(envelope.payload_as()?, ctx, services).await,
        AiHints::KIND => ai::hints(envelope.payload_as()?, ctx, services).await,
        AiEvaluate::KIND => ai::evaluate(envelope.payload_as()?, ctx, services).await,
        IndexUpsert::KIND => indexing::upsert(envelope.payload_as()?, ctx, services).await,
        IndexDelete::KIND => indexing::delete(envelope.payload_as()?, ctx, services).await,
        IndexRebuild::KIND => indexing::rebuild(envelope.payload_as()?, ctx, services).await,
        other => Err(EnvelopeError::UnknownKind(other.to_owned()).into()),
    }
}
