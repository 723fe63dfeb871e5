//! Override files: `docker-compose.NAME.yml` beside a `docker-compose.yml` is not a project of
//! its own but an addition that compose merges into the base file (`-f base -f override`, or
//! `COMPOSE_FILE=base:override` in `.env`), so it is checked merged, as compose sees it.
//!
//! [`merge`] follows the Compose Specification's merge rules for what such files use:
//! mappings merge key by key (the override wins on a scalar); a service's `environment`
//! and `depends_on` merge by name whichever form (list or mapping) each file uses; its
//! `volumes` merge by container path (the override's mount replaces one at the same path);
//! `command`, `entrypoint` and `healthcheck.test` are replaced whole; any other sequence
//! (`ports`, `expose`, `secrets`, ...) is the base's followed by the override's entries it
//! lacks.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// The base file an override adds to: `docker-compose.yml` in the same directory, for a
/// file named `docker-compose.NAME.yml` (or `.yaml`). None for any other file.
pub fn base_of(path: &Path) -> Option<PathBuf> {
    let name = path.file_name()?.to_str()?;
    let stem = name
        .strip_suffix(".yml")
        .or_else(|| name.strip_suffix(".yaml"))?;
    let label = stem.strip_prefix("docker-compose.")?;
    (!label.is_empty()).then(|| path.with_file_name("docker-compose.yml"))
}

/// `override_doc` merged into `base`, as compose merges a second `-f` file.
pub fn merge(base: &Value, override_doc: &Value) -> Value {
    merge_at(base, override_doc, &[])
}

fn merge_at(base: &Value, over: &Value, at: &[&str]) -> Value {
    // Inside a service: ["services", NAME, field, ...].
    let service_field = match at {
        ["services", _, field] => Some(*field),
        _ => None,
    };
    match service_field {
        Some("environment") => return merge_environment(base, over),
        Some("depends_on") => return merge_depends_on(base, over),
        Some("volumes") => return merge_volumes(base, over),
        Some("command" | "entrypoint") => return over.clone(),
        _ => {}
    }
    if matches!(at, ["services", _, "healthcheck", "test"]) {
        return over.clone();
    }
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            let mut merged = b.clone();
            for (key, value) in o {
                let next = match b.get(key) {
                    Some(existing) => {
                        let mut path = at.to_vec();
                        path.push(key.as_str());
                        merge_at(existing, value, &path)
                    }
                    None => value.clone(),
                };
                merged.insert(key.clone(), next);
            }
            Value::Object(merged)
        }
        (Value::Array(b), Value::Array(o)) => {
            let mut merged = b.clone();
            for item in o {
                if !merged.contains(item) {
                    merged.push(item.clone());
                }
            }
            Value::Array(merged)
        }
        (_, over) => over.clone(),
    }
}

/// `environment` as a mapping, from either form (`KEY=value` items or a mapping).
fn environment_map(value: &Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map.clone(),
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .map(|item| match item.split_once('=') {
                Some((k, v)) => (k.to_owned(), Value::String(v.to_owned())),
                None => (item.to_owned(), Value::Null),
            })
            .collect(),
        _ => Map::new(),
    }
}

fn merge_environment(base: &Value, over: &Value) -> Value {
    let mut merged = environment_map(base);
    merged.extend(environment_map(over));
    Value::Object(merged)
}

/// `depends_on` in the long form; a short list means "started".
fn depends_on_map(value: &Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map.clone(),
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .map(|name| {
                (
                    name.to_owned(),
                    serde_json::json!({"condition": "service_started"}),
                )
            })
            .collect(),
        _ => Map::new(),
    }
}

fn merge_depends_on(base: &Value, over: &Value) -> Value {
    let mut merged = depends_on_map(base);
    merged.extend(depends_on_map(over));
    Value::Object(merged)
}

/// The container path a volume entry mounts at, either form.
fn volume_target(entry: &Value) -> Option<String> {
    match entry {
        Value::String(short) => {
            let mut parts = short.split(':');
            let first = parts.next()?;
            Some(parts.next().unwrap_or(first).to_owned())
        }
        Value::Object(long) => long.get("target")?.as_str().map(str::to_owned),
        _ => None,
    }
}

fn merge_volumes(base: &Value, over: &Value) -> Value {
    let mut merged: Vec<Value> = base.as_array().cloned().unwrap_or_default();
    for entry in over.as_array().into_iter().flatten() {
        let target = volume_target(entry);
        match merged
            .iter_mut()
            .find(|existing| target.is_some() && volume_target(existing) == target)
        {
            Some(existing) => *existing = entry.clone(),
            None => merged.push(entry.clone()),
        }
    }
    Value::Array(merged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_docker_compose_dot_name_files_are_overrides() {
        assert_eq!(
            base_of(Path::new("/r/docker-compose.https.yml")),
            Some(PathBuf::from("/r/docker-compose.yml"))
        );
        assert_eq!(
            base_of(Path::new("/r/deploy/docker-compose.droplet.yaml")),
            Some(PathBuf::from("/r/deploy/docker-compose.yml"))
        );
        for name in [
            "/r/docker-compose.yml",
            "/r/compose.yaml",
            "/r/docker-compose..yml",
            "/r/app.compose.yml",
        ] {
            assert_eq!(base_of(Path::new(name)), None, "{name}");
        }
    }

    #[test]
    fn services_merge_as_compose_merges_them() {
        let base = json!({"services": {"web": {
            "image": "a:1",
            "environment": ["A=1", "B=2"],
            "ports": ["127.0.0.1:80:80"],
            "volumes": ["data:/data", "./conf:/conf:ro"],
            "depends_on": ["db"],
            "command": ["serve", "--slow"],
            "healthcheck": {"test": ["CMD", "a"], "interval": "2s"},
        }}, "volumes": {"data": {}}});
        let over = json!({"services": {"web": {
            "environment": {"B": "3", "C": "4"},
            "ports": ["127.0.0.1:80:80", "127.0.0.1:443:443"],
            "volumes": ["other:/conf:ro", "tls:/tls"],
            "depends_on": {"init": {"condition": "service_completed_successfully"}},
            "command": ["serve"],
            "healthcheck": {"test": ["CMD", "b"]},
        }, "init": {"image": "b:1"}}, "volumes": {"tls": {}}});
        assert_eq!(
            merge(&base, &over),
            json!({"services": {"web": {
                "image": "a:1",
                "environment": {"A": "1", "B": "3", "C": "4"},
                "ports": ["127.0.0.1:80:80", "127.0.0.1:443:443"],
                "volumes": ["data:/data", "other:/conf:ro", "tls:/tls"],
                "depends_on": {
                    "db": {"condition": "service_started"},
                    "init": {"condition": "service_completed_successfully"},
                },
                "command": ["serve"],
                "healthcheck": {"test": ["CMD", "b"], "interval": "2s"},
            }, "init": {"image": "b:1"}}, "volumes": {"data": {}, "tls": {}}})
        );
    }
}
