//! How commands print: tables for people, JSON for scripts. Nothing here panics when standard
//! output's reader goes away (`quizworker jobs list | head -1`): printing returns the error, and
//! main ends the command quietly.

use chrono::{DateTime, Utc};
use comfy_table::presets::NOTHING;
use comfy_table::{ContentArrangement, Table};
use serde::Serialize;

use crate::ops::logging::escape_control;

/// `println!` that returns an `io::Result` instead of panicking when the line cannot be written.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)
    }};
}
pub(crate) use outln;

/// A line for people on standard error, beside the output. Best effort: if standard error is
/// gone, the output still counts.
pub fn note(text: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

pub fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.to_vec());
    table
}

pub fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    outln!("{}", serde_json::to_string_pretty(value)?)?;
    Ok(())
}

/// A time as people read it: UTC to the second, and said to be UTC.
pub fn time(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| "-".to_owned())
}

/// Text that came from outside (a kind, an id, an error), fit for a terminal: its control
/// characters escaped, so that it cannot break a table or drive the terminal.
pub fn text(text: &str) -> String {
    escape_control(text).into_owned()
}

/// Long text cut to one table cell: on one line (line breaks become spaces), other control
/// characters escaped.
pub fn cell(text: Option<&str>, max: usize) -> String {
    let text = escape_control(&text.unwrap_or("-").replace('\n', " ")).into_owned();
    if text.chars().count() > max {
        format!("{}…", text.chars().take(max - 1).collect::<String>())
    } else {
        text
    }
}
