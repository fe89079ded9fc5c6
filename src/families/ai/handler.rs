//! Handler of `ai.hints`: for each question, the stored hints if its cache key has some, else a
//! request to the provider, the reply checked against the schema and for leaks of the key,
//! and the hints stored with what they cost. A question that fails does not fail the others;
//! a provider that cannot be reached ends the attempt (transient), and the retry takes the
//! hints stored so far from the cache.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use quizworker_jobs::JobPayload;
use quizworker_jobs::ai::leak::find_leak;
use quizworker_jobs::ai::reply::{Answered, parse_hints};
use quizworker_jobs::ai::{AiHints, HintQuestion, Hints, PROMPT_VERSION, cache_key, prompt};
use quizworker_jobs::limits::shorten;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, SemaphorePermit};

use super::fan_out::{Wording, fan_out};
use super::limits;
use super::provider::{ProviderError, Reply};
use super::store::{self, EarlierFailure, Failure, NewHints, Reason, Spent, Stored, UsageRow};
use crate::families::{JobContext, JobError, Services};
use crate::ops::metrics;

/// Waits the provider asks for (a 429 or 5xx with `Retry-After`) that one request waits out
/// within its attempt; after that the attempt ends and the queue's backoff takes over.
const MAX_WAITS_PER_REQUEST: u32 = 3;
/// How much of a failed question's reply the job's result repeats (`ai_hint_failures` keeps
/// it whole).
const RESULT_REPLY_BYTES: usize = 2000;
/// Questions the job's error names when every question failed.
const LISTED_FAILURES: usize = 5;

pub async fn hints(job: AiHints, ctx: &JobContext, services: &Services) -> Result<Value, JobError> {
    let ai = &services.ai;
    job.check(ai.config.max_questions)
        .map_err(JobError::Permanent)?;
    let model = ai.provider.model();
    let keys: Vec<String> = job.questions.iter().map(|q| cache_key(q, model)).collect();
    // Both before the first request, neither needing the other: asked at once.
    let (earlier, cached) = tokio::try_join!(
        store::failures_of(&services.pg, &ctx.id),
        store::cached(&services.pg, &keys),
    )
    .map_err(store_error)?;
    let run = Run {
        ctx,
        services,
        earlier: &earlier,
        cached: &cached,
        stop: AtomicBool::new(false),
        slots: Semaphore::new(ai.config.concurrency),
    };
    let total = job.questions.len();
    let (run, questions, keys) = (&run, &job.questions, &keys);
    let wording = Wording {
        settled: "questions done",
        retry: "the retry takes their hints from the cache",
    };
    let outcomes = fan_out(
        ctx,
        total,
        ai.config.concurrency,
        &run.stop,
        wording,
        move |i| run.one(&questions[i], &keys[i]),
    )
    .await?;

    let results: Vec<(&HintQuestion, Outcome)> = questions.iter().zip(outcomes).collect();
    let count = |status: &str| results.iter().filter(|(_, o)| o.status() == status).count();
    let (generated, cached, failed) = (count("generated"), count("cached"), count("failed"));
    if failed == total {
        let listed: Vec<String> = results
            .iter()
            .take(LISTED_FAILURES)
            .map(|(q, o)| {
                format!(
                    "`{}`: {}",
                    shorten(&q.id, 40),
                    o.error().unwrap_or_default()
                )
            })
            .collect();
        let more = if total > LISTED_FAILURES {
            format!(" and {} more", total - LISTED_FAILURES)
        } else {
            String::new()
        };
        return Err(JobError::Permanent(format!(
            "no hints for any of the {total} questions: {}{more}",
            listed.join("; ")
        )));
    }
    ctx.progress(100, format!("{total} of {total} questions done"));
    Ok(json!({
        "model": ai.provider.model(),
        "prompt_version": PROMPT_VERSION,
        "questions": total,
        "generated": generated,
        "cached": cached,
        "failed": failed,
        "results": results.iter().map(|(q, o)| o.to_json(&q.id)).collect::<Vec<_>>(),
    }))
}

/// What became of one question.
enum Outcome {
    Generated {
        key: String,
        hints: Hints,
    },
    Cached {
        key: String,
        hints: Hints,
        generated_by: String,
    },
    Failed {
        key: String,
        reason: String,
        detail: String,
        reply: Option<String>,
    },
}

impl Outcome {
    fn status(&self) -> &'static str {
        match self {
            Outcome::Generated { .. } => "generated",
            Outcome::Cached { .. } => "cached",
            Outcome::Failed { .. } => "failed",
        }
    }

    fn error(&self) -> Option<String> {
        match self {
            Outcome::Failed { reason, detail, .. } => Some(format!("{reason}: {detail}")),
            _ => None,
        }
    }

    fn to_json(&self, id: &str) -> Value {
        match self {
            Outcome::Generated { key, hints } => json!({
                "id": id, "status": "generated", "cache_key": key, "hints": hints,
            }),
            Outcome::Cached {
                key,
                hints,
                generated_by,
            } => json!({
                "id": id, "status": "cached", "cache_key": key, "hints": hints,
                "generated_by": generated_by,
            }),
            Outcome::Failed {
                key,
                reason,
                detail,
                reply,
            } => json!({
                "id": id, "status": "failed", "cache_key": key, "reason": reason,
                "error": detail, "reply": reply,
            }),
        }
    }
}

/// How a request to the provider ended short of a reply.
pub(super) enum Requested {
    /// The API refused this request (a 4xx): that question fails.
    Refused { reason: String },
    /// The attempt must end: the provider is down or asks for a long wait (transient), or the
    /// key, model or URL is wrong (permanent).
    Halt(JobError),
    /// Not sent: the attempt is ending; the item is left for the retry.
    Stopped,
}

/// One attempt of a job, shared by the questions in flight.
struct Run<'a> {
    ctx: &'a JobContext,
    services: &'a Services,
    /// Questions that failed in an earlier attempt: not asked again.
    earlier: &'a HashMap<String, EarlierFailure>,
    /// Hints stored for the job's questions when the attempt began, by cache key: looked up
    /// once for the job, not once per question.
    cached: &'a HashMap<String, Stored>,
    /// Set when the attempt is ending: questions not begun are left for the retry.
    stop: AtomicBool,
    /// The job's requests in flight (`ai.concurrency`): [`request`].
    slots: Semaphore,
}

impl Run<'_> {
    fn stopped(&self) -> bool {
        stopped(self.services, &self.stop)
    }

    /// One question: `None` if it was not begun because the attempt is ending.
    async fn one(&self, question: &HintQuestion, key: &str) -> Result<Option<Outcome>, JobError> {
        let ai = &self.services.ai;
        let model = ai.provider.model();
        let key = key.to_owned();
        if let Some(failure) = self.earlier.get(&question.id) {
            metrics::ai_question("failed");
            return Ok(Some(Outcome::Failed {
                key,
                reason: failure.reason.clone(),
                detail: format!("{} (in an earlier attempt)", failure.detail),
                reply: None,
            }));
        }
        if let Some(stored) = self.cached.get(&key) {
            metrics::ai_question("cached");
            return Ok(Some(Outcome::Cached {
                hints: stored.hints.clone(),
                generated_by: stored.job_id.clone(),
                key,
            }));
        }
        if self.stopped() {
            return Ok(None);
        }
        let prompt = prompt::render(question)
            .map_err(|e| JobError::Permanent(format!("the hints prompt did not render: {e}")))?;
        let body = prompt.request_body(model, ai.provider.format());
        let started = Instant::now();
        let mut spent = Spent::default();
        let (mut invalid_replies, mut leaks) = (0, 0);
        loop {
            // A slot held until this reply is billed (`request`): to the end of this turn.
            let (reply, _held) = match self.request(&body).await {
                Ok(sent) => sent,
                Err(Requested::Refused { reason }) => {
                    let fail = (Reason::ClientError, reason.as_str(), None);
                    return self.fail(question, &key, fail).await;
                }
                Err(Requested::Halt(error)) => return Err(error),
                Err(Requested::Stopped) => return Ok(None),
            };
            let content = match reply.completion.answered() {
                Answered::Refused(words) => {
                    self.bill(&reply, "refused", &mut spent).await?;
                    let detail = format!("the model refused: {words}");
                    let fail = (Reason::Refused, detail.as_str(), Some(reply.body.as_str()));
                    return self.fail(question, &key, fail).await;
                }
                Answered::Filtered => {
                    self.bill(&reply, "filtered", &mut spent).await?;
                    let detail = "the provider's content filter stopped the reply";
                    let fail = (Reason::ContentFilter, detail, Some(reply.body.as_str()));
                    return self.fail(question, &key, fail).await;
                }
                Answered::Empty => Err(("the reply has no content".to_owned(), reply.body.clone())),
                Answered::Content(content) => match parse_hints(&content) {
                    Ok(hints) => Ok(hints),
                    Err(invalid) => Err((invalid.to_string(), content)),
                },
            };
            let hints = match content {
                Ok(hints) => hints,
                Err((detail, kept)) => {
                    self.bill(&reply, "invalid", &mut spent).await?;
                    if invalid_replies == 0 {
                        invalid_replies += 1;
                        tracing::info!(question = %question.id, %detail, "an invalid reply; asking again");
                        continue;
                    }
                    let fail = (Reason::InvalidReply, detail.as_str(), Some(kept.as_str()));
                    return self.fail(question, &key, fail).await;
                }
            };
            if let Some(leak) = find_leak(question, &hints) {
                self.bill(&reply, "leak", &mut spent).await?;
                let kept = serde_json::to_string(&hints).unwrap_or_default();
                if leaks == 0 {
                    leaks += 1;
                    tracing::info!(question = %question.id, %leak, "hints that leak the answer; asking again");
                    continue;
                }
                let detail = leak.to_string();
                let fail = (Reason::Leak, detail.as_str(), Some(kept.as_str()));
                return self.fail(question, &key, fail).await;
            }
            let usage = charge(
                self.services,
                &self.billed(),
                &reply,
                "answered",
                &mut spent,
            );
            store::store(
                &self.services.pg,
                usage,
                NewHints {
                    cache_key: &key,
                    question: serde_json::to_value(question).unwrap_or(Value::Null),
                    hints: &hints,
                    spent,
                    duration_ms: millis(started.elapsed()),
                },
            )
            .await
            .map_err(store_error)?;
            metrics::ai_question("generated");
            return Ok(Some(Outcome::Generated { key, hints }));
        }
    }

    /// One request, each try cleared by the spend cap, the ai queue's rate and its tokens
    /// ([`request`]).
    async fn request(
        &self,
        body: &Value,
    ) -> Result<(Reply, Option<SemaphorePermit<'_>>), Requested> {
        request(self.services, &self.stop, &self.slots, body).await
    }

    /// Records a billed reply ([`bill`]) of this job's kind and prompt.
    async fn bill(
        &self,
        reply: &Reply,
        outcome: &'static str,
        spent: &mut Spent,
    ) -> Result<(), JobError> {
        bill(self.services, &self.billed(), reply, outcome, spent).await
    }

    fn billed(&self) -> Billed<'_> {
        Billed {
            job_id: &self.ctx.id,
            kind: AiHints::KIND,
            prompt_version: PROMPT_VERSION,
        }
    }

    /// Records that a question has no hints: why, and the reply that showed it.
    async fn fail(
        &self,
        question: &HintQuestion,
        key: &str,
        (reason, detail, reply): (Reason, &str, Option<&str>),
    ) -> Result<Option<Outcome>, JobError> {
        store::record_failure(
            &self.services.pg,
            Failure {
                job_id: &self.ctx.id,
                question_id: &question.id,
                attempt: self.ctx.attempt,
                cache_key: key,
                model: self.services.ai.provider.model(),
                prompt_version: PROMPT_VERSION,
                reason,
                detail,
                reply,
            },
        )
        .await
        .map_err(store_error)?;
        metrics::ai_question("failed");
        tracing::info!(question = %question.id, reason = reason.name(), %detail, "no hints for a question");
        Ok(Some(Outcome::Failed {
            key: key.to_owned(),
            reason: reason.name().to_owned(),
            detail: detail.to_owned(),
            reply: reply.map(|r| shorten(r, RESULT_REPLY_BYTES).into_owned()),
        }))
    }
}

/// Whether the attempt is ending (`stop`) or the process is shutting down.
pub(super) fn stopped(services: &Services, stop: &AtomicBool) -> bool {
    stop.load(Ordering::Relaxed) || services.stopping.is_cancelled()
}

/// One request, each try holding one of the job's `slots` (`ai.concurrency`) and a unit of the
/// ai queue's rate while it is out; a wait the provider asks for up to `ai.max_retry_wait` is
/// waited out here, unless the attempt is ending (`stop`).
///
/// The slot is free for the job's next request as soon as the reply is in, while the reply is
/// checked and stored; with a daily spend cap, it comes back with the reply instead, for the
/// caller to hold until the reply is billed, so that the cap counts a reply before the slot's
/// next request is cleared.
pub(super) async fn request<'s>(
    services: &Services,
    stop: &AtomicBool,
    slots: &'s Semaphore,
    body: &Value,
) -> Result<(Reply, Option<SemaphorePermit<'s>>), Requested> {
    let ai = &services.ai;
    let mut waits = 0;
    loop {
        // Never closed: the job's attempt owns it.
        let Ok(slot) = slots.acquire().await else {
            return Err(Requested::Stopped);
        };
        if stopped(services, stop) {
            return Err(Requested::Stopped);
        }
        let admitted = limits::admit(services, body)
            .await
            .map_err(Requested::Halt)?;
        let error = match ai.provider.complete(body).await {
            Ok(reply) => {
                limits::settle(services, admitted, reply.completion.usage.as_ref()).await;
                let held = ai.config.daily_spend_cap_usd.is_some().then_some(slot);
                return Ok((reply, held));
            }
            Err(error) => {
                limits::release(services, admitted).await;
                error
            }
        };
        match error {
            ProviderError::Transient {
                reason,
                wait,
                outcome,
            } => {
                metrics::ai_request(outcome);
                match wait {
                    Some(wait)
                        if wait <= ai.config.max_retry_wait
                            && waits < MAX_WAITS_PER_REQUEST
                            && !stopped(services, stop) =>
                    {
                        tracing::info!(%reason, wait = %humantime::format_duration(wait),
                            "the AI API asks to wait; waiting within the attempt");
                        tokio::time::sleep(wait).await;
                        waits += 1;
                    }
                    Some(wait) => {
                        return Err(Requested::Halt(JobError::Transient(format!(
                            "{reason}; it asks to wait {}",
                            humantime::format_duration(wait)
                        ))));
                    }
                    None => return Err(Requested::Halt(JobError::Transient(reason))),
                }
            }
            ProviderError::Permanent { status, reason } => {
                metrics::ai_request("client_error");
                if matches!(status, 401 | 403 | 404) {
                    return Err(Requested::Halt(JobError::Permanent(format!(
                        "{reason} (check AI_API_KEY, ai.model and ai.base_url: no question can succeed)"
                    ))));
                }
                return Err(Requested::Refused { reason });
            }
        }
    }
}

/// Whose reply is billed: the job, its kind, the version of its prompt.
pub(super) struct Billed<'a> {
    pub job_id: &'a str,
    pub kind: &'static str,
    pub prompt_version: &'static str,
}

/// Records a billed reply in the usage ledger and the metrics, and adds it to `spent`.
pub(super) async fn bill(
    services: &Services,
    billed: &Billed<'_>,
    reply: &Reply,
    outcome: &'static str,
    spent: &mut Spent,
) -> Result<(), JobError> {
    let row = charge(services, billed, reply, outcome, spent);
    store::record_usage(&services.pg, row)
        .await
        .map_err(store_error)
}

/// [`bill`] but for the ledger: the metrics and `spent` take the reply, and its row for the
/// usage ledger is returned, to be stored with what the reply brought.
pub(super) fn charge<'a>(
    services: &'a Services,
    billed: &Billed<'a>,
    reply: &Reply,
    outcome: &'static str,
    spent: &mut Spent,
) -> UsageRow<'a> {
    let ai = &services.ai;
    let usage = reply.completion.usage.unwrap_or_default();
    let cost = ai.cost(&usage);
    let tokens = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    spent.requests += 1;
    spent.input_tokens += tokens(usage.prompt_tokens);
    spent.cached_tokens += tokens(usage.cached_tokens());
    spent.output_tokens += tokens(usage.completion_tokens);
    spent.cost_usd += cost;
    // A reply that leaks was a valid reply.
    metrics::ai_request(if outcome == "leak" {
        "answered"
    } else {
        outcome
    });
    metrics::ai_tokens(
        usage.prompt_tokens,
        usage.cached_tokens(),
        usage.completion_tokens,
    );
    UsageRow {
        job_id: billed.job_id,
        kind: billed.kind,
        model: ai.provider.model(),
        prompt_version: billed.prompt_version,
        outcome,
        input_tokens: tokens(usage.prompt_tokens),
        cached_tokens: tokens(usage.cached_tokens()),
        output_tokens: tokens(usage.completion_tokens),
        cost_usd: cost,
        duration_ms: millis(reply.duration),
    }
}

pub(super) fn millis(duration: std::time::Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

pub(super) fn store_error(e: sqlx::Error) -> JobError {
    JobError::Transient(format!("the AI tables could not be read or written: {e}"))
}
