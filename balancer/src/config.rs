//! Typed configuration, layered defaults → TOML file → environment → flags, and
//! validated once at start-up so a bad value stops the process before it serves anything.
//!
//! Every value that can be wrong has its own type with a parser ([`BackendSpec`],
//! [`Algorithm`], [`StatusRange`], [`Cidr`], durations), so the TOML deserializer reports
//! the file, line and key of a bad value and the flag parser names the flag. Values that
//! parse but are out of bounds are found by [`Config::validate`], which names where they
//! were set too: each layer records the [`Origin`] of what it set (file and line, variable
//! or flag) in [`Config::origins`].

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::admin::auth::{AdminToken, MIN_TOKEN_BYTES};
use crate::sticky::{MIN_KEY_BYTES, StickyKey};

/// Everything the balancer needs to run, after all layers are merged and checked.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// What the listener speaks: HTTP (layer 7) or bytes (layer 4).
    pub mode: Mode,
    pub backends: Vec<BackendSpec>,
    pub algorithm: Algorithm,
    /// When every backend is down: `false` answers 503, `true` tries them anyway.
    pub fail_open: bool,
    pub health: HealthConfig,
    pub passive: PassiveConfig,
    pub discovery: DiscoveryConfig,
    pub sticky: StickyConfig,
    pub timeouts: Timeouts,
    pub limits: Limits,
    pub retry: RetryConfig,
    pub forwarding: ForwardingConfig,
    pub admin: AdminConfig,
    pub tls: TlsConfig,
    /// Where each value that is not a default came from, so errors can say.
    pub origins: Origins,
}

#[derive(Debug, Clone)]
pub struct HealthConfig {
    /// Active checks run only when a path is set.
    pub path: Option<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: NonZeroU32,
    pub fall: NonZeroU32,
    pub expected_status: StatusRange,
    /// A backend that appears (at start-up or through DNS) gets traffic only after it
    /// passes one check. Only meaningful with active checks.
    pub wait_for_first_pass: bool,
}

#[derive(Debug, Clone)]
pub struct PassiveConfig {
    pub enabled: bool,
    /// Consecutive failures that eject a backend.
    pub failures: NonZeroU32,
    /// Whether a 5xx answer counts as a failure (connect errors and timeouts always do).
    pub count_5xx: bool,
    pub base_ejection: Duration,
    pub max_ejection: Duration,
}

#[derive(Debug, Clone)]
pub struct DiscoveryConfig {
    pub resolve_interval: Duration,
    pub resolve_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct StickyConfig {
    pub enabled: bool,
    pub cookie: String,
    pub max_age: Option<Duration>,
    /// Keep the cookie on the request sent to the backend (stripped by default).
    pub forward_cookie: bool,
    /// Secret key of the MAC that turns a backend address into an opaque cookie value
    /// (at least 16 bytes). Give every balancer instance the same key so they agree on
    /// values; `None` makes each process draw its own at start-up.
    pub key: Option<StickyKey>,
}

#[derive(Debug, Clone)]
pub struct Timeouts {
    pub connect: Duration,
    /// How long a backend may take to start its answer, counted from the moment the whole
    /// request (body included) has been sent: a slow client never counts against it.
    pub response_header: Duration,
    /// Idle time allowed between two reads of a client's request body; past it the
    /// request is answered 408 and the backend is not blamed.
    pub client_body: Duration,
    /// How long a write to a client may make no progress (a client that stopped reading)
    /// before the connection is closed; also bounds the switch after a 101.
    pub client_write: Duration,
    /// Idle time allowed while moving a body to or from a backend (it stopped reading the
    /// request body, or stopped sending its response body): the exchange is aborted.
    pub backend_body: Duration,
    /// How long a client may take to send a request head, from its first byte (or from the
    /// accept, for a connection's first request): the slowloris guard.
    pub client_header: Duration,
    /// How long a kept-alive client connection may sit idle (no request in flight) before
    /// it is closed.
    pub keep_alive_idle: Duration,
    /// Idle time after which an upgraded (WebSocket) tunnel is closed.
    pub tunnel_idle: Duration,
    /// How long in-flight requests may take to finish after SIGTERM.
    pub shutdown_grace: Duration,
    /// How long an unused pooled backend connection is kept.
    pub pool_idle: Duration,
    /// How long a TLS handshake may take, from the accept.
    pub tls_handshake: Duration,
    /// Lingering close (nginx's `lingering_time`): after the balancer closes an HTTP/1.1
    /// client connection it stops writing and reads and discards what the client still
    /// sends for at most this long, so a client write racing the close does not turn it
    /// into a reset that destroys the answer the client has not read yet.
    pub lingering_time: Duration,
    /// Lingering close (nginx's `lingering_timeout`): the connection is closed once the
    /// client sent nothing for this long.
    pub lingering_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_connections: usize,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_idle_per_backend: usize,
    /// TLS handshakes in progress at once; a connection beyond it is closed at once.
    pub max_handshakes: usize,
    /// HTTP/2: streams a client may have open at once on one connection (advertised as
    /// SETTINGS_MAX_CONCURRENT_STREAMS).
    pub h2_max_concurrent_streams: usize,
    /// HTTP/2: how many streams a client may reset before their answer is done before a
    /// connection that resets more streams than it completes is closed (rapid reset).
    pub h2_max_resets: usize,
    /// Lingering close: the most bytes read and discarded from a client after the
    /// balancer closed its side; 0 turns lingering off (close at once). Well above a
    /// socket's receive buffer (Linux grows one to 6 MiB): stopping short of what already
    /// waits there would be the reset lingering is for.
    pub lingering_bytes: usize,
}

#[derive(Debug, Clone)]
pub struct RetryConfig {
    /// Retry idempotent requests without a body when the backend failed after the request
    /// was sent. Off by default: only requests that never reached a backend are retried.
    pub idempotent: bool,
    pub max_attempts: NonZeroU32,
    /// Retries allowed as a fraction of recent requests.
    pub budget_ratio: f64,
    /// Retries always allowed on top of the ratio (a burst allowance).
    pub budget_min: u32,
}

/// The admin listener: off unless `listen` is set; never the public listener.
#[derive(Debug, Clone, Default)]
pub struct AdminConfig {
    pub listen: Option<SocketAddr>,
    /// Bearer token API calls must present (BALANCER_ADMIN_TOKEN or `admin.token_file`).
    /// Without one, the listener may only be on a loopback address.
    pub token: Option<AdminToken>,
    /// Marks the dashboard's session cookie `Secure`. The admin listener speaks plain HTTP
    /// only, so this is for a dashboard reached through a TLS-terminating proxy: the
    /// browser then never sends the cookie over plain HTTP. Off by default, because a
    /// browser refuses a `Secure` cookie from a plain `http://` page that is not
    /// localhost (the login would seem to do nothing).
    pub cookie_secure: bool,
}

#[derive(Debug, Clone, Default)]
pub struct ForwardingConfig {
    /// Peers whose X-Forwarded-* / X-Real-IP headers are trusted and extended.
    pub trusted_proxies: Vec<Cidr>,
    /// Host names this site answers to in absolute-form request targets
    /// (`GET http://name/ HTTP/1.1`). Any other absolute-form target is refused, so the
    /// balancer can never be used as a forward proxy.
    pub server_names: Vec<String>,
}

/// HTTPS termination: off unless `listen` is set. With it on, the plain `listen` address
/// answers every request with a redirect to HTTPS, except the ACME HTTP-01 challenge path.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub listen: Option<SocketAddr>,
    /// Certificate chains and their keys (PEM). Each one serves the DNS names of its
    /// certificate's subject alternative names; the one marked `default` (else the first)
    /// serves clients that send no server name or one no certificate has.
    pub certificates: Vec<CertificateSpec>,
    /// How often the certificate files are checked for a change (a renewal).
    pub reload_interval: Duration,
    /// `Strict-Transport-Security: max-age=...` on HTTPS answers; off when `None`.
    pub hsts_max_age: Option<Duration>,
    /// The port the redirect's `Location` names; default: the TLS listener's own port
    /// (set it when a port mapping or another proxy puts HTTPS on another port).
    pub https_port: Option<u16>,
    /// Certificates obtained and renewed automatically (ACME), when set.
    pub acme: Option<AcmeConfig>,
}

/// `[tls.acme]`: a certificate for `domains`, obtained from an ACME certificate authority
/// (HTTP-01 on the plain listener) and renewed `renew_before` its expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeConfig {
    /// The DNS names of the one certificate (its subject alternative names).
    pub domains: Vec<String>,
    /// `mailto:` addresses the authority may write to about the account.
    pub contact: Vec<String>,
    /// The authority's directory URL (https).
    pub directory: String,
    /// Where the account key, the certificate and its key are kept across restarts.
    pub cache_dir: PathBuf,
    pub renew_before: Duration,
    /// A PEM CA certificate trusted for the directory's HTTPS besides the public roots
    /// (a private or test authority).
    pub directory_ca: Option<PathBuf>,
}

/// Let's Encrypt's production directory: the default of `tls.acme.directory`.
pub const LETS_ENCRYPT_DIRECTORY: &str = "https://acme-v02.api.letsencrypt.org/directory";

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            listen: None,
            certificates: Vec::new(),
            reload_interval: Duration::from_secs(30),
            hsts_max_age: None,
            https_port: None,
            acme: None,
        }
    }
}

/// One certificate chain and its private key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateSpec {
    pub cert: PathBuf,
    pub key: PathBuf,
    #[serde(default)]
    pub default: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            mode: Mode::Http,
            backends: Vec::new(),
            algorithm: Algorithm::RoundRobin,
            fail_open: false,
            health: HealthConfig {
                path: None,
                interval: Duration::from_secs(2),
                timeout: Duration::from_secs(1),
                rise: NonZeroU32::new(2).expect("nonzero"),
                fall: NonZeroU32::new(3).expect("nonzero"),
                expected_status: StatusRange {
                    low: 200,
                    high: 399,
                },
                wait_for_first_pass: true,
            },
            passive: PassiveConfig {
                enabled: true,
                failures: NonZeroU32::new(3).expect("nonzero"),
                count_5xx: false,
                base_ejection: Duration::from_secs(5),
                max_ejection: Duration::from_secs(120),
            },
            discovery: DiscoveryConfig {
                resolve_interval: Duration::from_secs(5),
                resolve_timeout: Duration::from_secs(2),
            },
            sticky: StickyConfig {
                enabled: false,
                cookie: "hitscale_backend".to_owned(),
                max_age: None,
                forward_cookie: false,
                key: None,
            },
            timeouts: Timeouts {
                connect: Duration::from_secs(3),
                response_header: Duration::from_secs(30),
                client_body: Duration::from_secs(30),
                client_write: Duration::from_secs(30),
                backend_body: Duration::from_secs(60),
                client_header: Duration::from_secs(15),
                keep_alive_idle: Duration::from_secs(60),
                tunnel_idle: Duration::from_secs(300),
                shutdown_grace: Duration::from_secs(30),
                pool_idle: Duration::from_secs(60),
                tls_handshake: Duration::from_secs(10),
                lingering_time: Duration::from_secs(30),
                lingering_timeout: Duration::from_secs(5),
            },
            limits: Limits {
                max_connections: 10_000,
                max_header_bytes: 64 * 1024,
                max_headers: 100,
                max_idle_per_backend: 256,
                max_handshakes: 1024,
                h2_max_concurrent_streams: 100,
                h2_max_resets: 100,
                lingering_bytes: 64 * 1024 * 1024,
            },
            retry: RetryConfig {
                idempotent: false,
                max_attempts: NonZeroU32::new(3).expect("nonzero"),
                budget_ratio: 0.2,
                budget_min: 10,
            },
            forwarding: ForwardingConfig::default(),
            admin: AdminConfig::default(),
            tls: TlsConfig::default(),
            origins: Origins::default(),
        }
    }
}

/// Where a configuration value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Default,
    /// A key in the config file, with its line when it could be found.
    File {
        path: PathBuf,
        line: Option<usize>,
    },
    Env(&'static str),
    Flag(&'static str),
}

/// The origin of every value set by the file, the environment or a flag, by its dotted key
/// in the config file (`health.interval`); values not listed kept their default.
#[derive(Debug, Clone, Default)]
pub struct Origins(Vec<(String, Origin)>);

impl Origins {
    pub fn set(&mut self, key: impl Into<String>, origin: Origin) {
        let key = key.into();
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = origin,
            None => self.0.push((key, origin)),
        }
    }

    pub fn get(&self, key: &str) -> Origin {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map_or(Origin::Default, |(_, origin)| origin.clone())
    }

    /// Records every key present in a parsed config file.
    fn record_file(&mut self, path: &Path, text: &str) {
        let Ok(table) = text.parse::<toml::Table>() else {
            return;
        };
        for (name, value) in &table {
            let keys: Vec<String> = match value {
                toml::Value::Table(section) => section
                    .iter()
                    .flat_map(|(k, v)| {
                        // One level deeper for sub-tables (`[tls.acme]`), so their keys
                        // have lines too.
                        let key = format!("{name}.{k}");
                        let mut keys = vec![key.clone()];
                        if let toml::Value::Table(inner) = v {
                            keys.extend(inner.keys().map(|k| format!("{key}.{k}")));
                        }
                        keys
                    })
                    .collect(),
                _ => vec![name.clone()],
            };
            for key in keys {
                let line = key_line(text, &key);
                self.set(
                    key,
                    Origin::File {
                        path: path.to_owned(),
                        line,
                    },
                );
            }
        }
    }
}

/// Records the line of each `[[tls.certificates]]` entry as `tls.certificates[i]`, so an
/// error about one certificate's files names where that entry was written (an inline
/// array's entries fall back to the `certificates` key's line, in [`Config::origin_of`]).
fn record_certificate_lines(origins: &mut Origins, path: &Path, text: &str) {
    let headers = text.lines().enumerate().filter(|(_, line)| {
        let compact: String = line.chars().filter(|c| !c.is_whitespace()).collect();
        compact.starts_with("[[tls.certificates]]")
    });
    for (index, (number, _)) in headers.enumerate() {
        origins.set(
            format!("tls.certificates[{index}]"),
            Origin::File {
                path: path.to_owned(),
                line: Some(number + 1),
            },
        );
    }
}

/// The line (1-based) where `section.name` (or a top-level `name`) is set in TOML `text`.
/// A plain scan: enough for the usual layout, `None` for exotic ones.
fn key_line(text: &str, key: &str) -> Option<usize> {
    // The last dot: `tls.acme.domains` is `domains` in `[tls.acme]`.
    let (section, name) = key.rsplit_once('.').unwrap_or(("", key));
    let mut current = "";
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix('[') {
            current = rest.split(']').next().unwrap_or("").trim();
            // A sub-table is set where its header is (`[tls.acme]`).
            if current == key {
                return Some(index + 1);
            }
            continue;
        }
        let Some((k, _)) = line.split_once('=') else {
            continue;
        };
        let k = k.trim().trim_matches('"');
        if (current == section && k == name) || (current.is_empty() && k == key) {
            return Some(index + 1);
        }
    }
    None
}

/// toml's message for a parse error, which quotes the offending line, unless that line is
/// the sticky key's: then the line number and key only, so the secret is not printed.
fn without_secret(text: &str, error: &toml::de::Error) -> String {
    let line = error
        .span()
        .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
    match line {
        Some(line) if Some(line) == key_line(text, "sticky.key") => {
            format!("line {line}: sticky.key: {}", error.message())
        }
        _ => error.to_string(),
    }
}

/// Says where a value came from, in the words an operator will grep for.
fn describe(origin: &Origin) -> String {
    match origin {
        Origin::Default => "built-in default".to_owned(),
        Origin::File {
            path,
            line: Some(line),
        } => format!("config file {}:{line}", path.display()),
        Origin::File { path, line: None } => format!("config file {}", path.display()),
        Origin::Env(var) => format!("environment variable {var}"),
        Origin::Flag(flag) => format!("flag {flag}"),
    }
}

/// The start-up error: says which source held the bad value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: &'static str, message: String },
    /// A value that parsed but is out of bounds; `source` says where it was set.
    #[error("{origin}: {message}")]
    Value { origin: String, message: String },
    #[error("{0}")]
    Invalid(String),
}

/// Where the configuration is read from: the file and the environment/flag values captured
/// at start-up. A reload reads the same file again and applies the same overrides over it,
/// so what the environment or a flag set still wins.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub file: Option<PathBuf>,
    pub overrides: Overrides,
}

impl Sources {
    /// The configuration these sources give now, merged and validated ([`Config::load`]).
    pub fn load(&self) -> Result<Config, ConfigError> {
        Config::load(self.file.as_deref(), self.overrides.clone())
    }
}

/// Values that may come from the environment or flags; `None` leaves the lower layer.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub mode: Option<Mode>,
    pub backends: Vec<BackendSpec>,
    pub algorithm: Option<Algorithm>,
    pub sticky: Option<bool>,
    pub health_path: Option<String>,
    pub health_interval: Option<Duration>,
    pub health_timeout: Option<Duration>,
    pub health_rise: Option<NonZeroU32>,
    pub health_fall: Option<NonZeroU32>,
    pub resolve_interval: Option<Duration>,
    pub sticky_key: Option<StickyKey>,
    pub admin_listen: Option<SocketAddr>,
    pub admin_token: Option<AdminToken>,
    pub admin_cookie_secure: Option<bool>,
    pub tls_listen: Option<SocketAddr>,
    /// Replaces the file's certificate list when not empty.
    pub tls_certificates: Vec<CertificateSpec>,
    pub tls_hsts_max_age: Option<Duration>,
    pub tls_https_port: Option<u16>,
    /// Replaces `forwarding.trusted_proxies` when not empty.
    pub trusted_proxies: Vec<Cidr>,
    /// Where each value above came from (an environment variable or a flag), by config key.
    pub origins: Vec<(&'static str, Origin)>,
}

impl Config {
    /// Merges the layers: defaults, then `file` (if any), then `overrides` (environment and
    /// flags, already merged by the CLI with flags winning), then validates.
    pub fn load(file: Option<&Path>, overrides: Overrides) -> Result<Self, ConfigError> {
        let mut config = Config::default();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
            let mut parsed: FileConfig = toml::from_str(&text).map_err(|e| ConfigError::File {
                path: path.to_owned(),
                message: without_secret(&text, &e),
            })?;
            let token_file = parsed.admin.token_file.take();
            parsed.apply(&mut config);
            config.origins.record_file(path, &text);
            record_certificate_lines(&mut config.origins, path, &text);
            // Relative certificate paths are taken from the config file's directory.
            if let Some(dir) = path.parent() {
                for spec in &mut config.tls.certificates {
                    spec.cert = dir.join(&spec.cert);
                    spec.key = dir.join(&spec.key);
                }
                if let Some(acme) = &mut config.tls.acme {
                    acme.cache_dir = dir.join(&acme.cache_dir);
                    if let Some(ca) = &mut acme.directory_ca {
                        *ca = dir.join(&*ca);
                    }
                }
            }
            if let Some(token_file) = token_file {
                // Read once, at start-up; a relative path is taken from the config file's
                // directory, where the operator wrote it.
                let token_file = path
                    .parent()
                    .map_or(token_file.clone(), |dir| dir.join(&token_file));
                let text = std::fs::read_to_string(&token_file).map_err(|error| {
                    config.invalid(
                        "admin.token_file",
                        format_args!("{}: cannot read it: {error}", token_file.display()),
                    )
                })?;
                config.admin.token = Some(AdminToken::from_text(&text));
            }
        }
        overrides.apply(&mut config);
        config.validate()?;
        Ok(config)
    }

    /// Where the value of `key` was set, in the words an operator will grep for
    /// (`config file PATH:LINE`, `environment variable NAME`, `flag --NAME`).
    /// An entry of a list (`tls.certificates[1]`) not recorded on its own is described by
    /// its list's origin.
    pub fn origin_of(&self, key: &str) -> String {
        match (self.origins.get(key), key.split_once('[')) {
            (Origin::Default, Some((list, _))) => describe(&self.origins.get(list)),
            (origin, _) => describe(&origin),
        }
    }

    /// The error for a bad value of `key`, naming where that value was set.
    fn invalid(&self, key: &str, message: impl std::fmt::Display) -> ConfigError {
        ConfigError::Value {
            origin: describe(&self.origins.get(key)),
            message: format!("{key} {message}"),
        }
    }

    /// Bounds on each value and cross-field checks that single-value parsers cannot make.
    /// Every error names the source of the offending value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.backends.is_empty() {
            return Err(ConfigError::Invalid(
                "no backends: give --backend HOST:PORT, BALANCER_BACKENDS or `backends` in the config file".into(),
            ));
        }
        const MS: Duration = Duration::from_millis(1);
        const DAY: Duration = Duration::from_secs(24 * 3600);
        const YEAR: Duration = Duration::from_secs(366 * 24 * 3600);
        let durations = [
            ("health.interval", self.health.interval, MS, DAY),
            ("health.timeout", self.health.timeout, MS, DAY),
            ("passive.base_ejection", self.passive.base_ejection, MS, DAY),
            ("passive.max_ejection", self.passive.max_ejection, MS, DAY),
            (
                "discovery.resolve_interval",
                self.discovery.resolve_interval,
                MS,
                DAY,
            ),
            (
                "discovery.resolve_timeout",
                self.discovery.resolve_timeout,
                MS,
                DAY,
            ),
        ]
        .into_iter()
        .chain(
            self.sticky
                .max_age
                .map(|age| ("sticky.max_age", age, Duration::from_secs(1), 10 * YEAR)),
        );
        for (key, value, min, max) in durations {
            if !(min..=max).contains(&value) {
                return Err(self.invalid(
                    key,
                    format_args!("is {value:?}: must be between {min:?} and {max:?}"),
                ));
            }
        }
        let counts = [
            ("health.rise", self.health.rise.get() as usize, 1, 1000),
            ("health.fall", self.health.fall.get() as usize, 1, 1000),
            (
                "passive.failures",
                self.passive.failures.get() as usize,
                1,
                1000,
            ),
            (
                "retry.max_attempts",
                self.retry.max_attempts.get() as usize,
                1,
                100,
            ),
            (
                "retry.budget_min",
                self.retry.budget_min as usize,
                0,
                1_000_000,
            ),
        ];
        for (key, value, min, max) in counts {
            if !(min..=max).contains(&value) {
                return Err(self.invalid(key, format_args!("is {value}: must be {min}-{max}")));
            }
        }
        if !(0.0..=10.0).contains(&self.retry.budget_ratio) {
            return Err(self.invalid("retry.budget_ratio", "must be between 0 and 10"));
        }
        if self.passive.base_ejection > self.passive.max_ejection {
            let key = self.set_one_of("passive.base_ejection", "passive.max_ejection");
            return Err(self.invalid(
                key,
                "makes passive.base_ejection exceed passive.max_ejection",
            ));
        }
        if let Some(path) = &self.health.path
            && !path.starts_with('/')
        {
            return Err(self.invalid("health.path", format_args!("{path:?} must start with '/'")));
        }
        if self.sticky.cookie.is_empty()
            || !self
                .sticky
                .cookie
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(self.invalid(
                "sticky.cookie",
                format_args!(
                    "{:?} must be a non-empty token of letters, digits, '-', '_' or '.'",
                    self.sticky.cookie
                ),
            ));
        }
        if let Some(key) = &self.sticky.key
            && key.len() < MIN_KEY_BYTES
        {
            // The key itself is never repeated: only its length.
            return Err(self.invalid(
                "sticky.key",
                format_args!(
                    "has {} bytes: it must have at least {MIN_KEY_BYTES} bytes (generate one with e.g. `openssl rand -hex 32`)",
                    key.len()
                ),
            ));
        }
        self.validate_admin()?;
        if self.mode == Mode::Tcp && self.sticky.enabled {
            // Named after the sticky setting when the operator set it, else after the mode.
            let key = if self.origins.get("sticky.enabled") == Origin::Default {
                "mode"
            } else {
                "sticky.enabled"
            };
            return Err(self.invalid(
                key,
                "asks for sticky cookies with mode = \"tcp\": a layer-4 listener never reads the requests (use algorithm = \"ip-hash\" to keep a client on one backend)",
            ));
        }
        if self.mode == Mode::Tcp && self.tls.listen.is_some() {
            let key = self.set_one_of("mode", "tls.listen");
            return Err(self.invalid(
                key,
                "asks for TLS termination with mode = \"tcp\": a layer-4 listener passes TLS through to the backends untouched (terminate TLS with mode = \"http\")",
            ));
        }
        self.validate_tls()?;
        // Every limit and timeout within its bounds, kept with the guards they configure.
        crate::guards::check_bounds(self).map_err(|(key, message)| self.invalid(key, message))?;
        Ok(())
    }

    /// The admin listener's rules: never the public listener; off loopback only with a
    /// token; a token long enough not to be guessed.
    fn validate_admin(&self) -> Result<(), ConfigError> {
        if let Some(token) = &self.admin.token
            && token.len() < MIN_TOKEN_BYTES
        {
            let key = if self.origins.get("admin.token") == Origin::Default {
                "admin.token_file"
            } else {
                "admin.token"
            };
            // Only its length is told, never the token.
            return Err(self.invalid(
                key,
                format_args!(
                    "gives a token of {} bytes: it must have at least {MIN_TOKEN_BYTES} (generate one with e.g. `openssl rand -hex 32`)",
                    token.len()
                ),
            ));
        }
        let Some(admin) = self.admin.listen else {
            return Ok(());
        };
        if admin.port() != 0
            && (admin == self.listen
                || (admin.port() == self.listen.port()
                    && (admin.ip().is_unspecified() || self.listen.ip().is_unspecified())))
        {
            return Err(self.invalid(
                "admin.listen",
                format_args!(
                    "is {admin}, the public listener's address: the admin API needs its own"
                ),
            ));
        }
        if self.admin.token.is_none() && !admin.ip().is_loopback() {
            return Err(self.invalid(
                "admin.listen",
                format_args!(
                    "is {admin}, not a loopback address: an admin listener reachable from other hosts needs a token (BALANCER_ADMIN_TOKEN, BALANCER_ADMIN_TOKEN_FILE or admin.token_file)"
                ),
            ));
        }
        Ok(())
    }

    /// Refuses a reload to `next` that changes what only a restart can: the sockets bound at
    /// start-up (`listen`, `admin.listen`, `tls`), the connection and handshake limits they
    /// are served under, the
    /// admin token the listener checks, and the sticky key every backend's cookie value was
    /// derived from. The error names the first such key, where `next` sets it, and says a
    /// restart is needed. Secrets are never shown, not even their change.
    pub fn check_reloadable(&self, next: &Config) -> Result<(), ConfigError> {
        let shown = |old: &dyn std::fmt::Debug, new: &dyn std::fmt::Debug| {
            format!("changed from {old:?} to {new:?}")
        };
        let fixed: [(&str, bool, String); 10] = [
            (
                "listen",
                self.listen != next.listen,
                shown(&self.listen, &next.listen),
            ),
            // What the public listener speaks is chosen when it starts serving.
            (
                "mode",
                self.mode != next.mode,
                shown(&self.mode, &next.mode),
            ),
            (
                "admin.listen",
                self.admin.listen != next.admin.listen,
                shown(&self.admin.listen, &next.admin.listen),
            ),
            (
                "limits.max_connections",
                self.limits.max_connections != next.limits.max_connections,
                shown(&self.limits.max_connections, &next.limits.max_connections),
            ),
            (
                "admin.token",
                match (&self.admin.token, &next.admin.token) {
                    (Some(a), Some(b)) => a.expose() != b.expose(),
                    (a, b) => a.is_some() != b.is_some(),
                },
                "changed".to_owned(),
            ),
            (
                "sticky.key",
                match (&self.sticky.key, &next.sticky.key) {
                    (Some(a), Some(b)) => !a.same_as(b),
                    (a, b) => a.is_some() != b.is_some(),
                },
                "changed".to_owned(),
            ),
            // The ACME task is started once, for its domains, authority and cache.
            (
                "tls.acme",
                self.tls.acme != next.tls.acme,
                "changed".to_owned(),
            ),
            // The HTTPS listener, its certificate files (watched from start-up; a renewed
            // file is picked up by itself) and its handshake bounds are set up once.
            (
                "tls",
                format!("{:?}", self.tls) != format!("{:?}", next.tls),
                "changed".to_owned(),
            ),
            (
                "timeouts.tls_handshake",
                self.timeouts.tls_handshake != next.timeouts.tls_handshake,
                shown(&self.timeouts.tls_handshake, &next.timeouts.tls_handshake),
            ),
            (
                "limits.max_handshakes",
                self.limits.max_handshakes != next.limits.max_handshakes,
                shown(&self.limits.max_handshakes, &next.limits.max_handshakes),
            ),
        ];
        for (key, changed, how) in fixed {
            if changed {
                // A token from a file is named by the file's key, as validation does.
                let key = if key == "admin.token" && next.origins.get(key) == Origin::Default {
                    "admin.token_file"
                } else {
                    key
                };
                return Err(next.invalid(
                    key,
                    format_args!("{how}: that needs a restart; the running configuration is kept"),
                ));
            }
        }
        Ok(())
    }

    /// The HTTPS listener's rules: certificates exactly when it is on, one default at most,
    /// its own address. The files themselves are read (and refused) by `tls::certs` when
    /// the balancer is built, with the same origins in the errors.
    fn validate_tls(&self) -> Result<(), ConfigError> {
        let tls = &self.tls;
        let Some(listen) = tls.listen else {
            if tls.acme.is_some() {
                return Err(self.invalid(
                    "tls.acme",
                    "is set but tls.listen is not: give the HTTPS address (tls.listen, --tls-listen or BALANCER_TLS_LISTEN)",
                ));
            }
            if !tls.certificates.is_empty() {
                return Err(self.invalid(
                    "tls.certificates",
                    "are set but tls.listen is not: give the HTTPS address (tls.listen, --tls-listen or BALANCER_TLS_LISTEN)",
                ));
            }
            return Ok(());
        };
        if tls.certificates.is_empty() && tls.acme.is_none() {
            return Err(self.invalid(
                "tls.listen",
                "is set but no certificate is: give tls.certificates (or --tls-cert with --tls-key) or [tls.acme]",
            ));
        }
        if let Some(acme) = &tls.acme {
            self.validate_acme(acme)?;
        }
        if tls.certificates.iter().filter(|c| c.default).count() > 1 {
            return Err(self.invalid(
                "tls.certificates",
                "mark more than one certificate `default = true`: at most one may be",
            ));
        }
        let clash = |other: SocketAddr| {
            listen.port() != 0
                && (listen == other
                    || (listen.port() == other.port()
                        && (listen.ip().is_unspecified() || other.ip().is_unspecified())))
        };
        if clash(self.listen) || self.admin.listen.is_some_and(clash) {
            return Err(self.invalid(
                "tls.listen",
                format_args!(
                    "is {listen}, an address another listener (listen or admin.listen) uses"
                ),
            ));
        }
        let interval = tls.reload_interval;
        if !(Duration::from_millis(10)..=Duration::from_secs(24 * 3600)).contains(&interval) {
            return Err(self.invalid(
                "tls.reload_interval",
                format_args!("is {interval:?}: must be between 10ms and 24h"),
            ));
        }
        if let Some(age) = tls.hsts_max_age
            && age > Duration::from_secs(2 * 366 * 24 * 3600)
        {
            return Err(self.invalid(
                "tls.hsts_max_age",
                format_args!("is {age:?}: must be at most two years (17568h)"),
            ));
        }
        if tls.https_port == Some(0) {
            return Err(self.invalid("tls.https_port", "is 0: must be 1-65535"));
        }
        Ok(())
    }

    /// `[tls.acme]`: names a certificate authority can validate over HTTP-01, a `mailto:`
    /// contact, an https directory, a renewal margin an authority's certificates leave
    /// room for.
    fn validate_acme(&self, acme: &AcmeConfig) -> Result<(), ConfigError> {
        if acme.domains.is_empty() {
            return Err(self.invalid(
                "tls.acme.domains",
                "is empty: give the DNS names of the certificate",
            ));
        }
        for domain in &acme.domains {
            // HTTP-01 cannot prove a wildcard, and an authority refuses addresses.
            let name_ok = crate::tls::redirect::valid_host(domain).is_some_and(|host| {
                host == *domain && host.contains(|c: char| c.is_ascii_alphabetic())
            }) && !domain.ends_with('.');
            if !name_ok {
                return Err(self.invalid(
                    "tls.acme.domains",
                    format_args!("has {domain:?}: each must be a lower-case DNS name (no wildcard, no address, no port)"),
                ));
            }
        }
        for contact in &acme.contact {
            let address = contact.strip_prefix("mailto:").unwrap_or("");
            let ok = address.split_once('@').is_some_and(|(user, host)| {
                !user.is_empty() && !host.is_empty() && !host.contains('@')
            }) && !address.contains(|c: char| c.is_whitespace() || c == ',');
            if !ok {
                return Err(self.invalid(
                    "tls.acme.contact",
                    format_args!("has {contact:?}: each must be mailto:USER@HOST"),
                ));
            }
        }
        let rest = acme.directory.strip_prefix("https://").unwrap_or("");
        let host = rest.split(['/', '?', '#']).next().unwrap_or("");
        if host.is_empty() || host.contains('@') || crate::tls::redirect::valid_host(host).is_none()
        {
            return Err(self.invalid(
                "tls.acme.directory",
                format_args!("is {:?}: must be an https:// URL", acme.directory),
            ));
        }
        if acme.cache_dir.as_os_str().is_empty() {
            return Err(self.invalid("tls.acme.cache_dir", "is empty: give a directory"));
        }
        const HOUR: Duration = Duration::from_secs(3600);
        const YEAR: Duration = Duration::from_secs(366 * 24 * 3600);
        if !(HOUR..=YEAR).contains(&acme.renew_before) {
            return Err(self.invalid(
                "tls.acme.renew_before",
                format_args!(
                    "is {:?}: must be between 1h and 8784h (a year)",
                    acme.renew_before
                ),
            ));
        }
        Ok(())
    }

    /// Of two keys whose values conflict, the one the operator set (not a default).
    fn set_one_of<'a>(&self, first: &'a str, second: &'a str) -> &'a str {
        if self.origins.get(first) == Origin::Default {
            second
        } else {
            first
        }
    }
}

impl Overrides {
    fn apply(self, config: &mut Config) {
        if let Some(v) = self.listen {
            config.listen = v;
        }
        if let Some(v) = self.mode {
            config.mode = v;
        }
        if !self.backends.is_empty() {
            config.backends = self.backends;
        }
        if let Some(v) = self.algorithm {
            config.algorithm = v;
        }
        if let Some(v) = self.sticky {
            config.sticky.enabled = v;
        }
        if let Some(v) = self.health_path {
            config.health.path = Some(v);
        }
        if let Some(v) = self.health_interval {
            config.health.interval = v;
        }
        if let Some(v) = self.health_timeout {
            config.health.timeout = v;
        }
        if let Some(v) = self.health_rise {
            config.health.rise = v;
        }
        if let Some(v) = self.health_fall {
            config.health.fall = v;
        }
        if let Some(v) = self.resolve_interval {
            config.discovery.resolve_interval = v;
        }
        if let Some(v) = self.sticky_key {
            config.sticky.key = Some(v);
        }
        if let Some(v) = self.admin_listen {
            config.admin.listen = Some(v);
        }
        if let Some(v) = self.admin_token {
            config.admin.token = Some(v);
        }
        if let Some(v) = self.admin_cookie_secure {
            config.admin.cookie_secure = v;
        }
        if let Some(v) = self.tls_listen {
            config.tls.listen = Some(v);
        }
        if !self.tls_certificates.is_empty() {
            config.tls.certificates = self.tls_certificates;
        }
        if let Some(v) = self.tls_hsts_max_age {
            config.tls.hsts_max_age = Some(v);
        }
        if let Some(v) = self.tls_https_port {
            config.tls.https_port = Some(v);
        }
        if !self.trusted_proxies.is_empty() {
            config.forwarding.trusted_proxies = self.trusted_proxies;
        }
        for (key, origin) in self.origins {
            config.origins.set(key, origin);
        }
    }
}

/// One `backends` entry: `HOST:PORT[,weight=N]`. A DNS name stands for all its addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendSpec {
    pub host: String,
    pub port: u16,
    pub weight: u32,
}

impl BackendSpec {
    /// `host:port` as written, used for the Host header of health checks and for logs.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl FromStr for BackendSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.split(',');
        let address = parts.next().unwrap_or_default().trim();
        let (host, port) = address
            .rsplit_once(':')
            .ok_or_else(|| format!("backend {s:?}: expected HOST:PORT"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("backend {s:?}: empty host"));
        }
        if host.parse::<IpAddr>().is_err()
            && !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        {
            return Err(format!(
                "backend {s:?}: host is neither an IP address nor a DNS name"
            ));
        }
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("backend {s:?}: port must be 1-65535"))?;
        let mut weight = 1;
        for option in parts {
            match option.trim().split_once('=') {
                Some(("weight", w)) => {
                    weight = w
                        .parse()
                        .ok()
                        .filter(|w| (1..=1000).contains(w))
                        .ok_or_else(|| {
                            format!("backend {s:?}: weight must be an integer 1-1000")
                        })?;
                }
                _ => {
                    return Err(format!(
                        "backend {s:?}: unknown option {option:?} (expected weight=N)"
                    ));
                }
            }
        }
        Ok(Self {
            host: host.to_owned(),
            port,
            weight,
        })
    }
}

/// What the public listener does with a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Layer 7: HTTP/1.1 requests, each balanced on its own (`server`, `proxy`).
    Http,
    /// Layer 4: each connection goes to one backend and its bytes are copied both ways
    /// unread (`l4`); TLS passes through untouched.
    Tcp,
}

impl FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Mode::deserialize(serde::de::value::StrDeserializer::<serde::de::value::Error>::new(s))
            .map_err(|_| format!("unknown mode {s:?}; expected http or tcp"))
    }
}

/// The backend selection algorithms (see `selection`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Algorithm {
    RoundRobin,
    WeightedRoundRobin,
    LeastConnections,
    LeastResponseTime,
    IpHash,
    PowerOfTwoChoices,
}

impl Algorithm {
    pub const NAMES: &'static str = "round-robin, weighted-round-robin, least-connections, least-response-time, ip-hash, power-of-two-choices";
}

impl FromStr for Algorithm {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Algorithm::deserialize(serde::de::value::StrDeserializer::<serde::de::value::Error>::new(s))
            .map_err(|_| format!("unknown algorithm {s:?}; expected one of {}", Self::NAMES))
    }
}

/// An inclusive range of HTTP status codes, written `200-399` or `200`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusRange {
    pub low: u16,
    pub high: u16,
}

impl StatusRange {
    pub fn contains(&self, status: u16) -> bool {
        (self.low..=self.high).contains(&status)
    }
}

impl FromStr for StatusRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parse = |v: &str| {
            v.trim()
                .parse::<u16>()
                .ok()
                .filter(|c| (100..=599).contains(c))
        };
        let (low, high) = match s.split_once('-') {
            Some((a, b)) => (parse(a), parse(b)),
            None => (parse(s), parse(s)),
        };
        match (low, high) {
            (Some(low), Some(high)) if low <= high => Ok(Self { low, high }),
            _ => Err(format!(
                "status range {s:?}: expected CODE or LOW-HIGH within 100-599"
            )),
        }
    }
}

/// An IP network such as `10.0.0.0/8` or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let network: IpAddr = addr
            .parse()
            .map_err(|_| format!("trusted proxy {s:?}: not an IP address or CIDR"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("trusted proxy {s:?}: prefix must be 0-{max}"))?,
            None => max,
        };
        Ok(Self { network, prefix })
    }
}

/// Parses `500ms`, `2s`, `1m`, `1h` (a whole number and a unit).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("duration {s:?} needs a unit: ms, s, m or h"))?;
    let (number, unit) = s.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("duration {s:?}: expected a whole number then ms, s, m or h"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n.saturating_mul(60))),
        "h" => Ok(Duration::from_secs(n.saturating_mul(3600))),
        _ => Err(format!(
            "duration {s:?}: unknown unit {unit:?} (ms, s, m or h)"
        )),
    }
}

/// The file layer: every key optional, unknown keys refused (a typo must not pass).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default, deserialize_with = "opt_from_str")]
    listen: Option<SocketAddr>,
    mode: Option<Mode>,
    #[serde(default, deserialize_with = "vec_from_str")]
    backends: Vec<BackendSpec>,
    algorithm: Option<Algorithm>,
    fail_open: Option<bool>,
    #[serde(default)]
    health: FileHealth,
    #[serde(default)]
    passive: FilePassive,
    #[serde(default)]
    discovery: FileDiscovery,
    #[serde(default)]
    sticky: FileSticky,
    #[serde(default)]
    timeouts: FileTimeouts,
    #[serde(default)]
    limits: FileLimits,
    #[serde(default)]
    retry: FileRetry,
    #[serde(default)]
    forwarding: FileForwarding,
    #[serde(default)]
    admin: FileAdmin,
    #[serde(default)]
    tls: FileTls,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTls {
    #[serde(default, deserialize_with = "opt_from_str")]
    listen: Option<SocketAddr>,
    #[serde(default)]
    certificates: Vec<CertificateSpec>,
    #[serde(default, deserialize_with = "opt_duration")]
    reload_interval: Option<Duration>,
    #[serde(default, deserialize_with = "opt_duration")]
    hsts_max_age: Option<Duration>,
    https_port: Option<u16>,
    acme: Option<FileAcme>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAcme {
    domains: Vec<String>,
    #[serde(default)]
    contact: Vec<String>,
    directory: Option<String>,
    cache_dir: PathBuf,
    #[serde(default, deserialize_with = "opt_duration")]
    renew_before: Option<Duration>,
    directory_ca: Option<PathBuf>,
}

impl FileAcme {
    fn into_config(self) -> AcmeConfig {
        AcmeConfig {
            domains: self.domains,
            contact: self.contact,
            directory: self
                .directory
                .unwrap_or_else(|| LETS_ENCRYPT_DIRECTORY.to_owned()),
            cache_dir: self.cache_dir,
            renew_before: self
                .renew_before
                .unwrap_or(Duration::from_secs(30 * 24 * 3600)),
            directory_ca: self.directory_ca,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAdmin {
    #[serde(default, deserialize_with = "opt_from_str")]
    listen: Option<SocketAddr>,
    /// A file holding the token (read at start-up), so it is in neither the config nor `ps`.
    token_file: Option<PathBuf>,
    cookie_secure: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileHealth {
    path: Option<String>,
    #[serde(default, deserialize_with = "opt_duration")]
    interval: Option<Duration>,
    #[serde(default, deserialize_with = "opt_duration")]
    timeout: Option<Duration>,
    rise: Option<NonZeroU32>,
    fall: Option<NonZeroU32>,
    #[serde(default, deserialize_with = "opt_from_str")]
    expected_status: Option<StatusRange>,
    wait_for_first_pass: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilePassive {
    enabled: Option<bool>,
    failures: Option<NonZeroU32>,
    count_5xx: Option<bool>,
    #[serde(default, deserialize_with = "opt_duration")]
    base_ejection: Option<Duration>,
    #[serde(default, deserialize_with = "opt_duration")]
    max_ejection: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDiscovery {
    #[serde(default, deserialize_with = "opt_duration")]
    resolve_interval: Option<Duration>,
    #[serde(default, deserialize_with = "opt_duration")]
    resolve_timeout: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSticky {
    enabled: Option<bool>,
    cookie: Option<String>,
    #[serde(default, deserialize_with = "opt_duration")]
    max_age: Option<Duration>,
    forward_cookie: Option<bool>,
    // Never echoed: a parse error would quote it, so only its length is checked, later.
    #[serde(default, deserialize_with = "opt_key")]
    key: Option<StickyKey>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTimeouts {
    #[serde(default, deserialize_with = "opt_duration")]
    connect: Option<Duration>,
    #[serde(default, deserialize_with = "opt_duration")]
    response_header: Option<Duration>,
    #[serde(default, deserialize_with = "opt_duration")]
    client_body: Option<Duration>,
    #[serde(default, deserialize_with = "opt_duration")]
    client_write: Option<Duration>,
    #[serde(default, deserialize_with = "opt_duration")]
    backend_body: Option<Duration>,
    #[serde(default, deserialize_with = "opt_duration")]
    client_header: Option<Duration>,
    #[serde(default, deserialize_with = "opt_duration")]
    keep_alive_idle: Option<Duration>,
    #[serde(default, deserialize_with = "opt_duration")]
    tunnel_idle: Option<Duration>,
    #[serde(default, deserialize_with = "opt_duration")]
    shutdown_grace: Option<Duration>,
    #[serde(default, deserialize_with = "opt_duration")]
    pool_idle: Option<Duration>,
    #[serde(default, deserialize_with = "opt_duration")]
    tls_handshake: Option<Duration>,
    #[serde(default, deserialize_with = "opt_duration")]
    lingering_time: Option<Duration>,
    #[serde(default, deserialize_with = "opt_duration")]
    lingering_timeout: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLimits {
    max_connections: Option<usize>,
    max_header_bytes: Option<usize>,
    max_headers: Option<usize>,
    max_idle_per_backend: Option<usize>,
    max_handshakes: Option<usize>,
    h2_max_concurrent_streams: Option<usize>,
    h2_max_resets: Option<usize>,
    lingering_bytes: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRetry {
    idempotent: Option<bool>,
    max_attempts: Option<NonZeroU32>,
    budget_ratio: Option<f64>,
    budget_min: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileForwarding {
    #[serde(default, deserialize_with = "vec_from_str")]
    trusted_proxies: Vec<Cidr>,
    #[serde(default)]
    server_names: Vec<String>,
}

fn set<T>(target: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *target = v;
    }
}

impl FileConfig {
    fn apply(self, c: &mut Config) {
        set(&mut c.listen, self.listen);
        set(&mut c.mode, self.mode);
        if !self.backends.is_empty() {
            c.backends = self.backends;
        }
        set(&mut c.algorithm, self.algorithm);
        set(&mut c.fail_open, self.fail_open);
        let h = self.health;
        if h.path.is_some() {
            c.health.path = h.path;
        }
        set(&mut c.health.interval, h.interval);
        set(&mut c.health.timeout, h.timeout);
        set(&mut c.health.rise, h.rise);
        set(&mut c.health.fall, h.fall);
        set(&mut c.health.expected_status, h.expected_status);
        set(&mut c.health.wait_for_first_pass, h.wait_for_first_pass);
        let p = self.passive;
        set(&mut c.passive.enabled, p.enabled);
        set(&mut c.passive.failures, p.failures);
        set(&mut c.passive.count_5xx, p.count_5xx);
        set(&mut c.passive.base_ejection, p.base_ejection);
        set(&mut c.passive.max_ejection, p.max_ejection);
        set(
            &mut c.discovery.resolve_interval,
            self.discovery.resolve_interval,
        );
        set(
            &mut c.discovery.resolve_timeout,
            self.discovery.resolve_timeout,
        );
        let s = self.sticky;
        set(&mut c.sticky.enabled, s.enabled);
        set(&mut c.sticky.cookie, s.cookie);
        if s.max_age.is_some() {
            c.sticky.max_age = s.max_age;
        }
        set(&mut c.sticky.forward_cookie, s.forward_cookie);
        if s.key.is_some() {
            c.sticky.key = s.key;
        }
        let t = self.timeouts;
        set(&mut c.timeouts.connect, t.connect);
        set(&mut c.timeouts.response_header, t.response_header);
        set(&mut c.timeouts.client_header, t.client_header);
        set(&mut c.timeouts.client_body, t.client_body);
        set(&mut c.timeouts.client_write, t.client_write);
        set(&mut c.timeouts.backend_body, t.backend_body);
        set(&mut c.timeouts.keep_alive_idle, t.keep_alive_idle);
        set(&mut c.timeouts.tunnel_idle, t.tunnel_idle);
        set(&mut c.timeouts.shutdown_grace, t.shutdown_grace);
        set(&mut c.timeouts.pool_idle, t.pool_idle);
        set(&mut c.timeouts.tls_handshake, t.tls_handshake);
        set(&mut c.timeouts.lingering_time, t.lingering_time);
        set(&mut c.timeouts.lingering_timeout, t.lingering_timeout);
        let l = self.limits;
        set(&mut c.limits.max_connections, l.max_connections);
        set(&mut c.limits.max_header_bytes, l.max_header_bytes);
        set(&mut c.limits.max_headers, l.max_headers);
        set(&mut c.limits.max_idle_per_backend, l.max_idle_per_backend);
        set(&mut c.limits.max_handshakes, l.max_handshakes);
        set(
            &mut c.limits.h2_max_concurrent_streams,
            l.h2_max_concurrent_streams,
        );
        set(&mut c.limits.h2_max_resets, l.h2_max_resets);
        set(&mut c.limits.lingering_bytes, l.lingering_bytes);
        let r = self.retry;
        set(&mut c.retry.idempotent, r.idempotent);
        set(&mut c.retry.max_attempts, r.max_attempts);
        set(&mut c.retry.budget_ratio, r.budget_ratio);
        set(&mut c.retry.budget_min, r.budget_min);
        if !self.forwarding.trusted_proxies.is_empty() {
            c.forwarding.trusted_proxies = self.forwarding.trusted_proxies;
        }
        if !self.forwarding.server_names.is_empty() {
            c.forwarding.server_names = self.forwarding.server_names;
        }
        set(&mut c.admin.listen, self.admin.listen.map(Some));
        set(&mut c.admin.cookie_secure, self.admin.cookie_secure);
        let tls = self.tls;
        set(&mut c.tls.listen, tls.listen.map(Some));
        if !tls.certificates.is_empty() {
            c.tls.certificates = tls.certificates;
        }
        set(&mut c.tls.reload_interval, tls.reload_interval);
        set(&mut c.tls.hsts_max_age, tls.hsts_max_age.map(Some));
        set(&mut c.tls.https_port, tls.https_port.map(Some));
        if let Some(acme) = tls.acme {
            c.tls.acme = Some(acme.into_config());
        }
    }
}

fn opt_from_str<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: std::fmt::Display,
{
    let s = String::deserialize(d)?;
    s.parse().map(Some).map_err(serde::de::Error::custom)
}

fn vec_from_str<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: std::fmt::Display,
{
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|s| s.parse().map_err(serde::de::Error::custom))
        .collect()
}

fn opt_key<'de, D: Deserializer<'de>>(d: D) -> Result<Option<StickyKey>, D::Error> {
    String::deserialize(d).map(|text| Some(StickyKey::from_text(text)))
}

fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_specs_parse_with_weights_names_and_ipv6() {
        let b: BackendSpec = "127.0.0.2:8000,weight=3".parse().unwrap();
        assert_eq!((b.host.as_str(), b.port, b.weight), ("127.0.0.2", 8000, 3));
        let b: BackendSpec = "hits:8000".parse().unwrap();
        assert_eq!((b.host.as_str(), b.weight), ("hits", 1));
        let b: BackendSpec = "[::1]:9000".parse().unwrap();
        assert_eq!(b.host, "::1");
        assert_eq!(b.authority(), "[::1]:9000");
        for bad in [
            "hits",
            "hits:0",
            "hits:8000,weight=0",
            "hits:8000,w=2",
            ":80",
            "a b:80",
        ] {
            assert!(bad.parse::<BackendSpec>().is_err(), "{bad} should fail");
        }
    }

    #[test]
    fn durations_ranges_and_cidrs_parse() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert!(parse_duration("2").is_err());
        assert!(parse_duration("2d").is_err());
        assert!("200-399".parse::<StatusRange>().unwrap().contains(302));
        assert!("399-200".parse::<StatusRange>().is_err());
        let cidr: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(cidr.contains("10.1.2.3".parse().unwrap()));
        assert!(cidr.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!cidr.contains("11.0.0.1".parse().unwrap()));
        assert!(
            "0.0.0.0/0"
                .parse::<Cidr>()
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
    }

    #[test]
    fn file_errors_name_the_file_line_and_key() {
        let dir = std::env::temp_dir().join(format!("balancer-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.toml");
        std::fs::write(
            &path,
            "backends = [\"a:80\"]\n\n[health]\npath = \"/healthz\"\ninterval = \"2 parsecs\"\n",
        )
        .unwrap();
        let err = Config::load(Some(&path), Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("bad.toml"), "{err}");
        assert!(err.contains("line 5"), "{err}");
        assert!(err.contains("interval"), "{err}");

        std::fs::write(&path, "backends = [\"a:80\"]\nalgoritm = \"ip-hash\"\n").unwrap();
        let err = Config::load(Some(&path), Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2") && err.contains("algoritm"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_reload_may_not_change_what_needs_a_restart_and_never_shows_a_secret() {
        let base = Config {
            backends: vec!["b:80".parse().unwrap()],
            ..Config::default()
        };
        let mut next = base.clone();
        next.backends = vec!["c:80".parse().unwrap()];
        next.algorithm = Algorithm::IpHash;
        next.timeouts.connect = Duration::from_secs(1);
        base.check_reloadable(&next).unwrap();

        next.listen = "0.0.0.0:9000".parse().unwrap();
        next.origins.set("listen", Origin::Flag("--listen"));
        let error = base.check_reloadable(&next).unwrap_err().to_string();
        assert!(
            error.starts_with("flag --listen: listen changed from 0.0.0.0:8080 to 0.0.0.0:9000")
                && error.contains("needs a restart"),
            "{error}"
        );

        let secret = "a-sticky-key-of-more-than-16-bytes";
        let mut next = base.clone();
        next.sticky.key = Some(StickyKey::from_text(secret.to_owned()));
        let error = base.check_reloadable(&next).unwrap_err().to_string();
        assert!(error.contains("sticky.key changed"), "{error}");
        assert!(!error.contains(secret), "{error}");
        let mut next = base.clone();
        next.limits.max_connections = 5;
        let error = base.check_reloadable(&next).unwrap_err().to_string();
        assert!(
            error.contains("limits.max_connections changed from 10000 to 5"),
            "{error}"
        );
        let mut next = base.clone();
        next.admin.token = Some(AdminToken::from_text("an-admin-token-0123456789"));
        let error = base.check_reloadable(&next).unwrap_err().to_string();
        assert!(error.contains("admin.token_file changed"), "{error}");
        assert!(!error.contains("0123456789"), "{error}");
        let mut next = base.clone();
        next.tls.hsts_max_age = Some(Duration::from_secs(3600));
        let error = base.check_reloadable(&next).unwrap_err().to_string();
        assert!(error.contains("tls changed"), "{error}");
        let mut next = base.clone();
        next.limits.max_handshakes = 7;
        let error = base.check_reloadable(&next).unwrap_err().to_string();
        assert!(error.contains("limits.max_handshakes changed"), "{error}");
        let mut next = base.clone();
        next.mode = Mode::Tcp;
        let error = base.check_reloadable(&next).unwrap_err().to_string();
        assert!(error.contains("mode changed from Http to Tcp"), "{error}");
    }

    #[test]
    fn layers_apply_in_order_and_validation_runs() {
        let overrides = Overrides {
            backends: vec!["b:80".parse().unwrap()],
            algorithm: Some(Algorithm::IpHash),
            ..Overrides::default()
        };
        let config = Config::load(None, overrides).unwrap();
        assert_eq!(config.algorithm, Algorithm::IpHash);
        assert_eq!(config.listen.port(), 8080);
        assert!(Config::load(None, Overrides::default()).is_err());
        assert_eq!(
            "least-response-time".parse::<Algorithm>().unwrap(),
            Algorithm::LeastResponseTime
        );
        assert!("fastest".parse::<Algorithm>().is_err());
    }

    #[test]
    fn the_tls_section_parses_and_its_errors_name_their_source() {
        let dir = std::env::temp_dir().join(format!("balancer-tls-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tls.toml");
        let good = "backends = [\"a:80\"]\n\n[tls]\nlisten = \"127.0.0.1:8443\"\nhsts_max_age = \"8760h\"\nhttps_port = 443\n\n[[tls.certificates]]\ncert = \"site.crt\"\nkey = \"site.key\"\n\n[[tls.certificates]]\ncert = \"/abs/other.crt\"\nkey = \"/abs/other.key\"\ndefault = true\n";
        std::fs::write(&path, good).unwrap();
        let config = Config::load(Some(&path), Overrides::default()).unwrap();
        let tls = &config.tls;
        assert_eq!(tls.listen, Some("127.0.0.1:8443".parse().unwrap()));
        assert_eq!(tls.hsts_max_age, Some(Duration::from_secs(8760 * 3600)));
        assert_eq!(tls.https_port, Some(443));
        // Relative to the config file; absolute ones as written.
        assert_eq!(tls.certificates[0].cert, dir.join("site.crt"));
        assert_eq!(tls.certificates[1].key, PathBuf::from("/abs/other.key"));
        assert!(tls.certificates[1].default && !tls.certificates[0].default);
        assert!(
            config
                .origin_of("tls.certificates[1]")
                .ends_with("tls.toml:12")
        );

        for (text, wanted) in [
            (
                "backends = [\"a:80\"]\n[tls]\nlisten = \"127.0.0.1:8443\"\n",
                ["tls.toml:3", "tls.listen", "no certificate"],
            ),
            (
                "backends = [\"a:80\"]\n[tls]\ncertificates = [{ cert = \"a\", key = \"b\" }]\n",
                ["tls.toml:3", "tls.certificates", "tls.listen is not"],
            ),
            (
                "backends = [\"a:80\"]\nlisten = \"0.0.0.0:8443\"\n[tls]\nlisten = \"127.0.0.1:8443\"\ncertificates = [{ cert = \"a\", key = \"b\" }]\n",
                ["tls.toml:4", "tls.listen", "another listener"],
            ),
            (
                "backends = [\"a:80\"]\n[tls]\nlisten = \"127.0.0.1:8443\"\n[[tls.certificates]]\ncert = \"a\"\nchain = \"b\"\n",
                ["tls.toml", "line 6", "chain"],
            ),
            (
                "backends = [\"a:80\"]\n[tls]\nlisten = \"127.0.0.1:8443\"\nhsts_max_age = \"20000h\"\ncertificates = [{ cert = \"a\", key = \"b\" }]\n",
                ["tls.toml:4", "tls.hsts_max_age", "two years"],
            ),
            (
                "backends = [\"a:80\"]\n[timeouts]\ntls_handshake = \"0ms\"\n",
                ["tls.toml:3", "timeouts.tls_handshake", "between"],
            ),
        ] {
            std::fs::write(&path, text).unwrap();
            let error = Config::load(Some(&path), Overrides::default())
                .unwrap_err()
                .to_string();
            for part in wanted {
                assert!(error.contains(part), "{part:?} not in {error:?}");
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_acme_section_parses_and_its_errors_name_file_line_and_key() {
        let dir = std::env::temp_dir().join(format!("balancer-acme-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("acme.toml");
        let head = "backends = [\"a:80\"]\n[tls]\nlisten = \"127.0.0.1:8443\"\n\n[tls.acme]\n";
        let good = format!(
            "{head}domains = [\"app.example.com\", \"www.example.com\"]\ncontact = [\"mailto:ops@example.com\"]\ncache_dir = \"acme\"\ndirectory_ca = \"ca.pem\"\n"
        );
        std::fs::write(&path, &good).unwrap();
        let config = Config::load(Some(&path), Overrides::default()).unwrap();
        let acme = config.tls.acme.as_ref().unwrap();
        assert_eq!(acme.domains, ["app.example.com", "www.example.com"]);
        assert_eq!(acme.directory, LETS_ENCRYPT_DIRECTORY);
        assert_eq!(acme.renew_before, Duration::from_secs(30 * 24 * 3600));
        assert_eq!(acme.cache_dir, dir.join("acme"));
        assert_eq!(acme.directory_ca, Some(dir.join("ca.pem")));
        assert!(config.tls.certificates.is_empty());

        // Restart-only: a reload changing it is refused, naming the key.
        let mut next = config.clone();
        next.tls
            .acme
            .as_mut()
            .unwrap()
            .domains
            .push("more.example.com".into());
        let error = config.check_reloadable(&next).unwrap_err().to_string();
        assert!(error.contains("tls.acme changed"), "{error}");

        for (body, wanted) in [
            (
                "domains = []\ncache_dir = \"c\"\n",
                ["acme.toml:6", "tls.acme.domains", "empty"],
            ),
            (
                "domains = [\"*.example.com\"]\ncache_dir = \"c\"\n",
                ["acme.toml:6", "tls.acme.domains", "wildcard"],
            ),
            (
                "domains = [\"127.0.0.1\"]\ncache_dir = \"c\"\n",
                ["acme.toml:6", "tls.acme.domains", "address"],
            ),
            (
                "domains = [\"a.example.com\"]\ncontact = [\"ops@example.com\"]\ncache_dir = \"c\"\n",
                ["acme.toml:7", "tls.acme.contact", "mailto:"],
            ),
            (
                "domains = [\"a.example.com\"]\ndirectory = \"http://ca.test/dir\"\ncache_dir = \"c\"\n",
                ["acme.toml:7", "tls.acme.directory", "https://"],
            ),
            (
                "domains = [\"a.example.com\"]\ncache_dir = \"c\"\nrenew_before = \"10m\"\n",
                ["acme.toml:8", "tls.acme.renew_before", "between"],
            ),
            (
                "domains = [\"a.example.com\"]\ncache_dir = \"c\"\nrenew = \"10m\"\n",
                ["acme.toml", "line 8", "renew"],
            ),
        ] {
            std::fs::write(&path, format!("{head}{body}")).unwrap();
            let error = Config::load(Some(&path), Overrides::default())
                .unwrap_err()
                .to_string();
            for part in wanted {
                assert!(error.contains(part), "{part:?} not in {error:?}");
            }
        }
        // ACME without the HTTPS listener.
        std::fs::write(
            &path,
            "backends = [\"a:80\"]\n[tls.acme]\ndomains = [\"a.example.com\"]\ncache_dir = \"c\"\n",
        )
        .unwrap();
        let error = Config::load(Some(&path), Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("tls.acme") && error.contains("tls.listen is not"),
            "{error}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
