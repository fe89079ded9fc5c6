//! The `email.*` jobs against a real SMTP server (tests/smtp_sink.py, aiosmtpd): what arrives,
//! what is refused and why, and that a message is sent once however the daemon dies.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{DEADLINE, Daemon, FAST_CONFIG, OwnRedis, TestEnv};
use common::{Rule, SmtpSink, Stage, message_to};
use quizworker_jobs::email::EmailSend;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::PgPool;

/// FAST_CONFIG, with the emails queue retrying within a second or two.
fn config() -> String {
    format!(
        r#"{FAST_CONFIG}
[queues.emails]
concurrency = 16
timeout = "60s"
max_attempts = 4
backoff = {{ base = "500ms", cap = "1s", jitter = 0.0 }}

[email]
from = "Exam Results <results@exams.test>"
unsubscribe_url = "https://exams.test/unsubscribe?e={{email}}&j={{job}}"
"#
    )
}

/// A templates directory like a platform's: a layout, a partial, a Hindi variant.
fn write_templates(dir: &Path) {
    let files = [
        (
            "layouts/base.html",
            "<html><body>{% block body %}{% endblock %}<footer>{% include \"partials/footer.html\" %}</footer></body></html>",
        ),
        ("partials/footer.html", "{{ institution }}"),
        (
            "result-ready/subject.txt",
            "Your result for {{ test_name }}",
        ),
        (
            "result-ready/body.html",
            "{% extends \"layouts/base.html\" %}{% block body %}<p>Dear {{ name }}, you scored <b>{{ score }}</b>.</p>{% endblock %}",
        ),
        ("result-ready.hi/subject.txt", "{{ test_name }} का परिणाम"),
        (
            "result-ready.hi/body.html",
            "{% extends \"layouts/base.html\" %}{% block body %}<p>प्रिय {{ name }}, आपके अंक {{ score }} हैं।</p>{% endblock %}",
        ),
        ("notice/subject.txt", "{{ subject }}"),
        ("notice/body.txt", "{{ text }}"),
        ("newsletter/subject.txt", "News for {{ recipient.name }}"),
        (
            "newsletter/body.txt",
            "Hello {{ recipient.name }}, number {{ n }}.",
        ),
    ];
    for (path, text) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
}

struct EmailEnv {
    env: TestEnv,
    sink: SmtpSink,
}

impl EmailEnv {
    async fn new(pool: PgPool) -> EmailEnv {
        let env = TestEnv::with_config(pool, &config()).await;
        Self::around(env)
    }

    /// On a Redis of the test's own (see [`OwnRedis`]), for tests that kill its connections.
    async fn with_redis(pool: PgPool, redis: &OwnRedis) -> EmailEnv {
        let env = TestEnv::with_redis(pool, &config(), &redis.url).await;
        Self::around(env)
    }

    fn around(env: TestEnv) -> EmailEnv {
        write_templates(&env.dir.path().join("templates"));
        EmailEnv {
            env,
            sink: SmtpSink::start(),
        }
    }

    fn daemon(&self) -> Daemon {
        self.daemon_with(&[])
    }

    fn daemon_with(&self, extra: &[(&str, &str)]) -> Daemon {
        let templates = self.env.dir.path().join("templates");
        let exports = self.env.exports_dir();
        let port = self.sink.port().to_string();
        let mut env = vec![
            ("QUIZWORKER_EMAIL__TEMPLATES", templates.to_str().unwrap()),
            ("QUIZWORKER_EXPORTS__DIRECTORY", exports.to_str().unwrap()),
            ("QUIZWORKER_EMAIL__SMTP__PORT", &port),
        ];
        env.extend_from_slice(extra);
        self.env.spawn_daemon_with(&[], &env)
    }

    fn send(&self, payload: Value) -> String {
        self.env.enqueue("email.send", &payload.to_string(), &[])
    }

    async fn deliveries(&self, job: &str) -> Vec<(i32, String, String)> {
        sqlx::query_as(
            "SELECT recipient, status, coalesce(reply, '') FROM email_deliveries
              WHERE job_id = $1 ORDER BY recipient",
        )
        .bind(job)
        .fetch_all(&self.env.pool)
        .await
        .unwrap()
    }
}

#[sqlx::test(migrations = false)]
async fn a_result_email_arrives_as_text_and_html_with_encoded_names(pool: PgPool) {
    let t = EmailEnv::new(pool).await;
    let _daemon = t.daemon();
    let id = t.send(json!({
        "template": "result-ready", "locale": "hi",
        "to": [{"email": "priya@example.com", "name": "प्रिया शर्मा"}],
        "cc": [{"email": "wang@example.com", "name": "王芳"}],
        "bcc": [{"email": "audit@exams.test"}],
        "reply_to": {"email": "help@exams.test", "name": "Help desk"},
        "vars": {"test_name": "JEE Mock 3", "name": "<Priya>", "score": "123/300", "institution": "ACME Academy"}
    }));
    let job = t.env.wait_for_state(&id, "completed").await;
    let result = job.result.unwrap();
    let messages = t.sink.wait_for_messages(1, DEADLINE).await;
    let m = &messages[0];

    // One SMTP transaction to all three; Bcc is in the envelope only.
    let mut rcpt = m.rcpt_tos.clone();
    rcpt.sort();
    assert_eq!(
        rcpt,
        ["audit@exams.test", "priya@example.com", "wang@example.com"]
    );
    assert_eq!(m.mail_from, "results@exams.test");
    assert_eq!(m.header("Bcc"), None);

    // Non-ASCII subject and display names travel as RFC 2047 words and decode back.
    let raw = String::from_utf8_lossy(&m.data).into_owned();
    let raw_headers = raw.split("\r\n\r\n").next().unwrap();
    assert!(
        raw_headers.is_ascii(),
        "headers must be 7-bit: {raw_headers}"
    );
    assert!(raw_headers.contains("=?utf-8?"), "{raw_headers}");
    assert_eq!(m.subject().as_deref(), Some("JEE Mock 3 का परिणाम"));
    let parsed = m.parsed();
    let to = parsed.to().unwrap().first().unwrap();
    assert_eq!(to.name(), Some("प्रिया शर्मा"));
    let cc = parsed.cc().unwrap().first().unwrap();
    assert_eq!(cc.name(), Some("王芳"));

    // multipart/alternative: the HTML escaped, the text derived from it.
    let html = m.html_body().unwrap();
    assert!(html.contains("प्रिय &lt;Priya&gt;"), "{html}");
    assert!(html.contains("<footer>ACME Academy</footer>"), "{html}");
    let text = m.text_body().unwrap();
    assert!(text.contains("प्रिय <Priya>, आपके अंक 123/300 हैं।"), "{text}");
    assert!(!text.contains("<footer>"), "{text}");
    assert!(raw.contains("multipart/alternative"), "{raw}");

    // The Message-ID is the job's, recorded in the result and the ledger.
    let message_id = m.header("Message-ID").unwrap();
    assert_eq!(message_id.trim(), format!("<{id}.0@exams.test>"));
    assert_eq!(result["message_id"], message_id.trim());
    assert_eq!(result["status"], "sent");
    assert!(
        result["reply"].as_str().unwrap().starts_with("250"),
        "{result}"
    );
    assert_eq!(t.deliveries(&id).await[0].1, "sent");
    // Transactional mail carries no List-Unsubscribe.
    assert_eq!(m.header("List-Unsubscribe"), None);
}

#[sqlx::test(migrations = false)]
async fn a_report_card_is_attached_whole_once_its_export_completes(pool: PgPool) {
    let t = EmailEnv::new(pool).await;
    let _daemon = t.daemon();
    let test = json!({
        "test_id": "t-mail", "key_version": 1, "marking": {"correct": 4, "incorrect": -1},
        "sections": [{"id": "s", "questions": [{"id": "q1", "type": "mcq", "answer": "A"}]}]
    });
    let attempt = json!({"attempt_id": "a-mail", "test_id": "t-mail", "candidate_id": "c1",
                         "responses": [{"question": "q1", "answer": "A"}]});
    let scored = t.env.enqueue(
        "score.attempt",
        &json!({"test": test, "attempt": attempt}).to_string(),
        &[],
    );
    // The email is enqueued before its export even exists: it must wait, not go without it.
    let export = t.env.enqueue(
        "export.report_pdf",
        r#"{"attempt_id": "a-mail"}"#,
        &["--delay", "2s"],
    );
    let id = t.send(json!({
        "template": "notice",
        "to": [{"email": "parent@example.com"}],
        "vars": {"subject": "Report card", "text": "Attached."},
        "attachments": [{"export_job": export, "filename": "रिपोर्ट कार्ड.pdf"}]
    }));
    t.env.wait_for_state(&scored, "completed").await;
    let export_result = t
        .env
        .wait_for_state(&export, "completed")
        .await
        .result
        .unwrap();
    let job = t.env.wait_for_state(&id, "completed").await;
    assert!(
        job.attempts >= 2,
        "the email should have waited for the export: {job:?}"
    );
    // It waited by snoozing, so a slow export does not use up the email's attempts.
    let attempts = t.env.attempts(&id).await;
    assert!(
        attempts.iter().any(|a| a.outcome == "snoozed"
            && a.error.as_deref().is_some_and(|e| {
                e.contains("attachments[0]: export job") && e.contains("waiting for its file")
            })),
        "{attempts:?}"
    );

    let messages = t.sink.wait_for_messages(1, DEADLINE).await;
    let attachments = messages[0].attachments();
    assert_eq!(attachments.len(), 1);
    let pdf = &attachments[0];
    assert_eq!(pdf.name.as_deref(), Some("रिपोर्ट कार्ड.pdf"));
    assert_eq!(pdf.content_type, "application/pdf");
    assert_eq!(
        hex::encode(Sha256::digest(&pdf.data)),
        export_result["sha256"].as_str().unwrap()
    );
    assert!(pdf.data.starts_with(b"%PDF-"));
}

#[sqlx::test(migrations = false)]
async fn an_email_waits_for_its_export_no_longer_than_email_attachment_wait(pool: PgPool) {
    let t = EmailEnv::new(pool).await;
    let _daemon = t.daemon_with(&[("QUIZWORKER_EMAIL__ATTACHMENT_WAIT", "0s")]);
    let export = t.env.enqueue(
        "export.report_pdf",
        r#"{"attempt_id": "a-late"}"#,
        &["--delay", "1h"],
    );
    t.env.wait_for_state(&export, "scheduled").await;
    let id = t.send(json!({
        "template": "notice",
        "to": [{"email": "parent@example.com"}],
        "vars": {"subject": "Report card", "text": "Attached."},
        "attachments": [{"export_job": export}]
    }));
    let job = t.env.wait_for_state(&id, "failed").await;
    let error = job.last_error.unwrap_or_default();
    assert!(
        error.contains(&format!(
            "attachments[0]: export job `{export}` is scheduled"
        )) && error.contains("over email.attachment_wait")
            && error.contains("no attempts left"),
        "{error}"
    );
    // Never sent: its ledger row still waits, for a `jobs retry` once the export is done.
    let statuses: Vec<String> = t.deliveries(&id).await.into_iter().map(|d| d.1).collect();
    assert_eq!(statuses, ["queued"]);
    assert!(t.sink.messages().is_empty());
}

#[sqlx::test(migrations = false)]
async fn a_4xx_is_retried_and_the_message_arrives_once(pool: PgPool) {
    let t = EmailEnv::new(pool).await;
    t.sink
        .set_rules(&[Rule::new(Stage::Data, "*", 451, "4.3.0 try again later").times(1)]);
    let _daemon = t.daemon();
    let id = t.send(
        json!({"template": "notice", "to": [{"email": "a@example.com"}],
                           "vars": {"subject": "s", "text": "t"}}),
    );
    let job = t.env.wait_for_state(&id, "completed").await;
    assert_eq!(job.attempts, 2, "{job:?}");
    let first = &t.env.attempts(&id).await[0];
    assert!(
        first
            .error
            .as_deref()
            .unwrap()
            .contains("451 4.3.0 try again later"),
        "{first:?}"
    );
    t.sink.wait_for_messages(1, DEADLINE).await;
    assert_eq!(
        t.sink.count(),
        1,
        "exactly one message should have been accepted"
    );
}

#[sqlx::test(migrations = false)]
async fn a_5xx_fails_with_the_reply_and_suppresses_the_address(pool: PgPool) {
    let t = EmailEnv::new(pool).await;
    t.sink.set_rules(&[Rule::new(
        Stage::Rcpt,
        "gone@example.com",
        550,
        "5.1.1 <gone@example.com>: user unknown",
    )]);
    let _daemon = t.daemon();
    let payload = json!({"template": "notice", "to": [{"email": "Gone@Example.com"}],
                         "vars": {"subject": "s", "text": "t"}});
    let id = t.send(payload.clone());
    let job = t.env.wait_for_state(&id, "failed").await;
    assert_eq!(job.attempts, 1, "a 5xx is not retried: {job:?}");
    let error = job.last_error.unwrap();
    assert!(
        error.contains("550 5.1.1 <gone@example.com>: user unknown"),
        "{error}"
    );
    let deliveries = t.deliveries(&id).await;
    assert_eq!(deliveries[0].1, "failed");
    assert!(deliveries[0].2.starts_with("550"), "{deliveries:?}");

    let list = t.env.cli_json(&["email", "suppressions", "list", "--json"]);
    assert_eq!(list[0]["address"], "gone@example.com", "{list}");
    assert_eq!(list[0]["reason"], "hard_bounce");
    assert_eq!(list[0]["job_id"], id.as_str());

    // The next send to it is skipped, not refused again.
    let again = t.send(payload.clone());
    let result = t
        .env
        .wait_for_state(&again, "completed")
        .await
        .result
        .unwrap();
    assert_eq!(result["status"], "suppressed", "{result}");
    assert_eq!(t.sink.count(), 0);

    // Removed from the list, it is tried again.
    t.env
        .cli_ok(&["email", "suppressions", "remove", "gone@example.com"]);
    t.sink.set_rules(&[]);
    let third = t.send(payload);
    t.env.wait_for_state(&third, "completed").await;
    t.sink.wait_for_messages(1, DEADLINE).await;
}

#[sqlx::test(migrations = false)]
async fn header_injection_and_missing_variables_are_refused_with_their_names(pool: PgPool) {
    let t = EmailEnv::new(pool).await;
    let _daemon = t.daemon();
    let injected = t.send(
        json!({"template": "notice", "to": [{"email": "a@example.com"}],
        "vars": {"subject": "Hi\r\nBcc: victim@example.com", "text": "t"}}),
    );
    let named = t.send(json!({"template": "notice",
        "to": [{"email": "a@example.com", "name": "Eve\nBcc: victim@example.com"}],
        "vars": {"subject": "s", "text": "t"}}));
    let missing = t.send(
        json!({"template": "result-ready", "to": [{"email": "a@example.com"}],
        "vars": {"institution": "ACME"}}),
    );
    let unknown = t.send(json!({"template": "result-redy", "to": [{"email": "a@example.com"}]}));
    let bad_address = t.send(
        json!({"template": "notice", "to": [{"email": "not an address"}],
        "vars": {"subject": "s", "text": "t"}}),
    );

    let cases = [
        (injected, "the subject has a line break"),
        (named, "the display name of to[0] has a line break"),
        (
            missing,
            "template result-ready: undefined variables: name, score, test_name",
        ),
        (unknown, "unknown template `result-redy`"),
        (
            bad_address,
            "to[0]: `not an address` is not an email address",
        ),
    ];
    for (id, expected) in cases {
        let job = t.env.wait_for_state(&id, "failed").await;
        assert_eq!(job.attempts, 1, "{job:?}");
        let error = job.last_error.unwrap();
        assert!(error.contains(expected), "{expected:?} not in {error:?}");
    }
    assert_eq!(t.sink.count(), 0, "nothing may have been sent");
}

#[sqlx::test(migrations = false)]
async fn email_preview_renders_offline_and_names_what_is_missing(pool: PgPool) {
    let t = EmailEnv::new(pool).await;
    let templates = t.env.dir.path().join("templates");
    let vars = t.env.dir.path().join("vars.json");
    std::fs::write(
        &vars,
        r#"{"test_name": "NEET", "name": "Asha", "score": 600, "institution": "ACME"}"#,
    )
    .unwrap();
    let dir = templates.to_str().unwrap();
    let out = t.env.cli_json(&[
        "email",
        "preview",
        "result-ready",
        "--templates",
        dir,
        "--vars",
        vars.to_str().unwrap(),
        "--locale",
        "hi-IN",
        "--json",
    ]);
    assert_eq!(out["variant"], "result-ready.hi");
    assert_eq!(out["subject"], "NEET का परिणाम");
    assert!(out["text"].as_str().unwrap().contains("प्रिय Asha"), "{out}");

    let failed = t
        .env
        .cli(&["email", "preview", "result-ready", "--templates", dir]);
    assert_eq!(failed.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(
        stderr.contains("undefined variables: name, score, test_name"),
        "{stderr}"
    );
}

#[sqlx::test(migrations = false)]
async fn a_bulk_reports_each_recipient_and_carries_one_click_unsubscribe(pool: PgPool) {
    let t = EmailEnv::new(pool).await;
    t.sink.set_rules(&[Rule::new(
        Stage::Rcpt,
        "bounce@example.com",
        550,
        "5.1.1 no such user",
    )]);
    let _daemon = t.daemon();
    let added = t
        .env
        .cli_ok(&["email", "suppressions", "add", "Quiet@Example.com"]);
    assert_eq!(added.trim(), "suppressed quiet@example.com");
    let mut recipients: Vec<Value> = (0..20)
        .map(|i| json!({"email": format!("r{i}@example.com"), "name": format!("R{i}"), "vars": {"n": i}}))
        .collect();
    recipients.push(json!({"email": "bounce@example.com", "vars": {"n": 20}}));
    recipients.push(json!({"email": "Quiet@example.com", "vars": {"n": 21}}));
    recipients.push(json!({"email": "r22@example.com"}));
    let payload = json!({"template": "newsletter", "recipients": recipients});
    let id = t.env.enqueue("email.bulk", &payload.to_string(), &[]);
    let job = t.env.wait_for_state(&id, "completed").await;
    let result = job.result.unwrap();
    assert_eq!(result["recipients"], 23);
    assert_eq!(result["sent"], 20, "{result}");
    assert_eq!(result["failed"], 2, "{result}");
    assert_eq!(result["suppressed"], 1, "{result}");
    assert_eq!(job.progress, 100);

    let deliveries = t.deliveries(&id).await;
    let status: HashMap<i32, (String, String)> = deliveries
        .into_iter()
        .map(|(r, s, reply)| (r, (s, reply)))
        .collect();
    assert_eq!(status[&20].0, "failed");
    assert!(
        status[&20].1.contains("550 5.1.1 no such user"),
        "{:?}",
        status[&20]
    );
    assert_eq!(status[&21].0, "suppressed");
    assert_eq!(status[&22].0, "failed");
    assert!(
        status[&22].1.contains("undefined variables: n"),
        "{:?}",
        status[&22]
    );

    let messages = t.sink.wait_for_messages(20, DEADLINE).await;
    let m = message_to(&messages, "r7@example.com");
    assert_eq!(m.subject().as_deref(), Some("News for R7"));
    assert!(m.text_body().unwrap().contains("number 7."));
    assert_eq!(
        m.header("List-Unsubscribe").unwrap().trim(),
        format!("<https://exams.test/unsubscribe?e=r7%40example.com&j={id}>")
    );
    assert_eq!(
        m.header("List-Unsubscribe-Post").unwrap().trim(),
        "List-Unsubscribe=One-Click"
    );
    assert_eq!(
        m.header("Message-ID").unwrap().trim(),
        format!("<{id}.7@exams.test>")
    );
    // The bounce is suppressed for the next job.
    let list = t.env.cli_json(&["email", "suppressions", "list", "--json"]);
    let addresses: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["address"].as_str().unwrap())
        .collect();
    assert!(addresses.contains(&"bounce@example.com"), "{list}");
}

/// kill -9 in the middle of a 1,000-recipient bulk, then a new process takes the job over:
/// every recipient gets its message; one the ledger had as sent is never sent again; a second
/// copy is possible only for a message whose SMTP transaction was under way at the kill (the
/// ledger's `sending`), and it carries the same Message-ID.
#[sqlx::test(migrations = false)]
async fn a_bulk_killed_midway_resumes_and_sends_each_recipient_once(pool: PgPool) {
    let t = EmailEnv::new(pool).await;
    let mut first = t.daemon();
    let recipients: Vec<Value> = (0..1000)
        .map(|i| json!({"email": format!("p{i}@example.com"), "vars": {"n": i}}))
        .collect();
    let id = t.env.enqueue(
        "email.bulk",
        &json!({"template": "newsletter", "recipients": recipients}).to_string(),
        &[],
    );
    let started = Instant::now();
    let sent_at_kill = loop {
        let sent: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM email_deliveries WHERE job_id = $1 AND status = 'sent'",
        )
        .bind(&id)
        .fetch_one(&t.env.pool)
        .await
        .unwrap();
        if sent >= 200 {
            first.signal("KILL");
            first.wait_exit(DEADLINE);
            break sent;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "the bulk did not get going: {sent} sent"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let ledger_at_kill = t.deliveries(&id).await;
    let sent_before: Vec<i32> = ledger_at_kill
        .iter()
        .filter(|d| d.1 == "sent")
        .map(|d| d.0)
        .collect();
    let in_flight = ledger_at_kill.iter().filter(|d| d.1 == "sending").count();
    assert!(
        sent_before.len() as i64 >= sent_at_kill && sent_before.len() < 1000,
        "killed too late"
    );

    let _second = t.daemon();
    let job = t.env.wait_for_state(&id, "completed").await;
    assert_eq!(job.result.as_ref().unwrap()["sent"], 1000, "{job:?}");
    let messages = t.sink.wait_for_messages(1000, DEADLINE).await;
    let mut copies: HashMap<String, Vec<String>> = HashMap::new();
    for m in &messages {
        copies
            .entry(m.rcpt_tos[0].clone())
            .or_default()
            .push(m.header("Message-ID").unwrap());
    }
    assert_eq!(copies.len(), 1000, "every recipient gets a message");
    for i in &sent_before {
        assert_eq!(
            copies[&format!("p{i}@example.com")].len(),
            1,
            "p{i} was sent before the kill: never again"
        );
    }
    let twice: Vec<(&String, &Vec<String>)> =
        copies.iter().filter(|(_, ids)| ids.len() > 1).collect();
    assert!(
        twice.len() <= in_flight,
        "{} sent twice, but only {in_flight} were in flight at the kill",
        twice.len()
    );
    for (_, ids) in &twice {
        assert!(
            ids.windows(2).all(|w| w[0] == w[1]),
            "a second copy keeps its Message-ID: {ids:?}"
        );
    }
    eprintln!(
        "killed at {} sent, {in_flight} in flight; {} recipients got two copies",
        sent_before.len(),
        twice.len()
    );
}

/// SIGTERM (every deploy) in the middle of a bulk: the messages under way finish, no new one
/// starts, and after a restart every recipient has exactly one message.
#[sqlx::test(migrations = false)]
async fn a_bulk_stopped_by_sigterm_sends_each_recipient_exactly_once(pool: PgPool) {
    let t = EmailEnv::new(pool).await;
    let mut first = t.daemon();
    let recipients: Vec<Value> = (0..600)
        .map(|i| json!({"email": format!("s{i}@example.com"), "vars": {"n": i}}))
        .collect();
    let id = t.env.enqueue(
        "email.bulk",
        &json!({"template": "newsletter", "recipients": recipients}).to_string(),
        &[],
    );
    t.sink.wait_for_count(100, DEADLINE).await;
    first.signal("TERM");
    assert_eq!(first.wait_exit(DEADLINE), Some(0), "{}", first.log_text());
    let left: Vec<(i32, String, String)> = t
        .deliveries(&id)
        .await
        .into_iter()
        .filter(|d| d.1 == "sending")
        .collect();
    assert!(left.is_empty(), "messages cut off mid-send: {left:?}");
    let job = t.env.job(&id).await.unwrap();
    assert_eq!(job.state, "retrying", "{job:?}");
    assert!(
        job.last_error
            .unwrap()
            .contains("the process is shutting down")
    );

    let _second = t.daemon();
    t.env.wait_for_state(&id, "completed").await;
    let messages = t.sink.wait_for_messages(600, DEADLINE).await;
    let mut per_recipient: HashMap<&str, usize> = HashMap::new();
    for m in &messages {
        *per_recipient.entry(m.rcpt_tos[0].as_str()).or_default() += 1;
    }
    assert_eq!(per_recipient.len(), 600);
    assert!(
        per_recipient.values().all(|n| *n == 1),
        "a recipient got two copies"
    );
    assert_eq!(messages.len(), 600);
}

/// `rate = "20/s"` on the emails queue holds at the SMTP server however many processes send:
/// two daemons, 100 messages, measured by when the server received each.
#[sqlx::test(migrations = false)]
async fn the_emails_rate_holds_at_the_server_across_two_processes(pool: PgPool) {
    const MESSAGES: usize = 100;
    const RATE: f64 = 20.0;
    let t = EmailEnv::new(pool).await;
    let rate = [("QUIZWORKER_QUEUES__EMAILS__RATE", "20/s")];
    let migrated = t.env.cli(&["migrate"]);
    assert!(migrated.status.success(), "{migrated:?}");
    let _daemons = [t.daemon_with(&rate), t.daemon_with(&rate)];
    // Pushed at once through the Rust producer: a CLI process per job enqueues slower than
    // 20/s on a busy machine, and the test would measure the enqueuing instead of the limit.
    let producer = t.env.producer().await;
    let mut ids = Vec::new();
    for i in 0..MESSAGES {
        let send: EmailSend = serde_json::from_value(json!({
            "template": "notice", "to": [{"email": format!("m{i}@example.com")}],
            "vars": {"subject": format!("m{i}"), "text": "t"}}))
        .unwrap();
        ids.push(producer.push(&send).await.unwrap().id);
    }
    let messages = t.sink.wait_for_messages(MESSAGES, DEADLINE).await;
    for id in &ids {
        t.env.wait_for_state(id, "completed").await;
    }
    let processes: i64 =
        sqlx::query_scalar("SELECT count(DISTINCT process) FROM jobs WHERE kind = 'email.send'")
            .fetch_one(&t.env.pool)
            .await
            .unwrap();
    assert_eq!(processes, 2, "both processes should have sent");

    let mut at: Vec<f64> = messages
        .iter()
        .map(|m| {
            m.received_at
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs_f64()
        })
        .collect();
    at.sort_by(f64::total_cmp);
    let span = at[MESSAGES - 1] - at[0];
    let measured = (MESSAGES - 1) as f64 / span;
    eprintln!("{MESSAGES} messages in {span:.2} s: {measured:.2} messages/s at the server");
    assert!(
        measured <= RATE * 1.05,
        "{measured:.2}/s is over the limit of {RATE}/s"
    );
    assert!(
        measured >= RATE * 0.8,
        "{measured:.2}/s: the limit should not slow sending this much"
    );
    // No second in which much more than the rate arrived. The limiter spaces the sends; the
    // server sees each one its SMTP exchange later, and on a busy machine (the other tests of
    // this file run beside it) that exchange varies by a few hundred milliseconds, so sends
    // spaced evenly can arrive bunched: 22 and 25 within one second were seen while the
    // average held at 20.1/s. The average above is the strict check; this one catches a
    // limiter that lets a burst through (a second process not sharing the limit doubles it).
    for (i, start) in at.iter().enumerate() {
        let within = at[i..].iter().take_while(|t| **t < start + 1.0).count();
        assert!(
            within <= (RATE * 1.3) as usize,
            "{within} messages within 1 s from {start}"
        );
    }
}

/// `quizworker check` reports the templates and whether the SMTP server answers, once email is
/// set up (its templates directory exists); a deployment without email is not failed for it.
#[sqlx::test]
async fn check_reports_the_templates_and_the_smtp_server(pool: PgPool) {
    let t = EmailEnv::new(pool).await;
    let templates = t.env.dir.path().join("templates");
    let port = t.sink.port().to_string();
    let check = |templates: &Path, port: &str| {
        let out = t
            .env
            .command()
            .args(["check", "--json"])
            .env("QUIZWORKER_EMAIL__TEMPLATES", templates)
            .env("QUIZWORKER_EMAIL__SMTP__PORT", port)
            .env("QUIZWORKER_EXPORTS__DIRECTORY", t.env.exports_dir())
            .output()
            .unwrap();
        let results: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
        let by_name = |name: &str| -> Value {
            results
                .iter()
                .find(|r| r["check"] == name)
                .cloned()
                .unwrap_or(Value::Null)
        };
        (
            out.status.code(),
            by_name("templates"),
            by_name("smtp"),
            by_name("email"),
        )
    };

    let (code, templates_check, smtp, _) = check(&templates, &port);
    assert_eq!(code, Some(0), "{templates_check} {smtp}");
    let detail = templates_check["detail"].as_str().unwrap();
    assert!(detail.contains("result-ready (en, hi)"), "{detail}");
    assert!(
        smtp["detail"].as_str().unwrap().contains("answers"),
        "{smtp}"
    );

    // Nothing listens on the port a closed listener had.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port().to_string();
    drop(closed);
    let (code, _, smtp, _) = check(&templates, &closed_port);
    assert_ne!(code, Some(0));
    assert_eq!(smtp["ok"], false, "{smtp}");

    std::fs::write(templates.join("result-ready/subject.txt"), "{{ broken").unwrap();
    let (code, templates_check, _, _) = check(&templates, &port);
    assert_ne!(code, Some(0));
    let detail = templates_check["detail"].as_str().unwrap();
    assert!(detail.contains("result-ready/subject.txt"), "{detail}");

    let (code, _, _, email) = check(&t.env.dir.path().join("no-templates"), &port);
    assert_eq!(code, Some(0));
    assert!(
        email["detail"].as_str().unwrap().starts_with("not set up"),
        "{email}"
    );
}

/// A throttling reply (454, as Amazon SES gives) is waited out within the attempt: the message
/// goes once the server accepts again, without spending the job's attempts.
#[sqlx::test(migrations = false)]
async fn a_throttling_reply_is_waited_out_without_spending_attempts(pool: PgPool) {
    let t = EmailEnv::new(pool).await;
    t.sink.set_rules(&[Rule::new(
        Stage::Data,
        "*",
        454,
        "4.7.0 Throttling failure: Maximum sending rate exceeded",
    )
    .times(2)]);
    let _daemon = t.daemon();
    let id = t.send(
        json!({"template": "notice", "to": [{"email": "a@example.com"}],
                           "vars": {"subject": "s", "text": "t"}}),
    );
    let job = t.env.wait_for_state(&id, "completed").await;
    assert_eq!(
        job.attempts, 1,
        "throttling must not cost attempts: {job:?}"
    );
    t.sink.wait_for_messages(1, DEADLINE).await;
    assert_eq!(t.sink.count(), 1);
    let logs = t.env.daemon_logs();
    assert!(logs.contains("asks to slow down"), "{logs}");
}

/// An operator's retry of an email that failed (the server refused it) sends it this time.
#[sqlx::test(migrations = false)]
async fn a_retried_failed_email_is_sent_again(pool: PgPool) {
    let t = EmailEnv::new(pool).await;
    t.sink
        .set_rules(&[Rule::new(Stage::Data, "*", 554, "5.7.1 rejected by policy")]);
    let _daemon = t.daemon();
    let id = t.send(
        json!({"template": "notice", "to": [{"email": "a@example.com"}],
                           "vars": {"subject": "s", "text": "t"}}),
    );
    let job = t.env.wait_for_state(&id, "failed").await;
    assert!(
        job.last_error
            .unwrap()
            .contains("554 5.7.1 rejected by policy")
    );
    t.sink.set_rules(&[]);
    t.env.cli_ok(&["jobs", "retry", &id]);
    let result = t.env.wait_for_state(&id, "completed").await.result.unwrap();
    assert_eq!(result["status"], "sent", "{result}");
    assert_eq!(t.sink.wait_for_messages(1, DEADLINE).await.len(), 1);
    assert_eq!(t.deliveries(&id).await[0].1, "sent");
}

/// Redis drops every connection of the daemon (a failover, CLIENT KILL) in the middle of a bulk:
/// the job runs on in its process, is not run a second time, and each recipient gets one message.
#[sqlx::test(migrations = false)]
async fn redis_connections_killed_mid_bulk_send_each_recipient_once(pool: PgPool) {
    // A Redis of its own: killing every client of the shared one would hit other tests.
    let redis = OwnRedis::start();
    let t = EmailEnv::with_redis(pool, &redis).await;
    let daemon = t.daemon_with(&[]);
    let recipients: Vec<Value> = (0..400)
        .map(|i| json!({"email": format!("k{i}@example.com"), "vars": {"n": i}}))
        .collect();
    let id = t.env.enqueue(
        "email.bulk",
        &json!({"template": "newsletter", "recipients": recipients}).to_string(),
        &[],
    );
    t.sink.wait_for_count(50, DEADLINE).await;
    t.env.kill_redis_connections().await;
    daemon.wait_for_log("the worker died");

    let job = t.env.wait_for_state(&id, "completed").await;
    assert_eq!(
        job.attempts,
        1,
        "the bulk ran once: {job:?}\n{}",
        daemon.log_text()
    );
    let messages = t.sink.wait_for_messages(400, DEADLINE).await;
    let mut per_recipient: HashMap<&str, usize> = HashMap::new();
    for m in &messages {
        *per_recipient.entry(m.rcpt_tos[0].as_str()).or_default() += 1;
    }
    assert_eq!(per_recipient.len(), 400);
    assert!(
        per_recipient.values().all(|n| *n == 1),
        "a recipient got two copies"
    );
    assert_eq!(messages.len(), 400);
}
