//! What the README's tutorial switches in docker-compose.yml: a slow instance on demand that
//! the balancer and Prometheus find under the name `hits`, and the balancer's mode.

use crate::helpers::{self, environment, service};

#[test]
fn the_slow_instance_is_hits_on_demand_with_its_own_work_and_the_name_hits() {
    let compose = helpers::root_with_defaults();
    let slow = service(&compose, "hits-slow");
    assert_eq!(
        slow["profiles"],
        serde_json::json!(["slow"]),
        "hits-slow runs only with the profile `slow`"
    );
    assert_eq!(
        slow["extends"]["service"], "hits",
        "hits-slow is the hits service, not a copy that drifts from it"
    );
    assert!(
        slow["extends"].get("file").is_none(),
        "extends the hits of this same file"
    );
    assert_eq!(
        environment(slow)["WORK_MS"],
        "100",
        "SLOW_WORK_MS (default 100) is its simulated work"
    );
    let hits_work = environment(service(&compose, "hits"))["WORK_MS"].clone();
    assert_eq!(
        hits_work, "0",
        "the other instances do no simulated work by default"
    );
    assert!(
        slow["networks"]["default"]["aliases"]
            .as_array()
            .is_some_and(|a| a.iter().any(|n| n == "hits")),
        "hits-slow answers to the name `hits`, which the balancer resolves: {slow}"
    );
    assert!(
        slow.get("ports").is_none() && slow.get("container_name").is_none(),
        "hits-slow publishes nothing and fixes no name"
    );
}

#[test]
fn the_balancer_mode_is_a_setting_that_defaults_to_layer_7() {
    let compose = helpers::root_with_defaults();
    let balancer = environment(service(&compose, "balancer"));
    assert_eq!(balancer["BALANCER_MODE"], "http");
    let with_tcp = helpers::interpolated(&helpers::root_compose(), &{
        let mut vars = helpers::required_secrets();
        vars.insert("BALANCER_MODE".into(), "tcp".into());
        vars
    })
    .0;
    assert_eq!(
        environment(service(&with_tcp, "balancer"))["BALANCER_MODE"],
        "tcp"
    );
}
