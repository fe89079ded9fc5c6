//! quizworker's job catalogue: the wire envelope that carries every job through Redis, the typed
//! payload of each job kind, and the pure logic of the jobs. Nothing here does I/O, so a Rust web
//! tier can depend on this crate to build jobs that the daemon will accept.

pub mod catalogue;
pub mod diag;
pub mod envelope;
pub mod export_jobs;
pub mod results_sheet;
pub mod scoring;
pub mod scoring_jobs;

pub use catalogue::{JobPayload, Kind, Queue, UnknownQueue};
pub use envelope::{ENQUEUE_SCRIPT, ENVELOPE_VERSION, Envelope, EnvelopeError};
