//! Checks of hitscale's deployment files, used by this crate's test suite.
//!
//! Compose validates a file only after substituting `${VARIABLES}`, so the checks here do
//! the same: [`interpolate`] substitutes them (and reports which ones a file uses),
//! [`spec`] parses the result as the Compose Specification (the `compose_spec` crate), and
//! [`env_file`] reads `.env.example`, where every variable must be documented. Nothing
//! here reads a file outside the repository: a fresh clone checks itself.
//! [`discover`] finds the compose files a repository ships, and [`merge`] merges an override
//! file (`docker-compose.NAME.yml`) into the file it adds to, as compose does.

pub mod discover;
pub mod env_file;
pub mod interpolate;
pub mod merge;
pub mod spec;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A compose file as read from disk: still raw, with its `${VARIABLES}` in place.
#[derive(Debug, Clone)]
pub struct ComposeFile {
    pub path: PathBuf,
    pub raw: serde_json::Value,
}

/// What can go wrong reading a deployment file; each error names the file.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not valid YAML: {source}")]
    Yaml {
        path: PathBuf,
        source: serde_yaml_ng::Error,
    },
    #[error("{path}: {message}")]
    Content { path: PathBuf, message: String },
}

impl ComposeFile {
    /// Reads and parses a compose file into a JSON value, still uninterpolated.
    pub fn load(path: &Path) -> Result<Self, LoadError> {
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
            path: path.to_owned(),
            source,
        })?;
        let raw: serde_json::Value =
            serde_yaml_ng::from_str(&text).map_err(|source| LoadError::Yaml {
                path: path.to_owned(),
                source,
            })?;
        if !raw.is_object() {
            return Err(LoadError::Content {
                path: path.to_owned(),
                message: "the top level is not a mapping".to_owned(),
            });
        }
        Ok(Self {
            path: path.to_owned(),
            raw,
        })
    }
}

/// A service's `environment` as a map, whichever of compose's two forms it uses (a mapping,
/// or a list of `NAME=value`); an entry without a value is empty, no `environment` is an
/// empty map. `None` when the field is neither form.
pub fn environment(service: &serde_json::Value) -> Option<BTreeMap<String, String>> {
    use serde_json::Value;
    Some(match service.get("environment") {
        None => BTreeMap::new(),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| {
                let value = match v {
                    Value::String(s) => s.clone(),
                    Value::Null => String::new(),
                    other => other.to_string(),
                };
                (k.clone(), value)
            })
            .collect(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(|item| {
                let (k, v) = item.split_once('=').unwrap_or((item, ""));
                (k.to_owned(), v.to_owned())
            })
            .collect(),
        Some(_) => return None,
    })
}
