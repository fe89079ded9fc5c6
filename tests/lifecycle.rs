//! A job's life through the daemon: completion, retries with backoff, attempt limits,
//! permanent errors, operator retry and cancel, idempotency keys.

mod common;

use common::{DEADLINE, FAST_CONFIG, TestEnv, seen, wait_until};
use serde_json::json;
use sqlx::PgPool;

#[sqlx::test]
async fn an_enqueued_job_completes_and_is_journaled(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    let _daemon = env.spawn_daemon(&[]);
    let id = env.enqueue("diag.sleep", r#"{"ms": 50}"#, &[]);

    let job = env.wait_for_state(&id, "completed").await;
    assert_eq!(job.attempts, 1);
    assert_eq!(job.max_attempts, 3);
    assert_eq!(job.progress, 100);
    assert_eq!(job.result, Some(serde_json::json!({"slept_ms": 50})));
    let attempts = env.attempts(&id).await;
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].outcome, "completed");
    assert!(attempts[0].finished_at.is_some());

    let listed = env.cli_json(&["jobs", "list", "--json"]);
    let listed = listed.as_array().expect("an array");
    assert_eq!(listed.len(), 1);
    for field in [
        "id",
        "queue",
        "kind",
        "state",
        "attempts",
        "max_attempts",
        "progress",
        "error",
        "created_at",
        "finished_at",
    ] {
        assert!(
            listed[0].get(field).is_some(),
            "jobs list --json lacks {field}"
        );
    }
    assert_eq!(listed[0]["id"], id.as_str());
    assert_eq!(listed[0]["state"], "completed");
    assert_eq!(listed[0]["queue"], "default");

    let shown = env.cli_json(&["jobs", "show", &id, "--json"]);
    assert_eq!(shown["kind"], "diag.sleep");
    assert_eq!(shown["attempt_history"][0]["outcome"], "completed");
    let human = env.cli_ok(&["jobs", "show", &id]);
    assert!(
        human.contains("completed") && human.contains("diag.sleep"),
        "{human}"
    );
}

#[sqlx::test]
async fn a_job_that_fails_twice_completes_on_its_third_attempt_after_backoff(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    let _daemon = env.spawn_daemon(&[]);
    let id = env.enqueue("diag.fail", r#"{"times": 2}"#, &[]);

    let job = env.wait_for_state(&id, "completed").await;
    assert_eq!(job.attempts, 3);
    assert_eq!(job.last_error, None, "a completed job shows no error");
    let attempts = env.attempts(&id).await;
    let outcomes: Vec<&str> = attempts.iter().map(|a| a.outcome.as_str()).collect();
    assert_eq!(outcomes, ["failed", "failed", "completed"]);
    assert!(
        attempts[0]
            .error
            .as_deref()
            .unwrap()
            .contains("planned failure 1 of 2")
    );
    // FAST_CONFIG: base 1s, cap 2s, no jitter: waits of 1s, then 2s.
    for (before, after, backoff_ms) in [(0, 1, 1000), (1, 2, 2000)] {
        let gap = attempts[after].started_at - attempts[before].finished_at.unwrap();
        assert!(
            gap.num_milliseconds() >= backoff_ms,
            "attempt {} started {gap} after attempt {} ended, before its backoff of {backoff_ms} ms",
            after + 1,
            before + 1
        );
    }
}

#[sqlx::test]
async fn a_job_out_of_attempts_fails(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    let _daemon = env.spawn_daemon(&[]);
    let id = env.enqueue("diag.fail", r#"{"times": 10}"#, &["--max-attempts", "2"]);

    let job = env.wait_for_state(&id, "failed").await;
    assert_eq!(job.attempts, 2);
    let error = job.last_error.unwrap();
    assert!(
        error.contains("attempt 2 of 2: no attempts left"),
        "{error}"
    );
    assert_eq!(env.attempts(&id).await.len(), 2);
    let failed = env.cli_json(&["jobs", "list", "--state", "failed", "--json"]);
    assert_eq!(failed[0]["id"], id.as_str());
}

#[sqlx::test]
async fn a_permanent_error_fails_at_once(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    let _daemon = env.spawn_daemon(&[]);
    let id = env.enqueue("diag.fail", r#"{"permanent": true}"#, &[]);

    let job = env.wait_for_state(&id, "failed").await;
    assert_eq!(job.attempts, 1);
    assert_eq!(
        job.last_error.as_deref(),
        Some("diag.fail: planned permanent failure")
    );
    assert_eq!(env.attempts(&id).await.len(), 1);
}

#[sqlx::test]
async fn an_operator_retry_of_a_failed_job_runs_it_again(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    let _daemon = env.spawn_daemon(&[]);
    let id = env.enqueue("diag.fail", r#"{"times": 1}"#, &["--max-attempts", "1"]);
    env.wait_for_state(&id, "failed").await;

    let out = env.cli_ok(&["jobs", "retry", &id]);
    assert!(out.contains("retried 1 job"), "{out}");
    let job = env.wait_for_state(&id, "completed").await;
    assert_eq!(job.attempts, 2);
    let outcomes: Vec<String> = env
        .attempts(&id)
        .await
        .into_iter()
        .map(|a| a.outcome)
        .collect();
    assert_eq!(outcomes, ["failed", "completed"]);

    // A completed job is not retried, and saying so is an error.
    let again = env.cli(&["jobs", "retry", &id]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("only failed or cancelled jobs"));
}

#[sqlx::test]
async fn a_bulk_retry_needs_confirmation_and_retries_every_match(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    let _daemon = env.spawn_daemon(&[]);
    let ids: Vec<String> = (0..3)
        .map(|_| env.enqueue("diag.fail", r#"{"times": 1}"#, &["--max-attempts", "1"]))
        .collect();
    let ok = env.enqueue("diag.noop", "{}", &[]);
    for id in &ids {
        env.wait_for_state(id, "failed").await;
    }
    env.wait_for_state(&ok, "completed").await;

    let dry = env.cli_ok(&["jobs", "retry", "--state", "failed"]);
    assert!(dry.contains("3 job(s) match"), "{dry}");
    assert_eq!(
        env.job(&ids[0]).await.unwrap().state,
        "failed",
        "nothing moved without --yes"
    );

    let report = env.cli_json(&["jobs", "retry", "--state", "failed", "--yes", "--json"]);
    assert_eq!(report["retried"].as_array().unwrap().len(), 3);
    for id in &ids {
        env.wait_for_state(id, "completed").await;
    }
}

/// `jobs run-now` cuts short a retry's backoff and a run time given at enqueue; a job that does
/// not wait for a time is named with the reason, and the command fails if it moved none.
#[sqlx::test]
async fn run_now_runs_a_job_waiting_for_its_retry_or_its_time(pool: PgPool) {
    let config = FAST_CONFIG.replace(
        r#"backoff = { base = "1s", cap = "2s", jitter = 0.0 }"#,
        r#"backoff = { base = "1h", cap = "1h", jitter = 0.0 }"#,
    );
    let env = TestEnv::with_config(pool, &config).await;
    let _daemon = env.spawn_daemon(&[]);
    let retrying = env.enqueue("diag.fail", r#"{"times": 1}"#, &[]);
    let later = env.enqueue("diag.noop", "{}", &["--delay", "1h"]);
    env.wait_for_state(&retrying, "retrying").await;
    env.wait_for_state(&later, "scheduled").await;

    let report = env.cli_json(&["jobs", "run-now", &retrying, &later, "--json"]);
    assert_eq!(report["due"], json!([retrying, later]), "{report}");
    let job = env.wait_for_state(&retrying, "completed").await;
    assert_eq!(job.attempts, 2);
    let job = env.wait_for_state(&later, "completed").await;
    assert_eq!(job.attempts, 1);

    // Nothing waits any more: each id is named with why, and the command fails.
    let again = env.cli(&["jobs", "run-now", &later, "01JZZZZZZZZZZZZZZZZZZZZZZZ"]);
    assert!(!again.status.success());
    let out = String::from_utf8_lossy(&again.stdout);
    assert!(
        out.contains(&format!(
            "skipped {later}: it is completed; only scheduled or retrying jobs wait for a time"
        )),
        "{out}"
    );
    assert!(
        out.contains("skipped 01JZZZZZZZZZZZZZZZZZZZZZZZ: no such job"),
        "{out}"
    );
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("no job was made due"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
}

#[sqlx::test]
async fn a_cancelled_job_never_runs(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    let _daemon = env.spawn_daemon(&[]);
    let id = env.enqueue("diag.noop", "{}", &["--delay", "3s"]);
    let waiting = env.cli_json(&["jobs", "show", &id, "--json"]);
    assert_eq!(waiting["state"], "scheduled");

    let out = env.cli_ok(&["jobs", "cancel", &id]);
    assert!(out.contains(&format!("cancelled {id}")), "{out}");
    let scheduled: i64 = env
        .redis_cmd(redis::cmd("ZCARD").arg(format!("{}:scheduled", env.queue("default"))))
        .await;
    assert_eq!(scheduled, 0, "the job left Redis");
    let job = env.wait_for_state(&id, "cancelled").await;
    assert_eq!(job.attempts, 0);

    // Past its run time it still has not run, and a second cancel says why it cannot.
    let later = env.enqueue("diag.noop", "{}", &["--delay", "3s"]);
    env.wait_for_state(&later, "completed").await;
    assert_eq!(env.job(&id).await.unwrap().state, "cancelled");
    let again = env.cli(&["jobs", "cancel", &id]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already cancelled"));
}

#[sqlx::test]
async fn an_idempotency_key_enqueues_once(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    let first = env.cli_json(&[
        "enqueue",
        "diag.noop",
        "--idempotency-key",
        "attempt-7",
        "--json",
    ]);
    let second = env.cli_json(&[
        "enqueue",
        "diag.noop",
        "--idempotency-key",
        "attempt-7",
        "--json",
    ]);
    assert_eq!(first["created"], true);
    assert_eq!(second["created"], false);
    assert_eq!(first["id"], second["id"]);

    let _daemon = env.spawn_daemon(&[]);
    let id = first["id"].as_str().unwrap();
    env.wait_for_state(id, "completed").await;
    let other = env.enqueue("diag.noop", "{}", &["--idempotency-key", "attempt-8"]);
    env.wait_for_state(&other, "completed").await;
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(count, 2, "one job per key");
}

#[sqlx::test]
async fn many_jobs_each_complete_once(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    // Enqueue through the Rust producer API: 500 CLI processes would be slow.
    let producer = env.producer().await;
    for _ in 0..500 {
        let enqueued = producer
            .push(&quizworker_jobs::diag::Noop {})
            .await
            .unwrap();
        assert!(enqueued.created);
    }
    let queued: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE state = 'queued'")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(queued, 500, "the producer journals what it enqueues");
    let _daemon = env.spawn_daemon(&[]);
    wait_until("500 jobs completed", DEADLINE, async || {
        let done: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE state = 'completed'")
            .fetch_one(&env.pool)
            .await
            .unwrap();
        seen(done == 500, || format!("{done} are"))
    })
    .await;
    let (jobs, attempts): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM jobs WHERE attempts = 1),
                (SELECT count(*) FROM job_attempts WHERE outcome = 'completed')",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!((jobs, attempts), (500, 500));
}

#[sqlx::test]
async fn a_running_job_reports_its_progress(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    let _daemon = env.spawn_daemon(&[]);
    let id = env.enqueue("diag.sleep", r#"{"ms": 3000}"#, &[]);
    let job = wait_until("progress while running", DEADLINE, async || {
        match env.job(&id).await {
            Some(job) if job.state == "running" && (1..100).contains(&job.progress) => Ok(job),
            job => Err(format!("it is {job:?}")),
        }
    })
    .await;
    assert!(job.progress < 100);
    let shown = env.cli_json(&["jobs", "show", &id, "--json"]);
    assert!(
        shown["progress_message"]
            .as_str()
            .unwrap_or("")
            .contains("of 3000 ms"),
        "{shown}"
    );
    assert_eq!(env.wait_for_state(&id, "completed").await.progress, 100);
}
