//! Completion webhooks, the pure part: the Standard Webhooks signature (standardwebhooks.com),
//! what a delivery's body is, and which addresses an endpoint may not resolve to.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::hmac;

/// A signing secret, `whsec_` followed by the key in base64 (the spec's form).
#[derive(Clone)]
pub struct Secret(hmac::Key);

/// Why a secret cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("a webhook secret starts with `whsec_` followed by the key in base64")]
    NoPrefix,
    #[error("the webhook secret's key is not base64: {0}")]
    NotBase64(String),
    #[error("the webhook secret's key is {0} bytes; the spec asks for 24 to 64")]
    Length(usize),
}

impl Secret {
    pub fn parse(text: &str) -> Result<Secret, SecretError> {
        let key = text
            .trim()
            .strip_prefix("whsec_")
            .ok_or(SecretError::NoPrefix)?;
        let key = BASE64
            .decode(key)
            .map_err(|e| SecretError::NotBase64(e.to_string()))?;
        if !(24..=64).contains(&key.len()) {
            return Err(SecretError::Length(key.len()));
        }
        Ok(Secret(hmac::Key::new(hmac::HMAC_SHA256, &key)))
    }

    /// The `webhook-signature` header's value: `v1,` and the base64 HMAC-SHA256 of
    /// `<id>.<timestamp>.<body>`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut context = hmac::Context::with_key(&self.0);
        context.update(id.as_bytes());
        context.update(b".");
        context.update(timestamp.to_string().as_bytes());
        context.update(b".");
        context.update(body);
        format!("v1,{}", BASE64.encode(context.sign().as_ref()))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// The event a delivery tells: a job reached a final state.
pub fn event_type(state: &str) -> Option<&'static str> {
    match state {
        "completed" => Some("job.completed"),
        "failed" => Some("job.failed"),
        _ => None,
    }
}

/// A delivery's body, in the spec's recommended shape: `{"type", "timestamp", "data"}`, where
/// `data` is the job as the status view shows it (docs/WEB_TIER.md).
pub fn body(
    event: &str,
    timestamp: chrono::DateTime<chrono::Utc>,
    job: &serde_json::Value,
) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "type": event,
        "timestamp": timestamp.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "data": job,
    }))
    .expect("a JSON value always serializes")
}

/// Why a webhook may not be sent to this address unless its endpoint allows private
/// addresses: anything but a public unicast address reaches the daemon's own host or network
/// (server-side request forgery), not a web tier on the internet.
pub fn refused_address(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => refused_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => refused_v4(v4),
            None => refused_v6(v6),
        },
    }
}

fn refused_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() {
        Some("a loopback address")
    } else if ip.is_private() || (a == 100 && (64..128).contains(&b)) {
        Some("a private address")
    } else if ip.is_link_local() {
        Some("a link-local address")
    } else if ip.is_unspecified() || a == 0 {
        Some("an unspecified address")
    } else if ip.is_multicast() || ip.is_broadcast() || a >= 240 {
        Some("not a unicast address")
    } else {
        None
    }
}

fn refused_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let first = ip.segments()[0];
    if ip.is_loopback() {
        Some("a loopback address")
    } else if ip.is_unspecified() {
        Some("an unspecified address")
    } else if first & 0xfe00 == 0xfc00 {
        Some("a private address")
    } else if first & 0xffc0 == 0xfe80 {
        Some("a link-local address")
    } else if ip.is_multicast() {
        Some("not a unicast address")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_as_the_specs_example() {
        // The example of the Standard Webhooks specification (its reference libraries' tests).
        let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn a_secret_must_have_its_prefix_and_a_sound_key() {
        assert_eq!(
            Secret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap_err(),
            SecretError::NoPrefix
        );
        assert!(matches!(
            Secret::parse("whsec_!!!").unwrap_err(),
            SecretError::NotBase64(_)
        ));
        assert_eq!(
            Secret::parse("whsec_c2hvcnQ=").unwrap_err(),
            SecretError::Length(5)
        );
    }

    #[test]
    fn private_and_local_addresses_are_refused_and_public_ones_not() {
        for refused in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "ff02::1",
        ] {
            assert!(
                refused_address(refused.parse().unwrap()).is_some(),
                "{refused}"
            );
        }
        for allowed in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700::1111",
            "::ffff:1.1.1.1",
        ] {
            assert_eq!(refused_address(allowed.parse().unwrap()), None, "{allowed}");
        }
    }
}
