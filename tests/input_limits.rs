//! Input that is valid but extreme, or over the daemon's limits, through the real daemon: a
//! test whose marks lie a trillion apart, jobs over `[limits]`, large bad input that errors
//! must not copy, and what the enqueue script makes of envelopes JSON.stringify writes.

mod common;

use common::{DEADLINE, TestEnv, seen, wait_until};
use quizworker_jobs::{ENQUEUE_SCRIPT, Envelope};
use serde_json::json;
use sqlx::PgPool;

/// The most an error may be that quotes a large input: the input named, not copied.
const SHORT_ERROR: usize = 700;

/// Runs the protocol's enqueue script, as any producer does.
async fn enqueue_script(
    env: &TestEnv,
    queue: &str,
    envelope: &str,
) -> redis::RedisResult<(String, i64)> {
    redis::Script::new(ENQUEUE_SCRIPT)
        .arg(env.queue(queue))
        .arg(envelope)
        .invoke_async(&mut env.redis.clone())
        .await
}

/// An envelope's text around a payload given as JSON text, so that a test controls every byte.
fn envelope_text(id: &str, kind: &str, payload: &str) -> String {
    format!(
        r#"{{"v":1,"id":"{id}","kind":"{kind}","payload":{payload},"created_at":"2026-11-22T10:00:00Z"}}"#
    )
}

fn new_id() -> String {
    ulid::Ulid::new().to_string()
}

async fn journaled_kind_and_payload_bytes(env: &TestEnv, id: &str) -> (String, i32) {
    sqlx::query_as("SELECT kind, length(payload::text) FROM jobs WHERE id = $1")
        .bind(id)
        .fetch_one(&env.pool)
        .await
        .expect("the job is journaled")
}

async fn in_redis_data(env: &TestEnv, queue: &str, id: &str) -> bool {
    env.redis_cmd(
        redis::cmd("HEXISTS")
            .arg(format!("{}:data", env.queue(queue)))
            .arg(id),
    )
    .await
}

/// Waits until Redis' payload hash of `queue` no longer holds `id` (maintenance trimmed it).
async fn wait_until_trimmed(env: &TestEnv, queue: &str, id: &str) {
    wait_until(&format!("maintenance trims {id}"), DEADLINE, async || {
        let held = in_redis_data(env, queue, id).await;
        seen(!held, || format!("Redis holds it\n{}", env.daemon_logs()))
    })
    .await
}

#[sqlx::test]
async fn a_test_report_of_marks_a_trillion_apart_is_drawn_and_the_daemon_lives(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    let mut daemon = env.spawn_daemon_with_exports();
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
    common::tool("qpdf", &["--check", path]);
    let text = common::tool("pdftotext", &["-enc", "UTF-8", path, "-"]);
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

const KIND_LIMIT_CONFIG: &str = "
[limits]
max_kind_bytes = 40
";

#[sqlx::test]
async fn jobs_over_a_limit_fail_at_once_naming_the_limit_and_its_value(pool: PgPool) {
    let config = format!("{}{KIND_LIMIT_CONFIG}", common::FAST_CONFIG);
    let env = TestEnv::with_config(pool, &config).await;
    let mut daemon = env.spawn_daemon(&[]);
    let filler = "x".repeat(5 * 1024 * 1024);
    let deep = |depth: usize| "[".repeat(depth) + &"]".repeat(depth);
    let cases = [
        (
            "diag.noop".to_owned(),
            format!(r#"{{"note": "{filler}"}}"#),
            "more than limits.max_job_bytes = 1048576",
        ),
        (
            "diag.noop".to_owned(),
            deep(100),
            "the job nests arrays and objects more than limits.max_json_depth = 64 deep",
        ),
        // Deeper than serde_json's own limit (128), within the script's (1000).
        (
            "diag.noop".to_owned(),
            deep(200),
            "the job nests arrays and objects more than limits.max_json_depth = 64 deep",
        ),
        (
            format!("diag.{}", "k".repeat(36)),
            "{}".to_owned(),
            "is 41 bytes long, more than limits.max_kind_bytes = 40",
        ),
    ];
    let mut ids = Vec::new();
    let mut sizes = Vec::new();
    for (kind, payload, _) in &cases {
        let id = new_id();
        let text = envelope_text(&id, kind, payload);
        let (_, created) = enqueue_script(&env, "default", &text)
            .await
            .expect("the script takes it: the limits are the daemon's");
        assert_eq!(created, 1);
        ids.push(id);
        sizes.push(text.len());
    }
    for (id, (_, _, expected)) in ids.iter().zip(&cases) {
        let job = env.wait_for_state(id, "failed").await;
        let error = job.last_error.expect("an error");
        assert!(
            error.contains(expected),
            "{error:?} should say {expected:?}"
        );
        assert!(error.len() < SHORT_ERROR, "{} bytes: {error}", error.len());
        assert_eq!(job.attempts, 1, "failed at once");
        let attempts = env.attempts(id).await;
        assert_eq!(attempts.len(), 1);
        assert_eq!(attempts[0].error.as_deref(), Some(error.as_str()));
        let (kind, payload_bytes) = journaled_kind_and_payload_bytes(&env, id).await;
        assert_eq!(kind, "(malformed)");
        assert!(
            payload_bytes < 2 * 1024 * 1024,
            "{payload_bytes} bytes journaled"
        );
    }
    let (_, oversized) = journaled_kind_and_payload_bytes(&env, &ids[0]).await;
    assert!(
        oversized < 4096,
        "the journal keeps {oversized} bytes of a 5 MB job"
    );
    let error = env.job(&ids[0]).await.unwrap().last_error.unwrap();
    let size = format!("the job is {} bytes", sizes[0]);
    assert!(error.contains(&size), "{error:?} should say {size:?}");

    let after = env.enqueue("diag.noop", "{}", &[]);
    env.wait_for_state(&after, "completed").await;
    assert!(
        daemon.child.try_wait().unwrap().is_none(),
        "the daemon lives"
    );
    let log = daemon.log_text();
    assert!(
        !log.contains(&"x".repeat(300)),
        "the log copies the payload"
    );
    assert!(log.len() < 64 * 1024, "the log is {} bytes", log.len());
}

#[sqlx::test]
async fn errors_quote_only_a_short_part_of_a_large_bad_input(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    let daemon = env.spawn_daemon_with_exports();
    let big = "9".repeat(800_000);
    let test = json!({
        "test_id": "quiz", "key_version": 1, "marking": {"correct": 1},
        "sections": [{"id": "s", "questions": [{"id": "q1", "type": "integer", "answer": "5"}]}]
    });
    // Sent with the script: the CLI checks payloads, and the OS refuses arguments this long.
    let cases = [
        (
            "diag.sleep",
            json!({"ms": big}),
            "the payload does not match kind `diag.sleep`: invalid type: string \"9999",
        ),
        (
            "score.attempt",
            json!({"test": test, "attempt": {"attempt_id": "a1",
                   "responses": [{"question": "q1", "answer": format!("{big}x")}]}}),
            "x` is not a number (write digits",
        ),
        (
            "export.report_pdf",
            json!({"attempt_id": big}),
            "unknown attempt `9999",
        ),
    ];
    for (kind, payload, expected) in cases {
        let id = new_id();
        let queue = quizworker_jobs::catalogue::default_queue(kind).unwrap();
        let text = envelope_text(&id, kind, &payload.to_string());
        enqueue_script(&env, queue.name(), &text).await.unwrap();
        let job = env.wait_for_state(&id, "failed").await;
        let error = job.last_error.expect("an error");
        assert!(
            error.contains(expected),
            "{kind}: {error:?} should say {expected:?}"
        );
        assert!(error.contains("bytes cut]"), "{kind}: {error}");
        assert!(
            error.len() < SHORT_ERROR,
            "{kind}: {} bytes: {error}",
            error.len()
        );
        assert_eq!(job.attempts, 1, "{kind}: bad input is not retried");
    }
    assert!(
        !daemon.log_text().contains(&"9".repeat(300)),
        "the log copies the input"
    );
}

#[sqlx::test]
async fn the_enqueue_script_says_what_is_wrong_with_an_envelope(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    let deep = format!(
        r#"{{"v":1,"payload":{}{}}}"#,
        "[".repeat(1001),
        "]".repeat(1001)
    );
    // Matched after "quizworker:", which the Redis client reads as the error's code.
    let cases = [
        (
            "not json",
            "the envelope is not valid JSON (cjson: Expected value but found invalid token at character 1)",
        ),
        ("42", "the envelope is not a JSON object"),
        (
            deep.as_str(),
            "the envelope nests arrays and objects deeper than the script's JSON decoder allows (cjson: Found too many nested data structures (1001)",
        ),
    ];
    for (envelope, expected) in cases {
        let err = enqueue_script(&env, "default", envelope)
            .await
            .expect_err("refused");
        let message = err.to_string();
        assert!(
            message.contains(expected),
            "{message:?} should say {expected:?}"
        );
    }
    let stored: i64 = env
        .redis_cmd(redis::cmd("HLEN").arg(format!("{}:data", env.queue("default"))))
        .await;
    assert_eq!(stored, 0, "nothing is written");
}

#[sqlx::test]
async fn text_cut_in_the_middle_of_an_emoji_arrives_as_a_replacement_character(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    let _daemon = env.spawn_daemon(&[]);
    let payload = json!({
        "test": {"test_id": "essay", "key_version": 1, "marking": {"correct": 1},
                 "sections": [{"id": "s", "questions": [
                     {"id": "q1", "type": "mcq", "answer": "A"},
                     {"id": "e1", "type": "subjective", "max_marks": 5}]}]},
        "attempt": {"attempt_id": "essay-1", "candidate_id": "CANDIDATE",
                    "responses": [{"question": "q1", "answer": "A"},
                                  {"question": "e1", "answer": "ANSWER"}]}
    })
    .to_string()
    // What JSON.stringify writes: a seedling (a surrogate pair), then an emoji cut in half
    // (a lone high surrogate); and a name that merely spells an escape.
    .replace("ANSWER", r"Plants \ud83c\udf31 need light \ud83d")
    .replace("CANDIDATE", r"cand \\ud83d");
    let id = new_id();
    let (_, created) = enqueue_script(
        &env,
        "scoring",
        &envelope_text(&id, "score.attempt", &payload),
    )
    .await
    .expect("a lone surrogate is taken");
    assert_eq!(created, 1);
    let stored: String = env
        .redis_cmd(
            redis::cmd("HGET")
                .arg(format!("{}:data", env.queue("scoring")))
                .arg(&id),
        )
        .await;
    assert!(
        stored.contains(r"Plants \ud83c\udf31 need light \ufffd"),
        "{stored}"
    );

    env.wait_for_state(&id, "completed").await;
    let (answer, candidate): (String, String) = sqlx::query_as(
        "SELECT attempt->'responses'->1->>'answer', candidate_id FROM score_attempts
          WHERE attempt_id = 'essay-1'",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(answer, "Plants \u{1F331} need light \u{FFFD}");
    assert_eq!(candidate, r"cand \ud83d", "an escaped backslash is text");
}

const FAST_MAINTENANCE: &str = r#"
[maintenance]
interval = "300ms"
"#;

#[sqlx::test]
async fn a_finished_job_sent_again_after_trimming_is_written_but_not_run(pool: PgPool) {
    let config = format!("{}{FAST_MAINTENANCE}", common::FAST_CONFIG);
    let env = TestEnv::with_config(pool, &config).await;
    let _daemon = env.spawn_daemon(&[]);
    let envelope = Envelope::new(&quizworker_jobs::diag::Noop {}, chrono::Utc::now())
        .unwrap()
        .encode();
    let (id, created) = enqueue_script(&env, "default", &envelope).await.unwrap();
    assert_eq!(created, 1);
    env.wait_for_state(&id, "completed").await;
    wait_until_trimmed(&env, "default", &id).await;

    // As docs/PROTOCOL.md (section 3) says: the script sees Redis only, so it writes the job
    // again and says so; the journal keeps the job from running twice.
    let (again, created) = enqueue_script(&env, "default", &envelope).await.unwrap();
    assert_eq!((again.as_str(), created), (id.as_str(), 1));
    // Trimmed again only once a worker took it and acknowledged it.
    wait_until_trimmed(&env, "default", &id).await;
    let job = env.job(&id).await.unwrap();
    assert_eq!((job.state.as_str(), job.attempts), ("completed", 1));
    assert_eq!(env.attempts(&id).await.len(), 1, "it ran once");
}
