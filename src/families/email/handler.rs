//! Handlers of `email.send` and `email.bulk`: render, check every address and header, skip
//! suppressed addresses, and send each message once: the ledger row of a message is written
//! before its SMTP transaction and its outcome right after it, so a retry sends only what no
//! attempt has sent.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use futures::StreamExt;
use lettre::message::Mailbox;
use quizworker_jobs::Queue;
use quizworker_jobs::email::headers::{Refusal, message_id, one_line};
use quizworker_jobs::email::{self as jobs_email, EmailBulk, EmailSend, Templates};
use serde_json::{Value, json};

use super::ledger::{self, Status};
use super::smtp::{Outgoing, SendError, throttle_wait};
use super::{EmailService, attachments, suppressions};
use crate::families::{JobContext, JobError, Services};
use crate::ops::metrics;

/// Throttling replies (421, 454) one message may get before its attempt gives up.
const MAX_THROTTLES: u32 = 5;
/// Per-recipient failures a bulk job's result lists; the ledger has them all.
const LISTED_FAILURES: usize = 20;

pub async fn send(
    job: EmailSend,
    ctx: &JobContext,
    services: &Services,
) -> Result<Value, JobError> {
    let email = &services.email;
    let pg = &services.pg;
    let count = job.to.len() + job.cc.len() + job.bcc.len();
    if job.to.is_empty() {
        return Err(JobError::Permanent("email.send: `to` is empty".into()));
    }
    if count > email.config.max_message_recipients {
        return Err(JobError::Permanent(format!(
            "email.send: {count} addresses in to, cc and bcc, more than email.max_message_recipients = {}",
            email.config.max_message_recipients
        )));
    }
    let templates = email.templates()?;
    let content = templates
        .render(
            &job.template,
            job.locale.as_deref(),
            &Value::Object(job.vars.clone()),
        )
        .map_err(|e| JobError::Permanent(e.to_string()))?;
    let to = mailboxes("to", &job.to)?;
    let cc = mailboxes("cc", &job.cc)?;
    let bcc = mailboxes("bcc", &job.bcc)?;
    let reply_to = job
        .reply_to
        .as_ref()
        .map(|m| mailbox("reply_to", m))
        .transpose()?;

    let id = message_id(&ctx.id, 0, email.mailer.message_id_domain());
    let everyone: Vec<&Mailbox> = to.iter().chain(&cc).chain(&bcc).collect();
    let addresses = everyone
        .iter()
        .map(|m| m.email.to_string())
        .collect::<Vec<_>>();
    ledger::add_queued(
        pg,
        &ctx.id,
        &[0],
        &[addresses.join(", ")],
        std::slice::from_ref(&id),
    )
    .await
    .map_err(store_error)?;
    let earlier = ledger::of_job(pg, &ctx.id).await.map_err(store_error)?;
    match earlier.first() {
        // An attempt sent it and died before the job's end was journaled.
        Some(done) if done.status == Status::Sent => {
            return Ok(json!({
                "status": "sent", "message_id": id, "reply": done.reply,
                "note": format!("sent by attempt {}", done.attempt.unwrap_or_default()),
            }));
        }
        Some(done) if done.status.is_final() => {
            ledger::reopen(pg, &ctx.id, 0).await.map_err(store_error)?;
        }
        _ => {}
    }

    let suppressed = suppressions::among(pg, &addresses)
        .await
        .map_err(store_error)?;
    let keep = |list: Vec<Mailbox>| -> Vec<Mailbox> {
        list.into_iter()
            .filter(|m| !suppressed.contains(&suppressions::normalize(m.email.as_ref())))
            .collect()
    };
    let (to, cc, bcc) = (keep(to), keep(cc), keep(bcc));
    let mut skipped: Vec<&String> = addresses
        .iter()
        .filter(|a| suppressed.contains(&suppressions::normalize(a)))
        .collect();
    skipped.dedup();
    if to.is_empty() && cc.is_empty() && bcc.is_empty() {
        let reply = "every address is on the suppression list";
        ledger::record(pg, &ctx.id, 0, Status::Suppressed, reply, ctx.attempt)
            .await
            .map_err(store_error)?;
        metrics::email_message("suppressed");
        return Ok(json!({"status": "suppressed", "message_id": id, "suppressed": skipped}));
    }

    let files = attachments::load(
        pg,
        &email.exports_dir,
        &job.attachments,
        email.config.max_attachment_bytes,
        &attachments::Waiting {
            email_job: &ctx.id,
            limit: email.config.attachment_wait,
        },
    )
    .await?;
    let out = Outgoing {
        message_id: id.clone(),
        to: &to,
        cc: &cc,
        bcc: &bcc,
        reply_to: reply_to.as_ref(),
        content: &content,
        attachments: &files,
        unsubscribe: None,
    };
    let recipients: Vec<String> = to
        .iter()
        .chain(&cc)
        .chain(&bcc)
        .map(|m| m.email.to_string())
        .collect();
    match deliver(services, ctx, 0, &out, &recipients).await? {
        Delivered::Sent(reply) => Ok(json!({
            "status": "sent",
            "message_id": id,
            "recipients": recipients.len(),
            "suppressed": skipped,
            "attachments": files.iter().map(|f| json!({"filename": f.filename, "bytes": f.bytes.len()})).collect::<Vec<_>>(),
            "reply": reply,
        })),
        Delivered::Failed(reply) => Err(JobError::Permanent(format!(
            "the SMTP server refused the message: {reply}"
        ))),
        Delivered::Later(reply) => Err(JobError::Transient(format!(
            "the message was not sent: {reply}"
        ))),
    }
}

pub async fn bulk(
    job: EmailBulk,
    ctx: &JobContext,
    services: &Services,
) -> Result<Value, JobError> {
    let email = &services.email;
    let pg = &services.pg;
    let total = job.recipients.len();
    if total == 0 {
        return Err(JobError::Permanent(
            "email.bulk: `recipients` is empty".into(),
        ));
    }
    if total > email.config.max_bulk_recipients {
        return Err(JobError::Permanent(format!(
            "email.bulk: {total} recipients, more than email.max_bulk_recipients = {}",
            email.config.max_bulk_recipients
        )));
    }
    let templates = email.templates()?;
    // The template and locale are checked once for the whole job: a wrong name fails it at
    // once, not 10,000 times over.
    templates
        .variant(&job.template, job.locale.as_deref())
        .map_err(|e| JobError::Permanent(e.to_string()))?;
    let reply_to = job
        .reply_to
        .as_ref()
        .map(|m| mailbox("reply_to", m))
        .transpose()?;

    let domain = email.mailer.message_id_domain().to_owned();
    let indexes: Vec<i32> = (0..total as i32).collect();
    let addresses: Vec<String> = job.recipients.iter().map(|r| r.email.clone()).collect();
    let ids: Vec<String> = (0..total as u32)
        .map(|i| message_id(&ctx.id, i, &domain))
        .collect();
    ledger::add_queued(pg, &ctx.id, &indexes, &addresses, &ids)
        .await
        .map_err(store_error)?;
    let pending: Vec<usize> = ledger::of_job(pg, &ctx.id)
        .await
        .map_err(store_error)?
        .into_iter()
        .filter(|d| !d.status.is_final())
        .filter_map(|d| usize::try_from(d.recipient).ok().filter(|i| *i < total))
        .collect();
    let suppressed = suppressions::among(pg, &addresses)
        .await
        .map_err(store_error)?;

    let bulk = Bulk {
        job: &job,
        ctx,
        services,
        templates: &templates,
        reply_to: reply_to.as_ref(),
        ids: &ids,
        suppressed: &suppressed,
        unreachable: AtomicBool::new(false),
    };
    let already = total - pending.len();
    let mut done = already;
    let mut later: Option<String> = None;
    let mut outcomes = futures::stream::iter(pending)
        .map(|i| bulk.one(i))
        .buffer_unordered(email.config.bulk_concurrency);
    while let Some(outcome) = outcomes.next().await {
        match outcome? {
            Some(Delivered::Later(reply)) => later = Some(reply),
            Some(_) => done += 1,
            None => {}
        }
        ctx.progress(
            (done * 100 / total).min(99) as u8,
            format!("{done} of {total} recipients done"),
        );
    }
    drop(outcomes);

    let counts = ledger::counts(pg, &ctx.id).await.map_err(store_error)?;
    if counts.pending > 0 {
        let why = if services.stopping.is_cancelled() {
            "the process is shutting down".to_owned()
        } else {
            format!("last reply: {}", later.unwrap_or_else(|| "none".into()))
        };
        return Err(JobError::Transient(format!(
            "{} of {total} recipients not sent yet ({} sent, {} failed, {} suppressed); {why}",
            counts.pending, counts.sent, counts.failed, counts.suppressed,
        )));
    }
    ctx.progress(100, format!("{total} of {total} recipients done"));
    let failures: Vec<Value> = ledger::of_job(pg, &ctx.id)
        .await
        .map_err(store_error)?
        .into_iter()
        .filter(|d| d.status == Status::Failed)
        .take(LISTED_FAILURES)
        .map(|d| json!({"recipient": d.recipient, "email": d.address, "reply": d.reply}))
        .collect();
    Ok(json!({
        "recipients": total,
        "sent": counts.sent,
        "failed": counts.failed,
        "suppressed": counts.suppressed,
        "failures": failures,
    }))
}

/// One bulk job's attempt, shared by the messages in flight.
struct Bulk<'a> {
    job: &'a EmailBulk,
    ctx: &'a JobContext,
    services: &'a Services,
    templates: &'a Templates,
    reply_to: Option<&'a Mailbox>,
    ids: &'a [String],
    suppressed: &'a std::collections::HashSet<String>,
    /// Set when the server could not be reached: the messages not yet begun wait for the
    /// next attempt instead of each finding out again.
    unreachable: AtomicBool,
}

impl Bulk<'_> {
    /// Sends to recipient `i` unless its outcome is settled without the server. `None`: not
    /// tried, the server being unreachable.
    async fn one(&self, i: usize) -> Result<Option<Delivered>, JobError> {
        if self.unreachable.load(Ordering::Relaxed) || self.services.stopping.is_cancelled() {
            return Ok(None);
        }
        let pg = &self.services.pg;
        let (ctx, recipient) = (self.ctx, &self.job.recipients[i]);
        let row = i as i32;
        let settle = |status: Status, reply: String| async move {
            ledger::record(pg, &ctx.id, row, status, &reply, ctx.attempt)
                .await
                .map_err(store_error)?;
            metrics::email_message(status_label(status));
            Ok::<_, JobError>(Some(match status {
                Status::Failed => Delivered::Failed(reply),
                _ => Delivered::Sent(reply),
            }))
        };
        if self
            .suppressed
            .contains(&suppressions::normalize(&recipient.email))
        {
            return settle(
                Status::Suppressed,
                "the address is on the suppression list".into(),
            )
            .await;
        }
        let to = match mailbox(&format!("recipients[{i}]"), &recipient.mailbox()) {
            Ok(to) => to,
            Err(e) => return settle(Status::Failed, e.to_string()).await,
        };
        let vars = jobs_email::recipient_vars(&self.job.vars, recipient);
        let locale = recipient.locale.as_deref().or(self.job.locale.as_deref());
        let content = match self.templates.render(&self.job.template, locale, &vars) {
            Ok(content) => content,
            Err(e) => return settle(Status::Failed, e.to_string()).await,
        };
        let unsubscribe = self
            .services
            .email
            .unsubscribe_url(&recipient.email, &ctx.id);
        let out = Outgoing {
            message_id: self.ids[i].clone(),
            to: std::slice::from_ref(&to),
            cc: &[],
            bcc: &[],
            reply_to: self.reply_to,
            content: &content,
            attachments: &[],
            unsubscribe: unsubscribe.as_deref(),
        };
        match deliver(
            self.services,
            ctx,
            row,
            &out,
            std::slice::from_ref(&recipient.email),
        )
        .await
        {
            // The messages in flight finish; those not begun wait for the next attempt.
            Err(JobError::Transient(reason)) => {
                self.unreachable.store(true, Ordering::Relaxed);
                Ok(Some(Delivered::Later(reason)))
            }
            delivered => delivered.map(Some),
        }
    }
}

/// What became of one message.
enum Delivered {
    /// The server's 250 reply; also used for a message settled as suppressed.
    Sent(String),
    /// Refused for good, with the reply.
    Failed(String),
    /// Refused for now (4xx): the next attempt sends it.
    Later(String),
}

/// One message through the ledger: `sending`, the SMTP transaction (waiting out throttling
/// replies), then its outcome. A 5xx "no such user" puts the address on the suppression list.
/// `Err(Transient)`: the server could not be reached.
async fn deliver(
    services: &Services,
    ctx: &JobContext,
    row: i32,
    out: &Outgoing<'_>,
    recipients: &[String],
) -> Result<Delivered, JobError> {
    let email = &services.email;
    let pg = &services.pg;
    let message = email
        .mailer
        .build(out)
        .map_err(|e| JobError::Permanent(e.to_string()));
    let message = match message {
        Ok(message) => message,
        Err(JobError::Permanent(reason)) => {
            ledger::record(pg, &ctx.id, row, Status::Failed, &reason, ctx.attempt)
                .await
                .map_err(store_error)?;
            metrics::email_message("failed");
            return Ok(Delivered::Failed(reason));
        }
        Err(e) => return Err(e),
    };
    // The rate's slot first: a message waiting for it is not yet `sending`.
    pace(services).await?;
    if !ledger::begin(pg, &ctx.id, row, ctx.attempt)
        .await
        .map_err(store_error)?
    {
        return Ok(Delivered::Sent("settled by an earlier attempt".into()));
    }
    let mut throttled = 0;
    let sent = loop {
        match email.mailer.send(message.clone()).await {
            Err(SendError::Refused {
                reply,
                refusal: Refusal::Throttled,
            }) if throttled < MAX_THROTTLES => {
                tracing::info!(%reply, "the SMTP server asks to slow down; waiting");
                tokio::time::sleep(throttle_wait(throttled)).await;
                throttled += 1;
                pace(services).await?;
            }
            outcome => break outcome,
        }
    };
    let replied = Instant::now();
    let (status, reply, delivered) = match sent {
        Ok(reply) => (Status::Sent, reply.clone(), Delivered::Sent(reply)),
        Err(SendError::Refused {
            reply,
            refusal: Refusal::Permanent { hard_bounce },
        }) => {
            if hard_bounce {
                suppress_bounced(services, ctx, recipients, &reply).await?;
            }
            (Status::Failed, reply.clone(), Delivered::Failed(reply))
        }
        Err(SendError::Build(reason)) => {
            (Status::Failed, reason.clone(), Delivered::Failed(reason))
        }
        Err(SendError::Refused { reply, .. }) => {
            (Status::Queued, reply.clone(), Delivered::Later(reply))
        }
        Err(SendError::Unreachable(reason)) => {
            ledger::record(pg, &ctx.id, row, Status::Queued, &reason, ctx.attempt)
                .await
                .map_err(store_error)?;
            metrics::email_message("deferred");
            return Err(JobError::Transient(format!(
                "the SMTP server {}:{} could not be reached: {reason}",
                email.config.smtp.host, email.config.smtp.port
            )));
        }
    };
    ledger::record(pg, &ctx.id, row, status, &reply, ctx.attempt)
        .await
        .map_err(store_error)?;
    if status == Status::Sent {
        // The one window where a message can go twice: the server has it, the ledger not yet.
        metrics::email_unrecorded(replied.elapsed());
    }
    metrics::email_message(match status {
        Status::Queued => "deferred",
        other => status_label(other),
    });
    Ok(delivered)
}

/// Puts on the suppression list the addresses a hard bounce was about: the one recipient, or
/// those of several that the reply names.
async fn suppress_bounced(
    services: &Services,
    ctx: &JobContext,
    recipients: &[String],
    reply: &str,
) -> Result<(), JobError> {
    let lowered = reply.to_lowercase();
    let bounced: Vec<&String> = match recipients {
        [one] => vec![one],
        many => many
            .iter()
            .filter(|a| lowered.contains(&a.to_lowercase()))
            .collect(),
    };
    for address in bounced {
        let added = suppressions::add(
            &services.pg,
            address,
            "hard_bounce",
            Some(reply),
            Some(&ctx.id),
        )
        .await
        .map_err(store_error)?;
        if added {
            tracing::info!(address = %address, %reply, "hard bounce: address suppressed");
        }
    }
    Ok(())
}

/// Waits for the emails queue's rate limit: one unit per message (`meters_own_rate`).
async fn pace(services: &Services) -> Result<(), JobError> {
    services
        .rates
        .acquire(Queue::Emails)
        .await
        .map_err(|e| JobError::Transient(e.to_string()))
}

fn status_label(status: Status) -> &'static str {
    match status {
        Status::Queued | Status::Sending => "deferred",
        Status::Sent => "sent",
        Status::Failed => "failed",
        Status::Suppressed => "suppressed",
    }
}

fn mailboxes(field: &str, list: &[jobs_email::Mailbox]) -> Result<Vec<Mailbox>, JobError> {
    list.iter()
        .enumerate()
        .map(|(i, m)| mailbox(&format!("{field}[{i}]"), m))
        .collect()
}

/// A payload's address and display name, checked: a name is one line (lettre encodes a
/// non-ASCII one as RFC 2047 words), an address parses.
fn mailbox(field: &str, m: &jobs_email::Mailbox) -> Result<Mailbox, JobError> {
    if let Some(name) = &m.name {
        one_line(&format!("display name of {field}"), name)
            .map_err(|e| JobError::Permanent(e.to_string()))?;
    }
    let address = m.email.parse().map_err(|e| {
        JobError::Permanent(format!(
            "{field}: `{}` is not an email address ({e})",
            quizworker_jobs::limits::shorten(&m.email, quizworker_jobs::limits::ECHO_BYTES)
        ))
    })?;
    Ok(Mailbox::new(m.name.clone(), address))
}

fn store_error(e: sqlx::Error) -> JobError {
    JobError::Transient(format!("the email ledger could not be written: {e}"))
}

impl EmailService {
    pub fn templates(&self) -> Result<Arc<Templates>, JobError> {
        self.templates
            .get()
            .map_err(|e| JobError::Transient(e.to_string()))
    }
}
