//! The HTTPS switch: `COMPOSE_FILE=docker-compose.yml:docker-compose.https.yml` in `.env`
//! adds TLS termination with a certificate made at first start; without it, nothing changes.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::helpers::{self, environment, service, services};

const SWITCH: &str = "COMPOSE_FILE=docker-compose.yml:docker-compose.https.yml";

fn https_with(extra: &[(&str, &str)]) -> Value {
    let env: BTreeMap<String, String> = helpers::required_secrets()
        .into_iter()
        .chain(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        )
        .collect();
    helpers::interpolated(&helpers::https_compose(), &env).0
}

/// The volume mounted at `target` in a service's short-form volume list: (source, read-only).
fn mount_at(svc: &Value, target: &str) -> (String, bool) {
    svc["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .find_map(|spec| {
            let parts: Vec<&str> = spec.split(':').collect();
            (parts.get(1) == Some(&target))
                .then(|| (parts[0].to_owned(), parts.get(2) == Some(&"ro")))
        })
        .unwrap_or_else(|| panic!("nothing is mounted at {target}: {}", svc["volumes"]))
}

#[test]
fn without_the_switch_the_stack_stays_plain_http() {
    let compose = helpers::root_with_defaults();
    let balancer = environment(service(&compose, "balancer"));
    let tls: Vec<&String> = balancer
        .keys()
        .filter(|k| k.starts_with("BALANCER_TLS"))
        .collect();
    assert!(tls.is_empty(), "docker-compose.yml alone sets {tls:?}");
    assert!(!services(&compose).contains_key("tls-init"));
    assert!(compose["volumes"].get("tls-cert").is_none());
    // .env.example, copied to .env by the Quick start, leaves the switch off.
    assert!(
        !helpers::env_example().contains_key("COMPOSE_FILE"),
        ".env.example must not switch HTTPS on"
    );
}

#[test]
fn env_example_shows_the_switch_commented_out_naming_files_that_exist() {
    let text = std::fs::read_to_string(helpers::repo_root().join(".env.example")).unwrap();
    let line = text
        .lines()
        .find(|line| line.trim_start_matches(['#', ' ']) == SWITCH)
        .unwrap_or_else(|| panic!(".env.example has no commented line {SWITCH:?}"));
    assert!(line.starts_with('#'), "{line:?} must stay commented out");
    let files = SWITCH.split_once('=').unwrap().1.split(':');
    for (position, file) in files.enumerate() {
        assert!(
            helpers::repo_root().join(file).is_file(),
            "{file} named by the switch does not exist"
        );
        if position == 0 {
            assert_eq!(
                file, "docker-compose.yml",
                "the base comes first, the override after"
            );
        }
    }
}

#[test]
fn with_the_switch_the_balancer_also_serves_https_where_the_plain_port_is_published() {
    let compose = https_with(&[]);
    let balancer = service(&compose, "balancer");
    assert_eq!(
        balancer["ports"],
        json!([
            "127.0.0.1:8080:8080",
            "127.0.0.1:9000:9000",
            "127.0.0.1:8443:8443"
        ]),
        "HTTPS is added on loopback by default; the plain and admin ports stay"
    );
    let env = environment(balancer);
    assert_eq!(
        env["BALANCER_LISTEN"], "0.0.0.0:8080",
        "the plain listener stays (it redirects)"
    );
    assert_eq!(env["BALANCER_TLS_LISTEN"], "0.0.0.0:8443");
    assert_eq!(
        env["BALANCER_TLS_HTTPS_PORT"], "8443",
        "redirects name the host port"
    );

    // Moved and opened up: the published port and the port redirects name follow
    // HTTPS_PORT, the address follows BALANCER_BIND like the plain port's.
    let moved = https_with(&[("HTTPS_PORT", "9443"), ("BALANCER_BIND", "0.0.0.0")]);
    let balancer = service(&moved, "balancer");
    assert_eq!(
        balancer["ports"],
        json!([
            "0.0.0.0:8080:8080",
            "127.0.0.1:9000:9000",
            "0.0.0.0:9443:8443"
        ])
    );
    assert_eq!(environment(balancer)["BALANCER_TLS_HTTPS_PORT"], "9443");
}

#[test]
fn the_certificate_is_made_once_by_tls_init_into_a_named_volume_the_balancer_reads() {
    let compose = https_with(&[]);
    let balancer = service(&compose, "balancer");
    let init = service(&compose, "tls-init");
    let env = environment(balancer);

    let (volume, read_only) = mount_at(balancer, "/tls");
    assert!(read_only, "the balancer mounts the certificate read-only");
    assert!(
        compose["volumes"].get(&volume).is_some(),
        "{volume} is a named volume (it outlives containers)"
    );
    assert_eq!(
        mount_at(init, "/tls"),
        (volume, false),
        "tls-init writes into the same volume"
    );
    assert_eq!(env["BALANCER_TLS_CERT"], "/tls/cert.pem");
    assert_eq!(env["BALANCER_TLS_KEY"], "/tls/key.pem");

    assert_eq!(
        balancer["depends_on"],
        json!({
            "hits": {"condition": "service_healthy"},
            "tls-init": {"condition": "service_completed_successfully"},
        }),
        "the balancer starts once the certificate exists, and still after a healthy app"
    );
    // A one-shot: a restart policy would run it again and again.
    assert!(
        init.get("restart").is_none_or(|r| r == "no"),
        "tls-init must not restart: {init}"
    );
    assert!(init.get("ports").is_none(), "tls-init publishes nothing");
}

#[test]
fn tls_init_runs_the_repository_script_writing_where_the_balancer_reads() {
    let compose = https_with(&[]);
    let build = &service(&compose, "tls-init")["build"];
    assert_eq!(build["context"], ".");
    assert_eq!(build["target"], "tls-init");

    let dockerfile = std::fs::read_to_string(helpers::repo_root().join("Dockerfile")).unwrap();
    let stage = dockerfile
        .lines()
        .find(|line| line.starts_with("FROM ") && line.ends_with(" AS tls-init"))
        .expect("the Dockerfile has a stage tls-init");
    assert_eq!(
        stage, "FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS tls-init",
        "tls-init uses the image the build already has (it carries openssl)"
    );
    // The script is mounted, not copied: the build context is the Cargo workspace only.
    let init = service(&compose, "tls-init");
    assert_eq!(
        mount_at(init, "/usr/local/bin/make-cert.sh"),
        ("./deploy/tls/make-cert.sh".to_owned(), true)
    );
    assert_eq!(
        init["entrypoint"],
        json!(["sh", "/usr/local/bin/make-cert.sh"])
    );

    let script_path = helpers::repo_root().join("deploy/tls/make-cert.sh");
    let script = std::fs::read_to_string(&script_path).unwrap();
    for (what, expected) in [
        ("writes into the balancer's mount", "dir=${TLS_DIR:-/tls}"),
        (
            "names the certificate BALANCER_TLS_CERT reads",
            "cert=$dir/cert.pem",
        ),
        ("names the key BALANCER_TLS_KEY reads", "key=$dir/key.pem"),
        (
            "hands the key to the balancer image's user",
            "owner=${TLS_OWNER:-10001:10001}",
        ),
        ("keeps a certificate still valid", "-checkend"),
    ] {
        assert!(
            script.contains(expected),
            "make-cert.sh {what}: no {expected:?}"
        );
    }
    assert!(
        dockerfile.contains("USER 10001:10001"),
        "the runtime images run as 10001, the owner make-cert.sh gives the key"
    );
}
