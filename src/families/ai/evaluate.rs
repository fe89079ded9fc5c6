//! Handler of `ai.evaluate`: the subjective answers of a stored attempt that await evaluation,
//! each graded against its question's rubric by one request (the reply checked into exact
//! marks per criterion, asked again once if it fails the check), the grades stored per attempt
//! and question, then the attempt rescored through the scoring store with the marks and who
//! awarded them. An answer that cannot be graded does not lose the others; a retry reuses the
//! grades stored and asks again only for the rest.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use quizworker_jobs::JobPayload;
use quizworker_jobs::ai::AiEvaluate;
use quizworker_jobs::ai::evaluate::{ToGrade, answers_to_grade, award};
use quizworker_jobs::ai::grading::{
    self, EVALUATE_PROMPT_VERSION, Grade, grade_key, grading_schema, parse_grade,
};
use quizworker_jobs::ai::reply::Answered;
use quizworker_jobs::limits::{ECHO_BYTES, shorten};
use quizworker_jobs::scoring::{Attempt, AttemptResult, AwardedBy, PreparedTest};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use super::evaluations::{self, Failure, NewGrade, Reason, StoredGrade};
use super::fan_out::{Wording, fan_out};
use super::handler::{Billed, Requested, bill, millis, request, stopped, store_error};
use super::provider::Reply;
use super::store::{EarlierFailure, Spent};
use crate::families::scoring::store::{self as scoring_store, ScoreRow};
use crate::families::{JobContext, JobError, Services};

/// How much of a failed answer's reply the job's result repeats (`ai_evaluation_failures`
/// keeps it whole).
const RESULT_REPLY_BYTES: usize = 2000;
/// Answers the job's error names when none could be graded.
const LISTED_FAILURES: usize = 5;
/// Key revisions followed while the marks are written, before the attempt gives up (retried).
const REVISIONS_FOLLOWED: usize = 3;

pub async fn evaluate(
    job: AiEvaluate,
    ctx: &JobContext,
    services: &Services,
) -> Result<Value, JobError> {
    job.check().map_err(JobError::Permanent)?;
    let (pg, ai) = (&services.pg, &services.ai);
    let attempt_id = job.attempt_id.as_str();
    let stored = scoring_store::load_attempt(pg, attempt_id)
        .await?
        .ok_or_else(|| {
            JobError::Permanent(format!(
                "unknown attempt `{}`: ai.evaluate grades an attempt stored by a score.attempt job",
                shorten(attempt_id, ECHO_BYTES)
            ))
        })?;
    let test = services.tests.newest_known(pg, &stored.test_id).await?;
    let attempt = read_attempt(attempt_id, &stored.attempt)?;
    let to_grade =
        answers_to_grade(&test, &attempt).map_err(|e| JobError::Permanent(e.to_string()))?;
    if to_grade.len() > ai.config.max_answers {
        return Err(JobError::Permanent(format!(
            "{} answers of attempt `{}` await evaluation, more than ai.max_answers = {}",
            to_grade.len(),
            shorten(attempt_id, ECHO_BYTES),
            ai.config.max_answers
        )));
    }
    let total = to_grade.len();
    let model = ai.provider.model();
    if total == 0 {
        let result = test
            .score(&attempt)
            .map_err(|e| JobError::Permanent(e.to_string()))?;
        return Ok(summary(&result, model, &[], &HashSet::new()));
    }

    let grades = evaluations::grades_of(pg, attempt_id)
        .await
        .map_err(store_error)?;
    let failures = evaluations::failures_of(pg, &ctx.id)
        .await
        .map_err(store_error)?;
    let run = Run {
        ctx,
        services,
        attempt_id,
        grades: &grades,
        failures: &failures,
        stop: AtomicBool::new(false),
        slots: Semaphore::new(ai.config.concurrency),
    };
    let (run, to_grade) = (&run, &to_grade);
    let wording = Wording {
        settled: "answers graded",
        retry: "the retry reuses their grades",
    };
    let outcomes = fan_out(
        ctx,
        total,
        ai.config.concurrency,
        &run.stop,
        wording,
        move |i| run.one(&to_grade[i]),
    )
    .await?;
    let results: Vec<(&str, Outcome)> = to_grade
        .iter()
        .map(|g| g.question_id)
        .zip(outcomes)
        .collect();
    if results.iter().all(|(_, o)| o.grade().is_none()) {
        let listed: Vec<String> = results
            .iter()
            .take(LISTED_FAILURES)
            .map(|(id, o)| format!("`{}`: {}", shorten(id, 40), o.error().unwrap_or_default()))
            .collect();
        let more = match total {
            n if n > LISTED_FAILURES => format!(" and {} more", n - LISTED_FAILURES),
            _ => String::new(),
        };
        return Err(JobError::Permanent(format!(
            "none of the {total} answers could be graded: {}{more}",
            listed.join("; ")
        )));
    }

    let graded: HashMap<&str, (&str, &Grade)> = results
        .iter()
        .filter_map(|(id, o)| o.grade().map(|(key, grade)| (*id, (key, grade))))
        .collect();
    let (result, applied) =
        rescore(services, &stored.test_id, attempt_id, test.clone(), &graded).await?;
    ctx.progress(100, format!("{total} of {total} answers graded"));
    Ok(summary(&result, model, &results, &applied))
}

fn read_attempt(attempt_id: &str, text: &str) -> Result<Attempt, JobError> {
    serde_json::from_str(text).map_err(|e| {
        JobError::Permanent(format!(
            "the stored attempt `{}` does not read back: {e}",
            shorten(attempt_id, ECHO_BYTES)
        ))
    })
}

/// Puts the grades into the stored attempt and rescores it, in one transaction that holds the
/// attempt (so a resubmission made meanwhile is neither lost nor overwritten) against its
/// test's newest key version. A grade goes in only where the answer still awaits evaluation
/// and was graded from the same answer and rubric (same key); a mark a person gave meanwhile
/// stands. Returns the result and the questions whose marks went in.
async fn rescore(
    services: &Services,
    test_id: &str,
    attempt_id: &str,
    mut test: Arc<PreparedTest>,
    graded: &HashMap<&str, (&str, &Grade)>,
) -> Result<(AttemptResult, HashSet<String>), JobError> {
    let pg = &services.pg;
    let model = services.ai.provider.model();
    for _ in 0..REVISIONS_FOLLOWED {
        let Some(held) = scoring_store::attempt_for_update(pg, test_id, attempt_id).await? else {
            return Err(JobError::Permanent(format!(
                "attempt `{}` of test `{}` is no longer stored; its grades are kept in ai_evaluations",
                shorten(attempt_id, ECHO_BYTES),
                shorten(test_id, ECHO_BYTES)
            )));
        };
        if held.newest != test.key_version() {
            // Revised since the job began: score against the newest version, loaded without
            // holding the attempt.
            let newest = held.newest;
            drop(held);
            services.tests.learned_newest(test_id, newest);
            test = services.tests.stored(pg, test_id, Some(newest)).await?;
            continue;
        }
        let mut attempt = read_attempt(attempt_id, &held.attempt)?;
        let keys: Vec<(String, String)> = answers_to_grade(&test, &attempt)
            .map_err(|e| JobError::Permanent(e.to_string()))?
            .iter()
            .map(|g| (g.question_id.to_owned(), grade_key(&g.graded, model)))
            .collect();
        let by = AwardedBy {
            model: model.to_owned(),
            prompt_version: EVALUATE_PROMPT_VERSION.to_owned(),
        };
        let mut applied = HashSet::new();
        for (question_id, key) in keys {
            if let Some((graded_key, grade)) = graded.get(question_id.as_str())
                && *graded_key == key
                && award(&mut attempt, &question_id, grade.awarded, by.clone())
            {
                applied.insert(question_id);
            }
        }
        let result = test
            .score(&attempt)
            .map_err(|e| JobError::Permanent(e.to_string()))?;
        if applied.is_empty() {
            // Nothing changes: the transaction rolls back when `held` is dropped.
            return Ok((result, applied));
        }
        let text = serde_json::to_string(&attempt).map_err(|e| {
            JobError::Permanent(format!("the graded attempt does not serialize: {e}"))
        })?;
        let row = ScoreRow::new(text, held.submitted_at, &result)?;
        held.save(row).await?;
        return Ok((result, applied));
    }
    Err(JobError::Transient(format!(
        "the key of test `{}` was revised {REVISIONS_FOLLOWED} times while the grades were written",
        shorten(test_id, ECHO_BYTES)
    )))
}

/// The job's result: the attempt's marks after grading and what became of each answer.
fn summary(
    result: &AttemptResult,
    model: &str,
    outcomes: &[(&str, Outcome)],
    applied: &HashSet<String>,
) -> Value {
    let count = |status: &str| {
        outcomes
            .iter()
            .filter(|(_, o)| o.status() == status)
            .count()
    };
    json!({
        "attempt_id": result.attempt_id,
        "test_id": &*result.test_id,
        "key_version": result.key_version,
        "model": model,
        "prompt_version": EVALUATE_PROMPT_VERSION,
        "answers": outcomes.len(),
        "graded": count("graded"),
        "reused": count("reused"),
        "failed": count("failed"),
        "applied": applied.len(),
        "marks": result.total.marks,
        "max_marks": result.total.max_marks,
        "provisional": result.provisional,
        "results": outcomes
            .iter()
            .map(|(id, o)| o.to_json(id, applied.contains(*id)))
            .collect::<Vec<_>>(),
    })
}

/// What became of one answer.
enum Outcome {
    Graded {
        key: String,
        grade: Grade,
    },
    /// Graded by an earlier attempt or job from the same answer and rubric.
    Reused {
        key: String,
        grade: Grade,
        graded_by: String,
    },
    Failed {
        reason: String,
        detail: String,
        reply: Option<String>,
    },
}

impl Outcome {
    fn status(&self) -> &'static str {
        match self {
            Outcome::Graded { .. } => "graded",
            Outcome::Reused { .. } => "reused",
            Outcome::Failed { .. } => "failed",
        }
    }

    fn grade(&self) -> Option<(&str, &Grade)> {
        match self {
            Outcome::Graded { key, grade } | Outcome::Reused { key, grade, .. } => {
                Some((key.as_str(), grade))
            }
            Outcome::Failed { .. } => None,
        }
    }

    fn error(&self) -> Option<String> {
        match self {
            Outcome::Failed { reason, detail, .. } => Some(format!("{reason}: {detail}")),
            _ => None,
        }
    }

    fn to_json(&self, id: &str, applied: bool) -> Value {
        match self {
            Outcome::Graded { grade, .. } | Outcome::Reused { grade, .. } => {
                let mut value = json!({
                    "question": id, "status": self.status(), "applied": applied,
                    "awarded": grade.awarded, "criteria": grade.criteria,
                    "feedback": grade.feedback,
                });
                if let Outcome::Reused { graded_by, .. } = self {
                    value["graded_by"] = json!(graded_by);
                }
                value
            }
            Outcome::Failed {
                reason,
                detail,
                reply,
            } => json!({
                "question": id, "status": "failed", "applied": false, "reason": reason,
                "error": detail, "reply": reply,
            }),
        }
    }
}

/// One attempt of a job, shared by the answers in flight.
struct Run<'a> {
    ctx: &'a JobContext,
    services: &'a Services,
    attempt_id: &'a str,
    /// Grades stored for the attempt, by question id.
    grades: &'a HashMap<String, StoredGrade>,
    /// Answers this job failed to grade in an earlier attempt: not asked again.
    failures: &'a HashMap<String, EarlierFailure>,
    /// Set when the attempt is ending: answers not begun are left for the retry.
    stop: AtomicBool,
    /// The job's requests in flight (`ai.concurrency`): [`request`].
    slots: Semaphore,
}

impl Run<'_> {
    /// One answer: `None` if it was not begun because the attempt is ending.
    async fn one(&self, item: &ToGrade<'_>) -> Result<Option<Outcome>, JobError> {
        let ai = &self.services.ai;
        let model = ai.provider.model();
        let key = grade_key(&item.graded, model);
        if let Some(stored) = self.grades.get(item.question_id)
            && stored.grade_key == key
        {
            return Ok(Some(Outcome::Reused {
                key,
                grade: stored.grade.clone(),
                graded_by: stored.job_id.clone(),
            }));
        }
        if let Some(failure) = self.failures.get(item.question_id) {
            return Ok(Some(Outcome::Failed {
                reason: failure.reason.clone(),
                detail: format!("{} (in an earlier attempt)", failure.detail),
                reply: None,
            }));
        }
        let chars = item.graded.answer.chars().count();
        if chars > ai.config.max_answer_chars {
            let detail = format!(
                "the answer is {chars} characters, more than ai.max_answer_chars = {}",
                ai.config.max_answer_chars
            );
            return self.fail(item, (Reason::TooLong, &detail, None)).await;
        }
        if stopped(self.services, &self.stop) {
            return Ok(None);
        }
        let prompt = grading::render(&item.graded)
            .map_err(|e| JobError::Permanent(format!("the grading prompt did not render: {e}")))?;
        let format = ai
            .provider
            .format()
            .request_field_for("grading", grading_schema(item.graded.rubric));
        let body = prompt.request_body_for(model, format);
        let started = Instant::now();
        let mut spent = Spent::default();
        let mut invalid_replies = 0;
        loop {
            // A slot held until this reply is billed (`handler::request`): to the end of this turn.
            let (reply, _held) = match request(self.services, &self.stop, &self.slots, &body).await
            {
                Ok(sent) => sent,
                Err(Requested::Refused { reason }) => {
                    return self.fail(item, (Reason::ClientError, &reason, None)).await;
                }
                Err(Requested::Halt(error)) => return Err(error),
                Err(Requested::Stopped) => return Ok(None),
            };
            let content = match reply.completion.answered() {
                Answered::Refused(words) => {
                    self.bill(&reply, "refused", &mut spent).await?;
                    let detail = format!("the model refused: {words}");
                    let fail = (Reason::Refused, detail.as_str(), Some(reply.body.as_str()));
                    return self.fail(item, fail).await;
                }
                Answered::Filtered => {
                    self.bill(&reply, "filtered", &mut spent).await?;
                    let detail = "the provider's content filter stopped the reply";
                    let fail = (Reason::ContentFilter, detail, Some(reply.body.as_str()));
                    return self.fail(item, fail).await;
                }
                Answered::Empty => Err(("the reply has no content".to_owned(), reply.body.clone())),
                Answered::Content(content) => match parse_grade(&content, item.graded.rubric) {
                    Ok(grade) => Ok(grade),
                    Err(invalid) => Err((invalid.to_string(), content)),
                },
            };
            let grade = match content {
                Ok(grade) => grade,
                Err((detail, kept)) => {
                    self.bill(&reply, "invalid", &mut spent).await?;
                    if invalid_replies == 0 {
                        invalid_replies += 1;
                        tracing::info!(question = %item.question_id, %detail, "a grade refused; asking again");
                        continue;
                    }
                    let fail = (Reason::InvalidReply, detail.as_str(), Some(kept.as_str()));
                    return self.fail(item, fail).await;
                }
            };
            self.bill(&reply, "answered", &mut spent).await?;
            let stored = evaluations::store_grade(
                &self.services.pg,
                NewGrade {
                    attempt_id: self.attempt_id,
                    question_id: item.question_id,
                    grade_key: &key,
                    model,
                    prompt_version: EVALUATE_PROMPT_VERSION,
                    grade: &grade,
                    max_marks: item.graded.max_marks,
                    spent,
                    duration_ms: millis(started.elapsed()),
                    job_id: &self.ctx.id,
                },
            )
            .await
            .map_err(store_error)?;
            // Another job may have graded the same answer first: its grade stands.
            let grade = stored.map_or(grade, |s| s.grade);
            return Ok(Some(Outcome::Graded { key, grade }));
        }
    }

    async fn bill(
        &self,
        reply: &Reply,
        outcome: &'static str,
        spent: &mut Spent,
    ) -> Result<(), JobError> {
        let billed = Billed {
            job_id: &self.ctx.id,
            kind: AiEvaluate::KIND,
            prompt_version: EVALUATE_PROMPT_VERSION,
        };
        bill(self.services, &billed, reply, outcome, spent).await
    }

    /// Records that an answer could not be graded: why, and the reply that showed it.
    async fn fail(
        &self,
        item: &ToGrade<'_>,
        (reason, detail, reply): (Reason, &str, Option<&str>),
    ) -> Result<Option<Outcome>, JobError> {
        evaluations::record_failure(
            &self.services.pg,
            Failure {
                job_id: &self.ctx.id,
                question_id: item.question_id,
                attempt_id: self.attempt_id,
                attempt: self.ctx.attempt,
                model: self.services.ai.provider.model(),
                prompt_version: EVALUATE_PROMPT_VERSION,
                reason,
                detail,
                reply,
            },
        )
        .await
        .map_err(store_error)?;
        tracing::info!(question = %item.question_id, reason = reason.name(), %detail, "an answer not graded");
        Ok(Some(Outcome::Failed {
            reason: reason.name().to_owned(),
            detail: detail.to_owned(),
            reply: reply.map(|r| shorten(r, RESULT_REPLY_BYTES).into_owned()),
        }))
    }
}
