//! The versioned envelope that wraps every job on the wire (docs/PROTOCOL.md).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use ulid::Ulid;

use crate::limits::{ECHO_BYTES, LimitExceeded, Limits, shorten};
use crate::payload::JobPayload;

/// The envelope version this crate writes and the daemon reads.
pub const ENVELOPE_VERSION: u32 = 1;

/// The Lua script a producer runs to enqueue one envelope:
/// `EVAL <script> 0 <redis queue name> <envelope JSON>`. It validates the envelope's frame,
/// honours the idempotency key and writes apalis-redis' key layout.
pub const ENQUEUE_SCRIPT: &str = include_str!("enqueue.lua");

/// One job as it travels through Redis.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    /// Always [`ENVELOPE_VERSION`]; a daemon refuses versions it does not know.
    pub v: u32,
    /// A ULID: apalis-redis parses task ids as ULIDs, and its time part orders jobs.
    pub id: Ulid,
    pub kind: String,
    /// The payload's JSON text as the producer wrote it. Kept as text, not a JSON tree: the
    /// daemon reads it once, straight into the kind's type, and journals the same text (a tree
    /// of a 6 KB attempt cost more to build and drop than scoring it).
    pub payload: Box<RawValue>,
    pub created_at: DateTime<Utc>,
    /// A producer's key for "this job at most once": enqueueing a second envelope with the same
    /// key on the same queue returns the first job's id instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// Overrides the queue's configured attempt limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// Run no earlier than this (one-second resolution).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_at: Option<DateTime<Utc>>,
    /// The name of a configured webhook endpoint to tell when the job completes or fails
    /// (docs/WEB_TIER.md): a name, never a URL, so no payload can make the daemon call an
    /// address its operator did not list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
}

/// Why bytes taken off the queue are not a job this daemon can run. Every message names what is
/// wrong, because it ends up in the journal for an operator to read; what it quotes of the
/// input (a value, serde's message) is cut to [`ECHO_BYTES`], so that a large bad input is not
/// copied into every error and log line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("{0}")]
    OverLimit(#[from] LimitExceeded),
    #[error("the job is not valid JSON: {}", shorten(.0, ECHO_BYTES))]
    NotJson(String),
    #[error("the job is not a JSON object but {0}")]
    NotAnObject(&'static str),
    #[error(
        "unsupported envelope version {} (this daemon reads version {ENVELOPE_VERSION})",
        shorten(.0, ECHO_BYTES)
    )]
    Version(String),
    #[error("the envelope is malformed: {}", shorten(.0, ECHO_BYTES))]
    Malformed(String),
    #[error("unknown job kind `{}`", shorten(.0, ECHO_BYTES))]
    UnknownKind(String),
    #[error(
        "the payload does not match kind `{}`: {}",
        shorten(.kind, ECHO_BYTES),
        shorten(.reason, ECHO_BYTES)
    )]
    PayloadMismatch { kind: String, reason: String },
}

/// Envelopes are equal when their fields are; payloads compare as text.
impl PartialEq for Envelope {
    fn eq(&self, other: &Self) -> bool {
        self.v == other.v
            && self.id == other.id
            && self.kind == other.kind
            && self.payload.get() == other.payload.get()
            && self.created_at == other.created_at
            && self.idempotency_key == other.idempotency_key
            && self.max_attempts == other.max_attempts
            && self.run_at == other.run_at
            && self.webhook == other.webhook
    }
}

impl Envelope {
    /// A new envelope for a typed payload, created at `now`.
    pub fn new<P: JobPayload>(payload: &P, now: DateTime<Utc>) -> Result<Self, EnvelopeError> {
        let payload = serde_json::value::to_raw_value(payload).map_err(|e| {
            EnvelopeError::PayloadMismatch {
                kind: P::KIND.to_owned(),
                reason: e.to_string(),
            }
        })?;
        Ok(Self::with_raw_payload(P::KIND, payload, now))
    }

    /// A new envelope for a kind given by name, with an untyped payload (the CLI's path).
    pub fn from_parts(kind: &str, payload: &Value, now: DateTime<Utc>) -> Self {
        let payload =
            serde_json::value::to_raw_value(payload).expect("a JSON value always serializes");
        Self::with_raw_payload(kind, payload, now)
    }

    fn with_raw_payload(kind: &str, payload: Box<RawValue>, now: DateTime<Utc>) -> Self {
        Envelope {
            v: ENVELOPE_VERSION,
            id: Ulid::from_datetime(now.into()),
            kind: kind.to_owned(),
            payload,
            created_at: now,
            idempotency_key: None,
            max_attempts: None,
            run_at: None,
            webhook: None,
        }
    }

    /// Reads an envelope from the bytes stored in Redis, as the daemon does: a job over one of
    /// the `limits` is refused before it is parsed (its size and depth) or as soon as its kind
    /// is read.
    pub fn decode_within(bytes: &[u8], limits: &Limits) -> Result<Self, EnvelopeError> {
        limits.check_text(bytes)?;
        let envelope = Self::decode(bytes)?;
        limits.check_kind(&envelope.kind)?;
        Ok(envelope)
    }

    /// Reads an envelope from the bytes stored in Redis, with no limits but serde_json's own
    /// (nesting 128 deep): for tools that read what the daemon refused.
    pub fn decode(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        // The common case in one pass; anything it refuses is read again, slowly, to say
        // exactly what is wrong.
        match serde_json::from_slice::<Envelope>(bytes) {
            Ok(envelope) if envelope.v == ENVELOPE_VERSION => Ok(envelope),
            fast => Err(match Self::decode_checked(bytes) {
                Err(e) => e,
                // The slow reading checks the version first, so only the fast one's error is left.
                Ok(_) => EnvelopeError::Malformed(match fast {
                    Ok(envelope) => format!("version {}", envelope.v),
                    Err(e) => e.to_string(),
                }),
            }),
        }
    }

    /// Reads the envelope through a JSON tree, checking its frame before its fields.
    fn decode_checked(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| EnvelopeError::NotJson(e.to_string()))?;
        let object = match &value {
            Value::Object(object) => object,
            Value::Null => return Err(EnvelopeError::NotAnObject("null")),
            Value::Bool(_) => return Err(EnvelopeError::NotAnObject("a boolean")),
            Value::Number(_) => return Err(EnvelopeError::NotAnObject("a number")),
            Value::String(_) => return Err(EnvelopeError::NotAnObject("a string")),
            Value::Array(_) => return Err(EnvelopeError::NotAnObject("an array")),
        };
        match object.get("v") {
            Some(v) if v == &Value::from(ENVELOPE_VERSION) => {}
            Some(v) => return Err(EnvelopeError::Version(v.to_string())),
            None => return Err(EnvelopeError::Malformed("missing field `v`".to_owned())),
        }
        serde_json::from_value(value).map_err(|e| EnvelopeError::Malformed(e.to_string()))
    }

    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("an envelope always serializes")
    }

    /// The payload as the type of its kind.
    pub fn payload_as<P: JobPayload>(&self) -> Result<P, EnvelopeError> {
        serde_json::from_str(self.payload.get()).map_err(|e| EnvelopeError::PayloadMismatch {
            kind: self.kind.clone(),
            reason: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::Sleep;

    fn now() -> DateTime<Utc> {
        "2026-11-22T10:00:00Z".parse().unwrap()
    }

    #[test]
    fn round_trips_through_json() {
        let mut env = Envelope::new(&Sleep { ms: 5 }, now()).unwrap();
        env.idempotency_key = Some("attempt-42".into());
        let back = Envelope::decode(env.encode().as_bytes()).unwrap();
        assert_eq!(back, env);
        assert_eq!(back.payload_as::<Sleep>().unwrap(), Sleep { ms: 5 });
    }

    #[test]
    fn the_id_carries_the_creation_time() {
        let env = Envelope::new(&Sleep { ms: 5 }, now()).unwrap();
        assert_eq!(
            DateTime::<Utc>::from(env.id.datetime()).timestamp(),
            now().timestamp()
        );
    }

    #[test]
    fn errors_name_what_is_wrong() {
        let cases: [(&[u8], &str); 6] = [
            (b"not json", "not valid JSON"),
            (b"[1,2]", "not a JSON object but an array"),
            (br#"{"v": 2}"#, "unsupported envelope version 2"),
            (br#"{"kind": "diag.noop"}"#, "missing field `v`"),
            (br#"{"v": 1, "kind": "diag.noop"}"#, "missing field `id`"),
            (
                br#"{"v":1,"id":"nope","kind":"diag.noop","payload":{},"created_at":"2026-11-22T10:00:00Z"}"#,
                "the envelope is malformed",
            ),
        ];
        for (bytes, expected) in cases {
            let err = Envelope::decode(bytes).unwrap_err().to_string();
            assert!(
                err.contains(expected),
                "{err:?} should contain {expected:?}"
            );
        }
    }

    fn with_payload(kind: &str, payload: &str) -> String {
        format!(
            r#"{{"v":1,"id":"01KAAAAAAAAAAAAAAAAAAAAAA1","kind":"{kind}","payload":{payload},"created_at":"2026-11-22T10:00:00Z"}}"#
        )
    }

    #[test]
    fn a_job_within_the_limits_decodes() {
        let text = with_payload("diag.sleep", r#"{"ms": 5}"#);
        let env = Envelope::decode_within(text.as_bytes(), &Limits::default()).unwrap();
        assert_eq!(env.payload_as::<Sleep>().unwrap(), Sleep { ms: 5 });
    }

    #[test]
    fn a_job_over_a_limit_is_refused_naming_the_limit() {
        let limits = Limits {
            max_job_bytes: 4096,
            max_kind_bytes: 20,
            max_json_depth: 8,
        };
        let big = with_payload(
            "diag.noop",
            &format!(r#"{{"note": "{}"}}"#, "x".repeat(5000)),
        );
        let deep = with_payload("diag.noop", &("[".repeat(1000) + &"]".repeat(1000)));
        let long_kind = with_payload(&"k".repeat(21), "{}");
        let cases = [
            (big, "more than limits.max_job_bytes = 4096"),
            (deep, "more than limits.max_json_depth = 8 deep"),
            (
                long_kind,
                "21 bytes long, more than limits.max_kind_bytes = 20",
            ),
        ];
        for (text, expected) in cases {
            let err = Envelope::decode_within(text.as_bytes(), &limits).unwrap_err();
            assert!(matches!(err, EnvelopeError::OverLimit(_)), "{err:?}");
            assert!(err.to_string().contains(expected), "{err}");
        }
    }

    #[test]
    fn errors_quote_only_a_short_part_of_a_large_input() {
        let huge = "y".repeat(500_000);
        let bad_version = format!(r#"{{"v": "{huge}"}}"#);
        let err = Envelope::decode(bad_version.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("unsupported envelope version"), "{err}");
        assert!(err.len() < 2 * ECHO_BYTES, "{} bytes", err.len());

        let text = with_payload("diag.sleep", &format!(r#"{{"ms": "{huge}"}}"#));
        let env = Envelope::decode(text.as_bytes()).unwrap();
        let err = env.payload_as::<Sleep>().unwrap_err().to_string();
        assert!(
            err.starts_with("the payload does not match kind `diag.sleep`: invalid type: string"),
            "{err}"
        );
        assert!(
            err.ends_with("expected u64 at line 1 column 500009"),
            "{err}"
        );
        assert!(err.len() < 2 * ECHO_BYTES, "{} bytes", err.len());
    }

    #[test]
    fn a_payload_of_the_wrong_type_names_the_kind_and_the_field() {
        let env = Envelope::from_parts("diag.sleep", &serde_json::json!({"ms": "ten"}), now());
        let err = env.payload_as::<Sleep>().unwrap_err().to_string();
        assert!(err.contains("kind `diag.sleep`"), "{err}");
        assert!(err.contains("invalid type: string \"ten\""), "{err}");
    }
}
