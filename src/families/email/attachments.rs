//! Attachments are files that export jobs wrote: the email names the export job, and the file
//! is taken from the export directory by the name that job recorded, checked against the
//! SHA-256 it recorded. A payload never gives a path.

use std::path::Path;
use std::time::Duration;

use lettre::message::header::ContentType;
use quizworker_jobs::email::Attachment;
use quizworker_jobs::email::headers::one_line;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use super::smtp::FileAttachment;
use crate::families::JobError;

/// How an email waits for the exports it attaches.
pub struct Waiting<'a> {
    /// The email's own job, whose age bounds the wait.
    pub email_job: &'a str,
    /// `email.attachment_wait`.
    pub limit: Duration,
}

/// Reads the attachments of one message. An export still queued, scheduled or running makes
/// the email snooze (its attempts untouched) for up to `waiting.limit` after it was enqueued,
/// then fail transiently (retried with backoff); an export that failed, or a job that is not an
/// export, fails the email.
pub async fn load(
    pg: &PgPool,
    exports_dir: &Path,
    attachments: &[Attachment],
    max_bytes: u64,
    waiting: &Waiting<'_>,
) -> Result<Vec<FileAttachment>, JobError> {
    let mut files = Vec::with_capacity(attachments.len());
    let mut total = 0u64;
    for (i, attachment) in attachments.iter().enumerate() {
        let file = load_one(
            pg,
            exports_dir,
            attachment,
            max_bytes - total.min(max_bytes),
            waiting,
        )
        .await
        .map_err(|e| match e {
            JobError::Permanent(m) => JobError::Permanent(format!("attachments[{i}]: {m}")),
            JobError::Transient(m) => JobError::Transient(format!("attachments[{i}]: {m}")),
            JobError::Snooze { until, reason } => JobError::Snooze {
                until,
                reason: format!("attachments[{i}]: {reason}"),
            },
        })?;
        total += file.bytes.len() as u64;
        files.push(file);
    }
    Ok(files)
}

async fn load_one(
    pg: &PgPool,
    exports_dir: &Path,
    attachment: &Attachment,
    room: u64,
    waiting: &Waiting<'_>,
) -> Result<FileAttachment, JobError> {
    let job = &attachment.export_job;
    let row: Option<(String, String, Option<Value>)> =
        sqlx::query_as("SELECT kind, state, result FROM jobs WHERE id = $1")
            .bind(job)
            .fetch_optional(pg)
            .await
            .map_err(|e| JobError::Transient(format!("could not read the export job: {e}")))?;
    let Some((kind, state, result)) = row else {
        return Err(JobError::Transient(format!(
            "export job `{job}` is not in the journal yet (not started, or no such job): waiting for it"
        )));
    };
    if !kind.starts_with("export.") {
        return Err(JobError::Permanent(format!(
            "job `{job}` is a {kind}, not an export"
        )));
    }
    match state.as_str() {
        "completed" => {}
        "failed" | "cancelled" => {
            return Err(JobError::Permanent(format!(
                "export job `{job}` {state}: there is no file to attach"
            )));
        }
        _ => return Err(wait_for_export(pg, job, &state, waiting).await),
    }
    let result = result.unwrap_or_default();
    let field = |name: &str| result.get(name).and_then(Value::as_str).unwrap_or_default();
    let (file_name, sha256) = (field("file_name"), field("sha256"));
    // Our own export names never hold a separator; a row that says otherwise was not written
    // by an export of this daemon.
    if file_name.is_empty() || file_name.contains(['/', '\\']) || file_name.starts_with('.') {
        return Err(JobError::Permanent(format!(
            "export job `{job}` recorded no usable file name"
        )));
    }
    let path = exports_dir.join(file_name);
    let size = tokio::fs::metadata(&path)
        .await
        .map_err(|e| {
            JobError::Permanent(format!(
                "the file of export job `{job}`, {}, cannot be read: {e} (removed? run the export again)",
                path.display()
            ))
        })?
        .len();
    if size > room {
        return Err(JobError::Permanent(format!(
            "the file of export job `{job}` is {size} bytes: over email.max_attachment_bytes"
        )));
    }
    let bytes = tokio::fs::read(&path)
        .await
        .map_err(|e| JobError::Transient(format!("could not read {}: {e}", path.display())))?;
    if !sha256.is_empty() && hex::encode(Sha256::digest(&bytes)) != sha256 {
        return Err(JobError::Permanent(format!(
            "the file of export job `{job}` has changed since the export wrote it (SHA-256 differs)"
        )));
    }
    let filename = match &attachment.filename {
        Some(name) => checked_filename(name)?,
        None => file_name.to_owned(),
    };
    Ok(FileAttachment {
        content_type: content_type(&filename),
        filename,
        bytes,
    })
}

/// The error that makes an email wait for an export still `state`. The wait is a snooze,
/// polled more slowly the longer it lasts (a second at first, a minute at most), so a report
/// card queued behind thousands of others holds its email back without failing it. Past
/// `waiting.limit` it is a transient failure: an export stuck for that long gets the email's
/// own retries, then the email fails and says which export it waited for.
async fn wait_for_export(pg: &PgPool, job: &str, state: &str, waiting: &Waiting<'_>) -> JobError {
    let waited: Result<Option<f64>, _> = sqlx::query_scalar(
        "SELECT extract(epoch FROM now() - created_at)::float8 FROM jobs WHERE id = $1",
    )
    .bind(waiting.email_job)
    .fetch_optional(pg)
    .await;
    let waited = match waited {
        // The producer stamped `created_at`: an absurd one must not panic the handler.
        Ok(seconds) => Duration::try_from_secs_f64(seconds.unwrap_or_default().max(0.0))
            .unwrap_or(Duration::MAX),
        Err(e) => return JobError::Transient(format!("could not read the email's own job: {e}")),
    };
    let reason = format!("export job `{job}` is {state}: waiting for its file");
    if waited >= waiting.limit {
        return JobError::Transient(format!(
            "{reason} (for {} already, over email.attachment_wait)",
            humantime::format_duration(Duration::from_secs(waited.as_secs()))
        ));
    }
    let poll = (waited / 10).clamp(Duration::from_secs(1), Duration::from_secs(60));
    JobError::Snooze {
        until: chrono::Utc::now() + poll,
        reason,
    }
}

/// A file name a producer chose: one line, no directory part, not empty.
fn checked_filename(name: &str) -> Result<String, JobError> {
    one_line("attachment's filename", name).map_err(|e| JobError::Permanent(e.to_string()))?;
    if name.trim().is_empty() || name.contains(['/', '\\']) || name.len() > 255 {
        return Err(JobError::Permanent(format!(
            "attachment filename `{}` must be a file name: 1 to 255 bytes, no `/` or `\\`",
            quizworker_jobs::limits::shorten(name, quizworker_jobs::limits::ECHO_BYTES)
        )));
    }
    Ok(name.to_owned())
}

fn content_type(filename: &str) -> ContentType {
    let ext = filename
        .rsplit('.')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let mime = match ext.as_str() {
        "pdf" => "application/pdf",
        "csv" => "text/csv; charset=utf-8",
        _ => "application/octet-stream",
    };
    ContentType::parse(mime).unwrap_or(ContentType::TEXT_PLAIN)
}
