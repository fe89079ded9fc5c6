//! The payloads of the `email.*` jobs. A payload names a template and gives its variables; the
//! daemon renders it ([`crate::email::templates`]) and sends it over SMTP. Nothing in a payload
//! is a path or a header the daemon copies blindly: attachments name export jobs, and every
//! address and display name is checked before a message is built.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::payload::{JobPayload, Queue};

/// One message: a template rendered once and sent in one SMTP transaction to `to`, `cc` and
/// `bcc` together.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailSend {
    /// A template of the daemon's templates directory (`email.templates`), e.g. `result-ready`.
    pub template: String,
    /// `hi`, `pt-BR`, ...: the template's variant for it if there is one, else the default
    /// locale's (`email.default_locale`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    pub to: Vec<Mailbox>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cc: Vec<Mailbox>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bcc: Vec<Mailbox>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<Mailbox>,
    /// The template's variables: a JSON object.
    #[serde(default)]
    pub vars: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Attachment>,
}

impl JobPayload for EmailSend {
    const KIND: &'static str = "email.send";
    const QUEUE: Queue = Queue::Emails;
}

/// One template to many recipients, one message each, every recipient with its own variables.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailBulk {
    pub template: String,
    /// The locale of recipients that do not give their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    /// Variables every recipient shares; a recipient's own `vars` take precedence, key by key.
    #[serde(default)]
    pub vars: Map<String, Value>,
    pub recipients: Vec<BulkRecipient>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<Mailbox>,
}

impl JobPayload for EmailBulk {
    const KIND: &'static str = "email.bulk";
    const QUEUE: Queue = Queue::Emails;
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkRecipient {
    pub email: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    #[serde(default)]
    pub vars: Map<String, Value>,
}

impl BulkRecipient {
    pub fn mailbox(&self) -> Mailbox {
        Mailbox {
            email: self.email.clone(),
            name: self.name.clone(),
        }
    }
}

/// An address with an optional display name (`"प्रिया शर्मा" <priya@example.com>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mailbox {
    pub email: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A file to attach: the result of a completed `export.*` job, never a path from the payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attachment {
    /// The id of an export job (`export.report_pdf`, `export.results_csv`, ...). Until it has
    /// completed the email waits (its attempt fails and is retried).
    pub export_job: String,
    /// The attachment's file name; by default the export's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
}

/// The variables one bulk recipient's message is rendered with: the shared ones, the
/// recipient's own over them, and `recipient` (`email`, `name`).
pub fn recipient_vars(shared: &Map<String, Value>, recipient: &BulkRecipient) -> Value {
    let mut vars = shared.clone();
    for (key, value) in &recipient.vars {
        vars.insert(key.clone(), value.clone());
    }
    vars.insert(
        "recipient".to_owned(),
        serde_json::json!({"email": recipient.email, "name": recipient.name}),
    );
    Value::Object(vars)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_recipients_own_vars_win_and_it_sees_itself() {
        let shared = json!({"test": "JEE Mock 3", "score": 0})
            .as_object()
            .unwrap()
            .clone();
        let recipient: BulkRecipient = serde_json::from_value(json!({
            "email": "a@example.com", "name": "Asha", "vars": {"score": 42}
        }))
        .unwrap();
        let vars = recipient_vars(&shared, &recipient);
        assert_eq!(vars["test"], "JEE Mock 3");
        assert_eq!(vars["score"], 42);
        assert_eq!(vars["recipient"]["name"], "Asha");
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = serde_json::from_value::<EmailSend>(json!({
            "template": "t", "to": [{"email": "a@example.com"}], "subject": "x"
        }))
        .unwrap_err();
        assert!(err.to_string().contains("unknown field `subject`"), "{err}");
    }
}
