//! The daemon's configuration: read once from `config.toml`, then the environment, validated
//! once, and passed down. Secrets (passwords in URLs) come from the environment, not the file.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, bail};
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use quizworker_jobs::ai::reply::ResponseFormat;
use quizworker_jobs::indexing::{IndexSchema, VersionType, Weight};
use quizworker_jobs::limits::{MAX_JSON_DEPTH_LIMIT, shorten};
use quizworker_jobs::{Limits, Queue, catalogue};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub redis: RedisConfig,
    pub postgres: PostgresConfig,
    pub worker: WorkerConfig,
    pub http: HttpConfig,
    pub journal: JournalConfig,
    pub maintenance: MaintenanceConfig,
    pub exports: ExportsConfig,
    pub email: EmailConfig,
    pub ai: AiConfig,
    pub outbox: OutboxConfig,
    pub webhooks: WebhooksConfig,
    pub search: SearchConfig,
    /// What a job may be (size, kind, nesting) before the daemon reads it; one over a limit
    /// fails at once, its error naming the limit (`quizworker_jobs::Limits`).
    pub limits: Limits,
    pub queues: BTreeMap<String, QueueConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    pub url: String,
    /// Put before every queue name, so several deployments (or tests) can share one Redis.
    pub prefix: String,
    /// apalis-redis treats a Redis call slower than this as fatal to the worker; its own default
    /// (500 ms) is too tight for a busy Redis.
    #[serde(with = "humantime_serde")]
    pub response_timeout: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    pub url: String,
    pub max_connections: u32,
    /// Apply pending migrations when `run` starts.
    pub migrate_on_start: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    /// How often each worker tells Redis it is alive.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// After this many missed heartbeats another process takes a worker's jobs back.
    pub missed_heartbeats: u32,
    /// How often an idle worker looks for due scheduled jobs; new jobs wake it at once.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Jobs taken from Redis in one call, at most twice a queue's concurrency
    /// ([`Config::fetch_batch`]).
    pub fetch_batch: usize,
    /// On SIGTERM, how long running jobs may take to finish before they go back to the queue.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// How often the process checks which queues an operator paused.
    #[serde(with = "humantime_serde")]
    pub pause_check_interval: Duration,
}

/// The health and metrics server (`src/ops/http.rs`): `/healthz`, `/readyz`, `/metrics`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Loopback by default: the endpoints have no authentication, so a wider address belongs
    /// behind a firewall. Port 0 takes a free port; the daemon logs the one it bound.
    pub listen: SocketAddr,
    /// How often queue depths and the oldest waiting age are read from Redis for `/metrics`.
    #[serde(with = "humantime_serde")]
    pub queue_sample_interval: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalConfig {
    /// The most state changes written in one round trip.
    pub max_batch: usize,
    /// The least time between two progress writes of one job.
    #[serde(with = "humantime_serde")]
    pub progress_interval: Duration,
}

/// Upkeep done by one process at a time: putting back jobs Redis lost, pruning the journal
/// and trimming Redis.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceConfig {
    /// How often; the first pass runs at start.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Finished jobs stay in the journal this long, by state.
    #[serde(with = "humantime_serde")]
    pub keep_completed: Duration,
    #[serde(with = "humantime_serde")]
    pub keep_failed: Duration,
    #[serde(with = "humantime_serde")]
    pub keep_cancelled: Duration,
}

/// The fonts of PDFs unless configured: Debian's Noto fonts (`fonts-noto-core`,
/// `fonts-noto-cjk`) for Latin with diacritics, the scripts of India, Arabic and Urdu, and
/// Chinese, Japanese and Korean (the CJK collection's face 0, whose Han glyphs are Japanese in
/// style; `#2` is Simplified Chinese).
pub const DEFAULT_FONTS: [&str; 12] = [
    "/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf",
    "/usr/share/fonts/truetype/noto/NotoSansDevanagari-Regular.ttf",
    "/usr/share/fonts/truetype/noto/NotoSansBengali-Regular.ttf",
    "/usr/share/fonts/truetype/noto/NotoSansGurmukhi-Regular.ttf",
    "/usr/share/fonts/truetype/noto/NotoSansGujarati-Regular.ttf",
    "/usr/share/fonts/truetype/noto/NotoSansOriya-Regular.ttf",
    "/usr/share/fonts/truetype/noto/NotoSansTamil-Regular.ttf",
    "/usr/share/fonts/truetype/noto/NotoSansTelugu-Regular.ttf",
    "/usr/share/fonts/truetype/noto/NotoSansKannada-Regular.ttf",
    "/usr/share/fonts/truetype/noto/NotoSansMalayalam-Regular.ttf",
    "/usr/share/fonts/truetype/noto/NotoNaskhArabic-Regular.ttf",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
];

/// Where the `export.*` jobs write their files, and the fonts and style of the PDF ones.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportsConfig {
    /// Created if missing. Files are named by the export, never by its input, so nothing a
    /// producer sends can place a file outside it.
    pub directory: PathBuf,
    /// TTF, OTF or TTC files (`path#N` for face N of a collection, the first without), tried
    /// in order for each run of text of a PDF (one script, one direction): the first that has
    /// every character of the run prints it, shaped. Missing files are skipped, with a warning
    /// on every PDF; with none at all, the built-in Helvetica prints Latin-1.
    pub fonts: Vec<PathBuf>,
    /// The institution's name at the top of every report card; empty for none.
    #[serde(default)]
    pub institution: String,
    /// A PNG or JPEG logo at the top left of every report card (at most 2 MB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logo: Option<PathBuf>,
    /// The time zone (IANA name, `Asia/Kolkata`) in which report cards show times.
    #[serde(default = "utc")]
    pub timezone: chrono_tz::Tz,
}

fn utc() -> chrono_tz::Tz {
    chrono_tz::UTC
}

fn six_hours() -> Duration {
    Duration::from_secs(6 * 3600)
}

/// The `email.*` jobs: templates, the sender, limits, and the SMTP server they go through.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// The templates directory (docs/EMAIL.md): read when the daemon starts.
    pub templates: PathBuf,
    /// The locale of a template folder without a locale suffix.
    pub default_locale: String,
    /// The sender, as `Name <address>` or an address.
    pub from: String,
    /// The domain of every `Message-ID`; empty: the domain of `from`.
    pub message_id_domain: String,
    /// Recipients of one `email.bulk` job at most.
    pub max_bulk_recipients: usize,
    /// Addresses of one `email.send` (to, cc and bcc together) at most.
    pub max_message_recipients: usize,
    /// Bytes of one message's attachments together at most.
    pub max_attachment_bytes: u64,
    /// How long an email waits, from when it was enqueued, for an export it attaches that is
    /// still queued, scheduled or running, without using up its attempts. Past this, each
    /// further wait is a failed attempt, retried with the queue's backoff.
    #[serde(with = "humantime_serde", default = "six_hours")]
    pub attachment_wait: Duration,
    /// Messages of one `email.bulk` job in flight at once.
    pub bulk_concurrency: usize,
    /// A bulk message's one-click unsubscribe link (RFC 8058): `{email}` and `{job}` are
    /// replaced, percent-encoded. Empty: bulk mail carries no `List-Unsubscribe`.
    pub unsubscribe_url: String,
    pub smtp: SmtpConfig,
    /// DKIM signing of every message; absent: unsigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dkim: Option<DkimConfig>,
}

/// The SMTP server. Its user name and password come from the environment (`SMTP_USERNAME`,
/// `SMTP_PASSWORD`), never from this file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub security: SmtpSecurity,
    /// One SMTP command (connect, each reply) slower than this fails the send (transient).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Connections kept open to the server by one process.
    pub pool_size: u32,
    /// PEM certificates trusted as roots for the server's TLS certificate, besides the system's
    /// store (an internal relay signed by a private CA). Absent: the system's store alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS, which the server must offer (port 587).
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No TLS: only for a relay on the same host or network (port 25).
    Plain,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DkimConfig {
    /// The signing domain (`d=`), whose DNS publishes the public key.
    pub domain: String,
    /// The selector (`s=`): the key's record is `SELECTOR._domainkey.DOMAIN`.
    pub selector: String,
    /// A PEM private key: RSA (PKCS#1) or Ed25519.
    pub key_file: PathBuf,
    pub algorithm: DkimAlgorithm,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DkimAlgorithm {
    Rsa,
    Ed25519,
}

/// The relay of the web tier's outbox (`src/runtime/outbox.rs`, docs/WEB_TIER.md): jobs the
/// web tier enqueued in its own transactions, in its own database.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxConfig {
    /// The database that holds `quizworker.outbox` (docs/sql/outbox.sql); empty: no relay.
    pub url: String,
    /// How often the relay looks without being woken: NOTIFY wakes it at each commit, this is
    /// the safety net.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Rows relayed in one round: one transaction in each database, one Redis call per queue.
    pub batch: usize,
    /// How long relayed rows stay in the outbox (their idempotency keys hold meanwhile).
    #[serde(with = "humantime_serde")]
    pub keep_relayed: Duration,
}

/// Completion webhooks (`src/webhooks/`, docs/WEB_TIER.md): where they go, and how hard the
/// daemon tries.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksConfig {
    /// An attempt whose response has not come in this long fails (and is retried).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Attempts per delivery before it is given up as failed.
    pub max_attempts: u32,
    pub backoff: BackoffConfig,
    /// Deliveries in flight at once, per process.
    pub concurrency: usize,
    /// How much of each response's body a delivery keeps.
    pub max_response_bytes: usize,
    /// The allow-list: webhooks go to these endpoints only, by name. None by default.
    #[serde(default)]
    pub endpoints: BTreeMap<String, WebhookEndpoint>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookEndpoint {
    /// `https://...` (or `http://`).
    pub url: String,
    /// The environment variable that holds the signing secret, `whsec_` and base64.
    pub secret_env: String,
    /// Every job of these kinds is told to this endpoint; a job may also name it in its
    /// envelope's `webhook`.
    #[serde(default)]
    pub kinds: Vec<String>,
    /// Whether the endpoint may resolve to a loopback, private or link-local address (an
    /// intranet service, a test): refused by default, against server-side request forgery.
    #[serde(default)]
    pub allow_private: bool,
}

/// The `ai.*` jobs: the OpenAI-compatible chat-completions API they call (docs/AI.md), and
/// their limits. The API key comes from the environment (`AI_API_KEY`), never from this file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AiConfig {
    /// The API's base URL, up to and with `/v1`: requests go to `<base_url>/chat/completions`.
    pub base_url: String,
    /// The model, as the API names it; part of every hint's cache key.
    pub model: String,
    /// `json_schema` (structured output, strict) or `json_object` (plain JSON mode, for a
    /// server without structured output). Either way every reply is checked against the schema.
    pub response_format: ResponseFormat,
    /// Connecting to the API slower than this fails the request (transient).
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// One request, from sending it to the end of the reply, longer than this fails (transient).
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// A 429 or 5xx asking to wait at most this long (`Retry-After`, `x-ratelimit-reset-*`) is
    /// waited out within the attempt; a longer one ends the attempt as a transient failure,
    /// retried with the queue's backoff.
    #[serde(with = "humantime_serde")]
    pub max_retry_wait: Duration,
    /// Questions of one `ai.hints` job at most.
    pub max_questions: usize,
    /// Requests of one job in flight at once.
    pub concurrency: usize,
    /// Prices in USD per million tokens, for the cost recorded with every request: input
    /// tokens, input tokens the provider served from its prompt cache, output tokens.
    pub input_price_per_million: f64,
    pub cached_input_price_per_million: f64,
    pub output_price_per_million: f64,
    /// Tokens (input and output) a minute at most across every process that shares the Redis
    /// prefix, as the provider counts them; absent or 0, unlimited. Requests a minute are the
    /// `ai` queue's `rate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_minute: Option<u64>,
    /// Output tokens a reply is reckoned to take before it comes, for the tokens-per-minute
    /// limit (the reply's `usage` then settles the difference).
    pub output_tokens_estimate: u64,
    /// USD the AI jobs may spend per UTC day, by the prices above; absent, no cap. Once the
    /// day's spend reaches it, AI jobs send no new request and wait, without failing, until the
    /// next UTC day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_spend_cap_usd: Option<f64>,
    /// Answers one `ai.evaluate` job grades at most (those of its attempt awaiting evaluation).
    pub max_answers: usize,
    /// The most characters of an answer `ai.evaluate` sends; a longer one is not graded.
    pub max_answer_chars: usize,
}

/// The `index.*` jobs (docs/SEARCH.md): the indexes, the Meilisearch server, and the
/// platform's database that rebuilds read. The Meilisearch key comes from the environment
/// (`MEILISEARCH_API_KEY`), the platform's database URL from the variable `source.url_env`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchConfig {
    /// Documents of one `index.upsert`, or deletions of one `index.delete`, at most.
    pub max_documents: usize,
    /// Rows of the source read and written at a time by a rebuild (its memory is about this
    /// many documents).
    pub rebuild_batch: usize,
    pub source: SearchSourceConfig,
    pub meilisearch: MeilisearchConfig,
    /// The indexes by name (`[search.indexes.NAME]`); none by default.
    #[serde(default)]
    pub indexes: BTreeMap<String, IndexConfig>,
}

/// The platform's database, read by `index.rebuild` through a read-only connection.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchSourceConfig {
    /// The environment variable holding its URL (never the URL itself: it has a password).
    pub url_env: String,
}

/// The Meilisearch server of indexes with `backend = "meilisearch"`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeilisearchConfig {
    pub url: String,
    /// One HTTP request longer than this fails (retried).
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// A task not finished this long after it was enqueued fails the attempt (retried).
    #[serde(with = "humantime_serde")]
    pub task_timeout: Duration,
    /// How often a task's status is asked for.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// A 429 or 5xx is asked again this many times within an attempt (waiting 200 ms, 400 ms,
    /// ... or what `Retry-After` says), then the attempt fails and the queue's backoff takes over.
    pub max_retries: u32,
}

/// Where an index is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SearchBackend {
    /// The daemon's own Postgres: full-text search with `tsvector`, `pg_trgm` for typos.
    Postgres,
    /// A Meilisearch server over HTTP.
    Meilisearch,
}

impl SearchBackend {
    pub fn name(self) -> &'static str {
        match self {
            SearchBackend::Postgres => "postgres",
            SearchBackend::Meilisearch => "meilisearch",
        }
    }
}

/// One index: where it is kept, what its documents hold, and where a rebuild reads it from.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexConfig {
    #[serde(default = "defaults::backend")]
    pub backend: SearchBackend,
    #[serde(default = "defaults::primary_key")]
    pub primary_key: String,
    /// The field whose value orders writes of one document: the newer wins.
    #[serde(default = "defaults::version_field")]
    pub version_field: String,
    #[serde(default = "defaults::version_type")]
    pub version_type: VersionType,
    /// Postgres' text-search configuration: `simple` (lower-cases, no stemming: right for
    /// Hindi and other scripts Postgres has no stemmer for), `english`, `french`, ...
    #[serde(default = "defaults::text_search_config")]
    pub text_search_config: String,
    /// The fields searched and their weight, A (most) to D.
    pub searchable: BTreeMap<String, Weight>,
    /// Short fields (titles, names) matched by trigram similarity too, for typos.
    #[serde(default)]
    pub typo_fields: Vec<String>,
    #[serde(default)]
    pub filterable: Vec<String>,
    /// Meilisearch's sortable attributes.
    #[serde(default)]
    pub sortable: Vec<String>,
    /// Kept and returned, neither searched nor filtered.
    #[serde(default)]
    pub stored: Vec<String>,
    /// Refuse a document with a field named in none of the lists above.
    #[serde(default = "defaults::strict")]
    pub strict: bool,
    #[serde(default = "defaults::max_document_bytes")]
    pub max_document_bytes: usize,
    /// The SQL query a rebuild runs on the platform's database: one row per document, one
    /// column per field. Absent: the index cannot be rebuilt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

mod defaults {
    use super::SearchBackend;
    use quizworker_jobs::indexing::VersionType;

    pub fn backend() -> SearchBackend {
        SearchBackend::Postgres
    }
    pub fn primary_key() -> String {
        "id".into()
    }
    pub fn version_field() -> String {
        "version".into()
    }
    pub fn version_type() -> VersionType {
        VersionType::Integer
    }
    pub fn text_search_config() -> String {
        "simple".into()
    }
    pub fn strict() -> bool {
        true
    }
    pub fn max_document_bytes() -> usize {
        64 * 1024
    }
}

impl IndexConfig {
    /// What a document of this index may hold, for the checks of `quizworker_jobs::indexing`.
    pub fn schema(&self) -> IndexSchema {
        IndexSchema {
            primary_key: self.primary_key.clone(),
            version_field: self.version_field.clone(),
            version_type: self.version_type,
            searchable: self.searchable.clone(),
            typo_fields: self.typo_fields.clone(),
            filterable: self.filterable.clone(),
            sortable: self.sortable.clone(),
            stored: self.stored.clone(),
            strict: self.strict,
            max_document_bytes: self.max_document_bytes,
        }
    }
}

/// The longest index name: Meilisearch's uid limit less the suffix of a rebuild's index.
pub const MAX_INDEX_NAME_BYTES: usize = 64;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// Jobs of this queue run at once in one process.
    pub concurrency: usize,
    /// One attempt longer than this fails (and is retried).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Attempts before a job fails for good, unless its envelope says otherwise.
    pub max_attempts: u32,
    pub backoff: BackoffConfig,
    /// At most this many units per second, minute or hour across every process that shares the
    /// Redis prefix (`runtime::rate_limit`); absent, unlimited. A unit is a job, except on a
    /// queue whose handler meters itself (`families::meters_own_rate`: an email message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<Rate>,
}

/// A rate limit: `count` units per second, minute or hour. Written `"20/s"`, `"600/min"` or
/// `"5000/h"` (also `sec`, `m`, `hour`), and written back in the short form (`"20/s"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    count: u32,
    unit: RateUnit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateUnit {
    Second,
    Minute,
    Hour,
}

impl RateUnit {
    fn seconds(self) -> u64 {
        match self {
            RateUnit::Second => 1,
            RateUnit::Minute => 60,
            RateUnit::Hour => 3600,
        }
    }

    fn name(self) -> &'static str {
        match self {
            RateUnit::Second => "s",
            RateUnit::Minute => "min",
            RateUnit::Hour => "h",
        }
    }
}

/// A rate that does not parse: the value (its first 40 bytes or so) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{value:?} is not a rate: {reason}; write COUNT/UNIT with a unit of s, min or h (e.g. \"20/s\", \"600/min\", \"5000/h\")"
)]
pub struct RateError {
    value: String,
    reason: String,
}

impl Rate {
    /// The most units a second the limiter can space: one microsecond apart, its clock's grain.
    pub const MAX_PER_SECOND: u64 = 1_000_000;

    pub fn new(count: u32, unit: RateUnit) -> Result<Rate, RateError> {
        let rate = Rate { count, unit };
        if count == 0 {
            return Err(rate.error("the count must be at least 1"));
        }
        if u64::from(count) > Self::MAX_PER_SECOND * unit.seconds() {
            return Err(rate.error(&format!(
                "more than {}/s, the most the limiter can space (1 µs apart)",
                Self::MAX_PER_SECOND
            )));
        }
        Ok(rate)
    }

    fn error(self, reason: &str) -> RateError {
        RateError {
            value: self.to_string(),
            reason: reason.to_owned(),
        }
    }

    pub fn count(self) -> u32 {
        self.count
    }

    pub fn unit(self) -> RateUnit {
        self.unit
    }

    /// Units per second, as `/metrics` shows the limit.
    pub fn per_second(self) -> f64 {
        f64::from(self.count) / self.unit.seconds() as f64
    }

    /// The time between two units, in whole microseconds rounded up, so that the rounding
    /// never lets more through than the rate says (3/s is 333,334 µs apart).
    pub fn emission_interval_micros(self) -> u64 {
        (self.unit.seconds() * 1_000_000).div_ceil(u64::from(self.count))
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.count, self.unit.name())
    }
}

impl FromStr for Rate {
    type Err = RateError;

    fn from_str(text: &str) -> Result<Rate, RateError> {
        let error = |reason: String| RateError {
            value: shorten(text, 40).into_owned(),
            reason,
        };
        let Some((count, unit)) = text.split_once('/') else {
            return Err(error("no `/` between the count and the unit".into()));
        };
        let (count, unit) = (count.trim(), unit.trim());
        let count: u32 = count.parse().map_err(|_| {
            error(format!(
                "the count `{}` is not a whole number from 1 to {}",
                shorten(count, 20),
                u32::MAX
            ))
        })?;
        let unit = match unit {
            "s" | "sec" => RateUnit::Second,
            "min" | "m" => RateUnit::Minute,
            "h" | "hour" => RateUnit::Hour,
            other => return Err(error(format!("unknown unit `{}`", shorten(other, 20)))),
        };
        Rate::new(count, unit).map_err(|e| error(e.reason))
    }
}

impl Serialize for Rate {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Rate, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Rate;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a rate such as \"20/s\", \"600/min\" or \"5000/h\"")
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Rate, E> {
                text.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

/// Exponential backoff with jitter: attempt n waits `min(cap, base * 2^(n-1))`, then a random
/// part of `jitter` of it is taken off, so retries of jobs that failed together spread out.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackoffConfig {
    #[serde(with = "humantime_serde")]
    pub base: Duration,
    #[serde(with = "humantime_serde")]
    pub cap: Duration,
    pub jitter: f64,
}

impl Default for Config {
    fn default() -> Self {
        let queue = |concurrency, timeout_secs, max_attempts| QueueConfig {
            concurrency,
            timeout: Duration::from_secs(timeout_secs),
            max_attempts,
            backoff: BackoffConfig {
                base: Duration::from_secs(2),
                cap: Duration::from_secs(600),
                jitter: 0.2,
            },
            rate: None,
        };
        Config {
            redis: RedisConfig {
                url: "redis://127.0.0.1:6379".into(),
                prefix: "quizworker:".into(),
                response_timeout: Duration::from_secs(5),
            },
            postgres: PostgresConfig {
                url: "postgres://postgres@127.0.0.1:5432/quizworker".into(),
                max_connections: 10,
                migrate_on_start: true,
            },
            worker: WorkerConfig {
                heartbeat_interval: Duration::from_secs(5),
                missed_heartbeats: 3,
                poll_interval: Duration::from_millis(250),
                fetch_batch: 200,
                shutdown_timeout: Duration::from_secs(30),
                pause_check_interval: Duration::from_millis(250),
            },
            http: HttpConfig {
                listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
                queue_sample_interval: Duration::from_secs(5),
            },
            journal: JournalConfig {
                max_batch: 2000,
                progress_interval: Duration::from_millis(500),
            },
            maintenance: MaintenanceConfig {
                interval: Duration::from_secs(60),
                keep_completed: Duration::from_secs(7 * 24 * 3600),
                keep_failed: Duration::from_secs(30 * 24 * 3600),
                keep_cancelled: Duration::from_secs(30 * 24 * 3600),
            },
            exports: ExportsConfig {
                directory: "/var/lib/quizworker/exports".into(),
                fonts: DEFAULT_FONTS.map(PathBuf::from).into(),
                institution: String::new(),
                logo: None,
                timezone: chrono_tz::UTC,
            },
            email: EmailConfig {
                templates: "/etc/quizworker/templates".into(),
                default_locale: "en".into(),
                from: "quizworker <quizworker@localhost>".into(),
                message_id_domain: String::new(),
                max_bulk_recipients: 10_000,
                max_message_recipients: 50,
                max_attachment_bytes: 10 * 1024 * 1024,
                attachment_wait: six_hours(),
                bulk_concurrency: 8,
                unsubscribe_url: String::new(),
                smtp: SmtpConfig {
                    host: "127.0.0.1".into(),
                    port: 25,
                    security: SmtpSecurity::Plain,
                    timeout: Duration::from_secs(30),
                    pool_size: 8,
                    ca_file: None,
                },
                dkim: None,
            },
            ai: AiConfig {
                base_url: "http://127.0.0.1:11434/v1".into(),
                model: "llama3.1:8b".into(),
                response_format: ResponseFormat::JsonSchema,
                connect_timeout: Duration::from_secs(10),
                request_timeout: Duration::from_secs(60),
                max_retry_wait: Duration::from_secs(30),
                max_questions: 50,
                concurrency: 4,
                input_price_per_million: 0.0,
                cached_input_price_per_million: 0.0,
                output_price_per_million: 0.0,
                tokens_per_minute: None,
                output_tokens_estimate: 300,
                daily_spend_cap_usd: None,
                max_answers: 50,
                max_answer_chars: 20_000,
            },
            outbox: OutboxConfig {
                url: String::new(),
                poll_interval: Duration::from_secs(1),
                batch: 1000,
                keep_relayed: Duration::from_secs(7 * 24 * 3600),
            },
            webhooks: WebhooksConfig {
                timeout: Duration::from_secs(10),
                max_attempts: 10,
                backoff: BackoffConfig {
                    base: Duration::from_secs(5),
                    cap: Duration::from_secs(3600),
                    jitter: 0.2,
                },
                concurrency: 32,
                max_response_bytes: 2048,
                endpoints: BTreeMap::new(),
            },
            search: SearchConfig {
                max_documents: 1000,
                rebuild_batch: 1000,
                source: SearchSourceConfig {
                    url_env: "PLATFORM_DATABASE_URL".into(),
                },
                meilisearch: MeilisearchConfig {
                    url: "http://127.0.0.1:7700".into(),
                    request_timeout: Duration::from_secs(30),
                    task_timeout: Duration::from_secs(120),
                    poll_interval: Duration::from_millis(100),
                    max_retries: 3,
                },
                indexes: BTreeMap::new(),
            },
            limits: Limits::default(),
            queues: BTreeMap::from([
                ("default".into(), queue(1000, 60, 5)),
                ("scoring".into(), queue(256, 300, 5)),
                // A bulk job sends its messages at the queue's rate: 10,000 at 20/s is over 8
                // minutes (config.toml says more).
                ("emails".into(), queue(16, 1800, 8)),
                ("exports".into(), queue(4, 900, 3)),
                ("ai".into(), queue(8, 120, 5)),
                ("indexing".into(), queue(8, 300, 5)),
            ]),
        }
    }
}

impl Config {
    /// Defaults, then the file (if it exists), then `QUIZWORKER_*` variables (`__` separates
    /// levels: `QUIZWORKER_QUEUES__SCORING__CONCURRENCY=32`), then `REDIS_URL` and `DATABASE_URL`.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if path.exists() {
            figment = figment.merge(Toml::file_exact(path));
        }
        // QUIZWORKER_CONFIG and QUIZWORKER_LOG_FORMAT are the command line's (src/cli.rs).
        figment = figment
            .merge(
                Env::prefixed("QUIZWORKER_")
                    .split("__")
                    .ignore(&["CONFIG", "LOG_FORMAT"]),
            )
            .merge(Env::raw().only(&["REDIS_URL"]).map(|_| "redis.url".into()))
            .merge(
                Env::raw()
                    .only(&["DATABASE_URL"])
                    .map(|_| "postgres.url".into()),
            );
        let config = extract(&figment)
            .with_context(|| format!("invalid configuration (file {})", path.display()))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        for name in self.queues.keys() {
            name.parse::<Queue>()
                .with_context(|| format!("in [queues.{name}]"))?;
        }
        for queue in Queue::ALL {
            let Some(q) = self.queues.get(queue.name()) else {
                bail!("[queues.{queue}] is missing: every queue needs its settings");
            };
            if q.concurrency == 0 {
                bail!("queues.{queue}.concurrency must be at least 1");
            }
            if q.max_attempts == 0 {
                bail!("queues.{queue}.max_attempts must be at least 1");
            }
            if q.timeout.is_zero() {
                bail!("queues.{queue}.timeout must be more than 0s");
            }
            let b = q.backoff;
            if b.base.is_zero() || b.cap < b.base {
                bail!("queues.{queue}.backoff needs 0 < base <= cap (got base {b:?})");
            }
            if !(0.0..=1.0).contains(&b.jitter) {
                bail!(
                    "queues.{queue}.backoff.jitter must be between 0 and 1 (got {})",
                    b.jitter
                );
            }
        }
        if self.worker.fetch_batch == 0 {
            bail!("worker.fetch_batch must be at least 1");
        }
        if self.worker.missed_heartbeats == 0 {
            bail!("worker.missed_heartbeats must be at least 1");
        }
        if self.maintenance.interval.is_zero() {
            bail!("maintenance.interval must be more than 0s");
        }
        if self.http.queue_sample_interval.is_zero() {
            bail!("http.queue_sample_interval must be more than 0s");
        }
        if self.exports.directory.as_os_str().is_empty() {
            bail!("exports.directory must not be empty");
        }
        if self.journal.max_batch == 0 {
            bail!("journal.max_batch must be at least 1");
        }
        self.validate_email()?;
        self.validate_ai()?;
        if self.outbox.batch == 0 || self.outbox.poll_interval.is_zero() {
            bail!("outbox.batch must be at least 1 and outbox.poll_interval more than 0s");
        }
        self.validate_webhooks()?;
        self.validate_search()?;
        self.validate_limits()
    }

    fn validate_webhooks(&self) -> anyhow::Result<()> {
        let webhooks = &self.webhooks;
        if webhooks.max_attempts == 0 || webhooks.concurrency == 0 || webhooks.timeout.is_zero() {
            bail!(
                "webhooks.max_attempts and webhooks.concurrency must be at least 1, and \
                 webhooks.timeout more than 0s"
            );
        }
        let b = webhooks.backoff;
        if b.base.is_zero() || b.cap < b.base || !(0.0..=1.0).contains(&b.jitter) {
            bail!("webhooks.backoff needs 0 < base <= cap and a jitter from 0 to 1");
        }
        for (name, endpoint) in &webhooks.endpoints {
            let url = reqwest::Url::parse(&endpoint.url).with_context(|| {
                format!(
                    "webhooks.endpoints.{name}.url `{}` is not a URL",
                    endpoint.url
                )
            })?;
            if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
                bail!("webhooks.endpoints.{name}.url must be an http(s) URL with a host");
            }
            if endpoint.secret_env.is_empty() {
                bail!("webhooks.endpoints.{name}.secret_env must name an environment variable");
            }
            // Those are read as settings, and a secret is not one.
            if endpoint.secret_env.starts_with("QUIZWORKER_") {
                bail!(
                    "webhooks.endpoints.{name}.secret_env: a variable starting with QUIZWORKER_ \
                     is read as a setting; name another (e.g. LMS_WEBHOOK_SECRET)"
                );
            }
            if let Some(kind) = endpoint
                .kinds
                .iter()
                .find(|kind| catalogue::kind(kind).is_none())
            {
                bail!(
                    "webhooks.endpoints.{name}.kinds: unknown job kind `{}`",
                    shorten(kind, 100)
                );
            }
        }
        Ok(())
    }

    fn validate_email(&self) -> anyhow::Result<()> {
        let email = &self.email;
        quizworker_jobs::email::templates::check_locale(&email.default_locale)
            .context("email.default_locale")?;
        email
            .from
            .parse::<lettre::message::Mailbox>()
            .with_context(|| format!("email.from `{}` is not an address", email.from))?;
        if email.max_bulk_recipients == 0 || email.max_message_recipients == 0 {
            bail!("email.max_bulk_recipients and email.max_message_recipients must be at least 1");
        }
        if email.bulk_concurrency == 0 || email.smtp.pool_size == 0 {
            bail!("email.bulk_concurrency and email.smtp.pool_size must be at least 1");
        }
        if email.smtp.ca_file.is_some() && email.smtp.security == SmtpSecurity::Plain {
            bail!(
                "email.smtp.ca_file is for TLS, and email.smtp.security = \"plain\" uses none: \
                 set security to \"starttls\" or \"tls\", or remove ca_file"
            );
        }
        if email.smtp.timeout.is_zero() {
            bail!("email.smtp.timeout must be more than 0s");
        }
        if !email.unsubscribe_url.is_empty() && !email.unsubscribe_url.starts_with("https://") {
            bail!(
                "email.unsubscribe_url must be an https:// URL (RFC 8058), got `{}`",
                email.unsubscribe_url
            );
        }
        Ok(())
    }

    fn validate_ai(&self) -> anyhow::Result<()> {
        let ai = &self.ai;
        if !(ai.base_url.starts_with("http://") || ai.base_url.starts_with("https://")) {
            bail!(
                "ai.base_url must be an http:// or https:// URL, got `{}`",
                crate::ops::redact::redacted(&ai.base_url)
            );
        }
        if ai.model.trim().is_empty() {
            bail!("ai.model must not be empty");
        }
        if ai.connect_timeout.is_zero() || ai.request_timeout.is_zero() {
            bail!("ai.connect_timeout and ai.request_timeout must be more than 0s");
        }
        if ai.max_questions == 0 || ai.concurrency == 0 {
            bail!("ai.max_questions and ai.concurrency must be at least 1");
        }
        for (name, price) in [
            ("input_price_per_million", ai.input_price_per_million),
            (
                "cached_input_price_per_million",
                ai.cached_input_price_per_million,
            ),
            ("output_price_per_million", ai.output_price_per_million),
        ] {
            if !price.is_finite() || price < 0.0 {
                bail!("ai.{name} must be a number of at least 0 (got {price})");
            }
        }
        if let Some(cap) = ai.daily_spend_cap_usd
            && (!cap.is_finite() || cap < 0.0)
        {
            bail!("ai.daily_spend_cap_usd must be a number of at least 0 (got {cap})");
        }
        if ai.max_answers == 0 || ai.max_answer_chars == 0 {
            bail!("ai.max_answers and ai.max_answer_chars must be at least 1");
        }
        Ok(())
    }

    fn validate_search(&self) -> anyhow::Result<()> {
        let search = &self.search;
        if search.max_documents == 0 || search.rebuild_batch == 0 {
            bail!("search.max_documents and search.rebuild_batch must be at least 1");
        }
        if search.source.url_env.trim().is_empty() {
            bail!("search.source.url_env must name an environment variable");
        }
        let meili = &search.meilisearch;
        if !(meili.url.starts_with("http://") || meili.url.starts_with("https://")) {
            bail!(
                "search.meilisearch.url must be an http:// or https:// URL, got `{}`",
                crate::ops::redact::redacted(&meili.url)
            );
        }
        if meili.request_timeout.is_zero()
            || meili.task_timeout.is_zero()
            || meili.poll_interval.is_zero()
        {
            bail!(
                "search.meilisearch.request_timeout, task_timeout and poll_interval must be more than 0s"
            );
        }
        for (name, index) in &search.indexes {
            let fits = !name.is_empty()
                && name.len() <= MAX_INDEX_NAME_BYTES
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !fits {
                bail!(
                    "[search.indexes.{}]: an index name is 1 to {MAX_INDEX_NAME_BYTES} bytes of A-Z a-z 0-9 - and _",
                    shorten(name, 80)
                );
            }
            index
                .schema()
                .check()
                .with_context(|| format!("in [search.indexes.{name}]"))?;
            let config = &index.text_search_config;
            if config.is_empty()
                || !config
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
            {
                bail!(
                    "search.indexes.{name}.text_search_config must name a text-search configuration (e.g. simple, english), got `{}`",
                    shorten(config, 80)
                );
            }
            if index.source.as_deref().is_some_and(|s| s.trim().is_empty()) {
                bail!("search.indexes.{name}.source is empty: give the SQL query, or remove it");
            }
        }
        Ok(())
    }

    fn validate_limits(&self) -> anyhow::Result<()> {
        let limits = &self.limits;
        if limits.max_job_bytes == 0 {
            bail!("limits.max_job_bytes must be at least 1");
        }
        let longest_kind = catalogue::KINDS.iter().map(|k| k.name.len()).max();
        if let Some(longest) = longest_kind
            && limits.max_kind_bytes < longest
        {
            bail!(
                "limits.max_kind_bytes must be at least {longest}, the length of the longest kind (got {})",
                limits.max_kind_bytes
            );
        }
        // An envelope is one level and its payload at least another.
        if !(2..=MAX_JSON_DEPTH_LIMIT).contains(&limits.max_json_depth) {
            bail!(
                "limits.max_json_depth must be from 2 to {MAX_JSON_DEPTH_LIMIT}, the most the JSON parser takes (got {})",
                limits.max_json_depth
            );
        }
        Ok(())
    }

    pub fn queue(&self, queue: Queue) -> &QueueConfig {
        // validate() made sure every queue has its settings.
        &self.queues[queue.name()]
    }

    /// Jobs a worker of `queue` takes from Redis in one call: `worker.fetch_batch`, but at most
    /// twice the queue's concurrency. A worker holds what it fetched until a slot frees, so a
    /// batch of 200 on a queue that runs 8 at once kept up to 192 jobs from every other process
    /// (and their payloads in this one's memory: 240 MiB for 100 KB `index.upsert` jobs).
    pub fn fetch_batch(&self, queue: Queue) -> usize {
        let concurrency = self.queue(queue).concurrency;
        self.worker
            .fetch_batch
            .min(concurrency.saturating_mul(2))
            .max(1)
    }

    /// The name apalis-redis uses for a queue: every key of the queue starts with it.
    pub fn redis_queue_name(&self, queue: Queue) -> String {
        format!("{}{}", self.redis.prefix, queue)
    }
}

/// The settings out of `figment`. A rate that does not parse is named as the operator wrote
/// its key (`queues.emails.rate: "20/x" is not a rate: ...`), with where it was set; other
/// errors read as figment words them.
fn extract(figment: &Figment) -> anyhow::Result<Config> {
    let error = match figment.extract::<Config>() {
        Ok(config) => return Ok(config),
        Err(error) => error,
    };
    for e in error.clone() {
        if let [section, queue, key] = e.path.as_slice()
            && section == "queues"
            && key == "rate"
        {
            let source = match &e.metadata {
                Some(md) => match &md.source {
                    Some(source) => format!(" (set in {source} {})", md.name),
                    None => format!(" (set in {})", md.name),
                },
                None => String::new(),
            };
            bail!("queues.{}.rate: {}{source}", shorten(queue, 40), e.kind);
        }
    }
    Err(error.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_config_file_is_valid_and_matches_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let from_file: Config = toml_from_str(&text);
        from_file.validate().unwrap();
        let defaults = Config::default();
        assert_eq!(
            serde_json::to_value(&from_file).unwrap(),
            serde_json::to_value(&defaults).unwrap(),
            "config.toml and Config::default() disagree"
        );
    }

    #[test]
    fn a_worker_fetches_at_most_twice_its_queues_concurrency() {
        let config = Config::default();
        assert_eq!(config.fetch_batch(Queue::Default), 200, "concurrency 1000");
        assert_eq!(config.fetch_batch(Queue::Indexing), 16, "concurrency 8");
        assert_eq!(config.fetch_batch(Queue::Exports), 8, "concurrency 4");
    }

    fn toml_from_str(text: &str) -> Config {
        Figment::from(Toml::string(text)).extract().unwrap()
    }

    #[test]
    fn a_bad_value_is_named() {
        let mut config = Config::default();
        config.queues.get_mut("emails").unwrap().backoff.jitter = 2.0;
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("queues.emails.backoff.jitter"), "{err}");
    }

    #[test]
    fn limits_out_of_range_are_named() {
        let defaults = Limits::default();
        let cases = [
            (
                Limits {
                    max_job_bytes: 0,
                    ..defaults
                },
                "limits.max_job_bytes must be at least 1",
            ),
            (
                Limits {
                    max_kind_bytes: 5,
                    ..defaults
                },
                "limits.max_kind_bytes must be at least 22",
            ),
            (
                Limits {
                    max_json_depth: 128,
                    ..defaults
                },
                "limits.max_json_depth must be from 2 to 127",
            ),
        ];
        for (limits, expected) in cases {
            let config = Config {
                limits,
                ..Config::default()
            };
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains(expected), "{err}");
        }
    }

    #[test]
    fn rates_parse_and_print_in_short_form() {
        for (text, count, unit, printed) in [
            ("20/s", 20, RateUnit::Second, "20/s"),
            ("5/sec", 5, RateUnit::Second, "5/s"),
            ("600/min", 600, RateUnit::Minute, "600/min"),
            ("1/m", 1, RateUnit::Minute, "1/min"),
            ("5000/h", 5000, RateUnit::Hour, "5000/h"),
            ("2/hour", 2, RateUnit::Hour, "2/h"),
            (" 20 / s ", 20, RateUnit::Second, "20/s"),
            ("1000000/s", 1_000_000, RateUnit::Second, "1000000/s"),
        ] {
            let rate: Rate = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!((rate.count(), rate.unit()), (count, unit), "{text}");
            assert_eq!(rate.to_string(), printed, "{text}");
            assert_eq!(printed.parse::<Rate>(), Ok(rate), "{printed} reads back");
        }
    }

    #[test]
    fn a_rate_knows_its_spacing() {
        let rate = |text: &str| text.parse::<Rate>().unwrap();
        assert_eq!(rate("20/s").emission_interval_micros(), 50_000);
        assert_eq!(rate("20/s").per_second(), 20.0);
        assert_eq!(rate("600/min").per_second(), 10.0);
        assert_eq!(rate("5000/h").emission_interval_micros(), 720_000);
        // Rounded up: never more than the rate.
        assert_eq!(rate("3/s").emission_interval_micros(), 333_334);
        assert_eq!(rate("1000000/s").emission_interval_micros(), 1);
    }

    #[test]
    fn a_bad_rate_says_what_is_wrong() {
        for (text, reason) in [
            ("20/x", "unknown unit `x`"),
            ("20/", "unknown unit ``"),
            ("20", "no `/` between the count and the unit"),
            ("", "no `/`"),
            ("0/s", "the count must be at least 1"),
            (
                "-1/s",
                "the count `-1` is not a whole number from 1 to 4294967295",
            ),
            ("1.5/s", "the count `1.5` is not a whole number"),
            ("99999999999/s", "is not a whole number"),
            ("1000001/s", "more than 1000000/s"),
        ] {
            let err = text.parse::<Rate>().unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("{text:?} is not a rate: ")),
                "{err}"
            );
            assert!(err.contains(reason), "{text}: {err}");
            assert!(err.contains(r#"e.g. "20/s""#), "{err}");
        }
        let long = format!("{}/s", "9".repeat(500));
        let err = long.parse::<Rate>().unwrap_err().to_string();
        assert!(err.len() < 300, "the value is quoted whole: {err}");
    }

    #[test]
    fn a_queue_takes_a_rate_and_writes_it_back() {
        let figment = Figment::from(Serialized::defaults(Config::default())).merge(Toml::string(
            "[queues.emails]\nrate = \"600/min\"\n[queues.ai]\nrate = \"5/sec\"\n",
        ));
        let config = extract(&figment).unwrap();
        config.validate().unwrap();
        assert_eq!(
            config.queue(Queue::Emails).rate,
            Some("600/min".parse().unwrap())
        );
        assert_eq!(
            config.queue(Queue::Ai).rate.map(|r| r.to_string()),
            Some("5/s".into())
        );
        assert_eq!(config.queue(Queue::Default).rate, None);
        let json = serde_json::to_value(&config).unwrap();
        assert_eq!(json["queues"]["emails"]["rate"], "600/min");
        assert_eq!(json["queues"]["ai"]["rate"], "5/s");
        assert!(json["queues"]["default"].get("rate").is_none());
        // What is written reads back the same (figment's defaults are the serialized config).
        let again = extract(&Figment::from(Serialized::defaults(config.clone()))).unwrap();
        assert_eq!(serde_json::to_value(&again).unwrap(), json);
    }

    #[test]
    fn a_bad_rate_in_the_config_names_its_queue_and_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "[queues.emails]\nrate = \"20/x\"\n").unwrap();
        let err = format!("{:#}", Config::load(&path).unwrap_err());
        assert!(
            err.contains(r#"queues.emails.rate: "20/x" is not a rate: unknown unit `x`"#),
            "{err}"
        );
        assert!(err.contains("config.toml"), "where it was set: {err}");

        for (toml, expected) in [
            ("[queues.ai]\nrate = 20\n", "queues.ai.rate: invalid type"),
            (
                "[queues.default]\nrate = \"0/s\"\n",
                "queues.default.rate: \"0/s\" is not a rate",
            ),
            // The queue's table still refuses a key it does not know.
            (
                "[queues.emails]\nrte = \"20/s\"\n",
                "unknown field: found `rte`",
            ),
        ] {
            let figment =
                Figment::from(Serialized::defaults(Config::default())).merge(Toml::string(toml));
            let err = format!("{:#}", extract(&figment).unwrap_err());
            assert!(err.contains(expected), "{toml}: {err}");
        }
    }

    #[test]
    fn an_unknown_queue_is_named() {
        let mut config = Config::default();
        let q = config.queues["default"].clone();
        config.queues.insert("scorng".into(), q);
        let err = format!("{:#}", config.validate().unwrap_err());
        assert!(err.contains("unknown queue `scorng`"), "{err}");
    }
}
