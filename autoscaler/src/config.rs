//! Command-line flags (each with an `AUTOSCALER_*` variable) and their validation into a
//! typed [`Config`]. Every error names the flag and its variable, or the file, so the
//! process stops before it starts or stops anything.
//!
//! The admin token comes from `BALANCER_ADMIN_TOKEN` (the variable the balancer reads) or
//! `--admin-token-file`, never from a flag: a command line is visible to every user.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use secrecy::SecretString;

use crate::controller::{Policy, Targets};
use crate::provider::docker::DockerConfig;
use crate::provider::local::LocalConfig;
use crate::scaler::ScalerConfig;

/// The variable the admin token is read from (the balancer's own).
pub const TOKEN_VAR: &str = "BALANCER_ADMIN_TOKEN";

#[derive(Debug, Parser)]
#[command(
    name = "autoscaler",
    version,
    about = "Adds and removes hits instances behind the balancer with the load (HPA-style), \
             draining each through the admin API before it stops.",
    after_help = "The admin token is read from BALANCER_ADMIN_TOKEN or --admin-token-file.\n\n\
                  Example (the seed's rule: up above 80 % of 50 rps, down below 30 %):\n  \
                  autoscaler --admin 127.0.0.1:9000 --target-rps-per-instance 27.5 \\\n    \
                  --tolerance 0.4545 --max-step 1 --min 1 --max 6"
)]
pub struct Opts {
    /// The balancer's admin API (its `admin.listen`); a name is resolved at each call.
    #[arg(long, env = "AUTOSCALER_ADMIN", value_name = "HOST:PORT")]
    pub admin: String,
    /// A file holding the admin token (instead of BALANCER_ADMIN_TOKEN).
    #[arg(long, env = "AUTOSCALER_ADMIN_TOKEN_FILE", value_name = "PATH")]
    pub admin_token_file: Option<PathBuf>,
    /// Where to serve `GET /metrics`.
    #[arg(
        long,
        env = "AUTOSCALER_LISTEN",
        default_value = "127.0.0.1:9100",
        value_name = "HOST:PORT"
    )]
    pub listen: SocketAddr,

    /// The fewest instances.
    #[arg(long, env = "AUTOSCALER_MIN", default_value_t = 1)]
    pub min: u32,
    /// The most instances.
    #[arg(long, env = "AUTOSCALER_MAX", default_value_t = 10)]
    pub max: u32,
    /// The most instances one decision adds or removes.
    #[arg(long, env = "AUTOSCALER_MAX_STEP", default_value_t = 4)]
    pub max_step: u32,
    /// Target requests per second per instance.
    #[arg(long, env = "AUTOSCALER_TARGET_RPS_PER_INSTANCE", value_name = "RPS")]
    pub target_rps_per_instance: Option<f64>,
    /// Target requests in flight per instance.
    #[arg(
        long,
        env = "AUTOSCALER_TARGET_IN_FLIGHT_PER_INSTANCE",
        value_name = "N"
    )]
    pub target_in_flight_per_instance: Option<f64>,
    /// Target CPU per instance, in cores (0.5 = half a CPU); the docker provider measures
    /// it, the local one does not (the metric then never decides).
    #[arg(long, env = "AUTOSCALER_TARGET_CPU_PER_INSTANCE", value_name = "CORES")]
    pub target_cpu_per_instance: Option<f64>,
    /// Target mean latency (time to response head, as the balancer measures it, over the
    /// rate window), in milliseconds.
    #[arg(long, env = "AUTOSCALER_TARGET_LATENCY_MS", value_name = "MS")]
    pub target_latency_ms: Option<f64>,
    /// No change while observed/target is within 1 +- this.
    #[arg(long, env = "AUTOSCALER_TOLERANCE", default_value_t = 0.1)]
    pub tolerance: f64,
    /// Scale down only to the highest recommendation made over this window.
    #[arg(long, env = "AUTOSCALER_SCALE_DOWN_WINDOW", default_value = "5m", value_parser = hitscale_duration::parse)]
    pub scale_down_window: Duration,
    /// How often to decide.
    #[arg(long, env = "AUTOSCALER_INTERVAL", default_value = "15s", value_parser = hitscale_duration::parse)]
    pub interval: Duration,
    /// Requests per second are averaged over this window.
    #[arg(long, env = "AUTOSCALER_RATE_WINDOW", default_value = "30s", value_parser = hitscale_duration::parse)]
    pub rate_window: Duration,
    /// How long a new instance may take to be healthy in the balancer.
    #[arg(long, env = "AUTOSCALER_READY_TIMEOUT", default_value = "60s", value_parser = hitscale_duration::parse)]
    pub ready_timeout: Duration,
    /// How long a draining instance may take to finish its requests.
    #[arg(long, env = "AUTOSCALER_DRAIN_TIMEOUT", default_value = "30s", value_parser = hitscale_duration::parse)]
    pub drain_timeout: Duration,

    /// Where instances run: `local` (child processes) or `docker` (containers).
    #[arg(long, env = "AUTOSCALER_PROVIDER", default_value = "local", value_parser = ["local", "docker"])]
    pub provider: String,
    /// The name decisions are reported to the balancer under (its dashboard shows them).
    #[arg(long, env = "AUTOSCALER_REPORT_AS", default_value = "autoscaler")]
    pub report_as: String,
    /// Do not report decisions to the balancer.
    #[arg(long, env = "AUTOSCALER_NO_REPORT")]
    pub no_report: bool,

    /// The Docker provider: the Engine API's Unix socket.
    #[arg(
        long,
        env = "AUTOSCALER_DOCKER_SOCKET",
        default_value = "/var/run/docker.sock"
    )]
    pub docker_socket: String,
    /// The Docker provider: the image of the app.
    #[arg(long, env = "AUTOSCALER_DOCKER_IMAGE", default_value = "hitscale-hits")]
    pub docker_image: String,
    /// The Docker provider: the network the containers join (the balancer's).
    #[arg(
        long,
        env = "AUTOSCALER_DOCKER_NETWORK",
        default_value = "hitscale_default"
    )]
    pub docker_network: String,
    /// The Docker provider: the port the app listens on in its container.
    #[arg(long, env = "AUTOSCALER_DOCKER_PORT", default_value_t = 8000)]
    pub docker_port: u16,
    /// The Docker provider: the owner label's value, so two autoscalers never adopt each
    /// other's containers.
    #[arg(long, env = "AUTOSCALER_DOCKER_OWNER", default_value = "autoscaler")]
    pub docker_owner: String,

    /// The `hits` executable the local provider runs.
    #[arg(
        long,
        env = "AUTOSCALER_HITS_BINARY",
        default_value = "hits",
        value_name = "PATH"
    )]
    pub hits_binary: PathBuf,
    /// A variable for each instance (repeatable). Local instances inherit the autoscaler's
    /// environment (DATABASE_URL, REDIS_URL, ...) too; containers get these only.
    #[arg(long = "instance-env", value_name = "KEY=VALUE")]
    pub instance_env: Vec<String>,
    /// Instance ids are `<prefix>-<start time>-<n>`.
    #[arg(long, env = "AUTOSCALER_INSTANCE_PREFIX", default_value = "auto")]
    pub instance_prefix: String,
    /// How long an instance may take to report its address.
    #[arg(long, env = "AUTOSCALER_START_TIMEOUT", default_value = "60s", value_parser = hitscale_duration::parse)]
    pub start_timeout: Duration,
    /// From SIGTERM to the kill of a stopping instance.
    #[arg(long, env = "AUTOSCALER_STOP_TIMEOUT", default_value = "15s", value_parser = hitscale_duration::parse)]
    pub stop_timeout: Duration,
}

/// A value that does not fit, named by its flag and variable (or file).
#[derive(Debug, thiserror::Error)]
#[error("{origin}: {message}")]
pub struct ConfigError {
    pub origin: String,
    pub message: String,
}

fn invalid(flag: &str, var: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        origin: format!("--{flag} ({var})"),
        message: message.into(),
    }
}

/// Where instances run, validated.
#[derive(Debug)]
pub enum ProviderConfig {
    Local(LocalConfig),
    Docker(DockerConfig),
}

/// Everything the binary needs, validated.
#[derive(Debug)]
pub struct Config {
    /// `HOST:PORT`.
    pub admin: String,
    pub token: Option<SecretString>,
    pub listen: SocketAddr,
    pub scaler: ScalerConfig,
    pub provider: ProviderConfig,
}

impl Config {
    /// Validates `opts`; `token_var` is the value of `BALANCER_ADMIN_TOKEN` (passed in, so
    /// tests never touch the process environment).
    pub fn from_opts(opts: &Opts, token_var: Option<String>) -> Result<Config, ConfigError> {
        let admin_ok = opts.admin.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !admin_ok {
            return Err(invalid(
                "admin",
                "AUTOSCALER_ADMIN",
                format!(
                    "`{}` is not HOST:PORT (e.g. 127.0.0.1:9000 or balancer:9000)",
                    opts.admin
                ),
            ));
        }
        if opts.min > opts.max {
            return Err(invalid(
                "max",
                "AUTOSCALER_MAX",
                format!("{} is below --min ({})", opts.max, opts.min),
            ));
        }
        if opts.max == 0 {
            return Err(invalid("max", "AUTOSCALER_MAX", "must be at least 1"));
        }
        if opts.max > 1000 {
            return Err(invalid(
                "max",
                "AUTOSCALER_MAX",
                format!("{} is over 1000", opts.max),
            ));
        }
        if opts.max_step == 0 {
            return Err(invalid(
                "max-step",
                "AUTOSCALER_MAX_STEP",
                "must be at least 1",
            ));
        }
        let target = |value: Option<f64>, flag, var| match value {
            Some(v) if !(v.is_finite() && v > 0.0) => {
                Err(invalid(flag, var, format!("{v} must be a positive number")))
            }
            other => Ok(other),
        };
        let targets = Targets {
            rps_per_instance: target(
                opts.target_rps_per_instance,
                "target-rps-per-instance",
                "AUTOSCALER_TARGET_RPS_PER_INSTANCE",
            )?,
            in_flight_per_instance: target(
                opts.target_in_flight_per_instance,
                "target-in-flight-per-instance",
                "AUTOSCALER_TARGET_IN_FLIGHT_PER_INSTANCE",
            )?,
            cpu_per_instance: target(
                opts.target_cpu_per_instance,
                "target-cpu-per-instance",
                "AUTOSCALER_TARGET_CPU_PER_INSTANCE",
            )?,
            latency_ms: target(
                opts.target_latency_ms,
                "target-latency-ms",
                "AUTOSCALER_TARGET_LATENCY_MS",
            )?,
        };
        if targets == Targets::default() {
            return Err(invalid(
                "target-rps-per-instance",
                "AUTOSCALER_TARGET_RPS_PER_INSTANCE",
                "no target: give it, or --target-in-flight-per-instance, \
                 --target-cpu-per-instance, --target-latency-ms (several: the highest \
                 recommendation wins)",
            ));
        }
        if opts.provider == "local" && targets.cpu_per_instance.is_some() {
            return Err(invalid(
                "target-cpu-per-instance",
                "AUTOSCALER_TARGET_CPU_PER_INSTANCE",
                "the local provider does not measure CPU (use --provider docker)",
            ));
        }
        let report_ok = !opts.report_as.is_empty()
            && opts.report_as.len() <= 64
            && opts
                .report_as
                .chars()
                .all(|c| c.is_ascii_graphic() || c == ' ');
        if !report_ok {
            return Err(invalid(
                "report-as",
                "AUTOSCALER_REPORT_AS",
                "must be 1-64 printable ASCII characters",
            ));
        }
        if !(0.0..1.0).contains(&opts.tolerance) {
            return Err(invalid(
                "tolerance",
                "AUTOSCALER_TOLERANCE",
                format!("{} must be from 0 to below 1 (0.1 = 10 %)", opts.tolerance),
            ));
        }
        const MS: Duration = Duration::from_millis(1);
        const DAY: Duration = Duration::from_secs(24 * 3600);
        for (flag, var, value, min) in [
            ("interval", "AUTOSCALER_INTERVAL", opts.interval, MS),
            (
                "rate-window",
                "AUTOSCALER_RATE_WINDOW",
                opts.rate_window,
                MS,
            ),
            (
                "scale-down-window",
                "AUTOSCALER_SCALE_DOWN_WINDOW",
                opts.scale_down_window,
                Duration::ZERO,
            ),
            (
                "ready-timeout",
                "AUTOSCALER_READY_TIMEOUT",
                opts.ready_timeout,
                MS,
            ),
            (
                "drain-timeout",
                "AUTOSCALER_DRAIN_TIMEOUT",
                opts.drain_timeout,
                MS,
            ),
            (
                "start-timeout",
                "AUTOSCALER_START_TIMEOUT",
                opts.start_timeout,
                MS,
            ),
            (
                "stop-timeout",
                "AUTOSCALER_STOP_TIMEOUT",
                opts.stop_timeout,
                MS,
            ),
        ] {
            if value < min || value > DAY {
                return Err(invalid(
                    flag,
                    var,
                    format!("{value:?} must be from {min:?} to 24h"),
                ));
            }
        }
        if opts.rate_window < opts.interval {
            return Err(invalid(
                "rate-window",
                "AUTOSCALER_RATE_WINDOW",
                format!(
                    "{:?} is shorter than --interval ({:?}): a rate needs two samples",
                    opts.rate_window, opts.interval
                ),
            ));
        }
        let prefix_ok = !opts.instance_prefix.is_empty()
            && opts.instance_prefix.len() <= 64
            && opts.instance_prefix.chars().all(|c| c.is_ascii_graphic());
        if !prefix_ok {
            return Err(invalid(
                "instance-prefix",
                "AUTOSCALER_INSTANCE_PREFIX",
                "must be 1-64 printable ASCII characters without spaces",
            ));
        }
        let mut env = Vec::new();
        for (n, pair) in opts.instance_env.iter().enumerate() {
            match pair.split_once('=') {
                Some((key, value)) if !key.is_empty() && !key.contains(char::is_whitespace) => {
                    env.push((key.to_owned(), value.to_owned()));
                }
                // The text may be a secret (a URL with a password): it is not echoed.
                _ => {
                    return Err(ConfigError {
                        origin: "--instance-env".into(),
                        message: format!(
                            "occurrence {} is not KEY=VALUE (not shown: it may hold a secret)",
                            n + 1
                        ),
                    });
                }
            }
        }
        let token = match (&opts.admin_token_file, token_var) {
            (Some(path), _) => {
                let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
                    origin: format!("--admin-token-file {}", path.display()),
                    message: format!("cannot read it: {e}"),
                })?;
                let token = text.trim().to_owned();
                if token.is_empty() {
                    return Err(ConfigError {
                        origin: format!("--admin-token-file {}", path.display()),
                        message: "is empty".into(),
                    });
                }
                Some(SecretString::from(token))
            }
            (None, Some(value)) if !value.trim().is_empty() => {
                Some(SecretString::from(value.trim().to_owned()))
            }
            (None, _) => None,
        };
        let provider = if opts.provider == "docker" {
            let name_ok = |v: &str| {
                !v.is_empty()
                    && v.len() <= 128
                    && v.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "._-/:@".contains(c))
            };
            for (flag, var, value) in [
                (
                    "docker-image",
                    "AUTOSCALER_DOCKER_IMAGE",
                    &opts.docker_image,
                ),
                (
                    "docker-network",
                    "AUTOSCALER_DOCKER_NETWORK",
                    &opts.docker_network,
                ),
                (
                    "docker-owner",
                    "AUTOSCALER_DOCKER_OWNER",
                    &opts.docker_owner,
                ),
            ] {
                if !name_ok(value) {
                    return Err(invalid(
                        flag,
                        var,
                        format!("`{value}` must be 1-128 of letters, digits and ._-/:@"),
                    ));
                }
            }
            if opts.docker_port == 0 {
                return Err(invalid(
                    "docker-port",
                    "AUTOSCALER_DOCKER_PORT",
                    "must be 1-65535",
                ));
            }
            ProviderConfig::Docker(DockerConfig {
                socket: opts.docker_socket.clone(),
                image: opts.docker_image.clone(),
                network: opts.docker_network.clone(),
                port: opts.docker_port,
                env,
                owner: opts.docker_owner.clone(),
                id_prefix: opts.instance_prefix.clone(),
                start_timeout: opts.start_timeout,
                stop_timeout: opts.stop_timeout,
            })
        } else {
            ProviderConfig::Local(LocalConfig {
                binary: opts.hits_binary.clone(),
                env,
                id_prefix: opts.instance_prefix.clone(),
                start_timeout: opts.start_timeout,
                stop_timeout: opts.stop_timeout,
            })
        };
        Ok(Config {
            admin: opts.admin.clone(),
            token,
            listen: opts.listen,
            scaler: ScalerConfig {
                interval: opts.interval,
                report_as: (!opts.no_report).then(|| opts.report_as.clone()),
                rate_window: opts.rate_window,
                ready_timeout: opts.ready_timeout,
                drain_timeout: opts.drain_timeout,
                policy: Policy {
                    min: opts.min,
                    max: opts.max,
                    max_step: opts.max_step,
                    tolerance: opts.tolerance,
                    scale_down_window: opts.scale_down_window,
                    targets,
                },
            },
            provider,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(args: &[&str]) -> Opts {
        let mut all = vec!["autoscaler", "--admin", "127.0.0.1:9000"];
        all.extend_from_slice(args);
        Opts::try_parse_from(all).expect("parses")
    }

    fn error(args: &[&str]) -> String {
        Config::from_opts(&opts(args), None)
            .expect_err("refused")
            .to_string()
    }

    #[test]
    fn defaults_are_the_hpa_ones() {
        let config =
            Config::from_opts(&opts(&["--target-rps-per-instance", "50"]), None).expect("valid");
        let policy = &config.scaler.policy;
        assert_eq!((policy.min, policy.max, policy.max_step), (1, 10, 4));
        assert_eq!(policy.tolerance, 0.1);
        assert_eq!(policy.scale_down_window, Duration::from_secs(300));
        assert_eq!(config.scaler.interval, Duration::from_secs(15));
        assert!(config.token.is_none());
    }

    #[test]
    fn errors_name_the_flag_and_variable() {
        assert_eq!(
            error(&[
                "--target-rps-per-instance",
                "50",
                "--min",
                "5",
                "--max",
                "2"
            ]),
            "--max (AUTOSCALER_MAX): 2 is below --min (5)"
        );
        assert!(error(&[]).starts_with(
            "--target-rps-per-instance (AUTOSCALER_TARGET_RPS_PER_INSTANCE): no target"
        ));
        assert!(error(&["--target-rps-per-instance=-3"]).contains("must be a positive number"));
        assert!(
            error(&["--target-rps-per-instance", "5", "--tolerance", "1.5"])
                .starts_with("--tolerance (AUTOSCALER_TOLERANCE)")
        );
        assert!(
            error(&[
                "--target-rps-per-instance",
                "5",
                "--interval",
                "10s",
                "--rate-window",
                "1s"
            ])
            .starts_with("--rate-window (AUTOSCALER_RATE_WINDOW)")
        );
        let secret = error(&[
            "--target-rps-per-instance",
            "5",
            "--instance-env",
            "postgres://u:secret@h",
        ]);
        assert!(
            secret.starts_with("--instance-env") && !secret.contains("secret@"),
            "{secret}"
        );
    }

    #[test]
    fn the_token_comes_from_the_variable_or_a_file() {
        use secrecy::ExposeSecret;
        let config = Config::from_opts(
            &opts(&["--target-rps-per-instance", "5"]),
            Some(" abc \n".into()),
        )
        .expect("valid");
        assert_eq!(config.token.expect("set").expose_secret(), "abc");
        let missing = Config::from_opts(
            &opts(&[
                "--target-rps-per-instance",
                "5",
                "--admin-token-file",
                "/nonexistent/token",
            ]),
            None,
        )
        .expect_err("refused")
        .to_string();
        assert!(missing.starts_with("--admin-token-file /nonexistent/token: cannot read it"));
    }

    #[test]
    fn the_provider_and_the_new_targets_are_checked() {
        let config = Config::from_opts(
            &opts(&[
                "--provider",
                "docker",
                "--target-cpu-per-instance",
                "0.5",
                "--target-latency-ms",
                "40",
                "--docker-network",
                "e2e_default",
                "--instance-env",
                "DATABASE_URL=postgres://h/db",
            ]),
            None,
        )
        .expect("valid");
        let ProviderConfig::Docker(docker) = &config.provider else {
            panic!("docker chosen");
        };
        assert_eq!(docker.network, "e2e_default");
        assert_eq!(
            docker.env,
            [("DATABASE_URL".into(), "postgres://h/db".into())]
        );
        assert_eq!(config.scaler.policy.targets.latency_ms, Some(40.0));
        assert_eq!(config.scaler.report_as.as_deref(), Some("autoscaler"));
        assert!(error(&["--target-cpu-per-instance", "1"]).starts_with(
            "--target-cpu-per-instance (AUTOSCALER_TARGET_CPU_PER_INSTANCE): the local provider"
        ));
        assert!(error(&["--target-latency-ms", "0"]).contains("must be a positive number"));
        assert!(
            error(&[
                "--provider",
                "docker",
                "--target-rps-per-instance",
                "5",
                "--docker-network",
                "a b"
            ])
            .starts_with("--docker-network (AUTOSCALER_DOCKER_NETWORK)")
        );
        let mut bad = opts(&["--target-rps-per-instance", "5"]);
        bad.admin = "balancer".into();
        assert!(
            Config::from_opts(&bad, None)
                .unwrap_err()
                .to_string()
                .starts_with("--admin (AUTOSCALER_ADMIN): `balancer` is not HOST:PORT")
        );
        let quiet = Config::from_opts(
            &opts(&["--target-rps-per-instance", "5", "--no-report"]),
            None,
        )
        .expect("valid");
        assert_eq!(quiet.scaler.report_as, None);
    }

    #[test]
    fn a_bad_duration_names_the_flag_and_the_value() {
        let error = Opts::try_parse_from([
            "autoscaler",
            "--admin",
            "127.0.0.1:9000",
            "--interval",
            "5 fortnights",
        ])
        .expect_err("refused")
        .to_string();
        assert!(
            error.contains("'5 fortnights' for '--interval <INTERVAL>'")
                && error.contains("unknown unit `fortnights`"),
            "{error}"
        );
        let config = Config::from_opts(
            &opts(&[
                "--target-rps-per-instance",
                "5",
                "--scale-down-window",
                "90",
            ]),
            None,
        )
        .expect("a bare number is seconds");
        assert_eq!(
            config.scaler.policy.scale_down_window,
            Duration::from_secs(90)
        );
    }
}
