//! The validated run configuration: every option checked once, before any traffic.

use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{CONNECTION, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, Url};

use crate::cli::Opts;
use crate::schedule::ArrivalSchedule;

/// Used when neither `-n` nor `-d` bounds the run.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(10);
const MAX_CONNECTIONS: u32 = 100_000;
const MAX_SESSIONS: u32 = 100_000;

/// A bad option, named as the user wrote it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("URL `{url}`: {reason}")]
    Url { url: String, reason: String },
    #[error("{flag}: {reason}")]
    Invalid { flag: &'static str, reason: String },
    #[error("--cacert: `{path}`: {reason}")]
    CaCert { path: String, reason: String },
    #[error("--body: cannot read `{path}`: {source}")]
    BodyFile {
        path: String,
        source: std::io::Error,
    },
}

fn invalid(flag: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        flag,
        reason: reason.into(),
    }
}

/// How requests are issued.
#[derive(Debug, Clone)]
pub enum LoadModel {
    /// Each worker sends its next request as soon as the previous one finished.
    Closed,
    /// Requests arrive on a schedule whatever the server does; latency counts from the
    /// intended send time (coordinated omission corrected).
    Open(ArrivalSchedule),
}

/// What every request looks like.
#[derive(Debug, Clone)]
pub struct RequestTemplate {
    pub method: Method,
    pub urls: Vec<Url>,
    pub headers: HeaderMap,
    pub body: Option<Bytes>,
}

/// A run, fully validated.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub request: RequestTemplate,
    pub model: LoadModel,
    pub connections: u32,
    /// Stop after this many requests.
    pub requests: Option<u64>,
    /// Stop at this offset from the start whatever else happens.
    pub deadline: Duration,
    /// Whether `deadline` is the planned length of the run (`-d`) or only a safety bound.
    pub deadline_is_planned: bool,
    pub sessions: Option<u32>,
    pub group_by: HeaderName,
    /// `group_by` as the user spelled it, for reports.
    pub group_by_label: String,
    pub timeout: Duration,
    pub keepalive: bool,
    pub http2: bool,
    pub live_view: bool,
    /// `--cacert`: the PEM bytes of the CA certificates https:// targets are verified
    /// against, instead of the built-in roots (checked to parse when read).
    pub ca_certs: Option<Vec<u8>>,
}

impl RunConfig {
    /// Checks the options and reads the body file, if any.
    pub fn from_opts(opts: &Opts) -> Result<Self, ConfigError> {
        let urls = opts
            .urls
            .iter()
            .map(|text| parse_url(text))
            .collect::<Result<Vec<_>, _>>()?;
        let method = Method::from_bytes(opts.method.as_bytes()).map_err(|_| {
            invalid(
                "--method",
                format!("`{}` is not an HTTP method", opts.method),
            )
        })?;
        let mut headers = HeaderMap::new();
        for line in &opts.headers {
            let (name, value) = parse_header(line)?;
            headers.append(name, value);
        }
        if opts.no_keepalive && !opts.http2 {
            headers.insert(CONNECTION, HeaderValue::from_static("close"));
        }
        let body = match opts.body.as_deref() {
            None => None,
            Some(text) => Some(match text.strip_prefix('@') {
                Some(path) => {
                    Bytes::from(std::fs::read(path).map_err(|source| ConfigError::BodyFile {
                        path: path.to_owned(),
                        source,
                    })?)
                }
                None => Bytes::copy_from_slice(text.as_bytes()),
            }),
        };

        let ca_certs = match &opts.cacert {
            None => None,
            Some(path) => Some(read_ca_certs(path)?),
        };

        if opts.connections == 0 || opts.connections > MAX_CONNECTIONS {
            return Err(invalid(
                "--connections",
                format!("must be between 1 and {MAX_CONNECTIONS}"),
            ));
        }
        if opts.requests == Some(0) {
            return Err(invalid("--requests", "must be at least 1"));
        }
        if let Some(sessions) = opts.sessions
            && (sessions == 0 || sessions > MAX_SESSIONS)
        {
            return Err(invalid(
                "--sessions",
                format!("must be between 1 and {MAX_SESSIONS}"),
            ));
        }
        if opts.timeout.is_zero() {
            return Err(invalid("--timeout", "must be more than zero"));
        }
        if opts.duration.is_some_and(|d| d.is_zero()) {
            return Err(invalid("--duration", "must be more than zero"));
        }
        if opts.max_duration.is_zero() {
            return Err(invalid("--max-duration", "must be more than zero"));
        }
        let group_by = HeaderName::from_bytes(opts.group_by.as_bytes()).map_err(|_| {
            invalid(
                "--group-by",
                format!("`{}` is not a header name", opts.group_by),
            )
        })?;

        let model = match (opts.rate, opts.ramp) {
            (None, None) => LoadModel::Closed,
            (None, Some(_)) => return Err(invalid("--ramp", "needs --rate A:B")),
            (Some(rate), None) if rate.start != rate.end => {
                return Err(invalid("--rate", "a ramp A:B needs --ramp DURATION"));
            }
            (Some(rate), None) => {
                if rate.start <= 0.0 {
                    return Err(invalid("--rate", "must be more than zero"));
                }
                LoadModel::Open(ArrivalSchedule::constant(rate.start))
            }
            (Some(rate), Some(ramp)) => {
                if rate.end <= 0.0 {
                    return Err(invalid(
                        "--rate",
                        "the rate at the end of the ramp must be more than zero",
                    ));
                }
                if ramp.is_zero() {
                    return Err(invalid("--ramp", "must be more than zero"));
                }
                LoadModel::Open(ArrivalSchedule::ramp(rate.start, rate.end, ramp))
            }
        };

        let planned = opts.duration.or(match (&model, opts.requests) {
            (_, Some(_)) => None,
            (LoadModel::Open(schedule), None) if schedule.ramp_length() > Duration::ZERO => {
                Some(schedule.ramp_length())
            }
            _ => Some(DEFAULT_DURATION),
        });
        let (deadline, deadline_is_planned) = match planned {
            Some(duration) => (duration, true),
            None => (opts.max_duration, false),
        };

        Ok(Self {
            request: RequestTemplate {
                method,
                urls,
                headers,
                body,
            },
            model,
            connections: opts.connections,
            requests: opts.requests,
            deadline,
            deadline_is_planned,
            sessions: opts.sessions,
            group_by,
            group_by_label: opts.group_by.clone(),
            timeout: opts.timeout,
            keepalive: !opts.no_keepalive,
            http2: opts.http2,
            live_view: !opts.quiet,
            ca_certs,
        })
    }

    /// Workers that issue requests: with sessions, a user is never in two places at once.
    pub fn workers(&self) -> u32 {
        match self.sessions {
            Some(users) => self.connections.min(users),
            None => self.connections,
        }
    }
}

/// Reads `--cacert` and checks that it holds at least one certificate reqwest accepts.
fn read_ca_certs(path: &std::path::Path) -> Result<Vec<u8>, ConfigError> {
    let fail = |reason: String| ConfigError::CaCert {
        path: path.display().to_string(),
        reason,
    };
    if !cfg!(feature = "https") {
        return Err(fail(
            "needs loadgen built with `--features https`".to_owned(),
        ));
    }
    let pem = std::fs::read(path).map_err(|e| fail(format!("cannot read it: {e}")))?;
    #[cfg(feature = "https")]
    {
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| fail(format!("not PEM certificates: {e}")))?;
        if certs.is_empty() {
            return Err(fail("holds no CERTIFICATE block".to_owned()));
        }
    }
    Ok(pem)
}

fn parse_url(text: &str) -> Result<Url, ConfigError> {
    let fail = |reason: String| ConfigError::Url {
        url: text.to_owned(),
        reason,
    };
    let url = Url::parse(text).map_err(|e| fail(e.to_string()))?;
    match url.scheme() {
        "http" => {}
        "https" if cfg!(feature = "https") => {}
        "https" => {
            return Err(fail(
                "https needs loadgen built with `--features https`".to_owned(),
            ));
        }
        other => return Err(fail(format!("unsupported scheme `{other}`"))),
    }
    if url.host().is_none() {
        return Err(fail("no host".to_owned()));
    }
    Ok(url)
}

fn parse_header(line: &str) -> Result<(HeaderName, HeaderValue), ConfigError> {
    let (name, value) = line
        .split_once(':')
        .ok_or_else(|| invalid("--header", format!("`{line}` is not `Name: value`")))?;
    let name = HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| invalid("--header", format!("bad header name in `{line}`")))?;
    let value = HeaderValue::from_str(value.trim())
        .map_err(|_| invalid("--header", format!("bad header value in `{line}`")))?;
    Ok((name, value))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn config(args: &[&str]) -> Result<RunConfig, ConfigError> {
        let opts = Opts::try_parse_from(std::iter::once("loadgen").chain(args.iter().copied()))
            .expect("options parse");
        RunConfig::from_opts(&opts)
    }

    #[test]
    fn requests_alone_are_bounded_by_max_duration() {
        let run = config(&["-n", "5", "--max-duration", "30s", "http://127.0.0.1:1/"]).unwrap();
        assert_eq!(run.requests, Some(5));
        assert_eq!(run.deadline, Duration::from_secs(30));
        assert!(!run.deadline_is_planned);
    }

    #[test]
    fn ramp_without_duration_runs_for_the_ramp() {
        let run = config(&["--rate", "10:100", "--ramp", "3s", "http://127.0.0.1:1/"]).unwrap();
        assert_eq!(run.deadline, Duration::from_secs(3));
        assert!(matches!(run.model, LoadModel::Open(_)));
    }

    #[test]
    fn bad_values_name_the_flag() {
        let error = config(&["-H", "no-colon", "http://127.0.0.1:1/"]).unwrap_err();
        assert!(error.to_string().starts_with("--header"), "{error}");
        let error = config(&["--rate", "1:5", "http://127.0.0.1:1/"]).unwrap_err();
        assert!(error.to_string().contains("--ramp"), "{error}");
        let error = config(&["ftp://127.0.0.1/"]).unwrap_err();
        assert!(error.to_string().contains("scheme"), "{error}");
        let error = config(&["--body", "@/nonexistent/body", "http://127.0.0.1:1/"]).unwrap_err();
        assert!(error.to_string().contains("/nonexistent/body"), "{error}");
    }
}
