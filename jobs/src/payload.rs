//! What every job payload is: a [`JobPayload`] has a stable kind name and the [`Queue`] it runs
//! on. The payload types of each family implement it; the list of them is
//! [`catalogue`](crate::catalogue).

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
}
