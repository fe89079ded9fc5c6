//! The client of an OpenAI-compatible chat-completions API (OpenAI, Azure, vLLM, Ollama,
//! llama.cpp's server, OpenRouter): one POST to `<ai.base_url>/chat/completions` per call, over
//! reqwest with rustls (ring, the system's CA certificates, as the SMTP client). What a status
//! and the rate-limit headers mean is `quizworker_jobs::ai::reply`'s.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use quizworker_jobs::ai::reply::{
    ChatCompletion, ResponseFormat, RetryHeaders, StatusClass, classify_status, retry_wait,
};
use quizworker_jobs::limits::shorten;
use reqwest::header::HeaderMap;
use serde_json::Value;

use crate::config::AiConfig;
use crate::ops::redact::redacted;

/// Where the API key comes from; never the config file. Unset: no `Authorization` header (a
/// local server).
pub const API_KEY_VAR: &str = "AI_API_KEY";

/// How much of an error body a message repeats.
const ERROR_BODY_BYTES: usize = 400;

pub struct Provider {
    http: reqwest::Client,
    url: String,
    /// `<ai.base_url>/models`, which `quizworker check` asks whether the model is known.
    models_url: String,
    model: String,
    format: ResponseFormat,
    key: Option<String>,
}

/// A reply with a 2xx status and a chat completion in its body.
pub struct Reply {
    pub completion: ChatCompletion,
    /// The body as received, kept with a question that fails.
    pub body: String,
    pub duration: Duration,
}

/// What the server's model list says of the configured model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Models {
    /// Among the `count` models listed.
    Listed { count: usize },
    /// Not among these.
    NotListed { ids: Vec<String> },
    /// The server has no model list (`status`: 404 or 405).
    NotServed { status: u16 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderError {
    /// 408, 409, 429, 5xx, a body that is not a completion, or no answer at all (connecting,
    /// a timeout, a connection cut): `wait` is what the provider asked for, if it did.
    Transient {
        reason: String,
        wait: Option<Duration>,
        /// The metric's outcome: `throttled`, `server_error` or `unreachable`.
        outcome: &'static str,
    },
    /// Any other 4xx, with the API's message.
    Permanent { status: u16, reason: String },
}

impl Provider {
    /// The client; fails on settings no job could mend (TLS cannot be set up).
    pub fn new(config: &AiConfig) -> anyhow::Result<Provider> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .context("could not set up TLS for the AI API")?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .user_agent(concat!("quizworker/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("could not build the AI API's HTTP client")?;
        let key = std::env::var(API_KEY_VAR).ok().filter(|k| !k.is_empty());
        let base = config.base_url.trim_end_matches('/');
        Ok(Provider {
            http,
            url: format!("{base}/chat/completions"),
            models_url: format!("{base}/models"),
            model: config.model.clone(),
            format: config.response_format,
            key,
        })
    }

    pub fn model(&self) -> &str {
        &self.model
    }

    /// Whether an API key is sent (`AI_API_KEY` is set).
    pub fn has_key(&self) -> bool {
        self.key.is_some()
    }

    /// Asks `GET <base_url>/models` whether the model is known. Not every server has the list
    /// (a proxy may not): a 404 or 405 is [`Models::NotServed`], not an error.
    pub async fn models(&self) -> Result<Models, ProviderError> {
        let mut request = self.http.get(&self.models_url);
        if let Some(key) = &self.key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.map_err(|e| self.unreachable(e))?;
        let status = response.status().as_u16();
        let text = response.text().await.map_err(|e| self.unreachable(e))?;
        if matches!(status, 404 | 405) {
            return Ok(Models::NotServed { status });
        }
        let reason = || {
            format!(
                "GET {} answered {status}: {}",
                redacted(&self.models_url),
                error_message(&text)
            )
        };
        match classify_status(status) {
            StatusClass::Success => {}
            StatusClass::Transient => {
                return Err(ProviderError::Transient {
                    reason: reason(),
                    wait: None,
                    outcome: "server_error",
                });
            }
            StatusClass::Permanent => {
                return Err(ProviderError::Permanent {
                    status,
                    reason: reason(),
                });
            }
        }
        // `{"object": "list", "data": [{"id": "gpt-4o-mini", ...}, ...]}`
        let ids: Vec<String> = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v.get("data").and_then(Value::as_array).cloned())
            .map(|models| {
                models
                    .iter()
                    .filter_map(|m| m.get("id").and_then(Value::as_str).map(str::to_owned))
                    .collect()
            })
            .ok_or_else(|| ProviderError::Transient {
                reason: format!(
                    "GET {} answered {status} with a body that is not a model list: {}",
                    redacted(&self.models_url),
                    shorten(&text, ERROR_BODY_BYTES)
                ),
                wait: None,
                outcome: "server_error",
            })?;
        Ok(if ids.contains(&self.model) {
            Models::Listed { count: ids.len() }
        } else {
            Models::NotListed { ids }
        })
    }

    pub fn format(&self) -> ResponseFormat {
        self.format
    }

    /// One request with `body` (a chat-completions request).
    pub async fn complete(&self, body: &Value) -> Result<Reply, ProviderError> {
        let started = Instant::now();
        let mut request = self.http.post(&self.url).json(body);
        if let Some(key) = &self.key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.map_err(|e| self.unreachable(e))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.map_err(|e| self.unreachable(e))?;
        match classify_status(status) {
            StatusClass::Success => match serde_json::from_str::<ChatCompletion>(&text) {
                Ok(completion) => Ok(Reply {
                    completion,
                    body: text,
                    duration: started.elapsed(),
                }),
                Err(e) => Err(ProviderError::Transient {
                    reason: format!(
                        "the AI API at {} answered {status} with a body that is not a chat completion ({e}): {}",
                        redacted(&self.url),
                        shorten(&text, ERROR_BODY_BYTES)
                    ),
                    wait: None,
                    outcome: "server_error",
                }),
            },
            StatusClass::Transient => Err(ProviderError::Transient {
                reason: format!(
                    "the AI API at {} answered {status}: {}",
                    redacted(&self.url),
                    error_message(&text)
                ),
                wait: retry_wait(&retry_headers(&headers), chrono::Utc::now()),
                outcome: if status == 429 {
                    "throttled"
                } else {
                    "server_error"
                },
            }),
            StatusClass::Permanent => Err(ProviderError::Permanent {
                status,
                reason: format!(
                    "the AI API at {} answered {status}: {}",
                    redacted(&self.url),
                    error_message(&text)
                ),
            }),
        }
    }

    /// No answer: connecting failed, the request timed out, or the connection was cut. The
    /// message names each cause once (reqwest's own message is only "error sending request").
    fn unreachable(&self, error: reqwest::Error) -> ProviderError {
        let error = error.without_url();
        let mut reason = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            let text = cause.to_string();
            if !reason.contains(&text) {
                reason.push_str(": ");
                reason.push_str(&text);
            }
            source = cause.source();
        }
        ProviderError::Transient {
            reason: format!(
                "the AI API at {} could not be reached: {reason}",
                redacted(&self.url)
            ),
            wait: None,
            outcome: "unreachable",
        }
    }
}

fn retry_headers(headers: &HeaderMap) -> RetryHeaders<'_> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    RetryHeaders {
        retry_after_ms: get("retry-after-ms"),
        retry_after: get("retry-after"),
        reset_requests: get("x-ratelimit-reset-requests"),
        reset_tokens: get("x-ratelimit-reset-tokens"),
    }
}

/// The API's own message (`{"error": {"message": ...}}`), else the start of the body.
fn error_message(body: &str) -> String {
    let message = serde_json::from_str::<Value>(body).ok().and_then(|v| {
        v.pointer("/error/message")
            .and_then(Value::as_str)
            .map(str::to_owned)
    });
    let text = message.unwrap_or_else(|| body.trim().to_owned());
    if text.is_empty() {
        "(no body)".to_owned()
    } else {
        shorten(&text, ERROR_BODY_BYTES).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_for_an_https_api_builds_and_keeps_the_path() {
        let mut config = crate::config::Config::default().ai;
        config.base_url = "https://api.openai.com/v1/".into();
        let provider = Provider::new(&config).unwrap();
        assert_eq!(provider.url, "https://api.openai.com/v1/chat/completions");
    }

    #[test]
    fn an_error_body_is_the_apis_message_or_its_start() {
        let body = r#"{"error": {"message": "Invalid model", "type": "invalid_request_error"}}"#;
        assert_eq!(error_message(body), "Invalid model");
        assert_eq!(error_message("Bad Gateway"), "Bad Gateway");
        assert_eq!(error_message(""), "(no body)");
        assert!(error_message(&"x".repeat(10_000)).len() < 500);
    }
}
