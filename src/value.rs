//! The one row representation every layer shares.
//!
//! A [`Value`] is what a connector reads from one column of one row and what
//! another connector writes back. Variants are chosen so that no value loses
//! precision on the way: exact decimals are kept as their decimal text
//! (PostgreSQL `NUMERIC` to any precision, including `NaN` and `±Infinity`),
//! 64-bit integers stay integers, instants with a zone are UTC instants and
//! local date-times stay local.
//!
//! Invariants:
//! - `Numeric` always holds a canonical decimal literal (`-12.50`, `0`, `NaN`,
//!   `Infinity`, `-Infinity`); its scale (digits after the point) is kept.
//! - `Json` holds JSON text exactly as read, so number spelling is preserved.
//! - Ordering ([`Value::compare`]) is defined only between values of the same
//!   variant (plus `Int`/`Float`/`Numeric` cross-compare where exact), which is
//!   all a checkpoint needs: positions of one stream always come from one
//!   column type.

use std::cmp::Ordering;
use std::fmt;

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, NaiveTime, Timelike, Utc};
use serde::{Deserialize, Serialize};

/// One column value of one row.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", content = "v", rename_all = "snake_case")]
pub enum Value {
    /// SQL `NULL`.
    Null,
    /// A boolean.
    Bool(bool),
    /// A signed 64-bit integer (`smallint`, `integer`, `bigint`, SQLite `INTEGER`).
    Int(i64),
    /// An IEEE 754 double (`real`, `double precision`, SQLite `REAL`).
    Float(f64),
    /// An exact decimal as canonical text, e.g. `"12.50"`, `"NaN"`.
    Numeric(String),
    /// Unicode text.
    Text(String),
    /// Raw bytes (`bytea`, `BLOB`).
    Bytes(Vec<u8>),
    /// A calendar date without zone.
    Date(NaiveDate),
    /// A time of day without zone.
    Time(NaiveTime),
    /// A date-time without zone (a local wall-clock reading).
    Timestamp(NaiveDateTime),
    /// An instant (a date-time with zone), normalised to UTC.
    TimestampTz(DateTime<Utc>),
    /// JSON document text, kept as read.
    Json(String),
    /// A UUID.
    Uuid(uuid::Uuid),
}

/// Format of a UTC instant written as text (SQLite storage, PostgreSQL input):
/// RFC 3339 with exactly six fractional digits and `Z`, so that text order is
/// time order (needed when a SQLite cursor column holds instants as text).
pub const TIMESTAMPTZ_TEXT_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.6fZ";

/// Format of a local date-time written as text: ISO 8601 without offset and
/// with exactly six fractional digits (text order is time order).
pub const TIMESTAMP_TEXT_FORMAT: &str = "%Y-%m-%d %H:%M:%S%.6f";

impl Value {
    /// True for SQL `NULL`.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// Whether a soft-delete flag with this value marks its row deleted.
    ///
    /// Live (false): NULL, `false`, integer or float 0, numeric `0`/`0.00`,
    /// and text that is empty or (case-insensitively, trimmed) `0`, `f`,
    /// `false`, `n` or `no`. Everything else is set (true): `true`, any
    /// other number, any other text, and any date/time (a `deleted_at`
    /// timestamp), bytes, JSON or UUID.
    pub fn marks_deleted(&self) -> bool {
        match self {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::Int(i) => *i != 0,
            Value::Float(f) => *f != 0.0,
            Value::Numeric(n) => n
                .trim_start_matches(['-', '+'])
                .chars()
                .any(|c| c.is_ascii_digit() && c != '0'),
            Value::Text(t) => {
                let t = t.trim().to_ascii_lowercase();
                !matches!(t.as_str(), "" | "0" | "f" | "false" | "n" | "no")
            }
            _ => true,
        }
    }

    /// Name of the variant, used in error messages (`"numeric"`, `"text"`...).
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Int(_) => "integer",
            Value::Float(_) => "float",
            Value::Numeric(_) => "numeric",
            Value::Text(_) => "text",
            Value::Bytes(_) => "bytes",
            Value::Date(_) => "date",
            Value::Time(_) => "time",
            Value::Timestamp(_) => "timestamp",
            Value::TimestampTz(_) => "timestamptz",
            Value::Json(_) => "json",
            Value::Uuid(_) => "uuid",
        }
    }

    /// The value as PostgreSQL input text (what `'...'::type` accepts), or
    /// `None` for `NULL`.
    ///
    /// Every form round-trips exactly: floats use the shortest representation
    /// that parses back to the same bits, bytes use the `\x` hex form,
    /// instants carry an explicit `+00` offset.
    pub fn to_pg_text(&self) -> Option<String> {
        self.pg_text().map(std::borrow::Cow::into_owned)
    }

    /// [`Value::to_pg_text`] without copying text that is already a string
    /// (text, numeric, JSON): borrowed for those, owned for the others.
    pub fn pg_text(&self) -> Option<std::borrow::Cow<'_, str>> {
        use std::borrow::Cow;
        Some(match self {
            Value::Null => return None,
            Value::Numeric(s) | Value::Text(s) | Value::Json(s) => Cow::Borrowed(s.as_str()),
            other => Cow::Owned(other.owned_pg_text()),
        })
    }

    /// The PostgreSQL text of a value that is not NULL, text, numeric or JSON.
    fn owned_pg_text(&self) -> String {
        match self {
            Value::Null | Value::Numeric(_) | Value::Text(_) | Value::Json(_) => {
                unreachable!("borrowed by pg_text")
            }
            Value::Bool(b) => if *b { "t" } else { "f" }.to_string(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => float_text(*f),
            Value::Bytes(b) => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                let mut out = String::with_capacity(2 + b.len() * 2);
                out.push_str("\\x");
                for byte in b {
                    out.push(HEX[usize::from(byte >> 4)] as char);
                    out.push(HEX[usize::from(byte & 0xf)] as char);
                }
                out
            }
            Value::Date(d) => pg_datetime_text(*d, None, ""),
            Value::Time(t) => {
                let mut out = String::with_capacity(15);
                push_time(&mut out, *t);
                out
            }
            Value::Timestamp(ts) => pg_datetime_text(ts.date(), Some(ts.time()), ""),
            Value::TimestampTz(ts) => {
                let naive = ts.naive_utc();
                pg_datetime_text(naive.date(), Some(naive.time()), "+00")
            }
            Value::Uuid(u) => u.hyphenated().to_string(),
        }
    }

    /// Orders two values of the same logical type; `None` when they are not
    /// comparable (different variants, a NaN, or two different texts, whose
    /// order is the database collation's business).
    ///
    /// `NULL` sorts before everything, as in a keyset position that starts
    /// before the first row. Numerics are compared exactly by their decimal
    /// text (see [`compare_decimal_text`]).
    pub fn compare(&self, other: &Value) -> Option<Ordering> {
        use Value::*;
        match (self, other) {
            (Null, Null) => Some(Ordering::Equal),
            (Null, _) => Some(Ordering::Less),
            (_, Null) => Some(Ordering::Greater),
            (Bool(a), Bool(b)) => Some(a.cmp(b)),
            (Int(a), Int(b)) => Some(a.cmp(b)),
            (Float(a), Float(b)) => a.partial_cmp(b),
            (Int(a), Float(b)) => (*a as f64).partial_cmp(b),
            (Float(a), Int(b)) => a.partial_cmp(&(*b as f64)),
            (Numeric(a), Numeric(b)) => compare_decimal_text(a, b),
            (Int(a), Numeric(b)) => compare_decimal_text(&a.to_string(), b),
            (Numeric(a), Int(b)) => compare_decimal_text(a, &b.to_string()),
            // Text order depends on the database's collation, which only the
            // database knows: equal is certain, anything else is not.
            (Text(a), Text(b)) | (Json(a), Json(b)) => (a == b).then_some(Ordering::Equal),
            (Bytes(a), Bytes(b)) => Some(a.cmp(b)),
            (Date(a), Date(b)) => Some(a.cmp(b)),
            (Time(a), Time(b)) => Some(a.cmp(b)),
            (Timestamp(a), Timestamp(b)) => Some(a.cmp(b)),
            (TimestampTz(a), TimestampTz(b)) => Some(a.cmp(b)),
            (Uuid(a), Uuid(b)) => Some(a.cmp(b)),
            _ => None,
        }
    }
}

/// Compares two keyset positions (tuples of values) lexicographically, as SQL
/// row-value comparison `(a, b) < (c, d)` does. `None` if some pair is not
/// comparable.
pub fn compare_positions(left: &[Value], right: &[Value]) -> Option<Ordering> {
    for (a, b) in left.iter().zip(right) {
        match a.compare(b)? {
            Ordering::Equal => continue,
            other => return Some(other),
        }
    }
    Some(left.len().cmp(&right.len()))
}

/// A date in PostgreSQL's input syntax from its proleptic year and the text
/// after the year: years up to 0 are written with the `BC` suffix, where
/// year 0 is 1 BC (`-4712` -> `4713-01-01 BC`), as PostgreSQL reads them.
/// `n` in decimal, left-padded with zeros to `width` digits.
fn push_padded(out: &mut String, n: u32, width: usize) {
    let mut digits = [b'0'; 10];
    let mut len = 0;
    let mut rest = n;
    loop {
        digits[len] = b'0' + (rest % 10) as u8;
        len += 1;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    for _ in len..width {
        out.push('0');
    }
    for digit in digits[..len].iter().rev() {
        out.push(*digit as char);
    }
}

/// `HH:MM:SS.ffffff` (a leap second as second 60, as chrono spells it).
fn push_time(out: &mut String, time: chrono::NaiveTime) {
    let nanos = time.nanosecond();
    let (leap, nanos) = (nanos >= 1_000_000_000, nanos % 1_000_000_000);
    push_padded(out, time.hour(), 2);
    out.push(':');
    push_padded(out, time.minute(), 2);
    out.push(':');
    push_padded(out, time.second() + u32::from(leap), 2);
    out.push('.');
    push_padded(out, nanos / 1000, 6);
}

/// PostgreSQL's text of a date or date-time: `YYYY-MM-DD[ HH:MM:SS.ffffff]`
/// then `suffix`, with years before 1 written `YYYY-MM-DD ... BC` (year 0
/// is 1 BC). Written by hand: chrono's `format` was the largest cost of a
/// pull (profiled: ~15% of the hub's CPU).
fn pg_datetime_text(date: NaiveDate, time: Option<chrono::NaiveTime>, suffix: &str) -> String {
    let mut out = String::with_capacity(32);
    let year = date.year();
    let shown = if year > 0 { year } else { 1 - year };
    push_padded(&mut out, shown.unsigned_abs(), 4);
    out.push('-');
    push_padded(&mut out, date.month(), 2);
    out.push('-');
    push_padded(&mut out, date.day(), 2);
    if let Some(time) = time {
        out.push(' ');
        push_time(&mut out, time);
    }
    out.push_str(suffix);
    if year <= 0 {
        out.push_str(" BC");
    }
    out
}

/// Text of a float that parses back to the same bits; `NaN`, `Infinity` and
/// `-Infinity` spelled as PostgreSQL accepts them.
fn float_text(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f == f64::INFINITY {
        "Infinity".into()
    } else if f == f64::NEG_INFINITY {
        "-Infinity".into()
    } else {
        // `{:?}` is the shortest round-trip form and keeps `-0.0` and exponents.
        format!("{f:?}")
    }
}

/// Compares two decimal literals (`-12.50`, `3`, `1e5` is not accepted)
/// exactly, without converting to binary floating point. `NaN` sorts above
/// every number (PostgreSQL's rule); `Infinity` above all finite numbers.
/// Returns `None` if either string is not a plain decimal literal.
pub fn compare_decimal_text(a: &str, b: &str) -> Option<Ordering> {
    let pa = parse_decimal(a)?;
    let pb = parse_decimal(b)?;
    Some(pa.cmp(&pb))
}

/// A parsed decimal literal in a form that orders correctly.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum DecimalKey {
    NegInfinity,
    Finite(FiniteDecimal),
    Infinity,
    NaN,
}

/// A finite decimal: sign, integer digits without leading zeros, fraction
/// digits without trailing zeros.
#[derive(PartialEq, Eq)]
struct FiniteDecimal {
    negative: bool,
    int_digits: String,
    frac_digits: String,
}

impl Ord for FiniteDecimal {
    fn cmp(&self, other: &Self) -> Ordering {
        let is_zero = |d: &FiniteDecimal| d.int_digits.is_empty() && d.frac_digits.is_empty();
        let sign = |d: &FiniteDecimal| {
            if is_zero(d) {
                0
            } else if d.negative {
                -1
            } else {
                1
            }
        };
        let (sa, sb) = (sign(self), sign(other));
        if sa != sb {
            return sa.cmp(&sb);
        }
        let magnitude = self
            .int_digits
            .len()
            .cmp(&other.int_digits.len())
            .then_with(|| self.int_digits.cmp(&other.int_digits))
            .then_with(|| self.frac_digits.cmp(&other.frac_digits));
        if sa < 0 {
            magnitude.reverse()
        } else {
            magnitude
        }
    }
}

impl PartialOrd for FiniteDecimal {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

fn parse_decimal(text: &str) -> Option<DecimalKey> {
    match text {
        "NaN" => return Some(DecimalKey::NaN),
        "Infinity" | "+Infinity" => return Some(DecimalKey::Infinity),
        "-Infinity" => return Some(DecimalKey::NegInfinity),
        _ => {}
    }
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (int_part, frac_part) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    if int_part.is_empty() && frac_part.is_empty() {
        return None;
    }
    if !int_part.bytes().all(|b| b.is_ascii_digit())
        || !frac_part.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    Some(DecimalKey::Finite(FiniteDecimal {
        negative,
        int_digits: int_part.trim_start_matches('0').to_string(),
        frac_digits: frac_part.trim_end_matches('0').to_string(),
    }))
}

/// (significant integer digits, fraction digits without trailing zeros) of
/// a plain decimal literal; `None` if it is not one.
pub fn decimal_digits(text: &str) -> Option<(u32, u32)> {
    let unsigned = text.trim_start_matches(['-', '+']);
    let (int_part, frac_part) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    if (int_part.is_empty() && frac_part.is_empty())
        || !int_part.bytes().all(|b| b.is_ascii_digit())
        || !frac_part.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    Some((
        int_part.trim_start_matches('0').len() as u32,
        frac_part.trim_end_matches('0').len() as u32,
    ))
}

/// How a refusal counts a decimal's fraction digits so that the count
/// agrees with the text shown beside it: `it has 9 digits after the point`,
/// or with trailing zeros (which [`decimal_digits`] does not count, since
/// the column needs no room for them) `it has 10 digits after the point (9
/// without its trailing zeros)` for `0.4566666660`. `significant` is
/// [`decimal_digits`]'s fraction count of `text`.
pub fn fraction_digits_text(text: &str, significant: u32) -> String {
    let written = text
        .split_once('.')
        .map_or(0, |(_, fraction)| fraction.len() as u32);
    if written == significant {
        format!("it has {significant} digits after the point")
    } else {
        format!(
            "it has {written} digits after the point ({significant} without its trailing zeros)"
        )
    }
}

impl fmt::Display for Value {
    /// Human-readable form for messages and tables: `NULL`, numbers as
    /// written, text unquoted, bytes as `\x..` hex, instants in RFC 3339.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("NULL"),
            Value::TimestampTz(ts) => write!(f, "{}", ts.format(TIMESTAMPTZ_TEXT_FORMAT)),
            other => f.write_str(&other.to_pg_text().unwrap_or_default()),
        }
    }
}

/// A bounded chunk of rows read from one stream: column names once, then the
/// rows, each with exactly `columns.len()` values.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Batch {
    /// Column names as the source returned them.
    pub columns: Vec<String>,
    /// Rows, each a vector of `columns.len()` values.
    pub rows: Vec<Vec<Value>>,
}

impl Batch {
    /// Position of a column by exact name.
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c == name)
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True if the batch holds no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-written date/time text equals chrono's `format` (the former
    /// implementation) across eras, padding, fractions and a leap second.
    #[test]
    fn fast_datetime_text_matches_chrono_format() {
        fn era(year: i32, rest: String) -> String {
            if year > 0 {
                format!("{year:04}{rest}")
            } else {
                format!("{:04}{rest} BC", 1 - year)
            }
        }
        let dates = [
            (1, 1, 1),
            (2026, 11, 30),
            (99, 2, 3),
            (0, 12, 31),
            (-44, 3, 15),
            (12345, 6, 7),
        ];
        let times = [
            (0, 0, 0, 0),
            (23, 59, 59, 999_999_000),
            (9, 5, 7, 1_000),
            (12, 30, 0, 123_456_789),
        ];
        for (y, m, d) in dates {
            let date = NaiveDate::from_ymd_opt(y, m, d).unwrap();
            assert_eq!(
                Value::Date(date).to_pg_text().unwrap(),
                era(y, date.format("-%m-%d").to_string())
            );
            for (h, mi, s, n) in times {
                let ts = date.and_hms_nano_opt(h, mi, s, n).unwrap();
                assert_eq!(
                    Value::Timestamp(ts).to_pg_text().unwrap(),
                    era(y, ts.format("-%m-%d %H:%M:%S%.6f").to_string())
                );
                let tz = ts.and_utc();
                assert_eq!(
                    Value::TimestampTz(tz).to_pg_text().unwrap(),
                    era(y, tz.format("-%m-%d %H:%M:%S%.6f+00").to_string())
                );
                assert_eq!(
                    Value::Time(ts.time()).to_pg_text().unwrap(),
                    ts.time().format("%H:%M:%S%.6f").to_string()
                );
            }
        }
        let leap = chrono::NaiveTime::from_hms_nano_opt(23, 59, 59, 1_500_000_000).unwrap();
        assert_eq!(
            Value::Time(leap).to_pg_text().unwrap(),
            leap.format("%H:%M:%S%.6f").to_string()
        );
        assert_eq!(
            Value::Bytes(vec![0, 0xab, 0x10, 0xff])
                .to_pg_text()
                .unwrap(),
            "\\x00ab10ff"
        );
    }

    #[test]
    fn soft_delete_flags() {
        let live = [
            Value::Null,
            Value::Bool(false),
            Value::Int(0),
            Value::Float(0.0),
            Value::Numeric("0.00".into()),
            Value::Numeric("-0".into()),
            Value::Text(String::new()),
            Value::Text(" False ".into()),
            Value::Text("n".into()),
            Value::Text("0".into()),
        ];
        for value in &live {
            assert!(!value.marks_deleted(), "{value:?} should be live");
        }
        let deleted = [
            Value::Bool(true),
            Value::Int(1),
            Value::Int(-1),
            Value::Float(0.5),
            Value::Numeric("0.01".into()),
            Value::Text("true".into()),
            Value::Text("Y".into()),
            Value::Text("deleted".into()),
            Value::TimestampTz(chrono::DateTime::UNIX_EPOCH),
        ];
        for value in &deleted {
            assert!(value.marks_deleted(), "{value:?} should mark deleted");
        }
    }

    #[test]
    fn decimal_text_orders_exactly() {
        assert_eq!(compare_decimal_text("12.50", "12.5"), Some(Ordering::Equal));
        assert_eq!(compare_decimal_text("-1", "0.5"), Some(Ordering::Less));
        assert_eq!(compare_decimal_text("-2", "-10"), Some(Ordering::Greater));
        assert_eq!(
            compare_decimal_text("100", "99.999"),
            Some(Ordering::Greater)
        );
        assert_eq!(compare_decimal_text("0.000", "-0"), Some(Ordering::Equal));
        // 38 digits: beyond f64, still exact.
        assert_eq!(
            compare_decimal_text(
                "12345678901234567890123456789012345678",
                "12345678901234567890123456789012345679"
            ),
            Some(Ordering::Less)
        );
        assert_eq!(
            compare_decimal_text("NaN", "Infinity"),
            Some(Ordering::Greater)
        );
        assert_eq!(compare_decimal_text("-Infinity", "-1e3"), None);
    }

    #[test]
    fn pg_text_forms_round_trip() {
        assert_eq!(
            Value::Bytes(vec![0, 255, 16]).to_pg_text().unwrap(),
            "\\x00ff10"
        );
        assert_eq!(Value::Float(0.1).to_pg_text().unwrap(), "0.1");
        assert_eq!(
            Value::Float(f64::NEG_INFINITY).to_pg_text().unwrap(),
            "-Infinity"
        );
        assert_eq!(Value::Bool(false).to_pg_text().unwrap(), "f");
        let ts = DateTime::parse_from_rfc3339("2026-03-29T01:30:00.5+02:00").unwrap();
        assert_eq!(
            Value::TimestampTz(ts.with_timezone(&Utc))
                .to_pg_text()
                .unwrap(),
            "2026-03-28 23:30:00.500000+00"
        );
        assert_eq!(Value::Null.to_pg_text(), None);
        // BC: proleptic year -4712 is 4713 BC.
        let julian_day_zero = NaiveDate::from_ymd_opt(-4712, 1, 1).unwrap();
        assert_eq!(
            Value::Date(julian_day_zero).to_pg_text().unwrap(),
            "4713-01-01 BC"
        );
        assert_eq!(
            Value::Timestamp(julian_day_zero.and_hms_opt(12, 0, 0).unwrap())
                .to_pg_text()
                .unwrap(),
            "4713-01-01 12:00:00.000000 BC"
        );
    }

    #[test]
    fn positions_compare_like_sql_row_values() {
        let a = [Value::Int(5), Value::Int(2)];
        let b = [Value::Int(5), Value::Int(3)];
        let c = [Value::Int(6), Value::Int(1)];
        assert_eq!(compare_positions(&a, &b), Some(Ordering::Less));
        assert_eq!(compare_positions(&c, &b), Some(Ordering::Greater));
        assert_eq!(compare_positions(&a, &a), Some(Ordering::Equal));
        // Different texts: collation-dependent, so not decided here.
        let t1 = [Value::Int(5), Value::Text("B".into())];
        let t2 = [Value::Int(5), Value::Text("a".into())];
        assert_eq!(compare_positions(&t1, &t2), None);
        assert_eq!(compare_positions(&t1, &t1), Some(Ordering::Equal));
        assert_eq!(
            compare_positions(&[Value::Int(1)], &[Value::Text("1".into())]),
            None
        );
    }

    #[test]
    fn checkpoint_positions_serialize_with_their_types() {
        let position = vec![
            Value::TimestampTz(DateTime::from_timestamp(1_700_000_000, 123_000).unwrap()),
            Value::Numeric("12.50".into()),
        ];
        let json = serde_json::to_string(&position).unwrap();
        let back: Vec<Value> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, position);
    }
}
