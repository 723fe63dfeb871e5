//! Meaning: what the tutorial and the end-to-end script rely on in docker-compose.yml.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::helpers::{self, environment, service, services};

#[test]
fn hits_scales_because_it_fixes_no_host_port_name_or_instance_id() {
    let compose = helpers::root_with_defaults();
    let hits = service(&compose, "hits");
    assert!(
        hits.get("ports").is_none(),
        "hits must publish no host port, or `--scale hits=3` collides: {hits}"
    );
    assert!(
        hits.get("container_name").is_none(),
        "a container_name prevents scaling hits"
    );
    assert!(
        !environment(hits).contains_key("INSTANCE_ID"),
        "INSTANCE_ID must be left to its default (the container's host name) so instances differ"
    );
    assert!(
        hits["expose"]
            .as_array()
            .is_some_and(|ports| ports.iter().any(|p| p == "8000")),
        "hits exposes its port 8000 on the compose network"
    );
}

#[test]
fn the_balancer_publishes_one_port_on_loopback_by_default() {
    let compose = helpers::root_with_defaults();
    let mut published = Vec::new();
    for (name, svc) in services(&compose) {
        if let Some(ports) = svc.get("ports") {
            published.push((name.clone(), ports.clone()));
        }
    }
    assert_eq!(
        published.len(),
        1,
        "only the balancer is published to the host: {published:?}"
    );
    let (name, ports) = &published[0];
    assert_eq!(name, "balancer");
    assert_eq!(ports, &serde_json::json!(["127.0.0.1:8080:8080"]));

    let balancer_env = environment(service(&compose, "balancer"));
    assert_eq!(
        balancer_env["BALANCER_LISTEN"], "0.0.0.0:8080",
        "listens where the port is published"
    );
}

#[test]
fn the_balancer_discovers_every_hits_container_by_name() {
    let compose = helpers::root_with_defaults();
    let balancer = environment(service(&compose, "balancer"));
    let hits = environment(service(&compose, "hits"));
    assert_eq!(
        balancer["BALANCER_BACKENDS"],
        format!("hits:{}", hits["PORT"])
    );
    assert_eq!(balancer["BALANCER_HEALTH_PATH"], "/healthz");
    for key in [
        "BALANCER_HEALTH_INTERVAL",
        "BALANCER_RESOLVE_INTERVAL",
        "BALANCER_STICKY",
        "BALANCER_ALGORITHM",
    ] {
        assert!(
            balancer.get(key).is_some_and(|v| !v.is_empty()),
            "{key} is set for the balancer"
        );
    }
    assert_eq!(
        balancer["BALANCER_STICKY"], "false",
        "sticky sessions are off unless asked for"
    );
}

#[test]
fn the_app_reaches_postgres_and_redis_by_service_name() {
    let compose = helpers::root_with_defaults();
    let hits = environment(service(&compose, "hits"));
    let postgres = environment(service(&compose, "postgres"));
    let expected = format!(
        "postgres://{}:{}@postgres:5432/{}",
        postgres["POSTGRES_USER"], postgres["POSTGRES_PASSWORD"], postgres["POSTGRES_DB"]
    );
    assert_eq!(hits["DATABASE_URL"], expected);
    assert_eq!(hits["REDIS_URL"], "redis://redis:6379");
}

#[test]
fn long_running_services_have_health_checks_and_restart_policies() {
    let compose = helpers::root_with_defaults();
    for (name, svc) in services(&compose) {
        if svc.get("profiles").is_some() {
            continue;
        }
        let test = &svc["healthcheck"]["test"];
        assert!(
            test.as_array().is_some_and(|t| !t.is_empty())
                || test.as_str().is_some_and(|t| !t.is_empty()),
            "service {name} has no healthcheck test"
        );
        assert!(
            svc["healthcheck"].get("disable").is_none(),
            "service {name} disables its healthcheck"
        );
        assert!(
            matches!(
                svc["restart"].as_str(),
                Some("always" | "unless-stopped" | "on-failure")
            ),
            "service {name} has no restart policy"
        );
    }
}

#[test]
fn start_up_waits_for_health_not_just_for_containers() {
    let compose = helpers::root_with_defaults();
    let all = services(&compose);
    let expected: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::from([
        ("hits", BTreeSet::from(["postgres", "redis"])),
        ("balancer", BTreeSet::from(["hits"])),
        // `docker compose run loadgen` would reconcile its dependencies with this file (scale
        // 1, the shell's variables) and undo the reader's `--scale hits=5`.
        ("loadgen", BTreeSet::new()),
    ]);
    for (name, svc) in all {
        let Some(depends_on) = svc.get("depends_on") else {
            continue;
        };
        let map = depends_on.as_object().unwrap_or_else(|| {
            panic!("{name}: depends_on must use the long form with a condition")
        });
        for (dependency, spec) in map {
            assert_eq!(
                spec["condition"], "service_healthy",
                "{name} depends on {dependency} without waiting for it to be healthy"
            );
            assert!(
                all.get(dependency)
                    .is_some_and(|d| d.get("healthcheck").is_some()),
                "{name} waits for {dependency}, which has no healthcheck"
            );
        }
    }
    for (name, dependencies) in expected {
        let actual: BTreeSet<&str> = service(&compose, name)["depends_on"]
            .as_object()
            .map(|m| m.keys().map(String::as_str).collect())
            .unwrap_or_default();
        assert_eq!(actual, dependencies, "depends_on of {name}");
    }
}

#[test]
fn backing_services_pin_major_versions_and_keep_postgres_data_in_a_volume() {
    let compose = helpers::root_with_defaults();
    assert_eq!(service(&compose, "postgres")["image"], "postgres:15");
    assert_eq!(service(&compose, "redis")["image"], "redis:7");
    for (name, svc) in services(&compose) {
        if let Some(image) = svc.get("image").and_then(Value::as_str) {
            let tag = image.rsplit_once(':').map(|(_, tag)| tag).unwrap_or("");
            assert!(
                !tag.is_empty() && tag != "latest",
                "service {name} uses an unpinned image {image}"
            );
        }
    }
    let volumes = service(&compose, "postgres")["volumes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let data = volumes
        .iter()
        .filter_map(Value::as_str)
        .find(|v| v.ends_with(":/var/lib/postgresql/data"))
        .expect("postgres keeps /var/lib/postgresql/data in a volume");
    let volume = data.split(':').next().unwrap();
    assert!(
        compose["volumes"].get(volume).is_some(),
        "the postgres data volume {volume} is declared at the top level (a named volume, not a bind mount)"
    );
}

#[test]
fn images_are_built_from_targets_the_dockerfile_defines() {
    let compose = helpers::root_with_defaults();
    let dockerfile = std::fs::read_to_string(helpers::repo_root().join("Dockerfile"))
        .expect("a Dockerfile at the root");
    let stages: BTreeSet<String> = dockerfile
        .lines()
        .filter(|line| line.trim_start().to_ascii_uppercase().starts_with("FROM "))
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let position = words.iter().position(|w| w.eq_ignore_ascii_case("as"))?;
            words.get(position + 1).map(|s| s.to_string())
        })
        .collect();
    for name in ["hits", "balancer", "loadgen"] {
        let build = &service(&compose, name)["build"];
        assert_eq!(
            build["context"], ".",
            "{name} builds from the repository root"
        );
        let target = build["target"]
            .as_str()
            .unwrap_or_else(|| panic!("{name} names a Dockerfile target"));
        assert!(
            stages.contains(target),
            "Dockerfile has no stage {target:?} (stages: {stages:?})"
        );
    }
    assert_eq!(
        service(&compose, "loadgen")["profiles"],
        serde_json::json!(["loadgen"]),
        "loadgen runs only on demand"
    );
}

#[test]
fn every_variable_is_documented_in_env_example_with_its_default() {
    let documented = helpers::env_example();
    let mut used = BTreeSet::new();
    for file in helpers::compose_files() {
        let (_, uses) = helpers::interpolated(&file, &BTreeMap::new());
        for variable in uses {
            let entry = documented.get(&variable.name).unwrap_or_else(|| {
                panic!(
                    "{} uses ${{{}}}, which .env.example does not document",
                    file.path.display(),
                    variable.name
                )
            });
            if file.path.ends_with("docker-compose.yml")
                && file.path.parent() == Some(helpers::repo_root().as_path())
            {
                let default = variable.default.as_deref().unwrap_or_else(|| {
                    panic!(
                        "docker-compose.yml uses ${{{}}} without a default, so it needs a .env",
                        variable.name
                    )
                });
                assert_eq!(
                    entry.value, default,
                    ".env.example line {} shows {}={} but the default in docker-compose.yml is {default:?}",
                    entry.line, variable.name, entry.value
                );
            }
            used.insert(variable.name);
        }
    }
    let unused: Vec<_> = documented
        .keys()
        .filter(|name| !used.contains(*name))
        .collect();
    assert!(
        unused.is_empty(),
        ".env.example documents variables no compose file uses: {unused:?}"
    );
}
