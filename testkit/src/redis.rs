//! A redis-server from the system's binaries, on a free port, persisting nothing.

use crate::process::{Supervised, log_tail};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;

use std::time::{Duration, Instant};

/// A running redis-server in a temp dir; stopped when dropped.
#[derive(Debug)]
pub struct Redis {
    binary: PathBuf,
    root: tempfile::TempDir,
    port: u16,
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
            port: crate::free_port(),
            server: None,
        };
        redis.start_server();
        redis
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops the server; clients see refused connections until [`Redis::restart`].
    pub fn stop(&mut self) {
        if let Some(mut server) = self.server.take() {
            server.stop();
        }
    }

    /// Starts the server again on the same port (empty: nothing is persisted).
    pub fn restart(&mut self) {
        self.stop();
        self.start_server();
    }

    /// Sends one command in Redis' inline protocol and returns the raw reply.
    pub fn command(&self, line: &str) -> std::io::Result<String> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        stream.write_all(format!("{line}\r\n").as_bytes())?;
        let mut buf = [0u8; 512];
        let n = stream.read(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    fn start_server(&mut self) {
        let dir = self
            .root
            .path()
            .to_str()
            .expect("utf-8 temp path")
            .to_owned();
        let args: Vec<String> = [
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--dir",
            &dir,
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            // Tests stall the server with DEBUG SLEEP to play a slow Redis.
            "--enable-debug-command",
            "local",
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
            "testkit: redis-server did not answer PING on port {}; log:\n{}",
            self.port,
            log_tail(&log, 4000)
        );
    }
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
