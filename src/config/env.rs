//! `${VAR}` substitution in config strings.
//!
//! Every string value of the TOML document (not keys, not comments) has each
//! `${NAME}` replaced by the environment variable `NAME`; `$${` stands for a
//! literal `${`. An unset variable is an error naming the variable and the
//! key path where it was used, so a missing secret fails the config, not a
//! connection attempt an hour later.

/// Substitutes `${VAR}` in every string of `value`, walking tables and arrays.
///
/// `lookup` returns a variable's value (the real environment in production,
/// a map in tests). Returns one message per unresolved or malformed
/// reference, each starting with the dotted key path (`flow[0].stream[1].query`).
pub fn interpolate_tree(
    value: &mut toml::Value,
    path: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<String>,
) {
    match value {
        toml::Value::String(text) => match interpolate(text, lookup) {
            Ok(replaced) => *text = replaced,
            Err(message) => problems.push(format!("`{path}`: {message}")),
        },
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                interpolate_tree(item, &format!("{path}[{i}]"), lookup, problems);
            }
        }
        toml::Value::Table(table) => {
            for (key, item) in table.iter_mut() {
                let child = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                interpolate_tree(item, &child, lookup, problems);
            }
        }
        _ => {}
    }
}

/// Substitutes `${VAR}` references in one string (see the module docs).
pub fn interpolate(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            let end = tail
                .find('}')
                .ok_or_else(|| "unterminated `${` (write `$${` for a literal `${`)".to_string())?;
            let name = &tail[..end];
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(format!(
                    "`${{{name}}}` is not a valid environment variable name"
                ));
            }
            let value = lookup(name).ok_or_else(|| {
                format!(
                    "environment variable `{name}` is not set; export it or remove `${{{name}}}`"
                )
            })?;
            out.push_str(&value);
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "PW").then(|| "s3cr@t/:%".to_string())
    }

    #[test]
    fn replaces_and_escapes() {
        assert_eq!(interpolate("a${PW}b", &env).unwrap(), "as3cr@t/:%b");
        assert_eq!(interpolate("$${PW} and $1", &env).unwrap(), "${PW} and $1");
    }

    #[test]
    fn unset_variable_is_named() {
        let err = interpolate("x ${NOPE}", &env).unwrap_err();
        assert_eq!(
            err,
            "environment variable `NOPE` is not set; export it or remove `${NOPE}`"
        );
        assert!(
            interpolate("${oops", &env)
                .unwrap_err()
                .contains("unterminated")
        );
    }

    #[test]
    fn tree_paths_name_the_key() {
        let mut doc: toml::Value = toml::from_str("[[flow]]\nname = \"${MISSING}\"\n").unwrap();
        let mut problems = Vec::new();
        interpolate_tree(&mut doc, "", &env, &mut problems);
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].starts_with("`flow[0].name`: environment variable `MISSING`"),
            "{}",
            problems[0]
        );
    }
}
