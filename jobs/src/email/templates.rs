//! Email templates: minijinja, one engine for every template of the daemon. The daemon reads a
//! templates directory and hands its files here; rendering does no I/O, so `quizworker email
//! preview` and a web tier's own checks render exactly what a send would.
//!
//! A template `NAME` is a folder `NAME/` holding `subject.txt` and `body.html` and/or
//! `body.txt` (the text is derived from the HTML when absent). A locale variant is a folder
//! `NAME.LOCALE/` (`result-ready.hi/`), complete in itself. Every other file (layouts,
//! partials) is there for `{% extends %}`, `{% include %}` and `{% import %}` by its path.
//! Files ending in `.html` are auto-escaped; an undefined variable is an error, never "".

use std::collections::{BTreeMap, BTreeSet};

use minijinja::{Environment, ErrorKind, UndefinedBehavior};
use serde_json::Value;

const SUBJECT: &str = "subject.txt";
const HTML: &str = "body.html";
const TEXT: &str = "body.txt";
/// The width the text derived from an HTML body is wrapped at (RFC 5322's recommended 78).
const TEXT_WIDTH: usize = 78;

/// Every template of a templates directory, compiled.
pub struct Templates {
    env: Environment<'static>,
    /// Template names (`result-ready`) and, for each, the locales it has a variant of.
    variants: BTreeMap<String, BTreeSet<String>>,
    default_locale: String,
}

/// What one template renders to for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedEmail {
    /// The folder that was rendered: `result-ready` or `result-ready.hi`.
    pub variant: String,
    pub subject: String,
    /// `None` for a template with a text body only.
    pub html: Option<String>,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("template file {file}: {reason}")]
    Syntax { file: String, reason: String },
    #[error("template folder {name}/ has no {SUBJECT}")]
    NoSubject { name: String },
    #[error("template folder {name}/ has neither {HTML} nor {TEXT}")]
    NoBody { name: String },
    #[error(
        "unknown template `{name}` (known: {known})",
        name = crate::limits::shorten(.name, crate::limits::ECHO_BYTES)
    )]
    Unknown { name: String, known: String },
    #[error(
        "`{}` is not a locale (letters, digits and `-`, e.g. `hi` or `pt-BR`)",
        crate::limits::shorten(.0, crate::limits::ECHO_BYTES)
    )]
    BadLocale(String),
    #[error("template {variant}: undefined variables: {}", .names.join(", "))]
    Undefined { variant: String, names: Vec<String> },
    #[error("template {variant}: {reason}")]
    Render { variant: String, reason: String },
}

impl Templates {
    /// Compiles every file (path relative to the templates directory, `/`-separated, and its
    /// text). A syntax error anywhere is an error naming the file: better at start than at the
    /// first send.
    pub fn new(
        files: impl IntoIterator<Item = (String, String)>,
        default_locale: &str,
    ) -> Result<Templates, TemplateError> {
        check_locale(default_locale)?;
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        let mut folders: BTreeMap<String, BTreeSet<&'static str>> = BTreeMap::new();
        for (path, source) in files {
            if let Some((folder, file)) = path.split_once('/')
                && [SUBJECT, HTML, TEXT].contains(&file)
            {
                let file = [SUBJECT, HTML, TEXT]
                    .into_iter()
                    .find(|f| *f == file)
                    .unwrap_or(SUBJECT);
                folders.entry(folder.to_owned()).or_default().insert(file);
            }
            env.add_template_owned(path.clone(), source)
                .map_err(|e| TemplateError::Syntax {
                    file: path,
                    reason: e.to_string(),
                })?;
        }
        let mut variants: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (folder, files) in &folders {
            if !files.contains(SUBJECT) {
                return Err(TemplateError::NoSubject {
                    name: folder.clone(),
                });
            }
            if !files.contains(HTML) && !files.contains(TEXT) {
                return Err(TemplateError::NoBody {
                    name: folder.clone(),
                });
            }
            let (name, locale) = match folder.split_once('.') {
                Some((name, locale)) => (name, locale.to_owned()),
                None => (folder.as_str(), default_locale.to_owned()),
            };
            variants.entry(name.to_owned()).or_default().insert(locale);
        }
        Ok(Templates {
            env,
            variants,
            default_locale: default_locale.to_owned(),
        })
    }

    /// The template names, each with the locales it has.
    pub fn names(&self) -> impl Iterator<Item = (&str, &BTreeSet<String>)> {
        self.variants.iter().map(|(n, l)| (n.as_str(), l))
    }

    /// The folder a template renders from for `locale`: `NAME.hi-IN`, else `NAME.hi`, else the
    /// default locale's `NAME`.
    pub fn variant(&self, name: &str, locale: Option<&str>) -> Result<String, TemplateError> {
        let locales = self
            .variants
            .get(name)
            .ok_or_else(|| TemplateError::Unknown {
                name: name.to_owned(),
                known: self.variants.keys().cloned().collect::<Vec<_>>().join(", "),
            })?;
        if let Some(locale) = locale {
            check_locale(locale)?;
            let mut tag = locale;
            loop {
                if tag != self.default_locale && locales.contains(tag) {
                    return Ok(format!("{name}.{tag}"));
                }
                match tag.rsplit_once('-') {
                    Some((shorter, _)) => tag = shorter,
                    None => break,
                }
            }
        }
        if locales.contains(&self.default_locale) {
            Ok(name.to_owned())
        } else {
            // Only locale variants exist: the first of them rather than nothing.
            let first = locales
                .iter()
                .next()
                .map(String::as_str)
                .unwrap_or_default();
            Ok(format!("{name}.{first}"))
        }
    }

    /// Renders a template for one recipient. An undefined variable fails with every variable
    /// the template needs and `vars` lacks.
    pub fn render(
        &self,
        name: &str,
        locale: Option<&str>,
        vars: &Value,
    ) -> Result<RenderedEmail, TemplateError> {
        let variant = self.variant(name, locale)?;
        let render = |file: &str| -> Result<Option<String>, TemplateError> {
            let path = format!("{variant}/{file}");
            let Ok(template) = self.env.get_template(&path) else {
                return Ok(None);
            };
            template
                .render(minijinja::value::Serde(vars))
                .map(Some)
                .map_err(|e| self.render_error(&variant, vars, e))
        };
        let subject = render(SUBJECT)?.unwrap_or_default();
        let html = render(HTML)?;
        let text = match (render(TEXT)?, &html) {
            (Some(text), _) => text,
            (None, Some(html)) => html_to_text(html),
            (None, None) => String::new(),
        };
        Ok(RenderedEmail {
            variant,
            subject: subject.trim().to_owned(),
            html,
            text,
        })
    }

    fn render_error(&self, variant: &str, vars: &Value, error: minijinja::Error) -> TemplateError {
        if error.kind() == ErrorKind::UndefinedError {
            let names = self.missing_variables(variant, vars);
            if !names.is_empty() {
                return TemplateError::Undefined {
                    variant: variant.to_owned(),
                    names,
                };
            }
        }
        // An undefined variable of a layout or partial, or another error: minijinja's own
        // message names the file and line.
        let mut reason = error.to_string();
        if let Some(detail) = error.detail() {
            reason = format!("{reason}: {detail}");
        }
        TemplateError::Render {
            variant: variant.to_owned(),
            reason,
        }
    }

    /// Variables (dotted: `score.total`) that the variant's own files look up and `vars` lacks.
    /// Asked only once rendering failed on one: a variable tested with `is defined` is listed
    /// by minijinja too, and is not missing.
    fn missing_variables(&self, variant: &str, vars: &Value) -> Vec<String> {
        let mut missing = BTreeSet::new();
        for file in [SUBJECT, HTML, TEXT] {
            if let Ok(template) = self.env.get_template(&format!("{variant}/{file}")) {
                for name in template.undeclared_variables(true) {
                    if !has_path(vars, &name) {
                        missing.insert(name);
                    }
                }
            }
        }
        missing.into_iter().collect()
    }
}

/// Whether `vars` has the dotted path `a.b.c`. A path that reaches a value that is not an
/// object (a list, a string: `a.b` may be a method or an index) counts as present.
fn has_path(vars: &Value, path: &str) -> bool {
    let mut at = vars;
    for part in path.split('.') {
        match at {
            Value::Object(map) => match map.get(part) {
                Some(next) => at = next,
                None => return false,
            },
            _ => return true,
        }
    }
    true
}

/// A locale tag as BCP 47 writes them, loosely: `hi`, `pt-BR`, `zh-Hant-TW`. It becomes part
/// of a template path, so nothing else may pass.
pub fn check_locale(locale: &str) -> Result<(), TemplateError> {
    let ok = !locale.is_empty()
        && locale.len() <= 35
        && locale.split('-').all(|part| {
            !part.is_empty() && part.len() <= 8 && part.bytes().all(|b| b.is_ascii_alphanumeric())
        });
    if ok {
        Ok(())
    } else {
        Err(TemplateError::BadLocale(locale.to_owned()))
    }
}

/// The plain-text part of an HTML-only template: links kept as references, lists and tables
/// laid out, no markup.
pub fn html_to_text(html: &str) -> String {
    html2text::from_read(html.as_bytes(), TEXT_WIDTH).unwrap_or_else(|_| html.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn templates(files: &[(&str, &str)]) -> Templates {
        Templates::new(
            files.iter().map(|(p, s)| (p.to_string(), s.to_string())),
            "en",
        )
        .unwrap()
    }

    fn result_ready() -> Templates {
        templates(&[
            (
                "layouts/base.html",
                "<html><body>{% block body %}{% endblock %}<p>{% include \"partials/footer.html\" %}</p></body></html>",
            ),
            ("partials/footer.html", "{{ institution }}"),
            ("result-ready/subject.txt", "Result of {{ test }}\n"),
            (
                "result-ready/body.html",
                "{% extends \"layouts/base.html\" %}{% block body %}<h1>Dear {{ recipient.name }}</h1><p>Score: {{ score }}</p>{% endblock %}",
            ),
            ("result-ready.hi/subject.txt", "{{ test }} का परिणाम"),
            (
                "result-ready.hi/body.txt",
                "प्रिय {{ recipient.name }}, अंक {{ score }}",
            ),
        ])
    }

    #[test]
    fn html_is_escaped_and_text_derived_from_it() {
        let vars = json!({"test": "Mock <1>", "score": "42 & up", "institution": "ACME",
                          "recipient": {"name": "<script>x</script>"}});
        let email = result_ready().render("result-ready", None, &vars).unwrap();
        assert_eq!(email.subject, "Result of Mock <1>");
        let html = email.html.unwrap();
        assert!(
            html.contains("&lt;script&gt;x&lt;&#x2f;script&gt;"),
            "{html}"
        );
        assert!(html.contains("42 &amp; up"), "{html}");
        assert!(html.contains("<p>ACME</p>"), "{html}");
        assert!(email.text.contains("42 & up"), "{}", email.text);
        assert!(!email.text.contains("<h1>"), "{}", email.text);
    }

    #[test]
    fn a_locale_falls_back_from_region_to_language_to_default() {
        let t = result_ready();
        assert_eq!(
            t.variant("result-ready", Some("hi-IN")).unwrap(),
            "result-ready.hi"
        );
        assert_eq!(
            t.variant("result-ready", Some("ta")).unwrap(),
            "result-ready"
        );
        assert_eq!(
            t.variant("result-ready", Some("en")).unwrap(),
            "result-ready"
        );
        assert_eq!(t.variant("result-ready", None).unwrap(), "result-ready");
        let vars = json!({"test": "JEE", "score": 7, "recipient": {"name": "प्रिया"}});
        let hi = t.render("result-ready", Some("hi"), &vars).unwrap();
        assert_eq!(hi.subject, "JEE का परिणाम");
        assert_eq!(hi.text, "प्रिय प्रिया, अंक 7");
        assert_eq!(hi.html, None);
    }

    #[test]
    fn every_missing_variable_is_named() {
        let err = result_ready()
            .render(
                "result-ready",
                None,
                &json!({"institution": "ACME", "recipient": {}}),
            )
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "template result-ready: undefined variables: recipient.name, score, test"
        );
    }

    #[test]
    fn a_missing_variable_of_a_partial_is_reported_with_its_file() {
        let err = result_ready()
            .render(
                "result-ready",
                None,
                &json!({"test": "t", "score": 1, "recipient": {"name": "a"}}),
            )
            .unwrap_err()
            .to_string();
        assert!(err.contains("partials/footer.html"), "{err}");
    }

    #[test]
    fn optional_variables_tested_with_is_defined_are_not_missing() {
        let t = templates(&[
            ("r/subject.txt", "Hi"),
            (
                "r/body.txt",
                "{% if coupon is defined %}{{ coupon }}{% endif %}{{ name }}",
            ),
        ]);
        assert_eq!(
            t.render("r", None, &json!({"name": "A"})).unwrap().text,
            "A"
        );
    }

    #[test]
    fn bad_names_and_locales_are_refused() {
        let t = result_ready();
        let err = t.render("../etc/passwd", None, &json!({})).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("unknown template `../etc/passwd` (known: result-ready)"),
            "{err}"
        );
        let err = t
            .render("result-ready", Some("hi/../x"), &json!({}))
            .unwrap_err();
        assert!(matches!(err, TemplateError::BadLocale(_)), "{err}");
    }

    #[test]
    fn incomplete_folders_and_syntax_errors_are_named() {
        let err = Templates::new([("a/body.txt".to_string(), "x".to_string())], "en")
            .err()
            .unwrap();
        assert_eq!(err.to_string(), "template folder a/ has no subject.txt");
        let err = Templates::new([("a/subject.txt".to_string(), "{{ x".to_string())], "en")
            .err()
            .unwrap();
        assert!(
            err.to_string().starts_with("template file a/subject.txt:"),
            "{err}"
        );
    }
}
