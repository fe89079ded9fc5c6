//! What the benchmark programs (throughput, scoring, exports, soak) share: the run's own Postgres database
//! and Redis prefix, the daemon they start and stop, the Markdown report, and small formatters.
//! Each bench declares `mod common;`, so this is compiled into each of them; one copy here keeps
//! their setup, cleanup and report alike, which their figures are compared on.
#![allow(dead_code)] // each bench uses a different part of this module

pub mod generated;

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use redis::aio::MultiplexedConnection;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, PgConnection};

pub const BIN: &str = env!("CARGO_BIN_EXE_quizworker");

/// The daemon must log "quizworker ready" within this...
pub const START_DEADLINE: Duration = Duration::from_secs(60);
/// ...and exit within this after SIGTERM (its own shutdown timeout is 30 s).
pub const STOP_DEADLINE: Duration = Duration::from_secs(60);

/// How often a bench counts what the daemon has done while a backlog drains.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(250);
/// Waiting for the daemon fails once the count has not moved for this long.
pub const STALL_DEADLINE: Duration = Duration::from_secs(30);

/// The knob `name` from the environment, or `default` when it is not set.
pub fn env_or<T: FromStr>(name: &str, default: T) -> Result<T>
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

/// DATABASE_URL: any database on the server; the run's own database is created next to it.
pub fn database_url() -> Result<String> {
    env_or(
        "DATABASE_URL",
        "postgres://postgres@127.0.0.1:5432/postgres".to_owned(),
    )
}

pub fn redis_url() -> Result<String> {
    env_or("REDIS_URL", "redis://127.0.0.1:6379".to_owned())
}

/// How a bench wants its run set up.
pub struct RunSpec<'a> {
    /// "bench" or "soak": names the database (`quizworker_<tag>_<id>`) and the Redis prefix
    /// (`<tag>-<id>:`), and starts the progress lines on stderr.
    pub tag: &'static str,
    /// The queue the daemon runs (`quizworker run --queues <queue>`), without the prefix.
    pub queue: &'a str,
    /// The daemon's config file.
    pub config_toml: &'a str,
    /// Settings for every `quizworker` command on top of the run's own, such as a concurrency.
    pub env: Vec<(&'static str, String)>,
    /// Whether to report Postgres' autovacuum setting, which the journal's size on disk needs.
    pub check_autovacuum: bool,
    pub database_url: &'a str,
    pub redis_url: &'a str,
}

/// One benchmark run's own database, Redis prefix and config file, removed by [`Run::teardown`].
pub struct Run {
    tag: &'static str,
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
    env: Vec<(&'static str, String)>,
    /// Holds the config file and the daemons' logs.
    pub dir: tempfile::TempDir,
}

impl Run {
    /// Everything that can fail is done before CREATE DATABASE, so that a failed setup leaves
    /// nothing behind.
    pub async fn setup(spec: RunSpec<'_>, report: &mut Report) -> Result<Run> {
        let client = redis::Client::open(spec.redis_url)
            .with_context(|| format!("REDIS_URL {:?} is not a Redis URL", spec.redis_url))?;
        // redis-rs gives up on a reply after 500 ms by default; a pipeline of a thousand scripts
        // (or of hundreds with 5 KB envelopes), or a SCAN, on a Redis busy with the daemon can
        // take longer without anything being wrong.
        let config =
            redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(30)));
        let mut redis = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .with_context(|| format!("cannot connect to Redis at {}", spec.redis_url))?;
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut redis)
            .await
            .context("Redis INFO server")?;
        let redis_version = info_field(&info, "redis_version").unwrap_or("unknown".into());
        report.machine("Redis server (INFO redis_version)", redis_version);

        let dir = tempfile::tempdir().context("cannot create a temp dir")?;
        fs::write(dir.path().join("config.toml"), spec.config_toml)
            .context("cannot write the config file")?;

        let tag = spec.tag;
        let id = ulid::Ulid::new();
        let db_name = format!("quizworker_{tag}_{}", id.to_string().to_lowercase());
        let db_url = with_database(spec.database_url, &db_name)?;
        // Lazy: it connects on first use, so it cannot fail after the database exists.
        let pg = PgPoolOptions::new()
            .max_connections(2)
            .connect_lazy(&db_url)
            .context("DATABASE_URL is not a Postgres URL")?;

        let mut admin = PgConnection::connect(spec.database_url)
            .await
            .with_context(|| format!("cannot connect to Postgres at {}", spec.database_url))?;
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
            tag,
            admin_url: spec.database_url.to_owned(),
            db_name,
            db_url,
            redis_url: spec.redis_url.to_owned(),
            pg,
            redis,
            queue_name: spec.queue.to_owned(),
            queue: format!("{prefix}{}", spec.queue),
            prefix,
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
        let log = self.dir.path().join(format!("{log_name}.log"));
        let file = fs::File::create(&log).context("cannot create the daemon's log file")?;
        let child = self
            .command()
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
    /// "throughput", "scoring" or "soak", for the title.
    name: &'static str,
    /// Starts the progress lines on stderr, as in [`RunSpec::tag`].
    tag: &'static str,
    machine: Vec<(String, String)>,
    knobs: Vec<(String, String)>,
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

    pub fn figure(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let (name, value) = (name.into(), value.into());
        eprintln!("{}: {name}: {value}", self.tag);
        self.figures.push((name, value));
    }

    pub fn note(&mut self, note: String) {
        self.notes.push(note);
    }

    /// The whole report; `sections` (Markdown, each ending in a blank line) go between the knobs
    /// and the figures: the scoring bench's workload, the soak's samples.
    pub fn render(&self, sections: &str) -> String {
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
        out.push_str(sections);
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

/// Counts with `count` every [`SAMPLE_EVERY`] from the daemon's ready line until `target` are
/// counted, and returns the samples: (seconds since ready, count). What is counted is named by
/// `one` in the stall error ("job completed") and by `done` in the progress lines ("completed").
pub async fn sample_until(
    daemon: &mut Daemon,
    target: u64,
    one: &str,
    done: &str,
    mut count: impl AsyncFnMut() -> Result<u64>,
) -> Result<Vec<(f64, u64)>> {
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
            return Ok(samples);
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

/// Ends a bench: the errors go into the report as failures, the report (with `sections`, as in
/// [`Report::render`]) to stdout and the errors again to stderr; fails if there are any.
pub fn finish(report: &mut Report, errors: &[String], sections: &str) -> ExitCode {
    for error in errors {
        report.note(format!("**FAILED**: {error}"));
    }
    println!("{}", report.render(sections));
    if errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        for error in errors {
            eprintln!("{}: error: {error}", report.tag);
        }
        ExitCode::FAILURE
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

/// CPU time a process has used so far (user + system), in seconds; `None` if /proc cannot say.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ..." where comm may hold spaces and parentheses.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    // After the command: utime and stime are fields 14 and 15 of proc_pid_stat(5).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let ticks: f64 = command_line("getconf", &["CLK_TCK"]).parse().ok()?;
    Some((utime + stime) as f64 / ticks)
}

/// CPU time (user + system, seconds) used so far by the Postgres backends serving `db_name` (the
/// database is in their process title). Read it while the connections live: the time of a
/// backend that exited is gone.
pub fn backends_cpu_seconds(db_name: &str) -> f64 {
    let mut total = 0.0;
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        // "postgres: 15/main: user database host(port) state"
        let title = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let title = String::from_utf8_lossy(&title);
        if title.starts_with("postgres:") && title.split([' ', '\0']).any(|word| word == db_name) {
            total += cpu_seconds(pid).unwrap_or(0.0);
        }
    }
    total
}
