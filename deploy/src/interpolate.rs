//! Compose's variable substitution, as `docker compose` applies it before validating a
//! file: `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?error}`,
//! `${VAR?error}`, `${VAR:+replacement}`, `${VAR+replacement}`, nesting inside the
//! default, and `$$` for a literal `$`. Only string values are substituted, never keys.

use std::collections::{BTreeMap, BTreeSet};

/// One use of a variable in a file, with the default it falls back to when unset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VariableUse {
    pub name: String,
    /// The text after `:-` or `-`, if the use has one (uninterpolated).
    pub default: Option<String>,
    /// True for `${VAR:?msg}`/`${VAR?msg}`: the file refuses to load without it.
    pub required: bool,
}

/// Why a string could not be substituted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InterpolationError {
    #[error("unterminated ${{...}} in {text:?}")]
    Unterminated { text: String },
    #[error("invalid variable name in {text:?}")]
    InvalidName { text: String },
    #[error("required variable {name} is not set: {message}")]
    Required { name: String, message: String },
}

/// Substitutes every string in `value` (recursively) with variables from `env`; a variable
/// missing from `env` is unset. Returns the new value and every variable use found.
pub fn interpolate_value(
    value: &serde_json::Value,
    env: &BTreeMap<String, String>,
) -> Result<(serde_json::Value, Vec<VariableUse>), InterpolationError> {
    let mut uses = Vec::new();
    let out = walk(value, env, &mut uses)?;
    Ok((out, uses))
}

fn walk(
    value: &serde_json::Value,
    env: &BTreeMap<String, String>,
    uses: &mut Vec<VariableUse>,
) -> Result<serde_json::Value, InterpolationError> {
    Ok(match value {
        serde_json::Value::String(text) => {
            serde_json::Value::String(interpolate_str(text, env, uses)?)
        }
        serde_json::Value::Array(items) => serde_json::Value::Array(
            items
                .iter()
                .map(|item| walk(item, env, uses))
                .collect::<Result<_, _>>()?,
        ),
        serde_json::Value::Object(map) => serde_json::Value::Object(
            map.iter()
                .map(|(key, item)| Ok((key.clone(), walk(item, env, uses)?)))
                .collect::<Result<_, InterpolationError>>()?,
        ),
        other => other.clone(),
    })
}

/// Substitutes the variables of one string.
pub fn interpolate_str(
    text: &str,
    env: &BTreeMap<String, String>,
    uses: &mut Vec<VariableUse>,
) -> Result<String, InterpolationError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body_and_tail) = after.strip_prefix('{') {
            let end =
                matching_brace(body_and_tail).ok_or_else(|| InterpolationError::Unterminated {
                    text: text.to_owned(),
                })?;
            out.push_str(&braced(&body_and_tail[..end], text, env, uses)?);
            rest = &body_and_tail[end + 1..];
        } else {
            let name_len = name_length(after);
            if name_len == 0 {
                // A lone `$` followed by something that is not a name stays as it is.
                out.push('$');
                rest = after;
            } else {
                let name = &after[..name_len];
                uses.push(VariableUse {
                    name: name.to_owned(),
                    default: None,
                    required: false,
                });
                out.push_str(env.get(name).map(String::as_str).unwrap_or(""));
                rest = &after[name_len..];
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The index of the `}` closing a `${`, counting nested `${...}` in defaults.
fn matching_brace(body: &str) -> Option<usize> {
    let mut depth = 0usize;
    let bytes = body.as_bytes();
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'$' if bytes.get(index + 1) == Some(&b'{') => {
                depth += 1;
                index += 1;
            }
            b'}' if depth == 0 => return Some(index),
            b'}' => depth -= 1,
            _ => {}
        }
        index += 1;
    }
    None
}

fn name_length(text: &str) -> usize {
    let mut chars = text.char_indices();
    match chars.next() {
        Some((_, c)) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return 0,
    }
    chars
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '_'))
        .map(|(index, _)| index)
        .unwrap_or(text.len())
}

fn braced(
    body: &str,
    whole: &str,
    env: &BTreeMap<String, String>,
    uses: &mut Vec<VariableUse>,
) -> Result<String, InterpolationError> {
    let name_len = name_length(body);
    if name_len == 0 {
        return Err(InterpolationError::InvalidName {
            text: whole.to_owned(),
        });
    }
    let name = &body[..name_len];
    let operator = &body[name_len..];
    let value = env.get(name);
    let set_and_nonempty = value.is_some_and(|v| !v.is_empty());
    let mut record = |default: Option<&str>, required: bool| {
        uses.push(VariableUse {
            name: name.to_owned(),
            default: default.map(str::to_owned),
            required,
        });
    };
    if operator.is_empty() {
        record(None, false);
        return Ok(value.cloned().unwrap_or_default());
    }
    let (op, arg) = if operator.starts_with(":-")
        || operator.starts_with(":?")
        || operator.starts_with(":+")
    {
        operator.split_at(2)
    } else if operator.starts_with('-') || operator.starts_with('?') || operator.starts_with('+') {
        operator.split_at(1)
    } else {
        return Err(InterpolationError::InvalidName {
            text: whole.to_owned(),
        });
    };
    match op {
        ":-" | "-" => {
            record(Some(arg), false);
            let use_default = if op == ":-" {
                !set_and_nonempty
            } else {
                value.is_none()
            };
            if use_default {
                interpolate_str(arg, env, uses)
            } else {
                Ok(value.cloned().unwrap_or_default())
            }
        }
        ":?" | "?" => {
            record(None, true);
            let missing = if op == ":?" {
                !set_and_nonempty
            } else {
                value.is_none()
            };
            if missing {
                Err(InterpolationError::Required {
                    name: name.to_owned(),
                    message: arg.to_owned(),
                })
            } else {
                Ok(value.cloned().unwrap_or_default())
            }
        }
        _ => {
            record(None, false);
            let replace = if op == ":+" {
                set_and_nonempty
            } else {
                value.is_some()
            };
            if replace {
                interpolate_str(arg, env, uses)
            } else {
                Ok(String::new())
            }
        }
    }
}

/// The names of every variable used, once each.
pub fn variable_names(uses: &[VariableUse]) -> BTreeSet<String> {
    uses.iter().map(|u| u.name.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(
        text: &str,
        env: &[(&str, &str)],
    ) -> Result<(String, Vec<VariableUse>), InterpolationError> {
        let env = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let mut uses = Vec::new();
        interpolate_str(text, &env, &mut uses).map(|out| (out, uses))
    }

    #[test]
    fn defaults_apply_when_unset_or_empty() {
        assert_eq!(run("${A:-x}", &[]).unwrap().0, "x");
        assert_eq!(run("${A:-x}", &[("A", "")]).unwrap().0, "x");
        assert_eq!(run("${A-x}", &[("A", "")]).unwrap().0, "");
        assert_eq!(run("${A:-x}", &[("A", "y")]).unwrap().0, "y");
    }

    #[test]
    fn nested_defaults_and_escapes() {
        let (out, uses) = run("$${KEEP} ${A:-${B:-deep}}:$C", &[("C", "c")]).unwrap();
        assert_eq!(out, "${KEEP} deep:c");
        let names: Vec<_> = uses.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["A", "B", "C"]);
        assert_eq!(uses[0].default.as_deref(), Some("${B:-deep}"));
    }

    #[test]
    fn required_and_replacement() {
        assert!(matches!(
            run("${A:?needed}", &[]),
            Err(InterpolationError::Required { .. })
        ));
        assert_eq!(run("${A:+on}", &[("A", "1")]).unwrap().0, "on");
        assert_eq!(run("${A:+on}", &[]).unwrap().0, "");
    }

    #[test]
    fn malformed_is_an_error() {
        assert!(matches!(
            run("${A", &[]),
            Err(InterpolationError::Unterminated { .. })
        ));
        assert!(matches!(
            run("${1A}", &[]),
            Err(InterpolationError::InvalidName { .. })
        ));
        assert_eq!(run("cost $5", &[]).unwrap().0, "cost $5");
    }
}
