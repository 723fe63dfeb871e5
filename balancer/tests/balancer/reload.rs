//! Configuration reload: a valid file is applied (new backends take traffic, a new
//! algorithm splits by it) and an invalid one is refused with the exact start-up error
//! while the old configuration keeps serving; a key that needs a restart is refused by
//! name; requests in flight and open tunnels are untouched; the admin API's changes survive;
//! the binary reloads on a file renamed into place (`--watch-config`) and on SIGHUP, logging
//! what it did; and under load, 20 reloads then 20 drain/resume cycles with weight changes
//! fail no request.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use balancer::config::{Overrides, Sources};
use clap::Parser;
use serde_json::{Value, json};

use crate::helpers::{
    BinaryBalancer, Running, TestBackend, admin_call, echo, eventually, get, listed, open_tunnel,
    spawn_backend, spread,
};

const LIMIT: Duration = Duration::from_secs(30);

/// A config file: both listeners on loopback port 0, `backends` with their weights, then
/// `extra` (top-level keys first, then any sections but `[admin]`).
fn toml(backends: &[(&TestBackend, u32)], extra: &str) -> String {
    let list: Vec<String> = backends
        .iter()
        .map(|(b, weight)| format!("\"{},weight={weight}\"", b.addr))
        .collect();
    format!(
        "listen = \"127.0.0.1:0\"\nbackends = [{}]\n{extra}\n[admin]\nlisten = \"127.0.0.1:0\"\n",
        list.join(", ")
    )
}

/// Replaces the file the way deployment tools do: a new file renamed over the old one.
fn replace(path: &Path, text: &str) {
    let next = path.with_extension("toml.next");
    std::fs::write(&next, text).unwrap();
    std::fs::rename(&next, path).unwrap();
}

/// The sources the binary reads when given `--config path` alone.
fn sources(path: &Path) -> Sources {
    Sources {
        file: Some(path.to_owned()),
        overrides: Overrides::default(),
    }
}

/// A balancer in-process, read from a config file that the test may rewrite.
/// A balancer started from a configuration file that the test rewrites and reloads.
struct Reloadable {
    running: Running,
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl std::ops::Deref for Reloadable {
    type Target = Running;

    fn deref(&self) -> &Running {
        &self.running
    }
}

async fn start(text: &str) -> Reloadable {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("balancer.toml");
    std::fs::write(&path, text).unwrap();
    let config = sources(&path).load().expect("the first file is valid");
    let running = Running::builder(config)
        .sources(sources(&path))
        .start()
        .await;
    Reloadable {
        running,
        path,
        _dir: dir,
    }
}

/// The value of the sample `series` (name and labels as printed) in `/metrics`.
async fn sample(admin: SocketAddr, series: &str) -> String {
    let answer = get(admin, "/metrics").await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer
        .body
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ').map(str::to_owned))
        .unwrap_or_else(|| panic!("no {series} in\n{}", answer.body))
}

#[tokio::test]
async fn a_valid_reload_applies_and_an_invalid_one_is_refused_with_the_exact_error() {
    let a = spawn_backend("a").await;
    let b = spawn_backend("b").await;
    let running = start(&toml(&[(&a, 1)], "")).await;
    assert_eq!(spread(running.addr, 4).await.get("a"), Some(&4));

    // A new backend and a new algorithm.
    replace(
        &running.path,
        &toml(&[(&a, 1), (&b, 3)], "algorithm = \"weighted-round-robin\""),
    );
    let done = running.reloader().reload("test").await.unwrap();
    assert_eq!(done.changed, ["backends", "algorithm"]);
    assert_eq!(done.backends.added, [b.addr]);
    let split = spread(running.addr, 40).await;
    assert_eq!((split["a"], split["b"]), (10, 30), "{split:?}");

    // Refused with the very error start-up would give, naming file, line and key.
    for (extra, line, key) in [
        ("[health]\ninterval = \"2 parsecs\"", "line 5", "interval"),
        (
            "[retry]\nbudget_ratio = 11.0",
            "balancer.toml:5",
            "retry.budget_ratio",
        ),
    ] {
        replace(
            &running.path,
            &toml(
                &[(&a, 1), (&b, 3)],
                &format!("algorithm = \"round-robin\"\n{extra}"),
            ),
        );
        let expected = sources(&running.path).load().unwrap_err().to_string();
        assert!(
            expected.contains("balancer.toml") && expected.contains(line) && expected.contains(key),
            "{expected}"
        );
        let error = running.reloader().reload("test").await.unwrap_err();
        assert_eq!(error.to_string(), expected);
    }
    // A key only a restart can change: refused by name, from where the file sets it.
    let moved = toml(&[(&a, 1)], "").replacen("127.0.0.1:0", "127.0.0.1:1", 1);
    replace(&running.path, &moved);
    let error = running
        .reloader()
        .reload("test")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("balancer.toml:1")
            && error.contains("listen changed")
            && error.contains("needs a restart"),
        "{error}"
    );
    // The old configuration still serves: the same backends and the same split.
    let split = spread(running.addr, 40).await;
    assert_eq!((split["a"], split["b"]), (10, 30), "{split:?}");
    assert_eq!(
        (
            running.reloader().stats().applied(),
            running.reloader().stats().refused()
        ),
        (1, 3)
    );
    let ok = r#"balancer_config_reloads_total{result="ok"}"#;
    let refused = r#"balancer_config_reloads_total{result="refused"}"#;
    assert_eq!(sample(running.admin(), ok).await, "1");
    assert_eq!(sample(running.admin(), refused).await, "3");
    let last = "balancer_config_last_reload_successful";
    assert_eq!(sample(running.admin(), last).await, "0");

    // Fixed, it applies; the selector restarts its split with the new algorithm.
    replace(&running.path, &toml(&[(&a, 1), (&b, 3)], ""));
    let done = running.reloader().reload("test").await.unwrap();
    assert_eq!(done.changed, ["algorithm"]);
    let split = spread(running.addr, 40).await;
    assert_eq!((split["a"], split["b"]), (20, 20), "{split:?}");
    assert_eq!(sample(running.admin(), last).await, "1");
    assert_eq!(sample(running.admin(), ok).await, "2");
    let stamp = "balancer_config_last_reload_success_timestamp_seconds";
    let stamp: u64 = sample(running.admin(), stamp).await.parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!((now - 60..=now).contains(&stamp), "{stamp} vs now {now}");
}

#[tokio::test]
async fn requests_in_flight_and_open_tunnels_are_untouched_by_a_reload_that_removes_their_backend()
{
    let a = spawn_backend("a").await;
    let b = spawn_backend("b").await;
    let running = start(&toml(&[(&a, 1)], "")).await;
    let (mut tunnel, head) = open_tunnel(running.addr).await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(echo(&mut tunnel, "before").await);
    // A request a holds until the test lets it go.
    a.behaviour.hold.store(true, Ordering::SeqCst);
    let hits = a.hits();
    let addr = running.addr;
    let held = tokio::spawn(async move { get(addr, "/held").await });
    assert!(eventually(LIMIT, async || a.hits() > hits).await);

    replace(
        &running.path,
        &toml(&[(&b, 1)], "[timeouts]\ntunnel_idle = \"10s\""),
    );
    let done = running.reloader().reload("test").await.unwrap();
    assert_eq!(done.changed, ["backends", "timeouts"]);
    assert_eq!(
        (done.backends.added.clone(), done.backends.removed.clone()),
        (vec![b.addr], vec![a.addr])
    );
    // New requests go to b only; the tunnel to a still carries bytes both ways.
    assert_eq!(spread(running.addr, 4).await.get("b"), Some(&4));
    assert!(echo(&mut tunnel, "after the reload").await);
    a.behaviour.hold.store(false, Ordering::SeqCst);
    let answer = tokio::time::timeout(LIMIT, held).await.unwrap().unwrap();
    assert_eq!((answer.status, answer.instance()), (200, "a"));
    assert!(echo(&mut tunnel, "still open").await);
}

#[tokio::test]
async fn health_checks_and_sticky_sessions_follow_a_reload() {
    let a = spawn_backend("a").await;
    let b = spawn_backend("b").await;
    b.behaviour.unhealthy.store(true, Ordering::SeqCst);
    let running = start(&toml(&[(&a, 1), (&b, 1)], "")).await;
    // No checks yet: b's failing /healthz goes unnoticed.
    assert_eq!(spread(running.addr, 4).await.get("b"), Some(&2));
    assert!(
        !get(running.addr, "/")
            .await
            .headers
            .contains_key("set-cookie")
    );

    let checked = "[health]\npath = \"/healthz\"\ninterval = \"100ms\"\ntimeout = \"2s\"\nfall = 1\n[sticky]\nenabled = true";
    replace(&running.path, &toml(&[(&a, 1), (&b, 1)], checked));
    let done = running.reloader().reload("test").await.unwrap();
    assert_eq!(done.changed, ["health", "sticky"]);
    assert!(
        eventually(LIMIT, async || listed(running.admin(), None, b.addr)
            .await
            .is_some_and(|e| e["state"] == "unhealthy"))
        .await,
        "the checks started by the reload take b down"
    );
    let answer = get(running.addr, "/").await;
    assert_eq!(answer.instance(), "a");
    assert!(
        answer.headers["set-cookie"]
            .to_str()
            .unwrap()
            .starts_with("hitscale_backend="),
        "sticky sessions are on"
    );

    // Checks off again: b is up at once (nothing would ever bring it back otherwise).
    replace(&running.path, &toml(&[(&a, 1), (&b, 1)], ""));
    running.reloader().reload("test").await.unwrap();
    assert_eq!(
        listed(running.admin(), None, b.addr).await.unwrap()["state"],
        "healthy"
    );
    assert_eq!(spread(running.addr, 4).await.get("b"), Some(&2));
}

#[tokio::test]
async fn what_the_admin_api_did_survives_a_reload() {
    let [a, b, c, d] = [
        spawn_backend("a").await,
        spawn_backend("b").await,
        spawn_backend("c").await,
        spawn_backend("d").await,
    ];
    let running = start(&toml(&[(&a, 1), (&b, 1)], "")).await;
    let admin = running.admin();
    let added = admin_call(
        admin,
        "POST",
        "/api/backends",
        None,
        Some(json!({"address": c.addr.to_string(), "weight": 2})),
    )
    .await;
    assert_eq!(added.0, 201, "{}", added.1);
    let weight = format!("/api/backends/{}/weight", a.addr);
    assert_eq!(
        admin_call(admin, "PUT", &weight, None, Some(json!({"weight": 5})))
            .await
            .0,
        200
    );
    let drain = format!("/api/backends/{}/drain", b.addr);
    assert_eq!(admin_call(admin, "POST", &drain, None, None).await.0, 200);

    // The file adds d and gives a another weight.
    replace(&running.path, &toml(&[(&a, 2), (&b, 1), (&d, 1)], ""));
    let done = running.reloader().reload("test").await.unwrap();
    assert_eq!(done.backends.added, [d.addr]);
    assert!(done.backends.reweighted.is_empty(), "{done:?}");
    let entry = |address| async move { listed(admin, None, address).await.unwrap() };
    assert_eq!(entry(a.addr).await["weight"], 5, "the API's weight is kept");
    assert_eq!(entry(b.addr).await["state"], "drained", "the drain is kept");
    let c_entry = entry(c.addr).await;
    assert_eq!(
        (
            c_entry["added_by_api"].as_bool(),
            c_entry["weight"].as_u64()
        ),
        (Some(true), Some(2)),
        "the added backend stays"
    );
    assert_eq!(entry(d.addr).await["state"], "healthy");

    // Removed through the API, d stays out although the file still names it.
    let remove = format!("/api/backends/{}", d.addr);
    assert_eq!(
        admin_call(admin, "DELETE", &remove, None, None).await.0,
        200
    );
    let done = running.reloader().reload("test").await.unwrap();
    assert!(done.backends.is_empty(), "{done:?}");
    assert!(listed(admin, None, d.addr).await.is_none());
    let split = spread(running.addr, 14).await;
    assert_eq!(split.get("b"), None, "{split:?}");
    assert_eq!(split.get("d"), None, "{split:?}");
    assert_eq!(split["a"] + split["c"], 14, "{split:?}");
}

/// Starts the balancer binary on `path` with `args`, and checks it serves from `first`.
async fn binary(path: &Path, args: &[&str], first: &str) -> BinaryBalancer {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_balancer"));
    command.arg("--config").arg(path).args(args);
    let balancer = BinaryBalancer::start(command).await;
    assert_eq!(get(balancer.addr, "/").await.instance(), first);
    balancer
}

/// The message of a JSON log line.
fn message(line: &str) -> String {
    let line: Value = serde_json::from_str(line).unwrap();
    line["fields"]["message"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_binary_follows_a_config_file_renamed_into_place() {
    let a = spawn_backend("a").await;
    let b = spawn_backend("b").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("balancer.toml");
    std::fs::write(&path, toml(&[(&a, 1)], "")).unwrap();
    let mut balancer = binary(&path, &["--watch-config"], "a").await;

    replace(&path, &toml(&[(&b, 1)], ""));
    let b_addr = b.addr.to_string();
    let line = balancer
        .wait_for_log(LIMIT, |l| l.contains("config reloaded"))
        .await;
    assert!(
        line.contains("config file changed") && line.contains(&b_addr),
        "{line}"
    );
    assert_eq!(spread(balancer.addr, 4).await.get("b"), Some(&4));

    // A broken file: refused with the exact error, logged; b still serves.
    replace(
        &path,
        &toml(&[(&a, 1)], "[health]\ninterval = \"2 parsecs\""),
    );
    let expected = sources(&path).load().unwrap_err().to_string();
    let line = balancer
        .wait_for_log(LIMIT, |l| l.contains("config reload refused"))
        .await;
    assert_eq!(message(&line), format!("config reload refused: {expected}"));
    assert_eq!(spread(balancer.addr, 4).await.get("b"), Some(&4));
    balancer.kill().await;
}

#[tokio::test]
async fn sighup_reloads_the_binary() {
    let a = spawn_backend("a").await;
    let b = spawn_backend("b").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("balancer.toml");
    std::fs::write(&path, toml(&[(&a, 1)], "")).unwrap();
    let mut balancer = binary(&path, &[], "a").await;

    // Rewritten in place; only the signal makes the balancer read it.
    std::fs::write(&path, toml(&[(&a, 1), (&b, 1)], "")).unwrap();
    let status = tokio::process::Command::new("kill")
        .args(["-HUP", &balancer.pid.to_string()])
        .status()
        .await
        .unwrap();
    assert!(status.success());
    let line = balancer
        .wait_for_log(LIMIT, |l| l.contains("config reloaded"))
        .await;
    assert!(
        line.contains("SIGHUP") && line.contains(&b.addr.to_string()),
        "{line}"
    );
    let split = spread(balancer.addr, 4).await;
    assert_eq!((split["a"], split["b"]), (2, 2), "{split:?}");
    balancer.kill().await;
}

#[tokio::test]
async fn watching_needs_a_config_file() {
    let output = tokio::time::timeout(
        LIMIT,
        tokio::process::Command::new(env!("CARGO_BIN_EXE_balancer"))
            .args(["--backend", "127.0.0.1:9", "--listen", "127.0.0.1:0"])
            .env_remove("BALANCER_CONFIG")
            .env("BALANCER_WATCH_CONFIG", "true")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the binary exits at once")
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("BALANCER_WATCH_CONFIG") && stderr.contains("no config file"),
        "{stderr}"
    );
}

#[tokio::test]
async fn under_load_reloads_drains_and_weight_changes_fail_no_request() {
    let [a, b, c] = [
        spawn_backend("a").await,
        spawn_backend("b").await,
        spawn_backend("c").await,
    ];
    let running = start(&toml(&[(&a, 1), (&b, 1), (&c, 1)], "")).await;
    // The load is loadgen itself (its library, as the binary runs it): eight kept-alive
    // connections, bounded in time; cancelled once every change has landed.
    let url = format!("http://{}/", running.addr);
    let opts = loadgen::Opts::try_parse_from(["loadgen", "-q", "-c", "8", "-d", "120s", &url])
        .expect("loadgen options");
    let config = loadgen::RunConfig::from_opts(&opts).expect("loadgen configuration");
    let cancel = loadgen::CancellationToken::new();
    let load = tokio::spawn(loadgen::run_config(config, cancel.clone()));
    // Each step lets some requests through first, so every change lands under traffic:
    // counted where they arrive, at the backends.
    let served = || a.hits() + b.hits() + c.hits();
    let some_requests = async |n: usize| {
        let target = served() + n;
        assert!(
            eventually(LIMIT, async || served() >= target).await,
            "the load stalled"
        );
    };
    some_requests(50).await;
    let algorithms = [
        "round-robin",
        "weighted-round-robin",
        "least-connections",
        "least-response-time",
        "power-of-two-choices",
        "ip-hash",
    ];
    for i in 0..20u32 {
        // a's weight changes, c leaves and comes back, the algorithm turns.
        let mut list = vec![(&a, 1 + i % 3), (&b, 1)];
        if i % 2 == 1 {
            list.push((&c, 2));
        }
        let extra = format!("algorithm = \"{}\"", algorithms[i as usize % 6]);
        replace(&running.path, &toml(&list, &extra));
        running
            .reloader()
            .reload("test")
            .await
            .unwrap_or_else(|e| panic!("reload {i}: {e}"));
        some_requests(20).await;
    }
    let admin = running.admin();
    let drain = format!("/api/backends/{}/drain", b.addr);
    let resume = format!("/api/backends/{}/resume", b.addr);
    let weight = format!("/api/backends/{}/weight", a.addr);
    for i in 0..20 {
        assert_eq!(admin_call(admin, "POST", &drain, None, None).await.0, 200);
        some_requests(10).await;
        let body = json!({"weight": 1 + i % 5});
        assert_eq!(
            admin_call(admin, "PUT", &weight, None, Some(body)).await.0,
            200
        );
        assert_eq!(admin_call(admin, "POST", &resume, None, None).await.0, 200);
        some_requests(10).await;
    }
    cancel.cancel();
    let report = tokio::time::timeout(LIMIT, load)
        .await
        .expect("loadgen stopped when cancelled")
        .unwrap()
        .expect("loadgen ran");
    assert!(
        report.requests >= 50 + 20 * 20 + 20 * 20,
        "{} requests",
        report.requests
    );
    assert_eq!(
        report.failures, 0,
        "failed requests under reloads and drains: status {:?}, errors {:?}",
        report.status, report.errors
    );
    let instances: Vec<_> = report.groups.keys().cloned().collect();
    assert_eq!(instances, ["a", "b", "c"], "loadgen saw every instance");
    assert_eq!(running.reloader().stats().applied(), 20);
}
