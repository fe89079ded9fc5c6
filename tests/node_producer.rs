//! A Node producer (tests/producers/enqueue.mjs: ioredis, the script by EVALSHA, loaded again on
//! NOSCRIPT) gets its jobs done, as the README shows it. Its packages come from
//! `npm ci` in tests/producers (scripts/services.sh runs it).

mod common;

use common::{OwnRedis, TestEnv};
use serde_json::json;
use sqlx::PgPool;

#[sqlx::test]
async fn a_node_producer_using_evalsha_gets_its_jobs_done(pool: PgPool) {
    // A Redis of its own: the producer flushes the script cache.
    let redis = OwnRedis::start();
    let env = TestEnv::with_redis(pool, common::FAST_CONFIG, &redis.url).await;
    let _daemon = env.spawn_daemon(&[]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/jobs/src/enqueue.lua");
    let producer = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/producers/enqueue.mjs");
    let output = std::process::Command::new("node")
        .args([producer, &env.redis_url, &env.queue("default"), script])
        .output()
        .expect("node runs (Node 20 or later)");
    assert!(
        output.status.success(),
        "the Node producer failed (npm ci in tests/producers?): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    let [first, again, after_flush, refusal] = lines[..] else {
        panic!("four lines expected: {stdout}");
    };
    assert_eq!(again, format!("{first} 0"), "the idempotency key held");
    assert!(refusal.contains("must be a ULID"), "{refusal}");
    let job = env.wait_for_state(first, "completed").await;
    assert_eq!(job.result, Some(json!({"slept_ms": 10})));
    let job = env.wait_for_state(after_flush, "completed").await;
    assert_eq!(job.result, Some(json!({"slept_ms": 20})));
}
