//! Command-line options: the interface that users and scripts rely on.
//!
//! Parsing only checks the shape of each value (a duration is a duration); whether the
//! values make sense together is decided in [`crate::config`].

use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{ArgAction, Parser};

/// Options of `loadgen [OPTIONS] <URL>...`. Switches also read `LOADGEN_*` variables, where
/// 1/0, true/false, yes/no and on/off are accepted.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "loadgen",
    version,
    about = "HTTP load generator that shows how responses spread across instances, with honest latency",
    after_help = "Examples:\n  loadgen -c 50 -d 10s http://127.0.0.1:8080/\n  loadgen --rate 100:2000 --ramp 30s http://127.0.0.1:8080/\n  loadgen --sessions 20 -n 2000 --json http://127.0.0.1:8080/"
)]
pub struct Opts {
    /// Target URLs; with several, requests go to each in turn.
    #[arg(required = true, value_name = "URL", env = "LOADGEN_URL")]
    pub urls: Vec<String>,

    /// Concurrent connections (workers); in rate mode, the most requests in flight.
    #[arg(short = 'c', long, default_value_t = 50, env = "LOADGEN_CONNECTIONS")]
    pub connections: u32,

    /// Total number of requests, then stop.
    #[arg(short = 'n', long, env = "LOADGEN_REQUESTS")]
    pub requests: Option<u64>,

    /// Run for this long (e.g. 500ms, 10s, 2m); 10s when neither -n nor -d is given.
    #[arg(short = 'd', long, value_parser = hitscale_duration::parse, env = "LOADGEN_DURATION")]
    pub duration: Option<Duration>,

    /// Open model: requests per second at a constant arrival rate (R), or ramping from A to B
    /// over --ramp (A:B). Latency counts from each request's intended send time.
    #[arg(long, value_name = "R|A:B", value_parser = parse_rate, env = "LOADGEN_RATE")]
    pub rate: Option<RateSpec>,

    /// Length of the ramp for `--rate A:B`; the run then holds B until -d/-n ends it.
    #[arg(long, value_parser = hitscale_duration::parse, env = "LOADGEN_RAMP")]
    pub ramp: Option<Duration>,

    /// Virtual users, each with its own cookie jar (sticky sessions show); without it no
    /// cookies are kept.
    #[arg(long, env = "LOADGEN_SESSIONS")]
    pub sessions: Option<u32>,

    /// Response header whose value names the instance that served a request.
    #[arg(
        long,
        value_name = "NAME",
        default_value = "X-Instance-Id",
        env = "LOADGEN_GROUP_BY"
    )]
    pub group_by: String,

    /// Print one JSON report on stdout instead of the text report.
    #[arg(long, env = "LOADGEN_JSON", action = ArgAction::SetTrue, value_parser = BoolishValueParser::new())]
    pub json: bool,

    /// Per-request timeout, connecting included.
    #[arg(long, value_parser = hitscale_duration::parse, default_value = "10s", env = "LOADGEN_TIMEOUT")]
    pub timeout: Duration,

    /// HTTP method.
    #[arg(short = 'm', long, default_value = "GET", env = "LOADGEN_METHOD")]
    pub method: String,

    /// Extra request header "Name: value" (repeatable).
    #[arg(short = 'H', long = "header", value_name = "K: V")]
    pub headers: Vec<String>,

    /// Request body: the string itself, or @FILE to read it from a file.
    #[arg(long, value_name = "STR|@FILE", env = "LOADGEN_BODY")]
    pub body: Option<String>,

    /// Open a new connection for every request.
    #[arg(long, env = "LOADGEN_NO_KEEPALIVE", action = ArgAction::SetTrue, value_parser = BoolishValueParser::new())]
    pub no_keepalive: bool,

    /// Speak HTTP/2 (prior knowledge on http://) instead of HTTP/1.1.
    #[arg(long, env = "LOADGEN_HTTP2", action = ArgAction::SetTrue, value_parser = BoolishValueParser::new())]
    pub http2: bool,

    /// Trust the CA certificates in this PEM file for https:// targets, instead of the
    /// built-in roots (as curl's --cacert): for a site with a private or test CA.
    #[arg(long, value_name = "FILE", env = "LOADGEN_CACERT")]
    pub cacert: Option<std::path::PathBuf>,

    /// Tokio worker threads (default: all cores).
    #[arg(long, env = "LOADGEN_THREADS")]
    pub threads: Option<usize>,

    /// Upper bound on any run, -n runs included; an explicit -d may exceed it.
    #[arg(long, value_parser = hitscale_duration::parse, default_value = "10m", env = "LOADGEN_MAX_DURATION")]
    pub max_duration: Duration,

    /// No live view on stderr.
    #[arg(short = 'q', long, env = "LOADGEN_QUIET", action = ArgAction::SetTrue, value_parser = BoolishValueParser::new())]
    pub quiet: bool,
}

/// `--rate R` or `--rate A:B`, in requests per second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateSpec {
    pub start: f64,
    pub end: f64,
}

/// Parses `R` or `A:B` (requests per second, decimals allowed).
pub fn parse_rate(text: &str) -> Result<RateSpec, String> {
    let number = |part: &str| -> Result<f64, String> {
        let value: f64 = part
            .trim()
            .parse()
            .map_err(|_| format!("`{part}` is not a rate in requests per second"))?;
        if !value.is_finite() || !(0.0..=10_000_000.0).contains(&value) {
            return Err(format!("rate `{part}` must be between 0 and 10000000"));
        }
        Ok(value)
    };
    match text.split_once(':') {
        Some((start, end)) => Ok(RateSpec {
            start: number(start)?,
            end: number(end)?,
        }),
        None => {
            let rate = number(text)?;
            Ok(RateSpec {
                start: rate,
                end: rate,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_duration_names_the_flag_and_the_value() {
        let error = Opts::try_parse_from(["loadgen", "-d", "10 parsecs", "http://127.0.0.1:1/"])
            .expect_err("refused")
            .to_string();
        assert!(
            error.contains("'10 parsecs' for '--duration <DURATION>'")
                && error.contains("unknown unit `parsecs`"),
            "{error}"
        );
        let opts = Opts::try_parse_from(["loadgen", "-d", "1.5", "http://127.0.0.1:1/"])
            .expect("a bare number is seconds");
        assert_eq!(opts.duration, Some(Duration::from_millis(1500)));
    }

    #[test]
    fn rates_accept_constant_and_ramp() {
        assert_eq!(
            parse_rate("100:2000"),
            Ok(RateSpec {
                start: 100.0,
                end: 2000.0
            })
        );
        assert_eq!(parse_rate("50").map(|r| r.end), Ok(50.0));
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("-5").is_err());
    }
}
