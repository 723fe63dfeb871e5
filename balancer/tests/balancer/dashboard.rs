//! The live dashboard on the admin listener. Its HTTP side: the token form, the session
//! cookie (HttpOnly, SameSite=Strict, derived from the token, honoured by the dashboard's
//! routes only), the event stream and its cap. And the page itself in a real browser:
//! Debian's `chromium`, headless, driven over the DevTools protocol on a pipe, logs in
//! through the form while traffic flows, sees the figures move, sees a backend stopped
//! mid-test turn unhealthy, shows a reported scaling decision, and writes the README's
//! screenshot (`docs/dashboard.png`).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use balancer::config::{Overrides, Sources};
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::{Value, json};
use testkit::chromium::Chromium;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::helpers::{Running, config, eventually, request, send, spawn_backend};

const TOKEN: &str = "dashboard-test-token-0123456789";
const LIMIT: Duration = Duration::from_secs(30);

/// A form post to the admin listener.
async fn post_form(admin: SocketAddr, path: &str, body: &str) -> crate::helpers::Answer {
    let request = Request::post(path)
        .header("host", "admin.test")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    send(admin, request).await
}

/// `name=value` of the session cookie in a login answer, with its attributes.
fn session_cookie(answer: &crate::helpers::Answer) -> (String, String) {
    let set = answer
        .headers
        .get("set-cookie")
        .expect("a login sets a cookie")
        .to_str()
        .unwrap()
        .to_owned();
    let pair = set.split(';').next().unwrap().trim().to_owned();
    (pair, set)
}

/// The attributes of a `Set-Cookie` value after its `name=value`, in order.
fn attributes_of(set_cookie: &str) -> Vec<&str> {
    set_cookie.split(';').skip(1).map(str::trim).collect()
}

/// Opens `/events` with `headers` and reads until a snapshot event has arrived; returns
/// the head and the events read so far, and the open connection.
async fn open_events(admin: SocketAddr, headers: &str) -> (String, TcpStream) {
    let mut stream = TcpStream::connect(admin).await.unwrap();
    let head = format!("GET /events HTTP/1.1\r\nhost: admin.test\r\n{headers}\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    let read = tokio::time::timeout(LIMIT, async {
        let mut buf = [0u8; 4096];
        loop {
            let text = String::from_utf8_lossy(&seen);
            let done = if text.starts_with("HTTP/1.1 200") {
                text.contains("event: snapshot\ndata: {")
            } else {
                text.contains("\r\n\r\n")
            };
            if done {
                break;
            }
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "the event stream ended early: {text}");
            seen.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    let text = String::from_utf8_lossy(&seen).into_owned();
    assert!(read.is_ok(), "no snapshot event within {LIMIT:?}: {text}");
    (text, stream)
}

#[tokio::test]
async fn the_token_form_sets_a_strict_httponly_cookie_that_opens_only_the_dashboard() {
    let a = spawn_backend("a").await;
    let running = Running::builder(config(&[&a]))
        .admin(Some(TOKEN))
        .start()
        .await;
    let admin = running.admin();

    // No session: the form, not the dashboard; the stylesheet it needs is served.
    let page = send(admin, request("/", &[])).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains(r#"name="token""#), "{}", page.body);
    assert!(!page.body.contains(r#"id="backends""#), "{}", page.body);
    assert_eq!(
        send(admin, request("/dashboard/style.css", &[]))
            .await
            .status,
        200
    );
    let (head, _) = open_events(admin, "").await;
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");

    // A wrong token: the form again, with the error, 401, no cookie.
    let wrong = post_form(admin, "/login", "token=dashboard-test-token-012345678X").await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.body.contains("Wrong token"), "{}", wrong.body);
    assert!(wrong.headers.get("set-cookie").is_none());

    // The right one (form-encoded, as a browser sends it): a cookie, back to the page.
    let login = post_form(admin, "/login", &format!("token={TOKEN}")).await;
    assert_eq!(login.status, 303, "{}", login.body);
    assert_eq!(login.headers["location"], "/");
    let (cookie, attributes) = session_cookie(&login);
    assert!(cookie.starts_with("hitscale_admin="), "{attributes}");
    // Not `Secure` by default: the admin listener speaks plain HTTP, over which a browser
    // would not keep a `Secure` cookie (`admin.cookie_secure` is for an HTTPS proxy).
    assert_eq!(
        attributes_of(&attributes),
        ["Max-Age=43200", "HttpOnly", "SameSite=Strict", "Path=/"]
    );
    assert!(
        !attributes.contains(TOKEN),
        "the cookie carries the token: {attributes}"
    );

    let page = send(admin, request("/", &[("cookie", &cookie)])).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains(r#"id="backends""#), "{}", page.body);
    assert!(page.body.contains(r#"action="/logout""#), "{}", page.body);
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'"), "{csp}");

    // The stream: history first, then snapshots naming the backend and its state.
    let (events, stream) = open_events(admin, &format!("cookie: {cookie}\r\n")).await;
    assert!(events.starts_with("HTTP/1.1 200"), "{events}");
    assert!(
        events.contains("content-type: text/event-stream"),
        "{events}"
    );
    let history = events.find("event: history").expect("history first");
    let snapshot = events.find("event: snapshot").unwrap();
    assert!(history < snapshot, "{events}");
    let data = events[snapshot..]
        .lines()
        .nth(1)
        .and_then(|l| l.strip_prefix("data: "))
        .unwrap();
    let data: Value = serde_json::from_str(data).unwrap();
    assert_eq!(data["backends"][0]["address"], json!(a.addr.to_string()));
    assert_eq!(data["backends"][0]["state"], json!("healthy"));
    drop(stream);

    // The bearer token opens the dashboard too; the cookie does not open the API.
    let bearer = format!("Bearer {TOKEN}");
    let page = send(admin, request("/", &[("authorization", &bearer)])).await;
    assert!(page.body.contains(r#"id="backends""#), "{}", page.body);
    let api = send(admin, request("/api/backends", &[("cookie", &cookie)])).await;
    assert_eq!(api.status, 401, "{}", api.body);
    let api = send(
        admin,
        request("/api/backends", &[("authorization", &bearer)]),
    )
    .await;
    assert_eq!(api.status, 200, "{}", api.body);

    // Logging out clears the cookie.
    let logout = post_form(admin, "/logout", "").await;
    assert_eq!(logout.status, 303);
    let (_, cleared) = session_cookie(&logout);
    assert_eq!(
        attributes_of(&cleared),
        ["Max-Age=0", "HttpOnly", "SameSite=Strict", "Path=/"]
    );
}

#[tokio::test]
async fn with_cookie_secure_the_cookies_are_secure_and_a_reload_turns_it_off() {
    let a = spawn_backend("a").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("admin-token"), TOKEN).unwrap();
    let path = dir.path().join("balancer.toml");
    let file = |secure: bool| {
        format!(
            "listen = \"127.0.0.1:0\"\nbackends = [\"{}\"]\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\
             token_file = \"admin-token\"\ncookie_secure = {secure}\n",
            a.addr
        )
    };
    std::fs::write(&path, file(true)).unwrap();
    let sources = Sources {
        file: Some(path.clone()),
        overrides: Overrides::default(),
    };
    let config = sources.load().expect("the file is valid");
    let running = Running::builder(config).sources(sources).start().await;
    let admin = running.admin();

    let login = post_form(admin, "/login", &format!("token={TOKEN}")).await;
    assert_eq!(login.status, 303, "{}", login.body);
    let (cookie, set) = session_cookie(&login);
    assert_eq!(
        attributes_of(&set),
        [
            "Max-Age=43200",
            "HttpOnly",
            "SameSite=Strict",
            "Path=/",
            "Secure"
        ]
    );
    // The cookie works as before (the browser, not the balancer, enforces `Secure`).
    let page = send(admin, request("/", &[("cookie", &cookie)])).await;
    assert!(page.body.contains(r#"id="backends""#), "{}", page.body);
    // The logout's expired cookie matches it, or a browser would keep the secure one.
    let (_, cleared) = session_cookie(&post_form(admin, "/logout", "").await);
    assert_eq!(
        attributes_of(&cleared),
        [
            "Max-Age=0",
            "HttpOnly",
            "SameSite=Strict",
            "Path=/",
            "Secure"
        ]
    );

    // Applied live: the next login after a reload sets a plain cookie.
    let next = path.with_extension("toml.next");
    std::fs::write(&next, file(false)).unwrap();
    std::fs::rename(&next, &path).unwrap();
    let done = running.reloader().reload("test").await.unwrap();
    assert_eq!(done.changed, ["admin.cookie_secure"]);
    let (_, set) = session_cookie(&post_form(admin, "/login", &format!("token={TOKEN}")).await);
    assert_eq!(
        attributes_of(&set),
        ["Max-Age=43200", "HttpOnly", "SameSite=Strict", "Path=/"]
    );
}

#[tokio::test]
async fn event_streams_are_capped_and_a_freed_slot_is_taken_again() {
    let a = spawn_backend("a").await;
    // No token: loopback only, and no login is needed.
    let running = Running::builder(config(&[&a])).admin(None).start().await;
    let admin = running.admin();
    let page = send(admin, request("/", &[])).await;
    assert!(page.body.contains(r#"id="backends""#), "{}", page.body);
    assert!(!page.body.contains("/logout"), "{}", page.body);

    let mut open = Vec::new();
    for _ in 0..balancer::admin::dashboard::MAX_EVENT_STREAMS {
        let (head, stream) = open_events(admin, "").await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        open.push(stream);
    }
    let (head, _) = open_events(admin, "").await;
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("retry-after: 5"),
        "{head}"
    );
    // The JSON API is not starved by the open streams.
    assert_eq!(send(admin, request("/api/backends", &[])).await.status, 200);

    // A viewer that leaves frees its slot (noticed at the next tick it cannot deliver).
    drop(open.pop());
    let freed = eventually(LIMIT, async || {
        let (head, stream) = open_events(admin, "").await;
        if head.starts_with("HTTP/1.1 200") {
            open.push(stream);
            true
        } else {
            false
        }
    })
    .await;
    assert!(freed, "no stream slot came free after a viewer left");
}

/// Traffic through the balancer from loadgen itself (its library, as the binary runs it):
/// an open model of 200 requests a second from 20 virtual users, each with its own cookie
/// jar (so sticky sessions show), for at most 120 s, until stopped.
struct Traffic {
    cancel: loadgen::CancellationToken,
    run: JoinHandle<Result<loadgen::Report, loadgen::RunError>>,
}

impl Traffic {
    fn start(addr: SocketAddr) -> Self {
        use clap::Parser;
        let url = format!("http://{addr}/");
        let opts = loadgen::Opts::try_parse_from([
            "loadgen",
            "-q",
            "--rate",
            "200",
            "--sessions",
            "20",
            "-d",
            "120s",
            &url,
        ])
        .expect("loadgen options");
        let config = loadgen::RunConfig::from_opts(&opts).expect("loadgen configuration");
        let cancel = loadgen::CancellationToken::new();
        let run = tokio::spawn(loadgen::run_config(config, cancel.clone()));
        Self { cancel, run }
    }

    async fn stop(self) -> loadgen::Report {
        self.cancel.cancel();
        tokio::time::timeout(LIMIT, self.run)
            .await
            .expect("loadgen stops when cancelled")
            .unwrap()
            .expect("loadgen ran")
    }
}

/// The backend rows as the page shows them.
const ROWS: &str = "(() => { const rows = [...document.querySelectorAll('#backends tr[data-backend]')]; \
    return rows.length ? rows.map(r => ({ address: r.dataset.backend, state: r.dataset.state, \
    rps: Number(r.dataset.rps), requests: Number(r.dataset.requests), text: r.innerText })) : null; })()";

fn row(rows: &Value, address: SocketAddr) -> &Value {
    rows.as_array()
        .unwrap()
        .iter()
        .find(|r| r["address"] == json!(address.to_string()))
        .unwrap_or_else(|| panic!("no row for {address}: {rows}"))
}

#[tokio::test]
async fn the_page_in_chromium_shows_live_figures_and_a_stopped_backend_turning_unhealthy() {
    let a = spawn_backend("a").await;
    let b = spawn_backend("b").await;
    let mut c = spawn_backend("c").await;
    // A slower one, so the latency columns differ.
    b.behaviour.delay_ms.store(20, Ordering::Relaxed);
    let mut config = config(&[&a, &b, &c]);
    config.health.path = Some("/healthz".into());
    // Active checks alone decide: the test waits for "unhealthy", not a passive ejection.
    config.passive.enabled = false;
    config.sticky.enabled = true;
    let running = Running::builder(config).admin(Some(TOKEN)).start().await;
    let traffic = Traffic::start(running.addr);

    let mut browser = Chromium::start(Path::new(env!("CARGO_TARGET_TMPDIR"))).await;
    let tab = browser
        .open(&format!("http://{}/", running.admin()), 1400, 760)
        .await;

    // Log in through the form, first with a wrong token.
    browser
        .wait_for(
            &tab,
            "!!document.querySelector('form.login input[name=token]')",
            "the token form",
        )
        .await;
    let submit = |token: &str| {
        format!(
            "(() => {{ document.querySelector('input[name=token]').value = {token:?}; \
             document.querySelector('form.login').submit(); return true; }})()"
        )
    };
    browser.eval(&tab, &submit("not-the-token-at-all")).await;
    let error = browser
        .wait_for(
            &tab,
            "document.querySelector('.error') && document.querySelector('.error').innerText",
            "the wrong-token error",
        )
        .await;
    assert_eq!(error, json!("Wrong token."));
    browser.eval(&tab, &submit(TOKEN)).await;

    // The dashboard: live, three healthy backends with traffic.
    let rows = browser
        .wait_for(
            &tab,
            &format!("(() => {{ const r = {ROWS}; return document.getElementById('status').dataset.status === 'live' \
             && r && r.length === 3 && r.every(x => x.state === 'healthy' && x.requests > 0) && r; }})()"),
            "three healthy backends with requests, live",
        )
        .await;
    // The session cookie is HttpOnly: the page's script cannot read it.
    assert_eq!(browser.eval(&tab, "document.cookie").await, json!(""));

    // The figures move: every backend's request count grows between two reads.
    let before: Vec<u64> = [a.addr, b.addr, c.addr]
        .iter()
        .map(|&addr| row(&rows, addr)["requests"].as_u64().unwrap())
        .collect();
    let condition = format!(
        "(() => {{ const r = {ROWS}; const before = {before:?}; const order = {order:?}; \
         return r && order.every((a, i) => {{ const x = r.find(y => y.address === a); \
         return x && x.requests >= before[i] + 10 && x.rps > 0; }}) && r; }})()",
        order = [a.addr, b.addr, c.addr].map(|a| a.to_string()),
    );
    let moved = browser
        .wait_for(
            &tab,
            &condition,
            "request counts growing and req/s above zero",
        )
        .await;
    let total = browser
        .eval(&tab, "document.getElementById('total-rps').innerText")
        .await;
    assert_ne!(total, json!("–"), "{moved}");
    // The page's counts are what the backends received, not more.
    let shown_a = row(&moved, a.addr)["requests"].as_u64().unwrap();
    assert!(
        shown_a as usize <= a.hits(),
        "page says {shown_a}, backend a answered {}",
        a.hits()
    );
    // The chart has a history of several seconds before the backend stops.
    browser
        .wait_for(
            &tab,
            "Number(document.getElementById('chart').dataset.points) >= 8",
            "8 chart points",
        )
        .await;

    // Stop one backend: the page turns it unhealthy, says why, and its traffic moves.
    c.stop();
    let rows = browser
        .wait_for(
            &tab,
            &format!(
                "(() => {{ const r = {ROWS}; const c = r && r.find(x => x.address === {c:?}); \
                 return c && c.state === 'unhealthy' && c.rps === 0 && r; }})()",
                c = c.addr.to_string()
            ),
            "the stopped backend unhealthy with no traffic",
        )
        .await;
    let stopped = row(&rows, c.addr);
    assert!(
        stopped["text"]
            .as_str()
            .unwrap()
            .contains("failing active health checks"),
        "{stopped}"
    );
    for addr in [a.addr, b.addr] {
        assert_eq!(row(&rows, addr)["state"], json!("healthy"), "{rows}");
    }
    // A few more seconds of the chart with the traffic on two backends, for the picture.
    let points = browser
        .eval(
            &tab,
            "Number(document.getElementById('chart').dataset.points)",
        )
        .await
        .as_u64()
        .unwrap();
    browser
        .wait_for(
            &tab,
            &format!(
                "(() => {{ const r = {ROWS}; return Number(document.getElementById('chart').dataset.points) >= {} \
                 && r && r.filter(x => x.rps > 0).length === 2; }})()",
                points + 4
            ),
            "four more chart points with traffic on the two live backends",
        )
        .await;

    // A scaling decision reported through the API shows up in the page's table.
    let event = json!({"source": "autoscaler", "direction": "up", "current": 2, "desired": 3,
        "reason": "rps per instance 150 over target 100",
        "figures": {"rps_per_instance": 150.0, "ratio": 1.5}});
    let posted = send(
        running.admin(),
        Request::post("/api/scaling-events")
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(Full::new(Bytes::from(event.to_string())))
            .unwrap(),
    )
    .await;
    assert_eq!(posted.status, 201, "{}", posted.body);
    let shown = browser
        .wait_for(
            &tab,
            "(() => { const r = document.querySelector('#scaling-events tr[data-seq]'); \
             return r && r.dataset.direction === 'up' && r.dataset.current === '2' \
             && r.dataset.desired === '3' && r.innerText; })()",
            "the reported scaling decision in the table",
        )
        .await;
    let shown = shown.as_str().unwrap();
    assert!(
        shown.contains("2 → 3")
            && shown.contains("rps_per_instance 150")
            && shown.contains("over target 100"),
        "{shown}"
    );

    // The page's own height, so the picture has no empty band below it.
    let height = browser
        .eval(
            &tab,
            "Math.ceil(document.querySelector('main').getBoundingClientRect().bottom)",
        )
        .await
        .as_u64()
        .unwrap()
        .clamp(200, 2000);
    let png = browser.screenshot(&tab, 1400, height as u32).await;
    assert!(
        png.len() > 10_000,
        "a blank screenshot? {} bytes",
        png.len()
    );
    // Into the repository: the README shows it, so every run shows the code of today.
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/dashboard.png");
    testkit::chromium::write_atomically(&path, &png)
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));

    browser.close().await;
    let report = traffic.stop().await;
    assert!(report.requests > 0);
    // The three instances served; what happens to the requests in flight on `c` when it is
    // killed (its connections cut mid-answer) is the retry tests' business, not this page's.
    for name in ["a", "b", "c"] {
        assert!(
            report.groups.get(name).is_some_and(|&n| n > 0),
            "loadgen saw instance {name}: groups {:?}, status {:?}, errors {:?}",
            report.groups,
            report.status,
            report.errors
        );
    }
}
