//! What the AI jobs may spend: the tokens a request is reckoned to take before it is sent (the
//! tokens-per-minute limit reserves them), the difference the reply's `usage` settles, and the
//! UTC day a daily spend cap counts over.

use chrono::{DateTime, Days, NaiveDate, NaiveTime, Utc};
use serde_json::Value;

use crate::ai::reply::Usage;

/// Bytes of English text per token, the rule of thumb of OpenAI's tokenizer guide. Exact
/// counting would need the model's own tokenizer, which a server behind an OpenAI-compatible
/// API does not tell; the reservation only has to be close, since the reply settles it.
pub const BYTES_PER_TOKEN: u64 = 4;

/// The tokens a chat-completions request is reckoned to take: its messages and response
/// format (a JSON schema is sent to the model too) at [`BYTES_PER_TOKEN`], rounded up, plus
/// `output_estimate` for the reply, or the request's own `max_tokens` if it sets a smaller one.
pub fn estimate_tokens(body: &Value, output_estimate: u64) -> u64 {
    let sent: u64 = ["messages", "response_format", "tools"]
        .iter()
        .filter_map(|field| body.get(*field))
        .map(|value| value.to_string().len() as u64)
        .sum();
    let output = body
        .get("max_tokens")
        .or_else(|| body.get("max_completion_tokens"))
        .and_then(Value::as_u64)
        .map_or(output_estimate, |max| max.min(output_estimate));
    sent.div_ceil(BYTES_PER_TOKEN) + output
}

/// Tokens a reply actually took, by the provider's count: input and output, cached input
/// included (a provider's tokens-per-minute limit counts them).
pub fn used_tokens(usage: &Usage) -> u64 {
    usage.prompt_tokens.saturating_add(usage.completion_tokens)
}

/// What a reply's tokens change in the reservation made for it: positive when the request took
/// more than reckoned (a debt the next requests wait out), negative when it took less.
pub fn settlement(reserved: u64, usage: &Usage) -> i64 {
    let used = i64::try_from(used_tokens(usage)).unwrap_or(i64::MAX);
    used.saturating_sub(i64::try_from(reserved).unwrap_or(i64::MAX))
}

/// The UTC day `now` falls in: a daily spend cap counts the cost of that day's replies.
pub fn spend_day(now: DateTime<Utc>) -> NaiveDate {
    now.date_naive()
}

/// When the UTC day after `now`'s begins: a job held back by the daily spend cap runs again
/// then.
pub fn next_spend_day(now: DateTime<Utc>) -> DateTime<Utc> {
    let day = spend_day(now);
    // The day after the last one chrono knows does not come; wait as long as it can say.
    let next = day.checked_add_days(Days::new(1)).unwrap_or(NaiveDate::MAX);
    next.and_time(NaiveTime::MIN).and_utc()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn usage(prompt: u64, completion: u64) -> Usage {
        serde_json::from_value(json!({"prompt_tokens": prompt, "completion_tokens": completion}))
            .unwrap()
    }

    #[test]
    fn an_estimate_counts_the_messages_and_schema_and_the_expected_output() {
        let messages = json!([{"role": "user", "content": "x".repeat(400)}]);
        let body = json!({"model": "m", "messages": messages});
        let sent = messages.to_string().len() as u64;
        assert_eq!(estimate_tokens(&body, 300), sent.div_ceil(4) + 300);
        // The model's name is not sent to the model; the schema is.
        let with_schema = json!({"model": "a-much-longer-model-name", "messages": messages,
                                 "response_format": {"type": "json_object"}});
        assert_eq!(
            estimate_tokens(&with_schema, 300),
            (sent + r#"{"type":"json_object"}"#.len() as u64).div_ceil(4) + 300
        );
        // A request capping its reply below the estimate reserves only the cap.
        let capped = json!({"messages": messages, "max_tokens": 50});
        assert_eq!(estimate_tokens(&capped, 300), sent.div_ceil(4) + 50);
    }

    #[test]
    fn a_settlement_is_the_difference_either_way() {
        assert_eq!(settlement(500, &usage(400, 200)), 100);
        assert_eq!(settlement(500, &usage(200, 40)), -260);
        assert_eq!(settlement(240, &usage(200, 40)), 0);
    }

    #[test]
    fn a_capped_job_waits_until_the_next_utc_midnight() {
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        assert_eq!(
            next_spend_day(at("2026-11-30T19:05:00Z")),
            at("2026-12-01T00:00:00Z")
        );
        // A second before midnight, and midnight itself, which is already the new day.
        assert_eq!(
            next_spend_day(at("2026-12-31T23:59:59.999Z")),
            at("2027-01-01T00:00:00Z")
        );
        assert_eq!(
            next_spend_day(at("2026-12-01T00:00:00Z")),
            at("2026-12-02T00:00:00Z")
        );
        // The day is UTC's, whatever the offset the time was written with.
        assert_eq!(
            spend_day(at("2026-11-30T23:30:00-05:00")),
            "2026-12-01".parse::<NaiveDate>().unwrap()
        );
    }
}
