//! Command-line interface: flags, each with an environment variable, layered over the
//! config file. Flags beat environment, which beats the file, which beats defaults.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::config::{Algorithm, BackendSpec, Config, ConfigError, Overrides, parse_duration};

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
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Exit 0 if the balancer accepts TCP connections on its port, 1 otherwise. Sends no
    /// HTTP request (a request would reach the app). For container health checks.
    Healthcheck {
        /// Address to probe [default: 127.0.0.1 and the listen port].
        #[arg(long)]
        addr: Option<SocketAddr>,
    },
}

impl Cli {
    /// Merges environment/flags over the file and defaults. `backends_env` is the value of
    /// BALANCER_BACKENDS, passed in so tests need not touch the process environment.
    pub fn into_config(self, backends_env: Option<String>) -> Result<Config, ConfigError> {
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
        let overrides = Overrides {
            listen: self.listen,
            backends,
            algorithm: self.algorithm,
            sticky: self.sticky,
            health_path: self.health_path,
            health_interval: self.health_interval,
            health_timeout: self.health_timeout,
            health_rise: self.health_rise,
            health_fall: self.health_fall,
            resolve_interval: self.resolve_interval,
        };
        Config::load(self.config.as_deref(), overrides)
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn backends_come_from_flags_or_the_whitespace_separated_variable() {
        let cli =
            Cli::try_parse_from(["balancer", "--sticky", "--health-interval", "500ms"]).unwrap();
        let config = cli
            .into_config(Some("10.0.0.2:8000,weight=3  10.0.0.3:8000\n".into()))
            .unwrap();
        assert_eq!(config.backends.len(), 2);
        assert_eq!(config.backends[0].weight, 3);
        assert!(config.sticky.enabled);
        assert_eq!(config.health.interval, Duration::from_millis(500));

        // Flags win over the variable.
        let cli = Cli::try_parse_from(["balancer", "--backend", "hits:8000"]).unwrap();
        let config = cli.into_config(Some("10.0.0.2:8000".into())).unwrap();
        assert_eq!(config.backends[0].host, "hits");

        let cli = Cli::try_parse_from(["balancer"]).unwrap();
        let error = cli
            .into_config(Some("hits:8000,weight=x".into()))
            .unwrap_err();
        assert!(error.to_string().contains("BALANCER_BACKENDS"), "{error}");
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
