//! The command line: `run` for the daemon, the rest for operators. Tables by default, `--json`
//! for scripts; times in UTC; an exit code per kind of failure (`EXIT_CODES`). Every flag and
//! argument has a help text.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// What `--help` says of exit codes; `commands::failure::Failure` defines them.
const EXIT_CODES: &str = "\
Exit codes: 0 done; 1 failed (a check failed, no such job, ...); 2 usage (the command line is \
wrong); 3 bad input (payload, kind, queue, state, score file, config file); 4 Redis or \
Postgres unreachable or refused the login.";

#[derive(Debug, Parser)]
#[command(
    name = "quizworker",
    version,
    about = "Background jobs for online test and quiz platforms",
    after_help = EXIT_CODES
)]
pub struct Cli {
    /// The configuration file (default: config.toml here, if there is one); environment
    /// variables override it.
    ///
    /// Without this flag or QUIZWORKER_CONFIG, config.toml in the current directory is read if
    /// it exists, else the defaults and the environment alone. A file named here must exist.
    #[arg(long, global = true, env = "QUIZWORKER_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Log lines for people, or one JSON object per line (journald, Loki).
    #[arg(long, global = true, env = "QUIZWORKER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Lines for people.
    Human,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply pending database migrations and say how many were applied.
    Migrate,
    /// Run the workers until SIGTERM or SIGINT.
    Run {
        /// Comma-separated queues to run (default: all).
        #[arg(long, value_name = "QUEUE,...")]
        queues: Option<String>,
    },
    /// Check the configuration, Redis, Postgres, the migrations and the export directory, and
    /// say which config file, database and Redis prefix were used.
    Check {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Put back in Redis the jobs the journal says are waiting but Redis lost, and say how many.
    Recover {
        /// Print JSON instead of a sentence.
        #[arg(long)]
        json: bool,
    },
    /// Put a job on its queue and print its id.
    #[command(after_help = kinds_help())]
    Enqueue(EnqueueArgs),
    /// Score an attempt offline from a file of `{"test": ..., "attempt": ...}` (docs/SCORING.md)
    /// and print the result as JSON; needs neither Redis nor Postgres.
    Score {
        /// The file, or - for standard input.
        file: PathBuf,
        /// Print errors as JSON on standard output too (`{"error": ..., "problems": [...]}`,
        /// docs/SCORING.md), instead of a sentence on standard error.
        #[arg(long)]
        json: bool,
    },
    /// Run an export without the daemon (Postgres only): write the file into the export
    /// directory, or --out, and print what the job would record (path, size, SHA-256).
    #[command(subcommand)]
    Export(ExportCommand),
    /// What the AI jobs asked of the provider, and what it cost.
    #[command(subcommand)]
    Ai(AiCommand),
    /// Preview email templates offline; see what was sent; the suppression list.
    #[command(subcommand)]
    Email(EmailCommand),
    /// Search an index as the web tier would, and show the hits, best first.
    Search(SearchArgs),
    /// Search indexes: rebuild one from its source.
    #[command(subcommand)]
    Index(IndexCommand),
    /// Inspect, retry and cancel jobs.
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// Completion webhooks: what was sent where, with each response; send again.
    #[command(subcommand)]
    Webhooks(WebhooksCommand),
    /// Queue counts; pause and resume queues.
    Queues {
        #[command(subcommand)]
        action: Option<QueuesAction>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// The kinds `enqueue` knows, from the catalogue, for `enqueue --help`.
fn kinds_help() -> String {
    let mut help = String::from("Kinds (and the queue each runs on unless --queue says):\n");
    for kind in quizworker_jobs::catalogue::KINDS {
        help.push_str(&format!("  {:<26}{}\n", kind.name, kind.queue));
    }
    help.push_str(
        "Payloads: docs/PROTOCOL.md (section 2), docs/SCORING.md, docs/EMAIL.md, docs/AI.md, README (Exports).",
    );
    help
}

#[derive(Debug, Args)]
pub struct EnqueueArgs {
    /// The job kind, e.g. diag.sleep (the list is below).
    pub kind: String,
    /// The payload as JSON.
    #[arg(long, default_value = "{}", value_name = "JSON")]
    pub payload: String,
    /// The queue (default: the kind's own).
    #[arg(long)]
    pub queue: Option<String>,
    /// Run no sooner than this from now, e.g. 30s, 5m or 2h 30m.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub delay: Option<Duration>,
    /// Enqueue at most once per key: a second enqueue returns the first job's id.
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
    /// Override the queue's attempt limit (1 to 1000).
    #[arg(long, value_name = "N")]
    pub max_attempts: Option<u32>,
    /// Print `{"id", "queue", "created"}` instead of the id alone.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum ExportCommand {
    /// A test's result sheet as CSV (the job `export.results_csv`).
    ResultsCsv {
        /// The test's id.
        test_id: String,
        /// The directory to write into (default: `exports.directory` of the config).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// `,` `;` `|` or a tab.
        #[arg(long, default_value_t = ',')]
        delimiter: char,
        /// Start with a UTF-8 byte-order mark (Excel needs it to read UTF-8).
        #[arg(long)]
        bom: bool,
        /// Decimals of the marks.
        #[arg(long, default_value_t = 2)]
        decimals: u32,
        /// Add the exact marks ("-1/3") beside the rounded ones.
        #[arg(long)]
        exact_fractions: bool,
        /// Write an Excel workbook (.xlsx) instead of CSV.
        #[arg(long)]
        xlsx: bool,
    },
    /// A finalized test's analytics report as PDF (the job `export.test_report_pdf`).
    TestReportPdf {
        /// The test's id.
        test_id: String,
        /// The directory to write into (default: `exports.directory` of the config).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// An attempt's A4 report card as PDF (the job `export.report_pdf`).
    ReportPdf {
        /// The attempt's id.
        attempt_id: String,
        /// The directory to write into (default: `exports.directory` of the config).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum AiCommand {
    /// Requests, tokens and cost by day (UTC), model and kind, from the usage ledger (every
    /// reply the provider billed, whatever became of it).
    Usage {
        /// How far back, e.g. 24h, 7d, 30d.
        #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
        since: Duration,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum EmailCommand {
    /// Render a template as a send would (subject, text and HTML) and print it; needs neither
    /// Redis, Postgres nor an SMTP server.
    Preview {
        /// The template's name, e.g. result-ready.
        template: String,
        /// A JSON file with the template's variables (`vars` of the payload); - for standard
        /// input. Without it the template gets none, and the error lists what it needs.
        #[arg(long, value_name = "FILE")]
        vars: Option<PathBuf>,
        /// The locale, e.g. hi (default: `email.default_locale`).
        #[arg(long)]
        locale: Option<String>,
        /// The templates directory (default: `email.templates` of the config).
        #[arg(long, value_name = "DIR")]
        templates: Option<PathBuf>,
        /// Print `{"variant", "subject", "text", "html"}` as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Each message of an email job: its address, status (queued, sending, sent, failed,
    /// suppressed), Message-ID and the server's reply.
    Deliveries {
        /// The email job's id.
        job_id: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The addresses no email job sends to: hard bounces, and those added here.
    #[command(subcommand)]
    Suppressions(SuppressionsCommand),
}

#[derive(Debug, Subcommand)]
pub enum SuppressionsCommand {
    /// Every suppressed address, oldest first, with why.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Stop sending to an address (e.g. after an unsubscribe or a complaint).
    Add {
        /// The address, e.g. parent@example.com (compared without case).
        address: String,
    },
    /// Send to an address again (e.g. the mailbox exists again).
    Remove {
        /// The address, as `list` shows it (compared without case).
        address: String,
    },
}

#[derive(Debug, Args)]
pub struct SearchArgs {
    /// The index, as named in [search.indexes.NAME] of the config.
    pub index: String,
    /// What to look for: words, "a quoted phrase", `or`, -excluded (as a search box takes it).
    pub query: String,
    /// Only documents whose FIELD has VALUE (a filterable field); repeat for more. VALUE is
    /// read as JSON if it is (42, true, "x"), else as text.
    #[arg(long, value_name = "FIELD=VALUE")]
    pub filter: Vec<String>,
    /// Hits to show (1 to 100).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub limit: u32,
    /// Hits to skip first (0 to 10000).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=10_000))]
    pub offset: u32,
    /// Print the hits as JSON (id, rank, snippet, document).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum IndexCommand {
    /// Build an index again from its source query on the platform's database (read-only),
    /// beside the live one, and swap it in; searches go on meanwhile. Progress on standard
    /// error.
    Rebuild {
        /// The index, as named in [search.indexes.NAME] of the config.
        index: String,
        /// Print what was done as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// List jobs, newest first; times in UTC.
    List {
        /// Only jobs in this state: scheduled, queued, running, retrying, completed, failed or
        /// cancelled.
        #[arg(long)]
        state: Option<String>,
        /// Only jobs of this queue.
        #[arg(long)]
        queue: Option<String>,
        /// Only jobs of this kind.
        #[arg(long)]
        kind: Option<String>,
        /// At most this many jobs (1 to 100000).
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(i64).range(1..=100_000))]
        limit: i64,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one job with its progress, attempts and errors; times in UTC.
    Show {
        /// The job's id (a ULID, as `enqueue` printed it).
        id: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Retry failed or cancelled jobs: by id, or all that match --state/--queue/--kind.
    Retry {
        /// The jobs' ids; or none, with --state for a bulk retry.
        ids: Vec<String>,
        /// Bulk: the jobs in this state (failed or cancelled: only those are retried).
        #[arg(long)]
        state: Option<String>,
        /// Bulk: only jobs of this queue.
        #[arg(long)]
        queue: Option<String>,
        /// Bulk: only jobs of this kind.
        #[arg(long)]
        kind: Option<String>,
        /// Confirm a bulk retry (without it, only the count is shown).
        #[arg(long)]
        yes: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run jobs that wait for a time now: a retry's backoff, a run time given at enqueue, or the
    /// AI spend cap's wait for the next day.
    RunNow {
        /// The jobs' ids.
        #[arg(required = true)]
        ids: Vec<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Cancel jobs that have not finished.
    Cancel {
        /// The jobs' ids.
        #[arg(required = true)]
        ids: Vec<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum WebhooksCommand {
    /// Deliveries, newest first: endpoint, event, state (pending, delivered, failed), attempts,
    /// the latest HTTP status and error.
    List {
        /// Only the deliveries of this job.
        #[arg(long, value_name = "JOB_ID")]
        job: Option<String>,
        /// Only deliveries in this state: pending, delivered or failed.
        #[arg(long)]
        state: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// Print JSON (with each response's body) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Send deliveries again (delivered or failed alike): each becomes a new delivery, with a
    /// new webhook-id, due now; prints the new ids.
    Redeliver {
        /// The deliveries' ids (msg_...).
        #[arg(required = true)]
        ids: Vec<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum QueuesAction {
    /// Stop every process from taking jobs of this queue; jobs keep arriving and wait.
    Pause {
        /// The queue: default, scoring, emails, exports, ai or indexing.
        queue: String,
    },
    /// Let processes take jobs of this queue again.
    Resume {
        /// The queue: default, scoring, emails, exports, ai or indexing.
        queue: String,
    },
}
