//! The email tests' SMTP server (tests/smtp_sink.py through tests/common/smtp.rs) does what they
//! rely on, driven by lettre's async SMTP transport as the email handler uses it.

mod common;

use std::time::Duration;

use common::{Rule, SmtpSink, SmtpSinkOptions, message_to};
use lettre::message::header::ContentType;
use lettre::message::{Attachment, Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

type Transport = AsyncSmtpTransport<Tokio1Executor>;

fn transport(sink: &SmtpSink) -> Transport {
    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(sink.port())
        .timeout(Some(Duration::from_secs(10)))
        .build()
}

fn mailbox(address: &str) -> Mailbox {
    address.parse().expect("a mailbox")
}

fn simple(to: &[&str], subject: &str) -> Message {
    let mut builder = Message::builder()
        .from(mailbox("quiz@example.org"))
        .subject(subject);
    for to in to {
        builder = builder.to(mailbox(to));
    }
    builder.body(format!("{subject}\n")).expect("a message")
}

/// The reply code of a failed send, and whether lettre calls it permanent.
fn refused(
    result: Result<lettre::transport::smtp::response::Response, lettre::transport::smtp::Error>,
) -> (u16, bool) {
    let error = result.expect_err("the sink refuses this message");
    let code = error
        .status()
        .unwrap_or_else(|| panic!("not an SMTP reply: {error}"));
    (code.into(), error.is_permanent())
}

/// Equal bytes, or a panic that shows where they part (not two whole messages as numbers).
fn assert_same_bytes(got: &[u8], want: &[u8]) {
    let at = got.iter().zip(want).position(|(a, b)| a != b);
    let at = at.unwrap_or(got.len().min(want.len()));
    assert!(
        got == want,
        "{} bytes received, {} sent; they differ from byte {at}: received {:?}, sent {:?}",
        got.len(),
        want.len(),
        String::from_utf8_lossy(&got[at.saturating_sub(40)..(at + 40).min(got.len())]),
        String::from_utf8_lossy(&want[at.saturating_sub(40)..(at + 40).min(want.len())]),
    );
}

#[tokio::test]
async fn a_message_arrives_whole_and_parses_back() {
    let sink = SmtpSink::start();
    // Every byte value, as a PDF attachment carries.
    let pdf: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    let message = Message::builder()
        .from(mailbox("Quiz <quiz@example.org>"))
        .to(mailbox("ana@example.org"))
        .cc(mailbox("bo@example.org"))
        .subject("Résultats: 19/20 ✓")
        .multipart(
            MultiPart::mixed()
                .multipart(MultiPart::alternative_plain_html(
                    "Bonjour Ana,\n.a line that starts with a dot\n".to_owned(),
                    "<p>Bonjour <b>Ana</b></p>".to_owned(),
                ))
                .singlepart(
                    Attachment::new("report card.pdf".to_owned())
                        .body(pdf.clone(), ContentType::parse("application/pdf").unwrap()),
                ),
        )
        .expect("a message");
    // lettre ends DATA with "\r\n.\r\n" after the message, which ends with its own CRLF: the
    // sink keeps what came over the wire, so one empty line more.
    let sent = [message.formatted(), b"\r\n".to_vec()].concat();
    transport(&sink).send(message).await.expect("delivered");

    let messages = sink.wait_for_messages(1, common::DEADLINE).await;
    let received = message_to(&messages, "bo@example.org");
    assert_eq!(received.mail_from, "quiz@example.org");
    assert_eq!(received.rcpt_tos, ["ana@example.org", "bo@example.org"]);
    assert_same_bytes(&received.data, &sent);
    assert_eq!(received.size, sent.len());
    assert_eq!(received.subject().as_deref(), Some("Résultats: 19/20 ✓"));
    assert_eq!(received.header("to").as_deref(), Some("ana@example.org"));
    assert_eq!(
        received.text_body().as_deref(),
        Some("Bonjour Ana,\r\n.a line that starts with a dot\r\n")
    );
    assert_eq!(
        received.html_body().as_deref(),
        Some("<p>Bonjour <b>Ana</b></p>")
    );
    let attachments = received.attachments();
    assert_eq!(attachments.len(), 1);
    assert_eq!(attachments[0].name.as_deref(), Some("report card.pdf"));
    assert_eq!(attachments[0].content_type, "application/pdf");
    assert!(attachments[0].data == pdf, "the attachment arrives whole");
}

#[tokio::test]
async fn a_550_at_rcpt_is_a_permanent_error() {
    let sink = SmtpSink::start();
    sink.set_rules(&[Rule::rcpt("gone@example.org", 550, "5.1.1 user unknown")]);
    let transport = transport(&sink);

    let result = transport
        .send(simple(&["ana@example.org", "GONE@example.org"], "to two"))
        .await;
    assert_eq!(refused(result), (550, true));
    transport
        .send(simple(&["ana@example.org"], "to one"))
        .await
        .expect("another recipient still gets mail");

    let messages = sink.wait_for_messages(1, common::DEADLINE).await;
    assert_eq!(messages.len(), 1, "the refused message is not kept");
    assert_eq!(messages[0].subject().as_deref(), Some("to one"));
}

#[tokio::test]
async fn a_451_once_then_the_message_goes_through() {
    let sink = SmtpSink::start();
    sink.set_rules(&[Rule::data("*", 451, "4.7.1 try later").times(1)]);
    let transport = transport(&sink);

    let result = transport.send(simple(&["ana@example.org"], "first")).await;
    assert_eq!(refused(result), (451, false));
    transport
        .send(simple(&["ana@example.org"], "again"))
        .await
        .expect("the second try passes");
    // Setting the same rules again keeps the count: the rule has had its one time.
    sink.set_rules(&[Rule::data("*", 451, "4.7.1 try later").times(1)]);
    transport
        .send(simple(&["ana@example.org"], "third"))
        .await
        .expect("still passes");

    let messages = sink.wait_for_messages(2, common::DEADLINE).await;
    let subjects: Vec<_> = messages.iter().map(|m| m.subject().unwrap()).collect();
    assert_eq!(subjects, ["again", "third"]);
}

#[tokio::test]
async fn rules_changed_while_running_take_effect_at_once() {
    let sink = SmtpSink::start();
    let transport = transport(&sink);
    transport
        .send(simple(&["ana@example.org"], "before"))
        .await
        .expect("no rules: accepted");

    // Two changes within the same clock tick: the second one counts.
    sink.set_rules(&[Rule::mail("*", 454, "4.7.0 too many")]);
    sink.set_rules(&[Rule::mail("*", 421, "4.7.0 slow down")]);
    let result = transport.send(simple(&["ana@example.org"], "during")).await;
    assert_eq!(refused(result), (421, false));

    sink.set_rules(&[]);
    transport
        .send(simple(&["ana@example.org"], "after"))
        .await
        .expect("rules cleared: accepted (on a new connection after the 421)");

    let messages = sink.wait_for_messages(2, common::DEADLINE).await;
    let subjects: Vec<_> = messages.iter().map(|m| m.subject().unwrap()).collect();
    assert_eq!(subjects, ["before", "after"]);
}

#[tokio::test]
async fn auth_when_asked_for() {
    let sink = SmtpSink::start_with(SmtpSinkOptions {
        auth: Some(("quiz".to_owned(), "s3cret pass".to_owned())),
        ..Default::default()
    });
    let with = |password: &str| {
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
            .port(sink.port())
            .credentials(Credentials::new("quiz".to_owned(), password.to_owned()))
            .build()
    };

    let result = transport(&sink)
        .send(simple(&["ana@example.org"], "no login"))
        .await;
    assert_eq!(refused(result), (530, true));
    let result = with("wrong")
        .send(simple(&["ana@example.org"], "bad login"))
        .await;
    assert_eq!(refused(result), (535, true));
    with("s3cret pass")
        .send(simple(&["ana@example.org"], "logged in"))
        .await
        .expect("logged in: accepted");

    let messages = sink.wait_for_messages(1, common::DEADLINE).await;
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].auth_login.as_deref(), Some("quiz"));
}

#[tokio::test]
async fn count_only_counts() {
    let sink = SmtpSink::start_with(SmtpSinkOptions {
        count_only: true,
        ..Default::default()
    });
    let transport = transport(&sink);
    for i in 0..3 {
        transport
            .send(simple(&["ana@example.org"], &format!("n{i}")))
            .await
            .expect("accepted");
    }
    assert_eq!(sink.wait_for_count(3, common::DEADLINE).await, 3);
}
