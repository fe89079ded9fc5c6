//! What the benchmark programs (throughput, scoring, exports, email, soak) share: the harness
//! their `main` is (harness.rs), the run's own Postgres database and Redis prefix, the jobs they
//! enqueue and wait for, the daemon they start and stop and its /metrics, the Markdown report,
//! and small formatters. Each bench declares `mod common;`, so this is compiled into each of them;
//! one copy here keeps their setup, cleanup and report alike, which their figures are compared on.
#![allow(dead_code)] // each bench uses a different part of this module

pub mod cpu;
pub mod generated;
pub mod harness;

pub use harness::{KnobReader, main};

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use chrono::{DateTime, Utc};
use quizworker_jobs::{ENQUEUE_SCRIPT, Envelope, JobPayload};
use redis::aio::MultiplexedConnection;
use serde_json::Value;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, PgConnection};

pub const BIN: &str = env!("CARGO_BIN_EXE_quizworker");

/// The daemon must log "quizworker ready" within this...
pub const START_DEADLINE: Duration = Duration::from_secs(60);
/// ...and exit within this after SIGTERM (its own shutdown timeout is 30 s).
pub const STOP_DEADLINE: Duration = Duration::from_secs(60);

/// A request to the daemon's /metrics fails after this.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// How often a bench counts what the daemon has done while a backlog drains.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(250);
/// Waiting for the daemon fails once the count has not moved for this long.
pub const STALL_DEADLINE: Duration = Duration::from_secs(30);

/// The knob `name` from the environment, or `default` when it is not set.
fn env_or<T: FromStr>(name: &str, default: T) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    match std::env::var(name) {
        Ok(text) => text
            .trim()
            .parse()
            .map_err(|e| anyhow!("{name}={text:?} is not valid: {e}")),
        Err(std::env::VarError::NotPresent) => Ok(default),
        Err(e) => bail!("{name}: {e}"),
    }
}

/// How a bench wants its run set up: [`RunSpec::new`], then any of the other settings.
pub struct RunSpec {
    /// The queue the daemon runs (`quizworker run --queues <queue>`), without the prefix.
    queue: &'static str,
    /// The daemon's config file.
    config_toml: String,
    /// Settings for every `quizworker` command on top of the run's own, such as a concurrency.
    env: Vec<(&'static str, String)>,
    /// Whether to report Postgres' autovacuum setting, which the journal's size on disk needs.
    check_autovacuum: bool,
}

impl RunSpec {
    /// A daemon that runs `queue` with `config_toml` as its config file.
    pub fn new(queue: &'static str, config_toml: impl Into<String>) -> RunSpec {
        RunSpec {
            queue,
            config_toml: config_toml.into(),
            env: Vec::new(),
            check_autovacuum: false,
        }
    }

    /// The setting `name` for every `quizworker` command, over the config file's.
    pub fn env(mut self, name: &'static str, value: impl ToString) -> RunSpec {
        self.env.push((name, value.to_string()));
        self
    }

    /// Reports Postgres' autovacuum setting, which the journal's size on disk depends on.
    pub fn check_autovacuum(mut self) -> RunSpec {
        self.check_autovacuum = true;
        self
    }
}

/// One benchmark run's own database, Redis prefix and config file, removed by [`Run::teardown`].
pub struct Run {
    /// The URL the run was given: the server's maintenance connection (CREATE/DROP DATABASE).
    admin_url: String,
    pub db_name: String,
    /// `admin_url` pointing at the run's own database: what the daemon gets.
    pub db_url: String,
    pub redis_url: String,
    pub pg: PgPool,
    pub redis: MultiplexedConnection,
    /// Every Redis key of the run starts with it.
    pub prefix: String,
    /// The queue's name without the prefix, for `--queues`.
    queue_name: String,
    /// The Redis name of the queue: the prefix, then the queue's name.
    pub queue: String,
    /// The protocol's Lua script (docs/PROTOCOL.md), through which the benches enqueue.
    script: redis::Script,
    env: Vec<(&'static str, String)>,
    /// Holds the config file and the daemons' logs.
    pub dir: tempfile::TempDir,
}

impl Run {
    /// `tag` ("bench" or "soak") names the database (`quizworker_<tag>_<id>`) and the Redis
    /// prefix (`<tag>-<id>:`); `database_url` is the server's maintenance connection. Everything
    /// that can fail is done before CREATE DATABASE, so that a failed setup leaves nothing behind.
    pub async fn setup(
        tag: &'static str,
        spec: RunSpec,
        database_url: &str,
        redis_url: &str,
        report: &mut Report,
    ) -> Result<Run> {
        let client = redis::Client::open(redis_url)
            .with_context(|| format!("REDIS_URL {redis_url:?} is not a Redis URL"))?;
        // redis-rs gives up on a reply after 500 ms by default; a pipeline of a thousand scripts
        // (or of hundreds with 5 KB envelopes), or a SCAN, on a Redis busy with the daemon can
        // take longer without anything being wrong.
        let config =
            redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(30)));
        let mut redis = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .with_context(|| format!("cannot connect to Redis at {redis_url}"))?;
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut redis)
            .await
            .context("Redis INFO server")?;
        let redis_version = info_field(&info, "redis_version").unwrap_or("unknown".into());
        report.machine("Redis server (INFO redis_version)", redis_version);

        let dir = tempfile::tempdir().context("cannot create a temp dir")?;
        fs::write(dir.path().join("config.toml"), &spec.config_toml)
            .context("cannot write the config file")?;

        let id = ulid::Ulid::new();
        let db_name = format!("quizworker_{tag}_{}", id.to_string().to_lowercase());
        let db_url = with_database(database_url, &db_name)?;
        // Lazy: it connects on first use, so it cannot fail after the database exists.
        let pg = PgPoolOptions::new()
            .max_connections(2)
            .connect_lazy(&db_url)
            .context("DATABASE_URL is not a Postgres URL")?;

        let mut admin = PgConnection::connect(database_url)
            .await
            .with_context(|| format!("cannot connect to Postgres at {database_url}"))?;
        let pg_version: String = sqlx::query_scalar("SHOW server_version")
            .fetch_one(&mut admin)
            .await
            .context("SHOW server_version")?;
        report.machine("PostgreSQL (SHOW server_version)", pg_version);
        if spec.check_autovacuum {
            let autovacuum: String = sqlx::query_scalar("SHOW autovacuum")
                .fetch_one(&mut admin)
                .await
                .context("SHOW autovacuum")?;
            if autovacuum != "on" {
                report.note(
                    "autovacuum is off on this Postgres server: the space of the journal rows \
                     maintenance deletes is never made reusable, so the journal's size on disk \
                     grows with every job even while its row count stays flat: read the journal's \
                     rows, not its MiB."
                        .into(),
                );
            }
            report.machine("PostgreSQL autovacuum (SHOW autovacuum)", autovacuum);
        }
        sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE \"{db_name}\"")))
            .execute(&mut admin)
            .await
            .with_context(|| format!("CREATE DATABASE {db_name}"))?;
        let _ = admin.close().await;
        eprintln!("{tag}: database {db_name}, Redis prefix {tag}-{id}:");

        let prefix = format!("{tag}-{id}:");
        Ok(Run {
            admin_url: database_url.to_owned(),
            db_name,
            db_url,
            redis_url: redis_url.to_owned(),
            pg,
            redis,
            queue_name: spec.queue.to_owned(),
            queue: format!("{prefix}{}", spec.queue),
            prefix,
            script: redis::Script::new(ENQUEUE_SCRIPT),
            env: spec.env,
            dir,
        })
    }

    /// `quizworker migrate` against the run's database.
    pub fn migrate(&self) -> Result<()> {
        let output = self
            .command()
            .arg("migrate")
            .output()
            .context("cannot run quizworker migrate")?;
        ensure!(
            output.status.success(),
            "quizworker migrate failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(())
    }

    /// `quizworker` with this run's config, database, Redis prefix, extra settings and log level.
    pub fn command(&self) -> Command {
        let mut command = Command::new(BIN);
        // Only this run's settings: none from the environment the bench was started in.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("QUIZWORKER_") {
                command.env_remove(name);
            }
        }
        command
            .env("QUIZWORKER_CONFIG", self.dir.path().join("config.toml"))
            .env("DATABASE_URL", &self.db_url)
            .env("REDIS_URL", &self.redis_url)
            .env("QUIZWORKER_REDIS__PREFIX", &self.prefix)
            .envs(self.env.clone())
            // Warnings, plus the daemon's own info lines: "quizworker ready" is one (the soak
            // also reads "http listening" and "maintenance done"). This is also the daemon's
            // default level, so per-job spans cost what they cost in production.
            .env("RUST_LOG", "warn,quizworker=info");
        command
    }

    /// Starts `quizworker run --queues <queue>`, logging to `<log_name>.log` in the run's dir,
    /// and returns once it has logged that it is ready.
    pub async fn start_daemon(&self, log_name: &str) -> Result<Daemon> {
        self.start_daemon_with(log_name, &[]).await
    }

    /// [`Run::start_daemon`] with settings of this daemon's own over the run's, such as the port
    /// of a server the part started (the email bench's SMTP sink).
    pub async fn start_daemon_with(
        &self,
        log_name: &str,
        env: &[(&str, String)],
    ) -> Result<Daemon> {
        let log = self.dir.path().join(format!("{log_name}.log"));
        let file = fs::File::create(&log).context("cannot create the daemon's log file")?;
        let child = self
            .command()
            .envs(env.iter().map(|(name, value)| (name, value)))
            .args(["run", "--queues", &self.queue_name])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .context("cannot start quizworker run")?;
        let mut daemon = Daemon {
            child,
            log,
            ready_at: Instant::now(),
        };
        let started = Instant::now();
        while !daemon.log_text().contains("quizworker ready") {
            daemon.ensure_running()?;
            ensure!(
                started.elapsed() < START_DEADLINE,
                "the daemon did not get ready in {START_DEADLINE:?}:\n{}",
                daemon.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        daemon.ready_at = Instant::now();
        Ok(daemon)
    }

    /// Enqueues one job through the protocol's script; returns its id.
    pub async fn enqueue_one(&self, job: &impl JobPayload) -> Result<String> {
        let envelope = Envelope::new(job, Utc::now())?;
        let mut redis = self.redis.clone();
        let (id, created): (String, i64) = self
            .script
            .arg(&self.queue)
            .arg(envelope.encode())
            .invoke_async(&mut redis)
            .await
            .context("enqueue through the protocol script")?;
        ensure!(created == 1, "the script did not enqueue job {id}");
        Ok(id)
    }

    /// Loads the protocol's script into Redis, for [`Pipeline::enqueue`]'s EVALSHA calls.
    pub async fn pipeline(&self) -> Result<Pipeline> {
        let mut redis = self.redis.clone();
        let sha = self
            .script
            .load_async(&mut redis)
            .await
            .context("SCRIPT LOAD")?;
        Ok(Pipeline {
            redis,
            sha,
            queue: self.queue.clone(),
            bytes: 0,
        })
    }

    /// Fails unless `jobs` jobs wait in the queue's list of jobs ready to run.
    pub async fn ensure_waiting(&self, jobs: u64) -> Result<()> {
        let waiting: u64 = redis::cmd("LLEN")
            .arg(format!("{}:active", self.queue))
            .query_async(&mut self.redis.clone())
            .await
            .context("LLEN of the active list")?;
        ensure!(
            waiting == jobs,
            "{waiting} jobs wait in Redis, {jobs} expected"
        );
        Ok(())
    }

    /// How many jobs the journal shows completed.
    pub async fn completed_jobs(&self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE state = 'completed'")
            .fetch_one(&self.pg)
            .await
            .context("count completed jobs")?;
        Ok(n as u64)
    }

    /// Completed jobs; fails at once if one failed or waits for a retry.
    pub async fn completed_or_failing(&self) -> Result<u64> {
        let (completed, failing, error): (i64, i64, Option<String>) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE state = 'completed'),
                    count(*) FILTER (WHERE state IN ('failed', 'retrying')),
                    max(last_error) FILTER (WHERE state IN ('failed', 'retrying'))
               FROM jobs",
        )
        .fetch_one(&self.pg)
        .await
        .context("count completed jobs")?;
        ensure!(
            failing == 0,
            "{failing} jobs failed or wait for a retry; one: {}",
            error.unwrap_or_default()
        );
        Ok(completed as u64)
    }

    /// What the journal shows of the jobs of `kind` and of all attempts.
    pub async fn journal_counts(&self, kind: &str) -> Result<JournalCounts> {
        let (jobs, completed, one_attempt, attempts, completed_attempts) = sqlx::query_as(
            "SELECT count(*), count(*) FILTER (WHERE state = 'completed'),
                    count(*) FILTER (WHERE attempts = 1),
                    (SELECT count(*) FROM job_attempts),
                    (SELECT count(*) FROM job_attempts WHERE outcome = 'completed')
               FROM jobs WHERE kind = $1",
        )
        .bind(kind)
        .fetch_one(&self.pg)
        .await
        .context("count the jobs")?;
        Ok(JournalCounts {
            jobs,
            completed,
            one_attempt,
            attempts,
            completed_attempts,
        })
    }

    /// Seconds from the first start to the last finish the journal shows of the jobs created
    /// since `from` (a backlog); `None` if it shows none.
    pub async fn journal_secs_since(&self, from: DateTime<Utc>) -> Result<Option<f64>> {
        sqlx::query_scalar(
            "SELECT EXTRACT(EPOCH FROM max(j.finished_at) - min(a.started_at))::float8
               FROM jobs j JOIN job_attempts a ON a.job_id = j.id
              WHERE j.created_at >= $1",
        )
        .bind(from)
        .fetch_one(&self.pg)
        .await
        .context("read the backlog's first start and last finish")
    }

    /// The job as the journal has it, if it has it.
    pub async fn job(&self, id: &str) -> Result<Option<JobRow>> {
        let row: Option<(String, i16, Option<Value>, Option<String>)> =
            sqlx::query_as("SELECT state, progress, result, last_error FROM jobs WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pg)
                .await
                .context("read the job")?;
        Ok(row.map(|(state, progress, result, last_error)| JobRow {
            state,
            progress,
            result,
            last_error,
        }))
    }

    /// Waits until the journal shows the job completed; fails if it failed, or if neither its
    /// state nor its progress moved for [`STALL_DEADLINE`].
    pub async fn wait_for_job(&self, daemon: &mut Daemon, id: &str) -> Result<JobRow> {
        let mut last = (String::new(), -1);
        let mut last_change = Instant::now();
        loop {
            daemon.ensure_running()?;
            if let Some(row) = self.job(id).await? {
                match row.state.as_str() {
                    "completed" => return Ok(row),
                    "failed" | "retrying" => bail!(
                        "job {id} is {}: {}",
                        row.state,
                        row.last_error.unwrap_or_default()
                    ),
                    _ => {}
                }
                if (row.state.as_str(), row.progress) != (last.0.as_str(), last.1) {
                    last = (row.state, row.progress);
                    last_change = Instant::now();
                }
            }
            ensure!(
                last_change.elapsed() < STALL_DEADLINE,
                "job {id} did not move for {STALL_DEADLINE:?} (state {:?}, progress {}):\n{}",
                last.0,
                last.1,
                daemon.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Warnings and errors the daemons logged (every `daemon*` file of the run's dir): none are
    /// expected, but they do not fail the run.
    pub fn note_daemon_warnings(&self, report: &mut Report) {
        let Ok(entries) = fs::read_dir(self.dir.path()) else {
            return;
        };
        let mut lines: Vec<String> = entries
            .flatten()
            .filter(|entry| entry.file_name().to_string_lossy().starts_with("daemon"))
            .filter_map(|entry| fs::read_to_string(entry.path()).ok())
            .flat_map(|text| {
                text.lines()
                    .filter(|line| line.contains(" WARN ") || line.contains(" ERROR "))
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect();
        if lines.is_empty() {
            return;
        }
        let total = lines.len();
        lines.truncate(5);
        report.note(format!(
            "the daemon logged {total} warning or error lines; the first: `{}`",
            lines.join("` / `")
        ));
    }

    /// Removes the database and the Redis keys; reports what it did.
    pub async fn teardown(self, report: &mut Report) -> Result<()> {
        self.pg.close().await;
        // Both are attempted whatever becomes of the other.
        let keys = self.delete_redis_keys().await;
        let database = self.drop_database().await;
        match (keys, database) {
            (Ok(n), Ok(())) => {
                report.note(format!(
                    "cleanup: dropped database {}, unlinked {n} Redis keys {}*",
                    self.db_name, self.prefix
                ));
                Ok(())
            }
            (Err(e), Ok(())) | (Ok(_), Err(e)) => Err(e),
            (Err(keys), Err(database)) => Err(anyhow!("{keys:#}; {database:#}")),
        }
    }

    /// How many Redis keys start with the run's prefix.
    pub async fn count_keys(&self) -> Result<u64> {
        self.scan_keys(false).await
    }

    async fn delete_redis_keys(&self) -> Result<u64> {
        self.scan_keys(true).await
    }

    /// SCANs the run's keys and counts them or, with `unlink`, deletes them and counts what went.
    async fn scan_keys(&self, unlink: bool) -> Result<u64> {
        let mut redis = self.redis.clone();
        let pattern = format!("{}*", self.prefix);
        let mut cursor: u64 = 0;
        let mut n = 0;
        loop {
            // Deleting while scanning is fine: SCAN still returns every key that was there
            // throughout.
            let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut redis)
                .await
                .context("SCAN the run's Redis keys")?;
            if !unlink {
                n += keys.len() as u64;
            } else if !keys.is_empty() {
                let unlinked: u64 = redis::cmd("UNLINK")
                    .arg(&keys)
                    .query_async(&mut redis)
                    .await
                    .context("UNLINK the run's Redis keys")?;
                n += unlinked;
            }
            cursor = next;
            if cursor == 0 {
                return Ok(n);
            }
        }
    }

    async fn drop_database(&self) -> Result<()> {
        let mut admin = PgConnection::connect(&self.admin_url)
            .await
            .context("cannot connect to Postgres to drop the database")?;
        // FORCE (Postgres 13+) ends connections a killed daemon may have left behind.
        let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.db_name);
        sqlx::raw_sql(AssertSqlSafe(sql))
            .execute(&mut admin)
            .await
            .with_context(|| format!("DROP DATABASE {}", self.db_name))?;
        let _ = admin.close().await;
        Ok(())
    }
}

/// Pipelines of EVALSHA calls of the protocol's script onto the run's queue: how the benches fill
/// a backlog. It owns its connection, so that a task can own it (the soak's producer).
pub struct Pipeline {
    redis: MultiplexedConnection,
    sha: String,
    queue: String,
    /// The envelopes' bytes enqueued so far.
    pub bytes: usize,
}

impl Pipeline {
    /// Enqueues `jobs` in one pipeline, each in an envelope created as it is added; fails unless
    /// every one is enqueued. Returns their ids.
    pub async fn enqueue<J: JobPayload>(
        &mut self,
        jobs: impl IntoIterator<Item = J>,
    ) -> Result<Vec<String>> {
        let mut pipe = redis::pipe();
        let mut n = 0;
        for job in jobs {
            let envelope = Envelope::new(&job, Utc::now())?.encode();
            self.bytes += envelope.len();
            pipe.cmd("EVALSHA")
                .arg(&self.sha)
                .arg(0)
                .arg(&self.queue)
                .arg(envelope);
            n += 1;
        }
        let replies: Vec<(String, i64)> = pipe
            .query_async(&mut self.redis)
            .await
            .context("pipelined EVALSHA")?;
        let created = replies.iter().filter(|(_, created)| *created == 1).count();
        ensure!(
            created == n,
            "only {created} of {n} jobs of a batch were enqueued"
        );
        Ok(replies.into_iter().map(|(id, _)| id).collect())
    }
}

/// A job as the journal has it.
pub struct JobRow {
    pub state: String,
    pub progress: i16,
    pub result: Option<Value>,
    pub last_error: Option<String>,
}

/// What the journal shows of the jobs of one kind and of all attempts: [`Run::journal_counts`].
pub struct JournalCounts {
    pub jobs: i64,
    completed: i64,
    one_attempt: i64,
    attempts: i64,
    completed_attempts: i64,
}

impl JournalCounts {
    /// How the jobs and the attempts ended, for the report's journal check.
    pub fn outcomes(&self) -> String {
        format!(
            "{} completed, {} with attempts = 1; {} attempt rows, {} completed",
            self.completed, self.one_attempt, self.attempts, self.completed_attempts
        )
    }

    /// Fails unless the journal shows `expected` jobs, each completed with exactly one attempt.
    pub fn ensure_each_completed_once(&self, expected: i64) -> Result<()> {
        let counts = [
            self.jobs,
            self.completed,
            self.one_attempt,
            self.attempts,
            self.completed_attempts,
        ];
        ensure!(
            counts.iter().all(|&n| n == expected),
            "the journal does not show every job completed with exactly one attempt"
        );
        Ok(())
    }
}

/// The config file of benches/`bench`.rs: its own `tables` (each followed by a blank line), then
/// its queue's, from [`queue_table`].
pub fn config_toml(bench: &str, tables: &str, queue_table: String) -> String {
    format!("# Written by benches/{bench}.rs.\n{tables}{queue_table}")
}

/// The `[queues.<queue>]` table as config.toml ships it, given the queue's shipped timeout and
/// attempts, with `concurrency`. Benches write the whole table so that nothing depends on how
/// tables merge with the defaults.
pub fn queue_table(queue: &str, concurrency: u64, timeout: &str, max_attempts: u32) -> String {
    format!(
        r#"[queues.{queue}]
concurrency = {concurrency}
timeout = "{timeout}"
max_attempts = {max_attempts}
backoff = {{ base = "2s", cap = "10m", jitter = 0.2 }}
"#
    )
}

/// `url` with its database (the path) replaced by `database`. User, password, host and query
/// options are kept as written, so a password is never decoded and re-encoded.
pub fn with_database(url: &str, database: &str) -> Result<String> {
    let authority = url
        .find("://")
        .map(|i| i + 3)
        .with_context(|| format!("DATABASE_URL {url:?} is not a URL"))?;
    let query = url[authority..]
        .find('?')
        .map_or(url.len(), |i| authority + i);
    let path = url[authority..query]
        .find('/')
        .map_or(query, |i| authority + i);
    Ok(format!("{}/{database}{}", &url[..path], &url[query..]))
}

/// A running `quizworker run`; killed if dropped before [`Daemon::stop`].
pub struct Daemon {
    pub child: Child,
    pub log: PathBuf,
    /// When the bench saw the "quizworker ready" line.
    pub ready_at: Instant,
}

impl Daemon {
    /// A field of /proc/<pid>/status given in kB, such as VmRSS or VmHWM.
    pub fn status_kb(&self, field: &str) -> Result<u64> {
        let path = format!("/proc/{}/status", self.child.id());
        let status = fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
        status
            .lines()
            .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|value| value.trim().strip_suffix("kB")?.trim().parse().ok())
            .with_context(|| format!("no {field} in kB in {path}"))
    }

    pub fn ensure_running(&mut self) -> Result<()> {
        if let Some(status) = self
            .child
            .try_wait()
            .context("cannot check on the daemon")?
        {
            bail!("the daemon exited ({status}):\n{}", self.log_tail());
        }
        Ok(())
    }

    /// SIGTERM, then waits for a clean exit. By reference, so that the soak can still read the
    /// stopped daemon's log.
    pub async fn stop(&mut self) -> Result<()> {
        let pid = self.child.id().to_string();
        // Through kill(1): std only sends SIGKILL, and one signal is not worth a dependency.
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .context("cannot run kill")?;
        ensure!(status.success(), "kill -TERM {pid} failed");
        let started = Instant::now();
        loop {
            if let Some(status) = self
                .child
                .try_wait()
                .context("cannot wait for the daemon")?
            {
                ensure!(
                    status.success(),
                    "the daemon exited with {status} after SIGTERM:\n{}",
                    self.log_tail()
                );
                return Ok(());
            }
            ensure!(
                started.elapsed() < STOP_DEADLINE,
                "the daemon did not exit within {STOP_DEADLINE:?} of SIGTERM:\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last lines of the log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Where the health and metrics server listens, from the log line "http listening
    /// addr=...", which comes before the ready line (with `http.listen` on port 0, the port the
    /// system chose).
    pub fn http_addr(&self) -> Result<SocketAddr> {
        let text = self.log_text();
        text.lines()
            .filter(|line| line.contains("http listening"))
            .find_map(|line| {
                line.split("addr=")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .with_context(|| format!("no \"http listening addr=\" line:\n{}", self.log_tail()))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The Markdown report, filled in as the run goes, so a failed run still shows what it measured.
pub struct Report {
    /// "throughput", "scoring", "exports" or "soak", for the title.
    name: &'static str,
    /// "bench" or "soak": starts the progress lines on stderr.
    tag: &'static str,
    machine: Vec<(String, String)>,
    knobs: Vec<(String, String)>,
    /// Markdown, each ending in a blank line, between the knobs and the figures: the scoring and
    /// exports benches' workload, the soak's samples.
    sections: String,
    figures: Vec<(String, String)>,
    notes: Vec<String>,
}

impl Report {
    /// A report with the machine's description and the run's knobs.
    pub fn new(name: &'static str, tag: &'static str, knobs: Vec<(String, String)>) -> Report {
        let mut report = Report {
            name,
            tag,
            machine: Vec::new(),
            knobs,
            sections: String::new(),
            figures: Vec::new(),
            notes: Vec::new(),
        };
        let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
        report.machine("CPUs (nproc)", nproc.to_string());
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        report.machine(
            "CPU",
            proc_field(&cpuinfo, "model name").unwrap_or("unknown".into()),
        );
        let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory = proc_field(&meminfo, "MemTotal")
            .and_then(|v| v.trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or("unknown".into(), |kb| {
                format!("{:.1} GiB", kb as f64 / 1024.0 / 1024.0)
            });
        report.machine("Memory", memory);
        report.machine(
            "redis-server --version",
            command_line("redis-server", &["--version"]),
        );
        report.machine("Daemon source", daemon_source());
        report
    }

    pub fn machine(&mut self, name: &str, value: String) {
        self.machine.push((name.to_owned(), value));
    }

    /// A row of the Knobs table that is no knob, such as a setting of the daemon's config file.
    pub fn knob(&mut self, name: &str, value: String) {
        self.knobs.push((name.to_owned(), value));
    }

    pub fn figure(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let (name, value) = (name.into(), value.into());
        eprintln!("{}: {name}: {value}", self.tag);
        self.figures.push((name, value));
    }

    pub fn note(&mut self, note: String) {
        self.notes.push(note);
    }

    /// The rate of `n` `what` (jobs, attempts) over `secs` read off the journal's own times: a
    /// cross-check free of the sampling step and of startup. Left out if the journal has no span.
    pub fn journal_rate(&mut self, name: impl Into<String>, n: u64, what: &str, secs: Option<f64>) {
        if let Some(secs) = secs.filter(|s| *s > 0.0) {
            let rate = per_sec(n as f64 / secs, what);
            self.figure(name, format!("{rate} ({secs:.2} s)"));
        }
    }

    /// What follows a backlog's whole rate, `rate` being the figures' name ("Processing rate"):
    /// the rate of its last fifth, read off `done` (samples counting its `n` `what`), which
    /// falls if the work slows as the tables grow; and the whole rate by the journal's times.
    pub fn backlog_tail(
        &mut self,
        rate: &str,
        what: &str,
        done: &[(f64, u64)],
        n: u64,
        journal_secs: Option<f64>,
    ) {
        let fifth = n / 5;
        if fifth > 0 {
            let last_secs = time_at(done, n) - time_at(done, n - fifth);
            self.figure(
                format!("{rate}, last 20% of the backlog"),
                per_sec(fifth as f64 / last_secs, what),
            );
        }
        let name = format!("{rate}, whole backlog (journal: first start to last finish)");
        self.journal_rate(name, n, what, journal_secs);
    }

    /// A section of Markdown, ending in a blank line, to go between the knobs and the figures.
    pub fn section(&mut self, markdown: &str) {
        self.sections.push_str(markdown);
    }

    /// The Workload section: what the bench scores or exports.
    pub fn workload(&mut self, description: &str) {
        self.section(&format!("## Workload\n\n- {description}\n\n"));
    }

    /// The whole report.
    pub fn render(&self) -> String {
        let table = |header: &str, rows: &[(String, String)]| {
            let mut out = format!("| {header} | value |\n|---|---|\n");
            for (name, value) in rows {
                out.push_str(&format!("| {name} | {} |\n", value.replace('|', "\\|")));
            }
            out
        };
        let mut out = format!("# quizworker {} benchmark\n\n", self.name);
        out.push_str(&format!("## Machine\n\n{}\n", table("item", &self.machine)));
        out.push_str(&format!("## Knobs\n\n{}\n", table("knob", &self.knobs)));
        out.push_str(&self.sections);
        out.push_str(&format!("## Figures\n\n{}", table("figure", &self.figures)));
        if !self.notes.is_empty() {
            out.push('\n');
            for note in &self.notes {
                out.push_str(&format!("- {note}\n"));
            }
        }
        out
    }
}

/// Counts with `count` every [`SAMPLE_EVERY`] from the daemon's ready line until `n` more than
/// `before` (what earlier phases did) are counted, and returns the samples: (seconds since ready,
/// count less `before`). What is counted is named by `one` in the stall error ("job completed")
/// and by `done` in the progress lines ("completed").
pub async fn sample_until(
    daemon: &mut Daemon,
    before: u64,
    n: u64,
    one: &str,
    done: &str,
    mut count: impl AsyncFnMut() -> Result<u64>,
) -> Result<Vec<(f64, u64)>> {
    let target = before + n;
    let ready = daemon.ready_at;
    // Nothing is journaled when the ready line appears (the first poll of the log sees it within
    // 10 ms), so the count then is what earlier phases did.
    let mut samples = vec![(0.0, count().await?)];
    let mut ticks = tokio::time::interval_at(
        tokio::time::Instant::from_std(ready) + SAMPLE_EVERY,
        SAMPLE_EVERY,
    );
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_progress = Instant::now();
    let mut last_report = Instant::now();
    loop {
        ticks.tick().await;
        daemon.ensure_running()?;
        // The time of the count is when the query starts: it sees the rows committed then.
        let t = ready.elapsed().as_secs_f64();
        let counted = count().await?;
        let previous = samples.last().map_or(0, |&(_, c)| c);
        samples.push((t, counted));
        if counted >= target {
            let since_before = samples.iter().map(|&(t, c)| (t, c.saturating_sub(before)));
            return Ok(since_before.collect());
        }
        if counted > previous {
            last_progress = Instant::now();
        } else if last_progress.elapsed() > STALL_DEADLINE {
            bail!(
                "no {one} for {STALL_DEADLINE:?}: {counted} of {target} are\n{}",
                daemon.log_tail()
            );
        }
        if last_report.elapsed() >= Duration::from_secs(2) {
            eprintln!("bench:   {counted} of {target} {done} after {t:.1} s");
            last_report = Instant::now();
        }
    }
}

/// Seconds at which `n` things (jobs, stored results) were counted, interpolated between the two
/// samples around it: the samples are 250 ms apart, too coarse to read a few seconds' run off
/// them directly.
pub fn time_at(samples: &[(f64, u64)], n: u64) -> f64 {
    let Some(i) = samples.iter().position(|&(_, done)| done >= n) else {
        // Callers only ask for counts up to the last sample's.
        return samples.last().map_or(0.0, |&(t, _)| t);
    };
    if i == 0 {
        return samples[0].0;
    }
    let (t0, d0) = samples[i - 1];
    let (t1, d1) = samples[i];
    t0 + (t1 - t0) * (n - d0) as f64 / (d1 - d0) as f64
}

/// Nearest-rank percentile of sorted values; `q` from 0 to 1.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// A rate of `what` (jobs, attempts) per second, rounded, with thousands separators.
pub fn per_sec(rate: f64, what: &str) -> String {
    format!("{} {what}/s", thousands(rate.round() as u64))
}

pub fn mib(kb: u64) -> String {
    format!("{:.1} MiB", kb as f64 / 1024.0)
}

pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// GET over plain HTTP/1.1 (the daemon's health and metrics server): the body of a 200
/// response.
pub fn http_get(addr: SocketAddr, path: &str) -> Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, HTTP_TIMEOUT)
        .with_context(|| format!("cannot connect to the daemon's http server at {addr}"))?;
    stream.set_read_timeout(Some(HTTP_TIMEOUT))?;
    stream.set_write_timeout(Some(HTTP_TIMEOUT))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .with_context(|| format!("GET {path}"))?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .with_context(|| format!("GET {path}: reading the response"))?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .with_context(|| format!("GET {path}: not an HTTP response"))?;
    ensure!(
        head.split_whitespace().nth(1) == Some("200"),
        "GET {path}: {}",
        head.lines().next().unwrap_or("")
    );
    Ok(body.to_owned())
}

/// The value of a `name : value` line of a /proc file.
pub fn proc_field(text: &str, name: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == name).then(|| value.trim().to_owned())
    })
}

/// The value of a `name:value` line of Redis' INFO.
pub fn info_field(info: &str, name: &str) -> Option<String> {
    info.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .map(|value| value.trim().to_owned())
}

/// The first line a command prints, or why there is none.
pub fn command_line(program: &str, args: &[&str]) -> String {
    match Command::new(program).args(args).output() {
        Ok(output) if output.status.success() => String::from_utf8_lossy(&output.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_owned(),
        Ok(output) => format!("{program} failed ({})", output.status),
        Err(e) => format!("{program} not found ({e})"),
    }
}

/// The commit the daemon was built from, and whether its sources had uncommitted changes.
pub fn daemon_source() -> String {
    let dir = env!("CARGO_MANIFEST_DIR");
    let commit = command_line("git", &["-C", dir, "rev-parse", "--short", "HEAD"]);
    let dirty = Command::new("git")
        .args([
            "-C",
            dir,
            "status",
            "--porcelain",
            "--",
            "src",
            "jobs",
            "migrations",
            "Cargo.lock",
        ])
        .output()
        .map(|output| !output.stdout.is_empty())
        .unwrap_or(false);
    if dirty {
        format!("git {commit}, with uncommitted changes in src/, jobs/ or migrations/")
    } else {
        format!("git {commit}")
    }
}

/// The processes running now.
pub fn pids() -> impl Iterator<Item = u32> {
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_string_lossy().parse().ok())
}

/// The command name of a process and the CPU time it has used so far (user + system), in clock
/// ticks; `None` if /proc cannot say.
pub fn process_ticks(pid: u32) -> Option<(String, u64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ..." where comm may hold spaces and parentheses.
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let command = stat[open + 1..close].to_owned();
    let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    // After the command: state is field 3 of proc_pid_stat(5), utime 14 and stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((command, utime + stime))
}

/// The clock ticks of [`process_ticks`] per second.
pub fn clock_ticks_per_sec() -> Option<f64> {
    command_line("getconf", &["CLK_TCK"]).parse().ok()
}

/// CPU time a process has used so far (user + system), in seconds; `None` if /proc cannot say.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let (_, ticks) = process_ticks(pid)?;
    Some(ticks as f64 / clock_ticks_per_sec()?)
}

/// Whether a process is a Postgres backend serving `db_name`, which its process title names:
/// "postgres: 15/main: user database host(port) state".
pub fn serves_database(pid: u32, db_name: &str) -> bool {
    let title = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let title = String::from_utf8_lossy(&title);
    title.starts_with("postgres:") && title.split([' ', '\0']).any(|word| word == db_name)
}

/// CPU time (user + system, seconds) used so far by the Postgres backends serving `db_name`.
/// Read it while the connections live: the time of a backend that exited is gone.
pub fn backends_cpu_seconds(db_name: &str) -> f64 {
    pids()
        .filter(|&pid| serves_database(pid, db_name))
        .map(|pid| cpu_seconds(pid).unwrap_or(0.0))
        .sum()
}

/// The 1, 5 and 15 minute load averages as one line ("0.52 0.61 0.70"), or "unknown": other
/// load on the machine skews every figure, so the reports say how much there was.
pub fn load_average() -> String {
    load_averages().map_or("unknown".into(), |loads| loads.join(" "))
}

/// The 1, 5 and 15 minute load averages (/proc/loadavg).
pub fn load_averages() -> Option<[String; 3]> {
    let text = fs::read_to_string("/proc/loadavg").ok()?;
    let mut fields = text.split_whitespace().map(str::to_owned);
    Some([fields.next()?, fields.next()?, fields.next()?])
}
