//! The admin listener and API: the token is required and a refused call changes nothing;
//! drain under load fails no request and sends the drained backend nothing new, which is
//! reported `drained` only once its last request ends; weights, adds and removes take
//! effect at once and survive a DNS re-resolution; the CLI lists the backends; bad admin
//! configuration stops the binary naming its source.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use balancer::config::{Algorithm, Config};
use balancer::discovery::Discovery;
use balancer::sticky::{Sticky, StickyKey};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::helpers::{
    BinaryBalancer, Running, TestBackend, admin_call as call, config, eventually, get, json_field,
    listed, request, send, spawn_backend, spread,
};

const TOKEN: &str = "test-admin-token-0123456789";
const LIMIT: Duration = Duration::from_secs(30);

/// A re-resolution, as the discovery loop runs it, on the live registry.
async fn re_resolve(running: &Running) {
    let sticky = Sticky::new(&running.config.sticky, &StickyKey::random().unwrap());
    Discovery::new(&running.config, running.registry.clone(), sticky)
        .refresh()
        .await;
}

#[tokio::test]
async fn calls_without_the_right_token_get_401_and_change_nothing() {
    let a = spawn_backend("a").await;
    let b = spawn_backend("b").await;
    let running = Running::builder(config(&[&a, &b]))
        .admin(Some(TOKEN))
        .start()
        .await;
    // b is drained with the token, so a refused resume has something to leave alone.
    let drain_b = format!("/api/backends/{}/drain", b.addr);
    let (status, _) = call(running.admin(), "POST", &drain_b, Some(TOKEN), None).await;
    assert_eq!(status, 200);
    let before = running.registry.load_full();
    let drain = format!("/api/backends/{}/drain", a.addr);
    let resume = format!("/api/backends/{}/resume", b.addr);
    let weight = format!("/api/backends/{}/weight", a.addr);
    let remove = format!("/api/backends/{}", a.addr);
    for token in [None, Some("wrong-token-0123456789"), Some("")] {
        for (method, path, body) in [
            ("GET", "/api/backends", None),
            ("POST", drain.as_str(), None),
            ("POST", resume.as_str(), None),
            ("PUT", weight.as_str(), Some(json!({"weight": 7}))),
            ("DELETE", remove.as_str(), None),
            (
                "POST",
                "/api/backends",
                Some(json!({"address": "127.0.0.1:9", "weight": 1})),
            ),
        ] {
            let (status, body) = call(running.admin(), method, path, token, body).await;
            assert_eq!(status, 401, "{method} {path} with {token:?}: {body}");
            assert!(body["error"].is_string(), "{body}");
        }
    }
    let after = running.registry.load_full();
    assert!(Arc::ptr_eq(&before, &after), "the set was not swapped");
    let state = |backend: &balancer::backend::Backend| (backend.is_draining(), backend.weight());
    assert_eq!(state(&after.backends[0]), (false, 1), "a is unchanged");
    assert_eq!(state(&after.backends[1]), (true, 1), "b is still drained");
    // The right token works, and the public listener knows nothing of the API.
    let entry = listed(running.admin(), Some(TOKEN), a.addr).await.unwrap();
    assert_eq!(entry["state"], "healthy");
    assert_ne!(get(running.addr, "/api/backends").await.instance(), "");
}

/// A backend whose requests to `/held` wait until its gate opens; others answer at once.
struct Gated {
    addr: SocketAddr,
    held: Arc<AtomicUsize>,
    gate: watch::Sender<bool>,
    _task: JoinHandle<()>,
}

async fn gated(id: &'static str) -> Gated {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let held = Arc::new(AtomicUsize::new(0));
    let (gate, _) = watch::channel(false);
    let opened = gate.subscribe();
    let counter = held.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let counter = counter.clone();
            let opened = opened.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                    let counter = counter.clone();
                    let mut opened = opened.clone();
                    async move {
                        if request.uri().path() == "/held" {
                            counter.fetch_add(1, Ordering::SeqCst);
                            // Bounded: a test that forgets to open cannot hang for ever.
                            let _ =
                                tokio::time::timeout(LIMIT, opened.wait_for(|open| *open)).await;
                        }
                        let mut response = Response::new(Full::new(Bytes::from_static(b"ok")));
                        response
                            .headers_mut()
                            .insert("x-instance-id", id.parse().unwrap());
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Gated {
        addr,
        held,
        gate,
        _task: task,
    }
}

#[tokio::test]
async fn drain_under_load_fails_nothing_sends_nothing_new_and_ends_with_the_last_request() {
    let backends = [gated("a").await, gated("b").await, gated("c").await];
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        backends: backends
            .iter()
            .map(|b| b.addr.to_string().parse().unwrap())
            .collect(),
        ..Config::default()
    };
    config.timeouts.shutdown_grace = Duration::from_secs(5);
    let running = Arc::new(Running::builder(config).admin(None).start().await);
    let [a, b, c] = &backends;

    // One held request on each backend (round robin); a's and c's are let go, b's stays.
    let held: Vec<_> = (0..3)
        .map(|_| {
            let addr = running.addr;
            tokio::spawn(async move { send(addr, request("/held", &[])).await })
        })
        .collect();
    assert!(
        eventually(LIMIT, async || backends
            .iter()
            .all(|g| g.held.load(Ordering::SeqCst) == 1))
        .await
    );
    a.gate.send_replace(true);
    c.gate.send_replace(true);

    // Bounded load from four tasks; a request started after the drain call returned is
    // tagged, so its answer must not come from b.
    let drained = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let load: Vec<JoinHandle<Vec<(u16, String, bool)>>> = (0..4)
        .map(|_| {
            let (addr, drained, done) = (running.addr, drained.clone(), done.clone());
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                for _ in 0..100 {
                    let after = drained.load(Ordering::SeqCst);
                    let answer = get(addr, "/").await;
                    outcomes.push((answer.status, answer.instance().to_owned(), after));
                    done.fetch_add(1, Ordering::SeqCst);
                }
                outcomes
            })
        })
        .collect();
    assert!(eventually(LIMIT, async || done.load(Ordering::SeqCst) >= 60).await);
    let (status, entry) = call(
        running.admin(),
        "POST",
        &format!("/api/backends/{}/drain", b.addr),
        None,
        None,
    )
    .await;
    drained.store(true, Ordering::SeqCst);
    assert_eq!(status, 200, "{entry}");
    assert_eq!(entry["state"], "draining", "b's held request is in flight");

    let mut outcomes = Vec::new();
    for task in load {
        outcomes.extend(tokio::time::timeout(LIMIT, task).await.unwrap().unwrap());
    }
    assert_eq!(outcomes.len(), 400);
    let failed: Vec<_> = outcomes.iter().filter(|(s, ..)| *s != 200).collect();
    assert!(failed.is_empty(), "failed requests: {failed:?}");
    let after_b = outcomes
        .iter()
        .filter(|(_, instance, after)| *after && instance == "b")
        .count();
    assert_eq!(
        after_b, 0,
        "b got requests started after the drain returned"
    );
    assert!(
        outcomes.iter().any(|(_, i, after)| !after && i == "b"),
        "b had traffic before the drain"
    );
    assert!(outcomes.iter().any(|(_, _, after)| *after));

    // Still draining while its held request is in flight; drained once it ends.
    let entry = listed(running.admin(), None, b.addr).await.unwrap();
    assert_eq!(entry["state"], "draining", "{entry}");
    assert_eq!(entry["in_flight"], 1, "{entry}");
    b.gate.send_replace(true);
    for task in held {
        let answer = tokio::time::timeout(LIMIT, task).await.unwrap().unwrap();
        assert_eq!(answer.status, 200);
    }
    assert!(
        eventually(LIMIT, async || listed(running.admin(), None, b.addr)
            .await
            .is_some_and(|e| e["state"] == "drained"))
        .await
    );

    // Resumed, it takes traffic again.
    let (status, entry) = call(
        running.admin(),
        "POST",
        &format!("/api/backends/{}/resume", b.addr),
        None,
        None,
    )
    .await;
    assert_eq!((status, entry["state"].as_str()), (200, Some("healthy")));
    let spread = spread(running.addr, 6).await;
    assert_eq!(spread.get("b"), Some(&2), "{spread:?}");
}

#[tokio::test]
async fn a_weight_change_shifts_the_weighted_round_robin_split() {
    let a = spawn_backend("a").await;
    let b = spawn_backend("b").await;
    let mut config = config(&[&a, &b]);
    config.algorithm = Algorithm::WeightedRoundRobin;
    let running = Running::builder(config).admin(Some(TOKEN)).start().await;
    let before = spread(running.addr, 20).await;
    assert_eq!((before["a"], before["b"]), (10, 10), "{before:?}");

    let path = format!("/api/backends/{}/weight", a.addr);
    let (status, entry) = call(
        running.admin(),
        "PUT",
        &path,
        Some(TOKEN),
        Some(json!({"weight": 3})),
    )
    .await;
    assert_eq!(
        (status, entry["weight"].as_u64()),
        (200, Some(3)),
        "{entry}"
    );
    let after = spread(running.addr, 40).await;
    assert_eq!((after["a"], after["b"]), (30, 10), "{after:?}");

    // Out of bounds or malformed: 400 naming the field, nothing changed.
    for body in [
        json!({"weight": 0}),
        json!({"weight": 1001}),
        json!({"weight": "2"}),
        json!({}),
    ] {
        let (status, error) = call(running.admin(), "PUT", &path, Some(TOKEN), Some(body)).await;
        assert_eq!(status, 400, "{error}");
        assert_eq!(error["field"], "weight", "{error}");
    }
    let (status, error) = call(
        running.admin(),
        "PUT",
        "/api/backends/127.0.0.1:9/weight",
        Some(TOKEN),
        Some(json!({"weight": 2})),
    )
    .await;
    assert_eq!(status, 404, "{error}");
    let (status, error) = call(
        running.admin(),
        "PUT",
        "/api/backends/not-an-address/weight",
        Some(TOKEN),
        Some(json!({"weight": 2})),
    )
    .await;
    assert_eq!((status, error["field"].as_str()), (400, Some("address")));
    // Bodies over the cap, unknown fields and endpoints are refused; nothing changes.
    let big = json!({"weight": 2, "pad": "x".repeat(20_000)});
    let (status, error) = call(running.admin(), "PUT", &path, Some(TOKEN), Some(big)).await;
    assert_eq!(status, 413, "{error}");
    let (status, error) = call(
        running.admin(),
        "POST",
        "/api/backends",
        Some(TOKEN),
        Some(json!({"address": "127.0.0.1:9", "wieght": 2})),
    )
    .await;
    assert_eq!(
        (status, error["field"].as_str()),
        (400, Some("wieght")),
        "{error}"
    );
    let (status, _) = call(running.admin(), "GET", "/api/other", Some(TOKEN), None).await;
    assert_eq!(status, 404);
    let (status, _) = call(
        running.admin(),
        "POST",
        &format!("/api/backends/{}/explode", a.addr),
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(running.registry.load().backends.len(), 2);
    assert_eq!(running.registry.load().backends[0].weight(), 3);
    // A re-resolution keeps the weight the API set.
    re_resolve(&running).await;
    let entry = listed(running.admin(), Some(TOKEN), a.addr).await.unwrap();
    assert_eq!(entry["weight"], 3, "{entry}");
}

#[tokio::test]
async fn added_backends_take_traffic_and_survive_re_resolution_removed_ones_stay_out() {
    let a = spawn_backend("a").await;
    let b = spawn_backend("b").await;
    let running = Running::builder(config(&[&a]))
        .admin(Some(TOKEN))
        .start()
        .await;
    let (status, entry) = call(
        running.admin(),
        "POST",
        "/api/backends",
        Some(TOKEN),
        Some(json!({"address": b.addr.to_string(), "weight": 2})),
    )
    .await;
    assert_eq!(status, 201, "{entry}");
    assert_eq!(
        (entry["weight"].as_u64(), entry["added_by_api"].as_bool()),
        (Some(2), Some(true))
    );
    let split = spread(running.addr, 10).await;
    assert_eq!((split["a"], split["b"]), (5, 5), "{split:?}");

    // Adding it twice, or something that is no address, is refused with the field.
    let (status, _) = call(
        running.admin(),
        "POST",
        "/api/backends",
        Some(TOKEN),
        Some(json!({"address": b.addr.to_string()})),
    )
    .await;
    assert_eq!(status, 409);
    let (status, error) = call(
        running.admin(),
        "POST",
        "/api/backends",
        Some(TOKEN),
        Some(json!({"address": "hits"})),
    )
    .await;
    assert_eq!((status, error["field"].as_str()), (400, Some("address")));

    re_resolve(&running).await;
    assert!(
        listed(running.admin(), Some(TOKEN), b.addr).await.is_some(),
        "the added backend survives a re-resolution"
    );

    // Removing the configured one: everything goes to b, and DNS does not bring it back.
    let (status, _) = call(
        running.admin(),
        "DELETE",
        &format!("/api/backends/{}", a.addr),
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 200);
    re_resolve(&running).await;
    assert!(listed(running.admin(), Some(TOKEN), a.addr).await.is_none());
    let split = spread(running.addr, 6).await;
    assert_eq!(split.get("b"), Some(&6), "{split:?}");
    let (status, _) = call(
        running.admin(),
        "DELETE",
        &format!("/api/backends/{}", a.addr),
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 404);
}

/// Runs the binary to completion with `args` and `env` only (no BALANCER_* inherited).
async fn run_binary(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_balancer"));
    command.args(args).kill_on_drop(true);
    for (var, _) in std::env::vars() {
        if var.starts_with("BALANCER_") {
            command.env_remove(var);
        }
    }
    command.envs(env.iter().copied());
    tokio::time::timeout(LIMIT, command.output())
        .await
        .expect("the binary exits within 30 s")
        .unwrap()
}

#[tokio::test]
async fn an_admin_listener_off_loopback_without_a_token_is_refused_naming_its_source() {
    let stderr = |o: &std::process::Output| String::from_utf8_lossy(&o.stderr).into_owned();
    let base = ["--listen", "127.0.0.1:0", "--backend", "127.0.0.1:9"];
    let output = run_binary(&[&base[..], &["--admin-listen", "0.0.0.0:0"]].concat(), &[]).await;
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("flag --admin-listen: admin.listen"),
        "{}",
        stderr(&output)
    );

    let output = run_binary(&base, &[("BALANCER_ADMIN_LISTEN", "0.0.0.0:0")]).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("environment variable BALANCER_ADMIN_LISTEN"),
        "{}",
        stderr(&output)
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("balancer.toml");
    std::fs::write(
        &file,
        "backends = [\"127.0.0.1:9\"]\n\n[admin]\nlisten = \"0.0.0.0:0\"\n",
    )
    .unwrap();
    let path = file.to_str().unwrap();
    let output = run_binary(&["--config", path, "--listen", "127.0.0.1:0"], &[]).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains(&format!("config file {path}:4: admin.listen")),
        "{}",
        stderr(&output)
    );

    // A token file with too short a token is named too, and the token is not printed.
    std::fs::write(dir.path().join("token"), "tiny-secret\n").unwrap();
    std::fs::write(
        &file,
        "backends = [\"127.0.0.1:9\"]\n\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"token\"\n",
    )
    .unwrap();
    let output = run_binary(&["--config", path, "--listen", "127.0.0.1:0"], &[]).await;
    assert_eq!(output.status.code(), Some(2));
    let text = stderr(&output);
    assert!(
        text.contains(&format!("config file {path}:5: admin.token_file")),
        "{text}"
    );
    assert!(!text.contains("tiny-secret"), "{text}");
}

#[tokio::test]
async fn the_cli_lists_the_backends_of_a_running_balancer() {
    let a: TestBackend = spawn_backend("a").await;
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_balancer"));
    command
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args(["--backend", &a.addr.to_string()])
        .env("BALANCER_ADMIN_TOKEN", TOKEN);
    let mut running = BinaryBalancer::start(command).await;
    let ready = running
        .wait_for_log(LIMIT, |l| l.contains("\"balancer ready\""))
        .await;
    let admin = json_field(&ready, "admin_listen").unwrap();
    assert!(
        !running.output().contains(TOKEN),
        "the token is never logged"
    );

    let output = run_binary(
        &["admin", "--addr", &admin, "list"],
        &[("BALANCER_ADMIN_TOKEN", TOKEN)],
    )
    .await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{:?}", output.stderr);
    let row = stdout
        .lines()
        .find(|l| l.starts_with(&a.addr.to_string()))
        .unwrap_or_else(|| panic!("no row for {} in\n{stdout}", a.addr));
    assert!(row.contains("healthy"), "{stdout}");
    assert!(stdout.starts_with("ADDRESS"), "{stdout}");

    // A wrong token or an unknown backend: non-zero, with the API's error.
    let output = run_binary(
        &["admin", "--addr", &admin, "drain", "127.0.0.1:9"],
        &[("BALANCER_ADMIN_TOKEN", TOKEN)],
    )
    .await;
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("404: no backend 127.0.0.1:9"));
    let output = run_binary(&["admin", "--addr", &admin, "list"], &[]).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("401"));

    // The token from a file, as a Swarm secret gives it (with its trailing line break).
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("admin_token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let output = run_binary(
        &["admin", "--addr", &admin, "list"],
        &[("BALANCER_ADMIN_TOKEN_FILE", token_file.to_str().unwrap())],
    )
    .await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    running.kill().await;
}

#[tokio::test]
async fn an_unreadable_secret_file_stops_the_binary_naming_the_variable_and_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("sticky_key");
    let missing = missing.to_str().unwrap();
    let output = run_binary(
        &["--listen", "127.0.0.1:0", "--backend", "127.0.0.1:9"],
        &[("BALANCER_STICKY_KEY_FILE", missing)],
    )
    .await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "environment variable BALANCER_STICKY_KEY_FILE: cannot read the secret file {missing:?}"
        )),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_stalled_request_head_on_the_admin_listener_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let a = spawn_backend("a").await;
    let running = Running::builder(config(&[&a]))
        .admin(Some(TOKEN))
        .start()
        .await;
    let mut stream = tokio::net::TcpStream::connect(running.admin())
        .await
        .unwrap();
    stream
        .write_all(b"GET /api/backends HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // The head never ends: the listener must close the connection on its own (after
    // its head timeout), whatever it may answer first.
    let closed = tokio::time::timeout(LIMIT, async {
        let mut buf = [0u8; 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the stalled connection was not closed");
}

#[tokio::test]
async fn a_drained_backend_takes_no_new_sticky_session_and_gets_its_own_back_on_resume() {
    let a = spawn_backend("a").await;
    let b = spawn_backend("b").await;
    let mut config = config(&[&a, &b]);
    config.sticky.enabled = true;
    let running = Running::builder(config).admin(None).start().await;
    let first = get(running.addr, "/").await;
    let owner = first.instance().to_owned();
    let cookie = first.headers["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let owner_addr = if owner == "a" { a.addr } else { b.addr };
    let with_cookie = async || send(running.addr, request("/", &[("cookie", &cookie)])).await;
    assert_eq!(with_cookie().await.instance(), owner);

    let drain = format!("/api/backends/{owner_addr}/drain");
    assert_eq!(
        call(running.admin(), "POST", &drain, None, None).await.0,
        200
    );
    for _ in 0..4 {
        let answer = with_cookie().await;
        assert_eq!(answer.status, 200);
        assert_ne!(
            answer.instance(),
            owner,
            "the drained backend took a request"
        );
        assert!(
            answer.headers.contains_key("set-cookie"),
            "the session moves to another backend"
        );
    }
    let resume = format!("/api/backends/{owner_addr}/resume");
    assert_eq!(
        call(running.admin(), "POST", &resume, None, None).await.0,
        200
    );
    assert_eq!(with_cookie().await.instance(), owner);
}

/// Scaling events: only with the token; validated (a refusal names the field and keeps
/// nothing); the body is capped; the ring keeps the newest; the time is the balancer's;
/// `after` returns only newer ones; the dashboard's read-only route serves the same list.
#[tokio::test]
async fn scaling_events_are_recorded_bounded_and_validated() {
    use balancer::admin::scaling::{MAX_EVENT_BYTES, MAX_EVENTS};
    let a = spawn_backend("a").await;
    let running = Running::builder(config(&[&a]))
        .admin(Some(TOKEN))
        .start()
        .await;
    let event = |n: u64| {
        json!({"source": "autoscaler", "direction": "up", "current": n, "desired": n + 1,
               "reason": "rps 150.0 per instance over target 100", "figures": {"rps_per_instance": 150.0, "ratio": 1.5}})
    };
    let path = "/api/scaling-events";
    // The list carries cumulative latency figures (the autoscaler's latency signal).
    for _ in 0..3 {
        get(running.addr, "/").await;
    }
    let entry = listed(running.admin(), Some(TOKEN), a.addr).await.unwrap();
    assert_eq!(entry["latency_count"], 3, "{entry}");
    assert!(entry["latency_sum_ms"].as_f64().unwrap() > 0.0, "{entry}");
    for token in [None, Some("wrong-token-0123456789")] {
        let (status, _) = call(running.admin(), "POST", path, token, Some(event(1))).await;
        assert_eq!(status, 401);
        let (status, _) = call(running.admin(), "GET", path, token, None).await;
        assert_eq!(status, 401);
    }
    let before = balancer::admin::scaling::unix_millis();
    let (status, stored) = call(running.admin(), "POST", path, Some(TOKEN), Some(event(1))).await;
    assert_eq!(status, 201, "{stored}");
    assert_eq!(
        (stored["seq"].as_u64(), stored["desired"].as_u64()),
        (Some(1), Some(2))
    );
    let at = stored["at_ms"].as_u64().unwrap();
    assert!(
        at >= before && at <= balancer::admin::scaling::unix_millis(),
        "stamped with the balancer's wall clock: {stored}"
    );

    // Refused: a bad field, named; too large a body.
    let mut bad = event(1);
    bad["direction"] = json!("sideways");
    let (status, body) = call(running.admin(), "POST", path, Some(TOKEN), Some(bad)).await;
    assert_eq!(
        (status, body["field"].as_str()),
        (400, Some("direction")),
        "{body}"
    );
    let mut big = event(1);
    big["reason"] = json!("x".repeat(MAX_EVENT_BYTES));
    let (status, body) = call(running.admin(), "POST", path, Some(TOKEN), Some(big)).await;
    assert_eq!(status, 413, "{body}");
    let (_, listed) = call(running.admin(), "GET", path, Some(TOKEN), None).await;
    assert_eq!(listed["events"].as_array().unwrap().len(), 1, "{listed}");

    // The ring keeps the newest MAX_EVENTS.
    for n in 2..=(MAX_EVENTS as u64 + 5) {
        let (status, _) = call(running.admin(), "POST", path, Some(TOKEN), Some(event(n))).await;
        assert_eq!(status, 201);
    }
    let (_, listed) = call(running.admin(), "GET", path, Some(TOKEN), None).await;
    let events = listed["events"].as_array().unwrap();
    assert_eq!(events.len(), MAX_EVENTS);
    assert_eq!(events[0]["current"], 6, "the 5 oldest left");
    assert_eq!(events[MAX_EVENTS - 1]["seq"], MAX_EVENTS as u64 + 5);
    let (_, newer) = call(
        running.admin(),
        "GET",
        &format!("{path}?after={}", MAX_EVENTS + 3),
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(newer["events"].as_array().unwrap().len(), 2, "{newer}");

    // The dashboard's route: the same list, refused without a session or token.
    let (status, dashboard) = call(
        running.admin(),
        "GET",
        "/dashboard/scaling-events?after=104",
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        dashboard["events"].as_array().unwrap().len(),
        1,
        "{dashboard}"
    );
    let answer = send(
        running.admin(),
        Request::get("/dashboard/scaling-events")
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, 401);
}
