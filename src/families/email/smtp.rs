//! The SMTP side of the email family: lettre's pooled async transport, the messages it sends
//! (multipart text and HTML, attachments, `List-Unsubscribe`, DKIM), and what a refusal means.

use std::error::Error as _;
use std::time::Duration;

use anyhow::Context;
use lettre::message::dkim::{DkimCanonicalization, DkimCanonicalizationType, DkimConfig as Dkim};
use lettre::message::dkim::{DkimSigningAlgorithm, DkimSigningKey};
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::PoolConfig;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use quizworker_jobs::email::RenderedEmail;
use quizworker_jobs::email::headers::{Refusal, classify_reply, one_line};

use crate::config::{DkimAlgorithm, EmailConfig, SmtpConfig, SmtpSecurity};

/// Where the SMTP user name and password come from; never the config file.
pub const USERNAME_VAR: &str = "SMTP_USERNAME";
pub const PASSWORD_VAR: &str = "SMTP_PASSWORD";

/// The sending half of the email family, built once per process.
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    message_id_domain: String,
    dkim: Option<Signers>,
}

/// DKIM signs a fixed list of headers; bulk mail adds the two `List-Unsubscribe` ones, which
/// RFC 8058 wants signed.
struct Signers {
    transactional: Dkim,
    bulk: Dkim,
}

enum Body {
    Single(SinglePart),
    Multi(MultiPart),
}

/// A file to attach, read and checked.
pub struct FileAttachment {
    pub filename: String,
    pub content_type: ContentType,
    pub bytes: Vec<u8>,
}

/// One message to build: its addresses are checked already.
pub struct Outgoing<'a> {
    pub message_id: String,
    pub to: &'a [Mailbox],
    pub cc: &'a [Mailbox],
    pub bcc: &'a [Mailbox],
    pub reply_to: Option<&'a Mailbox>,
    pub content: &'a RenderedEmail,
    pub attachments: &'a [FileAttachment],
    /// Bulk mail's one-click unsubscribe URL.
    pub unsubscribe: Option<&'a str>,
}

/// Why a message was not sent.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SendError {
    /// The server answered with a refusal.
    #[error("{reply}")]
    Refused { reply: String, refusal: Refusal },
    /// No answer: connection refused or lost, a timeout, TLS. The message may or may not have
    /// reached the server if this happened after its end was sent.
    #[error("{0}")]
    Unreachable(String),
    /// The message could not be built (a header lettre refuses).
    #[error("could not build the message: {0}")]
    Build(String),
}

impl Mailer {
    pub fn new(config: &EmailConfig) -> anyhow::Result<Mailer> {
        let smtp = &config.smtp;
        let builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&smtp.host);
        let builder = match smtp.security {
            // TLS from the first byte.
            SmtpSecurity::Tls => builder.tls(Tls::Wrapper(tls_parameters(smtp)?)),
            // STARTTLS or nothing: lettre sends no command after EHLO (no AUTH, no MAIL) to a
            // server that does not offer it.
            SmtpSecurity::Starttls => builder.tls(Tls::Required(tls_parameters(smtp)?)),
            SmtpSecurity::Plain => builder,
        };
        let mut builder = builder
            .port(smtp.port)
            .timeout(Some(smtp.timeout))
            .pool_config(PoolConfig::new().max_size(smtp.pool_size));
        match (std::env::var(USERNAME_VAR), std::env::var(PASSWORD_VAR)) {
            (Ok(user), Ok(password)) => {
                builder = builder.credentials(Credentials::new(user, password))
            }
            (Err(_), Err(_)) => {}
            _ => anyhow::bail!(
                "set both {USERNAME_VAR} and {PASSWORD_VAR} for SMTP authentication, or neither"
            ),
        }
        let from: Mailbox = config
            .from
            .parse()
            .with_context(|| format!("email.from `{}`", config.from))?;
        let message_id_domain = if config.message_id_domain.is_empty() {
            from.email.domain().to_owned()
        } else {
            config.message_id_domain.clone()
        };
        let dkim = config.dkim.as_ref().map(Signers::load).transpose()?;
        Ok(Mailer {
            transport: builder.build(),
            from,
            message_id_domain,
            dkim,
        })
    }

    pub fn message_id_domain(&self) -> &str {
        &self.message_id_domain
    }

    /// Builds the message, signed if DKIM is configured.
    pub fn build(&self, out: &Outgoing<'_>) -> Result<Message, SendError> {
        one_line("subject", &out.content.subject).map_err(|e| SendError::Build(e.to_string()))?;
        let mut builder = Message::builder()
            .from(self.from.clone())
            .message_id(Some(out.message_id.clone()))
            .subject(out.content.subject.clone())
            .date_now();
        for mailbox in out.to {
            builder = builder.to(mailbox.clone());
        }
        for mailbox in out.cc {
            builder = builder.cc(mailbox.clone());
        }
        for mailbox in out.bcc {
            builder = builder.bcc(mailbox.clone());
        }
        if let Some(reply_to) = out.reply_to {
            builder = builder.reply_to(reply_to.clone());
        }
        if let Some(url) = out.unsubscribe {
            builder = builder
                .raw_header(HeaderValue::new(
                    HeaderName::new_from_ascii_str("List-Unsubscribe"),
                    format!("<{url}>"),
                ))
                .raw_header(HeaderValue::new(
                    HeaderName::new_from_ascii_str("List-Unsubscribe-Post"),
                    "List-Unsubscribe=One-Click".to_owned(),
                ));
        }
        let text = SinglePart::plain(out.content.text.clone());
        let body = match &out.content.html {
            Some(html) => Body::Multi(MultiPart::alternative_plain_html(
                out.content.text.clone(),
                html.clone(),
            )),
            None => Body::Single(text),
        };
        let body = if out.attachments.is_empty() {
            body
        } else {
            let mixed = match body {
                Body::Multi(alternative) => MultiPart::mixed().multipart(alternative),
                Body::Single(text) => MultiPart::mixed().singlepart(text),
            };
            Body::Multi(out.attachments.iter().fold(mixed, |mixed, file| {
                mixed.singlepart(
                    Attachment::new(file.filename.clone())
                        .body(file.bytes.clone(), file.content_type.clone()),
                )
            }))
        };
        let mut message = match body {
            Body::Multi(parts) => builder.multipart(parts),
            Body::Single(part) => builder.singlepart(part),
        }
        .map_err(|e| SendError::Build(e.to_string()))?;
        if let Some(signers) = &self.dkim {
            let signer = if out.unsubscribe.is_some() {
                &signers.bulk
            } else {
                &signers.transactional
            };
            message.sign(signer);
        }
        Ok(message)
    }

    /// Connects, greets and logs in (if credentials are set), as `quizworker check` does.
    pub async fn test_connection(&self) -> anyhow::Result<()> {
        match self.transport.test_connection().await {
            Ok(true) => Ok(()),
            Ok(false) => anyhow::bail!("the SMTP server did not answer NOOP"),
            Err(e) => Err(anyhow::anyhow!(classify(&e).to_string())),
        }
    }

    /// One SMTP transaction. `Ok` is the server's reply to the message's end (`250 ...`).
    pub async fn send(&self, message: Message) -> Result<String, SendError> {
        match self.transport.send(message).await {
            Ok(response) => {
                let code: u16 = response.code().into();
                Ok(format!(
                    "{code} {}",
                    response.message().collect::<Vec<_>>().join(" ")
                ))
            }
            Err(e) => Err(classify(&e)),
        }
    }
}

/// The server's certificate must name `host` and chain to a root of the system's store, or of
/// `ca_file` when there is one.
fn tls_parameters(smtp: &SmtpConfig) -> anyhow::Result<TlsParameters> {
    let mut builder = TlsParameters::builder(smtp.host.clone());
    if let Some(path) = &smtp.ca_file {
        let pem = std::fs::read(path)
            .with_context(|| format!("email.smtp.ca_file {}", path.display()))?;
        // lettre (with rustls) takes a file without any certificate in it for an empty list,
        // which would trust nothing more without a word.
        let count = String::from_utf8_lossy(&pem)
            .matches("-----BEGIN CERTIFICATE-----")
            .count();
        if count == 0 {
            anyhow::bail!(
                "email.smtp.ca_file {}: no PEM certificate in it (-----BEGIN CERTIFICATE-----)",
                path.display()
            );
        }
        let certificate = Certificate::from_pem(&pem)
            .with_context(|| format!("email.smtp.ca_file {}", path.display()))?;
        builder = builder.add_root_certificate(certificate);
    }
    builder.build().with_context(|| match &smtp.ca_file {
        Some(path) => format!(
            "email.smtp: TLS setup with the certificates of ca_file {}",
            path.display()
        ),
        None => "email.smtp: TLS setup".to_owned(),
    })
}

fn classify(e: &lettre::transport::smtp::Error) -> SendError {
    let detail = e.source().map(|s| s.to_string()).unwrap_or_default();
    match e.status() {
        Some(code) => {
            let code: u16 = code.into();
            SendError::Refused {
                reply: format!("{code} {detail}").trim_end().to_owned(),
                refusal: classify_reply(code, &detail),
            }
        }
        None => {
            let mut text = match tls_failure(e) {
                Some(tls) => format!("TLS handshake failed: {tls}"),
                None => e.to_string(),
            };
            if e.is_timeout() {
                text.push_str(" (timed out)");
            }
            SendError::Unreachable(text)
        }
    }
}

/// The TLS error under a send's error, if that is what it is. lettre reports a failed handshake
/// (an untrusted certificate, a name that does not match) as a connection error, not a TLS one:
/// the rustls error is inside an io::Error, whose `source()` skips it.
fn tls_failure<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut next = Some(e);
    while let Some(error) = next {
        if let Some(tls) = error.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(io) = error.downcast_ref::<std::io::Error>()
            && let Some(tls) = io.get_ref().and_then(|inner| inner.downcast_ref())
        {
            return Some(tls);
        }
        next = error.source();
    }
    None
}

impl Signers {
    fn load(config: &crate::config::DkimConfig) -> anyhow::Result<Signers> {
        let key = std::fs::read_to_string(&config.key_file)
            .with_context(|| format!("email.dkim.key_file {}", config.key_file.display()))?;
        let (algorithm, name) = match config.algorithm {
            DkimAlgorithm::Rsa => (DkimSigningAlgorithm::Rsa, "an rsa"),
            DkimAlgorithm::Ed25519 => (DkimSigningAlgorithm::Ed25519, "an ed25519"),
        };
        let signer = |extra: &[&'static str]| -> anyhow::Result<Dkim> {
            let key = DkimSigningKey::new(key.trim(), algorithm).map_err(|e| {
                anyhow::anyhow!(
                    "email.dkim.key_file {}: not {name} key ({e:?}): RSA wants a PKCS#1 PEM \
                     (BEGIN RSA PRIVATE KEY), Ed25519 the base64 of its 32 bytes",
                    config.key_file.display(),
                )
            })?;
            let headers = [
                "From",
                "To",
                "Cc",
                "Subject",
                "Date",
                "Message-ID",
                "Reply-To",
            ]
            .iter()
            .chain(extra)
            .map(|name| HeaderName::new_from_ascii_str(name))
            .collect();
            Ok(Dkim::new(
                config.selector.clone(),
                config.domain.clone(),
                key,
                headers,
                DkimCanonicalization {
                    header: DkimCanonicalizationType::Relaxed,
                    body: DkimCanonicalizationType::Relaxed,
                },
            ))
        };
        Ok(Signers {
            transactional: signer(&[])?,
            bulk: signer(&["List-Unsubscribe", "List-Unsubscribe-Post"])?,
        })
    }
}

/// How long to wait after the server asked to slow down (421, 454), by how many times it has
/// asked for this message: 1 s, 2 s, 4 s, 8 s, 16 s.
pub fn throttle_wait(times: u32) -> Duration {
    Duration::from_secs(1 << times.min(4))
}
