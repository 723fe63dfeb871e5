//! A PostgreSQL server from the system's binaries, one cluster per handle.
//!
//! PostgreSQL refuses to run as root. When the tests run as root (CI, containers) the
//! harness drops to the `postgres` user with `setpriv` for `initdb` and the server; there is
//! no need for `sudo`. The cluster trusts local connections as user `postgres`.
//!
//! The server listens on a Unix socket in its own temp dir and on no TCP port at all: there
//! is no free port to pick, release and hope to bind again (another process could take it
//! in between, and a restart could lose it), and clusters started at once never collide.

use crate::process::{Supervised, log_tail, run_checked};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// With TCP off, the "port" only names the socket file (`.s.PGSQL.5432`); each cluster has
/// its own directory, so all of them can use PostgreSQL's default number.
const SOCKET_PORT: &str = "5432";

/// A running PostgreSQL cluster in a temp dir; stopped and deleted when dropped.
#[derive(Debug)]
pub struct Postgres {
    bin: PathBuf,
    root: tempfile::TempDir,
    run_as: Option<(u32, u32)>,
    server: Option<Supervised>,
}

impl Postgres {
    /// A fresh cluster on its own Unix socket, up and accepting connections.
    pub fn start() -> Postgres {
        let bin = find_bin_dir();
        let root = tempfile::Builder::new()
            .prefix("testkit-pg-")
            .tempdir()
            .expect("testkit: cannot create a temp dir for PostgreSQL");
        let run_as = if is_root(root.path()) {
            let ids = postgres_user_ids();
            std::os::unix::fs::chown(root.path(), Some(ids.0), Some(ids.1))
                .expect("testkit: cannot hand the PostgreSQL temp dir to user postgres");
            Some(ids)
        } else {
            None
        };
        let mut pg = Postgres {
            bin,
            root,
            run_as,
            server: None,
        };
        pg.initdb();
        pg.start_server();
        pg
    }

    /// One cluster shared by every test of this test binary; each test makes its own
    /// database with [`Postgres::create_database`]. Tests that stop the server use their own.
    pub fn shared() -> &'static Postgres {
        static SHARED: OnceLock<Postgres> = OnceLock::new();
        SHARED.get_or_init(Postgres::start)
    }

    /// The directory of the server's socket (`.s.PGSQL.5432` in it).
    pub fn socket_dir(&self) -> &Path {
        self.root.path()
    }

    /// The URL of database `name` as the superuser `postgres`, over the Unix socket: libpq
    /// and sqlx read `host=/dir` as a socket directory (the host part is then ignored).
    pub fn url(&self, name: &str) -> String {
        format!(
            "postgres://postgres@localhost:{SOCKET_PORT}/{name}?host={}",
            path_str(self.socket_dir())
        )
    }

    /// Creates an empty database with a unique name and returns its URL.
    pub fn create_database(&self) -> String {
        let name = crate::unique_name("test");
        run_checked(
            "createdb",
            Command::new(self.bin.join("createdb"))
                .args(["-h", path_str(self.socket_dir()), "-p", SOCKET_PORT])
                .args(["-U", "postgres"])
                .arg(&name),
        );
        self.url(&name)
    }

    /// Stops the server (fast shutdown: open sessions are cut) and waits until it is down.
    pub fn stop(&mut self) {
        if let Some(mut server) = self.server.take() {
            server.stop();
        }
    }

    /// Starts the server again on the same socket with the same data.
    pub fn restart(&mut self) {
        self.stop();
        self.start_server();
    }

    /// The server's log, for failure messages.
    pub fn log_path(&self) -> PathBuf {
        self.root.path().join("postgres.log")
    }

    fn data_dir(&self) -> PathBuf {
        self.root.path().join("data")
    }

    fn initdb(&self) {
        let data = self.data_dir();
        let args: Vec<String> = [
            "-D",
            path_str(&data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
            "--no-instructions",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut command = self.command(&self.bin.join("initdb"), &args);
        run_checked("initdb", command.current_dir(self.root.path()));
    }

    fn start_server(&mut self) {
        let data = self.data_dir();
        let socket_dir = self.root.path();
        let args: Vec<String> = vec![
            "-D".into(),
            path_str(&data).into(),
            "-p".into(),
            SOCKET_PORT.into(),
            "-k".into(),
            path_str(socket_dir).into(),
            // No TCP at all: the socket directory is the server's whole address.
            "-c".into(),
            "listen_addresses=".into(),
            // Tests need no crash safety; durability is measured by the benchmarks instead.
            "-c".into(),
            "fsync=off".into(),
            "-c".into(),
            "max_connections=400".into(),
        ];
        let (program, args) = self.wrapped(&self.bin.join("postgres"), &args);
        let log = self.log_path();
        self.server = Some(Supervised::spawn(
            "postgres",
            "INT",
            &program,
            &args,
            &log,
            self.root.path(),
        ));
        self.wait_ready(&log);
    }

    fn wait_ready(&mut self, log: &Path) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-q", "-h", path_str(self.socket_dir()), "-p", SOCKET_PORT])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ready {
                return;
            }
            if let Some(server) = self.server.as_mut()
                && !server.is_running()
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "testkit: PostgreSQL did not become ready on its socket in {}; log {}:\n{}",
            self.socket_dir().display(),
            log.display(),
            log_tail(log, 4000)
        );
    }

    /// A command that runs `program` as user postgres when we are root.
    fn command(&self, program: &Path, args: &[String]) -> Command {
        let (program, args) = self.wrapped(program, args);
        let mut command = Command::new(program);
        command.args(args);
        command
    }

    fn wrapped(&self, program: &Path, args: &[String]) -> (PathBuf, Vec<String>) {
        match self.run_as {
            None => (program.to_path_buf(), args.to_vec()),
            Some((uid, gid)) => {
                let mut all = vec![
                    format!("--reuid={uid}"),
                    format!("--regid={gid}"),
                    "--init-groups".to_owned(),
                    path_str(program).to_owned(),
                ];
                all.extend_from_slice(args);
                (PathBuf::from("setpriv"), all)
            }
        }
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str()
        .expect("testkit: temp paths are valid UTF-8 on this platform")
}

fn is_root(owned_dir: &Path) -> bool {
    std::fs::metadata(owned_dir)
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// The uid and gid of the `postgres` user, which Debian's postgresql package creates.
fn postgres_user_ids() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            if fields.len() > 3 && fields[0] == "postgres" {
                Some((fields[2].parse().ok()?, fields[3].parse().ok()?))
            } else {
                None
            }
        })
        .unwrap_or_else(|| {
            panic!(
                "testkit: running as root, but there is no `postgres` user to run PostgreSQL as \
                 (PostgreSQL refuses root). Run scripts/install-deps, which installs the \
                 postgresql package that creates it."
            )
        })
}

/// Where `initdb`, `postgres`, `createdb` and `pg_isready` live: `$PG_BIN`, else the newest
/// `/usr/lib/postgresql/*/bin` (Debian keeps them off PATH), else the directory on PATH.
fn find_bin_dir() -> PathBuf {
    let has_server = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    if let Some(dir) = std::env::var_os("PG_BIN").map(PathBuf::from) {
        if has_server(&dir) {
            return dir;
        }
        panic!("testkit: PG_BIN={} has no initdb/postgres", dir.display());
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            has_server(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return bin;
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default();
    for dir in on_path {
        if has_server(&dir) {
            return std::fs::canonicalize(dir.join("initdb"))
                .ok()
                .and_then(|p| p.parent().map(Path::to_path_buf))
                .filter(|d| has_server(d))
                .unwrap_or(dir);
        }
    }
    panic!(
        "testkit: PostgreSQL server binaries (initdb, postgres) not found in $PG_BIN, \
         /usr/lib/postgresql/*/bin or PATH. Run scripts/install-deps (apt-get install postgresql)."
    )
}
