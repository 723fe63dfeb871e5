//! Structure: every compose file validates against `shared/schemas/compose-spec.json`.

use std::collections::BTreeMap;

use crate::helpers;

#[test]
fn every_compose_file_is_valid_with_no_env_file() {
    let schema = helpers::schema();
    for file in helpers::compose_files() {
        let (document, _) = helpers::interpolated(&file, &BTreeMap::new());
        let violations = schema.violations(&document);
        assert!(
            violations.is_empty(),
            "{} does not match the Compose Specification:\n{}",
            file.path.display(),
            violations.join("\n")
        );
    }
}

#[test]
fn every_compose_file_is_valid_with_the_example_env_file() {
    let schema = helpers::schema();
    let env = helpers::env_example_values();
    for file in helpers::compose_files() {
        let (document, _) = helpers::interpolated(&file, &env);
        let violations = schema.violations(&document);
        assert!(
            violations.is_empty(),
            "{} with .env.example does not match the Compose Specification:\n{}",
            file.path.display(),
            violations.join("\n")
        );
    }
}

#[test]
fn the_schema_rejects_what_compose_rejects() {
    // Guards against a validator that accepts everything (a wrong draft, an empty schema).
    let schema = helpers::schema();
    let mut broken = helpers::root_with_defaults();
    broken["services"]["hits"]["healthcheck"]["interval"] = serde_json::json!(["2s"]);
    broken["services"]["hits"]["restart_policy"] = serde_json::json!("always");
    broken["servics"] = serde_json::json!({});
    let violations = schema.violations(&broken);
    for expected in ["/services/hits/healthcheck/interval", "/services/hits", "/"] {
        assert!(
            violations
                .iter()
                .any(|v| v.starts_with(&format!("{expected}:"))),
            "expected a violation at {expected}, got {violations:#?}"
        );
    }
}
