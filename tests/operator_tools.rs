//! The operator's tools keep working whatever is stored or sent: any journaled job shows, the
//! metrics stay small, log lines cannot be forged, no password shows, no command panics, and
//! each kind of failure has its exit code. Also what a newcomer reads first: `check`,
//! `migrate`, the help texts and the README's table of commands.

mod common;

use std::fs;
use std::time::{Duration, Instant};

use common::{DEADLINE, TestEnv, http_get};
use quizworker_jobs::{Envelope, Queue};
use serde_json::json;
use sqlx::PgPool;

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
