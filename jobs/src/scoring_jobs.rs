//! The payloads of the `score.*` jobs. The scoring itself is in [`crate::scoring`].

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::catalogue::{JobPayload, Queue};
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
