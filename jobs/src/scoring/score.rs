//! Scoring one attempt against a prepared test: each question's outcome and marks, then the
//! section, topic and attempt totals.

use std::cmp::Ordering;

use super::decimal::Number;
use super::marks::Marks;
use super::prepared::{Key, Points, PreparedTest, QuestionPlan};
use super::response::Attempt;
use super::result::{
    AttemptResult, Counts, Outcome, QuestionResult, SectionResult, Summary, TopicResult,
};
use super::test_def::DropPolicy;
use super::validate::{Given, Problem, ScoringError, Slot, read_attempt};

impl PreparedTest {
    /// Scores one attempt. The same test and attempt always give the same result, so scoring
    /// again (a retry, a rescore under an unchanged key) changes nothing.
    ///
    /// Fails with [`ScoringError::InvalidAttempt`], listing every problem, if the attempt does
    /// not fit the test.
    pub fn score(&self, attempt: &Attempt) -> Result<AttemptResult, ScoringError> {
        let slots = read_attempt(self, attempt)?;
        // Set if awarded marks could not be added exactly; the attempt then fails.
        let mut overflow = false;
        let mut total = Tally::default();
        let mut topics = vec![Tally::default(); self.topics.len()];
        let mut sections = Vec::with_capacity(self.sections.len());
        // Answers evaluated so far per limited group (no allocation for a test without limits).
        let mut evaluated = vec![0_u32; self.limits.len()];
        for section in &self.sections {
            let mut tally = Tally::default();
            let mut questions = Vec::with_capacity(section.questions.len());
            for (plan, slot) in self.questions[section.questions.clone()]
                .iter()
                .zip(&slots[section.questions.clone()])
            {
                let answered = slot.given != Given::None;
                let over_limit = match plan.limit {
                    Some(g) if answered => {
                        evaluated[g] += 1;
                        evaluated[g] > self.limits[g]
                    }
                    _ => false,
                };
                let (outcome, value) = if over_limit {
                    (Outcome::OverLimit, Value::Points(Points::ZERO))
                } else {
                    judge(plan, slot)
                };
                let answered = answered && outcome != Outcome::OverLimit;
                let marks = match value {
                    Value::Points(p) => {
                        tally.add_points(p);
                        if let Some(t) = plan.topic {
                            topics[t].add_points(p);
                        }
                        p.marks
                    }
                    Value::Awarded(m) => {
                        tally.add_awarded(m, self.denom);
                        if let Some(t) = plan.topic {
                            topics[t].add_awarded(m, self.denom);
                        }
                        m
                    }
                };
                tally.count(outcome, answered, slot.time_spent_ms);
                if let Some(t) = plan.topic {
                    topics[t].count(outcome, answered, slot.time_spent_ms);
                    topics[t].max += plan.max.scaled;
                }
                let awarded_by = match value {
                    Value::Awarded(_) => slot
                        .response
                        .and_then(|i| attempt.responses.get(i as usize))
                        .and_then(|r| r.awarded_by.clone()),
                    Value::Points(_) => None,
                };
                questions.push(QuestionResult {
                    id: plan.id.clone(),
                    outcome,
                    marks,
                    max_marks: plan.max.marks,
                    answered,
                    time_spent_ms: slot.time_spent_ms,
                    awarded_by,
                });
            }
            tally.max = section.max.scaled;
            total.merge(&tally);
            sections.push(SectionResult {
                id: section.id.clone(),
                summary: tally.summary(self.denom, &mut overflow),
                questions,
            });
        }
        let topics = self
            .topics
            .iter()
            .zip(&topics)
            .map(|(topic, tally)| TopicResult {
                topic: topic.clone(),
                summary: tally.summary(self.denom, &mut overflow),
            })
            .collect();
        let total_summary = total.summary(self.denom, &mut overflow);
        if overflow {
            return Err(ScoringError::invalid_attempt(vec![Problem::test(
                "the `awarded` marks have denominators too varied to add up exactly",
            )]));
        }
        Ok(AttemptResult {
            attempt_id: attempt.attempt_id.clone(),
            candidate_id: attempt.candidate_id.clone(),
            test_id: self.test_id_arc().clone(),
            key_version: self.key_version(),
            provisional: total.counts.pending_evaluation > 0,
            total: total_summary,
            sections,
            topics,
        })
    }
}

/// A question's marks: from the test's marking (over its common denominator), or awarded by a
/// marker (any fraction).
enum Value {
    Points(Points),
    Awarded(Marks),
}

fn judge(plan: &QuestionPlan, slot: &Slot) -> (Outcome, Value) {
    let answered = slot.given != Given::None;
    let points = |outcome, p| (outcome, Value::Points(p));
    match plan.dropped {
        Some(DropPolicy::MarksToAll) => return points(Outcome::Dropped, plan.correct),
        Some(DropPolicy::MarksToAttempted) if answered => {
            return points(Outcome::Dropped, plan.correct);
        }
        Some(DropPolicy::MarksToAttempted) => return points(Outcome::Dropped, plan.unattempted),
        Some(DropPolicy::Removed) => return points(Outcome::Dropped, Points::ZERO),
        None => {}
    }
    let right = |ok: bool| {
        if ok {
            points(Outcome::Correct, plan.correct)
        } else {
            points(Outcome::Incorrect, plan.incorrect)
        }
    };
    match (&plan.key, slot.given) {
        (_, Given::None) => points(Outcome::Unattempted, plan.unattempted),
        // More than one option on an MCQ is wrong even if one of them is accepted.
        (Key::Mcq { accepted, .. }, Given::Options(chosen)) => {
            right(chosen.count_ones() == 1 && chosen & accepted != 0)
        }
        (Key::Msq { key, partial, .. }, Given::Options(chosen)) => {
            if chosen == *key {
                right(true)
            } else if chosen & !key != 0 {
                right(false)
            } else {
                match partial {
                    Some(table) => points(Outcome::Partial, table[chosen.count_ones() as usize]),
                    None => right(false),
                }
            }
        }
        (Key::Integer { accepted }, Given::Number(n)) => {
            right(accepted.iter().any(|&k| n.cmp_key(k) == Ordering::Equal))
        }
        (Key::Numeric { accepted, rounding }, Given::Number(n)) => {
            let n: Number = rounding.map_or(n, |r| n.rounded(r));
            right(
                accepted
                    .iter()
                    .any(|&(lo, hi)| n.cmp_key(lo).is_ge() && n.cmp_key(hi).is_le()),
            )
        }
        (Key::Subjective, Given::Text) => match slot.awarded {
            None => points(Outcome::PendingEvaluation, Points::ZERO),
            Some(m) if m == plan.correct.marks => (Outcome::Correct, Value::Awarded(m)),
            Some(m) if m.is_zero() => (Outcome::Incorrect, Value::Awarded(m)),
            Some(m) => (Outcome::Partial, Value::Awarded(m)),
        },
        // `read_attempt` only gives each key the answers it can take.
        _ => unreachable!("an answer of the wrong type passed validation"),
    }
}

/// Running totals over the test's common denominator. Awarded marks whose denominator does not
/// divide it are added apart, as exact ratios.
#[derive(Clone, Default)]
struct Tally {
    scaled: i64,
    negative: i64,
    max: i64,
    awarded_apart: Option<Marks>,
    counts: Counts,
    time_spent_ms: Option<u64>,
    /// An awarded mark could not be added exactly.
    overflow: bool,
}

impl Tally {
    fn add_points(&mut self, p: Points) {
        self.scaled += p.scaled;
        self.negative += p.scaled.min(0);
    }

    fn add_awarded(&mut self, m: Marks, denom: i64) {
        match m.scaled_to(denom) {
            Some(scaled) if scaled.checked_add(self.scaled).is_some() => self.scaled += scaled,
            _ => self.add_apart(m),
        }
    }

    fn add_apart(&mut self, m: Marks) {
        match self.awarded_apart.unwrap_or(Marks::ZERO).checked_add(m) {
            Some(sum) => self.awarded_apart = Some(sum),
            None => self.overflow = true,
        }
    }

    fn count(&mut self, outcome: Outcome, answered: bool, time: Option<u64>) {
        self.counts.add(outcome, answered);
        if let Some(t) = time {
            self.time_spent_ms = Some(self.time_spent_ms.unwrap_or(0).saturating_add(t));
        }
    }

    fn merge(&mut self, other: &Tally) {
        self.scaled += other.scaled;
        self.negative += other.negative;
        self.max += other.max;
        if let Some(m) = other.awarded_apart {
            self.add_apart(m);
        }
        self.overflow |= other.overflow;
        self.counts += other.counts;
        if let Some(t) = other.time_spent_ms {
            self.time_spent_ms = Some(self.time_spent_ms.unwrap_or(0).saturating_add(t));
        }
    }

    /// Sets `overflow` (and returns an empty summary) if the awarded marks overflowed.
    fn summary(&self, denom: i64, overflow: &mut bool) -> Summary {
        let marks = Marks::from_scaled(self.scaled, denom);
        let marks = match self.awarded_apart {
            Some(apart) => marks.checked_add(apart),
            None => Some(marks),
        };
        let Some(marks) = marks.filter(|_| !self.overflow) else {
            *overflow = true;
            return Summary::default();
        };
        Summary {
            marks,
            max_marks: Marks::from_scaled(self.max, denom),
            lost_to_negatives: Marks::from_scaled(-self.negative, denom),
            counts: self.counts,
            time_spent_ms: self.time_spent_ms,
        }
    }
}
