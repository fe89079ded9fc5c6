//! The AI family: `ai.hints` over an OpenAI-compatible chat-completions API (`provider`), the
//! hints cached and stored with what they cost (`store`); `ai.evaluate` (`evaluate`), the
//! grades it stores (`evaluations`). The prompts, the replies' schemas, the leak check and the
//! grade check are pure (`quizworker_jobs::ai`).

mod evaluate;
pub mod evaluations;
mod fan_out;
mod handler;
pub mod limits;
pub mod provider;
pub mod store;

pub use evaluate::evaluate;
pub use handler::hints;

use quizworker_jobs::ai::reply::Usage;

use crate::config::{AiConfig, Config};
use provider::Provider;

/// What the AI handlers share, built once per process.
pub struct AiService {
    pub config: AiConfig,
    pub provider: Provider,
}

impl AiService {
    /// Fails on settings no job could mend (TLS cannot be set up).
    pub fn new(config: &Config) -> anyhow::Result<AiService> {
        Ok(AiService {
            provider: Provider::new(&config.ai)?,
            config: config.ai.clone(),
        })
    }

    /// The cost in USD of one reply's tokens at the configured prices. Cached input tokens are
    /// part of the input tokens and priced apart.
    pub fn cost(&self, usage: &Usage) -> f64 {
        cost(&self.config, usage)
    }
}

fn cost(config: &AiConfig, usage: &Usage) -> f64 {
    let cached = usage.cached_tokens().min(usage.prompt_tokens);
    let fresh = usage.prompt_tokens - cached;
    (fresh as f64 * config.input_price_per_million
        + cached as f64 * config.cached_input_price_per_million
        + usage.completion_tokens as f64 * config.output_price_per_million)
        / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_input_tokens_are_priced_apart() {
        let mut config = Config::default().ai;
        config.input_price_per_million = 0.15;
        config.cached_input_price_per_million = 0.075;
        config.output_price_per_million = 0.60;
        let usage: Usage = serde_json::from_value(serde_json::json!({
            "prompt_tokens": 1_000_000, "completion_tokens": 500_000,
            "prompt_tokens_details": {"cached_tokens": 400_000}
        }))
        .unwrap();
        let cost = cost(&config, &usage);
        // 600k x 0.15 + 400k x 0.075 + 500k x 0.60, per million.
        assert!((cost - (0.09 + 0.03 + 0.30)).abs() < 1e-12, "{cost}");
    }
}
