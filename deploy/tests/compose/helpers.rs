//! Paths and loaders shared by the compose tests.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use deploy_checks::ComposeFile;
use deploy_checks::env_file::{self, EnvEntry};
use deploy_checks::interpolate::{self, VariableUse};
use deploy_checks::merge;

/// The repository root (this crate lives in `deploy/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("deploy/ has a parent")
        .to_owned()
}

/// Every compose file in the repository, parsed; at least the root one must exist. An
/// override file (`docker-compose.NAME.yml`) comes merged into its base, as compose reads it.
pub fn compose_files() -> Vec<ComposeFile> {
    let root = repo_root();
    let paths = deploy_checks::discover::compose_files(&root)
        .unwrap_or_else(|error| panic!("cannot list compose files in {}: {error}", root.display()));
    assert!(
        paths
            .iter()
            .any(|p| p.file_name().is_some_and(|n| n == "docker-compose.yml")),
        "no docker-compose.yml at {}",
        root.display()
    );
    paths
        .iter()
        .map(|path| {
            let mut file = ComposeFile::load(path).unwrap_or_else(|error| panic!("{error}"));
            if let Some(base) = merge::base_of(path) {
                let base = ComposeFile::load(&base)
                    .unwrap_or_else(|error| panic!("{} adds to {error}", path.display()));
                file.raw = merge::merge(&base.raw, &file.raw);
            }
            file
        })
        .collect()
}

/// docker-compose.https.yml merged into docker-compose.yml: the stack with HTTPS switched on.
pub fn https_compose() -> ComposeFile {
    compose_files()
        .into_iter()
        .find(|file| file.path.ends_with("docker-compose.https.yml"))
        .expect("docker-compose.https.yml at the repository root")
}

pub fn root_compose() -> ComposeFile {
    ComposeFile::load(&repo_root().join("docker-compose.yml"))
        .unwrap_or_else(|error| panic!("{error}"))
}

pub fn env_example() -> BTreeMap<String, EnvEntry> {
    env_file::read(&repo_root().join(".env.example")).unwrap_or_else(|error| panic!("{error}"))
}

/// The secrets docker-compose.yml requires (`${NAME:?...}`, no default), with stand-in values
/// of the length the balancer accepts: what the Quick start writes into `.env`.
pub const REQUIRED_SECRETS: [&str; 2] = ["BALANCER_ADMIN_TOKEN", "BALANCER_STICKY_KEY"];

/// The environment of a reader who wrote only the required secrets into `.env`.
pub fn required_secrets() -> BTreeMap<String, String> {
    REQUIRED_SECRETS
        .iter()
        .map(|name| ((*name).to_owned(), format!("test-{}", "0".repeat(32))))
        .collect()
}

/// `.env.example` as the Quick start turns it into `.env`: its empty secrets filled in.
pub fn env_example_values() -> BTreeMap<String, String> {
    let secrets = required_secrets();
    env_example()
        .into_iter()
        .map(|(name, entry)| {
            let value = match secrets.get(&name) {
                Some(secret) if entry.value.is_empty() => secret.clone(),
                _ => entry.value,
            };
            (name, value)
        })
        .collect()
}

/// The file as compose sees it with `env` as the environment, and every variable it uses.
pub fn interpolated(
    file: &ComposeFile,
    env: &BTreeMap<String, String>,
) -> (serde_json::Value, Vec<VariableUse>) {
    interpolate::interpolate_value(&file.raw, env)
        .unwrap_or_else(|error| panic!("{}: {error}", file.path.display()))
}

/// The root file as `docker compose up` sees it with only the required secrets set: every
/// other variable at its default.
pub fn root_with_defaults() -> serde_json::Value {
    interpolated(&root_compose(), &required_secrets()).0
}

pub fn service<'a>(compose: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    compose
        .get("services")
        .and_then(|services| services.get(name))
        .unwrap_or_else(|| panic!("docker-compose.yml has no service {name:?}"))
}

pub fn services(compose: &serde_json::Value) -> &serde_json::Map<String, serde_json::Value> {
    compose["services"]
        .as_object()
        .expect("docker-compose.yml has a services mapping")
}

/// A service's environment as a map, whichever of compose's two forms it uses.
pub fn environment(service: &serde_json::Value) -> BTreeMap<String, String> {
    deploy_checks::environment(service).unwrap_or_else(|| {
        panic!(
            "environment is neither a mapping nor a list: {}",
            service["environment"]
        )
    })
}
