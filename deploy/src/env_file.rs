//! Reads `.env.example`: `NAME=value` lines, `#` comments and blank lines, as compose reads
//! a `.env` file. A line that is none of these is an error naming the file and line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One documented variable and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvEntry {
    pub value: String,
    pub line: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum EnvFileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// Parses an env file into name -> entry; a name given twice is an error.
pub fn read(path: &Path) -> Result<BTreeMap<String, EnvEntry>, EnvFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| EnvFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&text).map_err(|(line, message)| EnvFileError::Syntax {
        path: path.to_owned(),
        line,
        message,
    })
}

/// Parses env-file text; errors carry the 1-based line number.
pub fn parse(text: &str) -> Result<BTreeMap<String, EnvEntry>, (usize, String)> {
    let mut entries = BTreeMap::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let assignment = trimmed.strip_prefix("export ").unwrap_or(trimmed);
        let Some((name, value)) = assignment.split_once('=') else {
            return Err((number, format!("expected NAME=value, found {trimmed:?}")));
        };
        let name = name.trim();
        let valid = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err((number, format!("invalid variable name {name:?}")));
        }
        let value = unquote(value.trim());
        let entry = EnvEntry {
            value,
            line: number,
        };
        if let Some(previous) = entries.insert(name.to_owned(), entry) {
            return Err((
                number,
                format!("{name} is already set on line {}", previous.line),
            ));
        }
    }
    Ok(entries)
}

fn unquote(value: &str) -> String {
    for quote in ['"', '\''] {
        if value.len() >= 2 && value.starts_with(quote) && value.ends_with(quote) {
            return value[1..value.len() - 1].to_owned();
        }
    }
    value.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_names_values_and_lines() {
        let entries = parse("# c\n\nA=1\nexport B=\"two words\"\nC=\n").unwrap();
        assert_eq!(
            entries["A"],
            EnvEntry {
                value: "1".into(),
                line: 3
            }
        );
        assert_eq!(entries["B"].value, "two words");
        assert_eq!(entries["C"].value, "");
    }

    #[test]
    fn bad_lines_name_their_number() {
        assert_eq!(parse("A=1\nnot an assignment\n").unwrap_err().0, 2);
        assert_eq!(parse("A=1\nA=2\n").unwrap_err().0, 2);
        assert_eq!(parse("9A=1\n").unwrap_err().0, 1);
    }
}
