//! A candidate's attempt as the web tier submits it: one response per question they touched.

use std::fmt;

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::marks::Marks;

/// The longest `candidate_name` an attempt may carry: a report card wraps a name onto as many
/// lines as it takes, and this keeps that within its first page.
pub const MAX_CANDIDATE_NAME_CHARS: usize = 300;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attempt {
    /// Results are keyed by it: scoring the same attempt again replaces its result.
    pub attempt_id: String,
    /// When given, it must be the test's id; a mismatch is an invalid attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate_id: Option<String>,
    /// The candidate's name as their report card prints it, in any script: display only
    /// (statistics and sheets stay keyed by `candidate_id`). At most
    /// [`MAX_CANDIDATE_NAME_CHARS`] characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate_name: Option<String>,
    /// In any order; questions without a response are unattempted.
    #[serde(default)]
    pub responses: Vec<Response>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Response {
    /// The question's id.
    pub question: String,
    /// Omitted: `answered` if there is an answer, `not_answered` if not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<ResponseState>,
    /// An empty string or list is the same as no answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<Answer>,
    /// For a subjective answer that has been marked (by a person or the AI job): from 0 to the
    /// question's `max_marks`. Without it the answer is pending evaluation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub awarded: Option<Marks>,
    /// Who awarded the marks when it was a model (`ai.evaluate` sets it); absent for a person.
    /// Only with `awarded`; the result repeats it on the question.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub awarded_by: Option<AwardedBy>,
    /// Time the candidate spent on the question, for analytics only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_spent_ms: Option<u64>,
}

/// The model that awarded a subjective answer its marks, and the version of the prompt it was
/// asked with: a result says which of its marks came from a model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwardedBy {
    pub model: String,
    pub prompt_version: String,
}

/// The five states of the NTA-style question palette.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseState {
    NotVisited,
    NotAnswered,
    Answered,
    /// Flagged without an answer: not scored.
    MarkedForReview,
    /// Flagged with an answer: scored like `answered`.
    AnsweredAndMarkedForReview,
}

impl ResponseState {
    /// Whether an answer in this state is scored.
    pub fn counts_answer(self) -> bool {
        matches!(
            self,
            ResponseState::Answered | ResponseState::AnsweredAndMarkedForReview
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            ResponseState::NotVisited => "not_visited",
            ResponseState::NotAnswered => "not_answered",
            ResponseState::Answered => "answered",
            ResponseState::MarkedForReview => "marked_for_review",
            ResponseState::AnsweredAndMarkedForReview => "answered_and_marked_for_review",
        }
    }
}

/// An answer: one string (an option id, a number such as `"11.00"`, or free text) or a list of
/// option ids. Numbers are strings so that `"11"` and `"11.00"` reach the scorer as typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Text(String),
    Options(Vec<String>),
}

impl Answer {
    /// An empty string or list, which counts as no answer.
    pub fn is_empty(&self) -> bool {
        match self {
            Answer::Text(s) => s.trim().is_empty(),
            Answer::Options(list) => list.is_empty(),
        }
    }
}

impl Response {
    /// The state, with the default filled in.
    pub fn effective_state(&self) -> ResponseState {
        self.state.unwrap_or(match &self.answer {
            Some(a) if !a.is_empty() => ResponseState::Answered,
            _ => ResponseState::NotAnswered,
        })
    }
}

impl Serialize for Answer {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Answer::Text(s) => s.serialize(serializer),
            Answer::Options(list) => list.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for Answer {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AnswerVisitor;

        impl<'de> Visitor<'de> for AnswerVisitor {
            type Value = Answer;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "an answer: a string (\"B\", \"11.00\", free text) or a list of option ids; \
                     numbers are written as strings",
                )
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Answer, E> {
                Ok(Answer::Text(v.to_owned()))
            }

            fn visit_string<E: de::Error>(self, v: String) -> Result<Answer, E> {
                Ok(Answer::Text(v))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Answer, A::Error> {
                Vec::deserialize(de::value::SeqAccessDeserializer::new(seq)).map(Answer::Options)
            }
        }

        deserializer.deserialize_any(AnswerVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_answers_of_every_shape() {
        let attempt: Attempt = serde_json::from_value(json!({
            "attempt_id": "a1",
            "responses": [
                {"question": "q1", "answer": "B", "time_spent_ms": 4200},
                {"question": "q2", "answer": ["A", "C"], "state": "answered_and_marked_for_review"},
                {"question": "q3", "state": "marked_for_review"},
                {"question": "q4", "answer": "11.00"},
                {"question": "q5", "answer": ""}
            ]
        }))
        .unwrap();
        let states: Vec<_> = attempt
            .responses
            .iter()
            .map(Response::effective_state)
            .collect();
        assert_eq!(
            states,
            [
                ResponseState::Answered,
                ResponseState::AnsweredAndMarkedForReview,
                ResponseState::MarkedForReview,
                ResponseState::Answered,
                ResponseState::NotAnswered,
            ]
        );
        assert_eq!(
            attempt.responses[1].answer,
            Some(Answer::Options(vec!["A".into(), "C".into()]))
        );
        let back: Attempt =
            serde_json::from_value(serde_json::to_value(&attempt).unwrap()).unwrap();
        assert_eq!(back, attempt);
    }

    #[test]
    fn a_number_answer_is_refused_with_a_hint() {
        let err = serde_json::from_value::<Response>(json!({"question": "q1", "answer": 11}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("numbers are written as strings"), "{err}");
    }
}
