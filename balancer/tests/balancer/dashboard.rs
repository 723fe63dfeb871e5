//! The live dashboard on the admin listener. Its HTTP side: the token form, the session
//! cookie (HttpOnly, SameSite=Strict, derived from the token, honoured by the dashboard's
//! routes only), the event stream and its cap. And the page itself in a real browser:
//! Debian's `chromium`, headless, driven over the DevTools protocol on a pipe, logs in
//! through the form while traffic flows, sees the figures move, sees a backend stopped
//! mid-test turn unhealthy, shows a reported scaling decision, and keeps a screenshot (`target/tmp/dashboard.png`).

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::helpers::{config, eventually, request, send, spawn_backend, spawn_with_admin};

const TOKEN: &str = "dashboard-test-token-0123456789";
const LIMIT: Duration = Duration::from_secs(30);
/// The browser's hang guard: a cold chromium start on a busy machine is slow.
const BROWSER_LIMIT: Duration = Duration::from_secs(60);

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
    let running = spawn_with_admin(config(&[&a]), Some(TOKEN)).await;
    let admin = running.admin;

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
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(
            attributes.contains(attribute),
            "{attribute} missing: {attributes}"
        );
    }
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
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
}

#[tokio::test]
async fn event_streams_are_capped_and_a_freed_slot_is_taken_again() {
    let a = spawn_backend("a").await;
    // No token: loopback only, and no login is needed.
    let running = spawn_with_admin(config(&[&a]), None).await;
    let admin = running.admin;
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

/// Headless chromium on the DevTools protocol over a pipe: it reads NUL-terminated JSON
/// commands on its fd 3 and writes replies on fd 4, which `sh` maps to our stdin/stdout.
struct Chromium {
    child: tokio::process::Child,
    commands: tokio::process::ChildStdin,
    replies: BufReader<tokio::process::ChildStdout>,
    next_id: u64,
    stderr: Arc<std::sync::Mutex<String>>,
    _profile: tempfile::TempDir,
}

impl Chromium {
    async fn start() -> Self {
        let found = std::process::Command::new("sh")
            .args(["-c", "command -v chromium"])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            found,
            "chromium is not installed: the dashboard test drives Debian's chromium headless. \
             Install it with scripts/install-deps (or: apt-get install chromium)"
        );
        // Under target/tmp: if a failing test leaves it behind, it is not in /tmp.
        let profile = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let mut command = tokio::process::Command::new("sh");
        command
            .arg("-c")
            .arg(
                "exec chromium --headless --no-sandbox --disable-gpu --disable-dev-shm-usage \
                 --no-first-run --no-default-browser-check --disable-extensions \
                 --disable-background-networking --disable-sync --disable-component-update \
                 --disable-background-timer-throttling --disable-renderer-backgrounding \
                 --disable-backgrounding-occluded-windows --hide-scrollbars --mute-audio \
                 --user-data-dir=\"$1\" --remote-debugging-pipe about:blank \
                 3<&0 4>&1 0</dev/null 1>&2",
            )
            .arg("sh")
            .arg(profile.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("sh starts");
        let stderr = Arc::new(std::sync::Mutex::new(String::new()));
        let mut err = child.stderr.take().unwrap();
        let tail = stderr.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf).await
                && n > 0
            {
                let mut text = tail.lock().unwrap();
                text.push_str(&String::from_utf8_lossy(&buf[..n]));
                // Only the end matters for a failure message.
                if text.len() > 16 * 1024 {
                    let cut = text.len() - 8 * 1024;
                    let cut = (cut..text.len())
                        .find(|&i| text.is_char_boundary(i))
                        .unwrap();
                    text.drain(..cut);
                }
            }
        });
        Self {
            commands: child.stdin.take().unwrap(),
            replies: BufReader::new(child.stdout.take().unwrap()),
            child,
            next_id: 0,
            stderr,
            _profile: profile,
        }
    }

    /// Sends one command and waits (bounded) for its reply; events in between are dropped.
    async fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        match self.try_call(session, method, params).await {
            Ok(result) => result,
            Err(error) => panic!("{method} failed: {error}\n{}", self.output()),
        }
    }

    /// As [`Self::call`], but the protocol's error reply (a page navigating away while
    /// asked something) is returned, not a panic; a dead or silent browser still panics.
    async fn try_call(
        &mut self,
        session: Option<&str>,
        method: &str,
        params: Value,
    ) -> Result<Value, String> {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        let mut bytes = message.to_string().into_bytes();
        bytes.push(0);
        let exchange = async {
            self.commands.write_all(&bytes).await?;
            self.commands.flush().await?;
            loop {
                let mut reply = Vec::new();
                let n = self.replies.read_until(0, &mut reply).await?;
                if n == 0 {
                    return Err(std::io::Error::other("chromium closed the pipe"));
                }
                reply.pop();
                let reply: Value = serde_json::from_slice(&reply)
                    .map_err(|e| std::io::Error::other(format!("bad reply: {e}")))?;
                if reply["id"] == json!(id) {
                    return Ok(reply);
                }
            }
        };
        let reply = match tokio::time::timeout(BROWSER_LIMIT, exchange).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(error)) => panic!("{method}: {error}\n{}", self.output()),
            Err(_) => panic!(
                "{method}: no reply within {BROWSER_LIMIT:?}\n{}",
                self.output()
            ),
        };
        match reply.get("error") {
            Some(error) => Err(error.to_string()),
            None => Ok(reply["result"].clone()),
        }
    }

    /// Closes the browser and waits for it to exit, so its profile directory is removed
    /// after the last write into it.
    async fn close(mut self) {
        // The reply may not come: the browser can exit before sending it.
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            self.try_call(None, "Browser.close", json!({})),
        )
        .await;
        if tokio::time::timeout(BROWSER_LIMIT, self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }

    fn output(&self) -> String {
        format!("chromium's stderr (tail):\n{}", self.stderr.lock().unwrap())
    }

    /// A new tab on `url`, attached in flat mode: its session id.
    async fn open(&mut self, url: &str) -> String {
        let target = self
            .call(None, "Target.createTarget", json!({ "url": "about:blank" }))
            .await;
        let attached = self
            .call(
                None,
                "Target.attachToTarget",
                json!({ "targetId": target["targetId"], "flatten": true }),
            )
            .await;
        let session = attached["sessionId"].as_str().unwrap().to_owned();
        self.call(
            Some(&session),
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": 1400, "height": 760, "deviceScaleFactor": 1, "mobile": false }),
        )
        .await;
        self.call(Some(&session), "Page.navigate", json!({ "url": url }))
            .await;
        session
    }

    /// The value of a JavaScript expression in the page.
    async fn eval(&mut self, session: &str, expression: &str) -> Value {
        self.try_eval(session, expression)
            .await
            .unwrap_or_else(|error| panic!("{expression}: {error}"))
    }

    async fn try_eval(&mut self, session: &str, expression: &str) -> Result<Value, String> {
        let result = self
            .try_call(
                Some(session),
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
            )
            .await?;
        match result.get("exceptionDetails") {
            Some(exception) => Err(exception.to_string()),
            None => Ok(result["result"]["value"].clone()),
        }
    }

    /// Polls `expression` until it is truthy (the page reached the state), at most 30 s.
    async fn wait_for(&mut self, session: &str, expression: &str, what: &str) -> Value {
        let deadline = tokio::time::Instant::now() + BROWSER_LIMIT;
        loop {
            // An error is a page between two documents (a form post, a redirect): not yet.
            let value = self.try_eval(session, expression).await;
            if let Ok(value) = &value
                && !matches!(value, Value::Null | Value::Bool(false))
            {
                return value.clone();
            }
            if tokio::time::Instant::now() > deadline {
                let page = self
                    .try_eval(session, "document.body ? document.body.innerText : ''")
                    .await;
                panic!(
                    "the page never showed {what} within {BROWSER_LIMIT:?}; last answer {value:?}; it shows:\n{page:?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        // kill_on_drop too; this also ends it when the test panics with it still borrowed.
        let _ = self.child.start_kill();
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

fn decode_base64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let digits: Vec<u8> = text.bytes().filter(|&c| c != b'=').map(value).collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let mut n = 0u32;
        for (i, &d) in chunk.iter().enumerate() {
            n |= u32::from(d) << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
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
    let running = spawn_with_admin(config, Some(TOKEN)).await;
    let traffic = Traffic::start(running.addr);

    let mut browser = Chromium::start().await;
    let tab = browser.open(&format!("http://{}/", running.admin)).await;

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
        running.admin,
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
    let clip = json!({ "x": 0, "y": 0, "width": 1400, "height": height, "scale": 1 });
    let shot = browser
        .call(
            Some(&tab),
            "Page.captureScreenshot",
            json!({ "format": "png", "clip": clip }),
        )
        .await;
    let png = decode_base64(shot["data"].as_str().expect("screenshot data"));
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(
        png.len() > 10_000,
        "a blank screenshot? {} bytes",
        png.len()
    );
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    std::fs::write(&path, &png).unwrap();

    browser.close().await;
    let report = traffic.stop().await;
    assert!(report.requests > 0);
    assert_eq!(
        report.groups.len(),
        3,
        "loadgen saw the three instances: {:?}",
        report.groups
    );
}
