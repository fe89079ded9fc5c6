//! The journal: every job's life in Postgres. `writer` batches the daemon's state changes,
//! `store` answers the operator's questions and makes their changes (retry, cancel).

pub mod store;
pub mod stored_json;
pub mod writer;

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

pub use writer::{Finish, JobStart, Journal, JournalError, StartOutcome};

/// A job's state: a closed set, in the spirit of River and Oban (docs/PROTOCOL.md has the
/// diagram). The daemon moves jobs between them; operators do with `jobs retry` and `cancel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting for its run-at time.
    Scheduled,
    /// Ready to run, waiting for a worker.
    Queued,
    Running,
    /// Failed an attempt and waits out its backoff before the next.
    Retrying,
    Completed,
    /// Out of attempts, or failed with an error that no retry can mend.
    Failed,
    /// Stopped by an operator: never runs again unless retried.
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 7] = [
        JobState::Scheduled,
        JobState::Queued,
        JobState::Running,
        JobState::Retrying,
        JobState::Completed,
        JobState::Failed,
        JobState::Cancelled,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            JobState::Scheduled => "scheduled",
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Retrying => "retrying",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    pub const fn is_finished(self) -> bool {
        matches!(
            self,
            JobState::Completed | JobState::Failed | JobState::Cancelled
        )
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error(
    "unknown job state `{0}` (states: scheduled, queued, running, retrying, completed, failed, cancelled)"
)]
pub struct UnknownState(String);

impl FromStr for JobState {
    type Err = UnknownState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_owned()))
    }
}

/// Postgres rejects NUL in text and `\u0000` in jsonb; a job must still be journaled, so the
/// journal's copy gets U+FFFD instead.
pub(crate) fn sanitize_text(text: &str) -> String {
    text.replace('\0', "\u{FFFD}")
}

/// A JSON text as the journal stores it: a NUL, which Postgres' text cannot hold, becomes U+FFFD.
pub(crate) fn json_text(text: &str) -> String {
    // JSON text can only spell a NUL `\u0000`; a match here may also be an escaped backslash
    // followed by `u0000`, which sanitizing leaves as it is.
    if text.contains("\\u0000")
        && let Ok(value) = serde_json::from_str(text)
    {
        sanitize_json(value).to_string()
    } else {
        text.to_owned()
    }
}

pub(crate) fn sanitize_json(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::String(s) if s.contains('\0') => Value::String(sanitize_text(&s)),
        Value::Array(items) => Value::Array(items.into_iter().map(sanitize_json).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (sanitize_text(&k), sanitize_json(v)))
                .collect(),
        ),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::json_text;

    #[test]
    fn json_text_replaces_nul_and_keeps_everything_else() {
        assert_eq!(json_text(r#"{"a": [1, "b"]}"#), r#"{"a": [1, "b"]}"#);
        let nul = json!({"k\u{0}": "x\u{0}y"}).to_string();
        assert_eq!(json_text(&nul), "{\"k\u{FFFD}\":\"x\u{FFFD}y\"}");
        // Text that merely spells the escape, with its backslash escaped, is not a NUL.
        assert_eq!(json_text(r#""\\u0000""#), r#""\\u0000""#);
    }
}
