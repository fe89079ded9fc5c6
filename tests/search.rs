//! The indexing jobs on the Postgres backend, for real: Hindi and mixed Devanagari/Latin
//! documents, typos, quoted phrases and -exclusions through `quizworker_search` and `quizworker
//! search`; versions kept whatever order jobs (and a retry) run in; bad documents named while
//! the good ones are written; a rebuild from a read-only source swapped in while searches and
//! upserts go on, and run once when Redis drops the daemon's connections midway.

mod common;

use std::time::{Duration, Instant};

use common::{DEADLINE, Daemon, FAST_CONFIG, OwnRedis, TestEnv, seen, wait_until};
use serde_json::{Value, json};
use sqlx::PgPool;

/// The `questions` index of these tests; its source is `platform.questions`, read by rebuilds.
const INDEX: &str = r#"
[search]
rebuild_batch = 7

[search.indexes.questions]
searchable = { title = "A", text = "B", options = "C" }
typo_fields = ["title"]
filterable = ["test_id"]
stored = ["lang"]
max_document_bytes = 2048
source = "SELECT id, version, title, text, test_id FROM platform.questions"
"#;

fn config(indexing_queue: &str) -> String {
    format!("{FAST_CONFIG}\n{indexing_queue}\n{INDEX}")
}

const QUEUE: &str = r#"
[queues.indexing]
concurrency = 8
timeout = "60s"
max_attempts = 3
backoff = { base = "500ms", cap = "1s", jitter = 0.0 }
"#;

struct SearchEnv {
    env: TestEnv,
}

impl SearchEnv {
    async fn new(pool: PgPool) -> SearchEnv {
        Self::with_queue(pool, QUEUE).await
    }

    async fn with_queue(pool: PgPool, queue: &str) -> SearchEnv {
        SearchEnv {
            env: TestEnv::with_config(pool, &config(queue)).await,
        }
    }

    fn daemon(&self) -> Daemon {
        // The platform's tables live in a schema of the test's own database.
        self.env.spawn_daemon_with(
            &[],
            &[("PLATFORM_DATABASE_URL", self.env.database_url.as_str())],
        )
    }

    fn upsert(&self, documents: Value) -> String {
        self.env.enqueue(
            "index.upsert",
            &json!({"index": "questions", "documents": documents}).to_string(),
            &[],
        )
    }

    fn delete(&self, deletions: Value) -> String {
        self.env.enqueue(
            "index.delete",
            &json!({"index": "questions", "deletions": deletions}).to_string(),
            &[],
        )
    }

    async fn completed(&self, id: &str) -> Value {
        self.env
            .wait_for_state(id, "completed")
            .await
            .result
            .expect("a completed job has a result")
    }

    /// The ids `quizworker_search` returns, best first.
    async fn ids(&self, query: &str, filters: Value) -> Vec<String> {
        sqlx::query_scalar("SELECT id FROM quizworker_search('questions', $1, $2, 50, 0)")
            .bind(query)
            .bind(filters)
            .fetch_all(&self.env.pool)
            .await
            .unwrap()
    }

    /// Runs a CLI command with the platform's database URL set.
    fn cli(&self, args: &[&str]) -> std::process::Output {
        self.env
            .command()
            .env("PLATFORM_DATABASE_URL", &self.env.database_url)
            .args(args)
            .output()
            .unwrap()
    }
}

fn question(id: &str, version: u64, title: &str, text: &str, test_id: &str) -> Value {
    json!({"id": id, "version": version, "title": title, "text": text, "test_id": test_id})
}

#[sqlx::test(migrations = false)]
async fn hindi_mixed_scripts_typos_phrases_and_exclusions_are_found(pool: PgPool) {
    let t = SearchEnv::new(pool).await;
    let _daemon = t.daemon();
    let job = t.upsert(json!([
        question("q1", 1, "Photosynthesis", "How do plants make food from light?", "t1"),
        question("q2", 1, "प्रकाश संश्लेषण", "पौधे प्रकाश से भोजन कैसे बनाते हैं?", "t2"),
        question("q3", 1, "Photosynthesis (प्रकाश संश्लेषण)", "Chlorophyll और सूर्य का प्रकाश", "t2"),
        question("q4", 1, "Gravity", "Why do apples fall from trees to the ground?", "t1"),
        {"id": 5, "version": 1, "title": "Food chains", "options": ["grass", "deer", "tiger"],
         "lang": "en"},
    ]));
    let result = t.completed(&job).await;
    assert_eq!(
        (
            result["documents"].as_u64(),
            result["written"].as_u64(),
            result["stale"].as_u64()
        ),
        (Some(5), Some(5), Some(0)),
        "{result}"
    );

    // Hindi, with the `simple` configuration: each word as written, matras and all.
    assert_eq!(t.ids("संश्लेषण", json!({})).await, ["q2", "q3"]);
    assert_eq!(t.ids("भोजन", json!({})).await, ["q2"]);
    // Mixed Devanagari and Latin in one query and one document.
    assert_eq!(t.ids("chlorophyll प्रकाश", json!({})).await, ["q3"]);
    // A typo in a title still finds it (pg_trgm); the title weighs most.
    let typo = t.ids("photosynthsis", json!({})).await;
    assert!(typo.contains(&"q1".to_owned()), "{typo:?}");
    assert!(!typo.contains(&"q4".to_owned()), "{typo:?}");
    // -exclusion and quoted phrases (websearch_to_tsquery).
    assert_eq!(t.ids("photosynthesis -plants", json!({})).await, ["q3"]);
    assert_eq!(t.ids("\"make food\"", json!({})).await, ["q1"]);
    assert!(t.ids("\"food make\"", json!({})).await.is_empty());
    assert_eq!(t.ids("apples or tiger", json!({})).await.len(), 2);
    // Options (an array, weight C) are searched; an integer id comes back as text.
    assert_eq!(t.ids("deer", json!({})).await, ["5"]);
    // Filters on a filterable field.
    assert_eq!(
        t.ids("photosynthesis", json!({"test_id": "t2"})).await,
        ["q3"]
    );
    // No input is a syntax error.
    for query in ["\"", "-", "((( or", "'; DROP TABLE x; --", ""] {
        t.ids(query, json!({})).await;
    }
    // A filter on a field that is not filterable is refused, naming it.
    let err =
        sqlx::query("SELECT * FROM quizworker_search('questions', 'x', '{\"lang\": \"en\"}')")
            .execute(&t.env.pool)
            .await
            .unwrap_err()
            .to_string();
    assert!(
        err.contains("\"lang\" is not a filterable field of index \"questions\""),
        "{err}"
    );

    // The CLI shows the same, with the matched words marked in the snippet.
    let hits = t.env.cli_json(&["search", "questions", "भोजन", "--json"]);
    assert_eq!(hits[0]["id"], "q2", "{hits}");
    let snippet = hits[0]["snippet"].as_str().unwrap();
    assert!(snippet.contains("<mark>भोजन</mark>"), "{snippet}");
    assert_eq!(hits[0]["document"]["test_id"], "t2");
    let table = t
        .env
        .cli_ok(&["search", "questions", "gravity", "--filter", "test_id=t1"]);
    assert!(
        table.contains("q4") && table.contains("<mark>Gravity</mark>"),
        "{table}"
    );
    let out = t.env.cli(&["search", "nope", "x"]);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown index `nope` (indexes in [search.indexes]: questions)"),
        "{err}"
    );
}

#[sqlx::test(migrations = false)]
async fn an_older_version_never_overwrites_a_newer_one_whatever_order_jobs_run_in(pool: PgPool) {
    // A short timeout, so that an attempt held on a lock times out, and a retry 3 s later.
    let queue = QUEUE
        .replace("timeout = \"60s\"", "timeout = \"2s\"")
        .replace(
            "base = \"500ms\", cap = \"1s\"",
            "base = \"3s\", cap = \"3s\"",
        );
    let t = SearchEnv::with_queue(pool, &queue).await;
    let _daemon = t.daemon();
    let first = t.upsert(json!([question("q1", 1, "Version one", "first", "t1")]));
    t.completed(&first).await;

    // The index held by another transaction: the upsert of version 2 cannot write, times out
    // and waits for its retry.
    let mut blocker = t.env.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM search_indexes WHERE name = 'questions' FOR UPDATE")
        .execute(&mut *blocker)
        .await
        .unwrap();
    let delayed = t.upsert(json!([question("q1", 2, "Version two", "second", "t1")]));
    t.env.wait_for_state(&delayed, "retrying").await;
    blocker.commit().await.unwrap();
    // Version 3 arrives and is written before the retry of version 2 runs.
    let newer = t.upsert(json!([question("q1", 3, "Version three", "third", "t1")]));
    assert_eq!(t.completed(&newer).await["written"], 1);
    let retried = t.completed(&delayed).await;
    assert_eq!(
        (retried["written"].as_u64(), retried["stale"].as_u64()),
        (Some(0), Some(1))
    );
    assert_eq!(t.env.attempts(&delayed).await.len(), 2, "it was a retry");
    assert_eq!(t.ids("three", json!({})).await, ["q1"]);
    assert!(t.ids("two", json!({})).await.is_empty());

    // A deletion carries its version: an older upsert arriving after it stays out, a newer one
    // brings the document back.
    let deleted = t.delete(json!([{"id": "q1", "version": 5}]));
    assert_eq!(t.completed(&deleted).await["written"], 1);
    assert!(t.ids("three", json!({})).await.is_empty());
    let late = t.upsert(json!([question("q1", 4, "Version four", "late", "t1")]));
    assert_eq!(t.completed(&late).await["stale"], 1);
    assert!(t.ids("four", json!({})).await.is_empty());
    let revived = t.upsert(json!([question("q1", 6, "Version six", "back", "t1")]));
    assert_eq!(t.completed(&revived).await["written"], 1);
    assert_eq!(t.ids("six", json!({})).await, ["q1"]);

    // Within one job, the newest of an id wins; the same version again changes nothing.
    let same = t.upsert(json!([
        question("q2", 9, "Nine", "x", "t1"),
        question("q2", 8, "Eight", "x", "t1"),
        question("q1", 6, "Version six again", "x", "t1"),
    ]));
    let result = t.completed(&same).await;
    assert_eq!(
        (result["written"].as_u64(), result["stale"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(t.ids("nine", json!({})).await, ["q2"]);
    assert!(t.ids("eight", json!({})).await.is_empty());
}

#[sqlx::test(migrations = false)]
async fn bad_documents_fail_the_job_by_name_while_the_good_ones_are_written(pool: PgPool) {
    let t = SearchEnv::new(pool).await;
    let _daemon = t.daemon();
    let job = t.upsert(json!([
        question("good-1", 1, "Mitochondria", "the powerhouse", "t1"),
        {"version": 1, "title": "no id"},
        {"id": "q3", "version": 1, "title": "Colour", "colour": "red"},
        question("good-2", 1, "Ribosomes", "make proteins", "t1"),
        {"id": "q5", "version": 1, "text": "x".repeat(3000)},
        "not an object",
        {"id": "q7", "title": "no version"},
    ]));
    let failed = t.env.wait_for_state(&job, "failed").await;
    assert_eq!(failed.attempts, 1, "no retry mends bad documents");
    let error = failed.last_error.unwrap();
    for expected in [
        "index `questions`: 2 of 7 documents written (0 stale), but 5 were refused",
        "documents[1]: has no `id` (the index's primary key)",
        "documents[2] (id `q3`): field `colour` is not in the index's schema (the index is strict)",
        "documents[4] (id `q5`): is 3033 bytes, more than the index's max_document_bytes = 2048",
        "documents[5]: is not a JSON object",
        "documents[6] (id `q7`): has no `version` (the index's version field)",
    ] {
        assert!(error.contains(expected), "{expected:?} not in {error}");
    }
    assert_eq!(t.ids("mitochondria or ribosomes", json!({})).await.len(), 2);

    let unknown = t.env.enqueue(
        "index.upsert",
        &json!({"index": "answers", "documents": [question("a", 1, "x", "x", "t")]}).to_string(),
        &[],
    );
    let failed = t.env.wait_for_state(&unknown, "failed").await;
    assert_eq!(
        failed.last_error.unwrap(),
        "unknown index `answers` (indexes in [search.indexes]: questions)"
    );
    let bad_deletion = t.delete(json!([{"id": "good-1", "version": 2}, {"id": "x"}]));
    let error = t
        .env
        .wait_for_state(&bad_deletion, "failed")
        .await
        .last_error
        .unwrap();
    assert!(error.contains("1 of 2 deletions written"), "{error}");
    assert!(
        error.contains("deletions[1] (id `x`): has no `version`"),
        "{error}"
    );
    assert_eq!(
        t.ids("mitochondria or ribosomes", json!({})).await,
        ["good-2"]
    );
}

/// The platform's `questions`, `count` rows, each with the word "common" and version 10.
async fn platform(pool: &PgPool, count: usize) {
    sqlx::raw_sql(
        "CREATE SCHEMA platform;
         CREATE TABLE platform.questions (id text PRIMARY KEY, version bigint NOT NULL,
                                          title text NOT NULL, text text NOT NULL,
                                          test_id text NOT NULL);
         CREATE TABLE platform.audit (at timestamptz NOT NULL DEFAULT now());
         CREATE FUNCTION platform.audited() RETURNS boolean LANGUAGE plpgsql AS
           $$ BEGIN INSERT INTO platform.audit DEFAULT VALUES; RETURN true; END $$;",
    )
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO platform.questions
         SELECT 'p' || i, 10, 'Question ' || i || ' common', 'source text ' || i, 't1'
           FROM generate_series(1, $1) AS i",
    )
    .bind(count as i64)
    .execute(pool)
    .await
    .unwrap();
}

#[sqlx::test(migrations = false)]
async fn a_rebuild_swaps_in_the_source_while_searches_and_upserts_go_on(pool: PgPool) {
    let queue = QUEUE.to_owned();
    let t = SearchEnv::with_queue(pool.clone(), &queue).await;
    platform(&pool, 300).await;
    // Slow the source down (5 ms a row, read twice: counted, then streamed) so that the
    // rebuild takes a few seconds.
    let slow = "SELECT id, version, title, text, test_id FROM platform.questions \
                WHERE pg_sleep(0.005)::text = ''";
    let config = config(QUEUE).replace(
        "SELECT id, version, title, text, test_id FROM platform.questions",
        slow,
    );
    std::fs::write(t.env.dir.path().join("config.toml"), config).unwrap();
    let _daemon = t.daemon();

    // The live index before: an old p1, a document the source no longer has, and p2 newer
    // than the source's.
    let before = t.upsert(json!([
        question("p1", 1, "Old one common", "old", "t1"),
        question("gone", 1, "Removed common", "old", "t1"),
        question("p2", 50, "Newer than the source common", "kept", "t1"),
    ]));
    t.completed(&before).await;

    let rebuild = t
        .env
        .enqueue("index.rebuild", r#"{"index": "questions"}"#, &[]);
    // Once it has written some batches: an upsert and a deletion during the rebuild.
    let start = Instant::now();
    while t.env.job(&rebuild).await.map(|j| j.progress).unwrap_or(0) < 10 {
        assert!(start.elapsed() < DEADLINE, "{}", t.env.daemon_logs());
        assert!(
            !t.ids("common", json!({})).await.is_empty(),
            "search went empty"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let during = t.upsert(json!([question(
        "p299",
        99,
        "Written during the rebuild common",
        "new",
        "t1"
    )]));
    let deleted = t.delete(json!([{"id": "p300", "version": 99}]));
    t.completed(&during).await;
    t.completed(&deleted).await;
    let rebuilding = t.env.job(&rebuild).await.unwrap();
    assert_eq!(
        rebuilding.state, "running",
        "both landed during the rebuild"
    );
    // Searches read the live index throughout.
    let mut searches = 0;
    while t.env.job(&rebuild).await.unwrap().state != "completed" {
        assert!(start.elapsed() < DEADLINE * 2, "{}", t.env.daemon_logs());
        let hits = t.ids("common", json!({})).await;
        assert!(!hits.is_empty(), "search went empty during the rebuild");
        searches += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        searches > 3,
        "the rebuild was over too soon to search during it"
    );
    let result = t.completed(&rebuild).await;
    assert_eq!(result["rows"], 300, "{result}");
    assert_eq!(
        result["documents"], 299,
        "p1 to p300 less p300, deleted: {result}"
    );
    assert_eq!(result["bad"], 0);

    let count = |query: &'static str| {
        let pool = t.env.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM quizworker_search('questions', $1, '{}', 100, 0)",
            )
            .bind(query)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    assert_eq!(
        t.ids("removed", json!({})).await,
        Vec::<String>::new(),
        "not in the source"
    );
    assert_eq!(
        t.ids("\"question 1 common\"", json!({})).await,
        ["p1"],
        "the source's p1"
    );
    assert_eq!(
        t.ids("newer", json!({})).await,
        ["p2"],
        "a live version newer than the source's is kept"
    );
    assert_eq!(
        t.ids("during", json!({})).await,
        ["p299"],
        "the upsert during the rebuild is not lost"
    );
    assert!(
        t.ids("\"question 300\"", json!({})).await.is_empty(),
        "nor the deletion"
    );
    assert_eq!(count("source").await, 100, "a page is at most 100");
    // The old generation is gone, and only one build is live.
    let generations: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT generation) FROM search_documents WHERE index_name = 'questions'",
    )
    .fetch_one(&t.env.pool)
    .await
    .unwrap();
    assert_eq!(generations, 1);
}

#[sqlx::test(migrations = false)]
async fn quizworker_index_rebuild_reads_the_source_read_only(pool: PgPool) {
    let t = SearchEnv::new(pool.clone()).await;
    platform(&pool, 25).await;
    t.env.cli_ok(&["migrate"]);

    let out = t.cli(&["index", "rebuild", "questions", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rebuilt: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (rebuilt["rows"].as_u64(), rebuilt["documents"].as_u64()),
        (Some(25), Some(25))
    );
    let progress = String::from_utf8_lossy(&out.stderr);
    assert!(
        progress.contains("100% 25 rows read, 25 documents live"),
        "{progress}"
    );
    assert_eq!(t.ids("common", json!({})).await.len(), 25);

    // A source that writes: refused by the read-only connection, the live index kept.
    let writing = config(QUEUE).replace(
        "FROM platform.questions\"",
        "FROM platform.questions WHERE platform.audited()\"",
    );
    std::fs::write(t.env.dir.path().join("config.toml"), writing).unwrap();
    let out = t.cli(&["index", "rebuild", "questions"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot execute INSERT in a read-only transaction"),
        "{err}"
    );
    let audit: i64 = sqlx::query_scalar("SELECT count(*) FROM platform.audit")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(audit, 0);
    assert_eq!(
        t.ids("common", json!({})).await.len(),
        25,
        "the live index is kept"
    );

    // An empty source is never swapped in.
    sqlx::query("DELETE FROM platform.questions")
        .execute(&pool)
        .await
        .unwrap();
    std::fs::write(t.env.dir.path().join("config.toml"), config(QUEUE)).unwrap();
    let out = t.cli(&["index", "rebuild", "questions"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("returned no rows; the live index is kept"),
        "{err}"
    );
    assert_eq!(t.ids("common", json!({})).await.len(), 25);
    // Without the platform's URL, the error says which variable to set.
    let out = t.env.cli(&["index", "rebuild", "questions"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("PLATFORM_DATABASE_URL (search.source.url_env), which is not set"),
        "{err}"
    );
}

/// A rebuild that finds another under way (here the test holds the index's rebuild lock, as a
/// long rebuild in another process would) waits for it without using up its attempts, however
/// long it lasts, and then rebuilds; the CLI's rebuild says why it cannot start.
#[sqlx::test(migrations = false)]
async fn a_rebuild_waits_for_the_one_under_way_without_using_up_its_attempts(pool: PgPool) {
    let t = SearchEnv::new(pool.clone()).await;
    platform(&pool, 10).await;
    t.env.cli_ok(&["migrate"]);
    let mut other = pool.acquire().await.unwrap().detach();
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
        .bind("quizworker:search-rebuild:questions")
        .fetch_one(&mut other)
        .await
        .unwrap();
    assert!(locked);

    let out = t.cli(&["index", "rebuild", "questions"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        err.contains("a rebuild of index `questions` is already under way"),
        "{err}"
    );
    assert!(!err.contains("runs again at"), "{err}");

    let _daemon = t.daemon();
    let rebuild = t
        .env
        .enqueue("index.rebuild", r#"{"index": "questions"}"#, &[]);
    // As many waits as the queue's 3 attempts, and the job still waits: none was a failure.
    wait_until("3 attempts", DEADLINE, async || {
        let attempts = t.env.attempts(&rebuild).await;
        seen(attempts.len() >= 3, || format!("{attempts:?}"))
    })
    .await;
    let job = t.env.job(&rebuild).await.unwrap();
    assert_eq!(job.state, "scheduled", "{job:?}");
    for attempt in t.env.attempts(&rebuild).await {
        assert_eq!(attempt.outcome, "snoozed", "{attempt:?}");
        assert!(
            attempt
                .error
                .as_deref()
                .is_some_and(|e| e.contains("already under way; this one waits for it to end")),
            "{attempt:?}"
        );
    }
    let written: i64 = sqlx::query_scalar("SELECT count(*) FROM search_documents")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        written, 0,
        "nothing is built while the other rebuild holds the index"
    );

    sqlx::Connection::close(other).await.unwrap();
    let result = t.completed(&rebuild).await;
    assert_eq!(result["documents"], 10, "{result}");
    assert_eq!(t.ids("common", json!({})).await.len(), 10);
}

/// Redis drops every connection of the daemon (a failover, CLIENT KILL) in the middle of a
/// rebuild: the rebuild runs on in its process, is not run a second time beside itself, and
/// swaps in the whole source once.
#[sqlx::test(migrations = false)]
async fn redis_connections_killed_mid_rebuild_run_it_once(pool: PgPool) {
    // A Redis of its own: killing every client of the shared one would hit other tests.
    let redis = OwnRedis::start();
    let slow = "SELECT id, version, title, text, test_id FROM platform.questions \
                WHERE pg_sleep(0.005)::text = ''";
    let config = config(QUEUE).replace(
        "SELECT id, version, title, text, test_id FROM platform.questions",
        slow,
    );
    let t = SearchEnv {
        env: TestEnv::with_redis(pool.clone(), &config, &redis.url).await,
    };
    platform(&pool, 300).await;
    let daemon = t.daemon();

    let rebuild = t
        .env
        .enqueue("index.rebuild", r#"{"index": "questions"}"#, &[]);
    t.env.wait_for_progress(&rebuild, 10).await;
    t.env.kill_redis_connections().await;
    daemon.wait_for_log("the worker died");
    let during = t.upsert(json!([question(
        "p7",
        99,
        "Written after the cut common",
        "new",
        "t1"
    )]));

    let result = t.completed(&rebuild).await;
    let job = t.env.job(&rebuild).await.unwrap();
    assert_eq!(
        job.attempts,
        1,
        "the rebuild ran once\n{}",
        daemon.log_text()
    );
    assert_eq!(
        (result["rows"].as_u64(), result["documents"].as_u64()),
        (Some(300), Some(300)),
        "{result}"
    );
    t.completed(&during).await;
    assert_eq!(t.ids("cut", json!({})).await, ["p7"], "the upsert is kept");
    assert_eq!(t.ids("common", json!({})).await.len(), 50, "a page of 50");
    let (live, generations): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT generation) FROM search_documents
          WHERE index_name = 'questions'",
    )
    .fetch_one(&t.env.pool)
    .await
    .unwrap();
    assert_eq!((live, generations), (300, 1));
    assert!(
        !daemon.log_text().contains("second delivery"),
        "{}",
        daemon.log_text()
    );
}
