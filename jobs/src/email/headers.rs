//! What goes into a message's headers, checked: no value may carry a line break (a CR or LF in
//! a subject or a display name would let a variable add headers of its own), and the
//! `Message-ID` of a message is derived from its job and recipient, so a retry sends the same
//! id and a mailbox that got the first copy can tell the second is one.

/// A header value with a line break in it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the {field} has a line break (CR or LF): refused, a header value is one line")]
pub struct LineBreakInHeader {
    pub field: String,
}

/// Refuses a header value holding CR or LF; `field` names it in the error (`subject`,
/// `display name of to[0]`).
pub fn one_line(field: &str, value: &str) -> Result<(), LineBreakInHeader> {
    if value.contains(['\r', '\n']) {
        Err(LineBreakInHeader {
            field: field.to_owned(),
        })
    } else {
        Ok(())
    }
}

/// `<JOB.RECIPIENT@DOMAIN>`: the same for every attempt of a job's message to one recipient.
pub fn message_id(job_id: &str, recipient: u32, domain: &str) -> String {
    format!("<{job_id}.{recipient}@{domain}>")
}

/// How to treat an SMTP server's answer to a message that was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 5xx: this message to this recipient will never be accepted. `hard_bounce` when the
    /// reply says the mailbox does not exist: the address goes on the suppression list.
    Permanent { hard_bounce: bool },
    /// 421 or 454 (and 451 4.7.x "rate"), the server asking to slow down: wait, then try again
    /// within the same attempt.
    Throttled,
    /// Any other 4xx: try again later.
    Transient,
}

/// Classifies a refusal by its reply code and text (`550 5.1.1 <a@b>: user unknown`).
pub fn classify_reply(code: u16, text: &str) -> Refusal {
    let enhanced = enhanced_status(text);
    match code {
        500..=599 => {
            // X.1.x is "addressing status": the mailbox is unknown, moved, or not valid. A
            // server without enhanced codes says 550/551/553 for those; 552 is a full mailbox
            // and 554 often a policy block, neither worth suppressing the address for.
            let hard_bounce = match enhanced {
                Some((5, 1, _)) => true,
                Some(_) => false,
                None => matches!(code, 550 | 551 | 553),
            };
            Refusal::Permanent { hard_bounce }
        }
        421 | 454 => Refusal::Throttled,
        450..=452 if matches!(enhanced, Some((4, 7, _))) && mentions_rate(text) => {
            Refusal::Throttled
        }
        _ => Refusal::Transient,
    }
}

/// The enhanced status code (RFC 3463) at the start of a reply's text, e.g. `5.1.1`.
fn enhanced_status(text: &str) -> Option<(u8, u16, u16)> {
    let word = text.split_whitespace().next()?;
    let mut parts = word.split('.');
    let class = parts.next()?.parse().ok()?;
    let subject = parts.next()?.parse().ok()?;
    let detail = parts
        .next()?
        .trim_end_matches([',', ':', ';'])
        .parse()
        .ok()?;
    (parts.next().is_none() && matches!(class, 2 | 4 | 5)).then_some((class, subject, detail))
}

fn mentions_rate(text: &str) -> bool {
    let text = text.to_ascii_lowercase();
    ["rate", "throttl", "too many", "slow down"]
        .iter()
        .any(|w| text.contains(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_breaks_are_refused_and_named() {
        assert!(one_line("subject", "Result: 42/60 ✓").is_ok());
        let err = one_line("subject", "Hi\r\nBcc: victim@example.com").unwrap_err();
        assert_eq!(
            err.to_string(),
            "the subject has a line break (CR or LF): refused, a header value is one line"
        );
        assert!(one_line("display name of to[0]", "A\nB").is_err());
    }

    #[test]
    fn replies_are_classified() {
        use Refusal::*;
        let cases = [
            (
                550,
                "5.1.1 <a@b>: Recipient address rejected: User unknown",
                Permanent { hard_bounce: true },
            ),
            (
                550,
                "5.7.1 Message rejected as spam",
                Permanent { hard_bounce: false },
            ),
            (550, "Mailbox unavailable", Permanent { hard_bounce: true }),
            (552, "Mailbox full", Permanent { hard_bounce: false }),
            (554, "Transaction failed", Permanent { hard_bounce: false }),
            (
                454,
                "Throttling failure: Maximum sending rate exceeded",
                Throttled,
            ),
            (421, "4.7.0 Try again later, closing connection", Throttled),
            (451, "4.7.1 Rate limit exceeded, slow down", Throttled),
            (451, "4.3.0 Temporary local problem", Transient),
            (450, "4.2.1 Mailbox busy", Transient),
        ];
        for (code, text, expected) in cases {
            assert_eq!(classify_reply(code, text), expected, "{code} {text}");
        }
    }

    #[test]
    fn message_ids_are_stable() {
        assert_eq!(
            message_id("01JQ0000000000000000000000", 7, "mail.example.com"),
            "<01JQ0000000000000000000000.7@mail.example.com>"
        );
    }
}
