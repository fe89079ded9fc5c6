//! The rubric of a subjective question: what `ai.evaluate` grades its answers by (the question's
//! text, criteria each worth some marks, an optional model answer and the step marks move in),
//! and the checks a test's rubric must pass when the test is prepared.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::marks::Marks;

/// Criteria of one rubric at most: a rubric is a marking scheme, not a checklist of everything.
pub const MAX_CRITERIA: usize = 20;
/// The most characters of a question's text or its model answer.
pub const MAX_RUBRIC_TEXT_CHARS: usize = 20_000;
/// The most characters of one criterion's description.
pub const MAX_CRITERION_CHARS: usize = 2_000;
/// The most bytes of a criterion's id (the model's reply names criteria by it).
pub const MAX_CRITERION_ID_BYTES: usize = 64;

/// How a subjective question is graded. On the wire its fields sit flat on the question:
/// `{"id": "e1", "type": "subjective", "max_marks": 5, "text": "...", "rubric": [...],
/// "model_answer": "...", "step": "0.5"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rubric {
    /// The question as the candidate saw it: the model cannot grade an answer without it.
    pub text: String,
    /// Marks are awarded per criterion; they add up to the question's `max_marks`.
    pub criteria: Vec<Criterion>,
    /// What a full-marks answer may look like; a guide, not the only right answer.
    pub model_answer: Option<String>,
    /// Every criterion's marks and every mark awarded is a whole multiple of it: `"0.5"` for
    /// halves. `None` is 1.
    pub step: Option<Marks>,
}

/// One thing an answer is marked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Criterion {
    /// Unique in the rubric; the model's reply names the criterion by it.
    pub id: String,
    /// What earns the marks ("Names chlorophyll as the pigment that absorbs light").
    pub description: String,
    /// The most this criterion gives.
    pub marks: Marks,
}

impl Rubric {
    /// The step marks move in: `step`, or 1.
    pub fn step(&self) -> Marks {
        self.step.unwrap_or(Marks::integer(1))
    }

    /// Every problem of the rubric of a question worth `max_marks`, each a sentence.
    pub fn problems(&self, max_marks: Marks) -> Vec<String> {
        let mut problems = Vec::new();
        let mut problem = |m: String| problems.push(m);
        let chars = |t: &str| t.chars().count();
        if self.text.trim().is_empty() {
            problem("`text` is empty: the model needs the question to grade an answer".into());
        } else if chars(&self.text) > MAX_RUBRIC_TEXT_CHARS {
            problem(format!(
                "`text` is {} characters; at most {MAX_RUBRIC_TEXT_CHARS}",
                chars(&self.text)
            ));
        }
        if let Some(model) = &self.model_answer
            && chars(model) > MAX_RUBRIC_TEXT_CHARS
        {
            problem(format!(
                "`model_answer` is {} characters; at most {MAX_RUBRIC_TEXT_CHARS}",
                chars(model)
            ));
        }
        let step = self.step();
        if !step.is_positive() {
            problem(format!("`step` is {step}; it must be positive"));
        }
        if self.criteria.is_empty() {
            problem("`rubric` has no criteria".into());
        }
        if self.criteria.len() > MAX_CRITERIA {
            problem(format!(
                "`rubric` has {} criteria; at most {MAX_CRITERIA}",
                self.criteria.len()
            ));
            return problems;
        }
        let mut ids = HashSet::new();
        let mut total = Some(Marks::ZERO);
        for (i, c) in self.criteria.iter().enumerate() {
            let name = if c.id.is_empty() {
                format!("criterion {i}")
            } else {
                format!("criterion `{}`", crate::limits::shorten(&c.id, 64))
            };
            if c.id.trim().is_empty() {
                problem(format!("{name} has an empty `id`"));
            } else if c.id.len() > MAX_CRITERION_ID_BYTES {
                problem(format!(
                    "{name}: `id` is {} bytes; at most {MAX_CRITERION_ID_BYTES}",
                    c.id.len()
                ));
            } else if !ids.insert(c.id.as_str()) {
                problem(format!("{name} is given twice"));
            }
            if c.description.trim().is_empty() {
                problem(format!("{name} has an empty `description`"));
            } else if chars(&c.description) > MAX_CRITERION_CHARS {
                problem(format!(
                    "{name}: `description` is {} characters; at most {MAX_CRITERION_CHARS}",
                    chars(&c.description)
                ));
            }
            if !c.marks.is_positive() {
                problem(format!("{name} is worth {}; it must be positive", c.marks));
            } else if step.is_positive() && !on_step(c.marks, step) {
                problem(format!(
                    "{name} is worth {}, not a whole number of steps of {step}",
                    c.marks
                ));
            }
            total = total.and_then(|t| t.checked_add(c.marks));
        }
        match total {
            Some(total) if !self.criteria.is_empty() && total != max_marks => problem(format!(
                "the criteria are worth {total} together, but `max_marks` is {max_marks}"
            )),
            None => problem("the criteria's marks are too large to add up".into()),
            _ => {}
        }
        problems
    }
}

/// Whether `marks` is a whole number of `step`s (`step` positive).
pub fn on_step(marks: Marks, step: Marks) -> bool {
    // marks / step = (a/b) / (c/d) = a*d / (b*c): whole when b*c divides a*d.
    let numer = i128::from(marks.numer()) * i128::from(step.denom());
    let denom = i128::from(marks.denom()) * i128::from(step.numer());
    denom != 0 && numer % denom == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marks(text: &str) -> Marks {
        text.parse().unwrap()
    }

    fn criterion(id: &str, m: &str) -> Criterion {
        Criterion {
            id: id.into(),
            description: format!("what {id} asks"),
            marks: marks(m),
        }
    }

    fn rubric(criteria: Vec<Criterion>, step: Option<&str>) -> Rubric {
        Rubric {
            text: "Explain photosynthesis.".into(),
            criteria,
            model_answer: None,
            step: step.map(marks),
        }
    }

    #[test]
    fn steps_are_exact() {
        assert!(on_step(marks("2.5"), marks("0.5")));
        assert!(on_step(marks("0"), marks("0.5")));
        assert!(!on_step(marks("2.25"), marks("0.5")));
        assert!(on_step(marks("2/3"), marks("1/3")));
        assert!(!on_step(marks("0.5"), marks("1/3")));
        assert!(on_step(marks("3"), marks("1")));
    }

    #[test]
    fn a_rubric_adds_up_to_the_questions_marks_on_its_step() {
        let ok = rubric(
            vec![criterion("c1", "1.5"), criterion("c2", "2")],
            Some("0.5"),
        );
        assert_eq!(ok.problems(marks("3.5")), Vec::<String>::new());
        assert_eq!(
            ok.problems(marks("4")),
            ["the criteria are worth 7/2 together, but `max_marks` is 4"]
        );
        let off = rubric(vec![criterion("c1", "1.5")], None);
        assert_eq!(
            off.problems(marks("1.5")),
            ["criterion `c1` is worth 3/2, not a whole number of steps of 1"]
        );
        let mut bad = rubric(vec![criterion("c1", "1"), criterion("c1", "0")], Some("-1"));
        bad.text = " ".into();
        let problems = bad.problems(marks("1"));
        for expected in [
            "`text` is empty",
            "`step` is -1",
            "criterion `c1` is given twice",
            "criterion `c1` is worth 0; it must be positive",
        ] {
            assert!(
                problems.iter().any(|p| p.contains(expected)),
                "{expected}: {problems:?}"
            );
        }
        let many = rubric(
            (0..=MAX_CRITERIA)
                .map(|i| criterion(&format!("c{i}"), "1"))
                .collect(),
            None,
        );
        assert_eq!(
            many.problems(marks("21")),
            ["`rubric` has 21 criteria; at most 20"]
        );
        assert_eq!(
            rubric(vec![], None).problems(marks("1")),
            ["`rubric` has no criteria"]
        );
    }
}
