//! Completion webhooks (docs/WEB_TIER.md, section 4): when a job completes or fails, a trigger
//! of the journal queues one delivery per endpoint of the job (`webhook_deliveries`, in the
//! transaction that finishes the job); the daemons send them, signed as the Standard Webhooks
//! spec says, retried with backoff, each outcome recorded.
//!
//! `client` sends one delivery (and refuses addresses an endpoint may not reach), `store` is
//! the deliveries' table, `dispatcher` the loop that takes due deliveries and sends them.

pub mod client;
pub mod dispatcher;
pub mod store;

use std::collections::HashMap;

use anyhow::Context;
use quizworker_jobs::webhooks::Secret;

use crate::config::{Config, WebhookEndpoint};

/// A configured endpoint, ready to sign for.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub url: reqwest::Url,
    pub secret: Secret,
    pub allow_private: bool,
}

/// Every configured endpoint by name, with its secret read from the environment. A secret
/// missing or malformed stops the daemon at start, not its first delivery.
pub fn endpoints(config: &Config) -> anyhow::Result<HashMap<String, Endpoint>> {
    config
        .webhooks
        .endpoints
        .iter()
        .map(|(name, endpoint)| Ok((name.clone(), endpoint_of(name, endpoint)?)))
        .collect()
}

fn endpoint_of(name: &str, endpoint: &WebhookEndpoint) -> anyhow::Result<Endpoint> {
    let var = &endpoint.secret_env;
    let text = std::env::var(var).with_context(|| {
        format!("webhooks.endpoints.{name}: the environment variable {var} (secret_env) is not set")
    })?;
    let secret = Secret::parse(&text)
        .with_context(|| format!("webhooks.endpoints.{name}: the secret in {var}"))?;
    Ok(Endpoint {
        url: reqwest::Url::parse(&endpoint.url)
            .with_context(|| format!("webhooks.endpoints.{name}.url"))?,
        secret,
        allow_private: endpoint.allow_private,
    })
}
