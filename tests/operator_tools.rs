//! The operator's tools keep working whatever is stored or sent: any journaled job shows, the
//! metrics stay small, log lines cannot be forged, no password shows, no command panics, and
//! each kind of failure has its exit code. Also what a newcomer reads first: `check`,
//! `migrate`, the help texts and the README's table of commands.

mod common;

use std::fs;
use std::time::{Duration, Instant};

use common::{DEADLINE, TestEnv, http_get};
use quizworker_jobs::{Envelope, Queue};
use serde_json::{Value, json};
use sqlx::PgPool;

/// Journals a job straight into the table, the way a producer's bytes may sit there.
async fn insert_job(env: &TestEnv, id: &str, kind: &str, payload: &str, result: Option<&str>) {
    sqlx::query(
        "INSERT INTO jobs (id, queue, kind, payload, state, attempts, max_attempts, result,
                           created_at, finished_at)
         VALUES ($1, 'default', $2, $3::json, 'completed', 1, 3, $4::jsonb, now(), now())",
    )
    .bind(id)
    .bind(kind)
    .bind(payload)
    .bind(result)
    .execute(&env.pool)
    .await
    .expect("insert a job");
}

fn nested(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

// --- 1. Any stored job shows ---------------------------------------------------------------------

#[sqlx::test]
async fn jobs_list_and_show_show_payloads_serde_json_cannot_read(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    let deep = nested(300);
    let lone_surrogate = r#"{"note": "\ud800"}"#;
    insert_job(
        &env,
        "01KAAAAAAAAAAAAAAAAAAAAAC1",
        "diag.noop",
        "{}",
        Some("null"),
    )
    .await;
    insert_job(
        &env,
        "01KAAAAAAAAAAAAAAAAAAAAAC2",
        "diag.noop",
        &deep,
        Some(&deep),
    )
    .await;
    insert_job(
        &env,
        "01KAAAAAAAAAAAAAAAAAAAAAC3",
        "diag.noop",
        lone_surrogate,
        None,
    )
    .await;

    let table = env.cli_ok(&["jobs", "list"]);
    for id in ["C1", "C2", "C3"] {
        assert!(
            table.contains(&format!("01KAAAAAAAAAAAAAAAAAAAAA{id}")),
            "{table}"
        );
    }
    let listed = env.cli_json(&["jobs", "list", "--json"]);
    let payloads: Vec<&Value> = listed
        .as_array()
        .expect("an array")
        .iter()
        .map(|job| &job["payload"])
        .collect();
    // Newest first: created in the same instant, so by id.
    assert_eq!(
        payloads,
        [&json!(lone_surrogate), &json!(deep), &json!({})],
        "what serde_json cannot read is shown as its stored text"
    );

    let shown = env.cli_json(&["jobs", "show", "01KAAAAAAAAAAAAAAAAAAAAAC2", "--json"]);
    assert_eq!(shown["payload"], json!(deep));
    assert_eq!(shown["result"], json!(deep));
    let text = env.cli_ok(&["jobs", "show", "01KAAAAAAAAAAAAAAAAAAAAAC3"]);
    assert!(
        text.contains(r#"payload      {"note": "\ud800"}"#),
        "{text}"
    );
    assert!(text.contains("not readable as JSON here"), "{text}");
}

// --- 2. /metrics stays small whatever kinds producers send --------------------------------------

#[sqlx::test]
async fn unknown_kinds_count_under_one_label_value(pool: PgPool) {
    let config = format!(
        "{}\n[http]\nqueue_sample_interval = \"100ms\"\n",
        common::FAST_CONFIG
    );
    let env = TestEnv::with_config(pool, &config).await;
    let daemon = env.spawn_daemon(&[]);
    let producer = env.producer().await;
    const KINDS: usize = 300;
    for i in 0..KINDS {
        let envelope =
            Envelope::from_parts(&format!("made.up.{i}"), &json!({}), chrono::Utc::now());
        producer
            .enqueue(Queue::Default, &envelope)
            .await
            .expect("enqueue");
    }
    let start = Instant::now();
    loop {
        let failed: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE state = 'failed'")
            .fetch_one(&env.pool)
            .await
            .unwrap();
        if failed == KINDS as i64 {
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{failed} of {KINDS} jobs failed:\n{}",
            daemon.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let (status, metrics) = http_get(daemon.http_addr(), "/metrics");
    assert_eq!(status, 200);
    let counted =
        r#"quizworker_jobs_finished_total{queue="default",kind="(unknown)",outcome="failed"} 300"#;
    assert!(metrics.contains(counted), "no {counted} in:\n{metrics}");
    assert!(
        !metrics.contains("made.up"),
        "a producer's kind is a label:\n{metrics}"
    );
    let series = metrics
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .count();
    assert!(series < 200, "{series} series:\n{metrics}");
}

// --- 3. Log lines cannot be forged ----------------------------------------------------------------

#[sqlx::test]
async fn control_characters_from_input_are_escaped_in_log_lines(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    let daemon = env.spawn_daemon(&[]);
    let kind = "evil\nINFO forged: all is well\u{0}";
    let envelope = Envelope::from_parts(kind, &json!({}), chrono::Utc::now());
    let id = envelope.id.to_string();
    env.producer()
        .await
        .enqueue(Queue::Default, &envelope)
        .await
        .expect("enqueue");
    env.wait_for_state(&id, "failed").await;
    daemon.wait_for_log("job failed");

    let log = fs::read(&daemon.log).expect("the log");
    assert!(!log.contains(&0), "a NUL reached the log");
    let log = String::from_utf8_lossy(&log);
    for line in log.lines().filter(|line| line.contains("forged")) {
        assert!(line.contains(r"evil\nINFO forged"), "a forged line:\n{log}");
    }
    assert!(
        log.contains(r"well\u{0}"),
        "the NUL is not shown escaped:\n{log}"
    );

    let listed = env.cli_ok(&["jobs", "list"]);
    assert!(
        !listed.lines().any(|line| line.starts_with("INFO forged")),
        "{listed}"
    );
}
