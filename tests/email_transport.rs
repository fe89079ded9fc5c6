//! How the email family's messages travel: DKIM signatures checked by an implementation other
//! than lettre's (dkimpy, tests/dkim_verify.py), and TLS (STARTTLS, implicit) against a real
//! server (tests/smtp_sink.py) whose certificate is signed by a CA each test makes with openssl.

mod common;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{DEADLINE, Daemon, FAST_CONFIG, TestEnv};
use common::{ReceivedMessage, SinkTls, SmtpSink, SmtpSinkOptions, message_to};
use serde_json::{Value, json};
use sqlx::PgPool;

const OPENSSL: &str = "/usr/bin/openssl";
/// Debian's interpreter, which has python3-dkim (scripts/services.sh installs it).
const PYTHON: &str = "/usr/bin/python3";
const VERIFIER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/dkim_verify.py");

const DKIM_DOMAIN: &str = "exams.test";
const DKIM_SELECTOR: &str = "quizworker";

/// FAST_CONFIG, with the emails queue retrying within a second or two and giving up after 3.
fn config() -> String {
    format!(
        r#"{FAST_CONFIG}
[queues.emails]
concurrency = 4
timeout = "60s"
max_attempts = 3
backoff = {{ base = "300ms", cap = "600ms", jitter = 0.0 }}

[email]
from = "Exam Results <results@exams.test>"
unsubscribe_url = "https://exams.test/unsubscribe?e={{email}}&j={{job}}"

[email.smtp]
timeout = "10s"
"#
    )
}

/// A result email (HTML, a long Hindi subject that lettre folds into several encoded words) and
/// a plain-text newsletter for bulk mail.
fn write_templates(dir: &Path) {
    let files = [
        (
            "result-ready/subject.txt",
            "Your result for {{ test_name }}",
        ),
        (
            "result-ready/body.html",
            "<p>Dear {{ name }}, you scored <b>{{ score }}</b>.</p>\n<p>Trailing spaces   \n\n\n",
        ),
        (
            "result-ready.hi/subject.txt",
            "{{ test_name }} का परिणाम: आपके अंक, आपकी रैंक और अगले मॉक टेस्ट की तारीख",
        ),
        (
            "result-ready.hi/body.html",
            "<p>प्रिय {{ name }}, आपके अंक <b>{{ score }}</b> हैं।</p>",
        ),
        ("newsletter/subject.txt", "News for {{ recipient.name }}"),
        (
            "newsletter/body.txt",
            "Hello {{ recipient.name }},\tnumber {{ n }}.  \n\nThe end",
        ),
    ];
    for (path, text) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
}

/// Runs openssl in `dir`; panics with its output if it fails.
fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new(OPENSSL)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{OPENSSL} runs: {e}"));
    assert!(
        output.status.success(),
        "openssl {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A DKIM key pair in `dir`: the private key as lettre wants it (PKCS#1 PEM, "BEGIN RSA
/// PRIVATE KEY") and the public key (SubjectPublicKeyInfo PEM) the TXT record is built from.
struct DkimKey {
    private: PathBuf,
    public: PathBuf,
}

fn dkim_key(dir: &Path) -> DkimKey {
    openssl(dir, &["genrsa", "-traditional", "-out", "dkim.pem", "2048"]);
    openssl(
        dir,
        &["rsa", "-in", "dkim.pem", "-pubout", "-out", "dkim.pub.pem"],
    );
    let private = dir.join("dkim.pem");
    let pem = std::fs::read_to_string(&private).unwrap();
    assert!(pem.starts_with("-----BEGIN RSA PRIVATE KEY-----"), "{pem}");
    DkimKey {
        private,
        public: dir.join("dkim.pub.pem"),
    }
}

/// A CA of the test's own and a certificate it signed for `localhost`, in a temp dir that
/// lives as long as this does.
struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    _dir: tempfile::TempDir,
}

fn pki() -> Pki {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=quizworker test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(dir, &ca);
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    openssl(dir, &csr);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost\nbasicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-set_serial",
            "2",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.pem",
        ],
    );
    Pki {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
        _dir: tmp,
    }
}

/// What tests/dkim_verify.py says of a message: `verified`, `error`, `tags` (with `h` a list
/// of lower-case header names), `log`.
fn dkim_verify(key: &DkimKey, message: &[u8]) -> Value {
    let mut child = Command::new(PYTHON)
        .arg(VERIFIER)
        .arg("--public-key")
        .arg(&key.public)
        .args(["--domain", DKIM_DOMAIN, "--selector", DKIM_SELECTOR])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{PYTHON} runs (scripts/services.sh installs it): {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(message)
        .expect("write the message to the verifier");
    let output = child.wait_with_output().expect("the verifier ends");
    assert!(
        output.status.success(),
        "tests/dkim_verify.py failed (is python3-dkim installed? scripts/services.sh):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "the verifier printed no JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// The message with one byte of its Subject's value changed.
fn tamper_subject(message: &[u8]) -> Vec<u8> {
    let at = message
        .windows(11)
        .position(|w| w == b"\r\nSubject: ")
        .expect("a Subject header")
        + 11;
    let mut tampered = message.to_vec();
    tampered[at] = if tampered[at] == b'X' { b'Y' } else { b'X' };
    tampered
}

/// The header names a signature covers, from the verifier's report.
fn signed_headers(report: &Value) -> Vec<String> {
    report["tags"]["h"]
        .as_array()
        .unwrap_or_else(|| panic!("no h= in {report}"))
        .iter()
        .map(|h| h.as_str().unwrap().to_owned())
        .collect()
}

struct TransportEnv {
    env: TestEnv,
    sink: SmtpSink,
}

impl TransportEnv {
    async fn new(pool: PgPool, sink: SmtpSinkOptions) -> TransportEnv {
        let env = TestEnv::with_config(pool, &config()).await;
        write_templates(&env.dir.path().join("templates"));
        TransportEnv {
            env,
            sink: SmtpSink::start_with(sink),
        }
    }

    fn dir(&self) -> &Path {
        self.env.dir.path()
    }

    /// The daemon's environment: templates, the sink's port, and `extra`.
    fn daemon_env(&self, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let templates = self.dir().join("templates");
        let mut env = vec![
            (
                "QUIZWORKER_EMAIL__TEMPLATES".to_owned(),
                templates.to_str().unwrap().to_owned(),
            ),
            (
                "QUIZWORKER_EMAIL__SMTP__PORT".to_owned(),
                self.sink.port().to_string(),
            ),
        ];
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        env
    }

    fn daemon(&self, extra: &[(&str, &str)]) -> Daemon {
        let env = self.daemon_env(extra);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (&**k, &**v)).collect();
        self.env.spawn_daemon_with(&[], &env)
    }

    /// `quizworker run` with `extra` that must stop it at start: its exit code and stderr.
    fn daemon_that_stops(&self, extra: &[(&str, &str)]) -> (Option<i32>, String) {
        let log = self.dir().join(format!("daemon-{}.log", ulid::Ulid::new()));
        let child = self
            .env
            .command()
            .arg("run")
            .envs(self.daemon_env(extra))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn quizworker run");
        let mut daemon = Daemon { child, log };
        let code = daemon.wait_exit(DEADLINE);
        (code, daemon.log_text())
    }

    fn send(&self, to: &str) -> String {
        let payload = json!({
            "template": "result-ready", "locale": "hi",
            "to": [{"email": to, "name": "प्रिया शर्मा"}],
            "cc": [{"email": "wang@example.com", "name": "王芳"}],
            "reply_to": {"email": "help@exams.test", "name": "Help desk"},
            "vars": {"test_name": "JEE Mock 3", "name": "Priya", "score": "123/300"}
        });
        self.env.enqueue("email.send", &payload.to_string(), &[])
    }

    /// Waits until the job has failed for good (every attempt spent) and returns the errors of
    /// its attempts.
    async fn errors_once_failed(&self, id: &str) -> Vec<String> {
        self.env.wait_for_state(id, "failed").await;
        self.env
            .attempts(id)
            .await
            .into_iter()
            .map(|a| a.error.unwrap_or_default())
            .collect()
    }
}

fn assert_verified(report: &Value, what: &str, message: &ReceivedMessage) {
    assert_eq!(
        report["verified"],
        true,
        "{what}: dkimpy does not verify lettre's signature: {report:#}\n{}",
        String::from_utf8_lossy(&message.data)
    );
    let tags = &report["tags"];
    assert_eq!(tags["d"], DKIM_DOMAIN, "{report}");
    assert_eq!(tags["s"], DKIM_SELECTOR, "{report}");
    assert_eq!(tags["a"], "rsa-sha256", "{report}");
    assert_eq!(tags["c"], "relaxed/relaxed", "{report}");
}

#[sqlx::test(migrations = false)]
async fn dkim_signatures_verify_with_dkimpy_and_fail_once_tampered(pool: PgPool) {
    let t = TransportEnv::new(pool, SmtpSinkOptions::default()).await;
    let key = dkim_key(t.dir());
    let key_file = key.private.to_str().unwrap().to_owned();
    let _daemon = t.daemon(&[
        ("QUIZWORKER_EMAIL__DKIM__DOMAIN", DKIM_DOMAIN),
        ("QUIZWORKER_EMAIL__DKIM__SELECTOR", DKIM_SELECTOR),
        ("QUIZWORKER_EMAIL__DKIM__KEY_FILE", &key_file),
        ("QUIZWORKER_EMAIL__DKIM__ALGORITHM", "rsa"),
    ]);

    // Transactional: multipart HTML, a folded non-ASCII subject, Cc and Reply-To.
    let sent = t.send("priya@example.com");
    t.env.wait_for_state(&sent, "completed").await;
    // Bulk: plain text, with one-click unsubscribe.
    let payload = json!({"template": "newsletter", "recipients": [
        {"email": "ana@example.com", "name": "Ana", "vars": {"n": 1}},
        {"email": "ravi@example.com", "name": "रवि", "vars": {"n": 2}},
    ]});
    let bulk = t.env.enqueue("email.bulk", &payload.to_string(), &[]);
    t.env.wait_for_state(&bulk, "completed").await;
    let messages = t.sink.wait_for_messages(3, DEADLINE).await;

    let transactional = message_to(&messages, "priya@example.com");
    assert!(!transactional.tls, "a plain server, yet the sink says TLS");
    let report = dkim_verify(&key, &transactional.data);
    assert_verified(&report, "email.send", transactional);
    let h = signed_headers(&report);
    for name in [
        "from",
        "to",
        "cc",
        "subject",
        "date",
        "message-id",
        "reply-to",
    ] {
        assert!(h.contains(&name.to_owned()), "h= lacks {name}: {h:?}");
    }
    assert!(!h.contains(&"list-unsubscribe".to_owned()), "{h:?}");

    for rcpt in ["ana@example.com", "ravi@example.com"] {
        let m = message_to(&messages, rcpt);
        assert!(m.header("List-Unsubscribe").is_some());
        let report = dkim_verify(&key, &m.data);
        assert_verified(&report, "email.bulk", m);
        let h = signed_headers(&report);
        for name in [
            "list-unsubscribe",
            "list-unsubscribe-post",
            "from",
            "subject",
        ] {
            assert!(h.contains(&name.to_owned()), "h= lacks {name}: {h:?}");
        }
    }

    // One byte of the subject changed: the signature no longer holds.
    for m in [transactional, message_to(&messages, "ana@example.com")] {
        let report = dkim_verify(&key, &tamper_subject(&m.data));
        assert_eq!(report["verified"], false, "tampered, yet: {report:#}");
    }
    // Nor with another unsubscribe link (the header is covered, not only listed).
    let ana = message_to(&messages, "ana@example.com");
    let raw = String::from_utf8(ana.data.clone()).unwrap();
    let forged = raw.replace(
        "https://exams.test/unsubscribe",
        "https://evil.test/unsubscribe",
    );
    assert_ne!(raw, forged);
    let report = dkim_verify(&key, forged.as_bytes());
    assert_eq!(report["verified"], false, "forged link, yet: {report:#}");
}

/// What is wrong, the daemon's environment, and what its error must say.
type StopCase<'a> = (&'a str, Vec<(&'a str, String)>, Vec<String>);

#[sqlx::test(migrations = false)]
async fn settings_that_do_not_load_stop_the_daemon_at_start(pool: PgPool) {
    let t = TransportEnv::new(pool, SmtpSinkOptions::default()).await;
    let dir = t.dir();
    // A PKCS#8 key (what `openssl genpkey` writes): lettre wants PKCS#1.
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:1024",
            "-out",
            "pkcs8.pem",
        ],
    );
    std::fs::write(dir.join("garbage.pem"), "not a key\n").unwrap();
    std::fs::write(dir.join("no-cert.pem"), "nothing to trust here\n").unwrap();
    let path = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    let dkim = |file: &str| -> Vec<(&'static str, String)> {
        vec![
            ("QUIZWORKER_EMAIL__DKIM__DOMAIN", DKIM_DOMAIN.to_owned()),
            ("QUIZWORKER_EMAIL__DKIM__SELECTOR", DKIM_SELECTOR.to_owned()),
            ("QUIZWORKER_EMAIL__DKIM__KEY_FILE", path(file)),
            ("QUIZWORKER_EMAIL__DKIM__ALGORITHM", "rsa".to_owned()),
        ]
    };
    let cases: Vec<StopCase> = vec![
        (
            "a DKIM key file that is not there",
            dkim("missing.pem"),
            vec![path("missing.pem"), "email.dkim.key_file".into()],
        ),
        (
            "a PKCS#8 DKIM key",
            dkim("pkcs8.pem"),
            vec![path("pkcs8.pem"), "BEGIN RSA PRIVATE KEY".into()],
        ),
        (
            "a DKIM key file that is no key",
            dkim("garbage.pem"),
            vec![path("garbage.pem"), "email.dkim.key_file".into()],
        ),
        (
            "an SMTP CA file without a certificate",
            vec![
                ("QUIZWORKER_EMAIL__SMTP__SECURITY", "starttls".to_owned()),
                ("QUIZWORKER_EMAIL__SMTP__CA_FILE", path("no-cert.pem")),
            ],
            vec![path("no-cert.pem"), "no PEM certificate".into()],
        ),
        (
            "an SMTP CA file that is not there",
            vec![
                ("QUIZWORKER_EMAIL__SMTP__SECURITY", "tls".to_owned()),
                ("QUIZWORKER_EMAIL__SMTP__CA_FILE", path("missing-ca.pem")),
            ],
            vec![path("missing-ca.pem"), "email.smtp.ca_file".into()],
        ),
        (
            "a CA file for plain SMTP",
            vec![("QUIZWORKER_EMAIL__SMTP__CA_FILE", path("no-cert.pem"))],
            vec!["email.smtp.ca_file is for TLS".into()],
        ),
        (
            "a user name without a password",
            vec![("SMTP_USERNAME", "quiz".to_owned())],
            vec!["SMTP_USERNAME".into(), "SMTP_PASSWORD".into()],
        ),
        (
            "a password without a user name",
            vec![("SMTP_PASSWORD", "s3cret".to_owned())],
            vec!["SMTP_USERNAME".into(), "SMTP_PASSWORD".into()],
        ),
    ];
    for (what, env, needles) in cases {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (code, stderr) = t.daemon_that_stops(&env);
        assert!(
            code.is_some_and(|code| code != 0),
            "{what}: exit code {code:?}\n{stderr}"
        );
        assert!(!stderr.contains("quizworker ready"), "{what}: {stderr}");
        for needle in needles {
            assert!(
                stderr.contains(&needle),
                "{what}: stderr does not name {needle:?}:\n{stderr}"
            );
        }
    }
}

/// The daemon's settings for a TLS server on `localhost` (the name on the sink's certificate).
fn tls_env<'a>(security: &'a str, ca: Option<&'a str>) -> Vec<(&'a str, &'a str)> {
    let mut env = vec![
        ("QUIZWORKER_EMAIL__SMTP__HOST", "localhost"),
        ("QUIZWORKER_EMAIL__SMTP__SECURITY", security),
    ];
    if let Some(ca) = ca {
        env.push(("QUIZWORKER_EMAIL__SMTP__CA_FILE", ca));
    }
    env
}

/// A sink with TLS (STARTTLS, or implicit), and the CA that signed its certificate.
async fn tls_sink(pool: PgPool, implicit: bool) -> (TransportEnv, Pki) {
    let pki = pki();
    let (cert, key) = (pki.cert.clone(), pki.key.clone());
    let tls = if implicit {
        SinkTls::Implicit { cert, key }
    } else {
        SinkTls::Starttls { cert, key }
    };
    let t = TransportEnv::new(
        pool,
        SmtpSinkOptions {
            tls: Some(tls),
            ..Default::default()
        },
    )
    .await;
    (t, pki)
}

#[sqlx::test(migrations = false)]
async fn starttls_with_a_private_ca_delivers_over_tls(pool: PgPool) {
    let (t, pki) = tls_sink(pool, false).await;
    let ca = pki.ca.to_str().unwrap();
    let _daemon = t.daemon(&tls_env("starttls", Some(ca)));
    let id = t.send("priya@example.com");
    t.env.wait_for_state(&id, "completed").await;
    let messages = t.sink.wait_for_messages(1, DEADLINE).await;
    assert!(messages[0].tls, "the message came in the clear");
    assert_eq!(messages[0].auth_login, None);
}

#[sqlx::test(migrations = false)]
async fn starttls_sends_nothing_to_a_server_that_does_not_offer_it(pool: PgPool) {
    // A plain server: no STARTTLS in its EHLO reply.
    let t = TransportEnv::new(pool, SmtpSinkOptions::default()).await;
    let pki = pki();
    let _daemon = t.daemon(&tls_env("starttls", Some(pki.ca.to_str().unwrap())));
    let id = t.send("priya@example.com");
    let errors = t.errors_once_failed(&id).await;
    assert_eq!(
        errors.len(),
        3,
        "retried until its attempts ran out: {errors:?}"
    );
    for error in &errors {
        assert!(error.contains("STARTTLS"), "{errors:?}");
    }
    assert_eq!(t.sink.count(), 0, "a message went in the clear");
}

#[sqlx::test(migrations = false)]
async fn implicit_tls_with_a_private_ca_delivers(pool: PgPool) {
    let (t, pki) = tls_sink(pool, true).await;
    let _daemon = t.daemon(&tls_env("tls", Some(pki.ca.to_str().unwrap())));
    let id = t.send("priya@example.com");
    t.env.wait_for_state(&id, "completed").await;
    let messages = t.sink.wait_for_messages(1, DEADLINE).await;
    assert!(messages[0].tls);
}

/// Without `ca_file`, the test CA is not trusted: each attempt fails on the certificate (a
/// transient error: retried), and nothing arrives.
async fn untrusted_certificate_fails(pool: PgPool, implicit: bool) {
    let (t, _pki) = tls_sink(pool, implicit).await;
    let security = if implicit { "tls" } else { "starttls" };
    let _daemon = t.daemon(&tls_env(security, None));
    let id = t.send("priya@example.com");
    let errors = t.errors_once_failed(&id).await;
    assert_eq!(
        errors.len(),
        3,
        "retried until its attempts ran out: {errors:?}"
    );
    for error in &errors {
        assert!(
            error.contains("TLS handshake failed: invalid peer certificate: UnknownIssuer"),
            "{errors:?}"
        );
    }
    assert_eq!(t.sink.count(), 0);
}

#[sqlx::test(migrations = false)]
async fn implicit_tls_refuses_an_untrusted_certificate(pool: PgPool) {
    untrusted_certificate_fails(pool, true).await;
}

#[sqlx::test(migrations = false)]
async fn starttls_refuses_an_untrusted_certificate(pool: PgPool) {
    untrusted_certificate_fails(pool, false).await;
}

#[sqlx::test(migrations = false)]
async fn tls_refuses_a_certificate_for_another_name(pool: PgPool) {
    // The CA is trusted, but the certificate is for localhost and the daemon asks for 127.0.0.1.
    let (t, pki) = tls_sink(pool, true).await;
    let _daemon = t.daemon(&[
        ("QUIZWORKER_EMAIL__SMTP__HOST", "127.0.0.1"),
        ("QUIZWORKER_EMAIL__SMTP__SECURITY", "tls"),
        ("QUIZWORKER_EMAIL__SMTP__CA_FILE", pki.ca.to_str().unwrap()),
    ]);
    let id = t.send("priya@example.com");
    let errors = t.errors_once_failed(&id).await;
    for error in &errors {
        assert!(
            error.contains("TLS handshake failed: invalid peer certificate")
                && error.contains("127.0.0.1")
                && error.contains("localhost"),
            "{errors:?}"
        );
    }
    assert_eq!(t.sink.count(), 0);
}

#[sqlx::test(migrations = false)]
async fn smtp_auth_from_the_environment_over_starttls(pool: PgPool) {
    let pki = pki();
    let t = TransportEnv::new(
        pool,
        SmtpSinkOptions {
            auth: Some(("quiz".to_owned(), "s3cret pass".to_owned())),
            tls: Some(SinkTls::Starttls {
                cert: pki.cert.clone(),
                key: pki.key.clone(),
            }),
            ..Default::default()
        },
    )
    .await;
    let mut env = tls_env("starttls", Some(pki.ca.to_str().unwrap()));
    env.extend([("SMTP_USERNAME", "quiz"), ("SMTP_PASSWORD", "s3cret pass")]);
    let _daemon = t.daemon(&env);
    let id = t.send("priya@example.com");
    t.env.wait_for_state(&id, "completed").await;
    let messages = t.sink.wait_for_messages(1, DEADLINE).await;
    assert_eq!(messages[0].auth_login.as_deref(), Some("quiz"));
    assert!(messages[0].tls);
}
