//! A redis-server from the system's binaries, on a Unix socket in a temp dir, persisting
//! nothing.
//!
//! `port 0` turns TCP off: the socket's path is the server's address, so no free port is
//! picked, released and raced for, and a restart finds its address still free.

use crate::process::{Supervised, log_tail};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A running redis-server in a temp dir; stopped when dropped.
#[derive(Debug)]
pub struct Redis {
    binary: PathBuf,
    root: tempfile::TempDir,
    server: Option<Supervised>,
}

impl Redis {
    pub fn start() -> Redis {
        let binary = which("redis-server").unwrap_or_else(|| {
            panic!(
                "testkit: redis-server not found on PATH. Run scripts/install-deps \
                 (apt-get install redis-server)."
            )
        });
        let root = tempfile::Builder::new()
            .prefix("testkit-redis-")
            .tempdir()
            .expect("testkit: cannot create a temp dir for Redis");
        let mut redis = Redis {
            binary,
            root,
            server: None,
        };
        redis.start_server();
        redis
    }

    /// The server's Unix socket.
    pub fn socket_path(&self) -> PathBuf {
        self.root.path().join("redis.sock")
    }

    /// `redis+unix:///…/redis.sock`, which the `redis` crate (and redis-cli's `-u`) accept.
    pub fn url(&self) -> String {
        format!("redis+unix://{}", self.socket_path().display())
    }

    /// Stops the server; clients see refused connections until [`Redis::restart`].
    pub fn stop(&mut self) {
        if let Some(mut server) = self.server.take() {
            server.stop();
        }
    }

    /// Starts the server again on the same socket (empty: nothing is persisted).
    pub fn restart(&mut self) {
        self.stop();
        self.start_server();
    }

    /// Stalls the server, as a swapping or overloaded host would: the process is stopped
    /// (SIGSTOP), so connections are accepted by the kernel and never answered. Returns once
    /// the kernel reports the process stopped; the server resumes when the guard is dropped.
    /// Unlike `DEBUG SLEEP`, the stall lasts exactly as long as the test needs, so a test
    /// can prove that what it did happened while Redis was stalled.
    pub fn freeze(&self) -> Frozen<'_> {
        let reply = self
            .command("INFO server")
            .expect("testkit: INFO server before freezing Redis");
        let pid: u32 = reply
            .lines()
            .find_map(|line| line.strip_prefix("process_id:"))
            .and_then(|pid| pid.trim().parse().ok())
            .unwrap_or_else(|| panic!("testkit: no process_id in INFO server:\n{reply}"));
        send_signal("-STOP", pid);
        let stat = format!("/proc/{pid}/stat");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let state = std::fs::read_to_string(&stat).unwrap_or_default();
            // The state follows the command name, which is in parentheses.
            let stopped = state
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('T'));
            if stopped {
                return Frozen { pid, _redis: self };
            }
            assert!(
                Instant::now() < deadline,
                "testkit: redis-server {pid} is not stopped 30 s after SIGSTOP: {state}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Sends one command in Redis' inline protocol and returns the raw reply, read to its
    /// end (bulk strings and arrays included).
    pub fn command(&self, line: &str) -> std::io::Result<String> {
        let mut stream = UnixStream::connect(self.socket_path())?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        stream.set_write_timeout(Some(Duration::from_secs(2)))?;
        stream.write_all(format!("{line}\r\n").as_bytes())?;
        let mut reply = Vec::new();
        let mut buf = [0u8; 4096];
        while reply_end(&reply, 0).is_none() {
            let n = stream.read(&mut buf)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            reply.extend_from_slice(&buf[..n]);
        }
        Ok(String::from_utf8_lossy(&reply).into_owned())
    }

    fn start_server(&mut self) {
        let dir = path_str(self.root.path()).to_owned();
        let socket = path_str(&self.socket_path()).to_owned();
        let args: Vec<String> = [
            "--port",
            "0",
            "--unixsocket",
            &socket,
            "--unixsocketperm",
            "700",
            "--dir",
            &dir,
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let log = self.root.path().join("redis.log");
        self.server = Some(Supervised::spawn(
            "redis-server",
            "TERM",
            &self.binary,
            &args,
            &log,
            self.root.path(),
        ));
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.command("PING").is_ok_and(|r| r.starts_with("+PONG")) {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!(
            "testkit: redis-server did not answer PING on {}; log:\n{}",
            self.socket_path().display(),
            log_tail(&log, 4000)
        );
    }
}

/// A stalled Redis (see [`Redis::freeze`]); dropping it lets the server run again.
#[derive(Debug)]
pub struct Frozen<'a> {
    pid: u32,
    _redis: &'a Redis,
}

impl Drop for Frozen<'_> {
    fn drop(&mut self) {
        send_signal("-CONT", self.pid);
    }
}

fn send_signal(signal: &str, pid: u32) {
    let status = Command::new("kill")
        .arg(signal)
        .arg(pid.to_string())
        .status()
        .unwrap_or_else(|e| panic!("testkit: cannot run kill {signal} {pid}: {e}"));
    assert!(status.success(), "testkit: kill {signal} {pid} failed");
}

/// Where the RESP value starting at `at` ends, or `None` while it is incomplete.
fn reply_end(buf: &[u8], at: usize) -> Option<usize> {
    let line_end = at + buf.get(at..)?.windows(2).position(|w| w == b"\r\n")?;
    let after_line = line_end + 2;
    let header = std::str::from_utf8(&buf[at + 1..line_end]).ok()?;
    match buf[at] {
        b'$' => match header.parse::<i64>().ok()? {
            len if len < 0 => Some(after_line),
            len => {
                let end = after_line + usize::try_from(len).ok()? + 2;
                (buf.len() >= end).then_some(end)
            }
        },
        b'*' => {
            let mut next = after_line;
            for _ in 0..header.parse::<i64>().ok()?.max(0) {
                next = reply_end(buf, next)?;
            }
            Some(next)
        }
        _ => Some(after_line),
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str()
        .expect("testkit: temp paths are valid UTF-8 on this platform")
}

fn which(program: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .or_else(|| {
            // Debian installs redis-server in /usr/bin, which a minimal PATH may lack.
            let fallback = PathBuf::from("/usr/bin").join(program);
            fallback.is_file().then_some(fallback)
        })
}

#[cfg(test)]
mod tests {
    use super::reply_end;

    #[test]
    fn replies_are_complete_only_at_their_end() {
        assert_eq!(reply_end(b"+PONG\r\n", 0), Some(7));
        assert_eq!(reply_end(b"+PON", 0), None);
        assert_eq!(reply_end(b"$5\r\nhel", 0), None);
        assert_eq!(reply_end(b"$5\r\nhello\r\n", 0), Some(11));
        assert_eq!(reply_end(b"$-1\r\n", 0), Some(5));
        assert_eq!(reply_end(b"*2\r\n$1\r\na\r\n$1\r\n", 0), None);
        assert_eq!(reply_end(b"*2\r\n$1\r\na\r\n$1\r\nb\r\n", 0), Some(18));
        assert_eq!(reply_end(b"*0\r\n", 0), Some(4));
    }
}
