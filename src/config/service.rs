//! `[[service]]`: data services, named SQL operations with typed parameters.
//!
//! A service runs `on` the master or on sites; each operation has one SQL
//! text whose `:name` placeholders are its declared parameters (and, on
//! sites, `:site.id` / `:site.<tag>`). Every placeholder is bound, never
//! spliced. Validation checks at load time that every placeholder is
//! declared, every declared parameter is used, defaults have their type, and
//! every site has every tag a site operation uses.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde::Deserialize;

use super::Site;
use crate::dialect::Dialect;
use crate::dialect::params::{NamedParam, bind_named_placeholders};
use crate::value::Value;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawService {
    name: String,
    on: String,
    #[serde(default)]
    operation: Vec<RawOperation>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOperation {
    name: String,
    sql: String,
    #[serde(default)]
    params: Vec<RawParam>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawParam {
    name: String,
    #[serde(rename = "type")]
    param_type: String,
    #[serde(default)]
    required: bool,
    default: Option<toml::Value>,
}

/// Where a service's operations run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceTarget {
    /// The master database.
    Master,
    /// One or more sites, chosen per call.
    Site,
}

impl ServiceTarget {
    /// `master` or `site`.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceTarget::Master => "master",
            ServiceTarget::Site => "site",
        }
    }
}

/// A declared data service.
#[derive(Clone, Debug)]
pub struct Service {
    /// Unique service name.
    pub name: String,
    /// Master or sites.
    pub on: ServiceTarget,
    /// Its operations, in config order.
    pub operations: Vec<Operation>,
}

impl Service {
    /// The operation named `name`.
    pub fn operation(&self, name: &str) -> Option<&Operation> {
        self.operations.iter().find(|o| o.name == name)
    }
}

/// One named SQL operation.
#[derive(Clone, Debug)]
pub struct Operation {
    /// Unique within the service.
    pub name: String,
    /// The SQL as written, with `:name` placeholders.
    pub sql: String,
    /// Declared parameters, in config order.
    pub params: Vec<Param>,
}

/// A typed operation parameter.
#[derive(Clone, Debug)]
pub struct Param {
    /// Name, as used in `:name`.
    pub name: String,
    /// Type the caller's value is parsed as (and bound as).
    pub param_type: ParamType,
    /// A call without it is refused.
    pub required: bool,
    /// Used when the call omits it and it is not required; `None` binds NULL.
    pub default: Option<Value>,
}

/// Types a parameter may have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamType {
    /// Unicode text.
    Text,
    /// A signed 64-bit integer.
    Int,
    /// A double (`NaN`, `Infinity`, `-Infinity` accepted as strings).
    Float,
    /// An exact decimal, e.g. `"12.50"` (kept as text, never rounded).
    Numeric,
    /// `true` / `false`.
    Bool,
    /// `YYYY-MM-DD`.
    Date,
    /// A local date-time, ISO 8601 without offset.
    Timestamp,
    /// An instant, RFC 3339 with offset.
    Timestamptz,
    /// Any JSON document.
    Json,
    /// A UUID.
    Uuid,
}

impl ParamType {
    /// Every type name, for messages.
    pub const NAMES: &'static str =
        "text, int, float, numeric, bool, date, timestamp, timestamptz, json, uuid";

    /// Parses a type name from the config.
    pub fn parse_name(name: &str) -> Option<ParamType> {
        Some(match name {
            "text" => ParamType::Text,
            "int" | "integer" | "bigint" => ParamType::Int,
            "float" | "double" => ParamType::Float,
            "numeric" | "decimal" => ParamType::Numeric,
            "bool" | "boolean" => ParamType::Bool,
            "date" => ParamType::Date,
            "timestamp" => ParamType::Timestamp,
            "timestamptz" => ParamType::Timestamptz,
            "json" => ParamType::Json,
            "uuid" => ParamType::Uuid,
            _ => return None,
        })
    }

    /// The type's config name.
    pub fn as_str(self) -> &'static str {
        match self {
            ParamType::Text => "text",
            ParamType::Int => "int",
            ParamType::Float => "float",
            ParamType::Numeric => "numeric",
            ParamType::Bool => "bool",
            ParamType::Date => "date",
            ParamType::Timestamp => "timestamp",
            ParamType::Timestamptz => "timestamptz",
            ParamType::Json => "json",
            ParamType::Uuid => "uuid",
        }
    }

    /// A value of this type, used to pick the bind cast before the real
    /// value is known.
    pub fn sample(self) -> Value {
        match self {
            ParamType::Text => Value::Text(String::new()),
            ParamType::Int => Value::Int(0),
            ParamType::Float => Value::Float(0.0),
            ParamType::Numeric => Value::Numeric("0".into()),
            ParamType::Bool => Value::Bool(false),
            ParamType::Date => Value::Date(NaiveDate::default()),
            ParamType::Timestamp => Value::Timestamp(NaiveDateTime::default()),
            ParamType::Timestamptz => Value::TimestampTz(DateTime::<Utc>::default()),
            ParamType::Json => Value::Json("null".into()),
            ParamType::Uuid => Value::Uuid(uuid::Uuid::nil()),
        }
    }

    /// Parses a value given as text (the CLI's `--param k=v`, or a JSON
    /// string). Errors say what was expected, e.g. "expected an integer".
    pub fn parse_text(self, text: &str) -> Result<Value, String> {
        let trimmed = text.trim();
        match self {
            ParamType::Text => Ok(Value::Text(text.to_string())),
            ParamType::Int => trimmed
                .parse::<i64>()
                .map(Value::Int)
                .map_err(|_| format!("expected a 64-bit integer, got `{text}`")),
            ParamType::Float => match trimmed {
                "NaN" => Ok(Value::Float(f64::NAN)),
                "Infinity" => Ok(Value::Float(f64::INFINITY)),
                "-Infinity" => Ok(Value::Float(f64::NEG_INFINITY)),
                _ => trimmed
                    .parse::<f64>()
                    .ok()
                    .filter(|f| f.is_finite())
                    .map(Value::Float)
                    .ok_or_else(|| format!("expected a number, got `{text}`")),
            },
            ParamType::Numeric => {
                if is_decimal_literal(trimmed)
                    || matches!(trimmed, "NaN" | "Infinity" | "-Infinity")
                {
                    Ok(Value::Numeric(trimmed.to_string()))
                } else {
                    Err(format!(
                        "expected a decimal number such as `12.50`, got `{text}`"
                    ))
                }
            }
            ParamType::Bool => match trimmed {
                "true" | "1" => Ok(Value::Bool(true)),
                "false" | "0" => Ok(Value::Bool(false)),
                _ => Err(format!("expected `true` or `false`, got `{text}`")),
            },
            ParamType::Date => NaiveDate::parse_from_str(trimmed, "%Y-%m-%d")
                .map(Value::Date)
                .map_err(|_| format!("expected a date `YYYY-MM-DD`, got `{text}`")),
            ParamType::Timestamp => NaiveDateTime::parse_from_str(trimmed, "%Y-%m-%dT%H:%M:%S%.f")
                .or_else(|_| NaiveDateTime::parse_from_str(trimmed, "%Y-%m-%d %H:%M:%S%.f"))
                .map(Value::Timestamp)
                .map_err(|_| {
                    format!(
                        "expected a date-time without offset `YYYY-MM-DDTHH:MM:SS`, got `{text}`"
                    )
                }),
            ParamType::Timestamptz => DateTime::parse_from_rfc3339(trimmed)
                .map(|t| Value::TimestampTz(t.with_timezone(&Utc)))
                .map_err(|_| {
                    format!(
                        "expected an RFC 3339 instant such as `2026-01-02T09:00:00Z`, got `{text}`"
                    )
                }),
            ParamType::Json => serde_json::from_str::<serde_json::Value>(text)
                .map(|_| Value::Json(text.to_string()))
                .map_err(|e| format!("expected JSON: {e}")),
            ParamType::Uuid => uuid::Uuid::parse_str(trimmed)
                .map(Value::Uuid)
                .map_err(|_| format!("expected a UUID, got `{text}`")),
        }
    }

    /// Parses a JSON value (the HTTP API's body, a config default). Strings
    /// are parsed as [`ParamType::parse_text`] does; numbers and booleans
    /// must fit the type exactly (`1.5` is not an `int`); `null` is NULL.
    pub fn parse_json(self, json: &serde_json::Value) -> Result<Value, String> {
        use serde_json::Value as J;
        match (self, json) {
            (_, J::Null) => Ok(Value::Null),
            (ParamType::Json, other) => Ok(Value::Json(other.to_string())),
            (_, J::String(text)) => self.parse_text(text),
            (ParamType::Int, J::Number(n)) => n
                .as_i64()
                .map(Value::Int)
                .ok_or_else(|| format!("expected a 64-bit integer, got `{n}`")),
            (ParamType::Float, J::Number(n)) => n
                .as_f64()
                .map(Value::Float)
                .ok_or_else(|| format!("expected a number, got `{n}`")),
            (ParamType::Numeric, J::Number(n)) => self.parse_text(&n.to_string()),
            (ParamType::Bool, J::Bool(b)) => Ok(Value::Bool(*b)),
            (_, other) => Err(format!(
                "expected {} `{}` value, got {}",
                article(self.as_str()),
                self.as_str(),
                json_kind(other)
            )),
        }
    }
}

fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

/// `a string`, `a number`...: a JSON value's kind for messages.
pub fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// `-12.50`, `3`, `1e-3`: a plain decimal literal.
fn is_decimal_literal(text: &str) -> bool {
    let body = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (mantissa, exponent) = match body.find(['e', 'E']) {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    };
    let (int_part, frac_part) = match mantissa.split_once('.') {
        Some((i, f)) => (i, f),
        None => (mantissa, ""),
    };
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && digits(e)
    });
    (!int_part.is_empty() || !frac_part.is_empty())
        && digits(int_part)
        && digits(frac_part)
        && exponent_ok
}

/// Validates every `[[service]]`; problems name the service, operation and
/// parameter.
pub(super) fn validate_services(
    raw: Vec<RawService>,
    sites: &[Site],
    problems: &mut Vec<String>,
) -> Vec<Service> {
    let mut services = Vec::new();
    let mut names = HashSet::new();
    for (index, raw_service) in raw.into_iter().enumerate() {
        let place = if raw_service.name.trim().is_empty() {
            problems.push(format!("service[{index}]: `name` is empty"));
            format!("service[{index}]")
        } else {
            if !names.insert(raw_service.name.clone()) {
                problems.push(format!(
                    "service `{}`: duplicate service name",
                    raw_service.name
                ));
            }
            format!("service `{}`", raw_service.name)
        };
        let on = match raw_service.on.as_str() {
            "master" => ServiceTarget::Master,
            "site" => ServiceTarget::Site,
            other => {
                problems.push(format!(
                    "{place}: unknown `on = \"{other}\"`; use `master` or `site`"
                ));
                ServiceTarget::Master
            }
        };
        if raw_service.operation.is_empty() {
            problems.push(format!(
                "{place}: no operations; add at least one `[[service.operation]]`"
            ));
        }
        let mut operations = Vec::new();
        let mut operation_names = HashSet::new();
        for (op_index, raw_op) in raw_service.operation.into_iter().enumerate() {
            let op_place = if raw_op.name.trim().is_empty() {
                problems.push(format!("{place} operation[{op_index}]: `name` is empty"));
                format!("{place} operation[{op_index}]")
            } else {
                if !operation_names.insert(raw_op.name.clone()) {
                    problems.push(format!(
                        "{place} operation `{}`: duplicate operation name",
                        raw_op.name
                    ));
                }
                format!("{place} operation `{}`", raw_op.name)
            };
            let mut params: Vec<Param> = Vec::new();
            for raw_param in raw_op.params {
                let param_place = format!("{op_place} param `{}`", raw_param.name);
                let valid_name = raw_param
                    .name
                    .bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                    && raw_param
                        .name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_');
                if !valid_name || raw_param.name == "site" {
                    problems.push(format!(
                        "{param_place}: a name is letters, digits and `_`, starts with a letter, and is not `site`"
                    ));
                }
                if params.iter().any(|p| p.name == raw_param.name) {
                    problems.push(format!("{param_place}: declared twice"));
                }
                let Some(param_type) = ParamType::parse_name(&raw_param.param_type) else {
                    problems.push(format!(
                        "{param_place}: unknown type `{}`; use one of {}",
                        raw_param.param_type,
                        ParamType::NAMES
                    ));
                    continue;
                };
                let default = match &raw_param.default {
                    None => None,
                    Some(toml_value) => {
                        let json = serde_json::to_value(toml_value).unwrap_or_default();
                        match param_type.parse_json(&json) {
                            Ok(value) => Some(value),
                            Err(e) => {
                                problems.push(format!("{param_place}: `default`: {e}"));
                                None
                            }
                        }
                    }
                };
                if raw_param.required && default.is_some() {
                    problems.push(format!(
                        "{param_place}: `required = true` and a `default` contradict; keep one"
                    ));
                }
                params.push(Param {
                    name: raw_param.name,
                    param_type,
                    required: raw_param.required,
                    default,
                });
            }
            check_placeholders(&raw_op.sql, on, &params, sites, &op_place, problems);
            operations.push(Operation {
                name: raw_op.name,
                sql: raw_op.sql,
                params,
            });
        }
        services.push(Service {
            name: raw_service.name,
            on,
            operations,
        });
    }
    services
}

/// Every `:name` declared, every declared param used, `:site.*` only on
/// sites and only with tags every site has.
fn check_placeholders(
    sql: &str,
    on: ServiceTarget,
    params: &[Param],
    sites: &[Site],
    place: &str,
    problems: &mut Vec<String>,
) {
    if sql.trim().is_empty() {
        problems.push(format!("{place}: `sql` is empty"));
        return;
    }
    // Judged with the PostgreSQL lexer and MySQL's (backslash escapes, `#`
    // comments): several statements by either reading are refused, since
    // SQLite would run them all.
    if crate::dialect::params::has_several_statements(sql, Dialect::Postgres)
        || crate::dialect::params::has_several_statements(sql, Dialect::MySql)
    {
        problems.push(format!(
            "{place}: `sql` holds several statements (a `;` followed by more SQL); an operation runs one statement: \
             split it into operations, or use a stored procedure where the dialect has them"
        ));
        return;
    }
    let bound = match bind_named_placeholders(sql, Dialect::Postgres, &|_| Value::Null) {
        Ok(bound) => bound,
        Err(e) => {
            problems.push(format!("{place}: `sql`: {e}"));
            return;
        }
    };
    let mut used = HashSet::new();
    let mut missing_tags: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for param in &bound.params {
        match param {
            NamedParam::Param(name) => {
                used.insert(name.clone());
                if !params.iter().any(|p| &p.name == name) {
                    problems.push(format!(
                        "{place}: `sql` uses `:{name}` but no param `{name}` is declared; add `{{ name = \"{name}\", type = \"text\" }}` to `params`"
                    ));
                }
            }
            NamedParam::Site(attribute) => {
                if on == ServiceTarget::Master {
                    problems.push(format!(
                        "{place}: `:site.{attribute}` is only available to `on = \"site\"` services"
                    ));
                    continue;
                }
                for site in sites {
                    if site.attribute(attribute).is_none() {
                        missing_tags
                            .entry(attribute.clone())
                            .or_default()
                            .push(site.id.clone());
                    }
                }
            }
        }
    }
    for (tag, site_ids) in missing_tags {
        problems.push(format!(
            "{place}: `sql` uses `:site.{tag}` but site(s) {} have no tag `{tag}`",
            site_ids
                .iter()
                .map(|s| format!("`{s}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    for param in params {
        if !used.contains(&param.name) {
            problems.push(format!(
                "{place} param `{}`: declared but `sql` never uses `:{}`",
                param.name, param.name
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_parse_from_text_and_json() {
        assert_eq!(ParamType::Int.parse_text(" 42 "), Ok(Value::Int(42)));
        assert_eq!(
            ParamType::Int.parse_json(&serde_json::json!(1.5)),
            Err("expected a 64-bit integer, got `1.5`".into())
        );
        assert_eq!(
            ParamType::Int.parse_json(&serde_json::json!("9223372036854775807")),
            Ok(Value::Int(i64::MAX))
        );
        assert_eq!(
            ParamType::Numeric.parse_json(&serde_json::json!("12345678901234567890.123456789")),
            Ok(Value::Numeric("12345678901234567890.123456789".into()))
        );
        assert_eq!(
            ParamType::Numeric.parse_text("12,5"),
            Err("expected a decimal number such as `12.50`, got `12,5`".into())
        );
        assert_eq!(
            ParamType::Bool.parse_json(&serde_json::json!([1])),
            Err("expected a `bool` value, got an array".into())
        );
        assert_eq!(
            ParamType::Timestamptz.parse_text("2026-01-02T10:00:00+01:00"),
            Ok(Value::TimestampTz(
                DateTime::parse_from_rfc3339("2026-01-02T09:00:00Z")
                    .unwrap()
                    .with_timezone(&Utc)
            ))
        );
        assert_eq!(
            ParamType::Json.parse_json(&serde_json::json!({"a": 1})),
            Ok(Value::Json("{\"a\":1}".into()))
        );
        assert!(is_decimal_literal("-0.5e10"));
        assert!(!is_decimal_literal("."));
        assert!(!is_decimal_literal("1e"));
    }
}
