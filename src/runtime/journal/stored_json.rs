//! A JSON document as the journal stores it (a job's payload, its result), read without being
//! parsed into a tree. The `json` column keeps whatever text a producer sent, and Postgres
//! accepts documents that serde_json will not build into a `Value`: nested deeper than its
//! recursion limit (128), or holding a lone UTF-16 surrogate (`"\ud800"`). Reading a row must
//! never fail on them, or one such job would stop `jobs list` for everyone.

use std::fmt;

use serde::{Serialize, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;
use sqlx::postgres::{PgTypeInfo, PgValueRef, Postgres};
use sqlx::types::Json;

/// The document's text exactly as stored; it is JSON by its grammar, since Postgres checked it.
#[derive(Debug, Clone)]
pub struct StoredJson(Box<RawValue>);

impl StoredJson {
    /// The stored text, for code that hands the document on (a re-pushed envelope).
    pub fn raw(&self) -> &RawValue {
        &self.0
    }

    /// The document as a tree, or why serde_json cannot build one.
    pub fn value(&self) -> Result<Value, serde_json::Error> {
        serde_json::from_str(self.0.get())
    }
}

/// As JSON when serde_json can read it, else as a string holding the stored text: output for
/// scripts stays parseable by any JSON reader, whatever a producer stored.
impl Serialize for StoredJson {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.value() {
            Ok(value) => value.serialize(serializer),
            Err(_) => serializer.serialize_str(self.0.get()),
        }
    }
}

/// On one line, as compact JSON when serde_json can read it, else as the stored text.
impl fmt::Display for StoredJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.value() {
            Ok(value) => write!(f, "{value}"),
            Err(_) => f.write_str(self.0.get()),
        }
    }
}

impl sqlx::Type<Postgres> for StoredJson {
    fn type_info() -> PgTypeInfo {
        <Json<Box<RawValue>> as sqlx::Type<Postgres>>::type_info()
    }

    fn compatible(ty: &PgTypeInfo) -> bool {
        <Json<Box<RawValue>> as sqlx::Type<Postgres>>::compatible(ty)
    }
}

impl<'r> sqlx::Decode<'r, Postgres> for StoredJson {
    fn decode(value: PgValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        // serde_json checks a raw value's grammar without building it: no depth limit, and a
        // `\u` escape is not decoded, so a lone surrogate passes.
        let Json(raw) = <Json<Box<RawValue>> as sqlx::Decode<'r, Postgres>>::decode(value)?;
        Ok(StoredJson(raw))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(text: &str) -> StoredJson {
        StoredJson(RawValue::from_string(text.to_owned()).expect("JSON grammar"))
    }

    #[test]
    fn a_readable_document_shows_as_json() {
        let doc = stored("{ \"ms\" : 5 }");
        assert_eq!(doc.to_string(), r#"{"ms":5}"#);
        assert_eq!(serde_json::to_string(&doc).unwrap(), r#"{"ms":5}"#);
    }

    #[test]
    fn what_serde_json_cannot_build_shows_as_its_text() {
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let lone = r#"{"a":"\ud800"}"#;
        for text in [deep.as_str(), lone] {
            let doc = stored(text);
            assert!(doc.value().is_err(), "{text}");
            assert_eq!(doc.to_string(), text);
            let out = serde_json::to_string(&doc).unwrap();
            assert_eq!(serde_json::from_str::<String>(&out).unwrap(), text);
        }
    }
}
