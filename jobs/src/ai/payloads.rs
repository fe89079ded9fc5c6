//! The payload of `ai.hints`: the questions, given inline with their text and key. Stored tests
//! (docs/SCORING.md) hold keys but no question text, so a job cannot name one.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::ai::leak::Number;
use crate::limits::{ECHO_BYTES, shorten};
use crate::payload::{JobPayload, Queue};
/// The question types of docs/SCORING.md: the same names on the wire as in a test.
pub use crate::scoring::QuestionType;

/// Three graded hints (a nudge, a method, a near-solution) for each question.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AiHints {
    /// At least one, at most `ai.max_questions` (config).
    pub questions: Vec<HintQuestion>,
}

impl JobPayload for AiHints {
    const KIND: &'static str = "ai.hints";
    const QUEUE: Queue = Queue::Ai;
}

/// One question as the candidate sees it, and its key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HintQuestion {
    /// The producer's id, echoed in the result; not sent to the provider and not part of the
    /// cache key, so the same question in many tests is asked once.
    pub id: String,
    #[serde(rename = "type")]
    pub kind: QuestionType,
    pub text: String,
    /// For `mcq` and `msq` only: at least two, ids unique.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<QuestionOption>,
    /// The key: an option id (`mcq`), a list of option ids (`msq`), a whole number as a string
    /// (`integer`, `"42"`), a number as a string (`numeric`, `"9.81"`). Required for those
    /// types (the hints are checked against it); `subjective` questions take none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<Answer>,
    /// `numeric` only: a hint stating any number within `answer` ± `tolerance` is a leak.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuestionOption {
    pub id: String,
    pub text: String,
}

/// One option id or number (`"B"`, `"42"`), or the option ids of an `msq` key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Answer {
    One(String),
    Many(Vec<String>),
}

impl HintQuestion {
    /// Checks what serde cannot: the key fits the type and the options. The error names the
    /// question.
    pub fn check(&self) -> Result<(), String> {
        let id = shorten(&self.id, ECHO_BYTES);
        let problem = |what: &str| Err(format!("question `{id}`: {what}"));
        if self.id.is_empty() {
            return Err("a question has an empty `id`".into());
        }
        if self.text.trim().is_empty() {
            return problem("`text` is empty");
        }
        let choice = matches!(self.kind, QuestionType::Mcq | QuestionType::Msq);
        if choice {
            if self.options.len() < 2 {
                return problem("an mcq or msq question needs at least two `options`");
            }
            let mut ids = HashSet::new();
            for option in &self.options {
                if option.id.is_empty() || option.text.trim().is_empty() {
                    return problem("every option needs an `id` and a `text`");
                }
                if !ids.insert(option.id.as_str()) {
                    return problem(&format!(
                        "option `{}` is given twice",
                        shorten(&option.id, ECHO_BYTES)
                    ));
                }
            }
        } else if !self.options.is_empty() {
            return problem("only mcq and msq questions have `options`");
        }
        if self.tolerance.is_some() && self.kind != QuestionType::Numeric {
            return problem("only numeric questions have a `tolerance`");
        }
        let is_option = |answer: &str| self.options.iter().any(|o| o.id == answer);
        match (self.kind, &self.answer) {
            (QuestionType::Subjective, None) => Ok(()),
            (QuestionType::Subjective, Some(_)) => problem(
                "a subjective question takes no `answer` (there is no key to check hints against)",
            ),
            (_, None) => problem("`answer` is missing: hints are checked against the key"),
            (QuestionType::Mcq, Some(Answer::One(answer))) if is_option(answer.as_str()) => Ok(()),
            (QuestionType::Mcq, Some(_)) => problem("an mcq `answer` is one of its option ids"),
            (QuestionType::Msq, Some(Answer::Many(answers)))
                if !answers.is_empty() && answers.iter().all(|a| is_option(a.as_str())) =>
            {
                Ok(())
            }
            (QuestionType::Msq, Some(_)) => {
                problem("an msq `answer` is a non-empty list of its option ids")
            }
            (QuestionType::Integer, Some(Answer::One(answer)))
                if Number::parse(answer).is_some_and(Number::is_integer) =>
            {
                Ok(())
            }
            (QuestionType::Integer, Some(_)) => {
                problem("an integer `answer` is a whole number as a string, e.g. \"42\"")
            }
            (QuestionType::Numeric, Some(Answer::One(answer))) => {
                if Number::parse(answer).is_none() {
                    return problem("a numeric `answer` is a number as a string, e.g. \"9.81\"");
                }
                match &self.tolerance {
                    Some(t) if Number::parse(t).is_none_or(Number::is_negative) => {
                        problem("`tolerance` is a number of at least 0 as a string, e.g. \"0.01\"")
                    }
                    _ => Ok(()),
                }
            }
            (QuestionType::Numeric, Some(Answer::Many(_))) => {
                problem("a numeric `answer` is a number as a string, e.g. \"9.81\"")
            }
        }
    }
}

impl AiHints {
    /// Checks every question and that no id is used twice (the result is by id).
    pub fn check(&self, max_questions: usize) -> Result<(), String> {
        if self.questions.is_empty() {
            return Err("ai.hints: `questions` is empty".into());
        }
        if self.questions.len() > max_questions {
            return Err(format!(
                "ai.hints: {} questions, more than ai.max_questions = {max_questions}",
                self.questions.len()
            ));
        }
        let mut ids = HashSet::new();
        for question in &self.questions {
            question.check()?;
            if !ids.insert(question.id.as_str()) {
                return Err(format!(
                    "question `{}` is given twice",
                    shorten(&question.id, ECHO_BYTES)
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn question(value: serde_json::Value) -> HintQuestion {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn keys_must_fit_their_type() {
        let options = json!([{"id": "A", "text": "3"}, {"id": "B", "text": "4"}]);
        let ok = [
            json!({"id": "q", "type": "mcq", "text": "2+2?", "options": options, "answer": "B"}),
            json!({"id": "q", "type": "msq", "text": "?", "options": options, "answer": ["A", "B"]}),
            json!({"id": "q", "type": "integer", "text": "?", "answer": "007"}),
            json!({"id": "q", "type": "numeric", "text": "?", "answer": "9.81", "tolerance": "0.01"}),
            json!({"id": "q", "type": "subjective", "text": "Explain."}),
        ];
        for value in ok {
            question(value.clone())
                .check()
                .unwrap_or_else(|e| panic!("{value}: {e}"));
        }
        let bad = [
            (
                json!({"id": "q", "type": "mcq", "text": "?", "options": options, "answer": "C"}),
                "an mcq `answer` is one of its option ids",
            ),
            (
                json!({"id": "q", "type": "mcq", "text": "?", "options": [{"id": "A", "text": "x"}], "answer": "A"}),
                "at least two `options`",
            ),
            (
                json!({"id": "q", "type": "msq", "text": "?", "options": options, "answer": []}),
                "non-empty list",
            ),
            (
                json!({"id": "q", "type": "integer", "text": "?", "answer": "4.5"}),
                "whole number",
            ),
            (
                json!({"id": "q", "type": "numeric", "text": "?", "answer": "x"}),
                "a numeric `answer`",
            ),
            (
                json!({"id": "q", "type": "numeric", "text": "?", "answer": "1", "tolerance": "-1"}),
                "`tolerance`",
            ),
            (
                json!({"id": "q", "type": "integer", "text": "?"}),
                "`answer` is missing",
            ),
            (
                json!({"id": "q", "type": "subjective", "text": "?", "answer": "x"}),
                "takes no `answer`",
            ),
            (
                json!({"id": "q", "type": "subjective", "text": " "}),
                "`text` is empty",
            ),
        ];
        for (value, expected) in bad {
            let err = question(value.clone()).check().unwrap_err();
            assert!(err.contains(expected), "{value}: {err}");
            assert!(err.starts_with("question `q`: "), "{err}");
        }
    }

    #[test]
    fn a_job_is_bounded_and_its_ids_unique() {
        let q = json!({"id": "q", "type": "integer", "text": "?", "answer": "1"});
        let job: AiHints = serde_json::from_value(json!({"questions": [q, q]})).unwrap();
        assert_eq!(
            job.check(1).unwrap_err(),
            "ai.hints: 2 questions, more than ai.max_questions = 1"
        );
        assert_eq!(job.check(5).unwrap_err(), "question `q` is given twice");
        let err = serde_json::from_value::<AiHints>(json!({"test_id": "t"})).unwrap_err();
        assert!(err.to_string().contains("unknown field `test_id`"), "{err}");
    }
}
