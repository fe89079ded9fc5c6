//! The queues and the job kinds that run on them.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The queues of DESIGN.md. Each has its own concurrency, timeout and retry settings in the
/// daemon's config, so one family of jobs cannot starve another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Queue {
    Default,
    Scoring,
    Emails,
    Exports,
    Ai,
    Indexing,
}

impl Queue {
    pub const ALL: [Queue; 6] = [
        Queue::Default,
        Queue::Scoring,
        Queue::Emails,
        Queue::Exports,
        Queue::Ai,
        Queue::Indexing,
    ];

    /// The queue's name on the wire and in config.
    pub const fn name(self) -> &'static str {
        match self {
            Queue::Default => "default",
            Queue::Scoring => "scoring",
            Queue::Emails => "emails",
            Queue::Exports => "exports",
            Queue::Ai => "ai",
            Queue::Indexing => "indexing",
        }
    }
}

impl fmt::Display for Queue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown queue `{0}` (known queues: default, scoring, emails, exports, ai, indexing)")]
pub struct UnknownQueue(pub String);

impl FromStr for Queue {
    type Err = UnknownQueue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Queue::ALL
            .into_iter()
            .find(|q| q.name() == s)
            .ok_or_else(|| UnknownQueue(s.to_owned()))
    }
}

/// A job kind: its stable name on the wire, the queue it runs on unless the producer says
/// otherwise, and the type of its payload.
pub trait JobPayload: Serialize + DeserializeOwned {
    /// Stable across releases: producers in other languages send this string.
    const KIND: &'static str;
    const QUEUE: Queue;
}

/// A kind of the catalogue, for code that only has the kind's name (the CLI, producers).
#[derive(Debug, Clone, Copy)]
pub struct Kind {
    pub name: &'static str,
    pub queue: Queue,
    /// Checks that a payload has this kind's type.
    pub validate: fn(&serde_json::Value) -> Result<(), String>,
}

impl Kind {
    const fn of<P: JobPayload>() -> Kind {
        Kind {
            name: P::KIND,
            queue: P::QUEUE,
            validate: |value| P::deserialize(value).map(drop).map_err(|e| e.to_string()),
        }
    }
}

/// Every kind this version of the catalogue knows.
pub const KINDS: &[Kind] = &[
    Kind::of::<crate::diag::Noop>(),
    Kind::of::<crate::diag::Sleep>(),
    Kind::of::<crate::diag::Fail>(),
    Kind::of::<crate::scoring_jobs::ScoreAttempt>(),
    Kind::of::<crate::scoring_jobs::RescoreTest>(),
    Kind::of::<crate::scoring_jobs::FinalizeTest>(),
    Kind::of::<crate::export_jobs::ExportResultsCsv>(),
    Kind::of::<crate::export_jobs::ExportReportPdf>(),
    Kind::of::<crate::export_jobs::ExportTestReportPdf>(),
];

/// The kind of that name, or `None` for a kind this catalogue does not know.
pub fn kind(name: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|k| k.name == name)
}

/// The queue a kind runs on by default, or `None` for a kind this catalogue does not know.
pub fn default_queue(kind_name: &str) -> Option<Queue> {
    kind(kind_name).map(|k| k.queue)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names_round_trip() {
        for q in Queue::ALL {
            assert_eq!(q.name().parse::<Queue>().unwrap(), q);
        }
        let err = "scorng".parse::<Queue>().unwrap_err();
        assert!(err.to_string().contains("`scorng`"));
    }

    #[test]
    fn diagnostic_kinds_run_on_the_default_queue() {
        assert_eq!(default_queue("diag.noop"), Some(Queue::Default));
        assert_eq!(default_queue("diag.fail"), Some(Queue::Default));
        assert_eq!(default_queue("no.such.kind"), None);
    }

    #[test]
    fn a_kind_validates_its_payload() {
        let sleep = kind("diag.sleep").unwrap();
        assert!((sleep.validate)(&serde_json::json!({"ms": 10})).is_ok());
        let err = (sleep.validate)(&serde_json::json!({})).unwrap_err();
        assert!(err.contains("missing field `ms`"), "{err}");
    }
}
