//! The payloads of the `score.*` jobs. The scoring itself is in [`crate::scoring`].

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::payload::{JobPayload, Queue};
use crate::scoring::{Attempt, TestDef};

/// Scores one attempt and stores its result (replacing an earlier result of the same attempt),
/// and the candidate's per-topic and per-section statistics with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoreAttempt {
    /// The test, when the daemon may not have this key version yet: it is stored under its
    /// `test_id` and `key_version` the first time (a different test under a stored version is
    /// refused). Without it, `attempt.test_id` names a stored test, and its newest key
    /// version is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<TestDef>,
    pub attempt: Attempt,
    /// When the candidate submitted the attempt, for the result sheets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitted_at: Option<DateTime<Utc>>,
}

impl JobPayload for ScoreAttempt {
    const KIND: &'static str = "score.attempt";
    const QUEUE: Queue = Queue::Scoring;
}

/// A `score.attempt` payload read with the attempt's JSON text kept as it was sent, for a
/// store that keeps attempts as submitted: writing the attempt out again would cost as much as
/// reading it.
#[derive(Debug)]
pub struct SubmittedAttempt<'a> {
    pub job: ScoreAttempt,
    /// `job.attempt` as the producer wrote it.
    pub attempt_text: &'a str,
}

/// [`ScoreAttempt`]'s fields with the attempt left unread; `deny_unknown_fields` and the
/// field names must stay those of [`ScoreAttempt`] (a test below checks they read alike).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScoreAttemptText<'a> {
    #[serde(default)]
    test: Option<TestDef>,
    #[serde(borrow)]
    attempt: &'a RawValue,
    #[serde(default)]
    submitted_at: Option<DateTime<Utc>>,
}

impl<'a> SubmittedAttempt<'a> {
    /// Reads a `score.attempt` payload. Errors are serde's, as for [`ScoreAttempt`].
    pub fn from_json(payload: &'a str) -> Result<Self, serde_json::Error> {
        let text: ScoreAttemptText<'a> = serde_json::from_str(payload)?;
        let attempt = serde_json::from_str(text.attempt.get())?;
        Ok(SubmittedAttempt {
            job: ScoreAttempt {
                test: text.test,
                attempt,
                submitted_at: text.submitted_at,
            },
            attempt_text: text.attempt.get(),
        })
    }
}

/// Rescores every stored attempt of a test against a key version, after a key revision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RescoreTest {
    /// The revised test (a new `key_version`), stored before the rescore. Without it,
    /// `test_id` and optionally `key_version` name a stored version (default: the newest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<TestDef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_version: Option<u32>,
}

impl JobPayload for RescoreTest {
    const KIND: &'static str = "score.rescore_test";
    const QUEUE: Queue = Queue::Scoring;
}

/// Ranks every result of a test, computes NTA percentiles and the test's statistics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinalizeTest {
    pub test_id: String,
}

impl JobPayload for FinalizeTest {
    const KIND: &'static str = "score.finalize_test";
    const QUEUE: Queue = Queue::Scoring;
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_submitted_attempt_reads_like_the_payload_and_keeps_the_attempt_text() {
        let payload = r#"{"attempt": {"attempt_id": "a1",  "responses": [{"question": "q1", "answer": "B"}]},
                          "submitted_at": "2026-11-30T10:00:00Z"}"#;
        let submitted = SubmittedAttempt::from_json(payload).unwrap();
        let typed: ScoreAttempt = serde_json::from_str(payload).unwrap();
        assert_eq!(submitted.job, typed);
        assert_eq!(
            submitted.attempt_text,
            r#"{"attempt_id": "a1",  "responses": [{"question": "q1", "answer": "B"}]}"#
        );
    }

    #[test]
    fn a_submitted_attempt_refuses_what_the_payload_type_refuses() {
        let bad = [
            json!({"attempt": {"attempt_id": "a1"}, "extra": 1}),
            json!({"attempt": {"attempt_id": "a1", "extra": 1}}),
            json!({"test": null}),
            json!({"attempt": {"attempt_id": 7}}),
        ];
        for payload in bad {
            let text = payload.to_string();
            let ours = SubmittedAttempt::from_json(&text).unwrap_err().to_string();
            let theirs = serde_json::from_str::<ScoreAttempt>(&text)
                .unwrap_err()
                .to_string();
            let field = |e: &str| e.split(" at line").next().unwrap_or_default().to_owned();
            assert_eq!(field(&ours), field(&theirs), "{text}");
        }
    }
}
