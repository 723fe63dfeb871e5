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
fn only_the_balancer_and_prometheus_publish_and_admin_ports_only_on_loopback() {
    let compose = helpers::root_with_defaults();
    let mut published = BTreeMap::new();
    for (name, svc) in services(&compose) {
        if let Some(ports) = svc.get("ports") {
            published.insert(name.as_str(), ports.clone());
        }
    }
    assert_eq!(
        published,
        BTreeMap::from([
            (
                "balancer",
                serde_json::json!(["127.0.0.1:8080:8080", "127.0.0.1:9000:9000"])
            ),
            ("prometheus", serde_json::json!(["127.0.0.1:9090:9090"])),
        ]),
        "what is published to the host, by default"
    );
    let balancer_env = environment(service(&compose, "balancer"));
    assert_eq!(
        balancer_env["BALANCER_LISTEN"], "0.0.0.0:8080",
        "listens where the port is published"
    );
    assert_eq!(
        balancer_env["BALANCER_ADMIN_LISTEN"], "0.0.0.0:9000",
        "the admin API listens where its port is published"
    );

    // BALANCER_BIND opens the public port to other machines, never the admin API nor
    // Prometheus: their host address is not a variable.
    let raw = helpers::root_compose().raw;
    for (name, port) in [("balancer", 1), ("prometheus", 0)] {
        let spec = raw["services"][name]["ports"][port]
            .as_str()
            .unwrap_or_else(|| panic!("{name} publishes port #{port} in the short form"));
        assert!(
            spec.starts_with("127.0.0.1:"),
            "{name}: {spec} must be bound to 127.0.0.1 whatever the environment says"
        );
    }
    let open = helpers::interpolated(
        &helpers::root_compose(),
        &helpers::required_secrets()
            .into_iter()
            .chain([("BALANCER_BIND".to_owned(), "0.0.0.0".to_owned())])
            .collect(),
    )
    .0;
    assert_eq!(
        service(&open, "balancer")["ports"],
        serde_json::json!(["0.0.0.0:8080:8080", "127.0.0.1:9000:9000"])
    );
}

#[test]
fn the_admin_api_and_sticky_cookies_get_their_secrets_from_the_environment() {
    let compose = helpers::root_with_defaults();
    let balancer = environment(service(&compose, "balancer"));
    for name in helpers::REQUIRED_SECRETS {
        assert_eq!(
            balancer.get(name),
            helpers::required_secrets().get(name),
            "{name} reaches the balancer from .env"
        );
    }
    // Prometheus reads the same token from a file: the compose secret made from it.
    assert_eq!(
        compose["secrets"]["admin_token"],
        serde_json::json!({"environment": "BALANCER_ADMIN_TOKEN"})
    );
    assert_eq!(
        service(&compose, "prometheus")["secrets"],
        serde_json::json!(["admin_token"])
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
        let (_, uses) = helpers::interpolated(&file, &helpers::required_secrets());
        for variable in uses {
            let entry = documented.get(&variable.name).unwrap_or_else(|| {
                panic!(
                    "{} uses ${{{}}}, which .env.example does not document",
                    file.path.display(),
                    variable.name
                )
            });
            // The root file, alone or with an override merged in (the same variables).
            if file.path.parent() == Some(helpers::repo_root().as_path()) {
                if variable.required {
                    // A secret: no default anyone could leave in place; .env.example shows
                    // it empty, to be filled (the Quick start generates it).
                    assert!(
                        helpers::REQUIRED_SECRETS.contains(&variable.name.as_str()),
                        "docker-compose.yml requires ${{{}}}, which is not one of the known secrets {:?}: give it a default",
                        variable.name,
                        helpers::REQUIRED_SECRETS
                    );
                    assert_eq!(
                        entry.value, "",
                        ".env.example line {} must leave the secret {} empty, not suggest a value",
                        entry.line, variable.name
                    );
                } else {
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

/// deploy/prometheus/prometheus.yml, parsed.
fn prometheus_config() -> Value {
    let path = helpers::repo_root().join("deploy/prometheus/prometheus.yml");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
    serde_yaml_ng::from_str(&text)
        .unwrap_or_else(|error| panic!("{} is not valid YAML: {error}", path.display()))
}

fn scrape_job<'a>(config: &'a Value, name: &str) -> &'a Value {
    config["scrape_configs"]
        .as_array()
        .and_then(|jobs| jobs.iter().find(|job| job["job_name"] == name))
        .unwrap_or_else(|| panic!("prometheus.yml has no scrape job {name:?}"))
}

#[test]
fn prometheus_runs_on_demand_with_the_repository_config_read_only() {
    let compose = helpers::root_with_defaults();
    let prometheus = service(&compose, "prometheus");
    assert_eq!(
        prometheus["profiles"],
        serde_json::json!(["observability"]),
        "Prometheus runs only with --profile observability"
    );
    let image = prometheus["image"].as_str().expect("an image");
    assert!(
        image.starts_with("prom/prometheus:v"),
        "the official image, pinned: {image}"
    );
    // deploy/offline-images.sh builds its stand-in under the name the compose file gives.
    let offline = std::fs::read_to_string(helpers::repo_root().join("deploy/offline-images.sh"))
        .expect("deploy/offline-images.sh");
    assert!(
        offline.contains("\"$offline_dir/prometheus\""),
        "deploy/offline-images.sh builds no Prometheus stand-in"
    );
    let config_mount = prometheus["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .find(|v| v.contains(":/etc/prometheus/prometheus.yml"))
        .expect("prometheus.yml is mounted into the container");
    assert_eq!(
        config_mount, "./deploy/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro",
        "the repository's config, read-only"
    );
    let command: Vec<&str> = prometheus["command"]
        .as_array()
        .expect("command as a list")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        command.contains(&"--config.file=/etc/prometheus/prometheus.yml"),
        "{command:?}"
    );
    let test = &prometheus["healthcheck"]["test"];
    assert!(
        test.as_array().is_some_and(|t| t.len() > 1),
        "prometheus has a healthcheck, so `up --wait` waits until it is ready"
    );
}

#[test]
fn prometheus_scrapes_the_balancer_admin_port_with_the_token_and_every_hits_instance() {
    let compose = helpers::root_with_defaults();
    let config = prometheus_config();

    let balancer = scrape_job(&config, "balancer");
    let admin_port = environment(service(&compose, "balancer"))["BALANCER_ADMIN_LISTEN"]
        .rsplit_once(':')
        .map(|(_, port)| port.to_owned())
        .expect("BALANCER_ADMIN_LISTEN has a port");
    assert_eq!(
        balancer["static_configs"][0]["targets"],
        serde_json::json!([format!("balancer:{admin_port}")]),
        "the balancer's admin listener, where /metrics is served"
    );
    assert_eq!(balancer["metrics_path"], "/metrics");
    // Compose mounts a secret at /run/secrets/<name>.
    assert_eq!(
        balancer["authorization"]["credentials_file"],
        "/run/secrets/admin_token"
    );
    assert!(
        balancer["authorization"].get("credentials").is_none(),
        "no token written into the file itself"
    );

    let hits = scrape_job(&config, "hits");
    let sd = &hits["dns_sd_configs"][0];
    assert_eq!(
        sd["names"],
        serde_json::json!(["hits"]),
        "the compose service name"
    );
    assert_eq!(sd["type"], "A", "one address per container");
    let hits_port: u64 = environment(service(&compose, "hits"))["PORT"]
        .parse()
        .expect("PORT of hits");
    assert_eq!(sd["port"], hits_port);
}
