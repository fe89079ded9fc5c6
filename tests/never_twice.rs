//! Fault injection: a job never runs beside itself, and nothing a producer writes into Redis
//! stops the daemon. Redis connections killed while jobs run, `jobs retry` racing maintenance,
//! a second delivery while the first runs in another process, entries apalis cannot read, and
//! the keys apalis leaves behind.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{DEADLINE, FAST_CONFIG, OwnRedis, TestEnv, seen, wait_until};
use serde_json::json;
use sqlx::PgPool;

/// Waits until every job of `ids` is in `state`.
async fn wait_all(env: &TestEnv, ids: &[String], state: &str) {
    let what = format!("{} jobs in {state}", ids.len());
    wait_until(&what, Duration::from_secs(60), async || {
        let count: i64 =
            sqlx::query_scalar("SELECT count(*) FROM jobs WHERE id = ANY($1) AND state = $2")
                .bind(ids)
                .bind(state)
                .fetch_one(&env.pool)
                .await
                .expect("count jobs");
        seen(count == ids.len() as i64, || {
            format!("{count} are\n{}", env.daemon_logs())
        })
    })
    .await
}

/// Every attempt row of these jobs: (job, attempt, outcome).
async fn attempt_rows(env: &TestEnv, ids: &[String]) -> Vec<(String, i32, String)> {
    sqlx::query_as(
        "SELECT job_id, attempt, outcome FROM job_attempts WHERE job_id = ANY($1)
          ORDER BY job_id, attempt",
    )
    .bind(ids)
    .fetch_all(&env.pool)
    .await
    .expect("query attempts")
}

/// Writes a job into Redis as a careless producer might: apalis' layout, no script, with
/// whatever id, payload and metadata the test gives (`None` leaves the payload out).
async fn push_raw(env: &TestEnv, queue: &str, id: &str, data: Option<&str>, meta: &[(&str, &str)]) {
    let queue = env.queue(queue);
    let mut pipe = redis::pipe();
    if let Some(data) = data {
        pipe.hset(format!("{queue}:data"), id, data).ignore();
    }
    if !meta.is_empty() {
        pipe.hset_multiple(format!("{queue}:meta:{id}"), meta)
            .ignore();
    }
    pipe.rpush(format!("{queue}:active"), id).ignore();
    let _: () = pipe
        .query_async(&mut env.redis.clone())
        .await
        .expect("push raw job");
}

const GOOD_META: [(&str, &str); 3] = [
    ("attempts", "0"),
    ("max_attempts", "25"),
    ("status", "Pending"),
];

fn envelope(id: &str, kind: &str, payload: serde_json::Value) -> String {
    json!({"v": 1, "id": id, "kind": kind, "payload": payload,
           "created_at": "2026-11-30T10:00:00Z"})
    .to_string()
}

#[sqlx::test]
async fn redis_connections_killed_mid_job_do_not_run_jobs_twice(pool: PgPool) {
    // A Redis of its own: killing every client of the shared one would hit other tests.
    let redis = OwnRedis::start();
    let env = TestEnv::with_redis(pool, FAST_CONFIG, &redis.url).await;
    let daemon = env.spawn_daemon(&["--queues", "default"]);
    let ids: Vec<String> = (0..10)
        .map(|_| env.enqueue("diag.sleep", r#"{"ms": 4000}"#, &[]))
        .collect();
    wait_all(&env, &ids, "running").await;

    // A blip: every connection of the daemon dropped at once, as a failover or CLIENT KILL does.
    env.kill_redis_connections().await;
    daemon.wait_for_log("the worker died");

    wait_all(&env, &ids, "completed").await;
    for id in &ids {
        let job = env.job(id).await.expect("journaled");
        assert_eq!(job.attempts, 1, "job {id} ran once\n{}", daemon.log_text());
    }
    let outcomes: Vec<String> = attempt_rows(&env, &ids)
        .await
        .into_iter()
        .map(|(_, _, outcome)| outcome)
        .collect();
    assert_eq!(
        outcomes,
        vec!["completed"; 10],
        "one attempt each, none lost"
    );

    // Once they ended, nothing of the dead worker is left for orphan recovery to push again.
    let queue = env.queue("default");
    wait_until("no id held by a worker", DEADLINE, async || {
        let inflight: Vec<String> = env
            .redis_cmd(redis::cmd("KEYS").arg(format!("{queue}:inflight:*")))
            .await;
        let mut held = 0;
        for key in &inflight {
            let n: i64 = env.redis_cmd(redis::cmd("SCARD").arg(key)).await;
            held += n;
        }
        seen(held == 0, || format!("{held} are"))
    })
    .await;
    let ready: i64 = env
        .redis_cmd(redis::cmd("LLEN").arg(format!("{queue}:active")))
        .await;
    assert_eq!(ready, 0, "no job was handed back to run again");
}

#[sqlx::test]
async fn retries_racing_maintenance_push_each_job_once(pool: PgPool) {
    let config = format!("{FAST_CONFIG}\n[maintenance]\ninterval = \"1s\"\n");
    let env = TestEnv::with_config(pool, &config).await;
    let mut daemon = env.spawn_daemon(&["--queues", "default"]);
    let ids: Vec<String> = (0..300)
        .map(|_| env.enqueue("diag.fail", r#"{"permanent": true}"#, &[]))
        .collect();
    wait_all(&env, &ids, "failed").await;

    const ROUNDS: i32 = 10;
    for _ in 0..ROUNDS {
        let retried = env.cli_json(&["jobs", "retry", "--state", "failed", "--yes", "--json"]);
        assert_eq!(retried["retried"].as_array().map(Vec::len), Some(ids.len()));
        wait_all(&env, &ids, "failed").await;
    }

    let rows = attempt_rows(&env, &ids).await;
    assert!(
        rows.iter().all(|(_, _, outcome)| outcome == "failed"),
        "no attempt lost: {:?}",
        rows.iter().find(|(_, _, outcome)| outcome != "failed")
    );
    assert_eq!(rows.len(), ids.len() * (ROUNDS as usize + 1));
    for id in &ids {
        let job = env.job(id).await.expect("journaled");
        assert_eq!(job.attempts, ROUNDS + 1, "job {id}");
    }
    let log = daemon.log_text();
    assert!(
        !log.contains("not running a job that is already") && !log.contains("second delivery"),
        "a job was delivered twice:\n{log}"
    );
    assert!(
        daemon.child.try_wait().unwrap().is_none(),
        "the daemon lives"
    );
}

#[sqlx::test]
async fn a_delivery_beside_a_running_attempt_of_another_process_is_not_run(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    let first = env.spawn_daemon(&["--queues", "default"]);
    let second = env.spawn_daemon(&["--queues", "exports"]);
    let id = env.enqueue("diag.sleep", r#"{"ms": 3000}"#, &[]);
    env.wait_for_state(&id, "running").await;

    // The same job delivered again, through a queue only the second process takes.
    let data = envelope(&id, "diag.sleep", json!({"ms": 3000}));
    push_raw(&env, "exports", &id, Some(&data), &GOOD_META).await;
    second.wait_for_log("a second delivery of a job that runs in another live process");

    let job = env.wait_for_state(&id, "completed").await;
    assert_eq!(job.attempts, 1);
    let outcomes: Vec<String> = attempt_rows(&env, std::slice::from_ref(&id))
        .await
        .into_iter()
        .map(|(_, _, outcome)| outcome)
        .collect();
    assert_eq!(outcomes, ["completed"], "{}", first.log_text());
}

#[sqlx::test]
async fn entries_apalis_cannot_read_are_taken_out_and_the_worker_goes_on(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    let mut daemon = env.spawn_daemon(&["--queues", "default"]);
    // A lower-case id is fetched and run under its canonical id; only its acknowledgement
    // fails, which kills the worker once.
    let lower_case = "01kb0000000000000000000003";
    push_raw(
        &env,
        "default",
        lower_case,
        Some(&envelope(lower_case, "diag.noop", json!({}))),
        &GOOD_META,
    )
    .await;
    env.wait_for_state(&lower_case.to_uppercase(), "completed")
        .await;
    daemon.wait_for_log("the worker died");

    // An entry without its payload, or with metadata apalis cannot parse, fails the fetch of
    // every worker that takes it: it is taken out of the queue and recorded as failed.
    let no_payload = "01KB0000000000000000000001";
    let bad_meta = "01KB0000000000000000000002";
    push_raw(&env, "default", no_payload, None, &GOOD_META).await;
    push_raw(
        &env,
        "default",
        bad_meta,
        Some(&envelope(bad_meta, "diag.noop", json!({}))),
        &[
            ("attempts", "0"),
            ("max_attempts", "three"),
            ("status", "Pending"),
        ],
    )
    .await;
    let good: Vec<String> = (0..5)
        .map(|_| env.enqueue("diag.noop", "{}", &[]))
        .collect();
    wait_all(&env, &good, "completed").await;
    let job = env.wait_for_state(no_payload, "failed").await;
    assert!(
        job.last_error
            .as_deref()
            .unwrap_or("")
            .contains("no payload"),
        "{job:?}"
    );
    let job = env.wait_for_state(bad_meta, "failed").await;
    let error = job.last_error.unwrap_or_default();
    assert!(
        error.contains("max_attempts") && error.contains("three"),
        "{error}"
    );

    let queue = env.queue("default");
    wait_until(
        "the bad entries gone from the queue",
        DEADLINE,
        async || {
            let mut held: HashSet<String> = HashSet::new();
            let keys: Vec<String> = env
                .redis_cmd(redis::cmd("KEYS").arg(format!("{queue}:inflight:*")))
                .await;
            for key in keys {
                let ids: Vec<String> = env.redis_cmd(redis::cmd("SMEMBERS").arg(key)).await;
                held.extend(ids);
            }
            let ready: Vec<String> = env
                .redis_cmd(
                    redis::cmd("LRANGE")
                        .arg(format!("{queue}:active"))
                        .arg(0)
                        .arg(-1),
                )
                .await;
            held.extend(ready);
            seen(held.is_empty(), || format!("it holds {held:?}"))
        },
    )
    .await;
    let log = daemon.log_text();
    let deaths = log.matches("the worker died").count();
    assert!(
        (2..=3).contains(&deaths),
        "each bad entry kills one worker at most, and is then gone: {deaths} deaths\n{log}"
    );
    assert!(
        daemon.child.try_wait().unwrap().is_none(),
        "the daemon lives"
    );
}

#[sqlx::test]
async fn workers_leave_no_metadata_behind(pool: PgPool) {
    let config = format!("{FAST_CONFIG}\n[maintenance]\ninterval = \"1s\"\n");
    let env = TestEnv::with_config(pool, &config).await;
    let metadata = format!("{}*:workers:metadata:*", env.prefix);

    // One left by a process that died without cleaning up: maintenance deletes it.
    let stale = format!("{}:workers:metadata:gone-host-1-1", env.queue("default"));
    let _: i64 = env
        .redis_cmd(redis::cmd("HSET").arg(&stale).arg("service").arg("x"))
        .await;
    let mut daemon = env.spawn_daemon(&[]);
    wait_until("the stale metadata deleted", DEADLINE, async || {
        let exists: i64 = env.redis_cmd(redis::cmd("EXISTS").arg(&stale)).await;
        seen(exists == 0, || "it is there".into())
    })
    .await;
    let live: Vec<String> = env.redis_cmd(redis::cmd("KEYS").arg(&metadata)).await;
    assert!(!live.is_empty(), "running workers have their metadata");

    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(DEADLINE), Some(0));
    let left: Vec<String> = env.redis_cmd(redis::cmd("KEYS").arg(&metadata)).await;
    assert!(
        left.is_empty(),
        "a clean shutdown removes its workers' metadata: {left:?}"
    );
    let processes: i64 = sqlx::query_scalar("SELECT count(*) FROM processes")
        .fetch_one(&env.pool)
        .await
        .expect("count processes");
    assert_eq!(processes, 0, "a clean shutdown gives its lease up");
}
