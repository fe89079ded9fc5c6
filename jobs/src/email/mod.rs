//! The email family: the payloads of `email.send` and `email.bulk`, their templates, and the
//! rules for headers and SMTP replies. Sending is the daemon's (src/families/email/).

pub mod headers;
mod payloads;
pub mod templates;

pub use payloads::{Attachment, BulkRecipient, EmailBulk, EmailSend, Mailbox, recipient_vars};
pub use templates::{RenderedEmail, TemplateError, Templates};
