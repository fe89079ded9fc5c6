//! Scoring attempts of tests, exactly: the test and attempt formats, the scorer, and the
//! analytics of a whole test (ranks, percentiles, statistics). Pure functions only; the
//! `score.*` jobs store what these return. The formats are documented in docs/SCORING.md and
//! docs/scoring.schema.json.
//!
//! ```
//! use quizworker_jobs::scoring::{Attempt, PreparedTest, TestDef};
//!
//! let test: TestDef = serde_json::from_str(r#"{
//!     "test_id": "neet-mock-1", "key_version": 1,
//!     "marking": {"correct": 4, "incorrect": -1},
//!     "sections": [{"id": "physics", "questions": [
//!         {"id": "p1", "type": "mcq", "answer": "B"},
//!         {"id": "p2", "type": "mcq", "answer": "D"}
//!     ]}]
//! }"#).unwrap();
//! let test = PreparedTest::new(test).unwrap(); // once per test and key version
//! let attempt: Attempt = serde_json::from_str(r#"{
//!     "attempt_id": "a-1",
//!     "responses": [{"question": "p1", "answer": "B"}, {"question": "p2", "answer": "A"}]
//! }"#).unwrap();
//! let result = test.score(&attempt).unwrap();
//! assert_eq!(result.total.marks.to_string(), "3");
//! ```

mod analytics;
mod decimal;
mod marks;
mod payloads;
mod prepared;
mod response;
mod result;
mod rubric;
mod score;
mod test_def;
mod validate;

#[cfg(test)]
mod docs_examples;
#[cfg(test)]
mod exam_cases;
#[cfg(test)]
mod properties;

use serde::{Deserialize, Serialize};

pub use analytics::{
    AnalyticsError, Difficulty, Finalized, HistogramBar, MarkStatistics, Percentile,
    QuestionStatistics, ScoreCount, SectionStanding, SectionStatistics, Standing, TestAnalytics,
    TestStatistics, competition_ranks, finalize, histogram, nta_percentiles,
};
pub use decimal::{Rounding, RoundingMode};
pub use marks::{Marks, MarksError, RoundedDecimal};
pub use payloads::{FinalizeTest, RescoreTest, ScoreAttempt, SubmittedAttempt};
pub use prepared::{MAX_OPTIONS, PreparedTest, QuestionInfo};
pub use response::{Answer, Attempt, AwardedBy, MAX_CANDIDATE_NAME_CHARS, Response, ResponseState};
pub use result::{
    AttemptResult, Counts, DISPLAY_DECIMALS, Outcome, QuestionResult, SectionResult, Summary,
    TopicResult,
};
pub use rubric::{
    Criterion, MAX_CRITERIA, MAX_CRITERION_CHARS, MAX_CRITERION_ID_BYTES, MAX_RUBRIC_TEXT_CHARS,
    Rubric, on_step,
};
pub use test_def::{
    DEFAULT_OPTIONS, DropPolicy, Marking, MarkingByType, MsqScheme, NumericKey, Question,
    QuestionKind, QuestionType, Section, TestDef,
};
pub use validate::{Problem, ScoringError};

/// A test and one attempt of it in one document: the input of `quizworker score FILE.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoreRequest {
    pub test: TestDef,
    pub attempt: Attempt,
}

impl ScoreRequest {
    /// Checks the test, then scores the attempt. A test with problems is reported alone: an
    /// attempt cannot be checked against a test that does not hold together.
    pub fn score(&self) -> Result<AttemptResult, ScoringError> {
        PreparedTest::new(self.test.clone())?.score(&self.attempt)
    }
}

/// Scores a [`ScoreRequest`] given as JSON text: what `quizworker score FILE.json` prints is
/// this result, serialized.
pub fn score_json(text: &str) -> Result<AttemptResult, ScoringError> {
    let request: ScoreRequest =
        serde_json::from_str(text).map_err(|e| ScoringError::Malformed {
            message: e.to_string(),
        })?;
    request.score()
}
