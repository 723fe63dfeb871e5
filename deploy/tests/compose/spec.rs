//! Structure: every compose file parses as the Compose Specification (the `compose_spec`
//! crate), after variable substitution, with no file from outside the repository.

use std::path::Path;

use deploy_checks::interpolate::{self, InterpolationError};
use deploy_checks::spec;
use serde_json::{Value, json};

use crate::helpers;

#[test]
fn every_compose_file_is_valid_with_only_the_required_secrets_set() {
    for file in helpers::compose_files() {
        let (document, _) = helpers::interpolated(&file, &helpers::required_secrets());
        if let Err(error) = spec::parse(&file.path, &document) {
            panic!("does not match the Compose Specification: {error}");
        }
    }
}

#[test]
fn without_its_secrets_the_root_file_refuses_to_load_naming_each_and_how_to_make_it() {
    let root = helpers::root_compose();
    for missing in helpers::REQUIRED_SECRETS {
        let mut env = helpers::required_secrets();
        env.remove(missing);
        let error = interpolate::interpolate_value(&root.raw, &env)
            .expect_err("a required secret is missing, yet the file loads");
        match error {
            InterpolationError::Required { name, message } => {
                assert_eq!(name, missing);
                for hint in [".env", "openssl rand -hex 32", "Quick start"] {
                    assert!(
                        message.contains(hint),
                        "the error for {name} does not say {hint:?}: {message}"
                    );
                }
            }
            other => panic!("{missing}: {other}"),
        }
    }
}

#[test]
fn every_compose_file_is_valid_with_the_example_env_file() {
    let env = helpers::env_example_values();
    for file in helpers::compose_files() {
        let (document, _) = helpers::interpolated(&file, &env);
        if let Err(error) = spec::parse(&file.path, &document) {
            panic!("with .env.example, does not match the Compose Specification: {error}");
        }
    }
}

/// The root file with one change made by `edit`, and the field its error must name.
struct Broken {
    what: &'static str,
    edit: fn(&mut Value),
    field: &'static str,
}

#[test]
fn the_spec_parser_rejects_what_compose_rejects() {
    // Each change alone is refused by `docker compose config`; a parser that accepted
    // anything (or only some top-level shape) would let one through.
    let cases = [
        Broken {
            what: "an unknown service key",
            edit: |c| c["services"]["hits"]["restart_policy"] = json!("always"),
            field: "services.hits.restart_policy",
        },
        Broken {
            what: "an unknown top-level key",
            edit: |c| c["servics"] = json!({}),
            field: "servics",
        },
        Broken {
            what: "a host port out of range",
            edit: |c| c["services"]["balancer"]["ports"] = json!(["127.0.0.1:80800:8080"]),
            field: "services.balancer.ports",
        },
        Broken {
            what: "a port that is not a number",
            edit: |c| c["services"]["balancer"]["ports"] = json!(["127.0.0.1:http:8080"]),
            field: "services.balancer.ports",
        },
        Broken {
            what: "a list where a duration string belongs",
            edit: |c| c["services"]["hits"]["healthcheck"]["interval"] = json!(["2s"]),
            field: "services.hits.healthcheck",
        },
        Broken {
            what: "a duration with an unknown unit",
            edit: |c| c["services"]["hits"]["stop_grace_period"] = json!("15 seconds"),
            field: "services.hits.stop_grace_period",
        },
        Broken {
            what: "an unknown depends_on condition",
            edit: |c| {
                c["services"]["hits"]["depends_on"]["postgres"]["condition"] =
                    json!("service_ready")
            },
            field: "services.hits.depends_on",
        },
        Broken {
            what: "a named volume that is not declared",
            edit: |c| {
                c["services"]["postgres"]["volumes"] = json!(["nodata:/var/lib/postgresql/data"])
            },
            field: "services.postgres.volumes",
        },
        Broken {
            what: "a dependency on a service that does not exist",
            edit: |c| {
                c["services"]["balancer"]["depends_on"] =
                    json!({"hit": {"condition": "service_healthy"}})
            },
            field: "services.balancer.depends_on",
        },
        Broken {
            what: "a network that is not declared",
            edit: |c| c["services"]["redis"]["networks"] = json!(["backend"]),
            field: "services",
        },
    ];
    let path = Path::new("docker-compose.yml");
    let valid = helpers::root_with_defaults();
    spec::parse(path, &valid).expect("the unchanged root file parses");
    for case in cases {
        let mut broken = valid.clone();
        (case.edit)(&mut broken);
        assert_ne!(broken, valid, "{}: the edit changed nothing", case.what);
        match spec::parse(path, &broken) {
            Ok(_) => panic!("{} was accepted", case.what),
            Err(error) => {
                assert_eq!(error.field, case.field, "{}: {error}", case.what);
                assert!(
                    error.to_string().starts_with("docker-compose.yml: "),
                    "{}: the error names the file: {error}",
                    case.what
                );
            }
        }
    }
}
