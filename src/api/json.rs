//! Row values as JSON, with types kept exactly:
//!
//! | value | JSON |
//! |---|---|
//! | NULL | `null` |
//! | boolean | `true` / `false` |
//! | 16/32-bit integer (PostgreSQL `int2`/`int4`) | number |
//! | any other integer (64-bit, SQLite `INTEGER`) | string, e.g. `"9223372036854775807"` |
//! | float | number; `"NaN"`, `"Infinity"`, `"-Infinity"` as strings |
//! | exact decimal (`numeric`) | string, e.g. `"12345678901234567890.123456789"` |
//! | timestamp with zone | RFC 3339 in UTC, e.g. `"2026-01-02T09:00:00.5Z"` |
//! | timestamp without zone | ISO 8601 without offset, e.g. `"2026-01-02T09:00:00"` |
//! | date, time | `"2026-01-02"`, `"09:00:00.25"` |
//! | bytes | base64 (standard alphabet, padded) |
//! | JSON | the document itself, number spelling kept |
//! | text, UUID | string |

use base64::Engine as _;
use serde::Serialize;
use serde::ser::SerializeMap;
use serde_json::value::RawValue;

use crate::value::Value;

/// One JSON cell: a plain value, or a JSON document embedded as written.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum JsonCell {
    /// A value built here.
    Plain(serde_json::Value),
    /// A JSON column, embedded verbatim (big numbers keep their digits).
    Raw(Box<RawValue>),
}

/// A row as a JSON object whose keys keep the column order.
#[derive(Debug)]
pub struct JsonRow(pub Vec<(String, JsonCell)>);

impl Serialize for JsonRow {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, cell) in &self.0 {
            map.serialize_entry(key, cell)?;
        }
        map.end()
    }
}

/// Driver type names whose integers fit a JSON number exactly everywhere
/// (at most 32 bits).
const SMALL_INT_TYPES: [&str; 3] = ["INT2", "INT4", "OID"];

/// `value` as JSON, given its column's driver type name (`INT4`, `INT8`,
/// `NUMERIC`, a SQLite declared type...).
pub fn value_json(value: &Value, type_name: &str) -> JsonCell {
    use serde_json::Value as J;
    JsonCell::Plain(match value {
        Value::Null => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Int(i) if SMALL_INT_TYPES.contains(&type_name) => J::from(*i),
        Value::Int(i) => J::String(i.to_string()),
        Value::Float(f) if f.is_nan() => J::String("NaN".into()),
        Value::Float(f) if f.is_infinite() && *f > 0.0 => J::String("Infinity".into()),
        Value::Float(f) if f.is_infinite() => J::String("-Infinity".into()),
        Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
        Value::Numeric(s) | Value::Text(s) => J::String(s.clone()),
        Value::Bytes(b) => J::String(base64::engine::general_purpose::STANDARD.encode(b)),
        Value::Date(d) => J::String(d.format("%Y-%m-%d").to_string()),
        Value::Time(t) => J::String(t.format("%H:%M:%S%.f").to_string()),
        Value::Timestamp(ts) => J::String(ts.format("%Y-%m-%dT%H:%M:%S%.f").to_string()),
        Value::TimestampTz(ts) => {
            J::String(ts.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        }
        Value::Json(text) => {
            return match RawValue::from_string(text.clone()) {
                Ok(raw) => JsonCell::Raw(raw),
                Err(_) => JsonCell::Plain(J::String(text.clone())),
            };
        }
        Value::Uuid(u) => J::String(u.hyphenated().to_string()),
    })
}

#[cfg(test)]
mod tests {
    use chrono::{NaiveDate, TimeZone, Utc};

    use super::*;

    fn text(value: &Value, type_name: &str) -> String {
        serde_json::to_string(&value_json(value, type_name)).unwrap()
    }

    #[test]
    fn types_keep_their_exact_values() {
        assert_eq!(text(&Value::Int(7), "INT4"), "7");
        assert_eq!(
            text(&Value::Int(i64::MAX), "INT8"),
            "\"9223372036854775807\""
        );
        assert_eq!(text(&Value::Int(3), "INTEGER"), "\"3\"");
        assert_eq!(text(&Value::Float(f64::NAN), "FLOAT8"), "\"NaN\"");
        assert_eq!(
            text(&Value::Float(f64::NEG_INFINITY), "FLOAT8"),
            "\"-Infinity\""
        );
        assert_eq!(text(&Value::Float(0.1), "FLOAT8"), "0.1");
        assert_eq!(text(&Value::Numeric("1.50".into()), "NUMERIC"), "\"1.50\"");
        assert_eq!(text(&Value::Bytes(vec![0, 255, 16]), "BYTEA"), "\"AP8Q\"");
        let instant = Utc.with_ymd_and_hms(2026, 1, 2, 9, 0, 0).unwrap()
            + chrono::Duration::microseconds(500_000);
        assert_eq!(
            text(&Value::TimestampTz(instant), "TIMESTAMPTZ"),
            "\"2026-01-02T09:00:00.500Z\""
        );
        let local = NaiveDate::from_ymd_opt(2026, 1, 2)
            .unwrap()
            .and_hms_opt(9, 0, 0)
            .unwrap();
        assert_eq!(
            text(&Value::Timestamp(local), "TIMESTAMP"),
            "\"2026-01-02T09:00:00\""
        );
        assert_eq!(
            text(
                &Value::Json("{\"n\": 12345678901234567890123}".into()),
                "JSONB"
            ),
            "{\"n\": 12345678901234567890123}"
        );
    }
}
