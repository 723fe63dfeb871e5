//! The final report: one typed struct, serialized as is for `--json` and rendered as
//! tables for people.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::collector::{Collector, SecondStats, quantile_ms};
use crate::live::truncate;
use crate::outcome::ErrorKind;
use crate::recorder::NO_RESPONSE;

/// Why the run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// All `-n` requests finished.
    Requests,
    /// `-d` (or the ramp) elapsed.
    Duration,
    /// `--max-duration` cut a `-n` run short.
    MaxDuration,
    /// Ctrl-C or SIGTERM.
    Interrupted,
}

/// Latency quantiles in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LatencySummary {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

impl LatencySummary {
    pub fn from_histogram(histogram: &Histogram<u64>) -> Self {
        let empty = histogram.is_empty();
        Self {
            p50: quantile_ms(histogram, 0.5),
            p90: quantile_ms(histogram, 0.9),
            p99: quantile_ms(histogram, 0.99),
            p999: quantile_ms(histogram, 0.999),
            max: if empty {
                0.0
            } else {
                histogram.max() as f64 / 1000.0
            },
            mean: if empty {
                0.0
            } else {
                histogram.mean().round() / 1000.0
            },
        }
    }
}

/// One value of the group-by header.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InstanceReport {
    pub name: String,
    pub count: u64,
    /// Fraction of all responses, 0 to 1.
    pub share: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Responses with status 400 or more.
    pub errors: u64,
}

/// How virtual users spread over instances (`--sessions`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SessionsReport {
    pub users: u64,
    /// Users who got at least one response naming an instance.
    pub users_with_instance: u64,
    /// Users who stayed on one instance.
    pub single_instance_users: u64,
    /// Users who saw more than one instance: broken stickiness.
    pub multi_instance_users: u64,
}

/// How the run was set up.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunInfo {
    /// "closed" or "open".
    pub model: &'static str,
    pub connections: u32,
    /// "http1" (lean HTTP/1.1 connections) or "reqwest" (sessions, HTTP/2, TLS).
    pub transport: &'static str,
    pub urls: Vec<String>,
    /// Open model: target requests per second at the start and end of the ramp.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<(f64, f64)>,
}

/// Everything a run measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Requests finished, with a response or an error.
    pub requests: u64,
    /// Requests that got a complete response, whatever its status.
    pub responses: u64,
    /// Transport errors plus responses with status 400 or more.
    pub failures: u64,
    pub duration_s: f64,
    /// Finished requests per second.
    pub throughput: f64,
    /// Open model: from the intended send time; closed model: from the actual one.
    pub latency_ms: LatencySummary,
    /// From the actual send time; differs from `latency_ms` only in the open model.
    pub service_time_ms: LatencySummary,
    pub status: BTreeMap<String, u64>,
    /// Every kind, zero included, so scripts can index without checking.
    pub errors: BTreeMap<String, u64>,
    pub group_by: String,
    /// Header value to response count.
    pub groups: BTreeMap<String, u64>,
    /// Per instance, largest first.
    pub instances: Vec<InstanceReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sessions: Option<SessionsReport>,
    /// Throughput and p99 for each second of the run.
    pub timeline: Vec<SecondStats>,
    pub stopped_by: StopReason,
    pub run: RunInfo,
}

impl Report {
    pub fn build(
        collector: &Collector,
        duration_s: f64,
        stopped_by: StopReason,
        group_by: String,
        run: RunInfo,
    ) -> Self {
        let status = collector
            .status
            .iter()
            .enumerate()
            .filter(|(_, count)| **count > 0)
            .map(|(code, count)| (code.to_string(), *count))
            .collect();
        let errors = ErrorKind::ALL
            .iter()
            .map(|kind| (kind.as_str().to_owned(), collector.errors[kind.index()]))
            .collect();
        let mut instances: Vec<InstanceReport> = collector
            .groups
            .iter()
            .filter(|group| group.count > 0)
            .map(|group| InstanceReport {
                name: group.name.clone(),
                count: group.count,
                share: group.count as f64 / collector.responses.max(1) as f64,
                p50_ms: quantile_ms(&group.latency, 0.5),
                p99_ms: quantile_ms(&group.latency, 0.99),
                errors: group.failures,
            })
            .collect();
        instances.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.name.cmp(&b.name)));
        let groups = instances
            .iter()
            .map(|instance| (instance.name.clone(), instance.count))
            .collect();
        let sessions = (!collector.users.is_empty()).then(|| {
            let with_instance = collector
                .users
                .iter()
                .filter(|user| user.first_group != NO_RESPONSE)
                .count() as u64;
            let multiple = collector.users.iter().filter(|user| user.multiple).count() as u64;
            SessionsReport {
                users: collector.users.len() as u64,
                users_with_instance: with_instance,
                single_instance_users: with_instance - multiple,
                multi_instance_users: multiple,
            }
        });
        let throughput = if duration_s > 0.0 {
            collector.requests as f64 / duration_s
        } else {
            0.0
        };
        Self {
            requests: collector.requests,
            responses: collector.responses,
            failures: collector.failures,
            duration_s,
            throughput,
            latency_ms: LatencySummary::from_histogram(&collector.latency),
            service_time_ms: LatencySummary::from_histogram(&collector.service),
            status,
            errors,
            group_by,
            groups,
            instances,
            sessions,
            timeline: collector.timeline.finished.clone(),
            stopped_by,
            run,
        }
    }

    /// The report as one line of JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a report always serializes")
    }
}

/// Most rows of the per-second table; longer runs are summarised in wider buckets.
const TIMELINE_ROWS: usize = 20;
const SHARE_BAR: usize = 24;

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        let stop = match self.stopped_by {
            StopReason::Requests => "all requests done",
            StopReason::Duration => "duration elapsed",
            StopReason::MaxDuration => "stopped at --max-duration before all requests were done",
            StopReason::Interrupted => "interrupted: partial report",
        };
        let _ = writeln!(
            out,
            "{} requests in {:.2}s, {:.1} req/s ({} model, {} connections; {stop})",
            self.requests, self.duration_s, self.throughput, self.run.model, self.run.connections
        );
        if let Some((start, end)) = self.run.rate {
            if start == end {
                let _ = writeln!(out, "target rate {start} req/s");
            } else {
                let _ = writeln!(out, "target rate ramping {start} -> {end} req/s");
            }
        }

        let _ = writeln!(
            out,
            "\nLatency (ms){}\n  {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
            if self.run.rate.is_some() {
                ", from intended send time"
            } else {
                ""
            },
            "p50",
            "p90",
            "p99",
            "p99.9",
            "max",
            "mean"
        );
        let row = |s: &LatencySummary| {
            format!(
                "  {:>10.3} {:>10.3} {:>10.3} {:>10.3} {:>10.3} {:>10.3}",
                s.p50, s.p90, s.p99, s.p999, s.max, s.mean
            )
        };
        let _ = writeln!(out, "{}", row(&self.latency_ms));
        if self.run.rate.is_some() {
            let _ = writeln!(
                out,
                "Service time (ms), from actual send time\n{}",
                row(&self.service_time_ms)
            );
        }

        let status: Vec<String> = self
            .status
            .iter()
            .map(|(code, n)| format!("{code}: {n}"))
            .collect();
        let _ = writeln!(
            out,
            "\nStatus codes: {}",
            if status.is_empty() {
                "none".to_owned()
            } else {
                status.join(", ")
            }
        );
        let errors: Vec<String> = self
            .errors
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(kind, n)| format!("{kind}: {n}"))
            .collect();
        let _ = writeln!(
            out,
            "Errors: {}",
            if errors.is_empty() {
                "none".to_owned()
            } else {
                errors.join(", ")
            }
        );

        let _ = writeln!(out, "\nInstances (by {}):", self.group_by);
        if self.instances.is_empty() {
            let _ = writeln!(out, "  no responses");
        } else {
            let _ = writeln!(
                out,
                "  {:<24} {:>10} {:>7}  {:<w$} {:>9} {:>9} {:>8}",
                "instance",
                "count",
                "share",
                "",
                "p50 ms",
                "p99 ms",
                "errors",
                w = SHARE_BAR
            );
            for instance in &self.instances {
                let filled = (instance.share * SHARE_BAR as f64).round() as usize;
                let _ = writeln!(
                    out,
                    "  {:<24} {:>10} {:>6.1}%  {}{} {:>9.3} {:>9.3} {:>8}",
                    truncate(&instance.name, 24),
                    instance.count,
                    instance.share * 100.0,
                    "█".repeat(filled),
                    " ".repeat(SHARE_BAR - filled.min(SHARE_BAR)),
                    instance.p50_ms,
                    instance.p99_ms,
                    instance.errors
                );
            }
        }
        if let Some(sessions) = &self.sessions {
            let _ = writeln!(
                out,
                "\nSessions: {} users, {} stayed on one instance, {} saw more than one{}",
                sessions.users,
                sessions.single_instance_users,
                sessions.multi_instance_users,
                match sessions.users - sessions.users_with_instance {
                    0 => String::new(),
                    n => format!(", {n} got no instance header"),
                }
            );
        }

        if !self.timeline.is_empty() {
            let width = self.timeline.len().div_ceil(TIMELINE_ROWS);
            let _ = writeln!(
                out,
                "\nOver time{}:\n  {:>9} {:>10} {:>9} {:>10}",
                if width > 1 {
                    format!(" ({width}s buckets, worst p99)")
                } else {
                    String::new()
                },
                "second",
                "req/s",
                "failed",
                "p99 ms"
            );
            for chunk in self.timeline.chunks(width) {
                let requests: u64 = chunk.iter().map(|s| s.requests).sum();
                let failures: u64 = chunk.iter().map(|s| s.failures).sum();
                let p99 = chunk.iter().map(|s| s.p99_ms).fold(0.0, f64::max);
                let _ = writeln!(
                    out,
                    "  {:>9} {:>10.0} {:>9} {:>10.3}",
                    chunk[0].second,
                    requests as f64 / chunk.len() as f64,
                    failures,
                    p99
                );
            }
        }
        f.write_str(&out)
    }
}
