//! A document's version: what decides which of two writes of one document is the newer, so
//! that jobs may run (and be retried) in any order and the index still ends at the newest.
//! A version is a whole number of at least 0, or an RFC 3339 time (`updated_at`) taken to the
//! microsecond; an index uses one or the other ([`VersionType`]).

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What an index's version field holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VersionType {
    /// A whole number from 0 to 2^63 - 1 (a row version, a sequence, an edit counter).
    Integer,
    /// An RFC 3339 time with its offset, e.g. `2026-11-30T10:15:00.123456Z` (`updated_at`).
    Timestamp,
}

/// A version as stored: the number itself, or the time in microseconds since 1970 UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(pub i64);

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl VersionType {
    /// The version in `value`, or what is wrong with it.
    pub fn parse(self, value: &Value) -> Result<Version, String> {
        match self {
            VersionType::Integer => value
                .as_u64()
                .and_then(|v| i64::try_from(v).ok())
                .map(Version)
                .ok_or_else(|| "is not a whole number from 0 to 9223372036854775807".to_owned()),
            VersionType::Timestamp => {
                let text = value
                    .as_str()
                    .ok_or_else(|| "is not an RFC 3339 time as a string".to_owned())?;
                let time = chrono::DateTime::parse_from_rfc3339(text).map_err(|e| {
                    format!("is not an RFC 3339 time (e.g. 2026-11-30T10:15:00Z): {e}")
                })?;
                Ok(Version(time.timestamp_micros()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn integers_and_times_parse_and_order() {
        let int = VersionType::Integer;
        assert_eq!(int.parse(&json!(7)), Ok(Version(7)));
        assert!(int.parse(&json!(-1)).is_err());
        assert!(int.parse(&json!(1.5)).is_err());
        assert!(int.parse(&json!("7")).is_err());
        assert!(int.parse(&json!(u64::MAX)).is_err());

        let time = VersionType::Timestamp;
        let earlier = time.parse(&json!("2026-11-30T10:15:00.000001Z")).unwrap();
        let later = time
            .parse(&json!("2026-11-30T11:15:00.000002+01:00"))
            .unwrap();
        assert_eq!(later.0 - earlier.0, 1, "offsets are taken into account");
        assert!(
            time.parse(&json!("yesterday"))
                .unwrap_err()
                .contains("RFC 3339")
        );
        assert!(time.parse(&json!(12)).is_err());
    }
}
