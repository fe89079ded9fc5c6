//! Input that is valid but extreme, through the real daemon: a test whose marks lie a
//! trillion apart.

mod common;

use std::path::PathBuf;

use common::TestEnv;
use serde_json::json;
use sqlx::PgPool;

fn exports_dir(env: &TestEnv) -> PathBuf {
    env.dir.path().join("exports")
}

fn spawn(env: &TestEnv) -> common::Daemon {
    let dir = exports_dir(env);
    env.spawn_daemon_with(
        &[],
        &[("QUIZWORKER_EXPORTS__DIRECTORY", dir.to_str().unwrap())],
    )
}

fn tool(program: &str, args: &[&str]) -> String {
    let output = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} runs (scripts/services.sh installs it): {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 output")
}

#[sqlx::test]
async fn a_test_report_of_marks_a_trillion_apart_is_drawn_and_the_daemon_lives(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    let mut daemon = spawn(&env);
    // Valid marking, if harsh: one wrong answer costs a trillion marks.
    let test = json!({
        "test_id": "harsh", "key_version": 1, "title": "Harsh mock",
        "marking": {"correct": 4, "incorrect": "-1000000000000"},
        "sections": [{"id": "s", "questions": [{"id": "q1", "type": "mcq", "answer": "A"}]}]
    });
    let mut scored = Vec::new();
    for (i, answer) in ["B", "A", "A"].into_iter().enumerate() {
        let payload = json!({"test": test, "attempt": {
            "attempt_id": format!("harsh-{i}"), "test_id": "harsh",
            "responses": [{"question": "q1", "answer": answer}]}});
        scored.push(env.enqueue("score.attempt", &payload.to_string(), &[]));
    }
    for id in &scored {
        env.wait_for_state(id, "completed").await;
    }
    let finalize = env.enqueue("score.finalize_test", r#"{"test_id": "harsh"}"#, &[]);
    env.wait_for_state(&finalize, "completed").await;

    // Another job in flight while the report is drawn: it must not be lost with the process.
    let sleeper = env.enqueue("diag.sleep", r#"{"ms": 1500}"#, &[]);
    env.wait_for_state(&sleeper, "running").await;
    let report = env.enqueue("export.test_report_pdf", r#"{"test_id": "harsh"}"#, &[]);
    let job = env.wait_for_state(&report, "completed").await;
    let result = job.result.expect("a result");
    let path = result["path"].as_str().expect("a path");
    tool("qpdf", &["--check", path]);
    let text = tool("pdftotext", &["-enc", "UTF-8", path, "-"]);
    for expected in ["Score distribution", "-1000000000000.00", "-1e12"] {
        assert!(text.contains(expected), "no {expected:?} in\n{text}");
    }

    assert_eq!(env.wait_for_state(&sleeper, "completed").await.attempts, 1);
    let after = env.enqueue("diag.noop", "{}", &[]);
    env.wait_for_state(&after, "completed").await;
    assert!(
        daemon.child.try_wait().unwrap().is_none(),
        "the daemon lives"
    );
}
