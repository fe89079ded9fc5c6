//! The payload of `ai.evaluate` (an attempt stored by `score.attempt`, named by its id), which
//! of the attempt's answers it grades, and how their grades go back into the attempt.
//!
//! The answers graded are those the scorer leaves `pending_evaluation`: subjective, answered,
//! counted (not dropped, not over an attempt limit) and without `awarded` marks. An answer a
//! person (or an earlier job) already marked is never graded again nor overwritten.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::ai::grading::Graded;
use crate::limits::{ECHO_BYTES, shorten};
use crate::payload::{JobPayload, Queue};
use crate::scoring::{
    Answer, Attempt, AwardedBy, Marks, Outcome, PreparedTest, QuestionKind, ScoringError,
};

/// Grades the subjective answers of a stored attempt against their questions' rubrics, and
/// rescores the attempt with the marks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AiEvaluate {
    /// An attempt stored by a `score.attempt` job.
    pub attempt_id: String,
}

impl JobPayload for AiEvaluate {
    const KIND: &'static str = "ai.evaluate";
    const QUEUE: Queue = Queue::Ai;
}

impl AiEvaluate {
    pub fn check(&self) -> Result<(), String> {
        if self.attempt_id.trim().is_empty() {
            return Err("ai.evaluate: `attempt_id` is empty".into());
        }
        Ok(())
    }
}

/// One answer awaiting evaluation, with what it is graded by.
#[derive(Debug, Clone, Copy)]
pub struct ToGrade<'a> {
    pub question_id: &'a str,
    pub graded: Graded<'a>,
}

/// Why an attempt's answers cannot be graded: no grade is asked for before these are mended.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NotGradable {
    /// The attempt does not fit its test (a key revision it no longer fits).
    #[error("the attempt does not fit its test: {0}")]
    Attempt(#[from] ScoringError),
    /// Subjective questions awaiting evaluation whose test gives no rubric.
    #[error(
        "{} without a `rubric`: ai.evaluate grades only against one (docs/SCORING.md); add it in a new key version, or mark {} by hand",
        listed(.0), pronoun(.0)
    )]
    NoRubric(Vec<String>),
}

fn pronoun(ids: &[String]) -> &'static str {
    if ids.len() == 1 { "it" } else { "them" }
}

fn listed(ids: &[String]) -> String {
    let named: Vec<String> = ids
        .iter()
        .take(10)
        .map(|id| format!("`{}`", shorten(id, ECHO_BYTES)))
        .collect();
    let more = match ids.len() {
        n if n > 10 => format!(" and {} more", n - 10),
        _ => String::new(),
    };
    let noun = if ids.len() == 1 {
        "question"
    } else {
        "questions"
    };
    format!("{noun} {}{more}", named.join(", "))
}

/// The attempt's answers awaiting evaluation, in the test's order.
pub fn answers_to_grade<'a>(
    test: &'a PreparedTest,
    attempt: &'a Attempt,
) -> Result<Vec<ToGrade<'a>>, NotGradable> {
    let result = test.score(attempt)?;
    let pending: Vec<&str> = result
        .questions()
        .filter(|q| q.outcome == Outcome::PendingEvaluation)
        .map(|q| &*q.id)
        .collect();
    if pending.is_empty() {
        return Ok(Vec::new());
    }
    let questions: HashMap<&str, &QuestionKind> = test
        .definition()
        .sections
        .iter()
        .flat_map(|s| &s.questions)
        .map(|q| (q.id.as_str(), &q.kind))
        .collect();
    let answers: HashMap<&str, &str> = attempt
        .responses
        .iter()
        .filter_map(|r| match &r.answer {
            Some(Answer::Text(text)) => Some((r.question.as_str(), text.as_str())),
            _ => None,
        })
        .collect();
    let mut to_grade = Vec::with_capacity(pending.len());
    let mut no_rubric = Vec::new();
    for id in pending {
        // A pending question is a subjective one with a text answer (the scorer says so).
        let Some((&question_id, &kind)) = questions.get_key_value(id) else {
            continue;
        };
        let (QuestionKind::Subjective { max_marks, rubric }, Some(&answer)) =
            (kind, answers.get(id))
        else {
            continue;
        };
        match rubric {
            Some(rubric) => to_grade.push(ToGrade {
                question_id,
                graded: Graded {
                    max_marks: *max_marks,
                    rubric,
                    answer,
                },
            }),
            None => no_rubric.push(id.to_owned()),
        }
    }
    if !no_rubric.is_empty() {
        return Err(NotGradable::NoRubric(no_rubric));
    }
    Ok(to_grade)
}

/// Sets the marks a model awarded on the response to `question_id`, unless it has marks
/// already (a person's stand). Returns whether it set them.
pub fn award(attempt: &mut Attempt, question_id: &str, marks: Marks, by: AwardedBy) -> bool {
    match attempt
        .responses
        .iter_mut()
        .find(|r| r.question == question_id)
    {
        Some(response) if response.awarded.is_none() => {
            response.awarded = Some(marks);
            response.awarded_by = Some(by);
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scoring::TestDef;
    use serde_json::json;

    fn test() -> PreparedTest {
        let def: TestDef = serde_json::from_value(json!({
            "test_id": "bio", "key_version": 1, "marking": {"correct": 1},
            "sections": [{"id": "s", "attempt_limits": {"B": 1}, "questions": [
                {"id": "q1", "type": "mcq", "answer": "A"},
                {"id": "e1", "type": "subjective", "max_marks": "2.5", "text": "Explain.",
                 "step": "0.5", "rubric": [
                    {"id": "c1", "description": "Names light", "marks": "1.5"},
                    {"id": "c2", "description": "Names chlorophyll", "marks": 1}]},
                {"id": "e2", "type": "subjective", "max_marks": 2, "text": "Why?",
                 "rubric": [{"id": "c1", "description": "Gives a reason", "marks": 2}]},
                {"id": "e3", "type": "subjective", "max_marks": 2},
                {"id": "e4", "type": "subjective", "max_marks": 2, "group": "B"},
                {"id": "e5", "type": "subjective", "max_marks": 2, "group": "B"}
            ]}]
        }))
        .unwrap();
        PreparedTest::new(def).unwrap()
    }

    fn attempt(responses: serde_json::Value) -> Attempt {
        serde_json::from_value(json!({"attempt_id": "a1", "candidate_id": "c-9",
                                      "responses": responses}))
        .unwrap()
    }

    #[test]
    fn only_answers_awaiting_evaluation_are_graded() {
        let test = test();
        let a = attempt(json!([
            {"question": "q1", "answer": "A"},
            {"question": "e1", "answer": "Light and chlorophyll."},
            {"question": "e2", "answer": "Because.", "awarded": "1"},
            {"question": "e3", "state": "marked_for_review"},
            {"question": "e4", "answer": "first in group B", "awarded": 2},
            {"question": "e5", "answer": "over the group's limit"}
        ]));
        let to_grade = answers_to_grade(&test, &a).unwrap();
        let ids: Vec<&str> = to_grade.iter().map(|g| g.question_id).collect();
        assert_eq!(
            ids,
            ["e1"],
            "e2 is marked, e3 unanswered, e5 over the limit"
        );
        assert_eq!(to_grade[0].graded.answer, "Light and chlorophyll.");
        assert_eq!(to_grade[0].graded.max_marks.to_string(), "5/2");
    }

    #[test]
    fn an_answer_to_a_question_without_a_rubric_cannot_be_graded() {
        let test = test();
        let a = attempt(json!([
            {"question": "e1", "answer": "x"},
            {"question": "e3", "answer": "y"}
        ]));
        assert_eq!(
            answers_to_grade(&test, &a).unwrap_err().to_string(),
            "question `e3` without a `rubric`: ai.evaluate grades only against one \
             (docs/SCORING.md); add it in a new key version, or mark it by hand"
        );
    }

    #[test]
    fn a_model_never_overwrites_marks() {
        let test = test();
        let mut a = attempt(json!([
            {"question": "e1", "answer": "x"},
            {"question": "e2", "answer": "y", "awarded": "1"}
        ]));
        let by = AwardedBy {
            model: "m".into(),
            prompt_version: "evaluate-v1".into(),
        };
        assert!(award(&mut a, "e1", "1.5".parse().unwrap(), by.clone()));
        assert!(!award(&mut a, "e2", "2".parse().unwrap(), by.clone()));
        assert!(!award(&mut a, "e1", "0".parse().unwrap(), by));
        let result = test.score(&a).unwrap();
        let e1 = result.questions().find(|q| &*q.id == "e1").unwrap();
        assert_eq!(e1.marks.to_string(), "3/2");
        assert_eq!(e1.awarded_by.as_ref().unwrap().model, "m");
        let e2 = result.questions().find(|q| &*q.id == "e2").unwrap();
        assert_eq!(e2.marks.to_string(), "1");
        assert!(e2.awarded_by.is_none(), "a person's mark");
        let json = serde_json::to_value(&result).unwrap();
        assert_eq!(
            json["sections"][0]["questions"][1]["awarded_by"],
            json!({"model": "m", "prompt_version": "evaluate-v1"})
        );
        assert!(
            json["sections"][0]["questions"][2]
                .get("awarded_by")
                .is_none()
        );
    }
}
