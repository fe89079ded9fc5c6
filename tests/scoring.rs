//! The `score.*` jobs through Redis and Postgres, and `quizworker score FILE`.

mod common;

use common::TestEnv;
use serde_json::{Value, json};
use sqlx::PgPool;

/// Three one-mark MCQs at -1/3, two topics: totals in thirds.
fn test_v1() -> Value {
    json!({
        "test_id": "t-thirds", "key_version": 1,
        "marking": {"correct": 1, "incorrect": "-1/3"},
        "sections": [{"id": "maths", "questions": [
            {"id": "q1", "type": "mcq", "answer": "A", "topic": "algebra"},
            {"id": "q2", "type": "mcq", "answer": "B", "topic": "algebra"},
            {"id": "q3", "type": "mcq", "answer": "C", "topic": "geometry"}
        ]}]
    })
}

fn attempt(id: &str, candidate: &str, answers: &[(&str, &str)]) -> Value {
    let responses: Vec<Value> = answers
        .iter()
        .map(|(q, a)| json!({"question": q, "answer": a}))
        .collect();
    json!({"attempt_id": id, "test_id": "t-thirds", "candidate_id": candidate,
           "responses": responses})
}

async fn result_marks(env: &TestEnv, attempt_id: &str) -> (String, i32) {
    sqlx::query_as("SELECT marks, key_version FROM score_results WHERE attempt_id = $1")
        .bind(attempt_id)
        .fetch_one(&env.pool)
        .await
        .expect("a stored result")
}

#[sqlx::test]
async fn an_attempt_is_scored_exactly_and_stored_once(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    let _daemon = env.spawn_daemon(&[]);
    let payload = json!({
        "test": test_v1(),
        "attempt": attempt("a-1", "cand-1", &[("q1", "A"), ("q2", "C"), ("q3", "D")]),
        "submitted_at": "2026-11-22T10:00:00Z"
    })
    .to_string();
    let first = env.enqueue("score.attempt", &payload, &[]);
    let job = env.wait_for_state(&first, "completed").await;
    assert_eq!(job.result.as_ref().unwrap()["marks"], "1/3");
    // Scored again (a redelivery, a resubmission): still one result, statistics counted once.
    let second = env.enqueue("score.attempt", &payload, &[]);
    env.wait_for_state(&second, "completed").await;

    let (marks, key_version) = result_marks(&env, "a-1").await;
    assert_eq!((marks.as_str(), key_version), ("1/3", 1));
    let stored: Value =
        sqlx::query_scalar("SELECT result FROM score_results WHERE attempt_id = 'a-1'")
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(stored["lost_to_negatives"], "2/3");
    assert_eq!(
        stored["sections"][0]["questions"][1]["outcome"],
        "incorrect"
    );
    assert_eq!(stored["sections"][0]["questions"][1]["marks"], "-1/3");

    let stats: Vec<(String, String, i64, i64, i64)> = sqlx::query_as(
        "SELECT scope, name, questions_seen, judged, correct FROM score_candidate_statistics
          WHERE candidate_id = 'cand-1' ORDER BY scope, name",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap();
    assert_eq!(
        stats,
        [
            ("section".into(), "maths".into(), 3, 3, 1),
            ("topic".into(), "algebra".into(), 2, 2, 1),
            ("topic".into(), "geometry".into(), 1, 1, 0),
        ]
    );

    // The test is stored now: a later attempt can name it instead of carrying it.
    let by_id = json!({"attempt": attempt("a-2", "cand-1", &[("q1", "A")])}).to_string();
    let third = env.enqueue("score.attempt", &by_id, &[]);
    env.wait_for_state(&third, "completed").await;
    assert_eq!(result_marks(&env, "a-2").await.0, "1");
    let seen: i64 = sqlx::query_scalar(
        "SELECT questions_seen FROM score_candidate_statistics
          WHERE candidate_id = 'cand-1' AND scope = 'section'",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(seen, 6, "two attempts of three questions");
}

#[sqlx::test]
async fn a_bad_attempt_fails_at_once_naming_every_problem(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    let _daemon = env.spawn_daemon(&[]);
    let payload = json!({
        "test": test_v1(),
        "attempt": attempt("a-bad", "cand-1", &[("q1", "Z"), ("q9", "A"), ("q2", "A"), ("q2", "B")]),
    })
    .to_string();
    let id = env.enqueue("score.attempt", &payload, &[]);
    let job = env.wait_for_state(&id, "failed").await;
    assert_eq!(job.attempts, 1, "bad input is not retried");
    let error = job.last_error.unwrap();
    for problem in ["q1", "q9", "q2"] {
        assert!(error.contains(problem), "{error:?} should name {problem}");
    }
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM score_results")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(stored, 0);

    let unknown = json!({"attempt": {"attempt_id": "a-x", "test_id": "nope", "responses": []}});
    let id = env.enqueue("score.attempt", &unknown.to_string(), &[]);
    let error = env.wait_for_state(&id, "failed").await.last_error.unwrap();
    assert!(error.contains("unknown test `nope`"), "{error}");

    // A test that does not hold together fails the job and is not stored for later attempts.
    let mut broken = test_v1();
    broken["test_id"] = json!("t-broken");
    broken["sections"][0]["questions"][0]["answer"] = json!("Z");
    let payload = json!({"test": broken, "attempt": {"attempt_id": "a-y", "responses": []}});
    let id = env.enqueue("score.attempt", &payload.to_string(), &[]);
    let job = env.wait_for_state(&id, "failed").await;
    assert_eq!(job.attempts, 1, "a broken test is not retried");
    assert!(job.last_error.unwrap().contains("q1"));
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM score_tests WHERE test_id = 't-broken'")
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(stored, 0, "a broken test is never stored");
}

/// Attempt `i` of a batch: all right (3), q1 right and q2 wrong (2/3), none answered (0), or
/// all wrong (-1), by `i % 4`.
fn batch_attempt(i: usize) -> (Value, &'static str) {
    let (answers, marks): (&[(&str, &str)], _) = match i % 4 {
        0 => (&[("q1", "A"), ("q2", "B"), ("q3", "C")], "3"),
        1 => (&[("q1", "A"), ("q2", "C")], "2/3"),
        2 => (&[], "0"),
        _ => (&[("q1", "D"), ("q2", "D"), ("q3", "D")], "-1"),
    };
    (
        attempt(&format!("m-{i:03}"), &format!("c-{}", i % 7), answers),
        marks,
    )
}

#[sqlx::test]
async fn attempts_scored_together_are_each_stored_once_with_their_marks(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    let test = serde_json::from_value(test_v1()).unwrap();
    quizworker::families::scoring::store::store_test(&env.pool, &test)
        .await
        .unwrap();
    // Waiting when the daemon starts, the jobs run side by side and their results are written
    // in shared batches; every tenth attempt is sent twice, as a redelivery would.
    let producer = env.producer().await;
    let mut expected = Vec::new();
    for i in 0..300 {
        let (attempt, marks) = batch_attempt(i);
        let job: quizworker_jobs::scoring::ScoreAttempt =
            serde_json::from_value(json!({"attempt": attempt})).unwrap();
        for _ in 0..if i % 10 == 0 { 2 } else { 1 } {
            producer.push(&job).await.unwrap();
        }
        expected.push((format!("m-{i:03}"), marks.to_owned()));
    }
    let _daemon = env.spawn_daemon(&[]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (done, other): (i64, Vec<String>) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE state = 'completed'),
                    coalesce(array_agg(state || ': ' || coalesce(last_error, ''))
                        FILTER (WHERE state NOT IN ('completed', 'queued', 'running')), '{}')
               FROM jobs",
        )
        .fetch_one(&env.pool)
        .await
        .unwrap();
        assert_eq!(
            other,
            Vec::<String>::new(),
            "every job completes at its first attempt"
        );
        if done == 330 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{done} of 330 jobs completed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    let stored: Vec<(String, String)> =
        sqlx::query_as("SELECT attempt_id, marks FROM score_results ORDER BY attempt_id")
            .fetch_all(&env.pool)
            .await
            .unwrap();
    assert_eq!(stored, expected);
    // One section and two topics per attempt, however often it was scored.
    let contributions: Vec<(String, i64)> = sqlx::query_as(
        "SELECT attempt_id, count(*) FROM score_results, json_array_elements(contributions)
          GROUP BY attempt_id HAVING count(*) <> 3",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap();
    assert_eq!(contributions, []);
    let seen: i64 = sqlx::query_scalar(
        "SELECT questions_seen FROM score_candidate_statistics
          WHERE candidate_id = 'c-0' AND scope = 'section'",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(
        seen,
        43 * 3,
        "c-0 made attempts 0, 7, ..., 294, each counted once"
    );
}

/// a: 1/3, b: 3, c: 2, d: 2, e: 0 under key 1.
async fn score_five(env: &TestEnv) {
    let attempts = [
        attempt("a", "c-a", &[("q1", "A"), ("q2", "C"), ("q3", "D")]),
        attempt("b", "c-b", &[("q1", "A"), ("q2", "B"), ("q3", "C")]),
        attempt("c", "c-c", &[("q1", "A"), ("q2", "B")]),
        attempt("d", "c-d", &[("q1", "A"), ("q2", "B")]),
        attempt("e", "c-e", &[]),
    ];
    let ids: Vec<String> = attempts
        .into_iter()
        .map(|a| {
            let payload = json!({"test": test_v1(), "attempt": a}).to_string();
            env.enqueue("score.attempt", &payload, &[])
        })
        .collect();
    for id in &ids {
        env.wait_for_state(id, "completed").await;
    }
}

#[sqlx::test]
async fn a_revised_key_rescores_every_attempt(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    let _daemon = env.spawn_daemon(&[]);
    score_five(&env).await;

    let mut revised = test_v1();
    revised["key_version"] = json!(2);
    revised["sections"][0]["questions"][1]["answer"] = json!("C");
    let id = env.enqueue(
        "score.rescore_test",
        &json!({"test": revised}).to_string(),
        &[],
    );
    let job = env.wait_for_state(&id, "completed").await;
    assert_eq!(job.progress, 100);
    assert_eq!(job.result.unwrap()["rescored"], 5);

    for (attempt, marks) in [
        ("a", "5/3"),
        ("b", "5/3"),
        ("c", "2/3"),
        ("d", "2/3"),
        ("e", "0"),
    ] {
        assert_eq!(
            result_marks(&env, attempt).await,
            (marks.to_owned(), 2),
            "attempt {attempt}"
        );
    }
    // A new attempt that only names the test is scored against the newest key, though the
    // daemon prepared key version 1 for the attempts before (q2 "C": -1/3 under key 1).
    let late = json!({"attempt": attempt("f", "c-f", &[("q2", "C")])}).to_string();
    let late = env.enqueue("score.attempt", &late, &[]);
    env.wait_for_state(&late, "completed").await;
    assert_eq!(result_marks(&env, "f").await, ("1".to_owned(), 2));
    // The same key again changes nothing.
    let again = env.enqueue(
        "score.rescore_test",
        &json!({"test_id": "t-thirds"}).to_string(),
        &[],
    );
    env.wait_for_state(&again, "completed").await;
    assert_eq!(result_marks(&env, "a").await, ("5/3".to_owned(), 2));

    // A different test under a stored key version is refused.
    let mut conflicting = test_v1();
    conflicting["sections"][0]["questions"][0]["answer"] = json!("D");
    let id = env.enqueue(
        "score.rescore_test",
        &json!({"test": conflicting}).to_string(),
        &[],
    );
    let error = env.wait_for_state(&id, "failed").await.last_error.unwrap();
    assert!(
        error.contains("key version 1 of test `t-thirds` is already stored"),
        "{error}"
    );
}

/// A daemon that keeps key version 1 of a test learns of version 2, stored by another process,
/// from the write of its next result, and scores that attempt again against version 2; so does
/// an attempt that still carries version 1.
#[sqlx::test]
async fn a_key_revised_elsewhere_is_used_by_the_next_attempt(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    let _daemon = env.spawn_daemon(&[]);
    score_five(&env).await;
    assert_eq!(result_marks(&env, "a").await, ("1/3".to_owned(), 1));

    let mut revised = test_v1();
    revised["key_version"] = json!(2);
    revised["sections"][0]["questions"][1]["answer"] = json!("C");
    let revised: quizworker_jobs::scoring::TestDef = serde_json::from_value(revised).unwrap();
    quizworker::families::scoring::store::store_test(&env.pool, &revised)
        .await
        .unwrap();

    // q2 "C": -1/3 under key 1, 1 under key 2.
    let named = json!({"attempt": attempt("f", "c-f", &[("q2", "C")])}).to_string();
    let named = env.enqueue("score.attempt", &named, &[]);
    let carrying = json!({"test": test_v1(), "attempt": attempt("g", "c-g", &[("q2", "C")])});
    let carrying = env.enqueue("score.attempt", &carrying.to_string(), &[]);
    for id in [&named, &carrying] {
        let job = env.wait_for_state(id, "completed").await;
        assert_eq!(job.attempts, 1, "a revision is followed within the attempt");
        assert_eq!(job.result.unwrap()["key_version"], 2);
    }
    assert_eq!(result_marks(&env, "f").await, ("1".to_owned(), 2));
    assert_eq!(result_marks(&env, "g").await, ("1".to_owned(), 2));
    // Results stored before the revision wait for a rescore, as before.
    assert_eq!(result_marks(&env, "a").await, ("1/3".to_owned(), 1));
}

#[sqlx::test]
async fn finalizing_ranks_ties_together_with_nta_percentiles(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    let _daemon = env.spawn_daemon(&[]);
    score_five(&env).await;

    let id = env.enqueue("score.finalize_test", r#"{"test_id": "t-thirds"}"#, &[]);
    let job = env.wait_for_state(&id, "completed").await;
    assert_eq!(job.result.unwrap()["candidates"], 5);
    let standings: Vec<(String, i32, String)> = sqlx::query_as(
        "SELECT attempt_id, rank, percentile FROM score_results ORDER BY attempt_id",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap();
    let expected = [
        ("a", 4, "40.0000000"),
        ("b", 1, "100.0000000"),
        ("c", 2, "80.0000000"),
        ("d", 2, "80.0000000"),
        ("e", 5, "20.0000000"),
    ];
    let standings: Vec<(&str, i32, &str)> = standings
        .iter()
        .map(|(a, r, p)| (a.as_str(), *r, p.as_str()))
        .collect();
    assert_eq!(standings, expected);

    let (candidates, statistics): (i32, Value) = sqlx::query_as(
        "SELECT candidates, statistics FROM score_test_reports WHERE test_id = 't-thirds'",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(candidates, 5);
    let text = statistics.to_string();
    // Mean (1/3 + 3 + 2 + 2 + 0) / 5 = 22/15; highest 3; median 2.
    for expected in [r#""22/15""#, r#""highest":"3""#, r#""median":"2""#] {
        assert!(
            text.contains(expected),
            "statistics lack {expected}: {text}"
        );
    }
}

#[test]
fn the_offline_scorer_prints_the_result_or_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.json");
    let request = json!({"test": test_v1(),
                         "attempt": attempt("x", "c", &[("q1", "A"), ("q2", "D")])});
    std::fs::write(&good, request.to_string()).unwrap();
    let output = std::process::Command::new(common::BIN)
        .args(["score", good.to_str().unwrap()])
        .env("QUIZWORKER_CONFIG", dir.path().join("none.toml"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(result["marks"], "2/3");
    assert_eq!(result["max_marks"], "3");

    let bad = dir.path().join("bad.json");
    let request = json!({"test": test_v1(),
                         "attempt": attempt("x", "c", &[("q7", "A"), ("q1", "E")])});
    std::fs::write(&bad, request.to_string()).unwrap();
    let output = std::process::Command::new(common::BIN)
        .args(["score", bad.to_str().unwrap()])
        .env("QUIZWORKER_CONFIG", dir.path().join("none.toml"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("q7") && stderr.contains("q1"), "{stderr}");
}

#[sqlx::test]
async fn a_batch_that_holds_an_attempt_twice_keeps_the_later_one(pool: PgPool) {
    use quizworker::families::scoring::store::{ScoreRow, save_scores, store_test};
    use quizworker_jobs::scoring::{Attempt, PreparedTest, TestDef};

    let env = TestEnv::new(pool).await;
    let test = PreparedTest::new(serde_json::from_value::<TestDef>(test_v1()).unwrap()).unwrap();
    store_test(&env.pool, test.definition()).await.unwrap();
    let row = |value: Value| {
        let attempt: Attempt = serde_json::from_value(value.clone()).unwrap();
        ScoreRow::new(value.to_string(), None, &test.score(&attempt).unwrap()).unwrap()
    };
    let rows = [
        row(attempt("x", "cand-x", &[("q1", "D")])),
        row(attempt("y", "cand-y", &[("q1", "A")])),
        row(attempt("x", "cand-x", &[("q1", "A"), ("q2", "B")])),
    ];
    save_scores(&env.pool, &rows).await.unwrap();

    assert_eq!(result_marks(&env, "x").await.0, "2");
    assert_eq!(result_marks(&env, "y").await.0, "1");
    let judged: i64 = sqlx::query_scalar(
        "SELECT judged FROM score_candidate_statistics
          WHERE candidate_id = 'cand-x' AND scope = 'section'",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(judged, 2, "only the later scoring of x counts");
}

/// Statistics written before they became one row per attempt (migration 5), and then a column
/// of the attempt's result (migration 9), read the same after.
#[sqlx::test(migrations = false)]
async fn statistics_stored_before_the_upgrade_read_the_same_after(pool: PgPool) {
    let all = sqlx::migrate!("./migrations");
    let mut before = sqlx::migrate!("./migrations");
    before.migrations = all.migrations[..4].to_vec().into();
    before.run(&pool).await.unwrap();
    sqlx::raw_sql(
        "INSERT INTO score_attempts (attempt_id, test_id, candidate_id, attempt)
         VALUES ('a', 't', 'c-1', '{}'), ('b', 't', 'c-1', '{}'), ('c', 't', 'c-2', '{}');
         INSERT INTO score_results (attempt_id, test_id, candidate_id, key_version, marks,
                                    max_marks, provisional, result)
         VALUES ('a', 't', 'c-1', 1, '1', '3', false, '{}'),
                ('b', 't', 'c-1', 1, '2', '3', false, '{}'),
                ('c', 't', 'c-2', 1, '0', '3', false, '{}');
         INSERT INTO score_candidate_contributions
                (attempt_id, candidate_id, scope, name, seen, judged, correct)
         VALUES ('a', 'c-1', 'section', 'maths', 3, 3, 1), ('a', 'c-1', 'topic', 'algebra', 2, 2, 1),
                ('b', 'c-1', 'section', 'maths', 3, 2, 2), ('b', 'c-1', 'topic', 'algebra', 2, 1, 1),
                ('c', 'c-2', 'section', 'maths', 3, 0, 0)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let read = || async {
        sqlx::query_as::<_, (String, String, String, i64, i64, i64, i64, Option<String>)>(
            "SELECT candidate_id, scope, name, attempts, questions_seen, judged, correct,
                    accuracy_percent::text
               FROM score_candidate_statistics ORDER BY candidate_id, scope, name",
        )
        .fetch_all(&pool)
        .await
        .unwrap()
    };
    let old = read().await;
    all.run(&pool).await.unwrap();
    assert_eq!(read().await, old);
    let row = |c: &str, s: &str, n: &str, a, q, j, k, p: Option<&str>| {
        (
            c.into(),
            s.into(),
            n.into(),
            a,
            q,
            j,
            k,
            p.map(String::from),
        )
    };
    assert_eq!(
        old,
        [
            row("c-1", "section", "maths", 2, 6, 5, 3, Some("60.00")),
            row("c-1", "topic", "algebra", 2, 4, 3, 2, Some("66.67")),
            row("c-2", "section", "maths", 1, 3, 0, 0, None),
        ]
    );
}

/// Results stored before migration 6 get the sheet a new scoring would write.
#[sqlx::test(migrations = false)]
async fn results_stored_before_the_sheet_column_get_their_sheet(pool: PgPool) {
    use quizworker_jobs::exports::results_sheet::SheetResult;
    use quizworker_jobs::scoring::{Attempt, PreparedTest, TestDef};

    let all = sqlx::migrate!("./migrations");
    let mut before = sqlx::migrate!("./migrations");
    before.migrations = all.migrations[..5].to_vec().into();
    before.run(&pool).await.unwrap();
    let test = PreparedTest::new(serde_json::from_value::<TestDef>(test_v1()).unwrap()).unwrap();
    let attempt: Attempt =
        serde_json::from_value(attempt("old", "c-1", &[("q1", "A"), ("q2", "C")])).unwrap();
    let result = test.score(&attempt).unwrap();
    sqlx::raw_sql("INSERT INTO score_attempts (attempt_id, test_id, attempt) VALUES ('old', 't-thirds', '{}')")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO score_results (attempt_id, test_id, key_version, marks, max_marks,
                                    provisional, result)
         VALUES ('old', 't-thirds', 1, '2/3', '3', false, $1::text::json)",
    )
    .bind(serde_json::to_string(&result).unwrap())
    .execute(&pool)
    .await
    .unwrap();
    all.run(&pool).await.unwrap();
    let sheet: Value =
        sqlx::query_scalar("SELECT sheet FROM score_results WHERE attempt_id = 'old'")
            .fetch_one(&pool)
            .await
            .unwrap();
    let sheet: SheetResult = serde_json::from_value(sheet).unwrap();
    assert_eq!(sheet, SheetResult::from(&result));
    assert_eq!(sheet.marks.to_string(), "2/3");
}
