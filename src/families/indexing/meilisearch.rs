//! The Meilisearch backend, over its HTTP API with reqwest (rustls on ring, the system's CA
//! certificates, as the AI client). Every write is a task, awaited until it succeeds or fails
//! (`GET /tasks/{uid}`); 429s and 5xx are asked again with a growing wait. Meilisearch has no
//! conditional write, so the newest version of each document is kept in `search_ledger`: a
//! write takes its ids' ledger rows, sends only what is newer, and holds the rows until
//! Meilisearch has enqueued the task, so tasks reach Meilisearch (which runs them in order) in
//! the order of their versions. A rebuild writes `NAME__rebuild_GEN` and swaps it in with
//! `POST /swap-indexes`.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use quizworker_jobs::indexing::{CheckedDeletion, CheckedDocument};
use quizworker_jobs::limits::shorten;
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::{PgConnection, PgPool};

use super::backend::{Applied, Build, SearchIndex, Swapped, newest_per_id, store_error};
use crate::config::{IndexConfig, MeilisearchConfig};
use crate::families::JobError;
use crate::ops::redact::redacted;

/// Where the API key comes from; never the config file. Unset: no `Authorization` header.
pub const API_KEY_VAR: &str = "MEILISEARCH_API_KEY";

/// How much of an error body a message repeats.
const ERROR_BODY_BYTES: usize = 400;
/// The first wait before asking again after a 429 or 5xx; doubled each time.
const FIRST_RETRY_WAIT: Duration = Duration::from_millis(200);
/// The longest `Retry-After` waited out within an attempt.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(10);

/// The client, shared by every job of the process.
pub struct Meilisearch {
    http: reqwest::Client,
    base: String,
    key: Option<String>,
    config: MeilisearchConfig,
    /// Indexes whose settings this process has applied: each once, before its first write.
    prepared: Mutex<HashSet<String>>,
}

/// An answer other than 2xx, 429 or 5xx.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    /// Meilisearch's error code, e.g. `index_not_found`.
    pub code: String,
    pub message: String,
}

/// What a task ended as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskEnd {
    Succeeded,
    /// `failed` or `canceled`, with Meilisearch's error code and message.
    Failed {
        code: String,
        message: String,
    },
}

#[derive(Deserialize)]
struct Enqueued {
    #[serde(rename = "taskUid")]
    task_uid: u64,
}

#[derive(Deserialize)]
struct Task {
    status: String,
    #[serde(default)]
    error: Option<TaskError>,
}

#[derive(Deserialize)]
struct TaskError {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

impl Meilisearch {
    /// The client; fails on settings no job could mend (TLS cannot be set up).
    pub fn new(config: &MeilisearchConfig) -> anyhow::Result<Meilisearch> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .context("could not set up TLS for Meilisearch")?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(config.request_timeout)
            .user_agent(concat!("quizworker/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("could not build Meilisearch's HTTP client")?;
        Ok(Meilisearch {
            http,
            base: config.url.trim_end_matches('/').to_owned(),
            key: std::env::var(API_KEY_VAR).ok().filter(|k| !k.is_empty()),
            config: config.clone(),
            prepared: Mutex::new(HashSet::new()),
        })
    }

    /// One call, asked again on a 429, a 5xx or no answer, up to `max_retries` times. Returns
    /// the status and body of a 2xx, `Ok(Err(..))` for any other answer.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Result<Value, ApiError>, JobError> {
        let url = format!("{}{path}", self.base);
        let mut retries = 0;
        loop {
            let mut request = self.http.request(method.clone(), &url);
            if let Some(key) = &self.key {
                request = request.bearer_auth(key);
            }
            if let Some(body) = body {
                request = request.json(body);
            }
            let (reason, wait) = match request.send().await {
                Err(e) => (format!("could not be reached: {}", e.without_url()), None),
                Ok(response) => {
                    let status = response.status().as_u16();
                    let retry_after = response
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    let text = response.text().await.unwrap_or_default();
                    if (200..300).contains(&status) {
                        let value = if text.trim().is_empty() {
                            Value::Null
                        } else {
                            serde_json::from_str(&text).map_err(|e| {
                                JobError::Transient(format!(
                                    "Meilisearch at {} answered {status} with a body that is not JSON ({e})",
                                    redacted(&url)
                                ))
                            })?
                        };
                        return Ok(Ok(value));
                    }
                    let error = api_error(status, &text);
                    if status != 429 && status < 500 {
                        return Ok(Err(error));
                    }
                    (format!("answered {status}: {}", error.message), retry_after)
                }
            };
            if retries >= self.config.max_retries {
                return Err(JobError::Transient(format!(
                    "Meilisearch at {} {reason} (asked {} times)",
                    redacted(&url),
                    retries + 1
                )));
            }
            let backoff = FIRST_RETRY_WAIT * 2u32.saturating_pow(retries);
            tokio::time::sleep(wait.unwrap_or(backoff).min(MAX_RETRY_WAIT)).await;
            retries += 1;
        }
    }

    /// A call that enqueues a task; returns the task's uid.
    async fn enqueue(&self, method: Method, path: &str, body: &Value) -> Result<u64, JobError> {
        match self.call(method, path, Some(body)).await? {
            Ok(value) => serde_json::from_value::<Enqueued>(value)
                .map(|e| e.task_uid)
                .map_err(|e| {
                    JobError::Transient(format!(
                        "Meilisearch's answer to {path} has no taskUid ({e})"
                    ))
                }),
            Err(error) => Err(JobError::Permanent(format!(
                "Meilisearch refused {path}: {} ({}, {})",
                error.message, error.status, error.code
            ))),
        }
    }

    /// Polls a task until it ends or `task_timeout` passes (a transient failure).
    pub async fn wait(&self, task: u64) -> Result<TaskEnd, JobError> {
        let deadline = Instant::now() + self.config.task_timeout;
        loop {
            let path = format!("/tasks/{task}");
            let value = match self.call(Method::GET, &path, None).await? {
                Ok(value) => value,
                Err(error) => {
                    return Err(JobError::Transient(format!(
                        "Meilisearch could not say how task {task} went: {} ({})",
                        error.message, error.status
                    )));
                }
            };
            let state: Task = serde_json::from_value(value).map_err(|e| {
                JobError::Transient(format!("Meilisearch's task {task} does not read ({e})"))
            })?;
            match state.status.as_str() {
                "succeeded" => return Ok(TaskEnd::Succeeded),
                "failed" | "canceled" => {
                    let error = state.error.unwrap_or(TaskError {
                        code: state.status.clone(),
                        message: format!("the task was {}", state.status),
                    });
                    return Ok(TaskEnd::Failed {
                        code: error.code,
                        message: error.message,
                    });
                }
                status => {
                    if Instant::now() >= deadline {
                        return Err(JobError::Transient(format!(
                            "Meilisearch's task {task} is still {status} after {} (search.meilisearch.task_timeout)",
                            humantime::format_duration(self.config.task_timeout)
                        )));
                    }
                    tokio::time::sleep(self.config.poll_interval).await;
                }
            }
        }
    }

    /// Waits for a task that must succeed: a failed one fails the job with its error.
    async fn succeed(&self, task: u64, what: &str) -> Result<(), JobError> {
        match self.wait(task).await? {
            TaskEnd::Succeeded => Ok(()),
            TaskEnd::Failed { code, message } => Err(JobError::Permanent(format!(
                "Meilisearch's task {task} ({what}) failed: {message} ({code})"
            ))),
        }
    }

    /// Creates `uid` with the index's primary key if it does not exist, and applies its
    /// settings; once per index and process, before the first document goes in.
    async fn prepare(&self, uid: &str, config: &IndexConfig) -> Result<(), JobError> {
        if self.lock_prepared().contains(uid) {
            return Ok(());
        }
        let task = self
            .enqueue(
                Method::POST,
                "/indexes",
                &json!({"uid": uid, "primaryKey": config.primary_key}),
            )
            .await?;
        match self.wait(task).await? {
            TaskEnd::Succeeded => {}
            TaskEnd::Failed { code, .. } if code == "index_already_exists" => {}
            TaskEnd::Failed { code, message } => {
                return Err(JobError::Permanent(format!(
                    "Meilisearch could not create index `{uid}`: {message} ({code})"
                )));
            }
        }
        let schema = config.schema();
        let settings = json!({
            "searchableAttributes": schema.searchable_by_weight(),
            "filterableAttributes": config.filterable,
            "sortableAttributes": config.sortable,
        });
        let task = self
            .enqueue(
                Method::PATCH,
                &format!("/indexes/{uid}/settings"),
                &settings,
            )
            .await?;
        self.succeed(task, "settings").await?;
        self.lock_prepared().insert(uid.to_owned());
        Ok(())
    }

    fn lock_prepared(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.prepared
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Deletes an index; one that is not there is fine.
    async fn drop_index(&self, uid: &str) -> Result<(), JobError> {
        self.lock_prepared().remove(uid);
        match self
            .call(Method::DELETE, &format!("/indexes/{uid}"), None)
            .await?
        {
            Ok(value) => {
                let task = serde_json::from_value::<Enqueued>(value)
                    .map_err(|e| JobError::Transient(format!("no taskUid ({e})")))?
                    .task_uid;
                match self.wait(task).await? {
                    TaskEnd::Succeeded => Ok(()),
                    TaskEnd::Failed { code, .. } if code == "index_not_found" => Ok(()),
                    TaskEnd::Failed { code, message } => Err(JobError::Transient(format!(
                        "Meilisearch could not delete index `{uid}`: {message} ({code})"
                    ))),
                }
            }
            Err(error) if error.code == "index_not_found" => Ok(()),
            Err(error) => Err(JobError::Transient(format!(
                "Meilisearch could not delete index `{uid}`: {} ({})",
                error.message, error.status
            ))),
        }
    }

    /// Searches an index, for the CLI: the hits with the matched words between <mark> tags.
    pub async fn search(
        &self,
        uid: &str,
        query: &str,
        filter: Option<String>,
        limit: u32,
        offset: u32,
    ) -> Result<Result<Value, ApiError>, JobError> {
        let mut body = json!({
            "q": query, "limit": limit, "offset": offset,
            "attributesToHighlight": ["*"], "attributesToCrop": ["*"], "cropLength": 20,
            "highlightPreTag": "<mark>", "highlightPostTag": "</mark>",
            "showRankingScore": true,
        });
        if let Some(filter) = filter {
            body["filter"] = Value::String(filter);
        }
        self.call(Method::POST, &format!("/indexes/{uid}/search"), Some(&body))
            .await
    }
}

fn api_error(status: u16, body: &str) -> ApiError {
    let value: Option<Value> = serde_json::from_str(body).ok();
    let field = |name: &str| {
        value
            .as_ref()
            .and_then(|v| v.get(name))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    ApiError {
        status,
        code: field("code").unwrap_or_default(),
        message: field("message").unwrap_or_else(|| {
            let text = body.trim();
            if text.is_empty() {
                "(no body)".to_owned()
            } else {
                shorten(text, ERROR_BODY_BYTES).into_owned()
            }
        }),
    }
}

/// The uid of the index a rebuild writes: beside the live one, named by its generation.
pub fn build_uid(name: &str, generation: i64) -> String {
    format!("{name}__rebuild_{generation}")
}

/// One index kept in Meilisearch.
pub struct MeilisearchIndex<'a> {
    meili: &'a Meilisearch,
    pg: &'a PgPool,
    name: &'a str,
    config: &'a IndexConfig,
}

/// The ledger rows a write takes: id, version and the document (`None`: a deletion).
struct LedgerRows {
    ids: Vec<String>,
    versions: Vec<i64>,
    documents: Vec<Option<Value>>,
}

impl LedgerRows {
    fn documents(documents: &[&CheckedDocument]) -> LedgerRows {
        LedgerRows {
            ids: documents.iter().map(|d| d.id.clone()).collect(),
            versions: documents.iter().map(|d| d.version.0).collect(),
            documents: documents
                .iter()
                .map(|d| Some(Value::Object(d.document.clone())))
                .collect(),
        }
    }

    fn deletions(deletions: &[&CheckedDeletion]) -> LedgerRows {
        LedgerRows {
            ids: deletions.iter().map(|d| d.id.clone()).collect(),
            versions: deletions.iter().map(|d| d.version.0).collect(),
            documents: vec![None; deletions.len()],
        }
    }
}

impl<'a> MeilisearchIndex<'a> {
    pub fn new(
        meili: &'a Meilisearch,
        pg: &'a PgPool,
        name: &'a str,
        config: &'a IndexConfig,
    ) -> Self {
        MeilisearchIndex {
            meili,
            pg,
            name,
            config,
        }
    }

    async fn ensure_row(&self) -> Result<(), JobError> {
        sqlx::query(
            "INSERT INTO search_indexes (name, backend, text_search_config, filterable, live_generation)
             VALUES ($1, 'meilisearch', 'simple', $2, nextval('search_generations'))
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(self.name)
        .bind(&self.config.filterable)
        .execute(self.pg)
        .await
        .map_err(store_error)?;
        Ok(())
    }

    /// The build under way, if any, with the index's row held `FOR SHARE` by `tx`.
    async fn building(&self, tx: &mut PgConnection) -> Result<Option<i64>, JobError> {
        self.ensure_row().await?;
        let (backend, building): (String, Option<i64>) = sqlx::query_as(
            "SELECT backend, building_generation FROM search_indexes WHERE name = $1 FOR SHARE",
        )
        .bind(self.name)
        .fetch_one(&mut *tx)
        .await
        .map_err(store_error)?;
        if backend != "meilisearch" {
            return Err(JobError::Permanent(format!(
                "index `{}` is kept in {backend}, but its config says meilisearch: rebuild it \
                 (`quizworker index rebuild {}`) to move it",
                self.name, self.name
            )));
        }
        Ok(building)
    }

    /// Takes the ledger rows of `rows` that are newer than the ledger's (or as new and not yet
    /// confirmed by Meilisearch); returns their ids. The rows stay locked until `tx` ends.
    async fn take_newer(
        &self,
        tx: &mut PgConnection,
        rows: &LedgerRows,
    ) -> Result<HashSet<String>, JobError> {
        let ids: Vec<String> = sqlx::query_scalar(
            "INSERT INTO search_ledger AS l (index_name, id, version, document, confirmed)
             SELECT $1, u.id, u.version, u.document, false
               FROM unnest($2::text[], $3::bigint[], $4::jsonb[]) AS u (id, version, document)
             ON CONFLICT (index_name, id) DO UPDATE
                SET version = excluded.version, document = excluded.document, confirmed = false
              WHERE excluded.version > l.version
                 OR (excluded.version = l.version AND NOT l.confirmed)
             RETURNING l.id",
        )
        .bind(self.name)
        .bind(&rows.ids)
        .bind(&rows.versions)
        .bind(&rows.documents)
        .fetch_all(&mut *tx)
        .await
        .map_err(store_error)?;
        Ok(ids.into_iter().collect())
    }

    /// Marks what Meilisearch has: those rows are not sent again for the same version.
    async fn confirm(&self, rows: &LedgerRows) -> Result<(), JobError> {
        sqlx::query(
            "UPDATE search_ledger l SET confirmed = true
               FROM unnest($2::text[], $3::bigint[]) AS u (id, version)
              WHERE l.index_name = $1 AND l.id = u.id AND l.version = u.version",
        )
        .bind(self.name)
        .bind(&rows.ids)
        .bind(&rows.versions)
        .execute(self.pg)
        .await
        .map_err(store_error)?;
        Ok(())
    }

    /// Sends the newer of `rows` to the live index and any build, and awaits the tasks.
    async fn write(&self, rows: LedgerRows, dropped: usize) -> Result<Applied, JobError> {
        self.meili.prepare(self.name, self.config).await?;
        let mut tx = self.pg.begin().await.map_err(store_error)?;
        let building = self.building(&mut tx).await?;
        let mut uids = vec![self.name.to_owned()];
        if let Some(generation) = building {
            let uid = build_uid(self.name, generation);
            self.meili.prepare(&uid, self.config).await?;
            uids.push(uid);
        }
        let newer = self.take_newer(&mut tx, &rows).await?;
        let mut documents = Vec::new();
        let mut deleted = Vec::new();
        let mut sent = LedgerRows {
            ids: Vec::new(),
            versions: Vec::new(),
            documents: Vec::new(),
        };
        for ((id, version), document) in rows.ids.iter().zip(&rows.versions).zip(&rows.documents) {
            if !newer.contains(id) {
                continue;
            }
            match document {
                Some(document) => documents.push(document.clone()),
                None => deleted.push(Value::String(id.clone())),
            }
            sent.ids.push(id.clone());
            sent.versions.push(*version);
        }
        let mut tasks = Vec::new();
        for uid in &uids {
            if !documents.is_empty() {
                let path = format!(
                    "/indexes/{uid}/documents?primaryKey={}",
                    self.config.primary_key
                );
                let task = self
                    .meili
                    .enqueue(Method::POST, &path, &Value::Array(documents.clone()))
                    .await?;
                tasks.push((task, "documents"));
            }
            if !deleted.is_empty() {
                let path = format!("/indexes/{uid}/documents/delete-batch");
                let task = self
                    .meili
                    .enqueue(Method::POST, &path, &Value::Array(deleted.clone()))
                    .await?;
                tasks.push((task, "deletions"));
            }
        }
        // Only now may a newer write of these ids take their ledger rows: its tasks are
        // enqueued after ours.
        tx.commit().await.map_err(store_error)?;
        for (task, what) in tasks {
            self.meili.succeed(task, what).await?;
        }
        self.confirm(&sent).await?;
        Ok(Applied {
            written: sent.ids.len(),
            stale: rows.ids.len() - sent.ids.len() + dropped,
        })
    }

    /// Documents in an index once Meilisearch has finished indexing it.
    async fn count(&self, uid: &str) -> Result<u64, JobError> {
        let deadline = Instant::now() + self.meili.config.task_timeout;
        loop {
            let stats = match self
                .meili
                .call(Method::GET, &format!("/indexes/{uid}/stats"), None)
                .await?
            {
                Ok(stats) => stats,
                Err(error) => {
                    return Err(JobError::Transient(format!(
                        "Meilisearch could not count index `{uid}`: {} ({})",
                        error.message, error.status
                    )));
                }
            };
            let indexing = stats["isIndexing"].as_bool().unwrap_or(false);
            if !indexing || Instant::now() >= deadline {
                return Ok(stats["numberOfDocuments"].as_u64().unwrap_or(0));
            }
            tokio::time::sleep(self.meili.config.poll_interval).await;
        }
    }
}

impl SearchIndex for MeilisearchIndex<'_> {
    async fn upsert(&self, documents: &[CheckedDocument]) -> Result<Applied, JobError> {
        let (kept, dropped) = newest_per_id(documents, |d| &d.id, |d| d.version.0);
        let rows = LedgerRows::documents(&kept);
        self.write(rows, dropped).await
    }

    async fn delete(&self, deletions: &[CheckedDeletion]) -> Result<Applied, JobError> {
        let (kept, dropped) = newest_per_id(deletions, |d| &d.id, |d| d.version.0);
        let rows = LedgerRows::deletions(&kept);
        self.write(rows, dropped).await
    }

    async fn begin_rebuild(&self) -> Result<Build, JobError> {
        self.ensure_row().await?;
        let left: Option<i64> =
            sqlx::query_scalar("SELECT building_generation FROM search_indexes WHERE name = $1")
                .bind(self.name)
                .fetch_one(self.pg)
                .await
                .map_err(store_error)?;
        if let Some(left) = left {
            tracing::warn!(
                index = self.name,
                generation = left,
                "dropping the build of a rebuild that did not finish"
            );
            self.meili.drop_index(&build_uid(self.name, left)).await?;
        }
        let generation: i64 = sqlx::query_scalar("SELECT nextval('search_generations')")
            .fetch_one(self.pg)
            .await
            .map_err(store_error)?;
        // Settings before the first document, and before any upsert can see the build.
        self.meili
            .prepare(&build_uid(self.name, generation), self.config)
            .await?;
        self.meili.prepare(self.name, self.config).await?;
        sqlx::query("UPDATE search_indexes SET building_generation = $2 WHERE name = $1")
            .bind(self.name)
            .bind(generation)
            .execute(self.pg)
            .await
            .map_err(store_error)?;
        Ok(Build { generation })
    }

    async fn write_rebuild(
        &self,
        build: Build,
        documents: &[CheckedDocument],
    ) -> Result<Applied, JobError> {
        let (kept, dropped) = newest_per_id(documents, |d| &d.id, |d| d.version.0);
        let rows = LedgerRows::documents(&kept);
        let mut tx = self.pg.begin().await.map_err(store_error)?;
        // The source's row where it is newer; else what the ledger holds (an upsert or a
        // deletion newer than the source, e.g. a replica that lags).
        sqlx::query(
            "INSERT INTO search_ledger AS l (index_name, id, version, document, confirmed)
             SELECT $1, u.id, u.version, u.document, false
               FROM unnest($2::text[], $3::bigint[], $4::jsonb[]) AS u (id, version, document)
             ON CONFLICT (index_name, id) DO UPDATE
                SET version = excluded.version, document = excluded.document, confirmed = false
              WHERE excluded.version > l.version",
        )
        .bind(self.name)
        .bind(&rows.ids)
        .bind(&rows.versions)
        .bind(&rows.documents)
        .execute(&mut *tx)
        .await
        .map_err(store_error)?;
        let current: Vec<Option<Value>> = sqlx::query_scalar(
            "SELECT document FROM search_ledger
              WHERE index_name = $1 AND id = ANY($2) ORDER BY id FOR UPDATE",
        )
        .bind(self.name)
        .bind(&rows.ids)
        .fetch_all(&mut *tx)
        .await
        .map_err(store_error)?;
        let documents: Vec<Value> = current.into_iter().flatten().collect();
        let sent = documents.len();
        let task = if documents.is_empty() {
            None
        } else {
            let path = format!(
                "/indexes/{}/documents?primaryKey={}",
                build_uid(self.name, build.generation),
                self.config.primary_key
            );
            Some(
                self.meili
                    .enqueue(Method::POST, &path, &Value::Array(documents))
                    .await?,
            )
        };
        tx.commit().await.map_err(store_error)?;
        if let Some(task) = task {
            self.meili.succeed(task, "rebuild documents").await?;
        }
        Ok(Applied {
            written: sent,
            stale: rows.ids.len() - sent + dropped,
        })
    }

    async fn finish_rebuild(&self, build: Build, expected: u64) -> Result<Swapped, JobError> {
        let uid = build_uid(self.name, build.generation);
        let mut tx = self.pg.begin().await.map_err(store_error)?;
        let building: Option<i64> = sqlx::query_scalar(
            "SELECT building_generation FROM search_indexes WHERE name = $1 FOR UPDATE",
        )
        .bind(self.name)
        .fetch_one(&mut *tx)
        .await
        .map_err(store_error)?;
        if building != Some(build.generation) {
            return Err(JobError::Transient(format!(
                "index `{}`: the build {} is no longer the one under way; the rebuild starts again",
                self.name, build.generation
            )));
        }
        // Deletions during the rebuild took documents out of the build.
        let deletions: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM search_ledger WHERE index_name = $1 AND document IS NULL",
        )
        .bind(self.name)
        .fetch_one(&mut *tx)
        .await
        .map_err(store_error)?;
        let documents = self.count(&uid).await?;
        if documents + (deletions as u64) < expected {
            return Err(JobError::Permanent(format!(
                "index `{}`: the build `{uid}` holds {documents} documents, fewer than the {expected} sent to it (does the source query return an id twice?); the live index is kept",
                self.name
            )));
        }
        let task = self
            .meili
            .enqueue(
                Method::POST,
                "/swap-indexes",
                &json!([{"indexes": [self.name, uid]}]),
            )
            .await?;
        self.meili.succeed(task, "swap-indexes").await?;
        sqlx::query(
            "UPDATE search_indexes
                SET live_generation = $2, building_generation = NULL, filterable = $3,
                    backend = 'meilisearch', rebuilt_at = now()
              WHERE name = $1",
        )
        .bind(self.name)
        .bind(build.generation)
        .bind(&self.config.filterable)
        .execute(&mut *tx)
        .await
        .map_err(store_error)?;
        tx.commit().await.map_err(store_error)?;
        // The build's uid now names the old index.
        if let Err(e) = self.meili.drop_index(&uid).await {
            tracing::warn!(index = self.name, old = uid, error = %e,
                "could not delete the old index after the swap; delete it by hand");
        }
        Ok(Swapped { documents })
    }

    async fn abandon_rebuild(&self, build: Build) -> Result<(), JobError> {
        sqlx::query(
            "UPDATE search_indexes SET building_generation = NULL
              WHERE name = $1 AND building_generation = $2",
        )
        .bind(self.name)
        .bind(build.generation)
        .execute(self.pg)
        .await
        .map_err(store_error)?;
        self.meili
            .drop_index(&build_uid(self.name, build.generation))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_body_is_meilisearchs_message_or_its_start() {
        let body = r#"{"message": "Index `x` not found.", "code": "index_not_found", "type": "invalid_request", "link": "https://docs.meilisearch.com/errors#index_not_found"}"#;
        let error = api_error(404, body);
        assert_eq!(error.code, "index_not_found");
        assert_eq!(error.message, "Index `x` not found.");
        assert_eq!(api_error(502, "Bad Gateway").message, "Bad Gateway");
        assert_eq!(api_error(500, "").message, "(no body)");
    }

    #[test]
    fn a_build_is_named_beside_its_index() {
        assert_eq!(build_uid("questions", 42), "questions__rebuild_42");
    }
}
