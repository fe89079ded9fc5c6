//! How a command ends when it fails: which kind of failure it was (each has its exit code, which
//! the README lists, so scripts can tell a typo from an outage), and the error's text as the
//! operator reads it.

use std::error::Error as StdError;
use std::fmt;
use std::io;

use crate::ops::logging::escape_control;

/// The kinds of failure, each with its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The command ran but did not do what was asked (a check failed, no such job, ...), or
    /// something unforeseen went wrong.
    Failed,
    /// The command line is wrong: an unknown command or flag, a missing argument, flags that do
    /// not go together. clap exits with the same code for its own findings.
    Usage,
    /// What was given does not hold: a payload, a kind, a queue, a state, a score file, a
    /// config file.
    BadInput,
    /// Redis or Postgres cannot be reached, or refused the login.
    Unreachable,
}

impl Failure {
    pub const fn exit_code(self) -> u8 {
        match self {
            Failure::Failed => 1,
            Failure::Usage => 2,
            Failure::BadInput => 3,
            Failure::Unreachable => 4,
        }
    }

    /// The kind of failure `error` is: the outermost mark in its chain ([`Mark`]), else
    /// `Unreachable` when a connection failed somewhere in it, else `Failed`.
    pub fn of(error: &anyhow::Error) -> Failure {
        if let Some(marked) = error.chain().find_map(|e| e.downcast_ref::<Marked>()) {
            return marked.failure;
        }
        if error.chain().any(is_connection_failure) {
            return Failure::Unreachable;
        }
        Failure::Failed
    }
}

/// An error marked with its kind of failure. It shows as the error it wraps and has the same
/// causes, so the mark adds nothing to the text.
#[derive(Debug)]
struct Marked {
    failure: Failure,
    error: Box<dyn StdError + Send + Sync + 'static>,
}

impl fmt::Display for Marked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

impl StdError for Marked {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.error.source()
    }
}

fn marked(failure: Failure, error: anyhow::Error) -> anyhow::Error {
    anyhow::Error::new(Marked {
        failure,
        error: error.into(),
    })
}

/// A message that says what was wrong with the input.
pub fn bad_input(message: impl Into<String>) -> anyhow::Error {
    marked(Failure::BadInput, anyhow::Error::msg(message.into()))
}

/// A message that says what is wrong with the command line.
pub fn usage(message: impl Into<String>) -> anyhow::Error {
    marked(Failure::Usage, anyhow::Error::msg(message.into()))
}

/// Marks the error of a result with its kind of failure.
pub trait Mark<T> {
    fn bad_input(self) -> anyhow::Result<T>;
    fn unreachable(self) -> anyhow::Result<T>;
}

impl<T, E: Into<anyhow::Error>> Mark<T> for Result<T, E> {
    fn bad_input(self) -> anyhow::Result<T> {
        self.map_err(|e| marked(Failure::BadInput, e.into()))
    }

    fn unreachable(self) -> anyhow::Result<T> {
        self.map_err(|e| marked(Failure::Unreachable, e.into()))
    }
}

/// A connection to Redis or Postgres that failed or broke, whoever reports it.
fn is_connection_failure(cause: &(dyn StdError + 'static)) -> bool {
    if let Some(e) = cause.downcast_ref::<io::Error>() {
        use io::ErrorKind::*;
        return matches!(
            e.kind(),
            ConnectionRefused
                | ConnectionReset
                | ConnectionAborted
                | NotConnected
                | TimedOut
                | HostUnreachable
                | NetworkUnreachable
                | AddrNotAvailable
        );
    }
    if let Some(e) = cause.downcast_ref::<redis::RedisError>() {
        return e.is_io_error()
            || e.is_connection_refusal()
            || e.is_timeout()
            || e.is_connection_dropped();
    }
    if let Some(e) = cause.downcast_ref::<sqlx::Error>() {
        return matches!(
            e,
            sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
        );
    }
    false
}

/// Whether the error is standard output's reader having gone away (`quizworker jobs list |
/// head -1`): not a failure, the command just ends.
pub fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}

/// The error on one line as the operator reads it: each cause once (sqlx and redis repeat
/// their source's text in their own), without Postgres' source-code line numbers, with control
/// characters escaped.
pub fn error_text(error: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in error.chain() {
        let text = cause_text(cause);
        match parts.last_mut() {
            _ if text.is_empty() => {}
            Some(last) if last.contains(&text) => {}
            // The inner text says the same and more ("Connection refused (os error 111)").
            Some(last) if text.contains(last.as_str()) => *last = text,
            _ => parts.push(text),
        }
    }
    escape_control(&parts.join(": ")).into_owned()
}

/// One cause's own text. A Postgres error prints " at line N" after its message: the line of
/// Postgres' C source that raised it, which reads as if it were the operator's input.
fn cause_text(cause: &(dyn StdError + 'static)) -> String {
    if let Some(sqlx::Error::Database(e)) = cause.downcast_ref::<sqlx::Error>() {
        return e.message().to_owned();
    }
    // sqlx::Error's source: the database's error, boxed.
    if let Some(e) = cause.downcast_ref::<Box<dyn sqlx::error::DatabaseError>>() {
        return e.message().to_owned();
    }
    cause.to_string()
}

/// At most a short prefix of what the operator gave, quoted, for an error message that names
/// it: a mistyped id reads back whole, a pasted megabyte does not.
pub fn excerpt(input: &str) -> String {
    const MAX_CHARS: usize = 40;
    let mut chars = input.chars();
    let head: String = chars.by_ref().take(MAX_CHARS).collect();
    let more = if chars.next().is_some() { "…" } else { "" };
    format!("`{}{more}`", escape_control(&head))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cause_is_said_once() {
        let io = io::Error::new(io::ErrorKind::ConnectionRefused, "Connection refused");
        let error = anyhow::Error::new(io)
            .context("Connection refused")
            .context("could not connect to Redis at redis://127.0.0.1:1");
        assert_eq!(
            error_text(&error),
            "could not connect to Redis at redis://127.0.0.1:1: Connection refused"
        );
        let error =
            anyhow::anyhow!("Connection refused (os error 111)").context("Connection refused");
        assert_eq!(error_text(&error), "Connection refused (os error 111)");
    }

    #[test]
    fn marks_decide_the_exit_code_and_leave_the_text_alone() {
        let error = Err::<(), _>(anyhow::anyhow!("no such kind"))
            .bad_input()
            .unwrap_err()
            .context("in enqueue");
        assert_eq!(Failure::of(&error), Failure::BadInput);
        assert_eq!(error_text(&error), "in enqueue: no such kind");
        let refused = io::Error::new(io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(
            Failure::of(&anyhow::Error::new(refused).context("reading")),
            Failure::Unreachable
        );
        assert_eq!(Failure::of(&anyhow::anyhow!("boom")), Failure::Failed);
        assert_eq!(Failure::of(&usage("not both")), Failure::Usage);
    }

    #[test]
    fn an_excerpt_is_short_and_escaped() {
        assert_eq!(excerpt("diag.nope"), "`diag.nope`");
        assert_eq!(excerpt(&"x".repeat(100)), format!("`{}…`", "x".repeat(40)));
        assert_eq!(excerpt("a\nb"), "`a\\nb`");
    }
}
