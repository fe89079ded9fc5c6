//! A real SMTP server of the test's own: tests/smtp_sink.py (Debian's python3-aiosmtpd, run by
//! `/usr/bin/python3`; scripts/services.sh installs it), plain, STARTTLS or implicit TLS. Each
//! [`SmtpSink`] is its own process on its own port with its own temp dir, so tests run side by
//! side; it is killed when dropped, and exits by itself when the test process dies (its stdin
//! closes).

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use mail_parser::{MessageParser, MimeHeaders as _};
use serde::{Deserialize, Serialize};

use super::DEADLINE;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/smtp_sink.py");
/// Debian's interpreter: the `python3` on PATH may be another one, without aiosmtpd.
const PYTHON: &str = "/usr/bin/python3";

/// How a sink runs; `SmtpSinkOptions::default()` is what [`SmtpSink::start`] uses.
#[derive(Debug, Clone, Default)]
pub struct SmtpSinkOptions {
    /// Require AUTH PLAIN or LOGIN with this user and password (offered without TLS, except
    /// with [`SinkTls::Starttls`]: only after STARTTLS then).
    pub auth: Option<(String, String)>,
    /// Benchmarks: keep no message content, only the envelope and the size of each message
    /// ([`SmtpSink::count`] works, [`SmtpSink::messages`] panics).
    pub count_only: bool,
    /// TLS, with a certificate chain and key of the test's own (PEM files); `None`: plain SMTP,
    /// no STARTTLS offered.
    pub tls: Option<SinkTls>,
}

/// How the sink speaks TLS.
#[derive(Debug, Clone)]
pub enum SinkTls {
    /// STARTTLS offered and required: MAIL, RCPT and DATA before it are answered 530.
    Starttls { cert: PathBuf, key: PathBuf },
    /// TLS from the first byte (port 465's way).
    Implicit { cert: PathBuf, key: PathBuf },
}

/// The SMTP command a [`Rule`] answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// MAIL FROM; the rule's address is the sender's.
    Mail,
    /// RCPT TO; the rule's address is this recipient's.
    Rcpt,
    /// The end of DATA (after the content); the rule's address is any accepted recipient's.
    Data,
}

/// A reply the sink gives instead of 250: `code text` to the first `times` matching commands
/// (all of them without `times`). The first matching rule answers; a 421 also hangs up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rule {
    /// An address (compared without case), or `*` for any.
    pub address: String,
    pub stage: Stage,
    pub code: u16,
    /// The reply's text after the code, e.g. "5.1.1 user unknown".
    pub text: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub times: Option<u32>,
}

impl Rule {
    pub fn new(stage: Stage, address: &str, code: u16, text: &str) -> Rule {
        Rule {
            address: address.to_owned(),
            stage,
            code,
            text: text.to_owned(),
            times: None,
        }
    }

    /// Answers MAIL FROM `address` (or `*`).
    pub fn mail(address: &str, code: u16, text: &str) -> Rule {
        Rule::new(Stage::Mail, address, code, text)
    }

    /// Answers RCPT TO `address` (or `*`).
    pub fn rcpt(address: &str, code: u16, text: &str) -> Rule {
        Rule::new(Stage::Rcpt, address, code, text)
    }

    /// Answers the end of DATA of a message to `address` (or `*`).
    pub fn data(address: &str, code: u16, text: &str) -> Rule {
        Rule::new(Stage::Data, address, code, text)
    }

    /// Only the first `n` matching commands get this reply; later ones pass.
    pub fn times(self, n: u32) -> Rule {
        Rule {
            times: Some(n),
            ..self
        }
    }
}

/// A message the sink accepted, as it came over the wire.
#[derive(Debug, Clone)]
pub struct ReceivedMessage {
    pub mail_from: String,
    pub rcpt_tos: Vec<String>,
    /// The user the session authenticated as (with [`SmtpSinkOptions::auth`]).
    pub auth_login: Option<String>,
    /// Whether the message came over TLS (after STARTTLS, or implicit).
    pub tls: bool,
    /// The exact bytes after DATA (dot-unstuffed; empty in count-only mode).
    pub data: Vec<u8>,
    pub size: usize,
    pub received_at: SystemTime,
}

/// A part of a message that is an attachment.
#[derive(Debug, Clone)]
pub struct Attachment {
    pub name: Option<String>,
    /// E.g. "application/pdf".
    pub content_type: String,
    /// Decoded (no longer base64).
    pub data: Vec<u8>,
}

impl ReceivedMessage {
    /// The message parsed; panics if it does not parse.
    pub fn parsed(&self) -> mail_parser::Message<'_> {
        MessageParser::default()
            .parse(&self.data)
            .unwrap_or_else(|| {
                panic!(
                    "the message does not parse:\n{}",
                    String::from_utf8_lossy(&self.data)
                )
            })
    }

    /// A header's value as sent (unfolded, not decoded, trimmed); the first if there are several.
    pub fn header(&self, name: &str) -> Option<String> {
        let message = self.parsed();
        message
            .headers_raw()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.replace("\r\n", "").trim().to_owned())
    }

    /// The Subject, decoded.
    pub fn subject(&self) -> Option<String> {
        self.parsed().subject().map(str::to_owned)
    }

    /// The first text/plain body, decoded.
    pub fn text_body(&self) -> Option<String> {
        let message = self.parsed();
        message
            .text_bodies()
            .find(|part| !part.is_text_html())
            .and_then(|part| part.text_contents())
            .map(str::to_owned)
    }

    /// The first text/html body, decoded.
    pub fn html_body(&self) -> Option<String> {
        let message = self.parsed();
        message
            .html_bodies()
            .find(|part| part.is_text_html())
            .and_then(|part| part.text_contents())
            .map(str::to_owned)
    }

    pub fn attachments(&self) -> Vec<Attachment> {
        let message = self.parsed();
        message
            .attachments()
            .map(|part| Attachment {
                name: part.attachment_name().map(str::to_owned),
                content_type: part
                    .content_type()
                    .map(|ct| match ct.subtype() {
                        Some(sub) => format!("{}/{sub}", ct.ctype()),
                        None => ct.ctype().to_owned(),
                    })
                    .unwrap_or_default(),
                data: part.contents().to_vec(),
            })
            .collect()
    }
}

/// One line of the sink's out file.
#[derive(Deserialize)]
struct Line {
    mail_from: String,
    rcpt_tos: Vec<String>,
    auth_login: Option<String>,
    tls: bool,
    size: usize,
    received_at: f64,
    data_b64: Option<String>,
}

/// tests/smtp_sink.py on 127.0.0.1, on a free port; killed when dropped.
pub struct SmtpSink {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    count_only: bool,
    /// The mtime the last rules file got: each one gets a later one, so the sink sees every change.
    rules_mtime: Mutex<SystemTime>,
}

impl SmtpSink {
    pub fn start() -> SmtpSink {
        SmtpSink::start_with(SmtpSinkOptions::default())
    }

    pub fn start_with(options: SmtpSinkOptions) -> SmtpSink {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = fs::File::create(dir.path().join("sink.log")).expect("log file");
        let mut command = Command::new(PYTHON);
        command
            .arg(SCRIPT)
            .args(["--port", "0"])
            .arg("--out")
            .arg(dir.path().join("messages.jsonl"))
            .arg("--rules")
            .arg(dir.path().join("rules.json"));
        if let Some((user, password)) = &options.auth {
            command.arg("--auth").arg(format!("{user}:{password}"));
        }
        if options.count_only {
            command.arg("--count-only");
        }
        match &options.tls {
            Some(SinkTls::Starttls { cert, key }) => {
                command.arg("--starttls").arg(cert).arg(key);
            }
            Some(SinkTls::Implicit { cert, key }) => {
                command.arg("--tls").arg(cert).arg(key);
            }
            None => {}
        }
        // The sink exits when its stdin closes: the pipe stays open as long as `child` is here.
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{PYTHON} runs (scripts/services.sh installs it): {e}"));

        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let _ = tx.send(line);
            }
        });
        let mut sink = SmtpSink {
            child,
            port: 0,
            dir,
            count_only: options.count_only,
            rules_mtime: Mutex::new(UNIX_EPOCH),
        };
        let line = match rx.recv_timeout(DEADLINE) {
            Ok(Ok(line)) => line,
            Ok(Err(e)) => panic!("reading the SMTP sink's stdout: {e}"),
            Err(_) => panic!(
                "the SMTP sink did not say `listening on PORT` in {DEADLINE:?}:\n{}",
                sink.log_text()
            ),
        };
        sink.port = line
            .strip_prefix("listening on ")
            .and_then(|port| port.trim().parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "the SMTP sink said {line:?}, not `listening on PORT`:\n{}",
                    sink.log_text()
                )
            });
        sink
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// What the sink wrote on stderr (aiosmtpd errors, a bad rules file).
    pub fn log_text(&self) -> String {
        fs::read_to_string(self.dir.path().join("sink.log")).unwrap_or_default()
    }

    /// Replaces the reply rules; the next MAIL, RCPT or DATA command follows them (`&[]`: accept
    /// everything). A rule keeps its `times` count while it stays in the list at the same place.
    pub fn set_rules(&self, rules: &[Rule]) {
        let path = self.dir.path().join("rules.json");
        let tmp = self.dir.path().join("rules.json.tmp");
        let json = serde_json::to_vec_pretty(rules).expect("rules serialize");
        fs::write(&tmp, json).expect("write the rules");
        // The sink re-reads the file when its mtime, inode or size changes; a strictly later
        // mtime makes sure of it even for two writes within a clock tick.
        let mut last = self.rules_mtime.lock().expect("not poisoned");
        let mtime = SystemTime::now().max(*last + Duration::from_millis(1));
        fs::File::options()
            .write(true)
            .open(&tmp)
            .and_then(|file| file.set_modified(mtime))
            .expect("set the rules file's mtime");
        *last = mtime;
        fs::rename(&tmp, &path).expect("move the rules into place");
    }

    fn lines(&self) -> Vec<Line> {
        let text = match fs::read_to_string(self.dir.path().join("messages.jsonl")) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
            Err(e) => panic!("read the SMTP sink's messages: {e}"),
        };
        // The sink writes each line whole and flushes it; a last line without its newline is
        // still being written.
        text.split_inclusive('\n')
            .filter(|line| line.ends_with('\n'))
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("the SMTP sink wrote a bad line ({e}): {line}"))
            })
            .collect()
    }

    /// How many messages the sink has accepted (in any mode).
    pub fn count(&self) -> usize {
        self.lines().len()
    }

    /// Every message the sink has accepted so far, in order.
    pub fn messages(&self) -> Vec<ReceivedMessage> {
        assert!(
            !self.count_only,
            "a count-only SMTP sink keeps no messages: use count()"
        );
        self.lines()
            .into_iter()
            .map(|line| ReceivedMessage {
                data: base64::engine::general_purpose::STANDARD
                    .decode(line.data_b64.as_deref().unwrap_or_default())
                    .expect("the sink's data_b64 is base64"),
                mail_from: line.mail_from,
                rcpt_tos: line.rcpt_tos,
                auth_login: line.auth_login,
                tls: line.tls,
                size: line.size,
                received_at: UNIX_EPOCH + Duration::from_secs_f64(line.received_at),
            })
            .collect()
    }

    /// Waits until the sink has accepted at least `n` messages (panics after `within`, saying
    /// how many came) and returns them all.
    pub async fn wait_for_messages(&self, n: usize, within: Duration) -> Vec<ReceivedMessage> {
        self.wait_for_count(n, within).await;
        self.messages()
    }

    /// Waits until the sink has accepted at least `n` messages and returns how many it has.
    pub async fn wait_for_count(&self, n: usize, within: Duration) -> usize {
        let start = Instant::now();
        loop {
            let lines = self.lines();
            if lines.len() >= n {
                return lines.len();
            }
            if start.elapsed() >= within {
                let envelopes: Vec<String> = lines
                    .iter()
                    .map(|line| format!("{} -> {:?}", line.mail_from, line.rcpt_tos))
                    .collect();
                panic!(
                    "the SMTP sink on port {} got {} of {n} messages in {within:?}: {envelopes:#?}\n{}",
                    self.port,
                    lines.len(),
                    self.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The message that was sent to `rcpt`; panics naming the recipients there were if none was.
pub fn message_to<'a>(messages: &'a [ReceivedMessage], rcpt: &str) -> &'a ReceivedMessage {
    messages
        .iter()
        .find(|m| m.rcpt_tos.iter().any(|r| r.eq_ignore_ascii_case(rcpt)))
        .unwrap_or_else(|| {
            let all: Vec<&Vec<String>> = messages.iter().map(|m| &m.rcpt_tos).collect();
            panic!("no message to {rcpt}; the recipients were {all:?}")
        })
}
