//! What the AI tests share: a config for the ai queue, and a test environment with a local
//! server speaking the chat-completions API (wiremock) that the daemons send their requests to.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use sqlx::PgPool;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockBuilder, MockServer, Request, ResponseTemplate};

use super::{Daemon, FAST_CONFIG, TestEnv};

/// The chat-completions path under the base URL the daemons are given.
pub const COMPLETIONS: &str = "/v1/chat/completions";

/// The API key, for the daemons of the tests that send one.
pub const API_KEY: (&str, &str) = ("AI_API_KEY", "sk-test-key");

/// FAST_CONFIG, with the ai queue retrying within a second, `model`, and prices to check the
/// cost with; `ai_extra` is added to `[ai]`.
pub fn config(model: &str, ai_extra: &str) -> String {
    format!(
        r#"{FAST_CONFIG}
[queues.ai]
concurrency = 8
timeout = "60s"
max_attempts = 3
backoff = {{ base = "500ms", cap = "1s", jitter = 0.0 }}

[ai]
model = "{model}"
max_retry_wait = "5s"
input_price_per_million = 1.0
output_price_per_million = 2.0
{ai_extra}
"#
    )
}

/// A mock of the chat-completions endpoint, to add matchers and a response to.
pub fn completions() -> MockBuilder {
    Mock::given(method("POST")).and(path(COMPLETIONS))
}

/// Completions that record when each request arrived.
pub fn timed(
    times: &Arc<Mutex<Vec<Instant>>>,
    reply: ResponseTemplate,
) -> impl Fn(&Request) -> ResponseTemplate + use<> {
    let times = times.clone();
    move |_: &Request| {
        times.lock().unwrap().push(Instant::now());
        reply.clone()
    }
}

pub struct AiEnv {
    pub env: TestEnv,
    pub server: MockServer,
}

impl AiEnv {
    pub async fn start(pool: PgPool, config: &str) -> AiEnv {
        AiEnv {
            env: TestEnv::with_config(pool, config).await,
            server: MockServer::start().await,
        }
    }

    /// A daemon whose AI requests go to the server, with `env` set as well.
    pub fn daemon_with(&self, env: &[(&str, &str)]) -> Daemon {
        let base_url = format!("{}/v1", self.server.uri());
        let mut vars = vec![("QUIZWORKER_AI__BASE_URL", base_url.as_str())];
        vars.extend_from_slice(env);
        self.env.spawn_daemon_with(&[], &vars)
    }
}
