//! Validation against the Compose Specification by parsing: the [`compose_spec`] crate models
//! every field of the specification as a typed serde structure, so a document that parses is
//! one whose keys, types and values (ports, durations, names, extension keys) the
//! specification allows. [`Compose::validate_all`] and our own `consistency` rules then
//! check what compose checks across fields: every network, named volume, config, secret and
//! dependency a service uses is declared.
//!
//! serde reports the first error without saying where it is (flattened fields hide the
//! path), so an error is located by parsing smaller pieces: each top-level key alone, then
//! each field of each service alone. The deepest piece that fails on its own is the field
//! named in the error.

use std::path::{Path, PathBuf};

use compose_spec::service::volumes::{Mount, ShortOptions, ShortVolume, Source, mount};
use compose_spec::{Compose, Identifier, Service, ShortOrLong};
use serde_json::{Map, Value};

/// A compose document the Compose Specification does not allow.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {field}: {message}")]
pub struct SpecError {
    pub path: PathBuf,
    /// Where the error is, as a dotted path (`services.hits.ports`), or `(top level)`.
    pub field: String,
    pub message: String,
}

/// Parses `document` (a compose file after variable substitution) as the Compose
/// Specification; errors name `path` and the field that is wrong.
pub fn parse(path: &Path, document: &Value) -> Result<Compose, SpecError> {
    let error = |field: String, message: String| SpecError {
        path: path.to_owned(),
        field,
        message,
    };
    let compose = match parse_compose(document) {
        Ok(compose) => compose,
        Err(message) => {
            let (field, message) =
                locate(document).unwrap_or_else(|| ("(top level)".to_owned(), message));
            return Err(error(field, message));
        }
    };
    compose
        .validate_all()
        .map_err(|e| error("services".to_owned(), e.to_string()))?;
    consistency(&compose).map_err(|(field, message)| error(field, message))?;
    Ok(compose)
}

/// What compose also refuses but `validate_all` lets through: a named volume not declared at
/// the top level (the crate only asks that of volumes shared by several services), and a
/// dependency on a service that does not exist.
fn consistency(compose: &Compose) -> Result<(), (String, String)> {
    for (name, service) in &compose.services {
        for volume in &service.volumes {
            let source = match volume {
                ShortOrLong::Short(ShortVolume {
                    options:
                        Some(ShortOptions {
                            source: Source::Volume(source),
                            ..
                        }),
                    ..
                }) => source,
                ShortOrLong::Long(Mount::Volume(mount::Volume {
                    source: Some(source),
                    ..
                })) => source,
                _ => continue,
            };
            if !compose.volumes.contains_key(source) {
                return Err((
                    format!("services.{name}.volumes"),
                    format!("named volume `{source}` is not declared in the top-level `volumes`"),
                ));
            }
        }
        let dependencies: Vec<&Identifier> = match &service.depends_on {
            ShortOrLong::Short(names) => names.iter().collect(),
            ShortOrLong::Long(map) => map.keys().collect(),
        };
        for dependency in dependencies {
            if !compose.services.contains_key(dependency) {
                return Err((
                    format!("services.{name}.depends_on"),
                    format!("depends on `{dependency}`, which is not a service of this file"),
                ));
            }
        }
    }
    Ok(())
}

fn parse_compose(document: &Value) -> Result<Compose, String> {
    serde_json::from_value(document.clone()).map_err(|e| e.to_string())
}

fn parse_service(service: &Value) -> Result<Service, String> {
    serde_json::from_value(service.clone()).map_err(|e| e.to_string())
}

/// The deepest field that fails to parse on its own, and its error.
fn locate(document: &Value) -> Option<(String, String)> {
    let top = document.as_object()?;
    for (key, value) in top {
        let mut alone = Map::new();
        // `services` is the one required top-level key.
        alone.insert("services".to_owned(), Value::Object(Map::new()));
        alone.insert(key.clone(), value.clone());
        let Err(message) = parse_compose(&Value::Object(alone)) else {
            continue;
        };
        if key == "services"
            && let Some(found) = value.as_object().and_then(locate_in_services)
        {
            return Some(found);
        }
        return Some((key.clone(), message));
    }
    None
}

fn locate_in_services(services: &Map<String, Value>) -> Option<(String, String)> {
    for (name, service) in services {
        let Err(message) = parse_service(service) else {
            // The name itself may be what is wrong (an invalid identifier).
            let mut alone = Map::new();
            alone.insert(name.clone(), service.clone());
            let document = serde_json::json!({ "services": alone });
            if let Err(message) = parse_compose(&document) {
                return Some((format!("services.{name}"), message));
            }
            continue;
        };
        if let Some(fields) = service.as_object() {
            for (field, value) in fields {
                let mut alone = Map::new();
                alone.insert(field.clone(), value.clone());
                if let Err(message) = parse_service(&Value::Object(alone)) {
                    return Some((format!("services.{name}.{field}"), message));
                }
            }
        }
        return Some((format!("services.{name}"), message));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(document: Value) -> String {
        parse(Path::new("compose.yml"), &document)
            .unwrap_err()
            .field
    }

    #[test]
    fn a_minimal_file_parses() {
        let document = serde_json::json!({"services": {"web": {"image": "nginx:1"}}});
        parse(Path::new("compose.yml"), &document).unwrap();
    }

    #[test]
    fn errors_name_the_deepest_field_that_fails() {
        assert_eq!(
            field_of(serde_json::json!({"services": {"web": {"image": "a:1", "ports": ["x"]}}})),
            "services.web.ports"
        );
        assert_eq!(
            field_of(serde_json::json!({"services": {"web": {"image": "a:1"}}, "servics": {}})),
            "servics"
        );
        assert_eq!(
            field_of(
                serde_json::json!({"services": {"web": {"image": "a:1", "volumes": ["data:/d"]}}})
            ),
            "services.web.volumes"
        );
        assert_eq!(
            field_of(
                serde_json::json!({"services": {"web": {"image": "a:1", "depends_on": ["db"]}}})
            ),
            "services.web.depends_on"
        );
        assert_eq!(
            field_of(
                serde_json::json!({"services": {"web": {"image": "a:1", "networks": ["back"]}}})
            ),
            "services"
        );
        let error = parse(
            Path::new("deploy/compose.yml"),
            &serde_json::json!({"services": {"web": {"image": "a:1", "ports": ["x"]}}}),
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.starts_with("deploy/compose.yml: services.web.ports: "),
            "{error}"
        );
    }
}
