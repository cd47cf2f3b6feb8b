//! PostgreSQL's binary COPY format, written from [`Value`]s: the body of a
//! `COPY table (columns) FROM STDIN (FORMAT binary)`. Binary input spares
//! the server from parsing text (a `timestamptz` from text costs it about
//! 0.7 µs per value, a `numeric` a few hundred ns) and the hub from
//! formatting it.
//!
//! Source: PostgreSQL manual, "COPY", section "Binary Format" (header
//! `PGCOPY\n\377\r\n\0`, flags and extension length; per tuple an `i16`
//! field count and per field an `i32` length, -1 for NULL, then the
//! type's `send` representation; trailer `i16` -1), and the types' send
//! functions: `int2send`/`int4send`/`int8send` (big-endian integers),
//! `float8send` (IEEE 754 big-endian), `boolsend` (one byte), `textsend`
//! (the bytes), `date_send` (`i32` days since 2000-01-01),
//! `timestamp_send`/`timestamptz_send` (`i64` microseconds since
//! 2000-01-01 00:00:00, UTC for `timestamptz`), `uuid_send` (16 bytes) and
//! `numeric_send` (`ndigits i16, weight i16, sign u16, dscale u16`, then
//! `ndigits` base-10,000 digits as `i16`; the inverse of
//! `postgres::decode_numeric`).
//!
//! A batch is encoded only when every column's target type is one of those
//! and every value of the column is of the matching [`Value`] variant (or
//! NULL); otherwise [`encode`] answers `None` and the caller sends COPY's
//! text format, which the server casts as before. The values stored are the
//! same either way: instants carry microseconds in both, and a decimal
//! keeps its digits and scale.

use chrono::{NaiveDate, NaiveDateTime};

use crate::value::Value;

/// How one column is encoded, from the target's cast type
/// (`pg_catalog.int8`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Encoder {
    Int2,
    Int4,
    Int8,
    Float8,
    Bool,
    Text,
    Numeric,
    Date,
    Timestamp,
    TimestampTz,
    Uuid,
}

impl Encoder {
    /// The encoder of a target column of cast type `cast_type`
    /// (`format('%I.%I')` of schema and type name, so a name that is also
    /// a keyword is quoted: `pg_catalog."numeric"`), if binary COPY is
    /// supported for it.
    fn of(cast_type: &str) -> Option<Encoder> {
        let name = cast_type.strip_prefix("pg_catalog.")?;
        let name = name
            .strip_prefix('"')
            .and_then(|n| n.strip_suffix('"'))
            .unwrap_or(name);
        Some(match name {
            "int2" => Encoder::Int2,
            "int4" => Encoder::Int4,
            "int8" => Encoder::Int8,
            "float8" => Encoder::Float8,
            "bool" => Encoder::Bool,
            "text" | "varchar" | "bpchar" => Encoder::Text,
            "numeric" => Encoder::Numeric,
            "date" => Encoder::Date,
            "timestamp" => Encoder::Timestamp,
            "timestamptz" => Encoder::TimestampTz,
            "uuid" => Encoder::Uuid,
            _ => return None,
        })
    }

    /// Appends `value`'s send representation (without its length word) to
    /// `out`; `false` when this value cannot be sent so (another variant,
    /// an integer out of the column's range, a text with a NUL byte, a
    /// decimal that is not plain digits).
    fn write(self, value: &Value, out: &mut Vec<u8>) -> bool {
        match (self, value) {
            (Encoder::Int2, Value::Int(i)) => match i16::try_from(*i) {
                Ok(v) => out.extend_from_slice(&v.to_be_bytes()),
                Err(_) => return false,
            },
            (Encoder::Int4, Value::Int(i)) => match i32::try_from(*i) {
                Ok(v) => out.extend_from_slice(&v.to_be_bytes()),
                Err(_) => return false,
            },
            (Encoder::Int8, Value::Int(i)) => out.extend_from_slice(&i.to_be_bytes()),
            (Encoder::Float8, Value::Float(f)) => out.extend_from_slice(&f.to_be_bytes()),
            (Encoder::Bool, Value::Bool(b)) => out.push(u8::from(*b)),
            (Encoder::Text, Value::Text(t)) if !t.contains('\0') => {
                out.extend_from_slice(t.as_bytes())
            }
            (Encoder::Numeric, Value::Numeric(text)) => return write_numeric(text, out),
            (Encoder::Numeric, Value::Int(i)) => return write_numeric(&i.to_string(), out),
            (Encoder::Date, Value::Date(d)) => {
                let days = d.signed_duration_since(pg_epoch_date()).num_days();
                match i32::try_from(days) {
                    Ok(v) => out.extend_from_slice(&v.to_be_bytes()),
                    Err(_) => return false,
                }
            }
            (Encoder::Timestamp, Value::Timestamp(t)) => match micros_since_epoch(t) {
                Some(v) => out.extend_from_slice(&v.to_be_bytes()),
                None => return false,
            },
            (Encoder::TimestampTz, Value::TimestampTz(t)) => {
                match micros_since_epoch(&t.naive_utc()) {
                    Some(v) => out.extend_from_slice(&v.to_be_bytes()),
                    None => return false,
                }
            }
            (Encoder::Uuid, Value::Uuid(u)) => out.extend_from_slice(u.as_bytes()),
            _ => return false,
        }
        true
    }
}

/// 2000-01-01, PostgreSQL's epoch for dates and timestamps.
fn pg_epoch_date() -> NaiveDate {
    NaiveDate::from_ymd_opt(2000, 1, 1).expect("a valid date")
}

/// Microseconds from 2000-01-01 00:00:00 to `t`, sub-microsecond digits
/// dropped (as the text form's six fraction digits drop them).
fn micros_since_epoch(t: &NaiveDateTime) -> Option<i64> {
    let epoch = pg_epoch_date().and_hms_opt(0, 0, 0)?;
    let seconds = t.signed_duration_since(epoch).num_seconds();
    let seconds = if t.and_utc().timestamp_subsec_nanos() > 0 && *t < epoch {
        // `num_seconds` rounds toward zero; the fraction below is added
        // as a positive part, so count whole seconds down.
        seconds - 1
    } else {
        seconds
    };
    let micros = i64::from(t.and_utc().timestamp_subsec_micros());
    seconds.checked_mul(1_000_000)?.checked_add(micros)
}

/// Appends the send form of the plain decimal `text` (`-?digits[.digits]`)
/// to `out`; `false` for anything else (`NaN`, `Infinity`, exponents).
fn write_numeric(text: &str, out: &mut Vec<u8>) -> bool {
    let (negative, body) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (int_part, frac_part) = body.split_once('.').unwrap_or((body, ""));
    if int_part.is_empty()
        || !int_part.bytes().all(|b| b.is_ascii_digit())
        || !frac_part.bytes().all(|b| b.is_ascii_digit())
        || (body.contains('.') && frac_part.is_empty())
    {
        return false;
    }
    let Ok(dscale) = u16::try_from(frac_part.len()) else {
        return false;
    };
    // Base-10,000 digits: the integer part grouped from the right, the
    // fraction from the left, padded with zeros to whole groups.
    let int_part = int_part.trim_start_matches('0');
    let lead = (4 - int_part.len() % 4) % 4;
    let mut digits: Vec<u16> = Vec::with_capacity((int_part.len() + frac_part.len()) / 4 + 2);
    let mut group = |chunk: &[u8]| {
        let mut d = 0u16;
        for b in chunk {
            d = d * 10 + u16::from(b - b'0');
        }
        digits.push(d);
    };
    let padded_int: Vec<u8> = std::iter::repeat_n(b'0', lead)
        .chain(int_part.bytes())
        .collect();
    padded_int.chunks(4).for_each(&mut group);
    let int_groups = padded_int.len() / 4;
    let frac_pad = (4 - frac_part.len() % 4) % 4;
    let padded_frac: Vec<u8> = frac_part
        .bytes()
        .chain(std::iter::repeat_n(b'0', frac_pad))
        .collect();
    padded_frac.chunks(4).for_each(&mut group);
    let mut weight = int_groups as i64 - 1;
    // Leading zero groups move the weight; trailing ones are dropped.
    let first = digits.iter().position(|d| *d != 0);
    let Some(first) = first else {
        // Zero: no digits, sign positive, the scale kept.
        out.extend_from_slice(&0u16.to_be_bytes());
        out.extend_from_slice(&0i16.to_be_bytes());
        out.extend_from_slice(&0u16.to_be_bytes());
        out.extend_from_slice(&dscale.to_be_bytes());
        return true;
    };
    weight -= first as i64;
    let last = digits.iter().rposition(|d| *d != 0).unwrap_or(first);
    let digits = &digits[first..=last];
    let (Ok(ndigits), Ok(weight)) = (u16::try_from(digits.len()), i16::try_from(weight)) else {
        return false;
    };
    out.extend_from_slice(&ndigits.to_be_bytes());
    out.extend_from_slice(&weight.to_be_bytes());
    out.extend_from_slice(&(if negative { 0x4000u16 } else { 0 }).to_be_bytes());
    out.extend_from_slice(&dscale.to_be_bytes());
    for d in digits {
        out.extend_from_slice(&d.to_be_bytes());
    }
    true
}

/// `rows` as a binary COPY body for target columns of cast types
/// `column_types` (one per value of a row), or `None` when a column's type
/// or one of its values has no binary encoding here (see the module docs).
pub(super) fn encode(column_types: &[String], rows: &[Vec<Value>]) -> Option<Vec<u8>> {
    let encoders: Vec<Encoder> = column_types
        .iter()
        .map(|t| Encoder::of(t))
        .collect::<Option<_>>()?;
    let fields = i16::try_from(encoders.len()).ok()?;
    let mut out = Vec::with_capacity(19 + rows.len() * (2 + encoders.len() * 12));
    out.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    out.extend_from_slice(&0i32.to_be_bytes()); // flags: no OIDs
    out.extend_from_slice(&0i32.to_be_bytes()); // no header extension
    for row in rows {
        if row.len() != encoders.len() {
            return None;
        }
        out.extend_from_slice(&fields.to_be_bytes());
        for (value, encoder) in row.iter().zip(&encoders) {
            if value.is_null() {
                out.extend_from_slice(&(-1i32).to_be_bytes());
                continue;
            }
            let at = out.len();
            out.extend_from_slice(&0i32.to_be_bytes());
            if !encoder.write(value, &mut out) {
                return None;
            }
            let length = i32::try_from(out.len() - at - 4).ok()?;
            out[at..at + 4].copy_from_slice(&length.to_be_bytes());
        }
    }
    out.extend_from_slice(&(-1i16).to_be_bytes());
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connector::postgres::decode_numeric;

    fn numeric(text: &str) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        write_numeric(text, &mut out).then_some(out)
    }

    #[test]
    fn numerics_are_encoded_as_numeric_send_writes_them() {
        // 12.50: one digit group 12 at weight 0, then 5000; dscale 2.
        assert_eq!(
            numeric("12.50").unwrap(),
            [0, 2, 0, 0, 0, 0, 0, 2, 0, 12, 0x13, 0x88]
        );
        // -0.05: digit 500 at weight -1 (0.0500), negative, dscale 2.
        assert_eq!(
            numeric("-0.05").unwrap(),
            [0, 1, 0xff, 0xff, 0x40, 0, 0, 2, 0x01, 0xf4]
        );
        // 10000: one digit 1 at weight 1, trailing zero group dropped.
        assert_eq!(numeric("10000").unwrap(), [0, 1, 0, 1, 0, 0, 0, 0, 0, 1]);
        // 0.000: no digits, scale 3.
        assert_eq!(numeric("0.000").unwrap(), [0, 0, 0, 0, 0, 0, 0, 3]);
        for refused in [
            "NaN", "Infinity", "1e5", "", "-", "1.", ".5", "1.2.3", "12a",
        ] {
            assert!(numeric(refused).is_none(), "{refused}");
        }
    }

    #[test]
    fn numerics_come_back_the_same_through_decode() {
        for text in [
            "0",
            "1",
            "-1",
            "12.50",
            "99999999999.99",
            "0.0001",
            "-123456789012345678901234567890.1234567890",
            "100000000",
            "0.00",
            "1234.5",
        ] {
            let bytes = numeric(text).unwrap();
            assert_eq!(decode_numeric(&bytes).unwrap(), text, "{text}");
        }
        // Leading zeros of the integer part are not kept.
        assert_eq!(decode_numeric(&numeric("007.10").unwrap()).unwrap(), "7.10");
    }

    #[test]
    fn timestamps_count_microseconds_from_2000() {
        let t = |s: &str| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f").unwrap();
        assert_eq!(micros_since_epoch(&t("2000-01-01 00:00:00")), Some(0));
        assert_eq!(
            micros_since_epoch(&t("2000-01-01 00:00:01.5")),
            Some(1_500_000)
        );
        // Half a second before the epoch: -0.5 s, not -1.5 s or +0.5 s.
        assert_eq!(
            micros_since_epoch(&t("1999-12-31 23:59:59.5")),
            Some(-500_000)
        );
        // 2026-01-01 is 9,497 days after 2000-01-01.
        assert_eq!(
            micros_since_epoch(&t("2026-01-01 00:00:00.000001")),
            Some(9_497 * 86_400 * 1_000_000 + 1)
        );
        // Nanoseconds are dropped, as the six-digit text form drops them.
        assert_eq!(
            micros_since_epoch(&t("2000-01-01 00:00:00.0000019")),
            Some(1)
        );
    }

    #[test]
    fn a_batch_is_encoded_only_when_every_value_fits_its_column() {
        // As the describe spells them: a keyword type name is quoted.
        assert_eq!(
            Encoder::of("pg_catalog.\"numeric\""),
            Some(Encoder::Numeric)
        );
        assert_eq!(
            Encoder::of("pg_catalog.timestamptz"),
            Some(Encoder::TimestampTz)
        );
        // A type of another schema (a domain, an enum) is not ours to encode.
        assert_eq!(Encoder::of("public.int8"), None);
        let types = vec!["pg_catalog.int4".to_string(), "pg_catalog.text".to_string()];
        let rows = vec![
            vec![Value::Int(7), Value::Text("a\tb".into())],
            vec![Value::Null, Value::Null],
        ];
        let body = encode(&types, &rows).unwrap();
        let mut expected = b"PGCOPY\n\xff\r\n\0".to_vec();
        expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
        expected.extend_from_slice(&[0, 2, 0, 0, 0, 4, 0, 0, 0, 7, 0, 0, 0, 3, b'a', b'\t', b'b']);
        expected.extend_from_slice(&[0, 2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
        expected.extend_from_slice(&[0xff, 0xff]);
        assert_eq!(body, expected);
        // An integer beyond int4, a text into an int column, a NUL byte, a
        // type without an encoder: the text format is used instead.
        assert!(encode(&types, &[vec![Value::Int(1 << 40), Value::Null]]).is_none());
        assert!(encode(&types, &[vec![Value::Text("7".into()), Value::Null]]).is_none());
        assert!(encode(&types, &[vec![Value::Null, Value::Text("a\0".into())]]).is_none());
        assert!(encode(&["pg_catalog.jsonb".to_string()], &[vec![Value::Null]]).is_none());
    }
}
