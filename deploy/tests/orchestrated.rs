//! The deployment files that are no laptop compose file, checked for what they promise:
//! `deploy/swarm/stack.yml` (Docker Swarm) and `deploy/droplets/roles/*.yml` (one compose
//! file per droplet role, run by `deploy/droplets/droplets`). The compose tests do not see
//! them (their names are not compose names, and their variables come from `droplets` or the
//! deploying shell, not `.env.example`).
//!
//! Each file must parse as the Compose Specification once its variables are substituted,
//! then pass the rules of its kind. A rule reports `FILE: services.NAME.FIELD: what is
//! wrong`, and every broken rule of a file is reported at once. The rules are also run on
//! broken copies of the files, so a rule that could never fail is caught too.
//!
//! Swarm: every service `endpoint_mode: dnsrr` (the balancer finds and health-checks each
//! task through `tasks.hits`; a VIP would hide them, and needs IPVS); published ports
//! `mode: host`, on the balancer only; health checks, restart policies and resource limits
//! everywhere; `hits` rolled `start-first` with `failure_action: rollback`, stopped after
//! its own grace period; PostgreSQL and Redis pinned to a labelled node, one replica,
//! `stop-first`, their data on named volumes; secrets external (or files), read through
//! `*_FILE` variables pointing at the service's own secrets, no secret value inline.
//!
//! Droplet roles: every service restarted by dockerd (`unless-stopped` or `always`, so a
//! reboot brings it back) and health-checked; every published port bound to an address
//! variable that must be set (a bare `8000:8000` binds 0.0.0.0), the public address only
//! on the edge, for 80 and 443; no secret value inline (each comes whole from a required
//! variable); images from the registry variable at the deployed version.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use deploy_checks::ComposeFile;
use deploy_checks::interpolate::{self, InterpolationError};
use serde_json::{Value, json};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("deploy/ has a parent")
        .to_owned()
}

fn load(relative: &str) -> ComposeFile {
    ComposeFile::load(&repo_root().join(relative)).unwrap_or_else(|error| panic!("{error}"))
}

const STACK: &str = "deploy/swarm/stack.yml";
const ROLES: &str = "deploy/droplets/roles";

/// The role files, by name; the three `droplets` deploys must be there.
fn role_files() -> Vec<(String, ComposeFile)> {
    let dir = repo_root().join(ROLES);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("cannot list {}: {error}", dir.display()))
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".yml") || name.ends_with(".yaml"))
        .collect();
    names.sort();
    for role in ["app.yml", "data.yml", "edge.yml"] {
        assert!(
            names.iter().any(|n| n == role),
            "{ROLES}/{role} is missing (found {names:?})"
        );
    }
    names
        .into_iter()
        .map(|name| {
            let file = load(&format!("{ROLES}/{name}"));
            (format!("{ROLES}/{name}"), file)
        })
        .collect()
}

/// The broken rules of one file, each naming the file, the service and the field.
struct Problems {
    file: String,
    found: Vec<String>,
}

impl Problems {
    fn new(file: &str) -> Self {
        Self {
            file: file.to_owned(),
            found: Vec::new(),
        }
    }

    fn add(&mut self, field: impl std::fmt::Display, what: impl std::fmt::Display) {
        self.found.push(format!("{}: {field}: {what}", self.file));
    }

    fn assert_none(self) {
        assert!(
            self.found.is_empty(),
            "{} broken rule(s):\n  {}",
            self.found.len(),
            self.found.join("\n  ")
        );
    }
}

fn services(doc: &Value) -> Vec<(&str, &Value)> {
    doc.get("services")
        .and_then(Value::as_object)
        .map(|map| map.iter().map(|(k, v)| (k.as_str(), v)).collect())
        .unwrap_or_default()
}

/// A service's environment; a malformed one is reported and read as empty.
fn environment(problems: &mut Problems, name: &str, service: &Value) -> BTreeMap<String, String> {
    deploy_checks::environment(service).unwrap_or_else(|| {
        problems.add(
            format!("services.{name}.environment"),
            "neither a mapping nor a list of NAME=value",
        );
        BTreeMap::new()
    })
}

fn text<'a>(value: &'a Value, pointer: &str) -> Option<&'a str> {
    value.pointer(pointer).and_then(Value::as_str)
}

/// Variables whose name looks secret but whose value is the path of a mounted file.
const PATHS: [&str; 2] = ["BALANCER_TLS_KEY", "BALANCER_TLS_CERT"];

/// Whether an environment variable's name says it holds a secret (or a URL that may carry
/// one). `*_FILE` names hold a path, checked apart.
fn names_a_secret(name: &str) -> bool {
    !name.ends_with("_FILE")
        && !PATHS.contains(&name)
        && ["PASSWORD", "TOKEN", "SECRET", "_KEY", "_URL"]
            .iter()
            .any(|part| name.contains(part))
}

/// A URL with a password in it (`scheme://user:password@host`).
fn url_with_password(value: &str) -> bool {
    value.split_once("://").is_some_and(|(_, rest)| {
        let authority = rest.split('/').next().unwrap_or("");
        authority
            .rsplit_once('@')
            .is_some_and(|(userinfo, _)| userinfo.contains(':'))
    })
}

/// `${NAME:?...}` or `${NAME?...}` and nothing else: a value that comes whole from a
/// variable the file refuses to load without (no default that could be a secret).
fn required_variable(value: &str) -> Option<&str> {
    let body = value.strip_prefix("${")?.strip_suffix('}')?;
    let end = body.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))?;
    let (name, rest) = body.split_at(end);
    (!name.is_empty() && (rest.starts_with(":?") || rest.starts_with('?')) && !rest.contains('$'))
        .then_some(name)
}

/// A compose duration of the forms these files use (`15s`, `2m`, `1m30s`), in seconds.
fn seconds(duration: &str) -> Option<u64> {
    let mut total = 0;
    let mut number = String::new();
    for c in duration.chars() {
        if c.is_ascii_digit() {
            number.push(c);
        } else {
            let n: u64 = std::mem::take(&mut number).parse().ok()?;
            total += n * match c {
                's' => 1,
                'm' => 60,
                'h' => 3600,
                _ => return None,
            };
        }
    }
    number.is_empty().then_some(total)
}

/// The file with every variable substituted: its defaults, and a stand-in for each
/// variable it requires (an address for `*_ADDR`), as its deployer would set them.
fn substituted(path: &str, raw: &Value) -> Value {
    let mut env = BTreeMap::new();
    for _ in 0..100 {
        match interpolate::interpolate_value(raw, &env) {
            Ok((mut doc, _)) => {
                cast_like_compose(&mut doc);
                return doc;
            }
            Err(InterpolationError::Required { name, .. }) => {
                let stand_in = if name.ends_with("_ADDR") {
                    "127.0.0.1".to_owned()
                } else {
                    format!("stand-in-{}", name.to_ascii_lowercase().replace('_', "-"))
                };
                env.insert(name, stand_in);
            }
            Err(error) => panic!("{path}: {error}"),
        }
    }
    panic!("{path}: more than 100 required variables")
}

/// Substitution makes strings; compose then turns the integer fields back into numbers
/// (compose-go's type casts), here those that these files fill from a variable.
fn cast_like_compose(doc: &mut Value) {
    let Some(services) = doc.get_mut("services").and_then(Value::as_object_mut) else {
        return;
    };
    for service in services.values_mut() {
        for pointer in ["/deploy/replicas", "/healthcheck/retries"] {
            if let Some(value) = service.pointer_mut(pointer)
                && let Some(n) = value.as_str().and_then(|s| s.parse::<u64>().ok())
            {
                *value = json!(n);
            }
        }
    }
}

/// The rules of a service's health check: one that runs something.
fn check_healthcheck(problems: &mut Problems, name: &str, service: &Value) {
    let field = format!("services.{name}.healthcheck");
    let Some(check) = service.get("healthcheck") else {
        problems.add(field, "missing: nothing would notice a hung service");
        return;
    };
    if check.get("disable") == Some(&Value::Bool(true)) {
        problems.add(format!("{field}.disable"), "the health check is disabled");
    }
    let runs = match check.get("test") {
        Some(Value::Array(items)) => !items.is_empty() && items[0] != "NONE" && items.len() > 1,
        Some(Value::String(command)) => !command.trim().is_empty(),
        _ => false,
    };
    if !runs {
        problems.add(format!("{field}.test"), "runs no command");
    }
}

/// Secrets in the environment: none inline, `*_FILE` variables naming one of the service's
/// own Swarm secrets.
fn check_stack_secrets(problems: &mut Problems, doc: &Value, name: &str, service: &Value) {
    let own: BTreeSet<&str> = service
        .get("secrets")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|s| s.as_str().or_else(|| text(s, "/source")))
                .collect()
        })
        .unwrap_or_default();
    for secret in &own {
        if doc.pointer(&format!("/secrets/{secret}")).is_none() {
            problems.add(
                format!("services.{name}.secrets"),
                format_args!("uses {secret}, which the top-level `secrets` does not declare"),
            );
        }
    }
    for (key, value) in environment(problems, name, service) {
        let field = format!("services.{name}.environment.{key}");
        if let Some(file) = key.strip_suffix("_FILE").map(|_| value.as_str()) {
            match file.strip_prefix("/run/secrets/") {
                Some(secret) if own.contains(secret) => {}
                Some(secret) => problems.add(
                    field,
                    format_args!("reads the secret {secret}, which the service is not given"),
                ),
                None => problems.add(
                    field,
                    format_args!("is {file:?}, not a Swarm secret under /run/secrets/"),
                ),
            }
        } else if url_with_password(&value) {
            problems.add(field, "a URL with its password inline");
        } else if names_a_secret(&key) && !key.ends_with("_URL") && !value.is_empty() {
            problems.add(
                field,
                format_args!("a secret inline: use {key}_FILE and a Swarm secret"),
            );
        }
    }
}

/// Every rule of `deploy/swarm/stack.yml`.
fn check_stack(path: &str, raw: &Value) -> Vec<String> {
    let mut problems = Problems::new(path);
    let doc = substituted(path, raw);
    // The `compose_spec` crate (0.3) knows only `continue` and `pause` as a failure action,
    // though the specification (deploy.md, `update_config`) and `docker stack deploy` take
    // `rollback` there too; the rollback itself is a rule of ours, checked below.
    let mut for_spec = doc.clone();
    for (_, service) in for_spec
        .get_mut("services")
        .and_then(Value::as_object_mut)
        .into_iter()
        .flatten()
    {
        if let Some(action) = service.pointer_mut("/deploy/update_config/failure_action")
            && action == "rollback"
        {
            *action = json!("pause");
        }
    }
    if let Err(error) = deploy_checks::spec::parse(Path::new(path), &for_spec) {
        problems.add(&error.field, &error.message);
    }

    let names: BTreeSet<&str> = services(&doc).iter().map(|(n, _)| *n).collect();
    for expected in ["balancer", "hits", "postgres", "redis"] {
        if !names.contains(expected) {
            problems.add(format!("services.{expected}"), "missing");
        }
    }

    for (name, service) in services(&doc) {
        let deploy = format!("services.{name}.deploy");
        if text(service, "/deploy/endpoint_mode") != Some("dnsrr") {
            problems.add(
                format!("{deploy}.endpoint_mode"),
                format_args!(
                    "is {}, must be dnsrr: a virtual IP hides the tasks from the balancer (and needs IPVS)",
                    service.pointer("/deploy/endpoint_mode").unwrap_or(&Value::Null)
                ),
            );
        }
        if let Some(ports) = service.get("ports").and_then(Value::as_array) {
            if name != "balancer" {
                problems.add(
                    format!("services.{name}.ports"),
                    "only the balancer publishes a port",
                );
            }
            for (i, port) in ports.iter().enumerate() {
                if text(port, "/mode") != Some("host") {
                    problems.add(
                        format!("services.{name}.ports[{i}].mode"),
                        format_args!(
                            "{port} is not published `mode: host` (ingress needs the routing mesh and hides client addresses)"
                        ),
                    );
                }
            }
        }
        check_healthcheck(&mut problems, name, service);
        if service
            .pointer("/deploy/restart_policy/condition")
            .is_none()
        {
            problems.add(
                format!("{deploy}.restart_policy.condition"),
                "missing: a failed task must be replaced",
            );
        }
        for limit in ["cpus", "memory"] {
            if service
                .pointer(&format!("/deploy/resources/limits/{limit}"))
                .is_none()
            {
                problems.add(
                    format!("{deploy}.resources.limits.{limit}"),
                    "missing: one task could starve the node",
                );
            }
        }
        check_stack_secrets(&mut problems, &doc, name, service);
    }

    if let Some(hits) = doc.pointer("/services/hits") {
        for (field, wanted, why) in [
            (
                "order",
                "start-first",
                "the new task must be healthy before the old one stops",
            ),
            (
                "failure_action",
                "rollback",
                "a task failing its health check must roll the service back",
            ),
        ] {
            let value = text(hits, &format!("/deploy/update_config/{field}"));
            if value != Some(wanted) {
                problems.add(
                    format!("services.hits.deploy.update_config.{field}"),
                    format_args!("is {value:?}, must be {wanted}: {why}"),
                );
            }
        }
        // A malformed environment is reported once, by the loop over the services.
        let env = deploy_checks::environment(hits).unwrap_or_default();
        let grace = env
            .get("SHUTDOWN_GRACE_SECS")
            .and_then(|s| s.parse::<u64>().ok());
        let stop = text(hits, "/stop_grace_period").and_then(seconds);
        match (grace, stop) {
            (Some(grace), Some(stop)) if stop > grace => {}
            _ => problems.add(
                "services.hits.stop_grace_period",
                format_args!(
                    "{stop:?} s must exceed SHUTDOWN_GRACE_SECS ({grace:?}), or in-flight requests are killed"
                ),
            ),
        }
    }

    for name in ["postgres", "redis"] {
        let Some(service) = doc.pointer(&format!("/services/{name}")) else {
            continue;
        };
        let deploy = format!("services.{name}.deploy");
        let constraints: Vec<&str> = service
            .pointer("/deploy/placement/constraints")
            .and_then(Value::as_array)
            .map(|c| c.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if !constraints.iter().any(|c| c.starts_with("node.labels.")) {
            problems.add(
                format!("{deploy}.placement.constraints"),
                format_args!(
                    "{constraints:?} pins it to no labelled node: it would move away from its volume"
                ),
            );
        }
        if service.pointer("/deploy/replicas") != Some(&json!(1)) {
            problems.add(
                format!("{deploy}.replicas"),
                "must be 1: one server on one volume",
            );
        }
        if text(service, "/deploy/update_config/order") != Some("stop-first") {
            problems.add(
                format!("{deploy}.update_config.order"),
                "must be stop-first: two servers must never share the data directory",
            );
        }
        let volumes = service
            .get("volumes")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let named = volumes.iter().any(|v| {
            let source = v
                .as_str()
                .and_then(|s| s.split_once(':').map(|(source, _)| source))
                .or_else(|| text(v, "/source"));
            source.is_some_and(|s| doc.pointer(&format!("/volumes/{s}")).is_some())
        });
        if !named {
            problems.add(
                format!("services.{name}.volumes"),
                "its data is on no named volume declared in `volumes`",
            );
        }
    }

    if let Some(balancer) = doc.pointer("/services/balancer") {
        let env = deploy_checks::environment(balancer).unwrap_or_default();
        let backends = env.get("BALANCER_BACKENDS").map(String::as_str);
        if !backends.is_some_and(|b| b.split_whitespace().any(|e| e.starts_with("tasks.hits:"))) {
            problems.add(
                "services.balancer.environment.BALANCER_BACKENDS",
                format_args!(
                    "is {backends:?}: the balancer must discover every task through tasks.hits"
                ),
            );
        }
        if env.get("BALANCER_HEALTH_PATH").is_none_or(|p| p.is_empty()) {
            problems.add(
                "services.balancer.environment.BALANCER_HEALTH_PATH",
                "missing: with dnsrr the balancer is what health-checks each task",
            );
        }
    }

    if let Some(secrets) = doc.get("secrets").and_then(Value::as_object) {
        for (name, secret) in secrets {
            let external = secret.get("external") == Some(&Value::Bool(true));
            if !external && secret.get("file").is_none() {
                problems.add(
                    format!("secrets.{name}"),
                    "neither external nor from a file: its value would be in the stack file",
                );
            }
        }
    }
    problems.found
}

/// Every rule of one droplet role file. `raw` is the file before substitution: what a
/// value comes from is the point of most rules.
fn check_role(path: &str, raw: &Value) -> Vec<String> {
    let mut problems = Problems::new(path);
    let doc = substituted(path, raw);
    if let Err(error) = deploy_checks::spec::parse(Path::new(path), &doc) {
        problems.add(&error.field, &error.message);
    }
    let edge = path.ends_with("/edge.yml");
    if services(raw).is_empty() {
        problems.add("services", "none");
    }
    for (name, service) in services(raw) {
        let field = |f: &str| format!("services.{name}.{f}");
        match text(service, "/restart") {
            Some("unless-stopped" | "always") => {}
            other => problems.add(
                field("restart"),
                format_args!(
                    "is {other:?}: dockerd must bring it back after a reboot (unless-stopped or always)"
                ),
            ),
        }
        check_healthcheck(&mut problems, name, service);

        let image = text(service, "/image").unwrap_or("");
        let from_registry = image
            .strip_prefix("${REGISTRY")
            .and_then(|rest| rest.split_once("}/"))
            .is_some_and(|(_, rest)| rest.contains(":${VERSION"));
        if !from_registry {
            problems.add(
                field("image"),
                format_args!(
                    "is {image:?}, not ${{REGISTRY}}/...:${{VERSION}}: droplets pull only the private registry's deployed version"
                ),
            );
        }

        for (i, port) in service
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let field = field(&format!("ports[{i}]"));
            // Short form: `${ADDR:?}:HOST:CONTAINER`; long form: `host_ip`.
            let (address, host_port) = match port {
                Value::String(short) => match short.rsplitn(3, ':').collect::<Vec<_>>()[..] {
                    [_, host, address] => (Some(address), Some(host)),
                    _ => (None, None),
                },
                long => (text(long, "/host_ip"), text(long, "/published")),
            };
            match address.and_then(required_variable) {
                None => problems.add(
                    &field,
                    format_args!(
                        "{port} is bound to no required address variable (${{PRIVATE_ADDR:?}}): it would listen on 0.0.0.0"
                    ),
                ),
                Some("PUBLIC_ADDR") if !edge || !matches!(host_port, Some("80" | "443")) => {
                    problems.add(
                        &field,
                        format_args!(
                            "{port} is public: only the edge's 80 and 443 are published on PUBLIC_ADDR"
                        ),
                    )
                }
                Some(_) => {}
            }
        }

        for (key, value) in environment(&mut problems, name, service) {
            let field = field(&format!("environment.{key}"));
            if url_with_password(&value) {
                problems.add(&field, "a URL with its password inline");
            } else if names_a_secret(&key) && required_variable(&value).is_none() {
                problems.add(
                    &field,
                    format_args!(
                        "is {value:?}: a secret comes whole from a required variable (${{{key}:?}}), never inline or defaulted"
                    ),
                );
            }
        }
    }
    problems.found
}

#[test]
fn the_swarm_stack_keeps_its_promises() {
    let stack = load(STACK);
    let mut problems = Problems::new(STACK);
    problems.found = check_stack(STACK, &stack.raw);
    problems.assert_none();
}

#[test]
fn every_droplet_role_keeps_its_promises() {
    let mut problems = Problems::new(ROLES);
    for (path, file) in role_files() {
        problems.found.extend(check_role(&path, &file.raw));
    }
    problems.assert_none();
}

/// `raw` with `change` applied to the value at `pointer` (which must exist, unless
/// `change` inserts into its parent).
fn broken(raw: &Value, pointer: &str, change: impl FnOnce(&mut Value)) -> Value {
    let mut copy = raw.clone();
    change(
        copy.pointer_mut(pointer)
            .unwrap_or_else(|| panic!("no {pointer} to break")),
    );
    copy
}

fn set(value: Value) -> impl FnOnce(&mut Value) {
    move |target| *target = value
}

fn remove(key: &'static str) -> impl FnOnce(&mut Value) {
    move |target| {
        target
            .as_object_mut()
            .expect("a mapping")
            .remove(key)
            .unwrap_or_else(|| panic!("no {key} to remove"));
    }
}

/// Each broken copy fails with exactly the problem expected, named by file, service and
/// field.
fn assert_caught(check: fn(&str, &Value) -> Vec<String>, path: &str, cases: Vec<(Value, &str)>) {
    for (doc, expected) in cases {
        let found = check(path, &doc);
        assert!(
            found
                .iter()
                .any(|p| p.starts_with(&format!("{path}: {expected}"))),
            "not caught: {path}: {expected}; reported instead: {found:#?}"
        );
    }
}

#[test]
fn a_broken_stack_is_reported_by_file_service_and_field() {
    let raw = load(STACK).raw;
    let cases = vec![
        (
            broken(
                &raw,
                "/services/hits/deploy/endpoint_mode",
                set(json!("vip")),
            ),
            "services.hits.deploy.endpoint_mode: is \"vip\", must be dnsrr",
        ),
        (
            broken(
                &raw,
                "/services/balancer/ports/0/mode",
                set(json!("ingress")),
            ),
            "services.balancer.ports[0].mode:",
        ),
        (
            broken(&raw, "/services/balancer/ports", set(json!(["80:8080"]))),
            "services.balancer.ports[0].mode:",
        ),
        (
            broken(&raw, "/services/redis", |redis| {
                redis["ports"] = json!([{"target": 6379, "published": 6379, "mode": "host"}]);
            }),
            "services.redis.ports: only the balancer publishes",
        ),
        (
            broken(&raw, "/services/hits", remove("healthcheck")),
            "services.hits.healthcheck: missing",
        ),
        (
            broken(
                &raw,
                "/services/hits/deploy/update_config/order",
                set(json!("stop-first")),
            ),
            "services.hits.deploy.update_config.order: is Some(\"stop-first\"), must be start-first",
        ),
        (
            broken(
                &raw,
                "/services/hits/deploy/update_config",
                remove("failure_action"),
            ),
            "services.hits.deploy.update_config.failure_action: is None, must be rollback",
        ),
        (
            broken(
                &raw,
                "/services/hits/deploy/resources/limits",
                remove("memory"),
            ),
            "services.hits.deploy.resources.limits.memory: missing",
        ),
        (
            broken(&raw, "/services/hits/stop_grace_period", set(json!("5s"))),
            "services.hits.stop_grace_period:",
        ),
        (
            broken(
                &raw,
                "/services/postgres/deploy/placement",
                remove("constraints"),
            ),
            "services.postgres.deploy.placement.constraints:",
        ),
        (
            broken(
                &raw,
                "/services/redis/deploy/placement/constraints",
                set(json!(["node.role == worker"])),
            ),
            "services.redis.deploy.placement.constraints:",
        ),
        (
            broken(
                &raw,
                "/services/postgres/deploy/update_config/order",
                set(json!("start-first")),
            ),
            "services.postgres.deploy.update_config.order: must be stop-first",
        ),
        (
            broken(
                &raw,
                "/services/postgres/volumes",
                set(json!(["/srv/pg:/var/lib/postgresql/data"])),
            ),
            "services.postgres.volumes: its data is on no named volume",
        ),
        (
            broken(&raw, "/services/postgres/environment", |env| {
                let env = env.as_object_mut().unwrap();
                env.remove("POSTGRES_PASSWORD_FILE");
                env.insert("POSTGRES_PASSWORD".into(), json!("hunter2-hunter2"));
            }),
            "services.postgres.environment.POSTGRES_PASSWORD: a secret inline",
        ),
        (
            broken(
                &raw,
                "/services/hits/environment/DATABASE_URL",
                set(json!("postgres://hits:hunter2@postgres:5432/hits")),
            ),
            "services.hits.environment.DATABASE_URL: a URL with its password inline",
        ),
        (
            broken(
                &raw,
                "/services/balancer/environment/BALANCER_ADMIN_TOKEN_FILE",
                set(json!("/run/secrets/postgres_password")),
            ),
            "services.balancer.environment.BALANCER_ADMIN_TOKEN_FILE: reads the secret postgres_password, which the service is not given",
        ),
        (
            broken(
                &raw,
                "/secrets/admin_token",
                set(json!({"name": "admin_token"})),
            ),
            "secrets.admin_token: neither external nor from a file",
        ),
        (
            broken(
                &raw,
                "/services/balancer/environment/BALANCER_BACKENDS",
                set(json!("hits:8000")),
            ),
            "services.balancer.environment.BALANCER_BACKENDS: is Some(\"hits:8000\")",
        ),
        // What only the Compose Specification refuses.
        (
            broken(
                &raw,
                "/services/hits/healthcheck/interval",
                set(json!("2 parsecs")),
            ),
            "services.hits.healthcheck",
        ),
    ];
    assert_caught(check_stack, STACK, cases);
}

#[test]
fn a_broken_role_is_reported_by_file_service_and_field() {
    let files: BTreeMap<String, Value> = role_files()
        .into_iter()
        .map(|(path, file)| (path, file.raw))
        .collect();
    let app = format!("{ROLES}/app.yml");
    let edge = format!("{ROLES}/edge.yml");
    let data = format!("{ROLES}/data.yml");
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            &app,
            broken(
                &files[&app],
                "/services/hits/ports/0",
                set(json!("8000:8000")),
            ),
            "services.hits.ports[0]: \"8000:8000\" is bound to no required address variable",
        ),
        (
            &app,
            broken(
                &files[&app],
                "/services/hits/ports/0",
                set(json!("${PRIVATE_ADDR:-0.0.0.0}:8000:8000")),
            ),
            "services.hits.ports[0]:",
        ),
        (
            &app,
            broken(
                &files[&app],
                "/services/hits/ports/0",
                set(json!("${PUBLIC_ADDR:?}:8000:8000")),
            ),
            "services.hits.ports[0]: \"${PUBLIC_ADDR:?}:8000:8000\" is public",
        ),
        (
            &app,
            broken(&files[&app], "/services/hits", remove("restart")),
            "services.hits.restart: is None",
        ),
        (
            &app,
            broken(
                &files[&app],
                "/services/hits/restart",
                set(json!("on-failure")),
            ),
            "services.hits.restart: is Some(\"on-failure\")",
        ),
        (
            &app,
            broken(
                &files[&app],
                "/services/hits/image",
                set(json!("hitscale/hits:latest")),
            ),
            "services.hits.image: is \"hitscale/hits:latest\"",
        ),
        (
            &data,
            broken(&files[&data], "/services/backup", remove("healthcheck")),
            "services.backup.healthcheck: missing",
        ),
        (
            &data,
            broken(
                &files[&data],
                "/services/postgres/environment/POSTGRES_PASSWORD",
                set(json!("hunter2-hunter2")),
            ),
            "services.postgres.environment.POSTGRES_PASSWORD: is \"hunter2-hunter2\"",
        ),
        (
            &data,
            broken(
                &files[&data],
                "/services/redis/environment/REDIS_PASSWORD",
                set(json!("${REDIS_PASSWORD:-changeme}")),
            ),
            "services.redis.environment.REDIS_PASSWORD:",
        ),
        (
            &edge,
            broken(
                &files[&edge],
                "/services/balancer/environment/BALANCER_ADMIN_TOKEN",
                set(json!("an-admin-token-0123456789")),
            ),
            "services.balancer.environment.BALANCER_ADMIN_TOKEN:",
        ),
        (
            &edge,
            broken(
                &files[&edge],
                "/services/balancer/ports/2",
                set(json!("${PUBLIC_ADDR:?}:9000:9000")),
            ),
            "services.balancer.ports[2]: \"${PUBLIC_ADDR:?}:9000:9000\" is public",
        ),
        (
            &edge,
            broken(
                &files[&edge],
                "/services/balancer/healthcheck",
                set(json!({"disable": true})),
            ),
            "services.balancer.healthcheck.disable:",
        ),
        (
            &edge,
            broken(
                &files[&edge],
                "/services/balancer/restart",
                set(json!("sometimes")),
            ),
            "services.balancer.restart",
        ),
    ];
    for (path, doc, expected) in cases {
        assert_caught(check_role, path, vec![(doc, expected)]);
    }
}

#[test]
fn the_helpers_read_what_they_claim() {
    assert_eq!(required_variable("${PRIVATE_ADDR:?}"), Some("PRIVATE_ADDR"));
    assert_eq!(required_variable("${X?must be set}"), Some("X"));
    assert_eq!(required_variable("${X:-0.0.0.0}"), None);
    assert_eq!(required_variable("${X}"), None);
    assert_eq!(required_variable("0.0.0.0"), None);
    assert_eq!(required_variable("${A:?}${B:?}"), None);
    assert!(url_with_password("postgres://u:p@db:5432/x"));
    assert!(!url_with_password("postgres://hits@postgres:5432/hits"));
    assert!(!url_with_password("redis://redis:6379"));
    assert_eq!(seconds("15s"), Some(15));
    assert_eq!(seconds("1m30s"), Some(90));
    assert_eq!(seconds("15"), None);
    assert!(names_a_secret("BALANCER_STICKY_KEY") && names_a_secret("REDIS_URL"));
    assert!(!names_a_secret("BALANCER_ADMIN_TOKEN_FILE") && !names_a_secret("PORT"));
    assert!(!names_a_secret("BALANCER_TLS_KEY"));
}
