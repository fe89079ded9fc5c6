//! What comes back from an OpenAI-compatible chat-completions API: the JSON Schema a reply must
//! match and its check, the reply's wire format (content, refusal, usage), and what an HTTP
//! status and the rate-limit headers mean.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The most characters of one hint: a near-solution, not an essay.
pub const MAX_HINT_CHARS: usize = 2000;

/// The three graded hints of one question.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hints {
    /// Points at what the question is about.
    pub nudge: String,
    /// The method or principle that solves it.
    pub method: String,
    /// The solution short of its last step, without the answer.
    pub near_solution: String,
}

impl Hints {
    /// The hints with their names, weakest first.
    pub fn named(&self) -> [(&'static str, &str); 3] {
        [
            ("nudge", self.nudge.as_str()),
            ("method", self.method.as_str()),
            ("near_solution", self.near_solution.as_str()),
        ]
    }
}

/// The JSON Schema of a reply: exactly the three hints, each a string. `strict` structured
/// output needs every property required and no others allowed.
pub fn hints_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "nudge": {"type": "string", "description": "A first, gentle hint: what to look at."},
            "method": {"type": "string", "description": "The method or principle to use."},
            "near_solution": {"type": "string", "description": "The working up to the last step, without the final answer."}
        },
        "required": ["nudge", "method", "near_solution"],
        "additionalProperties": false
    })
}

/// How the reply's shape is asked for (`ai.response_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseFormat {
    /// Structured output: the server constrains the reply to the schema (OpenAI, vLLM,
    /// llama.cpp's server, Ollama).
    JsonSchema,
    /// Plain JSON mode, for servers without structured output: the prompt gives the shape and
    /// the reply is checked all the same.
    JsonObject,
}

impl ResponseFormat {
    /// The request's `response_format`.
    pub fn request_field(self) -> Value {
        self.request_field_for("hints", hints_schema())
    }

    /// The request's `response_format` for a reply of another `schema`, named `name`.
    pub fn request_field_for(self, name: &str, schema: Value) -> Value {
        match self {
            ResponseFormat::JsonSchema => json!({
                "type": "json_schema",
                "json_schema": {"name": name, "schema": schema, "strict": true}
            }),
            ResponseFormat::JsonObject => json!({"type": "json_object"}),
        }
    }
}

/// A reply whose content is not the three hints.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the reply does not match the hints schema: {reason}")]
pub struct InvalidReply {
    pub reason: String,
}

/// The hints of a reply's content, checked against [`hints_schema`]: a JSON object with exactly
/// `nudge`, `method` and `near_solution`, each a string that is not blank and at most
/// [`MAX_HINT_CHARS`] long. A Markdown code fence around the JSON is tolerated.
pub fn parse_hints(content: &str) -> Result<Hints, InvalidReply> {
    let invalid = |reason: String| InvalidReply { reason };
    let text = unfenced(content);
    let hints: Hints = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
    for (name, hint) in hints.named() {
        if hint.trim().is_empty() {
            return Err(invalid(format!("`{name}` is empty")));
        }
        let chars = hint.chars().count();
        if chars > MAX_HINT_CHARS {
            return Err(invalid(format!(
                "`{name}` is {chars} characters, more than {MAX_HINT_CHARS}"
            )));
        }
    }
    Ok(Hints {
        nudge: hints.nudge.trim().to_owned(),
        method: hints.method.trim().to_owned(),
        near_solution: hints.near_solution.trim().to_owned(),
    })
}

/// A reply's content without the Markdown code fence some models put around JSON.
pub fn unfenced(content: &str) -> &str {
    let text = content.trim();
    match text.strip_prefix("```") {
        Some(fenced) => {
            let fenced = fenced.strip_prefix("json").unwrap_or(fenced);
            fenced.strip_suffix("```").unwrap_or(fenced).trim()
        }
        None => text,
    }
}

/// A chat completion as the API returns it (the fields we read; others are ignored).
#[derive(Debug, Clone, Deserialize)]
pub struct ChatCompletion {
    #[serde(default)]
    pub choices: Vec<Choice>,
    #[serde(default)]
    pub usage: Option<Usage>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Choice {
    pub message: ReplyMessage,
    #[serde(default)]
    pub finish_reason: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ReplyMessage {
    #[serde(default)]
    pub content: Option<String>,
    /// Set instead of `content` when the model refuses (OpenAI's structured outputs).
    #[serde(default)]
    pub refusal: Option<String>,
}

/// Tokens billed for one request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    #[serde(default)]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct PromptTokensDetails {
    /// Input tokens served from the provider's prompt cache (billed cheaper).
    #[serde(default)]
    pub cached_tokens: Option<u64>,
}

impl Usage {
    pub fn cached_tokens(&self) -> u64 {
        self.prompt_tokens_details
            .and_then(|d| d.cached_tokens)
            .unwrap_or(0)
    }
}

/// What a completion holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answered {
    /// The model's content: to be checked against the schema.
    Content(String),
    /// The model refused, in its words.
    Refused(String),
    /// The provider's content filter stopped the reply (`finish_reason: "content_filter"`).
    Filtered,
    /// No choice, or a choice with neither content nor refusal.
    Empty,
}

impl ChatCompletion {
    pub fn answered(&self) -> Answered {
        let Some(choice) = self.choices.first() else {
            return Answered::Empty;
        };
        if let Some(refusal) = choice.message.refusal.as_deref().filter(|r| !r.is_empty()) {
            return Answered::Refused(refusal.to_owned());
        }
        if choice.finish_reason.as_deref() == Some("content_filter") {
            return Answered::Filtered;
        }
        match &choice.message.content {
            Some(content) if !content.trim().is_empty() => Answered::Content(content.clone()),
            _ => Answered::Empty,
        }
    }
}

/// What an HTTP status from the provider means for the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusClass {
    Success,
    /// 408, 409, 429 and 5xx: worth another try, after the wait the provider asks for.
    Transient,
    /// Every other 4xx (a bad request, a bad key, an unknown model): no retry mends it.
    Permanent,
}

pub fn classify_status(status: u16) -> StatusClass {
    match status {
        200..=299 => StatusClass::Success,
        408 | 409 | 429 | 500..=599 => StatusClass::Transient,
        _ => StatusClass::Permanent,
    }
}

/// The headers that say when to try again, as received.
#[derive(Debug, Clone, Copy, Default)]
pub struct RetryHeaders<'a> {
    /// `retry-after-ms` (Azure OpenAI): milliseconds.
    pub retry_after_ms: Option<&'a str>,
    /// `retry-after`: seconds, or an HTTP date.
    pub retry_after: Option<&'a str>,
    /// `x-ratelimit-reset-requests`, `x-ratelimit-reset-tokens`: `12ms`, `6m0s`.
    pub reset_requests: Option<&'a str>,
    pub reset_tokens: Option<&'a str>,
}

/// How long the provider asks us to wait: `retry-after-ms`, else `retry-after`, else the later
/// of the two `x-ratelimit-reset-*`. `now` reads an HTTP date.
pub fn retry_wait(headers: &RetryHeaders<'_>, now: DateTime<Utc>) -> Option<Duration> {
    if let Some(ms) = headers
        .retry_after_ms
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|ms| ms.is_finite() && *ms >= 0.0)
    {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    if let Some(value) = headers.retry_after.map(str::trim) {
        if let Ok(seconds) = value.parse::<f64>()
            && seconds.is_finite()
            && seconds >= 0.0
        {
            return Some(Duration::from_secs_f64(seconds));
        }
        if let Ok(date) = DateTime::parse_from_rfc2822(value) {
            return Some(
                (date.with_timezone(&Utc) - now)
                    .to_std()
                    .unwrap_or(Duration::ZERO),
            );
        }
    }
    [headers.reset_requests, headers.reset_tokens]
        .into_iter()
        .flatten()
        .filter_map(parse_reset)
        .max()
}

/// A duration as OpenAI's `x-ratelimit-reset-*` write it (Go's style): `12ms`, `1s`, `0.5s`,
/// `6m0s`, `1h2m3.5s`.
pub fn parse_reset(text: &str) -> Option<Duration> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total = 0.0_f64;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..number_end].parse().ok()?;
        rest = &rest[number_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_end..];
        total += number * seconds;
    }
    Duration::try_from_secs_f64(total).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_must_be_exactly_the_three_hints() {
        let ok = r#"{"nudge": " a ", "method": "b", "near_solution": "c"}"#;
        let hints = parse_hints(ok).unwrap();
        assert_eq!(hints.nudge, "a");
        assert_eq!(parse_hints(&format!("```json\n{ok}\n```")).unwrap(), hints);
        for (bad, expected) in [
            (
                r#"{"nudge": "a", "method": "b"}"#,
                "missing field `near_solution`",
            ),
            (
                r#"{"nudge": "a", "method": "b", "near_solution": "c", "answer": "B"}"#,
                "unknown field `answer`",
            ),
            (
                r#"{"nudge": "a", "method": 2, "near_solution": "c"}"#,
                "invalid type",
            ),
            (
                r#"{"nudge": "", "method": "b", "near_solution": "c"}"#,
                "`nudge` is empty",
            ),
            ("Here are your hints!", "expected value"),
        ] {
            let err = parse_hints(bad).unwrap_err().to_string();
            assert!(err.contains(expected), "{bad}: {err}");
        }
        let long = format!(
            r#"{{"nudge": "{}", "method": "b", "near_solution": "c"}}"#,
            "x".repeat(MAX_HINT_CHARS + 1)
        );
        assert!(
            parse_hints(&long)
                .unwrap_err()
                .to_string()
                .contains("more than 2000")
        );
    }

    #[test]
    fn the_schema_is_strict() {
        let schema = hints_schema();
        assert_eq!(schema["additionalProperties"], false);
        assert_eq!(schema["required"].as_array().unwrap().len(), 3);
        let field = ResponseFormat::JsonSchema.request_field();
        assert_eq!(field["type"], "json_schema");
        assert_eq!(field["json_schema"]["strict"], true);
        assert_eq!(field["json_schema"]["name"], "hints");
        assert_eq!(
            ResponseFormat::JsonObject.request_field(),
            json!({"type": "json_object"})
        );
    }

    #[test]
    fn refusals_and_filters_are_told_apart_from_content() {
        let completion = |choice: Value| -> ChatCompletion {
            serde_json::from_value(json!({"choices": [choice], "usage": {
                "prompt_tokens": 120, "completion_tokens": 30,
                "prompt_tokens_details": {"cached_tokens": 64}}}))
            .unwrap()
        };
        let refused = completion(json!({"message": {"role": "assistant", "content": null,
            "refusal": "I can't help with that."}, "finish_reason": "stop"}));
        assert_eq!(
            refused.answered(),
            Answered::Refused("I can't help with that.".into())
        );
        assert_eq!(refused.usage.unwrap().cached_tokens(), 64);
        let filtered =
            completion(json!({"message": {"content": ""}, "finish_reason": "content_filter"}));
        assert_eq!(filtered.answered(), Answered::Filtered);
        let content = completion(json!({"message": {"content": "{}"}, "finish_reason": "stop"}));
        assert_eq!(content.answered(), Answered::Content("{}".into()));
        let none: ChatCompletion = serde_json::from_value(json!({"choices": []})).unwrap();
        assert_eq!(none.answered(), Answered::Empty);
    }

    #[test]
    fn statuses_are_transient_or_permanent() {
        assert_eq!(classify_status(200), StatusClass::Success);
        for status in [408, 409, 429, 500, 502, 503] {
            assert_eq!(classify_status(status), StatusClass::Transient, "{status}");
        }
        for status in [400, 401, 403, 404, 422] {
            assert_eq!(classify_status(status), StatusClass::Permanent, "{status}");
        }
    }

    #[test]
    fn the_wait_comes_from_retry_after_or_the_reset_headers() {
        let now = DateTime::parse_from_rfc3339("2026-11-30T18:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let wait = |h: RetryHeaders<'_>| retry_wait(&h, now);
        assert_eq!(
            wait(RetryHeaders {
                retry_after: Some("2"),
                ..Default::default()
            }),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            wait(RetryHeaders {
                retry_after_ms: Some("1500"),
                retry_after: Some("2"),
                ..Default::default()
            }),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            wait(RetryHeaders {
                retry_after: Some("Mon, 30 Nov 2026 18:00:30 GMT"),
                ..Default::default()
            }),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            wait(RetryHeaders {
                reset_requests: Some("12ms"),
                reset_tokens: Some("6m0s"),
                ..Default::default()
            }),
            Some(Duration::from_secs(360))
        );
        assert_eq!(wait(RetryHeaders::default()), None);
        assert_eq!(
            parse_reset("1h2m3.5s"),
            Some(Duration::from_secs_f64(3723.5))
        );
        assert_eq!(parse_reset("0.5s"), Some(Duration::from_millis(500)));
        assert_eq!(parse_reset("soon"), None);
        assert_eq!(parse_reset("5x"), None);
    }
}
