//! The JEE-Advanced-like test and the attempt generator that the scoring and exports benches
//! share: the sections and their topics, the keys, and answers right or wrong drawn from a
//! seeded generator, so that every run scores and exports the same attempts.

use anyhow::{Context, Result, anyhow};
use quizworker_jobs::scoring::{
    Answer, Attempt, AttemptResult, PreparedTest, Response, ResponseState, TestDef,
};
use serde_json::{Value, json};

const OPTIONS: [&str; 4] = ["A", "B", "C", "D"];

/// Section id, title and its five topics.
pub const SECTIONS: [(&str, &str, [&str; 5]); 3] = [
    (
        "physics",
        "Physics",
        [
            "kinematics",
            "laws of motion",
            "electrostatics",
            "optics",
            "modern physics",
        ],
    ),
    (
        "chemistry",
        "Chemistry",
        [
            "atomic structure",
            "chemical bonding",
            "thermodynamics",
            "organic reactions",
            "coordination compounds",
        ],
    ),
    (
        "mathematics",
        "Mathematics",
        [
            "calculus",
            "algebra",
            "coordinate geometry",
            "probability",
            "vectors and 3D",
        ],
    ),
];

/// The test a bench scores or exports, and the keys its attempts are generated from.
pub struct Workload {
    pub def: TestDef,
    pub prepared: PreparedTest,
    /// In the test's order.
    questions: Vec<Question>,
}

impl Workload {
    /// The test, under the id `test_id`: 3 sections of 30 questions (see [`question`]), 5 topics
    /// a section; mathematics' MCQs lose 2/3.
    pub fn new(test_id: &str) -> Result<Workload> {
        let mut questions = Vec::new();
        let mut sections = Vec::new();
        for (section, (id, title, topics)) in SECTIONS.iter().enumerate() {
            let mut items = Vec::new();
            for slot in 0..30 {
                // Spread the keys over the options and values.
                let g = (section * 30 + slot) as u32;
                let qid = format!("{}-q{:02}", &id[..3], slot + 1);
                let (key, mut item) = question(slot, g);
                item["id"] = json!(qid);
                item["topic"] = json!(topics[slot % 5]);
                items.push(item);
                questions.push(Question { id: qid, key });
            }
            let mut section = json!({"id": id, "title": title, "questions": items});
            if *id == "mathematics" {
                section["marking_by_type"] = json!({"mcq": {"incorrect": "-2/3"}});
            }
            sections.push(section);
        }
        let def = json!({
            "test_id": test_id,
            "key_version": 1,
            "title": "JEE Advanced-like mock, paper 1",
            "marking_by_type": {
                "mcq": {"correct": 3, "incorrect": -1},
                "msq": {"correct": 4, "incorrect": -2, "msq": {"scheme": "partial", "per_option": 1}},
                "integer": {"correct": 4, "incorrect": 0},
                "numeric": {"correct": 3, "incorrect": 0}
            },
            "sections": sections,
        });
        let def: TestDef = serde_json::from_value(def).context("the test does not parse")?;
        let prepared =
            PreparedTest::new(def.clone()).map_err(|e| anyhow!("the test is refused: {e}"))?;
        Ok(Workload {
            def,
            prepared,
            questions,
        })
    }

    /// The test's id, size and marking up to its numeric questions, where the benches'
    /// descriptions of their workload go on in their own words.
    pub fn describe(&self) -> String {
        format!(
            "`{}`: {} questions in {} sections of 30, {} topics, {} marks; per section 6 MCQs \
             +3/-1 (mathematics -2/3), 6 MSQs +4/-2 with partial marking, 6 integer +4/0, 6 \
             numeric +3/0",
            self.def.test_id,
            self.prepared.question_count(),
            self.prepared.section_ids().len(),
            self.prepared.topics().len(),
            self.prepared.max_marks(),
        )
    }

    /// Attempt number `i`: its responses are the same every run, whatever the ids.
    pub fn attempt(&self, i: usize, attempt_id: String, candidate_id: String) -> Attempt {
        let mut rng = Lcg::new(i as u64);
        // The share of answered questions this candidate gets right, in percent.
        let skill = 25 + rng.below(60);
        let mut responses = Vec::with_capacity(self.questions.len());
        for question in &self.questions {
            let roll = rng.below(100);
            let time_spent_ms = Some(u64::from(5_000 + rng.below(295_000)));
            let (state, answer) = match roll {
                // Never visited: no response at all.
                0..8 => continue,
                8..12 => (Some(ResponseState::NotAnswered), None),
                12..16 => (Some(ResponseState::MarkedForReview), None),
                _ => {
                    let answer = if rng.below(100) < skill {
                        right_answer(question.key, &mut rng)
                    } else {
                        wrong_answer(question.key, &mut rng)
                    };
                    let state = match rng.below(10) {
                        0 => Some(ResponseState::AnsweredAndMarkedForReview),
                        1 => Some(ResponseState::Answered),
                        _ => None,
                    };
                    (state, Some(answer))
                }
            };
            responses.push(Response {
                question: question.id.clone(),
                state,
                answer,
                awarded: None,
                awarded_by: None,
                time_spent_ms,
            });
        }
        Attempt {
            attempt_id,
            test_id: Some(self.def.test_id.clone()),
            candidate_id: Some(candidate_id),
            candidate_name: None,
            responses,
        }
    }

    /// The pure scorer's result of `attempt`.
    pub fn score(&self, attempt: &Attempt) -> Result<AttemptResult> {
        self.prepared
            .score(attempt)
            .map_err(|e| anyhow!("attempt {} is refused: {e}", attempt.attempt_id))
    }
}

/// The key and the definition of the question in `slot` (0 to 29) of a section; `g` spreads the
/// keys over the options and values. Six of each: MCQs +3/-1, MSQs +4/-2 with partial marking,
/// integers +4/0, numerics +3/0 (half a range, half a value with a tolerance, answers rounded to
/// 2 decimals), matching-list MCQs +3/-1/3.
fn question(slot: usize, g: u32) -> (Key, Value) {
    match slot / 6 {
        0 | 4 => {
            let k = (g as usize * 3 + 1) % 4;
            let mut item = json!({"type": "mcq", "answer": OPTIONS[k]});
            if slot / 6 == 4 {
                // Matching-list questions: a wrong match loses a third of a mark.
                item["marking"] = json!({"correct": 3, "incorrect": "-1/3"});
            }
            (Key::Mcq(k), item)
        }
        1 => {
            let mask = 1 + (g * 7 % 15) as u8;
            let answer: Vec<&str> = picked(mask).collect();
            (Key::Msq(mask), json!({"type": "msq", "answer": answer}))
        }
        2 => {
            let n = g * 7 % 60;
            let item = json!({"type": "integer", "answer": n.to_string()});
            (Key::Integer(n), item)
        }
        _ => {
            let k = 1 + g % 20;
            let rounding = json!({"mode": "round", "decimals": 2});
            if g.is_multiple_of(2) {
                let answer = json!({"min": format!("{k}.40"), "max": format!("{k}.60")});
                let item = json!({"type": "numeric", "answer": answer, "rounding": rounding});
                (Key::Range(k), item)
            } else {
                let answer = json!({"value": format!("{k}.81"), "tolerance": "0.01"});
                let item = json!({"type": "numeric", "answer": answer, "rounding": rounding});
                (Key::Tolerance(k), item)
            }
        }
    }
}

/// Outcomes of every question of the scored attempts, and their marks.
#[derive(Default)]
pub struct Tally {
    attempts: u64,
    correct: u64,
    partial: u64,
    incorrect: u64,
    unattempted: u64,
    marks: f64,
}

impl Tally {
    pub fn add(&mut self, result: &AttemptResult) {
        let counts = &result.total.counts;
        self.attempts += 1;
        self.correct += u64::from(counts.correct);
        self.partial += u64::from(counts.partial);
        self.incorrect += u64::from(counts.incorrect);
        self.unattempted += u64::from(counts.unattempted);
        let marks = result.total.marks;
        self.marks += marks.numer() as f64 / marks.denom() as f64;
    }

    /// "61% correct, 9% partial, 22% incorrect, 8% unattempted": shares of all questions.
    pub fn shares(&self) -> String {
        let questions = (self.correct + self.partial + self.incorrect + self.unattempted) as f64;
        let share = |n: u64| 100.0 * n as f64 / questions;
        format!(
            "{:.0}% correct, {:.0}% partial, {:.0}% incorrect, {:.0}% unattempted",
            share(self.correct),
            share(self.partial),
            share(self.incorrect),
            share(self.unattempted),
        )
    }

    /// The marks of an attempt, on average.
    pub fn mean_marks(&self) -> f64 {
        self.marks / self.attempts as f64
    }
}

/// A question's key, as the attempt generator needs it.
#[derive(Clone, Copy)]
enum Key {
    /// The index of the right option.
    Mcq(usize),
    /// The right options, a bit per option of [`OPTIONS`].
    Msq(u8),
    Integer(u32),
    /// Right from `{k}.40` to `{k}.60`.
    Range(u32),
    /// `{k}.81` with a tolerance of 0.01, after rounding to 2 decimals.
    Tolerance(u32),
}

struct Question {
    id: String,
    key: Key,
}

/// The options of a mask, in order.
fn picked(mask: u8) -> impl Iterator<Item = &'static str> {
    (0..OPTIONS.len())
        .filter(move |i| mask & (1 << i) != 0)
        .map(|i| OPTIONS[i])
}

/// One of the ways of writing the right answer.
fn right_answer(key: Key, rng: &mut Lcg) -> Answer {
    let text = |s: String| Answer::Text(s);
    match key {
        Key::Mcq(k) => text(OPTIONS[k].to_owned()),
        Key::Msq(mask) => options(mask, rng),
        Key::Integer(n) => text(match rng.below(3) {
            0 => format!("{n}.0"),
            1 => format!("{n:03}"),
            _ => n.to_string(),
        }),
        Key::Range(k) => text(format!(
            "{k}.{}",
            ["5", "40", "6", "55"][rng.below(4) as usize]
        )),
        Key::Tolerance(k) => text(format!(
            "{k}.{}",
            ["81", "8149", "805", "82"][rng.below(4) as usize]
        )),
    }
}

/// A wrong answer; for an MSQ, often a partial one (some right options, no wrong one).
fn wrong_answer(key: Key, rng: &mut Lcg) -> Answer {
    let text = |s: String| Answer::Text(s);
    match key {
        Key::Mcq(k) => text(OPTIONS[(k + 1 + rng.below(3) as usize) % 4].to_owned()),
        Key::Msq(mask) => {
            let missing = !mask & 0b1111;
            if missing != 0 && (mask.count_ones() < 2 || rng.below(2) == 0) {
                // A wrong option chosen: incorrect.
                options(mask | nth_bit(missing, rng), rng)
            } else {
                // A right option left out: partial.
                options(mask & !nth_bit(mask, rng), rng)
            }
        }
        Key::Integer(n) => text((n + 1 + rng.below(9)).to_string()),
        Key::Range(k) => text(match rng.below(3) {
            0 => format!("{k}.62"),
            1 => format!("{k}.3"),
            _ => format!("{}.5", k + 1),
        }),
        Key::Tolerance(k) => text(match rng.below(3) {
            // 9.825 rounds to 9.83, out of 9.81 +- 0.01.
            0 => format!("{k}.825"),
            1 => format!("{k}.7"),
            _ => format!("{}.81", k + 1),
        }),
    }
}

/// The options of a mask, starting at a random one (candidates click in any order).
fn options(mask: u8, rng: &mut Lcg) -> Answer {
    let mut chosen: Vec<String> = picked(mask).map(str::to_owned).collect();
    let len = chosen.len();
    chosen.rotate_left(rng.below(len as u32) as usize);
    Answer::Options(chosen)
}

/// One of the set bits of `mask`, at random.
fn nth_bit(mask: u8, rng: &mut Lcg) -> u8 {
    let n = rng.below(mask.count_ones()) as usize;
    (0..8)
        .map(|i| 1u8 << i)
        .filter(|bit| mask & bit != 0)
        .nth(n)
        .unwrap_or(0)
}

/// Knuth's MMIX LCG: deterministic, no dependency.
struct Lcg(u64);

impl Lcg {
    fn new(seed: u64) -> Lcg {
        let mut rng = Lcg(seed ^ 0x9e37_79b9_7f4a_7c15);
        rng.next();
        rng
    }

    fn next(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) as u32
    }

    /// From 0 to `n - 1`; `n` must not be 0.
    fn below(&mut self, n: u32) -> u32 {
        self.next() % n
    }
}
