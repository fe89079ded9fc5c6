//! Bad input: every problem found in a test or an attempt, each naming where it is, so that one
//! failed job tells the web tier everything it has to fix.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::decimal::Number;
use super::marks::Marks;
use super::prepared::{Key, PreparedTest, QuestionPlan};
use super::response::{Answer, Attempt, Response};
use super::test_def::QuestionType;
use crate::limits::{ECHO_BYTES, shorten};

/// One thing wrong with a test or an attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub question: Option<String>,
    /// Index (from 0) in the attempt's `responses`, for problems of a response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<usize>,
    pub message: String,
}

impl Problem {
    pub(crate) fn test(message: impl Into<String>) -> Problem {
        Problem {
            section: None,
            question: None,
            response: None,
            message: message.into(),
        }
    }

    pub(crate) fn section(section: &str, message: impl Into<String>) -> Problem {
        Problem {
            section: Some(section.to_owned()),
            ..Problem::test(message)
        }
    }

    pub(crate) fn question(section: &str, question: &str, message: impl Into<String>) -> Problem {
        Problem {
            section: Some(section.to_owned()),
            question: Some(question.to_owned()),
            ..Problem::test(message)
        }
    }

    pub(crate) fn response(index: usize, question: &str, message: impl Into<String>) -> Problem {
        Problem {
            question: Some(question.to_owned()),
            response: Some(index),
            ..Problem::test(message)
        }
    }
}

/// How much of an id a problem's text quotes, and how much of its message (which may quote an
/// answer or a key): a large bad input is named, not copied into the job's error.
const ID_BYTES: usize = 64;
const MESSAGE_BYTES: usize = 300;
/// Problems a [`ScoringError`]'s text names before it counts the rest (its
/// [`problems`](ScoringError::problems) and JSON form have them all).
const LISTED_PROBLEMS: usize = 20;

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let section = self.section.as_deref().map(|id| shorten(id, ID_BYTES));
        let question = self.question.as_deref().map(|id| shorten(id, ID_BYTES));
        match (&self.response, section, question) {
            (Some(i), _, Some(q)) => write!(f, "response {i} (question `{q}`): ")?,
            (Some(i), _, None) => write!(f, "response {i}: ")?,
            (None, Some(s), Some(q)) => write!(f, "question `{q}` in section `{s}`: ")?,
            (None, Some(s), None) => write!(f, "section `{s}`: ")?,
            (None, None, Some(q)) => write!(f, "question `{q}`: ")?,
            (None, None, None) => {}
        }
        f.write_str(&shorten(&self.message, MESSAGE_BYTES))
    }
}

/// Why an attempt could not be scored. Every variant is permanent: the same input fails the
/// same way every time, so the daemon must not retry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "error", rename_all = "snake_case")]
pub enum ScoringError {
    /// The document is not JSON of the expected shape; serde's message names the line and
    /// column. Only [`score_json`](super::score_json) returns it.
    #[error("malformed input: {}", shorten(.message, ECHO_BYTES))]
    Malformed { message: String },
    /// The test definition (its keys or marking) is wrong: every attempt of it would fail.
    #[error("invalid test: {}", List(problems))]
    InvalidTest { problems: Vec<Problem> },
    /// The attempt does not fit the test.
    #[error("invalid attempt: {}", List(problems))]
    InvalidAttempt { problems: Vec<Problem> },
}

impl ScoringError {
    /// Every problem found (none for [`ScoringError::Malformed`]).
    pub fn problems(&self) -> &[Problem] {
        match self {
            ScoringError::Malformed { .. } => &[],
            ScoringError::InvalidTest { problems } | ScoringError::InvalidAttempt { problems } => {
                problems
            }
        }
    }

    pub(crate) fn invalid_test(problems: Vec<Problem>) -> ScoringError {
        ScoringError::InvalidTest { problems }
    }

    pub(crate) fn invalid_attempt(problems: Vec<Problem>) -> ScoringError {
        ScoringError::InvalidAttempt { problems }
    }
}

struct List<'a>(&'a [Problem]);

impl fmt::Display for List<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.len() {
            1 => {}
            n => write!(f, "{n} problems: ")?,
        }
        for (i, p) in self.0.iter().take(LISTED_PROBLEMS).enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{p}")?;
        }
        if let Some(more) = self.0.len().checked_sub(LISTED_PROBLEMS).filter(|&n| n > 0) {
            write!(f, "; and {more} more")?;
        }
        Ok(())
    }
}

/// What one question's response amounts to, once checked: the scorer's input.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Slot {
    pub(crate) given: Given,
    pub(crate) awarded: Option<Marks>,
    pub(crate) time_spent_ms: Option<u64>,
    /// Index of the response that filled the slot, to report repeats (and, for the result,
    /// to find who awarded its marks).
    pub(crate) response: Option<u32>,
}

/// A scored answer; `None` also for an answer in a state that is not scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Given {
    None,
    /// Bits of the chosen options.
    Options(u64),
    Number(Number),
    Text,
}

impl Slot {
    const EMPTY: Slot = Slot {
        given: Given::None,
        awarded: None,
        time_spent_ms: None,
        response: None,
    };
}

/// Checks an attempt against a test and reads each response into its question's slot (in the
/// test's order). The error lists every problem of every response.
pub(crate) fn read_attempt(
    test: &PreparedTest,
    attempt: &Attempt,
) -> Result<Vec<Slot>, ScoringError> {
    let mut problems = Vec::new();
    if attempt.attempt_id.trim().is_empty() {
        problems.push(Problem::test("`attempt_id` is empty"));
    }
    if let Some(name) = &attempt.candidate_name {
        let chars = name.chars().count();
        if chars > super::response::MAX_CANDIDATE_NAME_CHARS {
            problems.push(Problem::test(format!(
                "`candidate_name` has {chars} characters, more than {}",
                super::response::MAX_CANDIDATE_NAME_CHARS
            )));
        }
    }
    if let Some(id) = &attempt.test_id
        && id != test.test_id()
    {
        problems.push(Problem::test(format!(
            "the attempt is for test `{id}`, but it is being scored against test `{}`",
            test.test_id()
        )));
    }
    let mut slots = vec![Slot::EMPTY; test.questions.len()];
    let mut next = 0;
    for (i, response) in attempt.responses.iter().enumerate() {
        // Responses usually come in the test's order: try the next question before hashing.
        let position = match test.questions.get(next) {
            Some(q) if *q.id == *response.question => Some(next),
            _ => test.position(&response.question),
        };
        let Some(position) = position else {
            problems.push(Problem::response(
                i,
                &response.question,
                "the test has no such question",
            ));
            continue;
        };
        next = position + 1;
        let slot = &mut slots[position];
        if let Some(first) = slot.response {
            problems.push(Problem::response(
                i,
                &response.question,
                format!("repeats the question (first answered in response {first})"),
            ));
            continue;
        }
        slot.response = Some(i as u32);
        slot.time_spent_ms = response.time_spent_ms;
        let before = problems.len();
        let mut problem = |m: String| problems.push(Problem::response(i, &response.question, m));
        let (given, awarded) = read_response(&test.questions[position], response, &mut problem);
        if problems.len() == before {
            slot.given = given;
            slot.awarded = awarded;
        }
    }
    if problems.is_empty() {
        Ok(slots)
    } else {
        Err(ScoringError::invalid_attempt(problems))
    }
}

fn read_response(
    question: &QuestionPlan,
    response: &Response,
    problem: &mut dyn FnMut(String),
) -> (Given, Option<Marks>) {
    let state = response.effective_state();
    let answer = response.answer.as_ref().filter(|a| !a.is_empty());
    match (state.counts_answer(), answer) {
        (true, None) => problem(format!("state `{}` needs an answer", state.name())),
        (false, Some(_)) => problem(format!(
            "state `{}` cannot carry an answer (an answer marked for review is \
             `answered_and_marked_for_review`)",
            state.name()
        )),
        _ => {}
    }
    let given = match answer {
        None => Given::None,
        Some(answer) => read_answer(&question.key, answer, problem),
    };
    let awarded = response.awarded;
    if response.awarded_by.is_some() && awarded.is_none() {
        problem("`awarded_by` without `awarded` marks".to_owned());
    }
    if let Some(awarded) = awarded {
        if !matches!(question.key, Key::Subjective) {
            problem(format!(
                "`awarded` applies to subjective answers, not to {} questions",
                question.key.question_type()
            ));
        } else if answer.is_none() {
            problem("`awarded` marks for a question with no answer".to_owned());
        } else if awarded.is_negative() || awarded > question.correct.marks {
            problem(format!(
                "`awarded` is {awarded}, outside 0 to the question's `max_marks` {}",
                question.correct.marks
            ));
        }
    }
    let given = if state.counts_answer() {
        given
    } else {
        Given::None
    };
    (given, awarded)
}

fn read_answer(key: &Key, answer: &Answer, problem: &mut dyn FnMut(String)) -> Given {
    let question_type = key.question_type();
    match (key, answer) {
        (Key::Mcq { options, .. } | Key::Msq { options, .. }, _) => {
            let one = std::slice::from_ref;
            let chosen = match answer {
                Answer::Text(id) => one(id),
                Answer::Options(ids) => ids.as_slice(),
            };
            let mut bits = 0_u64;
            for id in chosen {
                match options.iter().position(|o| **o == **id) {
                    Some(b) if bits & (1 << b) != 0 => {
                        problem(format!("chooses option `{id}` twice"));
                    }
                    Some(b) => bits |= 1 << b,
                    None => problem(format!(
                        "`{id}` is not one of the options ({})",
                        options.join(", ")
                    )),
                }
            }
            Given::Options(bits)
        }
        (Key::Integer { .. } | Key::Numeric { .. }, Answer::Text(text)) => {
            match Number::parse(text) {
                Some(n) if question_type == QuestionType::Integer && !n.is_integral() => {
                    problem(format!("`{text}` is not a whole number"));
                    Given::None
                }
                Some(n) => Given::Number(n),
                None => {
                    problem(format!(
                        "`{text}` is not a number (write digits with an optional sign and \
                         decimal point, e.g. \"-1.25\")"
                    ));
                    Given::None
                }
            }
        }
        (Key::Subjective, Answer::Text(_)) => Given::Text,
        (_, Answer::Options(_)) => {
            problem(format!(
                "a {question_type} answer is one string, not a list"
            ));
            Given::None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_every_problem_with_its_place() {
        let err = ScoringError::invalid_attempt(vec![
            Problem::response(3, "q9", "`abc` is not a number"),
            Problem::question("physics", "q2", "key option `E` is not an option"),
            Problem::test("no sections"),
        ]);
        assert_eq!(
            err.to_string(),
            "invalid attempt: 3 problems: response 3 (question `q9`): `abc` is not a number; \
             question `q2` in section `physics`: key option `E` is not an option; no sections"
        );
        let json = serde_json::to_value(&err).unwrap();
        assert_eq!(json["error"], "invalid_attempt");
        assert_eq!(json["problems"][0]["response"], 3);
        assert_eq!(
            ScoringError::invalid_test(vec![Problem::section("s", "empty")]).to_string(),
            "invalid test: section `s`: empty"
        );
    }

    #[test]
    fn a_large_bad_input_is_named_not_copied() {
        let answer = "9".repeat(100_000) + "x";
        let problems: Vec<Problem> = (0..1000)
            .map(|i| {
                Problem::response(
                    i,
                    &"q".repeat(10_000),
                    format!("`{answer}` is not a number (write digits)"),
                )
            })
            .collect();
        let err = ScoringError::invalid_attempt(problems);
        let text = err.to_string();
        assert!(
            text.starts_with("invalid attempt: 1000 problems: response 0"),
            "{text}"
        );
        assert!(text.ends_with("; and 980 more"), "{text}");
        assert!(text.contains("is not a number (write digits)"), "{text}");
        assert!(text.len() < LISTED_PROBLEMS * 500, "{} bytes", text.len());
        assert_eq!(err.problems().len(), 1000, "the list itself is whole");
    }
}
