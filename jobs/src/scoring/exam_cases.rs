//! Worked cases from the exams the scorer must express (JEE Main, JEE Advanced, NEET, GATE, CAT,
//! UPSC prelims), each checked against totals worked out by hand, plus the features around them:
//! revised keys, dropped questions, response states, subjective marks and bad input.

use serde_json::{Value, json};

use super::*;

fn prepare(test: Value) -> PreparedTest {
    PreparedTest::new(serde_json::from_value(test).expect("test JSON")).expect("valid test")
}

fn attempt(responses: Value) -> Attempt {
    serde_json::from_value(json!({"attempt_id": "a-1", "responses": responses})).unwrap()
}

fn score(test: &PreparedTest, responses: Value) -> AttemptResult {
    test.score(&attempt(responses)).expect("valid attempt")
}

fn question<'r>(result: &'r AttemptResult, id: &str) -> &'r QuestionResult {
    result.questions().find(|q| &*q.id == id).unwrap()
}

/// (outcome, marks) of question `id`.
fn got(result: &AttemptResult, id: &str) -> (Outcome, String) {
    let q = question(result, id);
    (q.outcome, q.marks.to_string())
}

fn m(s: &str) -> Marks {
    s.parse().unwrap()
}

/// `n` questions `{prefix}{1..=n}` of one type, with `extra` fields merged into each.
fn questions(prefix: &str, n: usize, question_type: &str, extra: Value) -> Vec<Value> {
    (1..=n)
        .map(|i| {
            let mut q = json!({"id": format!("{prefix}{i}"), "type": question_type});
            q.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            q
        })
        .collect()
}

/// Responses to questions `{prefix}{from..=to}`, each with `answer`.
fn answers(prefix: &str, from: usize, to: usize, answer: Value) -> Vec<Value> {
    (from..=to)
        .map(|i| json!({"question": format!("{prefix}{i}"), "answer": answer}))
        .collect()
}

fn concat(parts: Vec<Vec<Value>>) -> Value {
    Value::Array(parts.into_iter().flatten().collect())
}

// --- JEE Main: MCQ +4/-1, numerical +4/0, "attempt any 5 of 10" numericals ---------------------

fn jee_main_subject(id: &str) -> Value {
    json!({
        "id": id,
        "attempt_limits": {"B": 5},
        "questions": concat(vec![
            questions(&format!("{id}-a"), 20, "mcq", json!({"answer": "B", "group": "A"})),
            questions(&format!("{id}-b"), 10, "numeric",
                      json!({"answer": {"value": "11"}, "group": "B"})),
        ])
    })
}

fn jee_main() -> PreparedTest {
    prepare(json!({
        "test_id": "jee-main-2023-s1", "key_version": 1,
        "marking": {"correct": 4, "incorrect": -1},
        "marking_by_type": {"numeric": {"incorrect": 0}},
        "sections": [jee_main_subject("phy"), jee_main_subject("chem"), jee_main_subject("math")]
    }))
}

#[test]
fn jee_main_question_by_question() {
    let test = jee_main();
    let result = score(
        &test,
        json!([
            {"question": "phy-a1", "answer": "B"},
            {"question": "phy-a2", "answer": "C"},
            {"question": "phy-a3", "answer": ["B", "C"]},
            {"question": "phy-a4", "state": "marked_for_review"},
            {"question": "phy-a5", "answer": "B", "state": "answered_and_marked_for_review"},
            {"question": "phy-a6", "state": "not_visited"},
            {"question": "phy-b1", "answer": "11"},
            {"question": "phy-b2", "answer": "11.00"},
            {"question": "phy-b3", "answer": "12"},
        ]),
    );
    use Outcome::*;
    assert_eq!(got(&result, "phy-a1"), (Correct, "4".into()));
    assert_eq!(got(&result, "phy-a2"), (Incorrect, "-1".into()));
    // Two options on an MCQ is wrong, though one of them is the key.
    assert_eq!(got(&result, "phy-a3"), (Incorrect, "-1".into()));
    assert_eq!(got(&result, "phy-a4"), (Unattempted, "0".into()));
    assert_eq!(got(&result, "phy-a5"), (Correct, "4".into()));
    assert_eq!(got(&result, "phy-a6"), (Unattempted, "0".into()));
    assert_eq!(got(&result, "phy-b1"), (Correct, "4".into()));
    assert_eq!(got(&result, "phy-b2"), (Correct, "4".into()));
    assert_eq!(got(&result, "phy-b3"), (Incorrect, "0".into()));
    assert_eq!(result.total.marks, 14);
    assert_eq!(result.total.lost_to_negatives, 2);
    assert_eq!(result.total.max_marks, 300);
}

#[test]
fn jee_main_whole_paper() {
    let test = jee_main();
    let mut responses = Vec::new();
    for s in ["phy", "chem", "math"] {
        // 15 right, 3 wrong, 2 left; 6 numericals answered: the first 5 count (4 right, 1
        // wrong), the sixth is over the limit even though it is right.
        responses.extend(answers(&format!("{s}-a"), 1, 15, json!("B")));
        responses.extend(answers(&format!("{s}-a"), 16, 18, json!("A")));
        responses.extend(answers(&format!("{s}-b"), 1, 4, json!("11.0")));
        responses.extend(answers(&format!("{s}-b"), 5, 5, json!("10.99")));
        responses.extend(answers(&format!("{s}-b"), 6, 6, json!("11")));
    }
    let result = score(&test, Value::Array(responses));
    // Per subject: 15 x 4 - 3 x 1 + 4 x 4 = 73.
    for s in &result.sections {
        assert_eq!(s.summary.marks, 73, "{}", s.id);
        assert_eq!(s.summary.max_marks, 100);
        assert_eq!(s.summary.counts.over_limit, 1);
        assert_eq!(s.summary.counts.answered, 23);
    }
    assert_eq!(got(&result, "math-b6"), (Outcome::OverLimit, "0".into()));
    assert_eq!(result.total.marks, 219);
    assert_eq!(result.total.max_marks, 300);
    assert_eq!(result.total.lost_to_negatives, 9);
    let c = result.total.counts;
    assert_eq!((c.correct, c.incorrect, c.unattempted), (57, 12, 18));
    // 57 of 69 judged answers.
    assert_eq!(
        result.total.accuracy_percent().unwrap().to_string(),
        "82.61"
    );
}

// --- JEE Advanced: MCQ +3/-1, MSQ partial +4/+3/+2/+1/0/-2, integer +4/0 -----------------------

fn jee_advanced_subject(id: &str) -> Value {
    json!({"id": id, "questions": concat(vec![
        questions(&format!("{id}-s"), 4, "mcq", json!({"answer": "A"})),
        vec![
            json!({"id": format!("{id}-m1"), "type": "msq", "answer": ["A", "B", "C", "D"]}),
            json!({"id": format!("{id}-m2"), "type": "msq", "answer": ["A", "B", "C"]}),
            json!({"id": format!("{id}-m3"), "type": "msq", "answer": ["B", "D"]}),
        ],
        questions(&format!("{id}-i"), 6, "integer", json!({"answer": "7"})),
    ])})
}

fn jee_advanced() -> PreparedTest {
    prepare(json!({
        "test_id": "jee-adv-2023-p1", "key_version": 1,
        "marking_by_type": {
            "mcq": {"correct": 3, "incorrect": -1},
            "msq": {"correct": 4, "incorrect": -2, "msq": {"scheme": "partial", "per_option": 1}},
            "integer": {"correct": 4, "incorrect": 0}
        },
        "sections": [
            jee_advanced_subject("phy"), jee_advanced_subject("chem"), jee_advanced_subject("math")
        ]
    }))
}

#[test]
fn jee_advanced_partial_marking_gives_each_published_mark() {
    let test = jee_advanced();
    let cases = [
        // All four correct options chosen.
        ("phy-m1", json!(["A", "B", "C", "D"]), Outcome::Correct, "4"),
        // Three of four correct options, no wrong one.
        ("phy-m1", json!(["A", "B", "D"]), Outcome::Partial, "3"),
        // Two of three.
        ("phy-m2", json!(["A", "C"]), Outcome::Partial, "2"),
        // One of two.
        ("phy-m3", json!(["D"]), Outcome::Partial, "1"),
        ("phy-m3", json!([]), Outcome::Unattempted, "0"),
        // Any wrong option, whatever else is right.
        ("phy-m3", json!(["B", "C", "D"]), Outcome::Incorrect, "-2"),
        ("phy-m2", json!(["D"]), Outcome::Incorrect, "-2"),
        ("phy-m2", json!(["A", "B", "C"]), Outcome::Correct, "4"),
        ("phy-s1", json!("A"), Outcome::Correct, "3"),
        ("phy-s1", json!("B"), Outcome::Incorrect, "-1"),
        ("phy-i1", json!("7"), Outcome::Correct, "4"),
        ("phy-i1", json!("007.0"), Outcome::Correct, "4"),
        ("phy-i1", json!("8"), Outcome::Incorrect, "0"),
    ];
    for (id, answer, outcome, marks) in cases {
        let result = score(&test, json!([{"question": id, "answer": answer}]));
        assert_eq!(
            got(&result, id),
            (outcome, marks.to_owned()),
            "{id} {answer}"
        );
        assert_eq!(result.total.marks, m(marks));
    }
}

#[test]
fn jee_advanced_whole_paper() {
    let test = jee_advanced();
    assert_eq!(test.max_marks(), 144);
    let mut responses = Vec::new();
    for s in ["phy", "chem", "math"] {
        responses.extend(answers(&format!("{s}-s"), 1, 3, json!("A"))); // +9
        responses.extend(answers(&format!("{s}-s"), 4, 4, json!("C"))); // -1
        responses.push(json!({"question": format!("{s}-m1"), "answer": ["A", "B"]})); // +2
        responses.push(json!({"question": format!("{s}-m2"), "answer": ["A", "D"]})); // -2
        responses.push(json!({"question": format!("{s}-m3"), "answer": ["B", "D"]})); // +4
        responses.extend(answers(&format!("{s}-i"), 1, 4, json!("7"))); // +16
        responses.extend(answers(&format!("{s}-i"), 5, 5, json!("6"))); // 0
    }
    let result = score(&test, Value::Array(responses));
    for s in &result.sections {
        assert_eq!(s.summary.marks, 28, "{}", s.id);
        assert_eq!(s.summary.lost_to_negatives, 3);
        assert_eq!(s.summary.counts.partial, 1);
    }
    assert_eq!(result.total.marks, 84);
    assert_eq!(result.total.lost_to_negatives, 9);
}

// --- NEET: +4/-1, section B "attempt any 10 of 15" -------------------------------------------

#[test]
fn neet_whole_paper() {
    let subject = |id: &str| {
        json!({"id": id, "attempt_limits": {"B": 10}, "questions": concat(vec![
            questions(&format!("{id}-a"), 35, "mcq", json!({"answer": "C"})),
            questions(&format!("{id}-b"), 15, "mcq", json!({"answer": "C", "group": "B"})),
        ])})
    };
    let test = prepare(json!({
        "test_id": "neet-2024", "key_version": 1,
        "marking": {"correct": 4, "incorrect": -1},
        "sections": [subject("phy"), subject("chem"), subject("bot"), subject("zoo")]
    }));
    assert_eq!(test.max_marks(), 720);
    let mut responses = Vec::new();
    for s in ["phy", "chem", "bot", "zoo"] {
        responses.extend(answers(&format!("{s}-a"), 1, 30, json!("C"))); // +120
        responses.extend(answers(&format!("{s}-a"), 31, 35, json!("A"))); // -5
        // Twelve answered in B: only the first ten count (8 right, 2 wrong); the last two are
        // over the limit, the wrong one costs nothing.
        responses.extend(answers(&format!("{s}-b"), 1, 8, json!("C"))); // +32
        responses.extend(answers(&format!("{s}-b"), 9, 10, json!("D"))); // -2
        responses.extend(answers(&format!("{s}-b"), 11, 11, json!("C")));
        responses.extend(answers(&format!("{s}-b"), 12, 12, json!("B")));
    }
    let result = score(&test, Value::Array(responses));
    for s in &result.sections {
        assert_eq!(s.summary.marks, 145, "{}", s.id);
        assert_eq!(s.summary.max_marks, 180);
    }
    assert_eq!(result.total.marks, 580);
    assert_eq!(result.total.counts.over_limit, 8);
}

// --- GATE: 1- and 2-mark MCQs at -1/3 and -2/3, MSQ and NAT without negatives ----------------

fn gate() -> PreparedTest {
    let one = json!({"correct": 1, "incorrect": "-1/3"});
    let two = json!({"correct": 2, "incorrect": "-2/3"});
    let no_negative = |marks: i64| json!({"correct": marks, "incorrect": 0});
    let nat = json!({"answer": {"min": "1.50", "max": "1.60"}});
    prepare(json!({
        "test_id": "gate-cs-2024", "key_version": 1,
        "sections": [
            {"id": "ga", "questions": concat(vec![
                questions("ga1-", 5, "mcq", json!({"answer": "D", "marking": one})),
                questions("ga2-", 5, "mcq", json!({"answer": "D", "marking": two})),
            ])},
            {"id": "cs", "questions": concat(vec![
                questions("mcq1-", 15, "mcq", json!({"answer": "A", "marking": one})),
                questions("msq1-", 5, "msq",
                          json!({"answer": ["A", "C"], "marking": no_negative(1)})),
                questions("nat1-", 5, "numeric",
                          json!({"answer": nat["answer"], "marking": no_negative(1)})),
                questions("mcq2-", 20, "mcq", json!({"answer": "A", "marking": two})),
                questions("msq2-", 5, "msq",
                          json!({"answer": ["A", "C"], "marking": no_negative(2)})),
                questions("nat2-", 5, "numeric",
                          json!({"answer": nat["answer"], "marking": no_negative(2)})),
            ])}
        ]
    }))
}

#[test]
fn gate_nat_ranges_are_inclusive_and_exact() {
    let test = gate();
    for (answer, outcome) in [
        ("1.50", Outcome::Correct),
        ("1.5", Outcome::Correct),
        ("1.55", Outcome::Correct),
        ("1.600", Outcome::Correct),
        ("1.6000000000000000000000001", Outcome::Incorrect),
        ("1.4999", Outcome::Incorrect),
        ("-1.55", Outcome::Incorrect),
    ] {
        let result = score(&test, json!([{"question": "nat1-1", "answer": answer}]));
        assert_eq!(
            got(&result, "nat1-1"),
            (
                outcome,
                if outcome == Outcome::Correct {
                    "1"
                } else {
                    "0"
                }
                .into()
            ),
            "{answer}"
        );
    }
    // MSQ is all-or-nothing without a negative.
    let result = score(&test, json!([{"question": "msq2-1", "answer": ["A"]}]));
    assert_eq!(got(&result, "msq2-1"), (Outcome::Incorrect, "0".into()));
}

#[test]
fn gate_whole_paper_adds_thirds_exactly() {
    let test = gate();
    assert_eq!(test.max_marks(), 100);
    let responses = concat(vec![
        answers("ga1-", 1, 4, json!("D")),              // +4
        answers("ga1-", 5, 5, json!("A")),              // -1/3
        answers("ga2-", 1, 3, json!("D")),              // +6
        answers("ga2-", 4, 5, json!("B")),              // -4/3
        answers("mcq1-", 1, 10, json!("A")),            // +10
        answers("mcq1-", 11, 14, json!("B")),           // -4/3
        answers("msq1-", 1, 3, json!(["A", "C"])),      // +3
        answers("msq1-", 4, 5, json!(["A"])),           // 0
        answers("nat1-", 1, 4, json!("1.52")),          // +4
        answers("nat1-", 5, 5, json!("2")),             // 0
        answers("mcq2-", 1, 12, json!("A")),            // +24
        answers("mcq2-", 13, 19, json!("C")),           // -14/3
        answers("msq2-", 1, 2, json!(["C", "A"])),      // +4
        answers("msq2-", 3, 5, json!(["A", "B", "C"])), // 0
        answers("nat2-", 1, 3, json!("1.6")),           // +6
        answers("nat2-", 4, 5, json!("1.7")),           // 0
    ]);
    let result = score(&test, responses);
    // GA: 10 - 5/3 = 25/3. CS: 51 - 6 = 45. Total: 61 - 23/3 = 160/3.
    assert_eq!(result.section("ga").unwrap().summary.marks, m("25/3"));
    assert_eq!(result.section("cs").unwrap().summary.marks, 45);
    assert_eq!(result.total.marks, m("160/3"));
    assert_eq!(result.total.lost_to_negatives, m("23/3"));
    let json = serde_json::to_value(&result).unwrap();
    assert_eq!(json["marks"], "160/3");
    assert_eq!(json["marks_display"], "53.33");
    assert_eq!(json["lost_to_negatives"], "23/3");
    assert_eq!(json["sections"][0]["marks"], "25/3");
    assert_eq!(json["sections"][0]["questions"][4]["marks"], "-1/3");
}

#[test]
fn thirds_and_sixths_add_up_to_353_over_6() {
    // A practice paper marking 1-, 2- and 5-mark questions at -1/3, -2/3 and -5/6.
    let test = prepare(json!({
        "test_id": "mixed", "key_version": 1,
        "sections": [
            {"id": "x", "marking": {"correct": 1, "incorrect": "-1/3"},
             "questions": questions("x", 14, "mcq", json!({"answer": "A"}))},
            {"id": "y", "marking": {"correct": 2, "incorrect": "-2/3"},
             "questions": questions("y", 14, "mcq", json!({"answer": "A"}))},
            {"id": "z", "marking": {"correct": 5, "incorrect": "-5/6"},
             "questions": questions("z", 8, "mcq", json!({"answer": "A"}))}
        ]
    }));
    let responses = concat(vec![
        answers("x", 1, 9, json!("A")),
        answers("x", 10, 14, json!("B")),
        answers("y", 1, 10, json!("A")),
        answers("y", 11, 14, json!("B")),
        answers("z", 1, 7, json!("A")),
        answers("z", 8, 8, json!("B")),
    ]);
    let result = score(&test, responses);
    // 9 + 20 + 35 = 64 earned; 5/3 + 8/3 + 5/6 = 31/6 lost.
    assert_eq!(result.section("x").unwrap().summary.marks, m("22/3"));
    assert_eq!(result.section("y").unwrap().summary.marks, m("52/3"));
    assert_eq!(result.section("z").unwrap().summary.marks, m("205/6"));
    assert_eq!(result.total.marks.to_string(), "353/6");
    assert_eq!(result.total.lost_to_negatives.to_string(), "31/6");
    assert_eq!(result.total.marks.display(2).to_string(), "58.83");
}

// --- CAT: MCQ +3/-1, TITA +3/0 ----------------------------------------------------------------

#[test]
fn cat_whole_paper() {
    let section = |id: &str, mcqs: usize, titas: usize| {
        json!({"id": id, "questions": concat(vec![
            questions(&format!("{id}-m"), mcqs, "mcq", json!({"answer": "B"})),
            questions(&format!("{id}-t"), titas, "integer", json!({"answer": "120"})),
        ])})
    };
    let test = prepare(json!({
        "test_id": "cat-2023-s1", "key_version": 1,
        "marking": {"correct": 3, "incorrect": -1},
        "marking_by_type": {"integer": {"incorrect": 0}},
        "sections": [section("varc", 20, 4), section("dilr", 14, 6), section("qa", 14, 8)]
    }));
    assert_eq!(test.max_marks(), 198);
    let responses = concat(vec![
        answers("varc-m", 1, 14, json!("B")),  // +42
        answers("varc-m", 15, 18, json!("A")), // -4
        answers("varc-t", 1, 2, json!("120")), // +6
        answers("varc-t", 3, 3, json!("12")),  // 0
        answers("dilr-m", 1, 6, json!("B")),   // +18
        answers("dilr-m", 7, 9, json!("C")),   // -3
        answers("dilr-t", 1, 3, json!("120")), // +9
        answers("dilr-t", 4, 6, json!("121")), // 0
        answers("qa-m", 1, 9, json!("B")),     // +27
        answers("qa-m", 10, 12, json!("D")),   // -3
        answers("qa-t", 1, 5, json!("120")),   // +15
    ]);
    let result = score(&test, responses);
    let marks: Vec<String> = result
        .sections
        .iter()
        .map(|s| s.summary.marks.to_string())
        .collect();
    assert_eq!(marks, ["44", "24", "39"]);
    assert_eq!(result.total.marks, 107);
    assert_eq!(result.total.lost_to_negatives, 10);
}

// --- UPSC prelims GS paper I: +2, -2/3 (a third of the question's marks) ----------------------

#[test]
fn upsc_prelims_whole_paper() {
    let test = prepare(json!({
        "test_id": "upsc-pre-2024-gs1", "key_version": 1,
        "marking": {"correct": 2, "incorrect": "-2/3"},
        "sections": [{"id": "gs1", "questions": questions("q", 100, "mcq", json!({"answer": "A"}))}]
    }));
    let responses = concat(vec![
        answers("q", 1, 70, json!("A")),
        answers("q", 71, 90, json!("B")),
    ]);
    let result = score(&test, responses);
    // 70 x 2 - 20 x 2/3 = 140 - 40/3.
    assert_eq!(result.total.marks, m("380/3"));
    assert_eq!(result.total.marks.display(2).to_string(), "126.67");
    assert_eq!(result.total.max_marks, 200);
    assert_eq!(
        result.total.attempt_rate_percent().unwrap().to_string(),
        "90.00"
    );
    assert_eq!(
        result.total.accuracy_percent().unwrap().to_string(),
        "77.78"
    );
}

// --- Revised keys, dropped questions, schemes, subjective answers -----------------------------

fn revisions(dropped: &str) -> PreparedTest {
    prepare(json!({
        "test_id": "rev", "key_version": 2,
        "marking": {"correct": 4, "incorrect": -1},
        "sections": [{"id": "s", "questions": [
            {"id": "q1", "type": "mcq", "answer": "B", "also_accepted": ["C"]},
            {"id": "q2", "type": "mcq", "dropped": dropped},
            {"id": "q3", "type": "integer", "answer": "5", "also_accepted": ["6"]},
            {"id": "q4", "type": "numeric", "answer": {"value": "2"},
             "also_accepted": [{"min": "3.5", "max": "3.6"}]}
        ]}]
    }))
}

#[test]
fn revised_keys_accept_every_listed_answer() {
    let test = revisions("marks_to_all");
    let result = score(
        &test,
        json!([
            {"question": "q1", "answer": "C"},
            {"question": "q3", "answer": "6"},
            {"question": "q4", "answer": "3.55"}
        ]),
    );
    assert_eq!(got(&result, "q1"), (Outcome::Correct, "4".into()));
    assert_eq!(got(&result, "q3"), (Outcome::Correct, "4".into()));
    assert_eq!(got(&result, "q4"), (Outcome::Correct, "4".into()));
    let result = score(&test, json!([{"question": "q1", "answer": ["B", "C"]}]));
    assert_eq!(got(&result, "q1"), (Outcome::Incorrect, "-1".into()));
}

#[test]
fn dropped_questions_follow_their_policy() {
    let answered = json!([{"question": "q2", "answer": "A"}]);
    let unanswered = json!([]);

    let test = revisions("marks_to_all");
    assert_eq!(test.max_marks(), 16);
    assert_eq!(
        got(&score(&test, answered.clone()), "q2"),
        (Outcome::Dropped, "4".into())
    );
    assert_eq!(
        got(&score(&test, unanswered.clone()), "q2"),
        (Outcome::Dropped, "4".into())
    );

    let test = revisions("marks_to_attempted");
    assert_eq!(test.max_marks(), 16);
    let result = score(&test, answered.clone());
    assert_eq!(got(&result, "q2"), (Outcome::Dropped, "4".into()));
    assert!(question(&result, "q2").answered);
    assert_eq!(
        got(&score(&test, unanswered.clone()), "q2"),
        (Outcome::Dropped, "0".into())
    );

    let test = revisions("removed");
    assert_eq!(test.max_marks(), 12);
    let result = score(&test, answered);
    assert_eq!(got(&result, "q2"), (Outcome::Dropped, "0".into()));
    assert_eq!(question(&result, "q2").max_marks, 0);
    assert_eq!(result.total.counts.dropped, 1);
}

#[test]
fn proportional_msq_credits_each_correct_option() {
    let test = prepare(json!({
        "test_id": "p", "key_version": 1,
        "marking": {"correct": 2, "incorrect": "-1/2", "msq": {"scheme": "proportional"}},
        "sections": [{"id": "s", "questions": [
            {"id": "q", "type": "msq", "options": ["A", "B", "C", "D", "E"],
             "answer": ["A", "B", "E"]}
        ]}]
    }));
    for (answer, outcome, marks) in [
        (json!(["A", "B", "E"]), Outcome::Correct, "2"),
        (json!(["A", "E"]), Outcome::Partial, "4/3"),
        (json!(["B"]), Outcome::Partial, "2/3"),
        (json!(["B", "C"]), Outcome::Incorrect, "-1/2"),
    ] {
        let result = score(&test, json!([{"question": "q", "answer": answer}]));
        assert_eq!(got(&result, "q"), (outcome, marks.to_owned()), "{answer}");
    }
}

#[test]
fn numeric_rounding_applies_to_the_answer_before_the_tolerance() {
    let test = |mode: &str| {
        prepare(json!({
            "test_id": "n", "key_version": 1, "marking": {"correct": 2},
            "sections": [{"id": "s", "questions": [
                {"id": "q", "type": "numeric", "answer": {"value": "9.81", "tolerance": "0.01"},
                 "rounding": {"mode": mode, "decimals": 2}}
            ]}]
        }))
    };
    let outcome = |test: &PreparedTest, answer: &str| {
        question(
            &score(test, json!([{"question": "q", "answer": answer}])),
            "q",
        )
        .outcome
    };
    let round = test("round");
    assert_eq!(outcome(&round, "9.8249"), Outcome::Correct); // 9.82
    assert_eq!(outcome(&round, "9.825"), Outcome::Incorrect); // 9.83
    assert_eq!(outcome(&round, "9.795"), Outcome::Correct); // 9.80
    assert_eq!(outcome(&round, "9.7949"), Outcome::Incorrect); // 9.79
    let truncate = test("truncate");
    assert_eq!(outcome(&truncate, "9.8299"), Outcome::Correct); // 9.82
    assert_eq!(outcome(&truncate, "9.7999"), Outcome::Incorrect); // 9.79
}

#[test]
fn subjective_answers_are_pending_until_awarded() {
    let test = prepare(json!({
        "test_id": "essay", "key_version": 1,
        "marking": {"correct": 1},
        "sections": [{"id": "s", "questions": [
            {"id": "q1", "type": "mcq", "answer": "A"},
            {"id": "e1", "type": "subjective", "max_marks": 5, "topic": "writing"},
            {"id": "e2", "type": "subjective", "max_marks": "5/2"}
        ]}]
    }));
    assert_eq!(test.max_marks(), m("17/2"));
    let pending = score(
        &test,
        json!([
            {"question": "q1", "answer": "A"},
            {"question": "e1", "answer": "Photosynthesis is ..."},
            {"question": "e2", "answer": "..."}
        ]),
    );
    assert!(pending.provisional);
    assert_eq!(
        got(&pending, "e1"),
        (Outcome::PendingEvaluation, "0".into())
    );
    assert_eq!(pending.total.marks, 1);

    let marked = score(
        &test,
        json!([
            {"question": "q1", "answer": "A"},
            {"question": "e1", "answer": "Photosynthesis is ...", "awarded": "7/3"},
            {"question": "e2", "answer": "...", "awarded": "5/2"}
        ]),
    );
    assert!(!marked.provisional);
    assert_eq!(got(&marked, "e1"), (Outcome::Partial, "7/3".into()));
    assert_eq!(got(&marked, "e2"), (Outcome::Correct, "5/2".into()));
    // 1 + 7/3 + 5/2, the thirds added apart from the test's halves.
    assert_eq!(marked.total.marks, m("35/6"));
    assert_eq!(marked.topic("writing").unwrap().summary.marks, m("7/3"));
}

#[test]
fn awarded_marks_too_fine_to_add_fail_instead_of_rounding() {
    let primes = ["1/999983", "1/999979", "1/999961", "1/999959"];
    let test = prepare(json!({
        "test_id": "t", "key_version": 1,
        "sections": [{"id": "s", "questions": questions("e", 4, "subjective", json!({"max_marks": 1}))}]
    }));
    let responses: Vec<Value> = primes
        .iter()
        .enumerate()
        .map(|(i, p)| json!({"question": format!("e{}", i + 1), "answer": "x", "awarded": p}))
        .collect();
    let err = test.score(&attempt(Value::Array(responses))).unwrap_err();
    assert!(
        err.to_string().contains("too varied to add up exactly"),
        "{err}"
    );
}

#[test]
fn topics_and_times_add_up() {
    let test = prepare(json!({
        "test_id": "t", "key_version": 1, "marking": {"correct": 4, "incorrect": -1},
        "sections": [
            {"id": "s1", "questions": [
                {"id": "q1", "type": "mcq", "answer": "A", "topic": "optics"},
                {"id": "q2", "type": "mcq", "answer": "A", "topic": "waves"}
            ]},
            {"id": "s2", "questions": [
                {"id": "q3", "type": "mcq", "answer": "A", "topic": "optics"},
                {"id": "q4", "type": "mcq", "answer": "A"}
            ]}
        ]
    }));
    let result = score(
        &test,
        json!([
            {"question": "q3", "answer": "B", "time_spent_ms": 30000},
            {"question": "q1", "answer": "A", "time_spent_ms": 45000},
            {"question": "q2", "state": "marked_for_review", "time_spent_ms": 5000}
        ]),
    );
    let optics = &result.topic("optics").unwrap().summary;
    assert_eq!(optics.marks, 3);
    assert_eq!(optics.max_marks, 8);
    assert_eq!((optics.counts.correct, optics.counts.incorrect), (1, 1));
    assert_eq!(optics.time_spent_ms, Some(75000));
    assert_eq!(result.topic("waves").unwrap().summary.counts.unattempted, 1);
    assert_eq!(result.total.time_spent_ms, Some(80000));
    assert_eq!(
        result.section("s2").unwrap().summary.time_spent_ms,
        Some(30000)
    );
    let topics: Vec<&str> = result.topics.iter().map(|t| &*t.topic).collect();
    assert_eq!(topics, ["optics", "waves"]);
}

// --- Bad input, results as JSON, scoring twice ------------------------------------------------

#[test]
fn a_bad_attempt_lists_every_problem() {
    let test = prepare(json!({
        "test_id": "t", "key_version": 1, "marking": {"correct": 4, "incorrect": -1},
        "sections": [{"id": "s", "questions": [
            {"id": "q1", "type": "mcq", "answer": "A"},
            {"id": "q2", "type": "integer", "answer": "5"},
            {"id": "q3", "type": "numeric", "answer": {"value": "1.5"}},
            {"id": "q4", "type": "msq", "answer": ["A", "B"]},
            {"id": "q5", "type": "subjective", "max_marks": 10}
        ]}]
    }));
    let bad: Attempt = serde_json::from_value(json!({
        "attempt_id": "a-9", "test_id": "other",
        "responses": [
            {"question": "q9", "answer": "A"},
            {"question": "q1", "answer": "E"},
            {"question": "q2", "answer": "five"},
            {"question": "q3", "answer": ["1.5"]},
            {"question": "q1", "answer": "A"},
            {"question": "q4", "answer": ["A", "A"]},
            {"question": "q5", "answer": "essay", "awarded": 11},
            {"question": "q2", "state": "answered"}
        ]
    }))
    .unwrap();
    let err = test.score(&bad).unwrap_err();
    let text = err.to_string();
    for expected in [
        "the attempt is for test `other`, but it is being scored against test `t`",
        "response 0 (question `q9`): the test has no such question",
        "response 1 (question `q1`): `E` is not one of the options (A, B, C, D)",
        "response 2 (question `q2`): `five` is not a number",
        "response 3 (question `q3`): a numeric answer is one string, not a list",
        "response 4 (question `q1`): repeats the question (first answered in response 1)",
        "response 5 (question `q4`): chooses option `A` twice",
        "response 6 (question `q5`): `awarded` is 11, outside 0 to the question's `max_marks` 10",
        "response 7 (question `q2`): repeats the question (first answered in response 2)",
    ] {
        assert!(text.contains(expected), "{text}\n  lacks {expected:?}");
    }
    assert_eq!(err.problems().len(), 9, "{text}");
    assert!(matches!(err, ScoringError::InvalidAttempt { .. }));

    let more: Attempt = serde_json::from_value(json!({
        "attempt_id": "a-10",
        "responses": [
            {"question": "q1", "state": "answered"},
            {"question": "q2", "answer": "5.5"},
            {"question": "q3", "answer": "1.5", "state": "marked_for_review"},
            {"question": "q4", "answer": ["A"], "awarded": 1}
        ]
    }))
    .unwrap();
    let text = test.score(&more).unwrap_err().to_string();
    for expected in [
        "state `answered` needs an answer",
        "`5.5` is not a whole number",
        "state `marked_for_review` cannot carry an answer",
        "`awarded` applies to subjective answers, not to msq questions",
    ] {
        assert!(text.contains(expected), "{text}\n  lacks {expected:?}");
    }
}

#[test]
fn a_score_request_scores_offline_and_reports_malformed_input() {
    let request = json!({
        "test": {
            "test_id": "t", "key_version": 3, "marking": {"correct": 1, "incorrect": "-1/4"},
            "sections": [{"id": "s", "questions": [
                {"id": "q1", "type": "mcq", "answer": "A"},
                {"id": "q2", "type": "mcq", "answer": "A"}
            ]}]
        },
        "attempt": {"attempt_id": "a", "test_id": "t", "responses": [
            {"question": "q1", "answer": "A"}, {"question": "q2", "answer": "C"}
        ]}
    });
    let result = score_json(&request.to_string()).unwrap();
    assert_eq!(result.total.marks, m("3/4"));
    assert_eq!(result.key_version, 3);
    let err = score_json(r#"{"test": {}, "attempt": {}}"#).unwrap_err();
    assert!(matches!(err, ScoringError::Malformed { .. }), "{err}");
    let mut invalid = request.clone();
    invalid["test"]["sections"][0]["questions"][0]["answer"] = json!("Z");
    let err = score_json(&invalid.to_string()).unwrap_err();
    assert!(matches!(err, ScoringError::InvalidTest { .. }), "{err}");
}

#[test]
fn results_read_back_as_they_were_written() {
    let test = gate();
    let result = score(
        &test,
        concat(vec![
            answers("ga1-", 1, 2, json!("A")),
            answers("nat2-", 1, 1, json!("1.55")),
        ]),
    );
    let text = serde_json::to_string(&result).unwrap();
    let back: AttemptResult = serde_json::from_str(&text).unwrap();
    assert_eq!(back, result);
    let json: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["marks"], "4/3");
    assert_eq!(json["max_marks"], "100");
    assert_eq!(json["counts"]["incorrect"], 2);
    assert_eq!(json["question_count"], 65);
    assert_eq!(json["accuracy_percent"], "33.33");
    assert_eq!(json["attempt_rate_percent"], "4.62");
    assert_eq!(json["time_spent_ms"], Value::Null);
}

#[test]
fn a_prepared_test_can_be_shared_between_workers() {
    fn shared<T: Send + Sync + 'static>() {}
    shared::<PreparedTest>();
    shared::<AttemptResult>();
}

#[test]
fn scoring_twice_gives_the_same_result() {
    let test = jee_advanced();
    let responses = json!([
        {"question": "phy-m1", "answer": ["A", "B"]},
        {"question": "chem-s2", "answer": "B"},
        {"question": "math-i3", "answer": "7.000"}
    ]);
    let first = score(&test, responses.clone());
    let again = score(&test, responses.clone());
    assert_eq!(first, again);
    // A test rebuilt from its own JSON (a daemon restart, a rescore under the same key) scores
    // the same too.
    let rebuilt = PreparedTest::new(
        serde_json::from_value(serde_json::to_value(test.definition()).unwrap()).unwrap(),
    )
    .unwrap();
    assert_eq!(score(&rebuilt, responses), first);
}

#[test]
fn a_rescore_after_a_key_revision_records_the_new_version() {
    let v1 = prepare(json!({
        "test_id": "t", "key_version": 1, "marking": {"correct": 4, "incorrect": -1},
        "sections": [{"id": "s", "questions": [{"id": "q1", "type": "mcq", "answer": "A"}]}]
    }));
    let mut def = v1.definition().clone();
    def.key_version = 2;
    let QuestionKind::Mcq { answer, .. } = &mut def.sections[0].questions[0].kind else {
        unreachable!()
    };
    *answer = Some("B".into());
    let v2 = PreparedTest::new(def).unwrap();
    let responses = json!([{"question": "q1", "answer": "B"}]);
    let before = score(&v1, responses.clone());
    let after = score(&v2, responses);
    assert_eq!((before.key_version, before.total.marks), (1, m("-1")));
    assert_eq!((after.key_version, after.total.marks), (2, m("4")));
}

// --- Analytics ---------------------------------------------------------------------------------

#[test]
fn finalize_ranks_percentiles_and_statistics() {
    let test = prepare(json!({
        "test_id": "t", "key_version": 1, "marking": {"correct": 4, "incorrect": -1},
        "sections": [
            {"id": "s1", "questions": [
                {"id": "q1", "type": "mcq", "answer": "A"},
                {"id": "q2", "type": "mcq", "answer": "A"}
            ]},
            {"id": "s2", "questions": [{"id": "q3", "type": "mcq", "answer": "A"}]}
        ]
    }));
    let results: Vec<AttemptResult> = [
        ("a1", json!(["A", "A", "A"])),   // 12
        ("a2", json!(["A", "B", "A"])),   // 7
        ("a3", json!(["A", "A", "B"])),   // 7
        ("a4", json!(["B", null, null])), // -1
    ]
    .into_iter()
    .map(|(id, answers)| {
        let responses: Vec<Value> = answers
            .as_array()
            .unwrap()
            .iter()
            .zip(["q1", "q2", "q3"])
            .filter(|(a, _)| !a.is_null())
            .map(|(a, q)| json!({"question": q, "answer": a}))
            .collect();
        let attempt: Attempt =
            serde_json::from_value(json!({"attempt_id": id, "responses": responses})).unwrap();
        test.score(&attempt).unwrap()
    })
    .collect();
    let done = finalize(&test, &results).unwrap();
    let standings: Vec<(u32, String, String)> = done
        .standings
        .iter()
        .map(|s| (s.rank, s.marks.to_string(), s.percentile.to_string()))
        .collect();
    assert_eq!(
        standings,
        [
            (1, "12".into(), "100.0000000".into()),
            (2, "7".into(), "75.0000000".into()),
            (2, "7".into(), "75.0000000".into()),
            (4, "-1".into(), "25.0000000".into()),
        ]
    );
    assert_eq!(done.standings[2].sections[1].marks, -1);
    assert_eq!(done.standings[2].sections[1].rank, 4);
    let stats = &done.statistics;
    assert_eq!(stats.candidates, 4);
    assert_eq!(stats.marks.mean, Some(m("25/4")));
    assert_eq!(stats.marks.median, Some(m("7")));
    assert_eq!(stats.marks.highest, Some(m("12")));
    assert_eq!(stats.marks.lowest, Some(m("-1")));
    let distribution: Vec<(String, u64)> = stats
        .distribution
        .iter()
        .map(|d| (d.marks.to_string(), d.candidates))
        .collect();
    assert_eq!(
        distribution,
        [("12".into(), 1), ("7".into(), 2), ("-1".into(), 1)]
    );
    let q1 = &stats.questions[0];
    assert_eq!((q1.counts.correct, q1.counts.incorrect), (3, 1));
    assert_eq!(q1.facility_percent().unwrap().to_string(), "75.00");
    assert_eq!(q1.difficulty(), Some(Difficulty::Easy));
    let q2 = &stats.questions[1];
    assert_eq!(q2.counts.unattempted, 1);
    assert_eq!(q2.accuracy_percent().unwrap().to_string(), "66.67");
    assert_eq!(q2.difficulty(), Some(Difficulty::Moderate));
    assert_eq!(stats.sections[1].marks.mean, Some(m("7/4")));
    let json = serde_json::to_value(&done).unwrap();
    assert_eq!(json["statistics"]["mean"], "25/4");
    assert_eq!(json["statistics"]["mean_display"], "6.25");
    assert_eq!(json["statistics"]["questions"][1]["difficulty"], "moderate");
    assert_eq!(json["standings"][1]["percentile"], "75.0000000");
}

#[test]
fn analytics_refuse_results_that_do_not_belong() {
    let test = revisions("removed");
    let other = prepare(json!({
        "test_id": "other", "key_version": 2, "marking": {"correct": 1},
        "sections": [{"id": "s", "questions": [{"id": "q1", "type": "mcq", "answer": "A"}]}]
    }));
    let mut analytics = TestAnalytics::new(&test);
    let ok = score(&test, json!([]));
    analytics.add(&ok).unwrap();
    assert!(matches!(
        analytics.add(&ok),
        Err(AnalyticsError::Duplicate { .. })
    ));
    assert!(matches!(
        analytics.add(&score(&other, json!([]))),
        Err(AnalyticsError::WrongTest { .. })
    ));
    let mut old = ok.clone();
    old.attempt_id = "a-2".into();
    old.key_version = 1;
    let err = analytics.add(&old).unwrap_err();
    assert!(
        err.to_string()
            .contains("key version 1, not 2: rescore it first"),
        "{err}"
    );
    let mut provisional = ok.clone();
    provisional.attempt_id = "a-3".into();
    provisional.provisional = true;
    assert!(matches!(
        analytics.add(&provisional),
        Err(AnalyticsError::Provisional { .. })
    ));
    let done = analytics.finish().unwrap();
    assert_eq!(done.standings.len(), 1);
    // A removed question has no difficulty.
    assert_eq!(done.statistics.questions[1].difficulty(), None);
}

#[test]
fn nta_percentiles_round_half_up_at_the_seventh_decimal() {
    // 100 / 1024 = 0.09765625: the eighth decimal is a 5.
    let p = Percentile {
        at_or_below: 1,
        candidates: 1024,
    };
    assert_eq!(p.to_string(), "0.0976563");
    // 100 * 2 / 3 = 66.666666666...
    let p = Percentile {
        at_or_below: 2,
        candidates: 3,
    };
    assert_eq!(p.to_string(), "66.6666667");
    // NTA's own worked example: 1,000,000 candidates, 999,990 at or below.
    let p = Percentile {
        at_or_below: 999_990,
        candidates: 1_000_000,
    };
    assert_eq!(p.to_string(), "99.9990000");
    let scores = [m("10"), m("20"), m("20"), m("-1/3")];
    let ps: Vec<String> = nta_percentiles(&scores)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        ps,
        ["50.0000000", "100.0000000", "100.0000000", "25.0000000"]
    );
    assert_eq!(competition_ranks(&scores), [3, 1, 1, 4]);
    assert!(nta_percentiles(&[]).is_empty());
}

#[test]
fn histograms_align_bars_on_the_width() {
    let scores = [m("-2/3"), m("0"), m("9"), m("10"), m("19")];
    let bars = histogram(&scores, m("10")).unwrap();
    let bars: Vec<(String, String, u64)> = bars
        .iter()
        .map(|b| (b.from.to_string(), b.to.to_string(), b.candidates))
        .collect();
    assert_eq!(
        bars,
        [
            ("-10".into(), "0".into(), 1),
            ("0".into(), "10".into(), 2),
            ("10".into(), "20".into(), 2)
        ]
    );
    assert!(histogram(&scores, m("0")).is_none());
    assert!(histogram(&scores, m("1/1000")).is_none());
    assert_eq!(histogram(&[], m("5")), Some(vec![]));
}

#[test]
fn histograms_of_scores_at_the_ends_of_the_marks_range_are_refused_not_built() {
    let (lowest, highest) = (Marks::integer(i64::MIN), Marks::integer(i64::MAX));
    assert!(histogram(&[lowest, highest], m("1")).is_none());
    assert!(histogram(&[highest], m("1")).is_none());
    assert!(histogram(&[m("-1000000000000"), m("4")], m("1")).is_none());
    let one = histogram(&[lowest], m("1")).unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].candidates, 1);
}
