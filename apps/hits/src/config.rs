//! Typed configuration read from the environment (after `.env` is loaded by `main`).
//!
//! Every value is parsed and checked here, before the app serves anything; a missing or
//! malformed value is reported with the variable's name, so the process stops with a message
//! such as `PORT: "80a" is not a valid port number (1-65535)`.
//!
//! The secrets may come from files instead (`DATABASE_URL_FILE`, `REDIS_URL_FILE`, and
//! `DATABASE_PASSWORD_FILE` for the password alone), as Docker and Swarm secrets are mounted
//! under `/run/secrets/`: an orchestrator's environment is readable by anyone who may
//! inspect the service, its secrets are not.

use secrecy::{ExposeSecret, SecretString};
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{var}: is not set; {hint}")]
    Missing {
        var: &'static str,
        hint: &'static str,
    },
    #[error("{var}: {value:?} {problem}")]
    Invalid {
        var: &'static str,
        value: String,
        problem: String,
    },
    /// The file a `*_FILE` variable names cannot be used; its content is never shown.
    #[error("{var}: cannot read the secret file {path:?}: {problem}")]
    SecretFile {
        var: &'static str,
        path: String,
        problem: String,
    },
    /// A value given twice, in two forms: which one is meant is not guessed.
    #[error("{var} and {other} are both set: give one of them")]
    Conflict {
        var: &'static str,
        other: &'static str,
    },
}

/// Everything the app needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    pub instance_id: String,
    pub host: IpAddr,
    pub port: u16,
    pub database: DatabaseConfig,
    pub redis: RedisConfig,
    pub writes: WriteConfig,
    pub work: WorkConfig,
    pub compaction: CompactionConfig,
    pub shutdown_grace: Duration,
}

/// Compaction of the counters of instances gone for an hour (see `store::Store::compact`).
#[derive(Debug, Clone)]
pub struct CompactionConfig {
    /// How often an instance tries to compact (one instance at a time does it); `None`
    /// (`COMPACT_INTERVAL_SECS=0`) turns compaction off, at start-up too.
    pub interval: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    /// Holds the password: never logged.
    pub url: SecretString,
    pub pool_size: u32,
    /// How long a request waits for a pooled connection before answering 503.
    pub acquire_timeout: Duration,
    /// How long start-up keeps retrying an unreachable database before giving up.
    pub startup_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct RedisConfig {
    pub url: SecretString,
    /// The longest a request waits for Redis before using PostgreSQL instead.
    pub timeout: Duration,
}

/// The group commit that turns concurrent hits into few transactions.
#[derive(Debug, Clone)]
pub struct WriteConfig {
    /// Writer tasks; each commits its own batches on its own counter rows.
    pub writers: u16,
    pub max_batch: usize,
    /// Hits waiting for a writer; past this a hit is refused with 503 instead of queued.
    pub queue: usize,
    /// The longest a request waits for its hit to be committed.
    pub timeout: Duration,
}

/// The optional simulated cost per hit: each instance has `concurrency` workers and each hit
/// holds one for `duration`, like a fixed pool of synchronous workers.
#[derive(Debug, Clone)]
pub struct WorkConfig {
    pub duration: Duration,
    pub concurrency: usize,
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_vars(std::env::vars())
    }

    /// Reads the given variables only; tests pass their values here instead of mutating the
    /// process environment.
    pub fn from_vars(
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let vars = Vars(vars.into_iter().collect());
        let instance_id = match vars.get("INSTANCE_ID") {
            Some(id) => validate_instance_id(id)?,
            None => default_instance_id()?,
        };
        Ok(Config {
            instance_id,
            host: vars.parse_or(
                "HOST",
                "0.0.0.0".parse().expect("valid"),
                "is not an IP address",
            )?,
            port: vars.port()?,
            database: DatabaseConfig {
                url: vars.database_url()?,
                pool_size: vars.range("DATABASE_POOL_SIZE", 16, 1, 1000)?,
                acquire_timeout: vars.millis("DATABASE_ACQUIRE_TIMEOUT_MS", 2_000)?,
                startup_timeout: Duration::from_secs(vars.range(
                    "DATABASE_STARTUP_TIMEOUT_SECS",
                    60,
                    0,
                    3600,
                )?),
            },
            redis: RedisConfig {
                url: vars.url(
                    "REDIS_URL",
                    "REDIS_URL_FILE",
                    &["redis://", "rediss://", "unix://", "redis+unix://"],
                    "e.g. REDIS_URL=redis://localhost:6379 (or REDIS_URL_FILE=/run/secrets/redis_url)",
                )?,
                timeout: vars.millis("REDIS_TIMEOUT_MS", 100)?,
            },
            writes: WriteConfig {
                writers: vars.range("WRITE_CONCURRENCY", 4, 1, 64)?,
                max_batch: vars.range("WRITE_BATCH_MAX", 512, 1, 100_000)?,
                queue: vars.range("WRITE_QUEUE", 16_384, 1, 10_000_000)?,
                timeout: vars.millis("WRITE_TIMEOUT_MS", 5_000)?,
            },
            work: WorkConfig {
                duration: Duration::from_millis(vars.range("WORK_MS", 0, 0, 60_000)?),
                concurrency: vars.range("WORK_CONCURRENCY", 1, 1, 100_000)?,
            },
            compaction: CompactionConfig {
                interval: match vars.range("COMPACT_INTERVAL_SECS", 300u64, 0, 86_400)? {
                    0 => None,
                    secs => Some(Duration::from_secs(secs)),
                },
            },
            shutdown_grace: Duration::from_secs(vars.range("SHUTDOWN_GRACE_SECS", 10, 0, 3600)?),
        })
    }

    /// The address to bind.
    pub fn listen_addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::new(self.host, self.port)
    }
}

struct Vars(HashMap<String, String>);

impl Vars {
    /// A set, non-blank value. An empty variable counts as unset, as compose writes
    /// `VAR=` for variables declared without a value.
    fn get(&self, var: &str) -> Option<&str> {
        self.0.get(var).map(|v| v.trim()).filter(|v| !v.is_empty())
    }

    fn parse_or<T: std::str::FromStr>(
        &self,
        var: &'static str,
        default: T,
        problem: &str,
    ) -> Result<T, ConfigError> {
        match self.get(var) {
            None => Ok(default),
            Some(raw) => raw.parse().map_err(|_| invalid(var, raw, problem)),
        }
    }

    fn range<T>(&self, var: &'static str, default: T, min: T, max: T) -> Result<T, ConfigError>
    where
        T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
    {
        let problem = format!("is not a whole number from {min} to {max}");
        let value = self.parse_or(var, default, &problem)?;
        if value < min || value > max {
            return Err(invalid(var, &value.to_string(), &problem));
        }
        Ok(value)
    }

    fn millis(&self, var: &'static str, default: u64) -> Result<Duration, ConfigError> {
        Ok(Duration::from_millis(
            self.range(var, default, 1, 3_600_000)?,
        ))
    }

    fn port(&self) -> Result<u16, ConfigError> {
        // Port 0 asks the OS for a free port: what tests use.
        self.parse_or("PORT", 8000u16, "is not a valid port number (0-65535)")
    }

    /// The value of `var`, or the content of the file `file_var` names (one trailing line
    /// break dropped, as `echo secret > file` and `docker secret create` leave one). Both
    /// set is an error. The content is returned as is: it may be a password.
    fn secret(
        &self,
        var: &'static str,
        file_var: &'static str,
    ) -> Result<Option<String>, ConfigError> {
        match (self.get(var), self.get(file_var)) {
            (Some(_), Some(_)) => Err(ConfigError::Conflict {
                var,
                other: file_var,
            }),
            (Some(value), None) => Ok(Some(value.to_owned())),
            (None, None) => Ok(None),
            (None, Some(path)) => {
                let unreadable = |problem: String| ConfigError::SecretFile {
                    var: file_var,
                    path: path.to_owned(),
                    problem,
                };
                let bytes = std::fs::read(path).map_err(|e| unreadable(e.to_string()))?;
                let text = String::from_utf8(bytes)
                    .map_err(|_| unreadable("it is not UTF-8 text".to_owned()))?;
                let text = text
                    .strip_suffix('\n')
                    .map(|t| t.strip_suffix('\r').unwrap_or(t))
                    .unwrap_or(&text);
                if text.is_empty() {
                    return Err(unreadable("it is empty".to_owned()));
                }
                Ok(Some(text.to_owned()))
            }
        }
    }

    /// `DATABASE_URL` or `DATABASE_URL_FILE`; with `DATABASE_PASSWORD_FILE`, the password
    /// read from that file goes into the URL, which then names the user but no password
    /// (one secret serves both PostgreSQL's `POSTGRES_PASSWORD_FILE` and the app).
    fn database_url(&self) -> Result<SecretString, ConfigError> {
        let url = self.url(
            "DATABASE_URL",
            "DATABASE_URL_FILE",
            &["postgres://", "postgresql://"],
            "e.g. DATABASE_URL=postgres://hits:hits@localhost:5432/hits (or DATABASE_URL_FILE, or DATABASE_URL=postgres://hits@localhost:5432/hits with DATABASE_PASSWORD_FILE)",
        )?;
        let Some(password) = self.secret("DATABASE_PASSWORD", "DATABASE_PASSWORD_FILE")? else {
            return Ok(url);
        };
        let var = if self.get("DATABASE_URL").is_some() {
            "DATABASE_URL"
        } else {
            "DATABASE_URL_FILE"
        };
        with_password(url.expose_secret(), &password)
            .map(SecretString::from)
            .map_err(|problem| ConfigError::Invalid {
                var,
                value: "postgres://…".to_owned(),
                problem: problem.to_owned(),
            })
    }

    fn url(
        &self,
        var: &'static str,
        file_var: &'static str,
        schemes: &[&str],
        hint: &'static str,
    ) -> Result<SecretString, ConfigError> {
        let from_file = self.get(var).is_none();
        let raw = self
            .secret(var, file_var)?
            .ok_or(ConfigError::Missing { var, hint })?;
        let raw = raw.trim();
        let var = if from_file { file_var } else { var };
        if !schemes.iter().any(|s| raw.starts_with(s)) {
            // The value may hold a password: show only its scheme.
            let scheme = raw
                .split("://")
                .next()
                .unwrap_or("")
                .chars()
                .take(16)
                .collect::<String>();
            return Err(ConfigError::Invalid {
                var,
                value: format!("{scheme}://…"),
                problem: format!("must start with one of {}", schemes.join(", ")),
            });
        }
        Ok(SecretString::from(raw.to_owned()))
    }
}

/// `url` (`scheme://user@host...`) with `password` added to its user, percent-encoded.
fn with_password(url: &str, password: &str) -> Result<String, &'static str> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or("has no scheme (scheme://user@host/db)")?;
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let (user, host) = authority.rsplit_once('@').ok_or(
        "names no user (postgres://USER@host/db), and DATABASE_PASSWORD_FILE gives a password for one",
    )?;
    if user.contains(':') || user.is_empty() {
        return Err(
            "must name a user and no password (postgres://USER@host/db) when DATABASE_PASSWORD_FILE gives the password",
        );
    }
    let mut encoded = String::with_capacity(password.len() * 3);
    for byte in password.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    Ok(format!("{scheme}://{user}:{encoded}@{host}{path}"))
}

fn invalid(var: &'static str, value: &str, problem: &str) -> ConfigError {
    ConfigError::Invalid {
        var,
        value: value.to_owned(),
        problem: problem.to_owned(),
    }
}

/// Instance ids appear in pages, headers and metrics: keep them short and printable.
fn validate_instance_id(id: &str) -> Result<String, ConfigError> {
    let ok = id.len() <= 64 && id.chars().all(|c| c.is_ascii_graphic());
    if !ok {
        return Err(invalid(
            "INSTANCE_ID",
            id,
            "must be 1-64 printable ASCII characters without spaces",
        ));
    }
    Ok(id.to_owned())
}

/// The host name: in a container, the container's id, so each replica differs.
fn default_instance_id() -> Result<String, ConfigError> {
    let from_kernel = std::fs::read_to_string("/proc/sys/kernel/hostname").ok();
    let from_etc = || std::fs::read_to_string("/etc/hostname").ok();
    let name = from_kernel
        .or_else(from_etc)
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .ok_or(ConfigError::Missing {
            var: "INSTANCE_ID",
            hint: "and the host name could not be read; set INSTANCE_ID",
        })?;
    validate_instance_id(&name)
}

impl DatabaseConfig {
    pub(crate) fn url(&self) -> &str {
        self.url.expose_secret()
    }
}

impl RedisConfig {
    pub(crate) fn url(&self) -> &str {
        self.url.expose_secret()
    }
}
