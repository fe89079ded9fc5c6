//! The scored result of one attempt, as stored and shown to the candidate and the teacher.
//!
//! Every mark is exact ([`Marks`], a lowest-terms string in JSON); the `*_display` and
//! `*_percent` fields beside them are rounded for people, written on serialization only and
//! ignored when a result is read back.

use std::ops::{AddAssign, SubAssign};
use std::sync::Arc;

use serde::{Deserialize, Serialize, Serializer};

use super::marks::{Marks, RoundedDecimal};
use super::response::AwardedBy;

/// Decimals of the `*_display` fields.
pub const DISPLAY_DECIMALS: u32 = 2;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptResult {
    pub attempt_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate_id: Option<String>,
    pub test_id: Arc<str>,
    /// The key version the attempt was scored against.
    pub key_version: u32,
    /// Some subjective answers await evaluation: `marks` will change when they are awarded.
    pub provisional: bool,
    #[serde(flatten)]
    pub total: Summary,
    pub sections: Vec<SectionResult>,
    /// One entry per topic tag of the test, in order of first appearance.
    #[serde(default)]
    pub topics: Vec<TopicResult>,
}

impl AttemptResult {
    /// Every question's result, in the test's order.
    pub fn questions(&self) -> impl Iterator<Item = &QuestionResult> {
        self.sections.iter().flat_map(|s| &s.questions)
    }

    pub fn section(&self, id: &str) -> Option<&SectionResult> {
        self.sections.iter().find(|s| &*s.id == id)
    }

    pub fn topic(&self, topic: &str) -> Option<&TopicResult> {
        self.topics.iter().find(|t| &*t.topic == topic)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SectionResult {
    pub id: Arc<str>,
    #[serde(flatten)]
    pub summary: Summary,
    pub questions: Vec<QuestionResult>,
}

/// A candidate's performance on one topic in this attempt: what the daemon adds to the
/// candidate's running per-topic statistics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopicResult {
    pub topic: Arc<str>,
    #[serde(flatten)]
    pub summary: Summary,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct QuestionResult {
    pub id: Arc<str>,
    pub outcome: Outcome,
    pub marks: Marks,
    /// What the question adds to the maximum (0 if removed).
    pub max_marks: Marks,
    /// The candidate gave a scored answer (it tells, for a dropped question, whether
    /// `marks_to_attempted` applied).
    pub answered: bool,
    #[serde(default)]
    pub time_spent_ms: Option<u64>,
    /// The model that awarded a subjective answer's marks (from the attempt's response);
    /// `None` for marks a person awarded and for every other question.
    #[serde(default)]
    pub awarded_by: Option<AwardedBy>,
}

/// How one question ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Correct,
    Incorrect,
    /// Some credit, not all: an MSQ under a partial scheme, a subjective answer awarded part of
    /// its marks.
    Partial,
    /// No answer, or one only marked for review.
    Unattempted,
    /// Dropped after challenges; its marks follow the drop policy.
    Dropped,
    /// A subjective answer not yet evaluated; scores 0 for now.
    PendingEvaluation,
    /// Answered beyond its group's attempt limit: not evaluated, scores 0.
    OverLimit,
}

/// Marks and counts of a set of questions: a section, a topic or the whole attempt.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Summary {
    pub marks: Marks,
    pub max_marks: Marks,
    /// The sum of the negative marks, as a positive number: what a candidate lost by guessing.
    pub lost_to_negatives: Marks,
    pub counts: Counts,
    /// Sum of the times given with the responses; `None` if no response gave one.
    #[serde(default)]
    pub time_spent_ms: Option<u64>,
}

impl Summary {
    /// Answered questions per question, as a percentage.
    pub fn attempt_rate_percent(&self) -> Option<RoundedDecimal> {
        self.counts.attempt_rate_percent()
    }

    /// Correct answers per judged answer, as a percentage.
    pub fn accuracy_percent(&self) -> Option<RoundedDecimal> {
        self.counts.accuracy_percent()
    }
}

/// How many questions ended each way. Counts add and subtract, so that a candidate's running
/// statistics can take in a result and, on a rescore, give the old one back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub correct: u32,
    pub incorrect: u32,
    pub partial: u32,
    pub unattempted: u32,
    pub dropped: u32,
    pub pending_evaluation: u32,
    pub over_limit: u32,
    /// Questions with a scored answer, whatever their outcome (over-limit answers excluded).
    pub answered: u32,
}

impl Counts {
    /// All questions counted.
    pub fn questions(&self) -> u32 {
        self.correct
            + self.incorrect
            + self.partial
            + self.unattempted
            + self.dropped
            + self.pending_evaluation
            + self.over_limit
    }

    /// Answers judged right or wrong: correct, incorrect and partial ones.
    pub fn judged(&self) -> u32 {
        self.correct + self.incorrect + self.partial
    }

    pub(crate) fn add(&mut self, outcome: Outcome, answered: bool) {
        *match outcome {
            Outcome::Correct => &mut self.correct,
            Outcome::Incorrect => &mut self.incorrect,
            Outcome::Partial => &mut self.partial,
            Outcome::Unattempted => &mut self.unattempted,
            Outcome::Dropped => &mut self.dropped,
            Outcome::PendingEvaluation => &mut self.pending_evaluation,
            Outcome::OverLimit => &mut self.over_limit,
        } += 1;
        self.answered += u32::from(answered);
    }

    /// `answered / questions` as a percentage to 2 decimals; `None` for no questions.
    pub fn attempt_rate_percent(&self) -> Option<RoundedDecimal> {
        percent(self.answered, self.questions())
    }

    /// `correct / (correct + incorrect + partial)` as a percentage to 2 decimals; `None` if no
    /// answer was judged. Dropped and pending answers are left out: they say nothing about
    /// whether the candidate knew the answer.
    pub fn accuracy_percent(&self) -> Option<RoundedDecimal> {
        percent(self.correct, self.judged())
    }

    fn fields(&mut self) -> [&mut u32; 8] {
        [
            &mut self.correct,
            &mut self.incorrect,
            &mut self.partial,
            &mut self.unattempted,
            &mut self.dropped,
            &mut self.pending_evaluation,
            &mut self.over_limit,
            &mut self.answered,
        ]
    }
}

impl AddAssign for Counts {
    fn add_assign(&mut self, mut other: Counts) {
        for (a, b) in self.fields().into_iter().zip(other.fields()) {
            *a += *b;
        }
    }
}

/// Saturates at zero, so that taking back a result twice cannot wrap around.
impl SubAssign for Counts {
    fn sub_assign(&mut self, mut other: Counts) {
        for (a, b) in self.fields().into_iter().zip(other.fields()) {
            *a = a.saturating_sub(*b);
        }
    }
}

fn percent(part: u32, whole: u32) -> Option<RoundedDecimal> {
    (whole > 0).then(|| RoundedDecimal::new(100 * i128::from(part), i128::from(whole), 2))
}

/// The JSON form of a [`Summary`], with the rounded fields for people.
#[derive(Serialize)]
struct SummaryOut<'a> {
    marks: Marks,
    marks_display: RoundedDecimal,
    max_marks: Marks,
    max_marks_display: RoundedDecimal,
    lost_to_negatives: Marks,
    lost_to_negatives_display: RoundedDecimal,
    question_count: u32,
    counts: &'a Counts,
    attempt_rate_percent: Option<RoundedDecimal>,
    accuracy_percent: Option<RoundedDecimal>,
    time_spent_ms: Option<u64>,
}

impl Serialize for Summary {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        SummaryOut {
            marks: self.marks,
            marks_display: self.marks.display(DISPLAY_DECIMALS),
            max_marks: self.max_marks,
            max_marks_display: self.max_marks.display(DISPLAY_DECIMALS),
            lost_to_negatives: self.lost_to_negatives,
            lost_to_negatives_display: self.lost_to_negatives.display(DISPLAY_DECIMALS),
            question_count: self.counts.questions(),
            counts: &self.counts,
            attempt_rate_percent: self.attempt_rate_percent(),
            accuracy_percent: self.accuracy_percent(),
            time_spent_ms: self.time_spent_ms,
        }
        .serialize(serializer)
    }
}

#[derive(Serialize)]
struct QuestionOut<'a> {
    id: &'a str,
    outcome: Outcome,
    marks: Marks,
    marks_display: RoundedDecimal,
    max_marks: Marks,
    answered: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    time_spent_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    awarded_by: Option<&'a AwardedBy>,
}

impl Serialize for QuestionResult {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        QuestionOut {
            id: &self.id,
            outcome: self.outcome,
            marks: self.marks,
            marks_display: self.marks.display(DISPLAY_DECIMALS),
            max_marks: self.max_marks,
            answered: self.answered,
            time_spent_ms: self.time_spent_ms,
            awarded_by: self.awarded_by.as_ref(),
        }
        .serialize(serializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_and_take_back() {
        let mut running = Counts::default();
        let mut one = Counts::default();
        one.add(Outcome::Correct, true);
        one.add(Outcome::Incorrect, true);
        one.add(Outcome::Unattempted, false);
        running += one;
        running += one;
        running -= one;
        assert_eq!(running, one);
        assert_eq!(one.questions(), 3);
        assert_eq!(one.accuracy_percent().unwrap().to_string(), "50.00");
        assert_eq!(one.attempt_rate_percent().unwrap().to_string(), "66.67");
        running -= one;
        running -= one;
        assert_eq!(running, Counts::default());
        assert!(running.accuracy_percent().is_none());
    }
}
