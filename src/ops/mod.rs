//! What operators and their tools watch while the daemon runs: `health` (what the process
//! knows of itself), `metrics` (Prometheus), `http` (the endpoints that serve both),
//! `systemd` (readiness and the watchdog), `logging` (log lines no input can forge) and
//! `redact` (no password in what we print).

pub mod health;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod redact;
pub mod systemd;
