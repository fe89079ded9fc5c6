//! A test compiled once for scoring many attempts: keys parsed, marking resolved per question,
//! ids indexed, and every mark scaled to one common denominator so that totals are integer sums.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::sync::Arc;

use num_integer::Integer;

use super::decimal::{KeyValue, MAX_ROUNDING_DECIMALS, Rounding, parse_key};
use super::marks::Marks;
use super::test_def::{
    DropPolicy, Marking, MsqScheme, NumericKey, Question, QuestionKind, QuestionType, Section,
    TestDef,
};
use super::validate::{Problem, ScoringError};

/// At most this many options on an MCQ or MSQ: chosen options are kept as bits of a `u64`.
pub const MAX_OPTIONS: usize = 64;

/// Common denominators above this are refused: no real scheme comes near (GATE needs 3, a mix
/// of thirds, quarters and fifths 60), and a bound keeps every total far from overflow.
const MAX_DENOMINATOR: i64 = 1_000_000_000;

/// A test ready to score attempts. Build it once per test and key version (it is `Send + Sync`;
/// share it behind an `Arc`) and call [`PreparedTest::score`] for each attempt.
#[derive(Debug)]
pub struct PreparedTest {
    def: TestDef,
    test_id: Arc<str>,
    pub(crate) sections: Vec<SectionPlan>,
    pub(crate) questions: Vec<QuestionPlan>,
    /// Question id to its position in `questions`.
    index: HashMap<Box<str>, u32>,
    pub(crate) topics: Vec<Arc<str>>,
    /// The attempt limits of all sections' groups; questions point into it.
    pub(crate) limits: Vec<u32>,
    /// Every mark of the test is a whole number of `1 / denom`.
    pub(crate) denom: i64,
    max_marks: Marks,
}

#[derive(Debug)]
pub(crate) struct SectionPlan {
    pub(crate) id: Arc<str>,
    pub(crate) questions: Range<usize>,
    pub(crate) max: Points,
}

#[derive(Debug)]
pub(crate) struct QuestionPlan {
    pub(crate) id: Arc<str>,
    pub(crate) section: usize,
    pub(crate) topic: Option<usize>,
    /// Index in [`PreparedTest::limits`] if the question's group has an attempt limit.
    pub(crate) limit: Option<usize>,
    pub(crate) key: Key,
    pub(crate) dropped: Option<DropPolicy>,
    pub(crate) correct: Points,
    pub(crate) incorrect: Points,
    pub(crate) unattempted: Points,
    /// What the question adds to the maximum: `correct`, or 0 if it was removed.
    pub(crate) max: Points,
}

/// A mark with its value over the test's common denominator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Points {
    pub(crate) marks: Marks,
    pub(crate) scaled: i64,
}

impl Points {
    pub(crate) const ZERO: Points = Points {
        marks: Marks::ZERO,
        scaled: 0,
    };
}

#[derive(Debug)]
pub(crate) enum Key {
    Mcq {
        options: Box<[Box<str>]>,
        /// Bit i set: option i is accepted. Empty for a dropped question without a key.
        accepted: u64,
    },
    Msq {
        options: Box<[Box<str>]>,
        key: u64,
        /// `partial[c]`: the mark for choosing `c` correct options and no wrong one, short of
        /// the whole key. `None` for all-or-nothing.
        partial: Option<Box<[Points]>>,
    },
    Integer {
        accepted: Box<[KeyValue]>,
    },
    Numeric {
        /// Inclusive ranges.
        accepted: Box<[(KeyValue, KeyValue)]>,
        rounding: Option<Rounding>,
    },
    Subjective,
}

impl Key {
    pub(crate) fn question_type(&self) -> QuestionType {
        match self {
            Key::Mcq { .. } => QuestionType::Mcq,
            Key::Msq { .. } => QuestionType::Msq,
            Key::Integer { .. } => QuestionType::Integer,
            Key::Numeric { .. } => QuestionType::Numeric,
            Key::Subjective => QuestionType::Subjective,
        }
    }
}

/// What the daemon and analytics may want to know about a question without its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuestionInfo<'a> {
    pub id: &'a str,
    pub section: &'a str,
    pub topic: Option<&'a str>,
    pub question_type: QuestionType,
    pub dropped: Option<DropPolicy>,
    /// What the question adds to the test's maximum (0 if removed).
    pub max_marks: Marks,
}

/// A question's marking before scaling.
struct Resolved {
    correct: Marks,
    incorrect: Marks,
    unattempted: Marks,
    partial: Option<Vec<Marks>>,
}

impl PreparedTest {
    /// Checks and compiles a test. The error lists every problem found.
    pub fn new(def: TestDef) -> Result<PreparedTest, ScoringError> {
        let mut problems = Vec::new();
        if def.test_id.trim().is_empty() {
            problems.push(Problem::test("`test_id` is empty"));
        }
        if def.sections.iter().all(|s| s.questions.is_empty()) {
            problems.push(Problem::test("the test has no questions"));
        }

        let mut section_ids = HashSet::new();
        let mut question_ids: HashMap<&str, &str> = HashMap::new();
        let mut topics: Vec<Arc<str>> = Vec::new();
        let mut topic_index: HashMap<&str, usize> = HashMap::new();
        let mut sections = Vec::with_capacity(def.sections.len());
        let mut questions = Vec::new();
        let mut resolved = Vec::new();
        let mut limits = Vec::new();

        for (s, section) in def.sections.iter().enumerate() {
            if section.id.trim().is_empty() {
                problems.push(Problem::test(format!("section {s} has an empty `id`")));
            } else if !section_ids.insert(section.id.as_str()) {
                problems.push(Problem::section(&section.id, "repeats a section id"));
            }
            if section.questions.is_empty() {
                problems.push(Problem::section(
                    &section.id,
                    "the section has no questions",
                ));
            }
            let mut section_limits = HashMap::new();
            for (group, &limit) in &section.attempt_limits {
                if limit == 0 {
                    problems.push(Problem::section(
                        &section.id,
                        format!("the attempt limit of group `{group}` is 0: no answer could count"),
                    ));
                }
                if !section
                    .questions
                    .iter()
                    .any(|q| q.group.as_ref() == Some(group))
                {
                    problems.push(Problem::section(
                        &section.id,
                        format!("`attempt_limits` names group `{group}`, which has no questions"),
                    ));
                }
                section_limits.insert(group.as_str(), limits.len());
                limits.push(limit);
            }
            let start = questions.len();
            for question in &section.questions {
                let at = |m: String| Problem::question(&section.id, &question.id, m);
                if question.id.trim().is_empty() {
                    problems.push(Problem::section(
                        &section.id,
                        "a question has an empty `id`",
                    ));
                } else if let Some(first) = question_ids.insert(&question.id, &section.id) {
                    problems.push(at(format!(
                        "repeats a question id (first used in section `{first}`)"
                    )));
                }
                let topic = question.topic.as_deref().map(|t| {
                    *topic_index.entry(t).or_insert_with(|| {
                        topics.push(Arc::from(t));
                        topics.len() - 1
                    })
                });
                let before = problems.len();
                let key = compile_key(question, &mut |m| problems.push(at(m)));
                let marks = resolve_marking(&def, section, question, &mut |m| problems.push(at(m)));
                if problems.len() > before {
                    continue;
                }
                let (Some(key), Some(marks)) = (key, marks) else {
                    continue;
                };
                questions.push(QuestionPlan {
                    id: Arc::from(question.id.as_str()),
                    section: s,
                    topic,
                    limit: question
                        .group
                        .as_deref()
                        .and_then(|g| section_limits.get(g).copied()),
                    key,
                    dropped: question.dropped,
                    correct: Points::ZERO,
                    incorrect: Points::ZERO,
                    unattempted: Points::ZERO,
                    max: Points::ZERO,
                });
                resolved.push(marks);
            }
            sections.push(SectionPlan {
                id: Arc::from(section.id.as_str()),
                questions: start..questions.len(),
                max: Points::ZERO,
            });
        }
        if !problems.is_empty() {
            return Err(ScoringError::invalid_test(problems));
        }

        let denom = match common_denominator(&resolved) {
            Some(d) => d,
            None => {
                return Err(ScoringError::invalid_test(vec![Problem::test(format!(
                    "the marks' denominators have no common denominator below \
                     {MAX_DENOMINATOR}: use simpler fractions"
                ))]));
            }
        };
        let scale = |m: Marks| Points {
            marks: m,
            scaled: m.scaled_to(denom).expect("checked by the bound below"),
        };
        if !totals_fit(&resolved, denom) {
            return Err(ScoringError::invalid_test(vec![Problem::test(
                "the marks are too large to add up exactly",
            )]));
        }

        for (plan, r) in questions.iter_mut().zip(&resolved) {
            plan.correct = scale(r.correct);
            plan.incorrect = scale(r.incorrect);
            plan.unattempted = scale(r.unattempted);
            plan.max = if plan.dropped == Some(DropPolicy::Removed) {
                Points::ZERO
            } else {
                plan.correct
            };
            if let (Key::Msq { partial, .. }, Some(table)) = (&mut plan.key, &r.partial) {
                *partial = Some(table.iter().copied().map(scale).collect());
            }
        }
        let mut max_scaled = 0;
        for section in &mut sections {
            let scaled = section_max(&questions[section.questions.clone()], &limits);
            section.max = Points {
                marks: Marks::from_scaled(scaled, denom),
                scaled,
            };
            max_scaled += scaled;
        }

        let index = questions
            .iter()
            .enumerate()
            .map(|(i, q)| (Box::from(&*q.id), i as u32))
            .collect();
        Ok(PreparedTest {
            test_id: Arc::from(def.test_id.as_str()),
            def,
            sections,
            questions,
            index,
            topics,
            limits,
            denom,
            max_marks: Marks::from_scaled(max_scaled, denom),
        })
    }

    pub fn test_id(&self) -> &str {
        &self.test_id
    }

    pub(crate) fn test_id_arc(&self) -> &Arc<str> {
        &self.test_id
    }

    pub fn key_version(&self) -> u32 {
        self.def.key_version
    }

    /// The definition this was compiled from.
    pub fn definition(&self) -> &TestDef {
        &self.def
    }

    /// The most an attempt can score.
    pub fn max_marks(&self) -> Marks {
        self.max_marks
    }

    pub fn question_count(&self) -> usize {
        self.questions.len()
    }

    /// Section ids, in the test's order.
    pub fn section_ids(&self) -> impl ExactSizeIterator<Item = &str> {
        self.sections.iter().map(|s| &*s.id)
    }

    /// Topic tags, in order of first appearance.
    pub fn topics(&self) -> impl ExactSizeIterator<Item = &str> {
        self.topics.iter().map(|t| &**t)
    }

    /// Every question, in the test's order (the order of results).
    pub fn questions(&self) -> impl ExactSizeIterator<Item = QuestionInfo<'_>> {
        self.questions.iter().map(|q| self.info(q))
    }

    pub fn question(&self, id: &str) -> Option<QuestionInfo<'_>> {
        self.position(id).map(|i| self.info(&self.questions[i]))
    }

    pub(crate) fn position(&self, id: &str) -> Option<usize> {
        self.index.get(id).map(|&i| i as usize)
    }

    fn info<'a>(&'a self, q: &'a QuestionPlan) -> QuestionInfo<'a> {
        QuestionInfo {
            id: &q.id,
            section: &self.sections[q.section].id,
            topic: q.topic.map(|t| &*self.topics[t]),
            question_type: q.key.question_type(),
            dropped: q.dropped,
            max_marks: q.max.marks,
        }
    }
}

/// Whether every total stays far from overflow: the sum over questions of the largest mark
/// magnitude, over `denom`, must leave room for adding and subtracting totals, so that scoring
/// itself never has to check.
fn totals_fit(resolved: &[Resolved], denom: i64) -> bool {
    let mut bound: i128 = 0;
    for r in resolved {
        let largest = [r.correct, r.incorrect, r.unattempted]
            .into_iter()
            .chain(r.partial.iter().flatten().copied())
            .map(|m| (i128::from(m.numer()) * i128::from(denom / m.denom())).abs())
            .max()
            .unwrap_or(0);
        bound += largest;
    }
    bound <= i128::from(i64::MAX / 4)
}

/// A section's maximum over the common denominator. With "attempt any N", the best a
/// candidate can do in a limited group is the N largest maxima of its questions.
fn section_max(plans: &[QuestionPlan], limits: &[u32]) -> i64 {
    let mut scaled: i64 = plans
        .iter()
        .filter(|q| q.limit.is_none())
        .map(|q| q.max.scaled)
        .sum();
    for (group, &limit) in limits.iter().enumerate() {
        let mut maxima: Vec<i64> = plans
            .iter()
            .filter(|q| q.limit == Some(group))
            .map(|q| q.max.scaled)
            .collect();
        maxima.sort_unstable_by(|a, b| b.cmp(a));
        scaled += maxima.iter().take(limit as usize).sum::<i64>();
    }
    scaled
}

/// The smallest denominator over which every mark is whole, if it is at most
/// [`MAX_DENOMINATOR`].
fn common_denominator(resolved: &[Resolved]) -> Option<i64> {
    let mut denom: i64 = 1;
    for r in resolved {
        let marks = [r.correct, r.incorrect, r.unattempted];
        for m in marks.iter().chain(r.partial.iter().flatten()) {
            // Checked first, so that the product inside `lcm` stays below 10^18.
            if m.denom() > MAX_DENOMINATOR {
                return None;
            }
            denom = denom.lcm(&m.denom());
            if denom > MAX_DENOMINATOR {
                return None;
            }
        }
    }
    Some(denom)
}

/// Reads a question's key, reporting what does not fit its type.
fn compile_key(question: &Question, problem: &mut dyn FnMut(String)) -> Option<Key> {
    let dropped = question.dropped.is_some();
    let missing = |problem: &mut dyn FnMut(String)| {
        problem("the question has no `answer` (only a dropped question may lack one)".to_owned())
    };
    match &question.kind {
        QuestionKind::Mcq {
            options,
            answer,
            also_accepted,
        } => {
            let options = compile_options(options, problem)?;
            let mut accepted = 0;
            match answer {
                Some(a) => accepted |= option_bit(&options, a, "key", problem)?,
                None if !dropped => missing(problem),
                None => {}
            }
            for a in also_accepted {
                accepted |= option_bit(&options, a, "`also_accepted`", problem)?;
            }
            Some(Key::Mcq { options, accepted })
        }
        QuestionKind::Msq { options, answer } => {
            let options = compile_options(options, problem)?;
            let mut key = 0;
            match answer {
                Some(list) if list.is_empty() => {
                    problem("the key chooses no option".to_owned());
                    return None;
                }
                Some(list) => {
                    for a in list {
                        let bit = option_bit(&options, a, "key", problem)?;
                        if key & bit != 0 {
                            problem(format!("the key repeats option `{a}`"));
                            return None;
                        }
                        key |= bit;
                    }
                }
                None if !dropped => missing(problem),
                None => {}
            }
            Some(Key::Msq {
                options,
                key,
                partial: None,
            })
        }
        QuestionKind::Integer {
            answer,
            also_accepted,
        } => {
            if answer.is_none() && !dropped {
                missing(problem);
            }
            let mut accepted = Vec::new();
            for a in answer.iter().chain(also_accepted) {
                match parse_key(a) {
                    Ok(v) if v.is_integral() => accepted.push(v),
                    Ok(_) => problem(format!("key `{a}` is not a whole number")),
                    Err(e) => problem(format!("key {}", e.describe(a))),
                }
            }
            Some(Key::Integer {
                accepted: accepted.into(),
            })
        }
        QuestionKind::Numeric {
            answer,
            also_accepted,
            rounding,
        } => {
            if answer.is_none() && !dropped {
                missing(problem);
            }
            if let Some(r) = rounding
                && r.decimals > MAX_ROUNDING_DECIMALS
            {
                problem(format!(
                    "`rounding.decimals` is {}; at most {MAX_ROUNDING_DECIMALS}",
                    r.decimals
                ));
            }
            let mut accepted = Vec::new();
            for key in answer.iter().chain(also_accepted) {
                if let Some(range) = numeric_range(key, problem) {
                    accepted.push(range);
                }
            }
            Some(Key::Numeric {
                accepted: accepted.into(),
                rounding: *rounding,
            })
        }
        QuestionKind::Subjective { max_marks, rubric } => {
            if !max_marks.is_positive() {
                problem(format!("`max_marks` is {max_marks}; it must be positive"));
            } else if let Some(rubric) = rubric {
                for p in rubric.problems(*max_marks) {
                    problem(format!("rubric: {p}"));
                }
            }
            Some(Key::Subjective)
        }
    }
}

fn compile_options(options: &[String], problem: &mut dyn FnMut(String)) -> Option<Box<[Box<str>]>> {
    if options.is_empty() {
        problem("the question has no options".to_owned());
        return None;
    }
    if options.len() > MAX_OPTIONS {
        problem(format!(
            "the question has {} options; at most {MAX_OPTIONS}",
            options.len()
        ));
        return None;
    }
    let mut seen = HashSet::new();
    for o in options {
        if o.trim().is_empty() {
            problem("an option id is empty".to_owned());
            return None;
        }
        if !seen.insert(o.as_str()) {
            problem(format!("repeats option `{o}`"));
            return None;
        }
    }
    Some(options.iter().map(|o| Box::from(o.as_str())).collect())
}

fn option_bit(
    options: &[Box<str>],
    id: &str,
    what: &str,
    problem: &mut dyn FnMut(String),
) -> Option<u64> {
    match options.iter().position(|o| &**o == id) {
        Some(i) => Some(1 << i),
        None => {
            problem(format!(
                "{what} option `{id}` is not one of the options ({})",
                options.join(", ")
            ));
            None
        }
    }
}

fn numeric_range(
    key: &NumericKey,
    problem: &mut dyn FnMut(String),
) -> Option<(KeyValue, KeyValue)> {
    let mut number = |what: &str, text: &str| match parse_key(text) {
        Ok(v) => Some(v),
        Err(e) => {
            problem(format!("{what} {}", e.describe(text)));
            None
        }
    };
    match key {
        NumericKey::Value { value, tolerance } => {
            let v = number("key value", value);
            let t = match tolerance {
                Some(t) => number("tolerance", t),
                None => parse_key("0").ok(),
            };
            let (v, t) = (v?, t?);
            if t.is_negative() {
                problem(format!(
                    "tolerance `{}` is negative",
                    tolerance.as_deref().unwrap_or("")
                ));
                return None;
            }
            Some((v.checked_sub(t)?, v.checked_add(t)?))
        }
        NumericKey::Range { min, max } => {
            let lo = number("range minimum", min);
            let hi = number("range maximum", max);
            let (lo, hi) = (lo?, hi?);
            if lo > hi {
                problem(format!(
                    "range minimum `{min}` is above its maximum `{max}`"
                ));
                return None;
            }
            Some((lo, hi))
        }
    }
}

/// Takes each marking field from the most specific level that sets it: the question, the
/// section for the question's type, the section, the test for the type, the test.
fn resolve_marking(
    def: &TestDef,
    section: &Section,
    question: &Question,
    problem: &mut dyn FnMut(String),
) -> Option<Resolved> {
    let question_type = question.kind.question_type();
    if let QuestionKind::Subjective { max_marks, .. } = question.kind {
        // A subjective answer earns what its marker awards, so only `max_marks` applies.
        if !question.marking.is_empty() {
            problem(
                "`marking` does not apply to subjective questions (use `max_marks`)".to_owned(),
            );
            return None;
        }
        return Some(Resolved {
            correct: max_marks,
            incorrect: Marks::ZERO,
            unattempted: Marks::ZERO,
            partial: None,
        });
    }
    if question.marking.msq.is_some() && question_type != QuestionType::Msq {
        problem(format!(
            "`marking.msq` applies to msq questions, not {question_type}"
        ));
    }
    let levels: [Option<&Marking>; 5] = [
        Some(&question.marking),
        section.marking_by_type.get(question_type),
        Some(&section.marking),
        def.marking_by_type.get(question_type),
        Some(&def.marking),
    ];
    let pick = |field: fn(&Marking) -> Option<&Marks>| {
        levels.iter().flatten().find_map(|m| field(m)).copied()
    };
    let Some(correct) = pick(|m| m.correct.as_ref()) else {
        problem(
            "no `correct` mark: set `marking.correct` on the question, its section or the test"
                .to_owned(),
        );
        return None;
    };
    let incorrect = pick(|m| m.incorrect.as_ref()).unwrap_or(Marks::ZERO);
    let unattempted = pick(|m| m.unattempted.as_ref()).unwrap_or(Marks::ZERO);
    let mut ok = true;
    if !correct.is_positive() {
        problem(format!(
            "the `correct` mark is {correct}; it must be positive"
        ));
        ok = false;
    }
    for (name, m) in [("incorrect", incorrect), ("unattempted", unattempted)] {
        if m > correct {
            problem(format!(
                "the `{name}` mark {m} is above the `correct` mark {correct}"
            ));
            ok = false;
        }
    }
    let scheme = levels.iter().flatten().find_map(|m| m.msq.as_ref());
    let partial = match (&question.kind, scheme) {
        (QuestionKind::Msq { answer, .. }, Some(scheme)) => {
            let key_size = answer.as_ref().map_or(0, Vec::len) as i64;
            partial_table(scheme, key_size, correct, problem)
        }
        _ => None,
    };
    ok.then_some(Resolved {
        correct,
        incorrect,
        unattempted,
        partial,
    })
}

/// The marks for choosing 0..key_size correct options and no wrong one under a partial scheme.
fn partial_table(
    scheme: &MsqScheme,
    key_size: i64,
    correct: Marks,
    problem: &mut dyn FnMut(String),
) -> Option<Vec<Marks>> {
    let table: Option<Vec<Marks>> = match *scheme {
        MsqScheme::AllOrNothing {} => return None,
        MsqScheme::Partial { per_option } => {
            if per_option.is_negative() {
                problem(format!(
                    "`per_option` is {per_option}; it must not be negative"
                ));
                return None;
            }
            (0..key_size)
                .map(|c| per_option.checked_mul(Marks::integer(c)))
                .collect()
        }
        MsqScheme::Proportional {} => (0..key_size)
            .map(|c| correct.checked_mul(Marks::new(c, key_size)?))
            .collect(),
    };
    let Some(table) = table else {
        problem("the partial marks are too large".to_owned());
        return None;
    };
    if let Some(top) = table.last()
        && *top > correct
    {
        problem(format!(
            "a partial answer would earn {top}, above the `correct` mark {correct}"
        ));
        return None;
    }
    Some(table)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn prepare(value: serde_json::Value) -> Result<PreparedTest, ScoringError> {
        PreparedTest::new(serde_json::from_value(value).unwrap())
    }

    #[test]
    fn resolves_marking_from_the_most_specific_level() {
        let test = prepare(json!({
            "test_id": "t", "key_version": 1,
            "marking": {"correct": 4, "incorrect": -1},
            "marking_by_type": {"numeric": {"incorrect": 0}},
            "sections": [
                {"id": "s1", "questions": [
                    {"id": "q1", "type": "mcq", "answer": "A"},
                    {"id": "q2", "type": "numeric", "answer": {"value": "1"}},
                    {"id": "q3", "type": "mcq", "answer": "A", "marking": {"correct": "2"}}
                ]},
                {"id": "s2", "marking": {"incorrect": "-1/3"}, "questions": [
                    {"id": "q4", "type": "mcq", "answer": "A"},
                    {"id": "q5", "type": "subjective", "max_marks": "5/2"}
                ]}
            ]
        }))
        .unwrap();
        let marks: Vec<(String, String)> = test
            .questions
            .iter()
            .map(|q| (q.correct.marks.to_string(), q.incorrect.marks.to_string()))
            .collect();
        let expected = [
            ("4", "-1"),
            ("4", "0"),
            ("2", "-1"),
            ("4", "-1/3"),
            ("5/2", "0"),
        ];
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(c, i)| (c.to_string(), i.to_string()))
            .collect();
        assert_eq!(marks, expected);
        assert_eq!(test.denom, 6);
        assert_eq!(test.max_marks().to_string(), "33/2");
        assert_eq!(test.question("q5").unwrap().section, "s2");
    }

    #[test]
    fn lists_every_problem_of_a_test() {
        let err = prepare(json!({
            "test_id": "t", "key_version": 1,
            "marking": {"correct": 4, "incorrect": -1},
            "sections": [
                {"id": "s1", "attempt_limits": {"B": 0, "C": 1}, "questions": [
                    {"id": "q1", "type": "mcq", "answer": "E", "group": "B"},
                    {"id": "q2", "type": "msq", "answer": ["A", "A"]},
                    {"id": "q3", "type": "integer", "answer": "4.5"},
                    {"id": "q4", "type": "numeric", "answer": {"min": "2", "max": "1"},
                     "rounding": {"mode": "round", "decimals": 16}},
                    {"id": "q1", "type": "mcq", "answer": "A"},
                    {"id": "q6", "type": "mcq"},
                    {"id": "q7", "type": "numeric", "answer": {"value": "1", "tolerance": "-0.1"}},
                    {"id": "q8", "type": "subjective", "max_marks": 0, "marking": {"correct": 1}},
                    {"id": "q9", "type": "mcq", "answer": "A", "marking": {"incorrect": 5}},
                    {"id": "q10", "type": "msq", "answer": ["A", "B"],
                     "marking": {"msq": {"scheme": "partial", "per_option": 5}}}
                ]},
                {"id": "s1", "questions": []}
            ]
        }))
        .unwrap_err();
        let text = err.to_string();
        for expected in [
            "section `s1`: the attempt limit of group `B` is 0",
            "section `s1`: `attempt_limits` names group `C`, which has no questions",
            "question `q1` in section `s1`: key option `E` is not one of the options (A, B, C, D)",
            "question `q2` in section `s1`: the key repeats option `A`",
            "question `q3` in section `s1`: key `4.5` is not a whole number",
            "`rounding.decimals` is 16",
            "range minimum `2` is above its maximum `1`",
            "repeats a question id (first used in section `s1`)",
            "question `q6` in section `s1`: the question has no `answer`",
            "tolerance `-0.1` is negative",
            "`max_marks` is 0",
            "`marking` does not apply to subjective questions",
            "the `incorrect` mark 5 is above the `correct` mark 4",
            "a partial answer would earn 5, above the `correct` mark 4",
            "section `s1`: repeats a section id",
            "section `s1`: the section has no questions",
        ] {
            assert!(text.contains(expected), "{text}\n  lacks {expected:?}");
        }
        assert_eq!(err.problems().len(), 16, "{text}");
    }

    #[test]
    fn a_missing_correct_mark_is_named() {
        let err = prepare(json!({
            "test_id": "t", "key_version": 1,
            "sections": [{"id": "s", "questions": [{"id": "q", "type": "integer", "answer": "3"}]}]
        }))
        .unwrap_err();
        assert!(err.to_string().contains("no `correct` mark"), "{err}");
    }

    #[test]
    fn refuses_denominators_with_no_small_common_multiple() {
        let primes = ["1/999983", "1/999979", "1/999961"];
        let questions: Vec<_> = primes
            .iter()
            .enumerate()
            .map(|(i, p)| {
                json!({"id": format!("q{i}"), "type": "mcq", "answer": "A",
                                 "marking": {"correct": 1, "incorrect": format!("-{p}")}})
            })
            .collect();
        let err = prepare(json!({
            "test_id": "t", "key_version": 1,
            "sections": [{"id": "s", "questions": questions}]
        }))
        .unwrap_err();
        assert!(err.to_string().contains("no common denominator"), "{err}");
    }

    #[test]
    fn refuses_a_denominator_near_i64_max_without_overflowing() {
        let err = prepare(json!({
            "test_id": "t", "key_version": 1,
            "marking": {"correct": "1/999999937", "incorrect": "-1/9223372036854775807"},
            "sections": [{"id": "s", "questions": [{"id": "q", "type": "mcq", "answer": "A"}]}]
        }))
        .unwrap_err();
        assert!(err.to_string().contains("no common denominator"), "{err}");
    }
}
