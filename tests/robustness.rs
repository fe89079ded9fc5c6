//! Bad input and failure: malformed jobs pushed raw into Redis, signals, a process killed
//! mid-job, a job that keeps killing its process, a worker that dies.

mod common;

use std::time::Duration;

use common::{DEADLINE, TestEnv, wait_until};
use serde_json::json;
use sqlx::PgPool;

/// Pushes bytes into Redis the way a careless producer might: apalis' layout, no script.
async fn push_raw(env: &TestEnv, id: &str, data: &str) {
    let queue = env.queue("default");
    let _: () = redis::pipe()
        .hset(format!("{queue}:data"), id, data)
        .ignore()
        .hset_multiple(
            format!("{queue}:meta:{id}"),
            &[
                ("attempts", "0"),
                ("max_attempts", "25"),
                ("status", "Pending"),
            ],
        )
        .ignore()
        .rpush(format!("{queue}:active"), id)
        .ignore()
        .query_async(&mut env.redis.clone())
        .await
        .expect("push raw job");
}

fn envelope(id: &str, kind: &str, payload: serde_json::Value) -> String {
    json!({"v": 1, "id": id, "kind": kind, "payload": payload,
           "created_at": "2026-11-22T10:00:00Z"})
    .to_string()
}

#[sqlx::test]
async fn malformed_jobs_fail_with_a_reason_and_the_worker_goes_on(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    let _daemon = env.spawn_daemon(&[]);
    let bad = [
        (
            "01KAAAAAAAAAAAAAAAAAAAAAA1",
            "this is not json".to_owned(),
            "the job is not valid JSON",
        ),
        (
            "01KAAAAAAAAAAAAAAAAAAAAAA2",
            envelope("01KAAAAAAAAAAAAAAAAAAAAAA2", "score.nonsense", json!({})),
            "unknown job kind `score.nonsense`",
        ),
        (
            "01KAAAAAAAAAAAAAAAAAAAAAA3",
            envelope(
                "01KAAAAAAAAAAAAAAAAAAAAAA3",
                "diag.sleep",
                json!({"ms": "ten"}),
            ),
            "the payload does not match kind `diag.sleep`: invalid type: string \"ten\"",
        ),
        (
            "01KAAAAAAAAAAAAAAAAAAAAAA4",
            json!({"v": 1, "kind": "diag.noop"}).to_string(),
            "the envelope is malformed: missing field `id`",
        ),
        (
            "01KAAAAAAAAAAAAAAAAAAAAAA5",
            json!({"v": 7}).to_string(),
            "unsupported envelope version 7",
        ),
        (
            "01KAAAAAAAAAAAAAAAAAAAAAA6",
            "[1, 2, 3]".to_owned(),
            "not a JSON object but an array",
        ),
    ];
    let mut good = Vec::new();
    for (id, data, _) in &bad {
        push_raw(&env, id, data).await;
        good.push(env.enqueue("diag.noop", "{}", &[]));
    }
    for (id, _, reason) in &bad {
        let job = env.wait_for_state(id, "failed").await;
        let error = job.last_error.unwrap();
        assert!(
            error.contains(reason),
            "job {id}: {error:?} should say {reason:?}"
        );
        assert_eq!(job.attempts, 1, "a malformed job is not retried");
    }
    for id in &good {
        env.wait_for_state(id, "completed").await;
    }
    let shown = env.cli_json(&["jobs", "show", bad[0].0, "--json"]);
    assert_eq!(shown["kind"], "(malformed)");
    assert_eq!(shown["payload"], "this is not json", "the raw text is kept");
}

#[sqlx::test]
async fn sigterm_lets_a_running_job_finish_then_exits_0(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    let mut daemon = env.spawn_daemon(&[]);
    let id = env.enqueue("diag.sleep", r#"{"ms": 1500}"#, &[]);
    env.wait_for_state(&id, "running").await;

    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(Duration::from_secs(15)), Some(0));
    let job = env.job(&id).await.unwrap();
    assert_eq!(
        job.state, "completed",
        "the running job finished before exit"
    );
    assert_eq!(env.attempts(&id).await.len(), 1);
}

#[sqlx::test]
async fn at_the_shutdown_timeout_running_jobs_go_back_to_the_queue(pool: PgPool) {
    let config =
        common::FAST_CONFIG.replace(r#"shutdown_timeout = "10s""#, r#"shutdown_timeout = "1s""#);
    let env = TestEnv::with_config(pool, &config).await;
    let mut daemon = env.spawn_daemon(&[]);
    let id = env.enqueue("diag.sleep", r#"{"ms": 4000}"#, &[]);
    env.wait_for_state(&id, "running").await;

    daemon.signal("INT");
    assert_eq!(daemon.wait_exit(Duration::from_secs(15)), Some(0));
    let job = env.job(&id).await.unwrap();
    assert_eq!(job.state, "queued");
    assert_eq!(
        job.max_attempts, 4,
        "an interrupted attempt does not use up one of the 3"
    );
    assert_eq!(env.attempts(&id).await[0].outcome, "interrupted");
    let ready: Vec<String> = env
        .redis_cmd(
            redis::cmd("LRANGE")
                .arg(format!("{}:active", env.queue("default")))
                .arg(0)
                .arg(-1),
        )
        .await;
    assert_eq!(
        ready,
        std::slice::from_ref(&id),
        "handed back to the ready list"
    );

    let _next = env.spawn_daemon(&[]);
    let job = env.wait_for_state(&id, "completed").await;
    assert_eq!(job.attempts, 2);
}

#[sqlx::test]
async fn a_job_whose_process_is_killed_runs_again_and_the_lost_attempt_shows(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    let mut first = env.spawn_daemon(&[]);
    let id = env.enqueue("diag.sleep", r#"{"ms": 1000}"#, &[]);
    env.wait_for_state(&id, "running").await;
    first.signal("KILL");
    first.wait_exit(Duration::from_secs(5));

    // The restarted process takes the dead one's jobs once its heartbeat has expired.
    let _second = env.spawn_daemon(&[]);
    let job = env.wait_for_state(&id, "completed").await;
    assert_eq!(job.attempts, 2);
    let attempts = env.attempts(&id).await;
    assert_eq!(attempts[0].outcome, "lost");
    assert_eq!(attempts[1].outcome, "completed");
    assert_ne!(
        attempts[0].worker, attempts[1].worker,
        "a restart registers a new worker name"
    );
    let shown = env.cli_ok(&["jobs", "show", &id]);
    assert!(shown.contains("lost"), "{shown}");
}

#[sqlx::test]
async fn a_job_that_keeps_killing_its_process_ends_failed(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    let id = env.enqueue("diag.sleep", r#"{"ms": 20000}"#, &["--max-attempts", "2"]);
    for attempt in 1..=2 {
        let mut daemon = env.spawn_daemon(&[]);
        wait_until(
            &format!("attempt {attempt} running"),
            DEADLINE,
            async || match env.job(&id).await {
                Some(job) if job.state == "running" && job.attempts == attempt => Ok(()),
                job => Err(format!("it is {job:?}")),
            },
        )
        .await;
        daemon.signal("KILL");
        daemon.wait_exit(Duration::from_secs(5));
    }
    let _last = env.spawn_daemon(&[]);
    let job = env.wait_for_state(&id, "failed").await;
    assert_eq!(job.attempts, 3);
    assert!(job.last_error.unwrap().contains("over the limit of 2"));
    let outcomes: Vec<String> = env
        .attempts(&id)
        .await
        .into_iter()
        .map(|a| a.outcome)
        .collect();
    assert_eq!(outcomes, ["lost", "lost", "failed"]);
}

#[sqlx::test]
async fn a_dead_worker_is_replaced_and_work_goes_on(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    let mut daemon = env.spawn_daemon(&["--queues", "default"]);
    // Unregistering the worker behind its back makes its next heartbeat fail, which apalis
    // treats as fatal to the worker.
    let _: i64 = env
        .redis_cmd(redis::cmd("DEL").arg(format!("{}:workers", env.queue("default"))))
        .await;
    daemon.wait_for_log("the worker died");
    let id = env.enqueue("diag.noop", "{}", &[]);
    env.wait_for_state(&id, "completed").await;
    assert!(
        daemon.child.try_wait().unwrap().is_none(),
        "the process lives on"
    );
}

#[sqlx::test]
async fn a_worker_that_keeps_dying_makes_the_process_exit_non_zero(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    let mut daemon = env.spawn_daemon(&["--queues", "default"]);
    let start = std::time::Instant::now();
    let code = loop {
        if let Some(status) = daemon.child.try_wait().unwrap() {
            break status.code();
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the process idles on"
        );
        let _: i64 = env
            .redis_cmd(redis::cmd("DEL").arg(format!("{}:workers", env.queue("default"))))
            .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(matches!(code, Some(c) if c != 0), "exit code {code:?}");
    assert!(
        daemon
            .log_text()
            .contains("the default worker died 6 times within 60s")
    );
}

#[sqlx::test]
async fn a_paused_queue_takes_no_jobs_until_resumed(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    let daemon = env.spawn_daemon(&[]);
    env.cli_ok(&["queues", "pause", "default"]);
    daemon.wait_for_log("queue paused by an operator");
    let id = env.enqueue("diag.noop", "{}", &[]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        env.job(&id).await.unwrap().state,
        "queued",
        "a paused queue's job did not start"
    );
    let queues = env.cli_json(&["queues", "--json"]);
    let default = &queues.as_array().unwrap()[0];
    assert_eq!(default["queue"], "default");
    assert_eq!(default["paused"], true);
    assert_eq!(default["queued"], 1);

    env.cli_ok(&["queues", "resume", "default"]);
    env.wait_for_state(&id, "completed").await;
}

#[sqlx::test]
async fn a_python_producer_using_the_protocol_gets_its_job_done(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    let _daemon = env.spawn_daemon(&[]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/jobs/src/enqueue.lua");
    let producer = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/producers/enqueue.py");
    let output = std::process::Command::new("python3")
        .args([producer, &env.redis_url, &env.queue("default"), script])
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "the Python producer failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let mut lines = stdout.lines();
    let id = lines
        .next()
        .expect("the producer prints the job id")
        .to_owned();
    let refusal = lines.next().expect("the producer prints the refusal");
    assert!(refusal.contains("must be a ULID"), "{refusal}");
    let job = env.wait_for_state(&id, "completed").await;
    assert_eq!(job.result, Some(json!({"slept_ms": 10})));
}

#[sqlx::test]
async fn operator_commands_say_what_is_wrong(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    let cases: [(&[&str], &str); 6] = [
        (
            &["run", "--queues", "default,scoring,nope"],
            "unknown queue `nope`",
        ),
        (&["enqueue", "diag.nope"], "unknown job kind `diag.nope`"),
        (
            &["enqueue", "diag.sleep", "--payload", "{ms: 1}"],
            "--payload is not valid JSON",
        ),
        (
            &["enqueue", "diag.sleep", "--payload", "{}"],
            "missing field `ms`",
        ),
        (
            &["jobs", "list", "--state", "done"],
            "unknown job state `done`",
        ),
        (
            &["jobs", "show", "01KAAAAAAAAAAAAAAAAAAAAAAA"],
            "no job with id",
        ),
    ];
    for (args, message) in cases {
        let output = env.cli(args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} succeeded");
        assert!(
            stderr.contains(message),
            "{args:?}: {stderr:?} should say {message:?}"
        );
    }
    let check = env.cli_json(&["check", "--json"]);
    assert!(
        check.as_array().unwrap().iter().all(|c| c["ok"] == true),
        "{check}"
    );

    let bad_config = env
        .command()
        .env("QUIZWORKER_QUEUES__EMAILS__CONCURRENCY", "0")
        .arg("check")
        .output()
        .unwrap();
    assert!(!bad_config.status.success());
    assert!(String::from_utf8_lossy(&bad_config.stderr).contains("queues.emails.concurrency"));
}

#[sqlx::test]
async fn a_payload_with_a_nul_character_is_journaled(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    let _daemon = env.spawn_daemon(&[]);
    // Postgres refuses NUL in jsonb: the journal keeps U+FFFD in its place.
    let id = "01KAAAAAAAAAAAAAAAAAAAAAB1";
    let data = envelope(id, "score.nonsense", json!({"note": "a\u{0}b"}));
    push_raw(&env, id, &data).await;
    let job = env.wait_for_state(id, "failed").await;
    assert!(job.last_error.unwrap().contains("score.nonsense"));
    let payload: serde_json::Value = sqlx::query_scalar("SELECT payload FROM jobs WHERE id = $1")
        .bind(id)
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(payload["note"], "a\u{FFFD}b");
}
