//! The email family: `email.send` and `email.bulk` rendered from the templates directory
//! (`templates`, the pure part in `quizworker_jobs::email`), sent over SMTP (`smtp`), each
//! message recorded in the delivery ledger (`ledger`) before and after it is sent, hard bounces
//! kept out (`suppressions`), attachments taken from export jobs (`attachments`).

mod attachments;
mod handler;
pub mod ledger;
pub mod smtp;
pub mod suppressions;
pub mod templates;

use std::path::PathBuf;

pub use handler::{bulk, send};

use crate::config::Config;
use smtp::Mailer;
use templates::TemplateStore;

/// What the email handlers share, built once per process.
pub struct EmailService {
    pub config: crate::config::EmailConfig,
    pub templates: TemplateStore,
    pub mailer: Mailer,
    /// Attachments are read from here: the files export jobs wrote.
    pub exports_dir: PathBuf,
}

impl EmailService {
    /// Fails on settings that no job could mend (a DKIM key or an SMTP CA file that does not
    /// load, half of the SMTP credentials); the templates are read at the first email job, and
    /// again when they change.
    pub fn new(config: &Config) -> anyhow::Result<EmailService> {
        Ok(EmailService {
            templates: TemplateStore::new(
                config.email.templates.clone(),
                config.email.default_locale.clone(),
            ),
            mailer: Mailer::new(&config.email)?,
            exports_dir: config.exports.directory.clone(),
            config: config.email.clone(),
        })
    }

    /// Bulk mail's `List-Unsubscribe` URL for one recipient, if one is configured.
    pub fn unsubscribe_url(&self, address: &str, job_id: &str) -> Option<String> {
        let url = &self.config.unsubscribe_url;
        (!url.is_empty()).then(|| {
            url.replace("{email}", &percent_encode(address))
                .replace("{job}", &percent_encode(job_id))
        })
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsubscribe_urls_are_percent_encoded() {
        assert_eq!(percent_encode("a+b@example.com"), "a%2Bb%40example.com");
        assert_eq!(percent_encode("प"), "%E0%A4%AA");
    }
}
