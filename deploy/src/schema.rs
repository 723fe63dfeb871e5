//! Validation against the Compose Specification's JSON Schema (draft-07). Every error
//! names the place in the file (a JSON pointer such as `/services/hits/ports/0`).

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error(
        "the compose schema is missing at {path}: CI clones shared/ beside the repository \
         (…/main and …/shared); {source}"
    )]
    Missing {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid JSON Schema: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// A compiled schema, ready to validate any number of documents.
pub struct ComposeSchema {
    validator: jsonschema::Validator,
}

impl std::fmt::Debug for ComposeSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComposeSchema").finish_non_exhaustive()
    }
}

impl ComposeSchema {
    /// Reads and compiles the schema at `path`; a missing file is an error naming it.
    pub fn load(path: &Path) -> Result<Self, SchemaError> {
        let text = std::fs::read_to_string(path).map_err(|source| SchemaError::Missing {
            path: path.to_owned(),
            source,
        })?;
        let schema: serde_json::Value =
            serde_json::from_str(&text).map_err(|error| SchemaError::Invalid {
                path: path.to_owned(),
                message: error.to_string(),
            })?;
        let validator = jsonschema::draft7::new(&schema).map_err(|error| SchemaError::Invalid {
            path: path.to_owned(),
            message: error.to_string(),
        })?;
        Ok(Self { validator })
    }

    /// Every violation in `document`, as "`/pointer`: message" lines; empty when valid.
    pub fn violations(&self, document: &serde_json::Value) -> Vec<String> {
        self.validator
            .iter_errors(document)
            .map(|error| {
                let pointer = error.instance_path().to_string();
                let at = if pointer.is_empty() { "/" } else { &pointer };
                format!("{at}: {error}")
            })
            .collect()
    }
}
