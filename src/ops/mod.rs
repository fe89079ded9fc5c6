//! What operators and their tools watch while the daemon runs: `health` (what the process
//! knows of itself), `metrics` (Prometheus), `http` (the endpoints that serve both) and
//! `systemd` (readiness and the watchdog).

pub mod health;
pub mod http;
pub mod metrics;
pub mod systemd;
