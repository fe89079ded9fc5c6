//! Diagnostic kinds for operators and benchmarks: they exercise the daemon's machinery (journal,
//! retries, timeouts, shutdown) without touching any outside service.

use serde::{Deserialize, Serialize};

use crate::payload::{JobPayload, Queue};

/// Does nothing: measures the daemon's own overhead per job.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Noop {}

impl JobPayload for Noop {
    const KIND: &'static str = "diag.noop";
    const QUEUE: Queue = Queue::Default;
}

/// Sleeps for `ms` milliseconds, reporting progress as it goes: a stand-in for a long job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sleep {
    pub ms: u64,
}

impl JobPayload for Sleep {
    const KIND: &'static str = "diag.sleep";
    const QUEUE: Queue = Queue::Default;
}

/// Fails its first `times` attempts with a transient error, then succeeds; with `permanent` it
/// fails at once with an error that must not be retried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fail {
    #[serde(default)]
    pub times: u32,
    #[serde(default)]
    pub permanent: bool,
}

impl JobPayload for Fail {
    const KIND: &'static str = "diag.fail";
    const QUEUE: Queue = Queue::Default;
}

/// What one attempt of a `diag.fail` job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOutcome {
    Succeed,
    FailTransient,
    FailPermanent,
}

impl Fail {
    /// `attempt` counts from 1.
    pub fn outcome(&self, attempt: u32) -> FailOutcome {
        if self.permanent {
            FailOutcome::FailPermanent
        } else if attempt <= self.times {
            FailOutcome::FailTransient
        } else {
            FailOutcome::Succeed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fail_succeeds_after_its_failures() {
        let job = Fail {
            times: 2,
            permanent: false,
        };
        assert_eq!(job.outcome(1), FailOutcome::FailTransient);
        assert_eq!(job.outcome(2), FailOutcome::FailTransient);
        assert_eq!(job.outcome(3), FailOutcome::Succeed);
    }

    #[test]
    fn permanent_fail_never_succeeds() {
        let job = Fail {
            times: 0,
            permanent: true,
        };
        assert_eq!(job.outcome(1), FailOutcome::FailPermanent);
        assert_eq!(job.outcome(9), FailOutcome::FailPermanent);
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err = serde_json::from_str::<Sleep>(r#"{"ms": 5, "sec": 1}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `sec`"));
    }
}
