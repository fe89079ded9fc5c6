//! Property tests: JEE Advanced's MSQ marks stay in their published set, scoring is
//! deterministic, and every total is the exact sum of its parts.

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;

const OPTIONS: [&str; 4] = ["A", "B", "C", "D"];

fn options(mask: u8) -> Vec<&'static str> {
    (0..4)
        .filter(|i| mask & (1 << i) != 0)
        .map(|i| OPTIONS[i])
        .collect()
}

proptest! {
    #[test]
    fn jee_advanced_msq_marks_are_always_published_ones(key in 1_u8..16, chosen in 0_u8..16) {
        let test = PreparedTest::new(serde_json::from_value(json!({
            "test_id": "t", "key_version": 1,
            "marking": {"correct": 4, "incorrect": -2, "msq": {"scheme": "partial"}},
            "sections": [{"id": "s", "questions": [
                {"id": "q", "type": "msq", "answer": options(key)}
            ]}]
        })).unwrap()).unwrap();
        let attempt: Attempt = serde_json::from_value(json!({
            "attempt_id": "a", "responses": [{"question": "q", "answer": options(chosen)}]
        })).unwrap();
        let result = test.score(&attempt).unwrap();
        let marks = result.total.marks;
        prop_assert!([-2, 0, 1, 2, 3, 4].iter().any(|&m| marks == m), "{marks}");
        // And the mark is the one the rules give.
        let expected = if chosen == 0 {
            0
        } else if chosen & !key != 0 {
            -2
        } else if chosen == key {
            4
        } else {
            i64::from(chosen.count_ones())
        };
        prop_assert_eq!(marks, Marks::integer(expected));
    }

    #[test]
    fn scoring_again_changes_nothing((test, attempt) in paper()) {
        let test = PreparedTest::new(test).unwrap();
        let first = test.score(&attempt).unwrap();
        prop_assert_eq!(&test.score(&attempt).unwrap(), &first);
        // Rebuilt from its JSON, as a rescore under an unchanged key would.
        let def = serde_json::to_value(test.definition()).unwrap();
        let rebuilt = PreparedTest::new(serde_json::from_value(def).unwrap()).unwrap();
        prop_assert_eq!(&rebuilt.score(&attempt).unwrap(), &first);
        // And a stored result reads back as it was.
        let stored = serde_json::to_string(&first).unwrap();
        prop_assert_eq!(&serde_json::from_str::<AttemptResult>(&stored).unwrap(), &first);
    }

    #[test]
    fn totals_are_the_exact_sums_of_their_parts((test, attempt) in paper()) {
        let test = PreparedTest::new(test).unwrap();
        let result = test.score(&attempt).unwrap();
        let sections: Marks = result.sections.iter().map(|s| s.summary.marks).sum();
        prop_assert_eq!(sections, result.total.marks);
        let max: Marks = result.sections.iter().map(|s| s.summary.max_marks).sum();
        prop_assert_eq!(max, result.total.max_marks);
        prop_assert_eq!(result.total.max_marks, test.max_marks());
        prop_assert!(result.total.marks <= result.total.max_marks);
        let mut counts = Counts::default();
        for s in &result.sections {
            let questions: Marks = s.questions.iter().map(|q| q.marks).sum();
            prop_assert_eq!(questions, s.summary.marks);
            let lost: Marks = s.questions.iter().map(|q| q.marks).filter(|m| m.is_negative()).sum();
            prop_assert_eq!(-lost, s.summary.lost_to_negatives);
            prop_assert_eq!(s.summary.counts.questions() as usize, s.questions.len());
            counts += s.summary.counts;
        }
        prop_assert_eq!(counts, result.total.counts);
        let lost: Marks = result.sections.iter().map(|s| s.summary.lost_to_negatives).sum();
        prop_assert_eq!(lost, result.total.lost_to_negatives);
        prop_assert_eq!(result.provisional, result.total.counts.pending_evaluation > 0);
    }
}

const CORRECT: [&str; 6] = ["1", "2", "3", "4", "1/2", "5/2"];
const INCORRECT: [&str; 8] = ["0", "-1", "-1/3", "-2/3", "-5/6", "-1/4", "-2", "-1/2"];
const SCHEMES: [&str; 3] = ["all_or_nothing", "partial", "proportional"];
const DROPS: [&str; 3] = ["marks_to_all", "marks_to_attempted", "removed"];
const NUMBERS: [&str; 8] = ["1.5", "1.55", "1.6", "1.61", "-3", "11.00", "0.333", "7"];

/// One random question and its response, from a handful of seeds.
#[derive(Debug, Clone)]
struct Seed {
    kind: u8,
    key: u8,
    marking: (u8, u8),
    scheme: u8,
    dropped: u8,
    state: u8,
    answer: u8,
    time: Option<u16>,
}

fn seed() -> impl Strategy<Value = Seed> {
    (
        (0_u8..5, 0_u8..16, 0_u8..6, 0_u8..8),
        (0_u8..3, 0_u8..20, 0_u8..4, 0_u8..16, any::<Option<u16>>()),
    )
        .prop_map(
            |((kind, key, correct, incorrect), (scheme, dropped, state, answer, time))| Seed {
                kind,
                key,
                marking: (correct, incorrect),
                scheme,
                dropped,
                state,
                answer,
                time,
            },
        )
}

/// A random test of 1 to 4 sections (some with an attempt limit) and an attempt of it.
fn paper() -> impl Strategy<Value = (TestDef, Attempt)> {
    prop::collection::vec(prop::collection::vec(seed(), 1..12), 1..5).prop_map(|sections| {
        let mut responses = Vec::new();
        let sections: Vec<Value> = sections
            .iter()
            .enumerate()
            .map(|(s, seeds)| {
                let questions: Vec<Value> = seeds
                    .iter()
                    .enumerate()
                    .map(|(i, seed)| {
                        let id = format!("s{s}q{i}");
                        if let Some(r) = response(&id, seed) {
                            responses.push(r);
                        }
                        question(&id, seed)
                    })
                    .collect();
                let mut section = json!({"id": format!("s{s}"), "questions": questions});
                if s % 2 == 1 && seeds.iter().any(|seed| seed.key.is_multiple_of(2)) {
                    section["attempt_limits"] = json!({"B": 2});
                }
                section
            })
            .collect();
        // Responses in a shuffled but reproducible order: reversed.
        responses.reverse();
        let test = json!({"test_id": "t", "key_version": 1, "sections": sections});
        let attempt = json!({"attempt_id": "a", "test_id": "t", "responses": responses});
        (
            serde_json::from_value(test).unwrap(),
            serde_json::from_value(attempt).unwrap(),
        )
    })
}

fn question(id: &str, seed: &Seed) -> Value {
    let correct: Marks = CORRECT[seed.marking.0 as usize].parse().unwrap();
    // A quarter of the full mark per option keeps every partial mark below the full one.
    let per_option = correct.checked_mul(Marks::new(1, 4).unwrap()).unwrap();
    let mut scheme = json!({"scheme": SCHEMES[seed.scheme as usize]});
    if seed.scheme == 1 {
        scheme["per_option"] = json!(per_option);
    }
    let marking = json!({
        "correct": correct,
        "incorrect": INCORRECT[seed.marking.1 as usize],
        "msq": scheme
    });
    let mut q = match seed.kind {
        0 => json!({"type": "mcq", "answer": OPTIONS[(seed.key % 4) as usize],
                    "also_accepted": if seed.key > 12 { vec!["D"] } else { vec![] }}),
        1 => json!({"type": "msq", "answer": options(seed.key.max(1))}),
        2 => json!({"type": "integer", "answer": format!("{}", seed.key % 8)}),
        3 => json!({"type": "numeric", "answer": {"min": "1.5", "max": "1.6"},
                    "rounding": {"mode": if seed.key.is_multiple_of(2) { "round" } else { "truncate" },
                                 "decimals": seed.key % 3}}),
        _ => json!({"type": "subjective", "max_marks": CORRECT[seed.marking.0 as usize]}),
    };
    q["id"] = json!(id);
    if seed.kind != 4 {
        q["marking"] = marking;
        if seed.kind != 1 {
            q["marking"].as_object_mut().unwrap().remove("msq");
        }
    }
    if seed.dropped < 3 {
        q["dropped"] = json!(DROPS[seed.dropped as usize]);
    }
    if seed.key.is_multiple_of(2) {
        q["group"] = json!("B");
    }
    q
}

fn response(id: &str, seed: &Seed) -> Option<Value> {
    let state = [
        "not_answered",
        "answered",
        "marked_for_review",
        "answered_and_marked_for_review",
    ][seed.state as usize];
    let mut r = json!({"question": id, "state": state});
    if let Some(t) = seed.time {
        r["time_spent_ms"] = json!(t);
    }
    if matches!(seed.state, 1 | 3) {
        r["answer"] = match seed.kind {
            0 if seed.answer > 13 => json!(["A", "B"]),
            0 => json!(OPTIONS[(seed.answer % 4) as usize]),
            1 => json!(options(seed.answer.max(1))),
            2 => json!(format!("{}", seed.answer % 8)),
            3 => json!(NUMBERS[(seed.answer % 8) as usize]),
            _ => json!("an essay"),
        };
        if seed.kind == 4 && !seed.answer.is_multiple_of(3) {
            // Awarded: max_marks x (answer % 5) / 4, from 0 to max_marks.
            let max: Marks = CORRECT[seed.marking.0 as usize].parse().unwrap();
            let share = Marks::new(i64::from(seed.answer % 5), 4).unwrap();
            r["awarded"] = json!((max.checked_mul(share).unwrap()).to_string());
        }
    } else if seed.answer == 0 {
        return None;
    }
    Some(r)
}
