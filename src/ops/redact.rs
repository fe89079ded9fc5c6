//! Credentials out of what we print: every Redis or Postgres URL that reaches an error, a log
//! line or a command's output goes through [`redacted`] first.

/// Keys whose values are secrets, in a URL's query (`?password=...`, Redis' `?pass=...` for a
/// socket) or a libpq `key=value` string: any key containing one of these, case aside.
const SECRET_KEYS: &[&str] = &[
    "pass",
    "pwd",
    "secret",
    "token",
    "auth",
    "key",
    "credential",
];

/// What a secret is replaced with.
const MASK: &str = "***";

/// `url` fit for a log line: the password of the user info (`postgres://app:***@db/quiz`) and
/// the value of every secret-looking `key=value` (`?password=***`, `sslpassword=***`) masked.
/// Text that is not a URL at all gets the same treatment; when in doubt, more is masked, not less.
pub fn redacted(url: &str) -> String {
    mask_secret_values(&mask_user_password(url))
}

/// `scheme://user:password@host...` with the password masked. The last `@` ends the user info,
/// so a password holding an unescaped `@` is masked whole.
fn mask_user_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    let Some(at) = rest.rfind('@') else {
        return url.to_owned();
    };
    match rest[..at].split_once(':') {
        Some((user, _)) => format!("{}{user}:{MASK}{}", &url[..scheme_end], &rest[at..]),
        // A user name alone is no secret.
        None => url.to_owned(),
    }
}

/// Every `key=value` whose key looks secret, with its value (up to `&`, `;`, `#` or white
/// space) masked.
fn mask_secret_values(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(eq) = rest.find('=') {
        let (before, after) = (&rest[..eq], &rest[eq + 1..]);
        out.push_str(before);
        out.push('=');
        let value_end = after
            .find(|c: char| matches!(c, '&' | ';' | '#') || c.is_whitespace())
            .unwrap_or(after.len());
        if is_secret_key(key_before(before)) {
            out.push_str(MASK);
        } else {
            out.push_str(&after[..value_end]);
        }
        rest = &after[value_end..];
    }
    out.push_str(rest);
    out
}

/// The key that ends `text`: its trailing run of letters, digits, `_`, `-` and `.`.
fn key_before(text: &str) -> &str {
    let start = text
        .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
        .map_or(0, |i| i + 1);
    &text[start..]
}

fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    SECRET_KEYS.iter().any(|secret| key.contains(secret))
}

#[cfg(test)]
mod tests {
    use super::redacted;

    #[test]
    fn the_password_of_the_user_info_is_masked() {
        assert_eq!(
            redacted("redis://:s3cret@127.0.0.1:6379"),
            "redis://:***@127.0.0.1:6379"
        );
        assert_eq!(
            redacted("postgres://app:pa:ss@db/quiz"),
            "postgres://app:***@db/quiz"
        );
        assert_eq!(
            redacted("postgres://app:p@ss@db/quiz"),
            "postgres://app:***@db/quiz"
        );
        assert_eq!(redacted("redis://127.0.0.1"), "redis://127.0.0.1");
        assert_eq!(redacted("postgres://app@db/quiz"), "postgres://app@db/quiz");
    }

    #[test]
    fn secret_query_parameters_are_masked() {
        assert_eq!(
            redacted("postgres://app@db/quiz?password=s3cret&sslmode=require"),
            "postgres://app@db/quiz?password=***&sslmode=require"
        );
        assert_eq!(
            redacted("postgres://db/quiz?sslmode=require&PassWord=s3cret"),
            "postgres://db/quiz?sslmode=require&PassWord=***"
        );
        assert_eq!(
            redacted("redis+unix:///run/redis.sock?db=2&pass=s3cret"),
            "redis+unix:///run/redis.sock?db=2&pass=***"
        );
        assert_eq!(
            redacted("postgres://db/quiz?sslpassword=a&auth_token=b&application_name=x"),
            "postgres://db/quiz?sslpassword=***&auth_token=***&application_name=x"
        );
    }

    #[test]
    fn key_value_strings_and_both_forms_at_once_are_masked() {
        assert_eq!(
            redacted("host=db user=app password=s3cret dbname=quiz"),
            "host=db user=app password=*** dbname=quiz"
        );
        assert_eq!(
            redacted("postgres://app:one@db/quiz?password=two"),
            "postgres://app:***@db/quiz?password=***"
        );
    }
}
