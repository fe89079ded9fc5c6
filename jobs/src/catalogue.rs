//! The list of every job kind this version knows, for code that has only a kind's name (the
//! CLI, producers, the daemon's dispatch and metrics). A new kind is one line in [`KINDS`].

use crate::payload::{JobPayload, Queue};

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
    Kind::of::<crate::scoring::ScoreAttempt>(),
    Kind::of::<crate::scoring::RescoreTest>(),
    Kind::of::<crate::scoring::FinalizeTest>(),
    Kind::of::<crate::exports::ExportResultsCsv>(),
    Kind::of::<crate::exports::ExportReportPdf>(),
    Kind::of::<crate::exports::ExportTestReportPdf>(),
    Kind::of::<crate::email::EmailSend>(),
    Kind::of::<crate::email::EmailBulk>(),
    Kind::of::<crate::ai::AiHints>(),
    Kind::of::<crate::ai::AiEvaluate>(),
    Kind::of::<crate::indexing::IndexUpsert>(),
    Kind::of::<crate::indexing::IndexDelete>(),
    Kind::of::<crate::indexing::IndexRebuild>(),
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
