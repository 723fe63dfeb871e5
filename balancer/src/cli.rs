//! Command-line interface: flags, each with an environment variable, layered over the
//! config file. Flags beat environment, which beats the file, which beats defaults.
//!
//! The two secrets may also come from files (`BALANCER_ADMIN_TOKEN_FILE`,
//! `BALANCER_STICKY_KEY_FILE`), as Docker and Swarm mount secrets under `/run/secrets/`:
//! an orchestrator shows a service's environment to whoever may inspect it, never its
//! secrets. [`Cli::read_secrets`] is the one place either form is read.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::PathBuf;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::config::{
    Algorithm, BackendSpec, CertificateSpec, Cidr, Config, ConfigError, Mode, Origin, Overrides,
    Sources, parse_duration,
};
use crate::sticky::StickyKey;

#[derive(Debug, Parser)]
#[command(name = "balancer", version, about = "hitscale's HTTP load balancer")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// TOML config file.
    #[arg(long, env = "BALANCER_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 0.0.0.0:8080].
    #[arg(long, env = "BALANCER_LISTEN", global = true)]
    pub listen: Option<SocketAddr>,
    /// http (layer 7, the default) or tcp (layer 4: each connection's bytes go to one
    /// backend unread; TLS passes through).
    #[arg(long, env = "BALANCER_MODE")]
    pub mode: Option<Mode>,
    /// Backend `HOST:PORT[,weight=N]`; repeatable. A DNS name stands for all its addresses.
    /// Environment: BALANCER_BACKENDS, whitespace-separated.
    #[arg(long = "backend", value_name = "HOST:PORT[,weight=N]")]
    pub backends: Vec<BackendSpec>,
    /// round-robin, weighted-round-robin, least-connections, least-response-time, ip-hash or
    /// power-of-two-choices [default: round-robin].
    #[arg(long, env = "BALANCER_ALGORITHM")]
    pub algorithm: Option<Algorithm>,
    /// Cookie sticky sessions with the default cookie.
    #[arg(long, env = "BALANCER_STICKY", num_args = 0..=1, default_missing_value = "true")]
    pub sticky: Option<bool>,
    /// Path for active health checks; without one, no active checks run.
    #[arg(long, env = "BALANCER_HEALTH_PATH")]
    pub health_path: Option<String>,
    /// Time between health checks, e.g. 2s [default: 2s].
    #[arg(long, env = "BALANCER_HEALTH_INTERVAL", value_parser = parse_duration)]
    pub health_interval: Option<Duration>,
    /// Health check timeout, e.g. 1s [default: 1s].
    #[arg(long, env = "BALANCER_HEALTH_TIMEOUT", value_parser = parse_duration)]
    pub health_timeout: Option<Duration>,
    /// Passes in a row that bring a backend up [default: 2].
    #[arg(long, env = "BALANCER_HEALTH_RISE")]
    pub health_rise: Option<NonZeroU32>,
    /// Failures in a row that take a backend down [default: 3].
    #[arg(long, env = "BALANCER_HEALTH_FALL")]
    pub health_fall: Option<NonZeroU32>,
    /// How often DNS names are re-resolved, e.g. 5s [default: 5s].
    #[arg(long, env = "BALANCER_RESOLVE_INTERVAL", value_parser = parse_duration)]
    pub resolve_interval: Option<Duration>,
    /// Worker threads [default: one per CPU core]. With 1, a single-threaded runtime runs
    /// everything on the main thread: no work stealing, no cross-thread wake-ups.
    #[arg(long, env = "BALANCER_THREADS", global = true)]
    pub threads: Option<NonZeroUsize>,
    /// Secret key of the sticky cookie's MAC, at least 16 bytes; give every balancer the
    /// same one. Without it, each process draws a random key at start-up, so cookies do not
    /// survive a restart and are not shared between balancers.
    #[arg(long, env = "BALANCER_STICKY_KEY", hide_env_values = true, value_parser = sticky_key)]
    pub sticky_key: Option<StickyKey>,
    /// Address of the admin API listener (off unless set). Its token is taken from
    /// BALANCER_ADMIN_TOKEN or `admin.token_file`, never from the command line (`ps`).
    #[arg(long, env = "BALANCER_ADMIN_LISTEN", global = true)]
    pub admin_listen: Option<SocketAddr>,
    /// Mark the dashboard's session cookie `Secure`, for a dashboard reached through a
    /// TLS-terminating proxy (the admin listener itself speaks plain HTTP) [default: false].
    #[arg(long, env = "BALANCER_ADMIN_COOKIE_SECURE", num_args = 0..=1, default_missing_value = "true")]
    pub admin_cookie_secure: Option<bool>,
    /// Reload the configuration when the config file changes (besides SIGHUP, which always
    /// reloads). The file is polled by path, so an editor's save, a rename into place and a
    /// bind-mounted or ConfigMap file are all followed.
    #[arg(long, env = "BALANCER_WATCH_CONFIG", num_args = 0..=1, default_missing_value = "true")]
    pub watch_config: Option<bool>,
    /// HTTPS listen address (off unless set); the plain listener then redirects to it.
    #[arg(long, env = "BALANCER_TLS_LISTEN")]
    pub tls_listen: Option<SocketAddr>,
    /// Certificate chain (PEM) for HTTPS; repeatable, paired in order with --tls-key. The
    /// first is the default. Replaces `tls.certificates` of the config file.
    #[arg(long = "tls-cert", env = "BALANCER_TLS_CERT", value_name = "FILE")]
    pub tls_certs: Vec<PathBuf>,
    /// Private key (PEM) of the --tls-cert at the same position.
    #[arg(long = "tls-key", env = "BALANCER_TLS_KEY", value_name = "FILE")]
    pub tls_keys: Vec<PathBuf>,
    /// Send `Strict-Transport-Security: max-age=...` on HTTPS answers, e.g. 8760h.
    #[arg(long, env = "BALANCER_TLS_HSTS_MAX_AGE", value_parser = parse_duration)]
    pub hsts_max_age: Option<Duration>,
    /// The port redirects to HTTPS name [default: the HTTPS listener's port].
    #[arg(long, env = "BALANCER_TLS_HTTPS_PORT")]
    pub https_port: Option<u16>,
    /// Proxies (addresses or CIDRs, separated by spaces or commas) trusted to say who the
    /// client is: their X-Forwarded-For is kept and extended, and the address it names is
    /// the client the app is told and ip-hash hashes. Replaces
    /// `forwarding.trusted_proxies` of the config file; empty leaves it.
    #[arg(
        long,
        env = "BALANCER_TRUSTED_PROXIES",
        value_name = "CIDRS",
        value_parser = CidrList::parse
    )]
    pub trusted_proxies: Option<CidrList>,
    /// BALANCER_ADMIN_TOKEN, read from the environment only (see `parse_recording_sources`).
    #[arg(skip)]
    pub admin_token: Option<crate::admin::auth::AdminToken>,
    /// The arguments whose value came from their environment variable, not a flag.
    #[arg(skip)]
    pub from_env: Vec<String>,
    /// The secrets read from files by [`Cli::read_secrets`]: config key and the variable
    /// that named the file (the value's origin in error messages).
    #[arg(skip)]
    pub secret_files: Vec<(&'static str, &'static str)>,
}

/// Never fails, so clap never quotes the secret in an error; `Config::validate` checks
/// its length and says where it came from.
fn sticky_key(text: &str) -> Result<StickyKey, std::convert::Infallible> {
    Ok(StickyKey::from_text(text.to_owned()))
}

/// `--trusted-proxies` / BALANCER_TRUSTED_PROXIES: one value holding the whole list, so
/// the variable reads as the flag does, and an empty one (Compose's pass-through of an
/// unset variable) sets nothing.
#[derive(Debug, Clone)]
pub struct CidrList(pub Vec<Cidr>);

impl CidrList {
    fn parse(text: &str) -> Result<Self, String> {
        text.split(|c: char| c == ',' || c.is_whitespace())
            .filter(|entry| !entry.is_empty())
            .map(str::parse)
            .collect::<Result<_, _>>()
            .map(Self)
    }
}

/// For each argument that overrides the file: its id, its config-file key, its flag and
/// its variable.
const OVERRIDES: [(&str, &str, &str, &str); 19] = [
    ("mode", "mode", "--mode", "BALANCER_MODE"),
    (
        "tls_listen",
        "tls.listen",
        "--tls-listen",
        "BALANCER_TLS_LISTEN",
    ),
    (
        "tls_certs",
        "tls.certificates",
        "--tls-cert",
        "BALANCER_TLS_CERT",
    ),
    (
        "hsts_max_age",
        "tls.hsts_max_age",
        "--hsts-max-age",
        "BALANCER_TLS_HSTS_MAX_AGE",
    ),
    (
        "https_port",
        "tls.https_port",
        "--https-port",
        "BALANCER_TLS_HTTPS_PORT",
    ),
    (
        "admin_listen",
        "admin.listen",
        "--admin-listen",
        "BALANCER_ADMIN_LISTEN",
    ),
    (
        "admin_cookie_secure",
        "admin.cookie_secure",
        "--admin-cookie-secure",
        "BALANCER_ADMIN_COOKIE_SECURE",
    ),
    ("listen", "listen", "--listen", "BALANCER_LISTEN"),
    ("backends", "backends", "--backend", "BALANCER_BACKENDS"),
    (
        "algorithm",
        "algorithm",
        "--algorithm",
        "BALANCER_ALGORITHM",
    ),
    ("sticky", "sticky.enabled", "--sticky", "BALANCER_STICKY"),
    (
        "sticky_key",
        "sticky.key",
        "--sticky-key",
        "BALANCER_STICKY_KEY",
    ),
    (
        "health_path",
        "health.path",
        "--health-path",
        "BALANCER_HEALTH_PATH",
    ),
    (
        "health_interval",
        "health.interval",
        "--health-interval",
        "BALANCER_HEALTH_INTERVAL",
    ),
    (
        "health_timeout",
        "health.timeout",
        "--health-timeout",
        "BALANCER_HEALTH_TIMEOUT",
    ),
    (
        "health_rise",
        "health.rise",
        "--health-rise",
        "BALANCER_HEALTH_RISE",
    ),
    (
        "health_fall",
        "health.fall",
        "--health-fall",
        "BALANCER_HEALTH_FALL",
    ),
    (
        "resolve_interval",
        "discovery.resolve_interval",
        "--resolve-interval",
        "BALANCER_RESOLVE_INTERVAL",
    ),
    (
        "trusted_proxies",
        "forwarding.trusted_proxies",
        "--trusted-proxies",
        "BALANCER_TRUSTED_PROXIES",
    ),
];

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Exit 0 if the balancer accepts TCP connections on its port, 1 otherwise. Sends no
    /// HTTP request (a request would reach the app). For container health checks.
    Healthcheck {
        /// Address to probe [default: 127.0.0.1 and the listen port].
        #[arg(long)]
        addr: Option<SocketAddr>,
    },
    /// Talk to a running balancer's admin API (token from BALANCER_ADMIN_TOKEN).
    Admin {
        /// The admin listener [default: --admin-listen / BALANCER_ADMIN_LISTEN, on loopback
        /// if it is a wildcard address].
        #[arg(long)]
        addr: Option<SocketAddr>,
        #[command(subcommand)]
        action: AdminAction,
    },
}

#[derive(Debug, Clone, Subcommand)]
pub enum AdminAction {
    /// Every backend with its state and counters.
    List,
    /// No new requests nor sticky sessions; in-flight ones finish.
    Drain { address: SocketAddr },
    /// Take requests again after a drain.
    Resume { address: SocketAddr },
    /// Set the weight (1-1000).
    Weight { address: SocketAddr, weight: u32 },
    /// Add a backend (kept across DNS re-resolution until removed).
    Add {
        address: SocketAddr,
        #[arg(long, default_value_t = 1)]
        weight: u32,
    },
    /// Remove a backend; its in-flight requests finish.
    Remove { address: SocketAddr },
}

impl Cli {
    /// Parses the process's arguments and environment, noting which values came from the
    /// environment; exits with status 2 and a message naming the flag or variable on error.
    pub fn parse_recording_sources() -> Self {
        let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
        match Self::try_parse_recording_sources(&args) {
            Ok(mut cli) => match cli.read_secrets(|var| std::env::var(var).ok()) {
                Ok(()) => cli,
                Err(error) => {
                    eprintln!("balancer: invalid configuration: {error}");
                    std::process::exit(2);
                }
            },
            Err(error) => name_the_variable(error, &args).exit(),
        }
    }

    /// Reads the admin token (BALANCER_ADMIN_TOKEN, from the environment only: a flag
    /// would show it in `ps`, or the file BALANCER_ADMIN_TOKEN_FILE names) and the sticky
    /// key's file (BALANCER_STICKY_KEY_FILE; the key itself may also be given by its flag
    /// or variable, parsed by clap). `env` looks a variable up; tests pass their own.
    /// A secret given in both forms, or a file that cannot be read, is an error naming
    /// the variable and the path; the content is never shown.
    pub fn read_secrets(
        &mut self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        let set = |var: &str| env(var).filter(|v| !v.trim().is_empty());
        let token_file = set("BALANCER_ADMIN_TOKEN_FILE");
        match (set("BALANCER_ADMIN_TOKEN"), token_file) {
            (Some(_), Some(_)) => {
                return Err(both_set(
                    "BALANCER_ADMIN_TOKEN_FILE",
                    "BALANCER_ADMIN_TOKEN",
                ));
            }
            (Some(token), None) => {
                self.admin_token = Some(crate::admin::auth::AdminToken::from_text(&token));
            }
            (None, Some(path)) => {
                let text = read_secret_file("BALANCER_ADMIN_TOKEN_FILE", &path)?;
                self.admin_token = Some(crate::admin::auth::AdminToken::from_text(&text));
                self.secret_files
                    .push(("admin.token", "BALANCER_ADMIN_TOKEN_FILE"));
            }
            (None, None) => {}
        }
        if let Some(path) = set("BALANCER_STICKY_KEY_FILE") {
            if self.sticky_key.is_some() {
                let other = if self.from_env.iter().any(|e| e == "sticky_key") {
                    "BALANCER_STICKY_KEY"
                } else {
                    "--sticky-key"
                };
                return Err(both_set("BALANCER_STICKY_KEY_FILE", other));
            }
            let text = read_secret_file("BALANCER_STICKY_KEY_FILE", &path)?;
            self.sticky_key = Some(StickyKey::from_text(text));
            self.secret_files
                .push(("sticky.key", "BALANCER_STICKY_KEY_FILE"));
        }
        Ok(())
    }

    /// Like `try_parse_from`, and records in `from_env` which values came from variables.
    pub fn try_parse_recording_sources<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let matches = Self::command().try_get_matches_from(args)?;
        let mut cli = Self::from_arg_matches(&matches)?;
        cli.from_env = matches
            .ids()
            .filter(|id| matches.value_source(id.as_str()) == Some(ValueSource::EnvVariable))
            .map(|id| id.as_str().to_owned())
            .collect();
        Ok(cli)
    }

    /// Where the value of argument `id` came from: its variable or its flag.
    fn origin(&self, id: &str) -> Option<(&'static str, Origin)> {
        let &(_, key, flag, var) = OVERRIDES.iter().find(|(i, ..)| *i == id)?;
        let origin = if self.from_env.iter().any(|e| e == id) {
            Origin::Env(var)
        } else {
            Origin::Flag(flag)
        };
        Some((key, origin))
    }

    /// Merges environment/flags over the file and defaults. `backends_env` is the value of
    /// BALANCER_BACKENDS, passed in so tests need not touch the process environment.
    pub fn into_config(self, backends_env: Option<String>) -> Result<Config, ConfigError> {
        self.into_sources(backends_env)?.load()
    }

    /// Whether the config file is to be watched: `--watch-config`/BALANCER_WATCH_CONFIG,
    /// refused without a config file to watch.
    pub fn watch_config(&self) -> Result<bool, ConfigError> {
        let watch = self.watch_config.unwrap_or(false);
        if watch && self.config.is_none() {
            let source = if self.from_env.iter().any(|e| e == "watch_config") {
                "environment variable BALANCER_WATCH_CONFIG"
            } else {
                "flag --watch-config"
            };
            return Err(ConfigError::Invalid(format!(
                "{source}: there is no config file to watch (give --config or BALANCER_CONFIG)"
            )));
        }
        Ok(watch)
    }

    /// The config file and the environment/flag overrides, which a reload reads again (see
    /// [`Sources`]); [`Sources::load`] merges and validates them.
    pub fn into_sources(self, backends_env: Option<String>) -> Result<Sources, ConfigError> {
        let mut origins = Vec::new();
        for (id, set) in [
            ("listen", self.listen.is_some()),
            ("mode", self.mode.is_some()),
            ("algorithm", self.algorithm.is_some()),
            ("sticky", self.sticky.is_some()),
            (
                "sticky_key",
                self.sticky_key.is_some()
                    && !self.secret_files.iter().any(|(k, _)| *k == "sticky.key"),
            ),
            ("health_path", self.health_path.is_some()),
            ("health_interval", self.health_interval.is_some()),
            ("health_timeout", self.health_timeout.is_some()),
            ("health_rise", self.health_rise.is_some()),
            ("health_fall", self.health_fall.is_some()),
            ("resolve_interval", self.resolve_interval.is_some()),
            ("admin_listen", self.admin_listen.is_some()),
            ("admin_cookie_secure", self.admin_cookie_secure.is_some()),
            ("tls_listen", self.tls_listen.is_some()),
            ("tls_certs", !self.tls_certs.is_empty()),
            ("hsts_max_age", self.hsts_max_age.is_some()),
            ("https_port", self.https_port.is_some()),
            (
                "trusted_proxies",
                self.trusted_proxies
                    .as_ref()
                    .is_some_and(|list| !list.0.is_empty()),
            ),
        ] {
            if set {
                origins.extend(self.origin(id));
            }
        }
        if !self.backends.is_empty() {
            origins.push(("backends", Origin::Flag("--backend")));
        } else if backends_env.is_some() {
            origins.push(("backends", Origin::Env("BALANCER_BACKENDS")));
        }
        if self.admin_token.is_some() {
            origins.push(("admin.token", Origin::Env("BALANCER_ADMIN_TOKEN")));
        }
        // Pushed last: a secret read from a file is told by the variable naming the file.
        for &(key, var) in &self.secret_files {
            origins.push((key, Origin::Env(var)));
        }
        let backends = if self.backends.is_empty() {
            match backends_env {
                Some(list) => list
                    .split_whitespace()
                    .map(str::parse)
                    .collect::<Result<_, _>>()
                    .map_err(|message| ConfigError::Env {
                        var: "BALANCER_BACKENDS",
                        message,
                    })?,
                None => Vec::new(),
            }
        } else {
            self.backends
        };
        if self.tls_certs.len() != self.tls_keys.len() {
            return Err(ConfigError::Invalid(format!(
                "--tls-cert / BALANCER_TLS_CERT given {} time(s) but --tls-key / BALANCER_TLS_KEY {}: each certificate needs its key, in the same order",
                self.tls_certs.len(),
                self.tls_keys.len()
            )));
        }
        let tls_certificates = self
            .tls_certs
            .into_iter()
            .zip(self.tls_keys)
            .map(|(cert, key)| CertificateSpec {
                cert,
                key,
                default: false,
            })
            .collect();
        let overrides = Overrides {
            listen: self.listen,
            mode: self.mode,
            backends,
            algorithm: self.algorithm,
            sticky: self.sticky,
            health_path: self.health_path,
            health_interval: self.health_interval,
            health_timeout: self.health_timeout,
            health_rise: self.health_rise,
            health_fall: self.health_fall,
            resolve_interval: self.resolve_interval,
            sticky_key: self.sticky_key,
            admin_listen: self.admin_listen,
            admin_token: self.admin_token,
            admin_cookie_secure: self.admin_cookie_secure,
            tls_listen: self.tls_listen,
            tls_certificates,
            tls_hsts_max_age: self.hsts_max_age,
            tls_https_port: self.https_port,
            trusted_proxies: self.trusted_proxies.map(|list| list.0).unwrap_or_default(),
            origins,
        };
        Ok(Sources {
            file: self.config,
            overrides,
        })
    }

    /// Where `balancer admin` connects: `--addr`, else the admin listen address (loopback
    /// for a wildcard one).
    pub fn admin_addr(&self, explicit: Option<SocketAddr>) -> Option<SocketAddr> {
        explicit.or(self.admin_listen.map(|listen| {
            let ip = match listen.ip() {
                IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
                ip => ip,
            };
            SocketAddr::new(ip, listen.port())
        }))
    }

    /// Where `balancer healthcheck` connects: loopback on the listen port.
    pub fn healthcheck_addr(&self, explicit: Option<SocketAddr>) -> SocketAddr {
        if let Some(addr) = explicit {
            return addr;
        }
        let listen = self.listen.unwrap_or(Config::default().listen);
        let ip = match listen.ip() {
            IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        SocketAddr::new(ip, listen.port())
    }
}

fn both_set(file_var: &'static str, other: &str) -> ConfigError {
    ConfigError::Env {
        var: file_var,
        message: format!("{other} is set too: give the secret one way only"),
    }
}

/// A secret file's content without the one trailing line break `echo` and `docker secret
/// create` leave; errors name the variable and the path, never the content.
fn read_secret_file(var: &'static str, path: &str) -> Result<String, ConfigError> {
    let unreadable = |problem: String| ConfigError::Env {
        var,
        message: format!("cannot read the secret file {path:?}: {problem}"),
    };
    let bytes = std::fs::read(path).map_err(|e| unreadable(e.to_string()))?;
    let text = String::from_utf8(bytes).map_err(|_| unreadable("it is not UTF-8 text".into()))?;
    let text = text
        .strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        .unwrap_or(&text);
    if text.is_empty() {
        return Err(unreadable("it is empty".into()));
    }
    Ok(text.to_owned())
}

/// Clap names the flag of a value it cannot parse even when the value came from the
/// environment; this names the variable instead, which is where the operator must look.
fn name_the_variable(error: clap::Error, args: &[std::ffi::OsString]) -> clap::Error {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if !matches!(
        error.kind(),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation
    ) {
        return error;
    }
    let Some(ContextValue::String(arg)) = error.get(ContextKind::InvalidArg) else {
        return error;
    };
    let flag = arg.split([' ', '=']).next().unwrap_or_default();
    let on_command_line = args.iter().any(|a| {
        let a = a.to_string_lossy();
        a == flag || a.starts_with(&format!("{flag}="))
    });
    let var = Cli::command()
        .get_arguments()
        .find(|a| a.get_long().is_some_and(|long| format!("--{long}") == flag))
        .and_then(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()));
    match var {
        Some(var) if !on_command_line => {
            let rendered = error.to_string();
            let first = rendered.lines().next().unwrap_or_default();
            let message = first.strip_prefix("error: ").unwrap_or(first);
            clap::Error::raw(
                ErrorKind::ValueValidation,
                format!("environment variable {var}: {message}\n"),
            )
        }
        _ => error,
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn backends_come_from_flags_or_the_whitespace_separated_variable() {
        let cli =
            Cli::try_parse_from(["balancer", "--sticky", "--health-interval", "500ms"]).unwrap();
        let config = cli
            .into_config(Some("127.0.0.2:8000,weight=3  127.0.0.3:8000\n".into()))
            .unwrap();
        assert_eq!(config.backends.len(), 2);
        assert_eq!(config.backends[0].weight, 3);
        assert!(config.sticky.enabled);
        assert_eq!(config.health.interval, Duration::from_millis(500));

        // Flags win over the variable.
        let cli = Cli::try_parse_from(["balancer", "--backend", "hits:8000"]).unwrap();
        let config = cli.into_config(Some("127.0.0.2:8000".into())).unwrap();
        assert_eq!(config.backends[0].host, "hits");

        let cli = Cli::try_parse_from(["balancer"]).unwrap();
        let error = cli
            .into_config(Some("hits:8000,weight=x".into()))
            .unwrap_err();
        assert!(error.to_string().contains("BALANCER_BACKENDS"), "{error}");
    }

    #[test]
    fn trusted_proxies_are_one_list_and_an_empty_one_sets_nothing() {
        let cli = Cli::try_parse_recording_sources([
            "balancer",
            "--backend",
            "a:80",
            "--trusted-proxies",
            " 172.16.0.0/12, 192.168.0.0/16\n2001:db8::1 ",
        ])
        .unwrap();
        let config = cli.into_config(None).unwrap();
        let want: Vec<Cidr> = ["172.16.0.0/12", "192.168.0.0/16", "2001:db8::1"]
            .iter()
            .map(|c| c.parse().unwrap())
            .collect();
        assert_eq!(config.forwarding.trusted_proxies, want);
        assert_eq!(
            config.origin_of("forwarding.trusted_proxies"),
            "flag --trusted-proxies"
        );

        let cli = Cli::try_parse_recording_sources([
            "balancer",
            "--backend",
            "a:80",
            "--trusted-proxies",
            "",
        ])
        .unwrap();
        assert!(
            cli.into_config(None)
                .unwrap()
                .forwarding
                .trusted_proxies
                .is_empty()
        );

        let error = Cli::try_parse_recording_sources([
            "balancer",
            "--trusted-proxies",
            "192.0.2.0/24 192.0.2.0/33",
        ])
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("\"192.0.2.0/33\": prefix must be 0-32"),
            "{error}"
        );
    }

    #[test]
    fn the_admin_cookie_is_secure_only_when_asked_and_the_flag_is_its_origin() {
        let plain = Cli::try_parse_from(["balancer", "--backend", "a:80"]).unwrap();
        assert!(!plain.into_config(None).unwrap().admin.cookie_secure);
        let cli = Cli::try_parse_recording_sources([
            "balancer",
            "--backend",
            "a:80",
            "--admin-cookie-secure",
        ])
        .unwrap();
        let config = cli.into_config(None).unwrap();
        assert!(config.admin.cookie_secure);
        assert_eq!(
            config.origin_of("admin.cookie_secure"),
            "flag --admin-cookie-secure"
        );
        let off = Cli::try_parse_from(["balancer", "--admin-cookie-secure=false"]).unwrap();
        assert_eq!(off.admin_cookie_secure, Some(false));
        let error = Cli::try_parse_from(["balancer", "--admin-cookie-secure=yes please"])
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("'yes please' for '--admin-cookie-secure"),
            "{error}"
        );
    }

    #[test]
    fn tls_flags_pair_certificates_with_keys_in_order() {
        let cli = Cli::try_parse_recording_sources([
            "balancer",
            "--backend",
            "a:80",
            "--tls-listen",
            "127.0.0.1:8443",
            "--tls-cert",
            "a.crt",
            "--tls-key",
            "a.key",
            "--tls-cert",
            "b.crt",
            "--tls-key",
            "b.key",
            "--hsts-max-age",
            "1h",
        ])
        .unwrap();
        let config = cli.into_config(None).unwrap();
        let pairs: Vec<_> = config
            .tls
            .certificates
            .iter()
            .map(|c| (c.cert.to_str().unwrap(), c.key.to_str().unwrap()))
            .collect();
        assert_eq!(pairs, [("a.crt", "a.key"), ("b.crt", "b.key")]);
        assert_eq!(config.tls.hsts_max_age, Some(Duration::from_secs(3600)));
        assert_eq!(config.origin_of("tls.certificates[1]"), "flag --tls-cert");

        let cli = Cli::try_parse_recording_sources([
            "balancer",
            "--backend",
            "a:80",
            "--tls-listen",
            "127.0.0.1:8443",
            "--tls-cert",
            "a.crt",
        ])
        .unwrap();
        let error = cli.into_config(None).unwrap_err().to_string();
        assert!(error.contains("--tls-key"), "{error}");
    }

    #[test]
    fn secrets_come_from_the_files_their_variables_name() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("admin_token");
        let key = dir.path().join("sticky_key");
        std::fs::write(&token, "t0ken-from-a-file-0123456789\n").unwrap();
        std::fs::write(&key, "a-sticky-key-of-32-bytes-or-so..\r\n").unwrap();
        let vars = [
            ("BALANCER_ADMIN_TOKEN_FILE", token.to_str().unwrap()),
            ("BALANCER_STICKY_KEY_FILE", key.to_str().unwrap()),
        ];
        let env = |var: &str| {
            vars.iter()
                .find(|(k, _)| *k == var)
                .map(|(_, v)| (*v).to_owned())
        };
        let mut cli = Cli::try_parse_recording_sources(["balancer", "--backend", "a:80"]).unwrap();
        cli.read_secrets(env).unwrap();
        let config = cli.into_config(None).unwrap();
        let token = config.admin.token.as_ref().expect("token read");
        assert_eq!(token.len(), "t0ken-from-a-file-0123456789".len());
        let key = config.sticky.key.as_ref().expect("key read");
        assert!(
            key.same_as(&StickyKey::from_text(
                "a-sticky-key-of-32-bytes-or-so..".into()
            )),
            "one trailing line break dropped, nothing else"
        );
        assert_eq!(
            config.origin_of("sticky.key"),
            "environment variable BALANCER_STICKY_KEY_FILE"
        );
        assert_eq!(
            config.origin_of("admin.token"),
            "environment variable BALANCER_ADMIN_TOKEN_FILE"
        );

        // A token too short is told by the variable that named its file, never shown.
        let short = dir.path().join("short");
        std::fs::write(&short, "sh0rt\n").unwrap();
        let mut cli = Cli::try_parse_recording_sources([
            "balancer",
            "--backend",
            "a:80",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .unwrap();
        let short_path = short.to_str().unwrap().to_owned();
        cli.read_secrets(|var| (var == "BALANCER_ADMIN_TOKEN_FILE").then(|| short_path.clone()))
            .unwrap();
        let error = cli.into_config(None).unwrap_err().to_string();
        assert!(
            error.starts_with("environment variable BALANCER_ADMIN_TOKEN_FILE:"),
            "{error}"
        );
        assert!(!error.contains("sh0rt"), "{error}");
    }

    #[test]
    fn a_secret_in_both_forms_or_an_unreadable_file_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("admin_token");
        std::fs::write(&token, "t0ken-from-a-file-0123456789").unwrap();
        let token_path = token.to_str().unwrap().to_owned();

        let mut cli = Cli::try_parse_recording_sources(["balancer"]).unwrap();
        let error = cli
            .read_secrets(|var| match var {
                "BALANCER_ADMIN_TOKEN" => Some("t0ken-from-the-environment-000".into()),
                "BALANCER_ADMIN_TOKEN_FILE" => Some(token_path.clone()),
                _ => None,
            })
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "environment variable BALANCER_ADMIN_TOKEN_FILE: BALANCER_ADMIN_TOKEN is set too: give the secret one way only"
        );

        let mut cli = Cli::try_parse_recording_sources([
            "balancer",
            "--sticky-key",
            "s3cret-key-from-the-flag-0000000",
        ])
        .unwrap();
        let error = cli
            .read_secrets(|var| (var == "BALANCER_STICKY_KEY_FILE").then(|| token_path.clone()))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("BALANCER_STICKY_KEY_FILE: --sticky-key is set too"),
            "{error}"
        );
        assert!(!error.contains("s3cret"), "{error}");

        let missing = dir.path().join("missing");
        let missing = missing.to_str().unwrap().to_owned();
        let mut cli = Cli::try_parse_recording_sources(["balancer"]).unwrap();
        let error = cli
            .read_secrets(|var| (var == "BALANCER_STICKY_KEY_FILE").then(|| missing.clone()))
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with(&format!(
                "environment variable BALANCER_STICKY_KEY_FILE: cannot read the secret file {missing:?}: "
            )),
            "{error}"
        );

        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let empty = empty.to_str().unwrap().to_owned();
        let mut cli = Cli::try_parse_recording_sources(["balancer"]).unwrap();
        let error = cli
            .read_secrets(|var| (var == "BALANCER_ADMIN_TOKEN_FILE").then(|| empty.clone()))
            .unwrap_err()
            .to_string();
        assert!(error.ends_with("it is empty"), "{error}");
    }

    #[test]
    fn healthcheck_targets_loopback_on_the_listen_port() {
        let cli =
            Cli::try_parse_from(["balancer", "--listen", "0.0.0.0:9000", "healthcheck"]).unwrap();
        assert_eq!(
            cli.healthcheck_addr(None),
            "127.0.0.1:9000".parse().unwrap()
        );
        let cli =
            Cli::try_parse_from(["balancer", "healthcheck", "--listen", "[::]:9001"]).unwrap();
        assert_eq!(cli.healthcheck_addr(None), "[::1]:9001".parse().unwrap());
    }
}
