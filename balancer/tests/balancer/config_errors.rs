//! A bad configuration value stops the balancer with exit code 2 and a message naming where
//! the value was set: the file's path, line and key, the flag, or the variable, whether
//! the parser or `validate()` found it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use balancer::config::{Config, Origin, Overrides};

/// Runs the binary with `args` and `env` (nothing inherited from the test's own
/// environment that the balancer reads), returning its exit code and stderr.
async fn run(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_balancer"));
    command.args(args).kill_on_drop(true);
    for (var, _) in std::env::vars() {
        if var.starts_with("BALANCER_") {
            command.env_remove(var);
        }
    }
    command.envs(env.iter().copied());
    let output = tokio::time::timeout(Duration::from_secs(30), command.output())
        .await
        .expect("the binary exits within 30 s")
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn write(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("balancer.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn an_out_of_bounds_value_names_its_file_line_and_key_its_flag_or_its_variable() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "backends = [\"127.0.0.1:9\"]\n\n[health]\npath = \"/healthz\"\ninterval = \"0s\"\n",
    );
    let path = file.to_str().unwrap();

    let (code, stderr) = run(&["--config", path], &[]).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("config file {path}:5: health.interval")),
        "{stderr}"
    );

    // The variable overrides the file, so the error is now the variable's.
    let (code, stderr) = run(
        &["--config", path],
        &[
            ("BALANCER_HEALTH_INTERVAL", "1ms"),
            ("BALANCER_HEALTH_RISE", "5000"),
        ],
    )
    .await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("environment variable BALANCER_HEALTH_RISE: health.rise is 5000"),
        "{stderr}"
    );

    let (code, stderr) = run(
        &["--config", path, "--health-interval", "2d"],
        &[("BALANCER_HEALTH_INTERVAL", "1s")],
    )
    .await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--health-interval"), "{stderr}");
    assert!(!stderr.contains("BALANCER_HEALTH_INTERVAL"), "{stderr}");

    let (code, stderr) = run(
        &["--config", path, "--health-interval", "48h"],
        &[("BALANCER_HEALTH_INTERVAL", "1s")],
    )
    .await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("flag --health-interval: health.interval is 172800s"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_value_the_variable_holds_but_cannot_be_parsed_names_the_variable() {
    let (code, stderr) = run(
        &["--backend", "127.0.0.1:9"],
        &[("BALANCER_RESOLVE_INTERVAL", "soon")],
    )
    .await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("environment variable BALANCER_RESOLVE_INTERVAL"),
        "{stderr}"
    );
    let (code, stderr) = run(
        &["--backend", "127.0.0.1:9", "--resolve-interval", "soon"],
        &[],
    )
    .await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--resolve-interval"), "{stderr}");
    assert!(!stderr.contains("environment variable"), "{stderr}");
    let (code, stderr) = run(&[], &[("BALANCER_BACKENDS", "127.0.0.1:9,weight=x")]).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("BALANCER_BACKENDS"), "{stderr}");
    let (code, stderr) = run(
        &["--backend", "127.0.0.1:9"],
        &[("BALANCER_TRUSTED_PROXIES", "10.0.0.0/8 nonsense")],
    )
    .await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("environment variable BALANCER_TRUSTED_PROXIES")
            && stderr.contains("\"nonsense\": not an IP address or CIDR"),
        "{stderr}"
    );
    // Empty, as Compose passes an unset variable on: no list, not an error (the run then
    // stops at the bad interval, after the variables were read).
    let (code, stderr) = run(
        &["--backend", "127.0.0.1:9", "--health-interval", "0s"],
        &[("BALANCER_TRUSTED_PROXIES", "")],
    )
    .await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("health.interval") && !stderr.contains("BALANCER_TRUSTED_PROXIES"),
        "{stderr}"
    );
}

#[test]
fn every_duration_and_limit_has_bounds_and_errors_say_where_the_value_was_set() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("[timeouts]\nconnect = \"0ms\"", "timeouts.connect"),
        (
            "[timeouts]\nresponse_header = \"0s\"",
            "timeouts.response_header",
        ),
        (
            "[timeouts]\nclient_header = \"0s\"",
            "timeouts.client_header",
        ),
        (
            "[timeouts]\nkeep_alive_idle = \"0s\"",
            "timeouts.keep_alive_idle",
        ),
        ("[timeouts]\ntunnel_idle = \"0s\"", "timeouts.tunnel_idle"),
        (
            "[timeouts]\nshutdown_grace = \"0s\"",
            "timeouts.shutdown_grace",
        ),
        ("[timeouts]\npool_idle = \"9600h\"", "timeouts.pool_idle"),
        (
            "[timeouts]\nlingering_time = \"0s\"",
            "timeouts.lingering_time",
        ),
        (
            "[timeouts]\nlingering_timeout = \"48h\"",
            "timeouts.lingering_timeout",
        ),
        (
            "[limits]\nlingering_bytes = 2000000000",
            "limits.lingering_bytes",
        ),
        ("[health]\ntimeout = \"0s\"", "health.timeout"),
        ("[health]\nfall = 100000", "health.fall"),
        ("[passive]\nbase_ejection = \"0s\"", "passive.base_ejection"),
        ("[passive]\nfailures = 5000", "passive.failures"),
        (
            "[discovery]\nresolve_timeout = \"0s\"",
            "discovery.resolve_timeout",
        ),
        ("[sticky]\nmax_age = \"0s\"", "sticky.max_age"),
        ("[sticky]\ncookie = \"a b\"", "sticky.cookie"),
        ("[limits]\nmax_connections = 0", "limits.max_connections"),
        ("[limits]\nmax_header_bytes = 10", "limits.max_header_bytes"),
        (
            "[limits]\nmax_header_bytes = 1000000000",
            "limits.max_header_bytes",
        ),
        ("[limits]\nmax_headers = 0", "limits.max_headers"),
        ("[limits]\nmax_headers = 100000", "limits.max_headers"),
        (
            "[limits]\nmax_idle_per_backend = 100000000",
            "limits.max_idle_per_backend",
        ),
        ("[retry]\nmax_attempts = 1000", "retry.max_attempts"),
        ("[retry]\nbudget_ratio = -1.0", "retry.budget_ratio"),
        ("[retry]\nbudget_min = 2000000", "retry.budget_min"),
    ];
    for (section, key) in cases {
        // Two lines before the section, so the bad value is on line 4.
        let text = format!("backends = [\"127.0.0.1:9\"]\n\n{section}\n");
        let path = write(dir.path(), &text);
        let error = Config::load(Some(&path), Overrides::default())
            .expect_err(key)
            .to_string();
        let expected = format!("config file {}:4: {key}", path.display());
        assert!(error.starts_with(&expected), "{key}: {error}");
    }
}

#[test]
fn a_conflict_between_two_values_blames_the_one_that_was_set() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "backends = [\"127.0.0.1:9\"]\n[passive]\nmax_ejection = \"1s\"\n",
    );
    let error = Config::load(Some(&path), Overrides::default())
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with(&format!(
            "config file {}:3: passive.max_ejection",
            path.display()
        )),
        "{error}"
    );

    // Set by a flag, with the origin the CLI records.
    let overrides = Overrides {
        backends: vec!["127.0.0.1:9".parse().unwrap()],
        health_path: Some("healthz".into()),
        origins: vec![("health.path", Origin::Flag("--health-path"))],
        ..Overrides::default()
    };
    let error = Config::load(None, overrides).unwrap_err().to_string();
    assert!(
        error.starts_with("flag --health-path: health.path"),
        "{error}"
    );
}

#[test]
fn a_sticky_key_that_does_not_parse_is_not_quoted() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "backends = [\"127.0.0.1:9\"]\n[sticky]\nkey = \"half-written-secret\n",
    );
    let error = Config::load(Some(&path), Overrides::default())
        .unwrap_err()
        .to_string();
    assert!(error.contains("line 3: sticky.key"), "{error}");
    assert!(!error.contains("half-written"), "{error}");
}

#[tokio::test]
async fn an_acme_set_up_that_cannot_work_stops_the_start_naming_its_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "backends = [\"127.0.0.1:9\"]\nlisten = \"127.0.0.1:0\"\n\n[tls]\nlisten = \"127.0.0.1:0\"\n\n[tls.acme]\ndomains = [\"app.hitscale.test\"]\ndirectory = \"https://127.0.0.1:9/dir\"\ncache_dir = \"acme\"\ndirectory_ca = \"missing-ca.pem\"\n",
    );
    let path = file.to_str().unwrap();
    let (code, stderr) = run(&["--config", path], &[]).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("config file {path}:11: tls.acme.directory_ca")),
        "{stderr}"
    );
    assert!(stderr.contains("missing-ca.pem"), "{stderr}");

    // A CA file that holds no certificate.
    std::fs::write(dir.path().join("missing-ca.pem"), "not a certificate\n").unwrap();
    let (code, stderr) = run(&["--config", path], &[]).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("tls.acme.directory_ca"), "{stderr}");
    assert!(stderr.contains("no CERTIFICATE"), "{stderr}");
}
