//! An index's schema, as its config defines it: the primary key, the version field, the fields
//! searched and how much each weighs, the short fields matched despite typos, the fields one
//! may filter or sort by, and whether a field outside all these is refused (`strict`). The
//! check of one document against it, and the text each weight gets from a document.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::indexing::version::{Version, VersionType};
use crate::limits::{ECHO_BYTES, shorten};

/// The longest id, in bytes: Meilisearch's limit, kept for both backends so that an index can
/// move from one to the other.
pub const MAX_ID_BYTES: usize = 511;

/// How much a field weighs in the rank, A the most: Postgres' four `setweight` labels, and
/// Meilisearch's order of searchable attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Weight {
    A,
    B,
    C,
    D,
}

impl Weight {
    pub const ALL: [Weight; 4] = [Weight::A, Weight::B, Weight::C, Weight::D];

    fn slot(self) -> usize {
        self as usize
    }
}

/// What a document of an index may hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexSchema {
    pub primary_key: String,
    pub version_field: String,
    pub version_type: VersionType,
    /// The fields searched, with their weight.
    pub searchable: BTreeMap<String, Weight>,
    /// Short fields (titles, names) also matched by trigram similarity, so a typo still finds
    /// them.
    pub typo_fields: Vec<String>,
    pub filterable: Vec<String>,
    pub sortable: Vec<String>,
    /// Fields kept with the document and returned, but neither searched nor filtered.
    pub stored: Vec<String>,
    /// Refuse a document with a field named nowhere above.
    pub strict: bool,
    /// The most bytes of one document as JSON.
    pub max_document_bytes: usize,
}

/// A schema that cannot work; the message names the setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SchemaError(String);

/// A document that passed the check.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedDocument {
    /// Its position in the job (or the source row's number in a rebuild), from 0.
    pub position: usize,
    /// The primary key as text (an integer key is written in decimal).
    pub id: String,
    pub version: Version,
    pub document: Map<String, Value>,
}

/// A deletion that passed the check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedDeletion {
    pub position: usize,
    pub id: String,
    pub version: Version,
}

/// A document (or deletion) refused, and why. Shown as `documents[3] (id `q7`): reason`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BadDocument {
    /// Where it was: `documents`, `deletions` or `source row`.
    #[serde(skip)]
    pub list: &'static str,
    pub position: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub error: String,
}

impl fmt::Display for BadDocument {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[{}]", self.list, self.position)?;
        if let Some(id) = &self.id {
            write!(f, " (id `{}`)", shorten(id, ECHO_BYTES))?;
        }
        write!(f, ": {}", self.error)
    }
}

/// A document's text for each weight, and for typo matching.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WeightedText {
    /// A, B, C, D.
    pub weights: [String; 4],
    pub typo: String,
}

impl IndexSchema {
    /// Checks what no document could mend.
    pub fn check(&self) -> Result<(), SchemaError> {
        let error = |text: String| Err(SchemaError(text));
        if self.primary_key.is_empty() || self.version_field.is_empty() {
            return error("primary_key and version_field must not be empty".into());
        }
        if self.primary_key == self.version_field {
            return error("primary_key and version_field must be two fields".into());
        }
        if self.searchable.is_empty() {
            return error("searchable must name at least one field".into());
        }
        if self.max_document_bytes == 0 {
            return error("max_document_bytes must be at least 1".into());
        }
        Ok(())
    }

    /// Every field a strict index accepts.
    pub fn known_fields(&self) -> BTreeSet<&str> {
        let mut known: BTreeSet<&str> = [self.primary_key.as_str(), self.version_field.as_str()]
            .into_iter()
            .collect();
        known.extend(self.searchable.keys().map(String::as_str));
        for list in [
            &self.typo_fields,
            &self.filterable,
            &self.sortable,
            &self.stored,
        ] {
            known.extend(list.iter().map(String::as_str));
        }
        known
    }

    /// The searchable fields, the weightiest first (Meilisearch ranks by this order).
    pub fn searchable_by_weight(&self) -> Vec<&str> {
        let mut fields: Vec<(&Weight, &String)> =
            self.searchable.iter().map(|(f, w)| (w, f)).collect();
        fields.sort();
        fields.into_iter().map(|(_, f)| f.as_str()).collect()
    }

    /// Checks one document of a job (`list` is where it was, `position` its place there).
    pub fn check_document(
        &self,
        list: &'static str,
        position: usize,
        value: Value,
    ) -> Result<CheckedDocument, BadDocument> {
        let bad = |id: Option<String>, error: String| BadDocument {
            list,
            position,
            id,
            error,
        };
        let bytes = serde_json::to_string(&value).map(|s| s.len()).unwrap_or(0);
        let Value::Object(document) = value else {
            return Err(bad(None, "is not a JSON object".into()));
        };
        let id = match document.get(&self.primary_key) {
            None => {
                return Err(bad(
                    None,
                    format!("has no `{}` (the index's primary key)", self.primary_key),
                ));
            }
            Some(value) => id_of(value).map_err(|e| {
                bad(
                    None,
                    format!("`{}` (the primary key) {e}", self.primary_key),
                )
            })?,
        };
        if bytes > self.max_document_bytes {
            return Err(bad(
                Some(id),
                format!(
                    "is {bytes} bytes, more than the index's max_document_bytes = {}",
                    self.max_document_bytes
                ),
            ));
        }
        let version = match document.get(&self.version_field) {
            None => {
                return Err(bad(
                    Some(id),
                    format!(
                        "has no `{}` (the index's version field)",
                        self.version_field
                    ),
                ));
            }
            Some(value) => self
                .version_type
                .parse(value)
                .map_err(|e| bad(Some(id.clone()), format!("`{}` {e}", self.version_field)))?,
        };
        if self.strict {
            let known = self.known_fields();
            let unknown: Vec<String> = document
                .keys()
                .filter(|k| !known.contains(k.as_str()))
                .take(5)
                .map(|k| format!("`{}`", shorten(k, 60)))
                .collect();
            if !unknown.is_empty() {
                return Err(bad(
                    Some(id),
                    format!(
                        "{} {} not in the index's schema (the index is strict)",
                        if unknown.len() == 1 {
                            "field"
                        } else {
                            "fields"
                        },
                        unknown.join(", ") + if unknown.len() == 1 { " is" } else { " are" }
                    ),
                ));
            }
        }
        Ok(CheckedDocument {
            position,
            id,
            version,
            document,
        })
    }

    /// Checks one deletion: `{"id": ..., "version": ...}`.
    pub fn check_deletion(
        &self,
        position: usize,
        value: &Value,
    ) -> Result<CheckedDeletion, BadDocument> {
        let bad = |id: Option<String>, error: String| BadDocument {
            list: "deletions",
            position,
            id,
            error,
        };
        let Value::Object(deletion) = value else {
            return Err(bad(
                None,
                "is not a JSON object like {\"id\": \"q1\", \"version\": 7}".into(),
            ));
        };
        if let Some(other) = deletion.keys().find(|k| *k != "id" && *k != "version") {
            return Err(bad(
                None,
                format!(
                    "has a field `{}`: a deletion has only `id` and `version`",
                    shorten(other, 60)
                ),
            ));
        }
        let id = match deletion.get("id") {
            None => return Err(bad(None, "has no `id`".into())),
            Some(value) => id_of(value).map_err(|e| bad(None, format!("`id` {e}")))?,
        };
        let version = match deletion.get("version") {
            None => return Err(bad(Some(id), "has no `version`".into())),
            Some(value) => self
                .version_type
                .parse(value)
                .map_err(|e| bad(Some(id.clone()), format!("`version` {e}")))?,
        };
        Ok(CheckedDeletion {
            position,
            id,
            version,
        })
    }

    /// The document's text for each weight and for typo matching: strings as they are,
    /// numbers and booleans written out, arrays and objects by their values, in order.
    pub fn weighted_text(&self, document: &Map<String, Value>) -> WeightedText {
        let mut text = WeightedText::default();
        for (field, weight) in &self.searchable {
            if let Some(value) = document.get(field) {
                push_text(&mut text.weights[weight.slot()], value);
            }
        }
        for field in &self.typo_fields {
            if let Some(value) = document.get(field) {
                push_text(&mut text.typo, value);
            }
        }
        text
    }
}

/// A primary key as text: a string of 1 to 511 bytes of `A-Z a-z 0-9 - _`, or a whole number.
fn id_of(value: &Value) -> Result<String, String> {
    match value {
        Value::String(id) => {
            let fits = !id.is_empty()
                && id.len() <= MAX_ID_BYTES
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if fits {
                Ok(id.clone())
            } else {
                Err(format!(
                    "`{}` is not an id: 1 to {MAX_ID_BYTES} bytes of A-Z a-z 0-9 - and _",
                    shorten(id, 60)
                ))
            }
        }
        Value::Number(n) if n.is_u64() || n.is_i64() => Ok(n.to_string()),
        _ => Err("is not a string or a whole number".into()),
    }
}

fn push_text(out: &mut String, value: &Value) {
    let mut push = |s: &str| {
        if !s.is_empty() {
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(s);
        }
    };
    match value {
        Value::Null => {}
        Value::String(s) => push(s),
        Value::Bool(b) => push(if *b { "true" } else { "false" }),
        Value::Number(n) => push(&n.to_string()),
        Value::Array(items) => items.iter().for_each(|v| push_text(out, v)),
        Value::Object(fields) => fields.values().for_each(|v| push_text(out, v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> IndexSchema {
        IndexSchema {
            primary_key: "id".into(),
            version_field: "version".into(),
            version_type: VersionType::Integer,
            searchable: BTreeMap::from([
                ("title".into(), Weight::A),
                ("text".into(), Weight::B),
                ("options".into(), Weight::C),
            ]),
            typo_fields: vec!["title".into()],
            filterable: vec!["test_id".into()],
            sortable: vec![],
            stored: vec!["url".into()],
            strict: true,
            max_document_bytes: 200,
        }
    }

    fn check(value: Value) -> Result<CheckedDocument, String> {
        schema()
            .check_document("documents", 3, value)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_good_document_is_taken_with_its_id_and_version() {
        let doc = check(json!({"id": "q-1", "version": 4, "title": "Photosynthesis",
                               "test_id": "t1", "url": "/q/1"}))
        .unwrap();
        assert_eq!((doc.id.as_str(), doc.version), ("q-1", Version(4)));
        let doc = check(json!({"id": 17, "version": 0, "title": "x"})).unwrap();
        assert_eq!(doc.id, "17");
    }

    #[test]
    fn each_bad_document_is_named_with_what_is_wrong() {
        for (value, expected) in [
            (json!("text"), "documents[3]: is not a JSON object"),
            (
                json!({"version": 1}),
                "documents[3]: has no `id` (the index's primary key)",
            ),
            (json!({"id": "a b", "version": 1}), "`a b` is not an id"),
            (
                json!({"id": 1.5, "version": 1}),
                "is not a string or a whole number",
            ),
            (
                json!({"id": "q1"}),
                "documents[3] (id `q1`): has no `version` (the index's version field)",
            ),
            (
                json!({"id": "q1", "version": -2}),
                "`version` is not a whole number",
            ),
            (
                json!({"id": "q1", "version": 1, "colour": "red"}),
                "documents[3] (id `q1`): field `colour` is not in the index's schema (the index is strict)",
            ),
            (
                json!({"id": "q1", "version": 1, "a": 1, "b": 2}),
                "fields `a`, `b` are not in the index's schema",
            ),
            (
                json!({"id": "q1", "version": 1, "text": "x".repeat(300)}),
                "documents[3] (id `q1`): is 333 bytes, more than the index's max_document_bytes = 200",
            ),
        ] {
            let err = check(value.clone()).unwrap_err();
            assert!(err.contains(expected), "{value}: {err}");
        }
        let mut lenient = schema();
        lenient.strict = false;
        assert!(
            lenient
                .check_document(
                    "documents",
                    0,
                    json!({"id": "q1", "version": 1, "colour": "red"})
                )
                .is_ok()
        );
    }

    #[test]
    fn deletions_carry_an_id_and_a_version() {
        let s = schema();
        let ok = s
            .check_deletion(0, &json!({"id": "q1", "version": 9}))
            .unwrap();
        assert_eq!((ok.id.as_str(), ok.version), ("q1", Version(9)));
        for (value, expected) in [
            (
                json!({"id": "q1"}),
                "deletions[1] (id `q1`): has no `version`",
            ),
            (json!({"version": 2}), "deletions[1]: has no `id`"),
            (json!("q1"), "is not a JSON object"),
            (
                json!({"id": "q1", "version": 2, "why": "x"}),
                "has a field `why`",
            ),
        ] {
            let err = s.check_deletion(1, &value).unwrap_err().to_string();
            assert!(err.contains(expected), "{value}: {err}");
        }
    }

    #[test]
    fn text_goes_to_its_weight_and_typo_fields_are_kept_apart() {
        let doc = json!({"id": "q1", "version": 1, "title": "प्रकाश संश्लेषण",
                         "text": "What do plants need?", "options": ["light", {"x": "water"}, 3],
                         "test_id": "t1"});
        let Value::Object(doc) = doc else {
            unreachable!()
        };
        let text = schema().weighted_text(&doc);
        assert_eq!(text.weights[0], "प्रकाश संश्लेषण");
        assert_eq!(text.weights[1], "What do plants need?");
        assert_eq!(text.weights[2], "light\nwater\n3");
        assert_eq!(text.weights[3], "");
        assert_eq!(text.typo, "प्रकाश संश्लेषण");
        assert_eq!(
            schema().searchable_by_weight(),
            ["title", "text", "options"]
        );
    }

    #[test]
    fn a_schema_that_cannot_work_is_refused() {
        let mut s = schema();
        s.searchable.clear();
        assert!(s.check().unwrap_err().to_string().contains("searchable"));
        let mut s = schema();
        s.version_field = "id".into();
        assert!(s.check().is_err());
    }
}
