//! The command line: `run` for the daemon, the rest for operators. Tables by default, `--json`
//! for scripts; a non-zero exit code on any error.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "quizworker",
    version,
    about = "Background jobs for online test and quiz platforms"
)]
pub struct Cli {
    /// The configuration file; environment variables override it.
    #[arg(
        long,
        global = true,
        env = "QUIZWORKER_CONFIG",
        default_value = "config.toml"
    )]
    pub config: PathBuf,
    /// Log lines for people, or one JSON object per line (journald, Loki).
    #[arg(long, global = true, env = "QUIZWORKER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply pending database migrations.
    Migrate,
    /// Run the workers until SIGTERM or SIGINT.
    Run {
        /// Comma-separated queues to run (default: all).
        #[arg(long)]
        queues: Option<String>,
    },
    /// Check the configuration, Redis, Postgres and the migrations.
    Check {
        #[arg(long)]
        json: bool,
    },
    /// Put back in Redis the jobs the journal says are waiting but Redis lost, and say how many.
    Recover {
        #[arg(long)]
        json: bool,
    },
    /// Put a job on its queue and print its id.
    Enqueue(EnqueueArgs),
    /// Score an attempt offline from a file of `{"test": ..., "attempt": ...}` (docs/SCORING.md)
    /// and print the result; needs neither Redis nor Postgres.
    Score {
        /// The file, or - for standard input.
        file: PathBuf,
    },
    /// Run an export without the daemon (Postgres only): write the file into the export
    /// directory, or --out, and print what the job would record (path, size, SHA-256).
    #[command(subcommand)]
    Export(ExportCommand),
    /// Inspect, retry and cancel jobs.
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// Queue counts; pause and resume queues.
    Queues {
        #[command(subcommand)]
        action: Option<QueuesAction>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct EnqueueArgs {
    /// The job kind, e.g. diag.sleep.
    pub kind: String,
    /// The payload as JSON.
    #[arg(long, default_value = "{}")]
    pub payload: String,
    /// The queue (default: the kind's own).
    #[arg(long)]
    pub queue: Option<String>,
    /// Run no sooner than this from now, e.g. 30s or 5m.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub delay: Option<Duration>,
    /// Enqueue at most once per key: a second enqueue returns the first job's id.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Override the queue's attempt limit.
    #[arg(long)]
    pub max_attempts: Option<u32>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum ExportCommand {
    /// A test's result sheet as CSV (the job `export.results_csv`).
    ResultsCsv {
        test_id: String,
        /// The directory to write into (default: `exports.directory` of the config).
        #[arg(long)]
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
    },
    /// A finalized test's analytics report as PDF (the job `export.test_report_pdf`).
    TestReportPdf {
        test_id: String,
        /// The directory to write into (default: `exports.directory` of the config).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// An attempt's A4 report card as PDF (the job `export.report_pdf`).
    ReportPdf {
        attempt_id: String,
        /// The directory to write into (default: `exports.directory` of the config).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// List jobs, newest first.
    List {
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        queue: Option<String>,
        #[arg(long)]
        kind: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// Show one job with its progress, attempts and errors.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Retry failed or cancelled jobs: by id, or all that match --state/--queue/--kind.
    Retry {
        ids: Vec<String>,
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        queue: Option<String>,
        #[arg(long)]
        kind: Option<String>,
        /// Confirm a bulk retry (without it, only the count is shown).
        #[arg(long)]
        yes: bool,
        #[arg(long)]
        json: bool,
    },
    /// Cancel jobs that have not finished.
    Cancel {
        #[arg(required = true)]
        ids: Vec<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum QueuesAction {
    /// Stop every process from taking jobs of this queue; jobs keep arriving and wait.
    Pause { queue: String },
    /// Let processes take jobs of this queue again.
    Resume { queue: String },
}
