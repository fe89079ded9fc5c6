//! quizworker's job catalogue: the wire envelope that carries every job through Redis, the typed
//! payload of each job kind, and the pure logic of the jobs. Nothing here does I/O, so a Rust web
//! tier can depend on this crate to build jobs that the daemon will accept.
//!
//! One module per job family, holding its payloads and its pure logic: [`diag`], [`scoring`],
//! [`exports`], [`email`], [`ai`], [`indexing`]; [`webhooks`] signs completion webhooks. What every payload is ([`JobPayload`], [`Queue`]) is in [`payload`]; the list of
//! every kind is [`catalogue`]; the wire format is [`envelope`], and what the daemon accepts of a
//! job is [`limits`].

pub mod ai;
pub mod catalogue;
pub mod diag;
pub mod email;
pub mod envelope;
pub mod exports;
pub mod indexing;
pub mod limits;
pub mod payload;
pub mod scoring;
pub mod webhooks;

pub use catalogue::Kind;
pub use envelope::{ENQUEUE_SCRIPT, ENVELOPE_VERSION, Envelope, EnvelopeError};
pub use limits::{LimitExceeded, Limits};
pub use payload::{JobPayload, Queue, UnknownQueue};
