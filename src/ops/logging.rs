//! Log lines on standard error: for people, or one JSON object per line. What we log comes
//! partly from outside (a job's kind and id, a producer's payload in an error): in lines for
//! people, control characters in it are escaped, so that no input can forge a log line with a
//! newline, make the log binary with a NUL, or drive the terminal. JSON lines escape them by
//! being JSON.

use std::borrow::Cow;
use std::fmt;
use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::{DefaultFields, Writer};

/// Whether log lines are for people or for machines (journald, Loki).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Human,
    Json,
}

/// Installs the process-wide subscriber. `default_filter` applies unless `RUST_LOG` is set.
pub fn init(format: Format, default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        Format::Human => builder.fmt_fields(EscapedFields::default()).init(),
        Format::Json => builder.json().flatten_event(true).init(),
    }
}

/// tracing-subscriber's own field layout (`message key=value ...`), with every control
/// character of the result escaped. It formats events and spans alike, so a job's kind in its
/// span is escaped as much as an error in an event.
#[derive(Debug, Default)]
pub struct EscapedFields {
    inner: DefaultFields,
}

impl<'writer> FormatFields<'writer> for EscapedFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        // Formatted without colours: the only control characters left are the input's.
        let mut text = String::new();
        self.inner.format_fields(Writer::new(&mut text), fields)?;
        writer.write_str(&escape_control(&text))
    }
}

/// `text` with each control character (and Unicode's line and paragraph separators) written
/// as its Rust escape: a newline as `\n`, a NUL as `\0`, an escape as `\u{1b}`. Borrowed when
/// there is none, which is nearly always.
pub fn escape_control(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if needs_escape(c) {
            escaped.extend(c.escape_default());
        } else {
            escaped.push(c);
        }
    }
    Cow::Owned(escaped)
}

fn needs_escape(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')
}

#[cfg(test)]
mod tests {
    use super::escape_control;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert_eq!(escape_control("diag.noop"), "diag.noop");
        assert_eq!(escape_control("é 日本 \\n"), "é 日本 \\n");
        assert_eq!(
            escape_control("a\nINFO forged\0\u{1b}[31m\r\t\u{85}\u{2028}"),
            "a\\nINFO forged\\u{0}\\u{1b}[31m\\r\\t\\u{85}\\u{2028}"
        );
    }
}
