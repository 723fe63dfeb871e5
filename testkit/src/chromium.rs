//! Headless chromium driven over the DevTools protocol on a pipe, for the browser tests
//! (the balancer's dashboard, the hits app's page) and the README's screenshots they make.
//!
//! A pipe, not `--remote-debugging-port`: no port to pick, and the browser's end of the
//! conversation closes with the test process. Only tokio and serde_json, no CDP crate: the
//! tests need a handful of commands.
//!
//! Like the servers, nothing is skipped: when `chromium` is missing, [`Chromium::start`]
//! panics saying how to install it (`scripts/install-deps`).

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// The browser's hang guard: a cold chromium start on a busy machine is slow.
pub const BROWSER_LIMIT: Duration = Duration::from_secs(60);

/// Headless chromium on the DevTools protocol over a pipe: it reads NUL-terminated JSON
/// commands on its fd 3 and writes replies on fd 4, which `sh` maps to our stdin/stdout.
pub struct Chromium {
    child: tokio::process::Child,
    commands: tokio::process::ChildStdin,
    replies: BufReader<tokio::process::ChildStdout>,
    next_id: u64,
    stderr: Arc<Mutex<String>>,
    _profile: tempfile::TempDir,
}

impl Chromium {
    /// Starts the browser with a fresh profile in a temp dir under `profile_parent` (a
    /// test's `CARGO_TARGET_TMPDIR`, so a profile a failed test leaves behind is not in
    /// /tmp). Panics when `chromium` is not installed.
    pub async fn start(profile_parent: &Path) -> Self {
        let found = std::process::Command::new("sh")
            .args(["-c", "command -v chromium"])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            found,
            "chromium is not installed: the browser tests drive Debian's chromium headless. \
             Install it with scripts/install-deps (or: apt-get install chromium)"
        );
        std::fs::create_dir_all(profile_parent).expect("the profile's parent directory");
        let profile = tempfile::tempdir_in(profile_parent).expect("a chromium profile dir");
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
        let stderr = Arc::new(Mutex::new(String::new()));
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
    pub async fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        match self.try_call(session, method, params).await {
            Ok(result) => result,
            Err(error) => panic!("{method} failed: {error}\n{}", self.output()),
        }
    }

    /// As [`Self::call`], but the protocol's error reply (a page navigating away while
    /// asked something) is returned, not a panic; a dead or silent browser still panics.
    pub async fn try_call(
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
    pub async fn close(mut self) {
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

    /// A new tab of `width` x `height` CSS pixels on `url`, attached in flat mode: its
    /// session id.
    pub async fn open(&mut self, url: &str, width: u32, height: u32) -> String {
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
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": false }),
        )
        .await;
        self.call(Some(&session), "Page.navigate", json!({ "url": url }))
            .await;
        session
    }

    /// The value of a JavaScript expression in the page.
    pub async fn eval(&mut self, session: &str, expression: &str) -> Value {
        self.try_eval(session, expression)
            .await
            .unwrap_or_else(|error| panic!("{expression}: {error}"))
    }

    /// As [`Self::eval`], but a script exception or a protocol error is returned.
    pub async fn try_eval(&mut self, session: &str, expression: &str) -> Result<Value, String> {
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

    /// Polls `expression` until it is truthy (the page reached the state), at most
    /// [`BROWSER_LIMIT`]; returns its value, or panics with what the page shows.
    pub async fn wait_for(&mut self, session: &str, expression: &str, what: &str) -> Value {
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

    /// A PNG of the top `width` x `height` CSS pixels of the page; panics unless chromium
    /// answered with a PNG.
    pub async fn screenshot(&mut self, session: &str, width: u32, height: u32) -> Vec<u8> {
        let clip = json!({ "x": 0, "y": 0, "width": width, "height": height, "scale": 1 });
        let shot = self
            .call(
                Some(session),
                "Page.captureScreenshot",
                json!({ "format": "png", "clip": clip }),
            )
            .await;
        let png = decode_base64(shot["data"].as_str().expect("screenshot data"));
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
        png
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        // kill_on_drop too; this also ends it when the test panics with it still borrowed.
        let _ = self.child.start_kill();
    }
}

/// Writes `bytes` to `path` through a temp file in the same directory and a rename, so a
/// reader (git, a README viewer) never sees half a file, and a failed run leaves the old
/// one. Used for the screenshots the browser tests keep in `docs/`.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::other(format!("{} has no directory", path.display())))?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    // A hidden name, unique per process and call: two test binaries may write at once.
    let temp = dir.join(format!(".{}", crate::unique_name(&name)));
    let written = std::fs::write(&temp, bytes).and_then(|()| std::fs::rename(&temp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_decodes_every_padding() {
        assert_eq!(decode_base64("TWFu"), b"Man");
        assert_eq!(decode_base64("TWE="), b"Ma");
        assert_eq!(decode_base64("TQ=="), b"M");
        assert_eq!(decode_base64("iVBORw0KGgo="), b"\x89PNG\r\n\x1a\n");
    }

    #[test]
    fn an_atomic_write_replaces_the_file_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shot.png");
        std::fs::write(&path, b"old").unwrap();
        write_atomically(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [std::ffi::OsString::from("shot.png")]);
    }
}
