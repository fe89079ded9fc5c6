//! Property tests of everything that reads outside input: envelope decoding under the daemon's
//! limits, and test validation and scoring (`score_json`). Whatever the bytes or the JSON, they
//! never panic, never allocate more than a small multiple of the input (no allocation is sized
//! from a number the input holds), and their errors quote little of it.
//!
//! Memory is measured by this test binary's allocator, per thread: the live bytes' peak while
//! one call runs.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use proptest::prelude::*;
use proptest::test_runner::Config;
use quizworker_jobs::limits::nests_deeper_than;
use quizworker_jobs::scoring::{PreparedTest, ScoreRequest, finalize, histogram, score_json};
use quizworker_jobs::{Envelope, EnvelopeError, LimitExceeded, Limits};
use serde_json::{Map, Value, json};

struct Measuring;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn grew(bytes: usize) {
    // `try_with`: the allocator also runs while a thread's locals are torn down.
    let _ = LIVE.try_with(|live| {
        let now = live.get() + bytes as isize;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

fn shrank(bytes: usize) {
    let _ = LIVE.try_with(|live| live.set(live.get() - bytes as isize));
}

// SAFETY: every call goes straight to the system allocator; the bookkeeping around it touches
// only thread-locals that need neither allocation nor destructors.
unsafe impl GlobalAlloc for Measuring {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            grew(new_size);
            shrank(layout.size());
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: Measuring = Measuring;

/// `f`'s result, and the most bytes it had allocated at once beyond what was live before.
fn peak_bytes_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|peak| peak.set(base));
    let out = f();
    let peak = PEAK.with(Cell::get);
    (out, (peak - base).max(0) as usize)
}

/// What reading `input_bytes` of JSON may cost: a JSON tree or a prepared test takes a few
/// dozen times its text at worst (`[0,0,...]` is 2 bytes an element, a `Value` 32, doubled by
/// a growing vector), plus a constant.
fn memory_bound(input_bytes: usize) -> usize {
    64 * input_bytes + 64 * 1024
}

const LIMITS: Limits = Limits {
    max_job_bytes: 16 * 1024,
    max_kind_bytes: 24,
    max_json_depth: 16,
};

/// An error message quotes at most a short part of the input.
const SHORT_MESSAGE: usize = 1024;

fn cases(n: u32) -> Config {
    // Bounded so the whole file runs in a few seconds in a debug build.
    Config {
        cases: n,
        failure_persistence: None,
        ..Config::default()
    }
}

/// Checks one decoding of `bytes` under [`LIMITS`].
fn check_decoding(bytes: &[u8]) -> Result<(), TestCaseError> {
    let (decoded, peak) = peak_bytes_during(|| Envelope::decode_within(bytes, &LIMITS));
    if bytes.len() > LIMITS.max_job_bytes {
        prop_assert!(
            matches!(
                decoded,
                Err(EnvelopeError::OverLimit(LimitExceeded::JobTooLarge { .. }))
            ),
            "{decoded:?}"
        );
        prop_assert!(peak < 1024, "{peak} bytes to refuse a large job");
        return Ok(());
    }
    prop_assert!(
        peak <= memory_bound(bytes.len()),
        "{peak} bytes to decode {} bytes",
        bytes.len()
    );
    match decoded {
        Ok(envelope) => {
            prop_assert!(envelope.kind.len() <= LIMITS.max_kind_bytes);
            prop_assert!(!nests_deeper_than(bytes, LIMITS.max_json_depth));
            prop_assert_eq!(Envelope::decode(bytes).ok(), Some(envelope));
        }
        Err(e) => {
            let message = e.to_string();
            prop_assert!(
                message.len() <= SHORT_MESSAGE,
                "{} bytes: {message}",
                message.len()
            );
        }
    }
    Ok(())
}

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        "[ -~]{0,12}".prop_map(Value::from),
        any::<String>().prop_map(Value::from),
        (0usize..3000).prop_map(|n| Value::from("y".repeat(n))),
    ];
    leaf.prop_recursive(24, 128, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec(("[a-z_]{0,8}", inner), 0..5)
                .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    })
}

/// Arrays nested `depth` deep, around a leaf.
fn nested(depth: usize, leaf: Value) -> String {
    "[".repeat(depth) + &leaf.to_string() + &"]".repeat(depth)
}

/// Envelopes whose every field may be right or wrong, and whose payload is any JSON.
fn envelope_like() -> impl Strategy<Value = String> {
    let v = prop_oneof![Just(json!(1)), Just(json!(2)), Just(json!("1")), any_json()];
    let id = prop_oneof![
        Just(json!("01KAAAAAAAAAAAAAAAAAAAAAA1")),
        Just(json!("01kaaaaaaaaaaaaaaaaaaaaaa1")),
        any_json(),
    ];
    let kind = prop_oneof![
        Just(json!("diag.noop")),
        Just(json!("score.attempt")),
        "[a-z.]{0,40}".prop_map(Value::from),
        any_json(),
    ];
    let created_at = prop_oneof![Just(json!("2026-11-22T10:00:00Z")), any_json()];
    (v, id, kind, any_json(), created_at, 0usize..40).prop_map(
        |(v, id, kind, payload, created_at, depth)| {
            let payload = nested(depth, payload);
            format!(
                r#"{{"v":{v},"id":{id},"kind":{kind},"payload":{payload},"created_at":{created_at}}}"#
            )
        },
    )
}

/// An envelope's text with some bytes changed, cut or doubled.
fn mangled_envelope() -> impl Strategy<Value = Vec<u8>> {
    (
        envelope_like(),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        any::<prop::sample::Index>(),
        0u8..4,
    )
        .prop_map(|(text, changes, cut, how)| {
            let mut bytes = text.into_bytes();
            for (at, byte) in changes {
                let i = at.index(bytes.len());
                bytes[i] = byte;
            }
            match how {
                0 => bytes.truncate(cut.index(bytes.len() + 1)),
                1 => bytes = bytes.repeat(20),
                _ => {}
            }
            bytes
        })
}

proptest! {
    #![proptest_config(cases(200))]

    #[test]
    fn decoding_any_bytes_is_refused_or_read_within_the_limits(
        bytes in prop::collection::vec(any::<u8>(), 0..600)
    ) {
        check_decoding(&bytes)?;
    }

    #[test]
    fn decoding_bytes_made_of_json_s_punctuation_is_refused_or_read_within_the_limits(
        text in r#"[\[\]{}":,\\ 0-9a-z]{0,600}"#
    ) {
        check_decoding(text.as_bytes())?;
    }

    #[test]
    fn decoding_envelopes_of_any_json_is_refused_or_read_within_the_limits(
        bytes in mangled_envelope()
    ) {
        check_decoding(&bytes)?;
    }

    #[test]
    fn the_depth_scan_agrees_with_the_json_tree(value in any_json(), extra in 0usize..40) {
        let text = nested(extra, value.clone());
        let depth = depth_of(&value) + extra;
        prop_assert!(!nests_deeper_than(text.as_bytes(), depth));
        prop_assert!(depth == 0 || nests_deeper_than(text.as_bytes(), depth - 1));
    }
}

/// How deep arrays and objects nest in `value`, by recursion (the values here are shallow).
fn depth_of(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth_of).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth_of).max().unwrap_or(0),
        _ => 0,
    }
}

/// Mostly `good`, now and then `bad`: a document wrong everywhere stops at its first wrong
/// field, while a wrong value here and there (a document has dozens) reaches validation and
/// scoring.
fn mostly<T: std::fmt::Debug>(
    good: impl Strategy<Value = T> + 'static,
    bad: impl Strategy<Value = T> + 'static,
) -> BoxedStrategy<T> {
    prop_oneof![60 => good, 1 => bad].boxed()
}

fn pick<T: Clone + std::fmt::Debug + 'static>(values: &[T]) -> impl Strategy<Value = T> + use<T> {
    prop::sample::select(values.to_vec())
}

/// Marks as tests write them: `usual` ones mostly, now and then ones that break naive code
/// (the ends of i64, a trillion, a denominator near the limit of 10^9, any fraction), and
/// rarely one that is no mark.
fn mark_from(usual: &[Value]) -> BoxedStrategy<Value> {
    let good = prop_oneof![
        60 => pick(usual),
        1 => pick(&[
            json!("-1000000000000"),
            json!("1000000000000"),
            json!("9223372036854775807"),
            json!("-9223372036854775808"),
            json!("1/999999937"),
            json!("-1/9223372036854775807"),
            json!("0.000000000000000001"),
        ]),
        1 => any::<i64>().prop_map(Value::from),
        1 => (any::<i64>(), 1i64..2_000_000_000).prop_map(|(n, d)| json!(format!("{n}/{d}"))),
    ];
    let bad = pick(&[
        json!("1/0"),
        json!("99999999999999999999999999999999999999999"),
        json!(1.5),
        json!(null),
        json!("x"),
    ]);
    mostly(good, bad)
}

/// A `correct` mark (positive, mostly).
fn correct_mark() -> BoxedStrategy<Value> {
    mark_from(&[json!(1), json!(4), json!("5/2"), json!(2), json!("1/3")])
}

/// An `incorrect` or `unattempted` mark (at most 0, mostly).
fn penalty() -> BoxedStrategy<Value> {
    mark_from(&[
        json!(-1),
        json!(0),
        json!("-1/3"),
        json!("-2/3"),
        json!("-0.25"),
        json!(-2),
    ])
}

/// Numbers as keys and candidates write them, and what no keypad produces.
fn number_text() -> impl Strategy<Value = String> {
    prop_oneof![
        pick(&[
            "11",
            "11.00",
            "-0",
            ".5",
            "5.",
            "1e5",
            "",
            " 7 ",
            "+3",
            "--1",
            "0.1",
            "1,000",
            "999999999999999",
            "1000000000000000",
            "0.000000000000001",
            "0.0000000000000001",
            "1.00000000000000000000001",
            "-999999999999999.999999999999999",
        ])
        .prop_map(str::to_owned),
        "-?[0-9]{1,40}(\\.[0-9]{0,40})?",
        "-?[0-9.]{0,8}",
    ]
}

fn option_ids() -> BoxedStrategy<Vec<String>> {
    let abcd = || vec!["A".to_owned(), "B".into(), "C".into(), "D".into()];
    mostly(
        Just(abcd()),
        prop_oneof![
            Just(vec!["A".to_owned(), "A".into()]),
            Just(Vec::new()),
            (60usize..70).prop_map(|n| (0..n).map(|i| format!("o{i}")).collect()),
        ],
    )
}

/// A number as keys write it (at most 15 digits each side of the point), its extremes, and
/// now and then any text.
fn key_number() -> BoxedStrategy<String> {
    mostly(
        prop_oneof![
            "-?[0-9]{1,6}(\\.[0-9]{1,6})?",
            pick(&[
                "999999999999999",
                "0.000000000000001",
                "-999999999999999.999999999999999"
            ])
            .prop_map(str::to_owned),
        ],
        number_text(),
    )
}

fn integer_key() -> BoxedStrategy<String> {
    mostly("-?[0-9]{1,6}", key_number())
}

fn numeric_key() -> impl Strategy<Value = Value> {
    prop_oneof![
        key_number().prop_map(|v| json!({"value": v})),
        (
            key_number(),
            mostly(
                pick(&["0.01", "0.5", "0"]).prop_map(str::to_owned),
                key_number()
            )
        )
            .prop_map(|(v, t)| json!({"value": v, "tolerance": t})),
        mostly(
            (-1000i64..1000, 0i64..100).prop_map(
                |(min, span)| json!({"min": min.to_string(), "max": (min + span).to_string()})
            ),
            (key_number(), key_number()).prop_map(|(a, b)| json!({"min": a, "max": b})),
        ),
    ]
}

/// A question's type, and its key of that type (options for choice questions).
fn typed_key() -> impl Strategy<Value = (&'static str, Option<Value>, Option<Vec<String>>)> {
    let choice = |kind: &'static str| {
        let chosen = mostly(
            prop::sample::subsequence(vec!["A", "B", "C", "D"], 1..=4),
            prop::collection::vec(pick(&["A", "B", "C", "D", "E"]), 0..4),
        );
        (option_ids(), chosen).prop_map(move |(options, chosen)| {
            let key = match (kind, chosen.first()) {
                ("mcq", Some(first)) => json!(first),
                _ => json!(chosen),
            };
            (kind, Some(key), Some(options))
        })
    };
    prop_oneof![
        20 => choice("mcq"),
        20 => choice("msq"),
        20 => integer_key().prop_map(|n| ("integer", Some(json!(n)), None)),
        20 => numeric_key().prop_map(|k| ("numeric", Some(k), None)),
        10 => Just(("subjective", None, None)),
        // Wrong on purpose: a key of another type, or a type that does not exist.
        1 => number_text().prop_map(|n| ("mcq", Some(json!(n)), None)),
        1 => Just(("essay", None, None)),
    ]
}

fn marking() -> impl Strategy<Value = Value> {
    (
        mostly(correct_mark().prop_map(Some), Just(None)),
        prop::option::of(penalty()),
        rarely(penalty()),
    )
        .prop_map(|(correct, incorrect, unattempted)| {
            object([
                ("correct", correct),
                ("incorrect", incorrect),
                ("unattempted", unattempted),
            ])
        })
}

/// A question's own marking: for an MSQ, with a scheme now and then.
fn question_marking(kind: &'static str) -> impl Strategy<Value = Value> {
    let scheme = mostly(
        pick(&[
            json!({"scheme": "partial"}),
            json!({"scheme": "partial", "per_option": "9223372036854775807"}),
            json!({"scheme": "partial", "per_option": "1/3"}),
            json!({"scheme": "proportional"}),
            json!({"scheme": "all_or_nothing"}),
        ]),
        Just(json!({"scheme": "nope"})),
    );
    (marking(), rarely(scheme)).prop_map(move |(mut marking, scheme)| {
        if let (Some(scheme), "msq") = (scheme, kind) {
            marking["msq"] = scheme;
        }
        marking
    })
}

/// An object of the fields that are set.
fn object<const N: usize>(fields: [(&str, Option<Value>); N]) -> Value {
    let map: Map<String, Value> = fields
        .into_iter()
        .filter_map(|(name, value)| Some((name.to_owned(), value?)))
        .collect();
    Value::Object(map)
}

/// An optional field, absent four times in five.
fn rarely<T: std::fmt::Debug + Clone + 'static>(
    value: impl Strategy<Value = T> + 'static,
) -> BoxedStrategy<Option<T>> {
    prop_oneof![4 => Just(None), 1 => value.prop_map(Some)].boxed()
}

/// A question of any type, with fields of its type (its id set by its section).
fn question() -> impl Strategy<Value = Value> {
    typed_key().prop_flat_map(|(kind, key, options)| {
        let rounding = (
            mostly(pick(&["round", "truncate"]), Just("up")),
            mostly(0u8..=15, any::<u8>()),
        )
            .prop_map(|(mode, decimals)| json!({"mode": mode, "decimals": decimals}));
        let dropped = mostly(
            pick(&["marks_to_all", "marks_to_attempted", "removed"]),
            Just("x"),
        );
        let also: BoxedStrategy<Value> = match kind {
            "mcq" => Just(json!(["C"])).boxed(),
            "numeric" => prop::collection::vec(numeric_key(), 0..3)
                .prop_map(Value::from)
                .boxed(),
            _ => prop::collection::vec(integer_key(), 0..3)
                .prop_map(Value::from)
                .boxed(),
        };
        let subjective = kind == "subjective";
        let takes_also = matches!(kind, "mcq" | "numeric" | "integer");
        (
            rarely(also).prop_map(move |also| also.filter(|_| takes_also)),
            rarely(question_marking(kind)).prop_map(move |m| m.filter(|_| !subjective)),
            rarely(dropped),
            rarely(rounding).prop_map(move |r| r.filter(|_| kind == "numeric")),
            rarely(correct_mark()).prop_map(move |max| subjective.then(|| max.unwrap_or(json!(5)))),
            rarely(Just("topic")),
        )
            .prop_map(move |(also, marking, dropped, rounding, max, topic)| {
                object([
                    ("id", Some(json!("renamed by its section"))),
                    ("type", Some(json!(kind))),
                    ("answer", key.clone()),
                    ("options", options.clone().map(Value::from)),
                    ("also_accepted", also),
                    ("marking", marking),
                    ("dropped", dropped.map(Value::from)),
                    ("rounding", rounding),
                    ("max_marks", max),
                    ("topic", topic.map(Value::from)),
                ])
            })
    })
}

/// Section `s` of a test, its questions `q{s}_0`, `q{s}_1`, ... (now and then all `q0_0`).
fn section(s: usize) -> impl Strategy<Value = Value> {
    let limit = mostly(1u64..4, prop_oneof![Just(0), Just(u64::MAX)]);
    (
        prop::collection::vec(question(), 1..6),
        rarely(marking()),
        rarely(marking()),
        rarely(limit),
        mostly(Just(false), Just(true)),
    )
        .prop_map(
            move |(mut questions, marking, by_type, limit, repeat_ids)| {
                for (i, question) in questions.iter_mut().enumerate() {
                    let id = if repeat_ids {
                        "q0_0".to_owned()
                    } else {
                        format!("q{s}_{i}")
                    };
                    question["id"] = json!(id);
                    // An attempt limit is for a group: the section's questions form one.
                    if limit.is_some() {
                        question["group"] = json!("B");
                    }
                }
                object([
                    ("id", Some(json!(format!("s{s}")))),
                    ("questions", Some(Value::from(questions))),
                    ("marking", marking),
                    (
                        "marking_by_type",
                        by_type.map(|m| json!({"mcq": m, "numeric": m})),
                    ),
                    ("attempt_limits", limit.map(|n| json!({"B": n}))),
                ])
            },
        )
}

/// An answer of the question's type, now and then any answer.
fn answer(kind: &str) -> BoxedStrategy<Value> {
    let fitting: BoxedStrategy<Value> = match kind {
        "mcq" => pick(&["A", "B", "C", "D"]).prop_map(Value::from).boxed(),
        "msq" => prop::sample::subsequence(vec!["A", "B", "C", "D"], 0..=4)
            .prop_map(Value::from)
            .boxed(),
        "integer" | "numeric" => number_text().prop_map(Value::from).boxed(),
        _ => "[ -~]{0,40}".prop_map(Value::from).boxed(),
    };
    let any = prop_oneof![
        pick(&[
            json!("A"),
            json!(["A", "B"]),
            json!(["A", "A"]),
            json!(["E"]),
            json!("")
        ]),
        number_text().prop_map(Value::from),
        (0usize..5000).prop_map(|n| Value::from("7".repeat(n) + "x")),
    ];
    prop_oneof![10 => fitting, 1 => any].boxed()
}

/// A response to the question `id` of type `kind`.
fn response((id, kind): (String, String)) -> impl Strategy<Value = Value> {
    let state = mostly(
        pick(&[
            "answered",
            "not_answered",
            "marked_for_review",
            "answered_and_marked_for_review",
        ]),
        Just("asleep"),
    );
    let time = mostly(any::<u64>().prop_map(Value::from), Just(json!(-1)));
    let award = mark_from(&[json!("7/2"), json!(0), json!(5), json!(2)]).prop_map(Some);
    let awarded = if kind == "subjective" {
        prop_oneof![Just(None), award].boxed()
    } else {
        mostly(Just(None), award)
    };
    (
        prop::option::of(answer(&kind)),
        rarely(state),
        awarded,
        rarely(time),
    )
        .prop_map(move |(answer, state, awarded, time)| {
            object([
                ("question", Some(json!(id))),
                ("answer", answer),
                ("state", state.map(Value::from)),
                ("awarded", awarded),
                ("time_spent_ms", time),
            ])
        })
}

/// Responses to some of `questions` (id and type) in any order, now and then to the same one
/// twice or to one the test lacks.
fn responses(questions: Vec<(String, String)>) -> impl Strategy<Value = Value> {
    let some = prop::sample::subsequence(questions.clone(), 0..=questions.len()).prop_shuffle();
    let stray = (String::from("q9_9"), String::from("mcq"));
    let any = prop::collection::vec(mostly(pick(&questions), Just(stray)), 0..8);
    mostly(some, any).prop_flat_map(|chosen| {
        chosen
            .into_iter()
            .map(response)
            .collect::<Vec<_>>()
            .prop_map(Value::from)
    })
}

/// A test and an attempt of it, mostly well formed, with wrong and extreme values here and
/// there.
fn request() -> impl Strategy<Value = Value> {
    let sections = (1usize..4).prop_flat_map(|n| (0..n).map(section).collect::<Vec<_>>());
    let test = (
        mostly(1u32..4, any::<u32>()).prop_map(Value::from),
        mostly(marking().prop_map(Some), Just(None)),
        sections,
    )
        .prop_map(|(key_version, marking, sections)| {
            object([
                ("test_id", Some(json!("t"))),
                ("key_version", Some(key_version)),
                ("marking", marking),
                ("sections", Some(Value::from(sections))),
            ])
        });
    test.prop_flat_map(|test| {
        let attempt = (
            mostly(Just("a"), Just("")),
            rarely(mostly(Just("t"), Just("other"))),
            responses(questions(&test)),
        )
            .prop_map(|(id, test_id, responses)| {
                object([
                    ("attempt_id", Some(json!(id))),
                    ("test_id", test_id.map(Value::from)),
                    ("responses", Some(responses)),
                ])
            });
        (Just(test), attempt)
    })
    .prop_map(|(test, attempt)| json!({"test": test, "attempt": attempt}))
}

/// The id and type of every question of a test.
fn questions(test: &Value) -> Vec<(String, String)> {
    let sections = test["sections"].as_array().into_iter().flatten();
    let questions = sections.flat_map(|s| s["questions"].as_array().into_iter().flatten());
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    questions
        .map(|q| (text(&q["id"]), text(&q["type"])))
        .collect()
}

/// Validates and scores one request, and when it scores, finalizes the test with it and draws
/// its histogram: everything the scoring jobs do with a test and an attempt.
fn score_everything(text: &str) -> Result<(), String> {
    let result = score_json(text).map_err(|e| e.to_string())?;
    let request: ScoreRequest = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let test = PreparedTest::new(request.test).map_err(|e| e.to_string())?;
    let finalized = finalize(&test, [&result]).map_err(|e| e.to_string())?;
    for width in ["1", "1/3", "1000000"] {
        let width = width.parse().map_err(|e| format!("{e}"))?;
        histogram(&[finalized.standings[0].marks], width);
    }
    Ok(())
}

proptest! {
    #![proptest_config(cases(250))]

    #[test]
    fn scoring_any_test_and_attempt_never_panics_and_stays_small(request in request()) {
        let text = request.to_string();
        let (scored, peak) = peak_bytes_during(|| score_everything(&text));
        prop_assert!(peak <= memory_bound(text.len()), "{peak} bytes for {} bytes", text.len());
        if let Err(message) = scored {
            // 20 problems named, each quoting at most a few hundred bytes.
            prop_assert!(message.len() <= 20 * 500, "{} bytes: {message}", message.len());
        }
    }

    #[test]
    fn scoring_any_json_never_panics(value in any_json()) {
        let text = json!({"test": value, "attempt": value}).to_string();
        let (scored, peak) = peak_bytes_during(|| score_json(&text));
        prop_assert!(peak <= memory_bound(text.len()), "{peak} bytes for {} bytes", text.len());
        if let Err(e) = scored {
            prop_assert!(e.to_string().len() <= SHORT_MESSAGE);
        }
    }
}

#[test]
fn a_job_of_megabytes_is_refused_with_almost_no_memory() {
    let text = format!(
        r#"{{"v":1,"id":"01KAAAAAAAAAAAAAAAAAAAAAA1","kind":"diag.noop","payload":"{}","created_at":"2026-11-22T10:00:00Z"}}"#,
        "z".repeat(5 * 1024 * 1024)
    );
    let (decoded, peak) =
        peak_bytes_during(|| Envelope::decode_within(text.as_bytes(), &Limits::default()));
    let message = decoded.unwrap_err().to_string();
    assert!(
        message.contains("more than limits.max_job_bytes = 1048576"),
        "{message}"
    );
    assert!(peak < 1024, "{peak} bytes");
}

#[test]
fn a_job_nested_a_million_deep_is_refused_without_recursing() {
    let text = format!(
        r#"{{"v":1,"id":"01KAAAAAAAAAAAAAAAAAAAAAA1","kind":"diag.noop","payload":{},"created_at":"2026-11-22T10:00:00Z"}}"#,
        nested(1_000_000, json!(0))
    );
    let limits = Limits {
        max_job_bytes: 4 * 1024 * 1024,
        ..Limits::default()
    };
    let (decoded, peak) = peak_bytes_during(|| Envelope::decode_within(text.as_bytes(), &limits));
    let message = decoded.unwrap_err().to_string();
    assert!(message.contains("limits.max_json_depth = 64"), "{message}");
    assert!(peak < 1024, "{peak} bytes");
}
