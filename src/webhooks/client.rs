//! Sends one delivery: the body signed with the endpoint's secret, to an address the endpoint
//! may reach. A host is resolved by the client's own resolver, which refuses loopback, private
//! and link-local addresses unless the endpoint allows them; the connection then goes to the
//! addresses it checked, so a name cannot resolve one way for the check and another for the
//! request.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use quizworker_jobs::limits::shorten;
use quizworker_jobs::webhooks::refused_address;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use super::Endpoint;
use crate::config::WebhooksConfig;

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A 2xx response.
    Delivered { status: u16, response: String },
    /// Another status, or no response (a timeout, a refused connection): worth another try.
    Failed {
        status: Option<u16>,
        response: Option<String>,
        error: String,
    },
    /// Never sendable as configured (an address it may not reach, an endpoint that is not
    /// configured): not retried.
    Refused { error: String },
}

/// A resolution refused for the address it gave.
#[derive(Debug, thiserror::Error)]
#[error("{host} resolves to {ip}, {why}; set allow_private for this endpoint to allow it")]
struct RefusedAddress {
    host: String,
    ip: IpAddr,
    why: &'static str,
}

/// Resolves with the system's resolver and refuses what an endpoint may not reach. Hosts of
/// endpoints that allow private addresses are resolved without the check.
struct CheckingResolver {
    allowed_hosts: Vec<String>,
}

impl Resolve for CheckingResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        let check = !self.allowed_hosts.contains(&host);
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if check
                && let Some((ip, why)) = addrs
                    .iter()
                    .find_map(|a| refused_address(a.ip()).map(|why| (a.ip(), why)))
            {
                return Err(Box::new(RefusedAddress { host, ip, why }) as _);
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    max_response_bytes: usize,
}

impl Client {
    pub fn new(
        config: &WebhooksConfig,
        endpoints: &std::collections::HashMap<String, Endpoint>,
    ) -> anyhow::Result<Client> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .context("could not set up TLS for webhooks")?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let allowed_hosts = endpoints
            .values()
            .filter(|e| e.allow_private)
            .filter_map(|e| e.url.host_str().map(str::to_owned))
            .collect();
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .dns_resolver(Arc::new(CheckingResolver { allowed_hosts }))
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            // A redirect could lead anywhere, past the checks: a 3xx is a failed attempt.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("quizworker/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("could not build the webhooks' HTTP client")?;
        Ok(Client {
            http,
            max_response_bytes: config.max_response_bytes,
        })
    }

    /// One attempt of delivery `id` to `endpoint`, signed now.
    pub async fn send(&self, endpoint: &Endpoint, id: &str, body: Vec<u8>) -> (Outcome, Duration) {
        let started = Instant::now();
        if let Some(error) = refused_literal(endpoint) {
            return (Outcome::Refused { error }, started.elapsed());
        }
        let timestamp = chrono::Utc::now().timestamp();
        let signature = endpoint.secret.sign(id, timestamp, &body);
        let sent = self
            .http
            .post(endpoint.url.clone())
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await;
        let outcome = match sent {
            Ok(response) => {
                let status = response.status().as_u16();
                // A body that cannot be read is kept as what it was not.
                let text = response
                    .text()
                    .await
                    .unwrap_or_else(|e| format!("(the body could not be read: {e})"));
                let kept = shorten(&text, self.max_response_bytes / 2).into_owned();
                if (200..300).contains(&status) {
                    Outcome::Delivered {
                        status,
                        response: kept,
                    }
                } else {
                    Outcome::Failed {
                        status: Some(status),
                        response: Some(kept),
                        error: format!("the endpoint answered {status}"),
                    }
                }
            }
            Err(e) => match refused_in(&e) {
                Some(refused) => Outcome::Refused {
                    error: refused.to_string(),
                },
                None => Outcome::Failed {
                    status: None,
                    response: None,
                    error: error_chain(&e),
                },
            },
        };
        (outcome, started.elapsed())
    }
}

/// An endpoint URL that is an IP address is not resolved, so the resolver does not see it.
fn refused_literal(endpoint: &Endpoint) -> Option<String> {
    if endpoint.allow_private {
        return None;
    }
    // An IPv6 host is written in brackets.
    let host = endpoint.url.host_str()?;
    let ip: IpAddr = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()?;
    refused_address(ip)
        .map(|why| format!("{ip} is {why}; set allow_private for this endpoint to allow it"))
}

fn refused_in(error: &reqwest::Error) -> Option<&RefusedAddress> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(refused) = e.downcast_ref::<RefusedAddress>() {
            return Some(refused);
        }
        source = e.source();
    }
    None
}

/// An error and its causes on one line, each once (reqwest's own message says little).
fn error_chain(error: &reqwest::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = e.source();
    }
    if error.is_timeout() {
        parts.insert(0, "timed out".to_owned());
    }
    parts.join(": ")
}
