//! What the daemon accepts of one job before it reads it, and how much of bad input its errors
//! repeat. A producer's mistake (a 5 MB payload, a payload nested a thousand deep) must fail
//! its own job with a message that says which limit it broke, not slow down or kill the
//! process that runs everyone else's jobs, and not be copied into every error and log line.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

/// The daemon's `[limits]` settings (config.toml shows each with its default). Checked by
/// [`Envelope::decode_within`](crate::Envelope::decode_within) before anything else reads a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// The most bytes of one job as stored in Redis: the envelope, payload included.
    pub max_job_bytes: usize,
    /// The most bytes of the envelope's `kind`.
    pub max_kind_bytes: usize,
    /// How deep arrays and objects may nest in a job, the envelope itself being level 1.
    pub max_json_depth: usize,
}

/// serde_json refuses JSON nested 128 deep ("recursion limit exceeded"): a depth limit above
/// this would let such jobs fail as "not valid JSON" instead of naming the limit.
pub const MAX_JSON_DEPTH_LIMIT: usize = 127;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            // 1 MiB: a 90-question attempt is about 6 KB, a test sent with it a few KB more.
            max_job_bytes: 1024 * 1024,
            // The longest kind today, `export.test_report_pdf`, is 22 bytes.
            max_kind_bytes: 100,
            // Tests and attempts nest 5 deep; an envelope adds one level.
            max_json_depth: 64,
        }
    }
}

/// A job that breaks one of the [`Limits`]. Each message names the setting and its value, so
/// the operator reading the journal knows what to change, and the producer what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitExceeded {
    #[error("the job is {bytes} bytes, more than limits.max_job_bytes = {limit}")]
    JobTooLarge { bytes: usize, limit: usize },
    #[error(
        "the job's kind `{}` is {bytes} bytes long, more than limits.max_kind_bytes = {limit}",
        shorten(.kind, ECHO_BYTES)
    )]
    KindTooLong {
        kind: String,
        bytes: usize,
        limit: usize,
    },
    #[error("the job nests arrays and objects more than limits.max_json_depth = {limit} deep")]
    NestedTooDeep { limit: usize },
}

impl Limits {
    /// The checks that need no parsing: size, then nesting depth.
    pub fn check_text(&self, bytes: &[u8]) -> Result<(), LimitExceeded> {
        if bytes.len() > self.max_job_bytes {
            return Err(LimitExceeded::JobTooLarge {
                bytes: bytes.len(),
                limit: self.max_job_bytes,
            });
        }
        if nests_deeper_than(bytes, self.max_json_depth) {
            return Err(LimitExceeded::NestedTooDeep {
                limit: self.max_json_depth,
            });
        }
        Ok(())
    }

    pub fn check_kind(&self, kind: &str) -> Result<(), LimitExceeded> {
        if kind.len() > self.max_kind_bytes {
            return Err(LimitExceeded::KindTooLong {
                kind: kind.to_owned(),
                bytes: kind.len(),
                limit: self.max_kind_bytes,
            });
        }
        Ok(())
    }
}

/// Whether JSON text nests arrays and objects deeper than `max_depth`. One pass over the bytes,
/// with neither recursion nor allocation, so that it cannot itself be what deep input breaks;
/// brackets inside strings do not count. Text that is not JSON is scanned all the same: its
/// parser says what else is wrong with it.
pub fn nests_deeper_than(bytes: &[u8], max_depth: usize) -> bool {
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => i = past_string(bytes, i + 1),
            b'[' | b'{' => {
                depth += 1;
                if depth > max_depth {
                    return true;
                }
                i += 1;
            }
            b']' | b'}' => {
                depth = depth.saturating_sub(1);
                i += 1;
            }
            _ => i += 1,
        }
    }
    false
}

/// The index just past the closing quote of the string whose text starts at `i` (the end of
/// `bytes` if it has none). Most of a job's bytes are in strings; `memchr` skips through them.
fn past_string(bytes: &[u8], mut i: usize) -> usize {
    while i < bytes.len() {
        match memchr::memchr2(b'"', b'\\', &bytes[i..]) {
            Some(offset) if bytes[i + offset] == b'"' => return i + offset + 1,
            // A backslash escapes the byte after it, a quote included.
            Some(offset) => i += offset + 2,
            None => break,
        }
    }
    bytes.len()
}

/// How many bytes of bad input an error message repeats (a value, an id, a parser's message
/// that quotes the input): enough to recognise it, never the whole of a large input.
pub const ECHO_BYTES: usize = 200;

/// `text` if it is at most `max_bytes` long; else its start and end around a note of how much
/// was cut, `max_bytes` of the text in all. The end is kept because parsers put the position
/// of an error there ("... at line 1 column 5000012").
pub fn shorten(text: &str, max_bytes: usize) -> Cow<'_, str> {
    if text.len() <= max_bytes {
        return Cow::Borrowed(text);
    }
    let head_end = floor_char_boundary(text, max_bytes - max_bytes / 3);
    let tail_start = ceil_char_boundary(text, text.len() - max_bytes / 3);
    let cut = tail_start - head_end;
    Cow::Owned(format!(
        "{}…[{cut} bytes cut]…{}",
        &text[..head_end],
        &text[tail_start..]
    ))
}

/// `text` with every part quoted between backticks (the way errors here quote input: "unknown
/// test `…`") [`shorten`]ed to `max_quote_bytes`. For a message built by code that does not
/// cut what it quotes.
pub fn shorten_quoted(text: &str, max_quote_bytes: usize) -> Cow<'_, str> {
    let too_long = |(i, part): (usize, &str)| i % 2 == 1 && part.len() > max_quote_bytes;
    if !text.split('`').enumerate().any(too_long) {
        return Cow::Borrowed(text);
    }
    let parts: Vec<Cow<'_, str>> = text
        .split('`')
        .enumerate()
        .map(|(i, part)| {
            if i % 2 == 1 {
                shorten(part, max_quote_bytes)
            } else {
                Cow::Borrowed(part)
            }
        })
        .collect();
    Cow::Owned(parts.join("`"))
}

fn floor_char_boundary(text: &str, mut index: usize) -> usize {
    while !text.is_char_boundary(index) {
        index -= 1;
    }
    index
}

fn ceil_char_boundary(text: &str, mut index: usize) -> usize {
    while !text.is_char_boundary(index) {
        index += 1;
    }
    index
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(depth: usize) -> String {
        "[".repeat(depth) + &"]".repeat(depth)
    }

    #[test]
    fn depth_counts_arrays_and_objects_but_not_brackets_in_strings() {
        assert!(!nests_deeper_than(br#"{"a": [1, {"b": []}]}"#, 4));
        assert!(nests_deeper_than(br#"{"a": [1, {"b": []}]}"#, 3));
        assert!(!nests_deeper_than(br#"{"a": "[[[[{{{{"}"#, 1));
        // An escaped quote does not end the string; an escaped backslash before one does.
        assert!(!nests_deeper_than(br#"{"a": "\"[[[["}"#, 1));
        assert!(nests_deeper_than(br#"{"a": "\\", "b": [[]]}"#, 2));
        assert!(!nests_deeper_than(b"", 0));
    }

    #[test]
    fn depth_far_beyond_any_parser_is_scanned_without_recursion() {
        let deep = nested(1_000_000);
        assert!(nests_deeper_than(deep.as_bytes(), 64));
        assert!(!nests_deeper_than(deep.as_bytes(), 1_000_000));
    }

    #[test]
    fn limit_errors_name_the_setting_and_its_value() {
        let limits = Limits {
            max_job_bytes: 10,
            max_kind_bytes: 4,
            max_json_depth: 2,
        };
        let cases = [
            (
                limits.check_text(b"{\"a\": 12345678}"),
                "the job is 15 bytes, more than limits.max_job_bytes = 10",
            ),
            (
                limits.check_text(b"[[[]]]"),
                "more than limits.max_json_depth = 2 deep",
            ),
            (
                limits.check_kind("diag.noop"),
                "the job's kind `diag.noop` is 9 bytes long, more than limits.max_kind_bytes = 4",
            ),
        ];
        for (result, expected) in cases {
            let message = result.unwrap_err().to_string();
            assert!(message.contains(expected), "{message:?}");
        }
        assert_eq!(limits.check_text(b"[[]]"), Ok(()));
        assert_eq!(limits.check_kind("diag"), Ok(()));
    }

    #[test]
    fn a_long_kind_is_quoted_short() {
        let kind = "k".repeat(100_000);
        let message = Limits::default().check_kind(&kind).unwrap_err().to_string();
        assert!(message.len() < 400, "{} bytes", message.len());
        assert!(message.contains("100000 bytes long"), "{message}");
    }

    #[test]
    fn shorten_keeps_start_and_end_on_character_boundaries() {
        assert_eq!(shorten("short", 10), "short");
        let text = format!("{}{}", "é".repeat(1000), " at line 1 column 2001");
        let short = shorten(&text, 60);
        assert!(short.starts_with("éé"), "{short}");
        assert!(short.ends_with("column 2001"), "{short}");
        assert!(short.contains("bytes cut]"), "{short}");
        assert!(short.len() < 100, "{short}");
    }

    #[test]
    fn shorten_quoted_cuts_long_quotes_and_leaves_the_rest() {
        let id = "a".repeat(10_000);
        let text = format!("unknown attempt `{id}`: it has no stored result (`score.attempt`)");
        let short = shorten_quoted(&text, 40);
        assert!(short.starts_with("unknown attempt `aaaa"), "{short}");
        assert!(
            short.ends_with("`: it has no stored result (`score.attempt`)"),
            "{short}"
        );
        assert!(short.len() < 150, "{short}");
        assert!(matches!(
            shorten_quoted("`short` and `quotes`", 40),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn the_defaults_fit_under_serde_json_s_own_depth_limit() {
        let limits = Limits::default();
        assert!(limits.max_json_depth <= MAX_JSON_DEPTH_LIMIT);
        let deepest = nested(MAX_JSON_DEPTH_LIMIT);
        assert!(serde_json::from_str::<serde_json::Value>(&deepest).is_ok());
        let deeper = nested(MAX_JSON_DEPTH_LIMIT + 1);
        assert!(serde_json::from_str::<serde_json::Value>(&deeper).is_err());
    }
}
