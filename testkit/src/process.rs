//! A server process under a `sh` supervisor that stops it when our end of its stdin closes.

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `"$@"` in the background and waits for standard input to close; then sends the
/// server the given signal and waits for it. `exec` would lose the pipe, hence the wrapper.
const SUPERVISOR: &str = r#"sig="$1"; shift
"$@" &
pid=$!
read -r _ || true
kill -s "$sig" "$pid" 2>/dev/null
wait "$pid"
"#;

/// A running server. Dropping it stops the server and waits (bounded) for it to exit.
#[derive(Debug)]
pub(crate) struct Supervised {
    child: Child,
    stdin: Option<ChildStdin>,
    name: String,
}

impl Supervised {
    /// Starts `program args…` with stdout and stderr appended to `log`. `stop_signal` is the
    /// signal name the supervisor sends on shutdown (`INT` is PostgreSQL's fast shutdown).
    pub(crate) fn spawn(
        name: &str,
        stop_signal: &str,
        program: &Path,
        args: &[String],
        log: &Path,
        cwd: &Path,
    ) -> Supervised {
        let log_out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("testkit: cannot open log {}: {e}", log.display()));
        let log_err = log_out
            .try_clone()
            .expect("testkit: cannot clone log handle");
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(SUPERVISOR)
            .arg("supervisor")
            .arg(stop_signal)
            .arg(program)
            .args(args)
            .current_dir(cwd)
            .stdin(Stdio::piped())
            .stdout(log_out)
            .stderr(log_err)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("testkit: cannot start {name} ({}): {e}", program.display())
            });
        let stdin = child.stdin.take();
        Supervised {
            child,
            stdin,
            name: name.to_owned(),
        }
    }

    /// True while the supervisor (and so, normally, the server) is running.
    pub(crate) fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Stops the server and waits for it, at most 30 s; past that the supervisor is killed.
    pub(crate) fn stop(&mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "testkit: {} did not stop within 30 s; killing its supervisor",
            self.name
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs a command to completion and panics with its output when it fails.
pub(crate) fn run_checked(what: &str, command: &mut Command) {
    let output = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("testkit: cannot run {what}: {e}"));
    if !output.status.success() {
        panic!(
            "testkit: {what} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// The last `max` bytes of a log file, for failure messages.
pub(crate) fn log_tail(path: &Path, max: usize) -> String {
    let mut text = String::new();
    if let Ok(mut file) = File::open(path) {
        let _ = file.read_to_string(&mut text);
    }
    let start = text.len().saturating_sub(max);
    let start = (start..text.len())
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(text.len());
    text[start..].to_owned()
}
