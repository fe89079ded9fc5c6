//! Maintenance: jobs Redis loses come back from the journal, old jobs leave the journal and
//! Redis, and several processes share one queue.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{DEADLINE, OwnRedis, TestEnv, seen, wait_until};
use sqlx::PgPool;

const MAINTAINED: &str = r#"
[maintenance]
interval = "1s"
"#;

async fn count(env: &TestEnv, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(&env.pool)
        .await
        .expect(sql)
}

/// Waits until `sql` (a count) returns `expected`.
async fn wait_for_count(env: &TestEnv, sql: &'static str, expected: i64, within: Duration) {
    wait_until(&format!("{sql} is {expected}"), within, async || {
        let n = count(env, sql).await;
        seen(n == expected, || {
            format!("it is {n}\n{}", env.daemon_logs())
        })
    })
    .await
}

#[sqlx::test]
async fn jobs_survive_redis_losing_everything_while_they_run(pool: PgPool) {
    // FLUSHALL must not touch the other tests' jobs: this test has a Redis of its own.
    let redis = OwnRedis::start();
    let config = format!("{}{MAINTAINED}", common::FAST_CONFIG);
    let env = TestEnv::with_redis(pool, &config, &redis.url).await;
    let _daemon = env.spawn_daemon(&[]);
    let producer = env.producer().await;
    for _ in 0..1000 {
        producer
            .push(&quizworker_jobs::diag::Sleep { ms: 20 })
            .await
            .unwrap();
    }
    wait_until_some_completed(&env, 100).await;
    let _: () = env.redis_cmd(&redis::cmd("FLUSHALL")).await;

    wait_for_count(
        &env,
        "SELECT count(*) FROM jobs WHERE state = 'completed'",
        1000,
        Duration::from_secs(60),
    )
    .await;
    let twice = count(
        &env,
        "SELECT count(*) FROM (SELECT job_id FROM job_attempts WHERE outcome = 'completed'
                                GROUP BY job_id HAVING count(*) > 1) AS t",
    )
    .await;
    assert_eq!(twice, 0, "no job completed twice");
    assert_eq!(
        count(
            &env,
            "SELECT count(*) FROM job_attempts WHERE outcome = 'completed'"
        )
        .await,
        1000
    );
    assert!(
        env.daemon_logs()
            .contains("put back in Redis jobs it had lost"),
        "the flush happened while jobs were waiting, so some came back from the journal"
    );
}

async fn wait_until_some_completed(env: &TestEnv, n: i64) {
    wait_until(&format!("{n} jobs completed"), DEADLINE, async || {
        let done = count(env, "SELECT count(*) FROM jobs WHERE state = 'completed'").await;
        seen(done >= n, || format!("{done} are"))
    })
    .await
}

#[sqlx::test]
async fn recover_puts_back_what_redis_lost_and_says_how_many(pool: PgPool) {
    let redis = OwnRedis::start();
    let env = TestEnv::with_redis(pool, common::FAST_CONFIG, &redis.url).await;
    let ids: Vec<String> = (0..5)
        .map(|_| env.enqueue("diag.noop", "{}", &[]))
        .collect();
    let later = env.enqueue("diag.noop", "{}", &["--delay", "1h"]);
    let _: () = env.redis_cmd(&redis::cmd("FLUSHALL")).await;

    let report = env.cli_json(&["recover", "--json"]);
    assert_eq!(report["recovered"], 6);
    let scheduled: i64 = env
        .redis_cmd(redis::cmd("ZCARD").arg(format!("{}:scheduled", env.queue("default"))))
        .await;
    assert_eq!(scheduled, 1, "the delayed job keeps its run time");
    assert_eq!(
        env.cli_ok(&["recover"]).trim(),
        "put 0 job(s) back in Redis"
    );

    let _daemon = env.spawn_daemon(&[]);
    for id in &ids {
        env.wait_for_state(id, "completed").await;
    }
    assert_eq!(env.job(&later).await.unwrap().state, "scheduled");
}

#[sqlx::test]
async fn old_jobs_leave_the_journal_and_redis(pool: PgPool) {
    let config = format!(
        "{}{MAINTAINED}keep_completed = \"1s\"\nkeep_failed = \"1h\"\n",
        common::FAST_CONFIG
    );
    let env = TestEnv::with_config(pool, &config).await;
    let _daemon = env.spawn_daemon(&[]);
    let done: Vec<String> = (0..20)
        .map(|i| env.enqueue("diag.noop", "{}", &["--idempotency-key", &format!("k{i}")]))
        .collect();
    let failed = env.enqueue("diag.fail", r#"{"permanent": true}"#, &[]);
    env.wait_for_state(&failed, "failed").await;

    wait_for_count(
        &env,
        "SELECT count(*) FROM jobs WHERE state = 'completed'",
        0,
        Duration::from_secs(30),
    )
    .await;
    assert!(env.job(&done[0]).await.is_none());
    assert_eq!(
        count(&env, "SELECT count(*) FROM job_attempts").await,
        1,
        "only the failed job's attempt is left"
    );
    let queue = env.queue("default");
    // The failed job is finished: Redis forgets it too; the journal keeps it.
    wait_until("Redis forgets the finished jobs", DEADLINE, async || {
        let (data, acknowledged, keys): (i64, i64, Vec<String>) = redis::pipe()
            .hlen(format!("{queue}:data"))
            .scard(format!("{queue}:done"))
            .keys(format!("{queue}:idempotency:*"))
            .query_async(&mut env.redis.clone())
            .await
            .unwrap();
        seen((data, acknowledged, keys.len()) == (0, 0, 0), || {
            format!("it holds {data} payloads, {acknowledged} acknowledged ids, keys {keys:?}")
        })
    })
    .await;
    assert_eq!(env.job(&failed).await.unwrap().state, "failed");
    // A freed idempotency key can be used again.
    let again = env.cli_json(&["enqueue", "diag.noop", "--idempotency-key", "k0", "--json"]);
    assert_eq!(again["created"], true);
}

#[sqlx::test]
async fn two_processes_share_a_queue_and_run_each_job_once(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    let producer = env.producer().await;
    for _ in 0..3000 {
        producer
            .push(&quizworker_jobs::diag::Noop {})
            .await
            .unwrap();
    }
    let _first = env.spawn_daemon(&[]);
    let _second = env.spawn_daemon(&[]);
    wait_for_count(
        &env,
        "SELECT count(*) FROM jobs WHERE state = 'completed'",
        3000,
        Duration::from_secs(60),
    )
    .await;
    let per_job: i64 = count(
        &env,
        "SELECT count(*) FROM job_attempts WHERE outcome = 'completed'",
    )
    .await;
    assert_eq!(per_job, 3000, "every job ran once");
    let workers: Vec<(String, i64)> =
        sqlx::query_as("SELECT worker, count(*) FROM job_attempts GROUP BY worker")
            .fetch_all(&env.pool)
            .await
            .unwrap();
    // A worker's name is its process' name and an incarnation number.
    let mut per_process: HashMap<String, i64> = HashMap::new();
    for (worker, n) in workers {
        let process = worker
            .rsplit_once('-')
            .map_or(worker.clone(), |(p, _)| p.to_owned());
        *per_process.entry(process).or_default() += n;
    }
    assert_eq!(
        per_process.len(),
        2,
        "both processes worked: {per_process:?}"
    );
}
