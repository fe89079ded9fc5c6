//! The indexing jobs on the Meilisearch backend, against a local HTTP server (wiremock) that
//! follows Meilisearch's documented API: every write answers 202 with a task that goes
//! enqueued -> processing -> succeeded or failed (`GET /tasks/{uid}`), tasks run in the order
//! they were enqueued, 429 when throttled, `POST /swap-indexes`, and the key in
//! `Authorization: Bearer`.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use common::{Daemon, FAST_CONFIG, TestEnv};
use serde_json::{Value, json};
use sqlx::PgPool;
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const KEY: &str = "test-master-key";

#[derive(Default)]
struct Index {
    primary_key: Option<String>,
    settings: Value,
    documents: BTreeMap<String, Value>,
}

#[derive(Clone)]
enum Op {
    CreateIndex {
        uid: String,
        primary_key: String,
    },
    Settings {
        uid: String,
        settings: Value,
    },
    AddDocuments {
        uid: String,
        primary_key: Option<String>,
        documents: Vec<Value>,
    },
    DeleteDocuments {
        uid: String,
        ids: Vec<String>,
    },
    Swap {
        a: String,
        b: String,
    },
    DeleteIndex {
        uid: String,
    },
}

struct Task {
    kind: &'static str,
    index_uid: Option<String>,
    status: &'static str,
    op: Op,
    error: Option<Value>,
}

#[derive(Default)]
struct State {
    indexes: BTreeMap<String, Index>,
    tasks: Vec<Task>,
    /// The next this many requests are answered 429.
    throttle: u32,
    throttled: u32,
    /// The next documents task fails with this code and message.
    fail_next_documents: Option<(String, String)>,
    /// Every request: method and path.
    log: Vec<String>,
}

impl State {
    /// Runs every task up to `last` not yet run, in order, as Meilisearch's queue does.
    fn process_until(&mut self, last: usize) {
        for uid in 0..=last {
            if matches!(self.tasks[uid].status, "succeeded" | "failed") {
                continue;
            }
            let op = self.tasks[uid].op.clone();
            let error = self.apply(op);
            let task = &mut self.tasks[uid];
            task.status = if error.is_some() {
                "failed"
            } else {
                "succeeded"
            };
            task.error = error;
        }
    }

    fn apply(&mut self, op: Op) -> Option<Value> {
        let error = |code: &str, message: String| {
            Some(
                json!({"message": message, "code": code, "type": "invalid_request",
                        "link": format!("https://docs.meilisearch.com/errors#{code}")}),
            )
        };
        match op {
            Op::CreateIndex { uid, primary_key } => {
                if self.indexes.contains_key(&uid) {
                    return error(
                        "index_already_exists",
                        format!("Index `{uid}` already exists."),
                    );
                }
                self.indexes.insert(
                    uid,
                    Index {
                        primary_key: Some(primary_key),
                        ..Index::default()
                    },
                );
            }
            Op::Settings { uid, settings } => {
                self.indexes.entry(uid).or_default().settings = settings;
            }
            Op::AddDocuments {
                uid,
                primary_key,
                documents,
            } => {
                if let Some((code, message)) = self.fail_next_documents.take() {
                    return error(&code, message);
                }
                let index = self.indexes.entry(uid).or_default();
                if index.primary_key.is_none() {
                    index.primary_key = primary_key;
                }
                let key = index.primary_key.clone().unwrap_or_else(|| "id".into());
                for document in documents {
                    let Some(id) = document.get(&key) else {
                        return error(
                            "missing_document_id",
                            format!("Document doesn't have a `{key}` attribute"),
                        );
                    };
                    let id = id
                        .as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| id.to_string());
                    index.documents.insert(id, document);
                }
            }
            Op::DeleteDocuments { uid, ids } => {
                let index = self.indexes.entry(uid).or_default();
                for id in ids {
                    index.documents.remove(&id);
                }
            }
            Op::Swap { a, b } => {
                if !self.indexes.contains_key(&a) || !self.indexes.contains_key(&b) {
                    return error(
                        "index_not_found",
                        format!("Indexes `{a}`, `{b}` not found."),
                    );
                }
                let first = self.indexes.remove(&a).unwrap();
                let second = self.indexes.remove(&b).unwrap();
                self.indexes.insert(a, second);
                self.indexes.insert(b, first);
            }
            Op::DeleteIndex { uid } => {
                if self.indexes.remove(&uid).is_none() {
                    return error("index_not_found", format!("Index `{uid}` not found."));
                }
            }
        }
        None
    }

    fn enqueue(
        &mut self,
        kind: &'static str,
        index_uid: Option<String>,
        op: Op,
    ) -> ResponseTemplate {
        let uid = self.tasks.len();
        self.tasks.push(Task {
            kind,
            index_uid: index_uid.clone(),
            status: "enqueued",
            op,
            error: None,
        });
        ResponseTemplate::new(202).set_body_json(json!({
            "taskUid": uid, "indexUid": index_uid, "status": "enqueued", "type": kind,
            "enqueuedAt": "2026-11-30T10:00:00.000000Z"}))
    }
}

#[derive(Clone, Default)]
struct FakeMeilisearch {
    state: Arc<Mutex<State>>,
}

fn not_found(code: &str, message: String) -> ResponseTemplate {
    ResponseTemplate::new(404).set_body_json(json!({
        "message": message, "code": code, "type": "invalid_request",
        "link": format!("https://docs.meilisearch.com/errors#{code}")}))
}

impl Respond for FakeMeilisearch {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let mut state = self.state.lock().unwrap();
        let method = request.method.as_str().to_owned();
        let path = request.url.path().to_owned();
        state.log.push(format!("{method} {path}"));
        if request
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            != Some(&format!("Bearer {KEY}"))
        {
            return ResponseTemplate::new(401).set_body_json(json!({
                "message": "The Authorization header is missing.",
                "code": "missing_authorization_header", "type": "auth",
                "link": "https://docs.meilisearch.com/errors#missing_authorization_header"}));
        }
        if state.throttle > 0 {
            state.throttle -= 1;
            state.throttled += 1;
            return ResponseTemplate::new(429).set_body_json(json!({
                "message": "Too many requests", "code": "too_many_requests", "type": "system",
                "link": ""}));
        }
        let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match (method.as_str(), parts.as_slice()) {
            ("POST", ["indexes"]) => {
                let uid = body["uid"].as_str().unwrap_or_default().to_owned();
                let primary_key = body["primaryKey"].as_str().unwrap_or("id").to_owned();
                state.enqueue(
                    "indexCreation",
                    Some(uid.clone()),
                    Op::CreateIndex { uid, primary_key },
                )
            }
            ("PATCH", ["indexes", uid, "settings"]) => {
                let uid = uid.to_string();
                state.enqueue(
                    "settingsUpdate",
                    Some(uid.clone()),
                    Op::Settings {
                        uid,
                        settings: body,
                    },
                )
            }
            ("POST", ["indexes", uid, "documents"]) => {
                let uid = uid.to_string();
                let primary_key = request
                    .url
                    .query_pairs()
                    .find(|(k, _)| k == "primaryKey")
                    .map(|(_, v)| v.into_owned());
                let documents = body.as_array().cloned().unwrap_or_default();
                state.enqueue(
                    "documentAdditionOrUpdate",
                    Some(uid.clone()),
                    Op::AddDocuments {
                        uid,
                        primary_key,
                        documents,
                    },
                )
            }
            ("POST", ["indexes", uid, "documents", "delete-batch"]) => {
                let uid = uid.to_string();
                let ids = body
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .map(|v| {
                        v.as_str()
                            .map(str::to_owned)
                            .unwrap_or_else(|| v.to_string())
                    })
                    .collect();
                state.enqueue(
                    "documentDeletion",
                    Some(uid.clone()),
                    Op::DeleteDocuments { uid, ids },
                )
            }
            ("POST", ["swap-indexes"]) => {
                let pair = &body[0]["indexes"];
                let (a, b) = (
                    pair[0].as_str().unwrap_or_default(),
                    pair[1].as_str().unwrap_or_default(),
                );
                state.enqueue(
                    "indexSwap",
                    None,
                    Op::Swap {
                        a: a.into(),
                        b: b.into(),
                    },
                )
            }
            ("DELETE", ["indexes", uid]) => {
                let uid = uid.to_string();
                state.enqueue("indexDeletion", Some(uid.clone()), Op::DeleteIndex { uid })
            }
            ("GET", ["tasks", uid]) => {
                let Some(uid) = uid.parse::<usize>().ok().filter(|u| *u < state.tasks.len()) else {
                    return not_found("task_not_found", format!("Task `{uid}` not found."));
                };
                // enqueued -> processing at the first look, then run (with every task before it).
                if state.tasks[uid].status == "enqueued" {
                    state.tasks[uid].status = "processing";
                } else if state.tasks[uid].status == "processing" {
                    state.process_until(uid);
                }
                let task = &state.tasks[uid];
                ResponseTemplate::new(200).set_body_json(json!({
                    "uid": uid, "indexUid": task.index_uid, "status": task.status,
                    "type": task.kind, "error": task.error, "duration": "PT0.001S",
                    "enqueuedAt": "2026-11-30T10:00:00.000000Z"}))
            }
            ("GET", ["indexes", uid, "stats"]) => match state.indexes.get(*uid) {
                Some(index) => ResponseTemplate::new(200).set_body_json(json!({
                    "numberOfDocuments": index.documents.len(), "isIndexing": false,
                    "fieldDistribution": {}})),
                None => not_found("index_not_found", format!("Index `{uid}` not found.")),
            },
            ("POST", ["indexes", uid, "search"]) => {
                let Some(index) = state.indexes.get(*uid) else {
                    return not_found("index_not_found", format!("Index `{uid}` not found."));
                };
                let q = body["q"].as_str().unwrap_or_default().to_lowercase();
                let hits: Vec<Value> = index
                    .documents
                    .values()
                    .filter(|d| d.to_string().to_lowercase().contains(&q))
                    .map(|d| {
                        let mut hit = d.clone();
                        let mut formatted = d.clone();
                        if let Some(title) = d["title"].as_str() {
                            formatted["title"] = json!(format!("<mark>{title}</mark>"));
                        }
                        hit["_formatted"] = formatted;
                        hit["_rankingScore"] = json!(0.9);
                        hit
                    })
                    .collect();
                ResponseTemplate::new(200).set_body_json(json!({
                    "hits": hits, "query": q, "processingTimeMs": 1, "limit": 20, "offset": 0,
                    "estimatedTotalHits": hits.len()}))
            }
            _ => not_found("not_found", format!("{method} {path}")),
        }
    }
}

struct MeiliEnv {
    env: TestEnv,
    server: MockServer,
    fake: FakeMeilisearch,
}

const CONFIG: &str = r#"
[queues.indexing]
concurrency = 8
timeout = "60s"
max_attempts = 3
backoff = { base = "500ms", cap = "1s", jitter = 0.0 }

[search]
rebuild_batch = 6

[search.meilisearch]
task_timeout = "10s"
poll_interval = "10ms"

[search.indexes.questions]
backend = "meilisearch"
searchable = { text = "B", title = "A" }
filterable = ["test_id"]
sortable = ["version"]
source = "SELECT id, version, title, text, test_id FROM platform.questions"
"#;

impl MeiliEnv {
    async fn new(pool: PgPool) -> MeiliEnv {
        let server = MockServer::start().await;
        let fake = FakeMeilisearch::default();
        Mock::given(any())
            .respond_with(fake.clone())
            .mount(&server)
            .await;
        MeiliEnv {
            env: TestEnv::with_config(pool, &format!("{FAST_CONFIG}\n{CONFIG}")).await,
            server,
            fake,
        }
    }

    fn envs(&self) -> Vec<(&'static str, String)> {
        vec![
            ("QUIZWORKER_SEARCH__MEILISEARCH__URL", self.server.uri()),
            ("MEILISEARCH_API_KEY", KEY.to_owned()),
            ("PLATFORM_DATABASE_URL", self.env.database_url.clone()),
        ]
    }

    fn daemon(&self) -> Daemon {
        let envs = self.envs();
        let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.env.spawn_daemon_with(&[], &envs)
    }

    fn enqueue(&self, kind: &str, payload: Value) -> String {
        self.env.enqueue(kind, &payload.to_string(), &[])
    }

    fn documents(&self, uid: &str) -> BTreeMap<String, Value> {
        let state = self.fake.state.lock().unwrap();
        state
            .indexes
            .get(uid)
            .map(|i| i.documents.clone())
            .unwrap_or_default()
    }

    /// The type of each task, in order.
    fn task_kinds(&self) -> Vec<(&'static str, Option<String>)> {
        let state = self.fake.state.lock().unwrap();
        state
            .tasks
            .iter()
            .map(|t| (t.kind, t.index_uid.clone()))
            .collect()
    }
}

fn question(id: &str, version: u64, title: &str) -> Value {
    json!({"id": id, "version": version, "title": title, "text": format!("about {title}"),
           "test_id": "t1"})
}

#[sqlx::test(migrations = false)]
async fn settings_go_first_writes_await_their_tasks_and_versions_hold(pool: PgPool) {
    let t = MeiliEnv::new(pool).await;
    // The first requests are throttled: asked again, within the attempt.
    t.fake.state.lock().unwrap().throttle = 2;
    let _daemon = t.daemon();
    let job = t.enqueue(
        "index.upsert",
        json!({"index": "questions", "documents": [
        question("q1", 1, "Photosynthesis"), question("q2", 1, "Gravity"),
        question("q3", 1, "Osmosis")]}),
    );
    let done = t.env.wait_for_state(&job, "completed").await;
    assert_eq!(done.attempts, 1, "429s are asked again within the attempt");
    assert_eq!(done.result.unwrap()["written"], 3);
    assert_eq!(t.fake.state.lock().unwrap().throttled, 2);
    // The index made with its primary key, then its settings, then the documents.
    let index = Some("questions".to_owned());
    assert_eq!(
        t.task_kinds(),
        [
            ("indexCreation", index.clone()),
            ("settingsUpdate", index.clone()),
            ("documentAdditionOrUpdate", index.clone())
        ]
    );
    {
        let state = t.fake.state.lock().unwrap();
        let questions = &state.indexes["questions"];
        assert_eq!(questions.primary_key.as_deref(), Some("id"));
        assert_eq!(
            questions.settings,
            json!({
            "searchableAttributes": ["title", "text"],
            "filterableAttributes": ["test_id"],
            "sortableAttributes": ["version"]})
        );
    }
    assert_eq!(t.documents("questions").len(), 3);

    // An older version is not sent at all; a deletion is, and then holds.
    let stale = t.enqueue(
        "index.upsert",
        json!({"index": "questions",
        "documents": [question("q1", 0, "Old photosynthesis")]}),
    );
    let result = t
        .env
        .wait_for_state(&stale, "completed")
        .await
        .result
        .unwrap();
    assert_eq!(
        (result["written"].as_u64(), result["stale"].as_u64()),
        (Some(0), Some(1))
    );
    assert_eq!(t.documents("questions")["q1"]["title"], "Photosynthesis");
    let deleted = t.enqueue(
        "index.delete",
        json!({"index": "questions",
        "deletions": [{"id": "q2", "version": 2}]}),
    );
    t.env.wait_for_state(&deleted, "completed").await;
    assert!(!t.documents("questions").contains_key("q2"));
    let late = t.enqueue(
        "index.upsert",
        json!({"index": "questions",
        "documents": [question("q2", 1, "Gravity again")]}),
    );
    assert_eq!(
        t.env
            .wait_for_state(&late, "completed")
            .await
            .result
            .unwrap()["stale"],
        1
    );
    assert!(!t.documents("questions").contains_key("q2"));
    assert_eq!(
        t.task_kinds().len(),
        4,
        "only the deletion went to Meilisearch"
    );

    // `quizworker search` asks Meilisearch.
    let envs = t.envs();
    let out = t
        .env
        .command()
        .envs(envs)
        .args(["search", "questions", "osmosis", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hits: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(hits[0]["id"], "q3", "{hits}");
    assert_eq!(hits[0]["snippet"], "<mark>Osmosis</mark>");
}

#[sqlx::test(migrations = false)]
async fn a_failed_task_fails_the_job_with_its_error_and_a_retry_sends_again(pool: PgPool) {
    let t = MeiliEnv::new(pool).await;
    t.fake.state.lock().unwrap().fail_next_documents = Some((
        "invalid_document_fields".into(),
        "The document has too many fields.".into(),
    ));
    let _daemon = t.daemon();
    let job = t.enqueue(
        "index.upsert",
        json!({"index": "questions",
        "documents": [question("q1", 1, "Photosynthesis")]}),
    );
    let failed = t.env.wait_for_state(&job, "failed").await;
    let error = failed.last_error.unwrap();
    assert!(
        error.contains(
            "(documents) failed: The document has too many fields. (invalid_document_fields)"
        ),
        "{error}"
    );
    assert!(t.documents("questions").is_empty());
    // Retried by the operator, the same version is sent again: Meilisearch never had it.
    t.env.cli_ok(&["jobs", "retry", &job]);
    t.env.wait_for_state(&job, "completed").await;
    assert_eq!(t.documents("questions")["q1"]["title"], "Photosynthesis");
}

#[sqlx::test(migrations = false)]
async fn a_rebuild_writes_beside_the_live_index_and_swaps_it_in(pool: PgPool) {
    let t = MeiliEnv::new(pool.clone()).await;
    sqlx::raw_sql(
        "CREATE SCHEMA platform;
         CREATE TABLE platform.questions AS
         SELECT 'p' || i AS id, 10::bigint AS version, 'Question ' || i AS title,
                'text ' || i AS text, 't1' AS test_id
           FROM generate_series(1, 40) AS i;",
    )
    .execute(&pool)
    .await
    .unwrap();
    let _daemon = t.daemon();
    let before = t.enqueue(
        "index.upsert",
        json!({"index": "questions", "documents": [
        question("gone", 1, "Not in the source"), question("p1", 50, "Newer than the source")]}),
    );
    t.env.wait_for_state(&before, "completed").await;

    let rebuild = t.enqueue("index.rebuild", json!({"index": "questions"}));
    let result = t
        .env
        .wait_for_state(&rebuild, "completed")
        .await
        .result
        .unwrap();
    assert_eq!(
        (result["rows"].as_u64(), result["documents"].as_u64()),
        (Some(40), Some(40)),
        "{result}"
    );
    let live = t.documents("questions");
    assert_eq!(live.len(), 40);
    assert!(!live.contains_key("gone"));
    assert_eq!(
        live["p1"]["title"], "Newer than the source",
        "the ledger's newer version"
    );
    assert_eq!(live["p2"]["title"], "Question 2");
    let state = t.fake.state.lock().unwrap();
    // Written beside, swapped, the old one (now under the build's name) deleted.
    assert_eq!(state.indexes.keys().collect::<Vec<_>>(), ["questions"]);
    let kinds: Vec<&str> = state.tasks.iter().map(|t| t.kind).collect();
    let swap = kinds
        .iter()
        .position(|k| *k == "indexSwap")
        .expect("a swap");
    assert_eq!(kinds[swap + 1], "indexDeletion");
    let build = state.tasks[swap + 1].index_uid.clone().unwrap();
    assert!(build.starts_with("questions__rebuild_"), "{build}");
    // The build's settings were applied before its first documents.
    let first_settings = state
        .tasks
        .iter()
        .position(|t| t.kind == "settingsUpdate" && t.index_uid.as_deref() == Some(&build));
    let first_documents = state.tasks.iter().position(|t| {
        t.kind == "documentAdditionOrUpdate" && t.index_uid.as_deref() == Some(&build)
    });
    assert!(first_settings.unwrap() < first_documents.unwrap());
    assert!(state.log.iter().any(|l| l == "POST /swap-indexes"));
}

#[sqlx::test(migrations = false)]
async fn an_upsert_during_a_rebuild_goes_to_both_indexes_and_survives_the_swap(pool: PgPool) {
    let t = MeiliEnv::new(pool.clone()).await;
    sqlx::raw_sql(
        "CREATE SCHEMA platform;
         CREATE TABLE platform.questions AS
         SELECT 'p' || i AS id, 10::bigint AS version, 'Question ' || i AS title,
                'text ' || i AS text, 't1' AS test_id
           FROM generate_series(1, 60) AS i;",
    )
    .execute(&pool)
    .await
    .unwrap();
    // A slow source (40 ms a row, read twice), so the rebuild takes a few seconds.
    let config = format!("{FAST_CONFIG}\n{CONFIG}").replace(
        "FROM platform.questions\"",
        "FROM platform.questions WHERE pg_sleep(0.04)::text = ''\"",
    );
    std::fs::write(t.env.dir.path().join("config.toml"), config).unwrap();
    let _daemon = t.daemon();
    let rebuild = t.enqueue("index.rebuild", json!({"index": "questions"}));
    t.env.wait_for_progress(&rebuild, 10).await;
    let during = t.enqueue("index.upsert", json!({"index": "questions",
        "documents": [question("p60", 99, "Written during the rebuild"), question("new", 1, "New")]}));
    t.env.wait_for_state(&during, "completed").await;
    assert_eq!(
        t.env.job(&rebuild).await.unwrap().state,
        "running",
        "it landed during the rebuild"
    );
    // Written to the live index at once, and to the build.
    assert_eq!(t.documents("questions")["new"]["title"], "New");
    let result = t
        .env
        .wait_for_state(&rebuild, "completed")
        .await
        .result
        .unwrap();
    assert_eq!(result["rows"], 60, "{result}");
    let live = t.documents("questions");
    assert_eq!(live.len(), 61, "the 60 rows and the new document");
    assert_eq!(
        live["p60"]["title"], "Written during the rebuild",
        "not the source's older row"
    );
    assert_eq!(live["new"]["title"], "New");
}
